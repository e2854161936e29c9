"""Training one (dataset, city) model, loading a registered one, and planning the predict requests
that follow a training (the train_trigger step and the train job share these).

A version's folder (see :mod:`batchcast.ops.models`, the registry) is written create-only:
``model-<sha256>.skops`` and ``backtest-<sha256>.avro`` first, under names derived from their bytes,
then ``metadata.json``, which names them. Two trainings of one version racing each write their own
files and one ``metadata.json`` wins; it names files that are exactly what it describes, so a model
can never disagree with its checksum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version

from batchcast.core.config import Profile
from batchcast.core.errors import PermanentError
from batchcast.core.messages import PartitionsReady, PredictRequest, ScheduleTick, TrainRequest
from batchcast.core.schemas.frames import write_frame
from batchcast.data import catalog, dataset, storage
from batchcast.data.catalog import CityData
from batchcast.data.sharding import plan_shards
from batchcast.ml.backtest import fit_and_backtest
from batchcast.ml.features import history_start, lookback, to_series
from batchcast.ml.model import ForecastModel
from batchcast.ops import metrics
from batchcast.ops.models import (
    METADATA_FILE,
    ModelRef,
    advance_latest,
    is_complete,
    latest,
    register,
    version_folder,
    version_name,
)
from batchcast.ports import BlobStore, NotFound

_LIBRARIES = ("scikit-learn", "pandas", "numpy", "fastavro", "skops", "holidays")


class ModelIntegrityError(PermanentError, RuntimeError):
    """A stored model does not match the checksum recorded when it was trained."""


class TrainingRefused(RuntimeError):
    """Inline training would not finish within the event-driven function's time limit."""


Trigger = PartitionsReady | ScheduleTick | TrainRequest


def history_periods(profile: Profile) -> int:
    """How many periods before its logical time a training reads: the training window, the backtest
    folds' origins before its end, and the features' look-back before the earliest fold's window."""
    backtest = profile.backtest.folds * profile.backtest.window
    return profile.training.window + backtest + lookback(profile)


def estimate_seconds(profile: Profile, data: CityData) -> float:
    """How long training ``files`` would take: fits × (fixed cost + cost of the rows it reads).

    Each entity contributes at most the periods a training reads (:func:`history_periods`); the
    per-fit and per-row costs come from the profile (calibrated on a 2-core machine).
    """
    reach = history_periods(profile)
    rows = sum(min(entity.rows, reach) for entity in data.values())
    fits = len(profile.training.quantiles) * (1 + profile.backtest.folds)
    settings = profile.training
    return fits * (settings.seconds_per_fit + rows / 1e6 * settings.seconds_per_million_rows)


def train_city(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    logical_time: datetime,
    data: CityData | None = None,
    fingerprint: str | None = None,
) -> ModelRef:
    """Train, backtest and register a model for ``city`` on its data as of now; move LATEST to it.

    Idempotent: a version that already has its metadata is not trained again. ``fingerprint`` is
    :func:`dataset.fingerprint` of ``data``, when the caller already has it.
    """
    data = data if data is not None else catalog.read(blobs, profile, city)
    if not data:
        raise ValueError(f"no data for {profile.name}/{city}")
    fingerprint = fingerprint or dataset.fingerprint(data, profile)
    trained_for = logical_time.astimezone(UTC).isoformat()
    ref = ModelRef(version_name(logical_time, fingerprint), fingerprint, trained_for)
    if not is_complete(blobs, profile, city, ref.version):
        _train_and_store(blobs, profile, city, data, ref, version_folder(profile, city, ref.version))
    advance_latest(blobs, profile, city, ref)
    return ref


def _train_and_store(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    data: CityData,
    ref: ModelRef,
    folder: str,
) -> None:
    started = time.monotonic()
    now_local = datetime.fromisoformat(ref.trained_for).astimezone(profile.zone(city)).replace(tzinfo=None)
    since = now_local - profile.period * history_periods(profile)
    series = to_series(dataset.read_rows(blobs, profile, data, since=since), profile)
    model, result = fit_and_backtest(series, profile, city)
    model_bytes = model.dumps()
    model_file = _write_content_named(blobs, folder, "model", "skops", model_bytes)
    backtest_file = _write_content_named(
        blobs, folder, "backtest", "avro", write_frame("backtest", result.points)
    )
    metadata = {
        "dataset": profile.name,
        "city": city,
        "version": ref.version,
        "fingerprint": ref.fingerprint,
        "trained_for": ref.trained_for,
        "training_window": {"start": str(series["ts"].min()), "end": str(series["ts"].max())},
        "rows": int(model.training_rows),
        "entities": len(data),
        "features": list(model.feature_names),
        "quantiles": list(model.quantiles),
        "metrics": result.metrics,
        "model_file": model_file,
        "backtest_file": backtest_file,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "libraries": {"python": platform.python_version()}
        | {lib: package_version(lib) for lib in _LIBRARIES},
        "train_seconds": round(time.monotonic() - started, 3),
    }
    if not register(blobs, profile, city, ref.version, metadata):
        return  # a concurrent training of the same data finished first; its model is as good
    # Timings stay in metadata.json: metrics must be byte-identical when a day is replayed.
    summary = {k: metadata[k] for k in ("trained_for", "rows", "entities", "metrics")}
    metrics.record(blobs, profile.name, now_local.date(), city, "trainings", ref.version, summary)


def _write_content_named(blobs: BlobStore, folder: str, stem: str, extension: str, data: bytes) -> str:
    """Write ``<stem>-<sha256 prefix>.<extension>`` create-only; return its name within the folder.

    Named by content, a file never changes once written: a concurrent or crashed attempt of the same
    version leaves its own file beside this one, never a different model under the same name.
    """
    name = f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}.{extension}"
    storage.write_once(blobs, folder + name, data)
    return name


def load_model(blobs: BlobStore, profile: Profile, city: str, version: str) -> tuple[ForecastModel, dict]:
    """Load a registered model after checking its bytes against the recorded SHA-256.

    Versions are written once, so a loaded model is kept per (model file, object generation): the
    shards of one run, and a warm function instance's next requests, skip the skops load.
    """
    folder = version_folder(profile, city, version)
    try:
        metadata = json.loads(blobs.read(folder + METADATA_FILE))
        info = blobs.stat(folder + metadata["model_file"])
        key = (folder + metadata["model_file"], info.generation if info else 0)
        if key in _loaded:
            return _loaded[key]
        data = blobs.read(folder + metadata["model_file"])
    except NotFound as error:
        raise ModelIntegrityError(f"model {profile.name}/{city}/{version} is incomplete") from error
    if hashlib.sha256(data).hexdigest() != metadata["model_sha256"]:
        raise ModelIntegrityError(f"model {profile.name}/{city}/{version} does not match its checksum")
    loaded = ForecastModel.loads(data), metadata
    if len(_loaded) >= _CACHE_SIZE:
        _loaded.pop(next(iter(_loaded)))
    _loaded[key] = loaded
    return loaded


_CACHE_SIZE = 8
_loaded: dict[tuple[str, int], tuple[ForecastModel, dict]] = {}


@dataclass(frozen=True)
class TrainingOutcome:
    """The model a city predicts with after a training attempt, and why the attempt failed if it did."""

    ref: ModelRef  # the new model, or the previous one when the training failed
    error: str = ""  # empty when the training succeeded


def train_with_fallback(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    logical_time: datetime,
    data: CityData,
    log: logging.LoggerAdapter | logging.Logger,
    *,
    inline: bool = True,
    fingerprint: str | None = None,
) -> TrainingOutcome:
    """Train ``city``'s model; on failure keep the previous model and say why the training failed.

    ``inline`` trainings are refused when their size estimate exceeds the profile's limit.
    ``fingerprint`` is the data's, when the caller already computed it.
    Raises only when there is no previous model to fall back on.
    """
    try:
        estimate = estimate_seconds(profile, data)
        if inline and estimate > profile.training.max_inline_seconds:
            raise TrainingRefused(
                f"training {city} would take about {estimate:.0f} s, over "
                f"training.max_inline_seconds={profile.training.max_inline_seconds}; "
                'set training.mode = "job" in the profile'
            )
        return TrainingOutcome(train_city(blobs, profile, city, logical_time, data, fingerprint))
    except Exception as error:
        current = latest(blobs, profile, city)  # a failed training left LATEST as it was
        if current is None:
            raise
        # Forecasts from the previous model beat no forecasts; the failure is still reported.
        log.exception(f"{profile.name}/{city}: training failed, predicting with {current.version}")
        return TrainingOutcome(current, f"model training failed: {type(error).__name__}: {error}")


def predict_requests(
    profile: Profile,
    city: str,
    version: str,
    data: CityData,
    message: Trigger,
    *,
    entities: list[str] | None = None,
) -> list[PredictRequest]:
    """One request per shard for the next target window after the message's logical time.

    ``entities`` (an upload's) limits the requests to those; None means every entity of the city.
    Shards are balanced by the rows each entity's forecast reads (its look-back), not its history.
    """
    start, end = profile.target_window(message.logical_time, city)
    since = history_start(profile, start)
    chosen = data if entities is None else {e: data[e] for e in entities if e in data}
    weights = {entity: info.rows_reaching(since, start) for entity, info in chosen.items()}
    shards = plan_shards(weights, profile.sharding.target_rows, profile.sharding.max_shards)
    return [
        PredictRequest(
            dataset=profile.name,
            city=city,
            shard=index,
            shards=len(shards),
            model_version=version,
            target_start=start,
            target_end=end,
            entities=shard,
            logical_time=message.logical_time,
            trigger="upload" if entities is not None else "schedule",
        )
        for index, shard in enumerate(shards)
    ]
