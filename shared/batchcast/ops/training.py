"""Training one (dataset, city) model and keeping the model registry under ``models/``.

A model version is named after the logical time it was trained for and the fingerprint of the
data it saw. Its folder is written create-only: ``model-<sha256>.skops`` and
``backtest-<sha256>.avro`` first, under names derived from their bytes, then ``metadata.json``, which
names them (its presence means the version is complete). Two trainings of one version racing each
write their own files and one ``metadata.json`` wins; it names files that are exactly what it
describes, so a model can never disagree with its checksum. ``LATEST`` moves forward by
compare-and-swap, so two trainings racing cannot move it backwards.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.metadata import version as package_version
from typing import Any

from batchcast.core import layout, schemas
from batchcast.core.config import Profile
from batchcast.core.errors import PermanentError
from batchcast.data import catalog, dataset, storage
from batchcast.data.catalog import CityData
from batchcast.ml.backtest import fit_and_backtest
from batchcast.ml.features import to_series
from batchcast.ml.model import ForecastModel
from batchcast.ops import metrics
from batchcast.ports import BlobStore, NotFound

METADATA_FILE = "metadata.json"
_LIBRARIES = ("scikit-learn", "pandas", "numpy", "fastavro", "skops", "holidays")
# What a skops file holds is only as stable as these: another release series may not load it, or
# load it and predict differently.
_MODEL_LIBRARIES = ("scikit-learn", "skops", "numpy")


class ModelIntegrityError(PermanentError, RuntimeError):
    """A stored model does not match the checksum recorded when it was trained."""


class ModelLibraryMismatch(PermanentError, RuntimeError):
    """A stored model was trained with another major version of a library it depends on."""


@dataclass(frozen=True)
class ModelRef:
    """What ``LATEST`` points at."""

    version: str
    fingerprint: str
    trained_for: str  # ISO logical time of the training run

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        return cls(data["version"], data["fingerprint"], data["trained_for"])


def latest(blobs: BlobStore, profile: Profile, city: str) -> ModelRef | None:
    """The version predictions of ``city`` should use, if any model was trained."""
    data = storage.read_json(blobs, layout.model_latest(profile.name, city))
    return ModelRef.from_json(data) if data else None


def lookback(profile: Profile) -> int:
    """How many periods before a target the features look at."""
    rolling = max((r.window for r in profile.features.rolling), default=0)
    return max(profile.features.lags) + rolling + profile.features.scale_window


def history_start(profile: Profile, target_start: datetime) -> datetime:
    """The first period a forecast for ``target_start`` reads (its features' look-back, plus one)."""
    return target_start - profile.period * (lookback(profile) + 1)


def estimate_seconds(profile: Profile, data: CityData) -> float:
    """How long training ``files`` would take: fits × (fixed cost + cost of the rows it reads).

    Each entity contributes at most the training window plus the look-back the features need; the
    per-fit and per-row costs come from the profile (calibrated on a 2-core machine).
    """
    reach = profile.training.window + lookback(profile)
    rows = sum(min(entity.rows, reach) for entity in data.values())
    fits = len(profile.training.quantiles) * (1 + profile.backtest.folds)
    settings = profile.training
    return fits * (settings.seconds_per_fit + rows / 1e6 * settings.seconds_per_million_rows)


def version_name(logical_time: datetime, fingerprint: str) -> str:
    """``<UTC logical time>-<fingerprint prefix>``: sortable, and the same for a redelivery."""
    return f"{logical_time.astimezone(UTC):%Y%m%dT%H%M%SZ}-{fingerprint[:10]}"


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
    folder = layout.model_dir(profile.name, city, ref.version)
    if blobs.stat(folder + METADATA_FILE) is None:
        _train_and_store(blobs, profile, city, data, ref, folder)
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
    since = now_local - profile.period * (profile.training.window + lookback(profile))
    series = to_series(dataset.read_rows(blobs, profile, data, since=since), profile)
    model, result = fit_and_backtest(series, profile, city)
    model_bytes = model.dumps()
    model_file = _write_content_named(blobs, folder, "model", "skops", model_bytes)
    backtest_file = _write_content_named(
        blobs, folder, "backtest", "avro", schemas.write_frame("backtest", result.points)
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
    try:
        storage.write_once(blobs, folder + METADATA_FILE, storage.dumps(metadata))
    except storage.ConflictingWrite:
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


def advance_latest(blobs: BlobStore, profile: Profile, city: str, ref: ModelRef) -> bool:
    """Point LATEST at ``ref`` unless it already points at a newer training; True if it moved."""
    pointer = dict(ref.__dict__)

    def forward(current: dict | None) -> dict | None:
        return pointer if current is None or current["trained_for"] < ref.trained_for else None

    return storage.update_json(blobs, layout.model_latest(profile.name, city), forward) == pointer


def read_metadata(blobs: BlobStore, profile: Profile, city: str, version: str) -> dict | None:
    """A version's ``metadata.json`` (which names its model and backtest files), or None."""
    return storage.read_json(blobs, layout.model_dir(profile.name, city, version) + METADATA_FILE)


def load_model(blobs: BlobStore, profile: Profile, city: str, version: str) -> tuple[ForecastModel, dict]:
    """Load a registered model after checking its bytes against the recorded SHA-256.

    Versions are written once, so a loaded model is kept per (model file, object generation): the
    shards of one run, and a warm function instance's next requests, skip the skops load.
    """
    folder = layout.model_dir(profile.name, city, version)
    try:
        metadata = json.loads(blobs.read(folder + METADATA_FILE))
        _refuse_other_libraries(metadata, f"{profile.name}/{city}/{version}", profile.name, city)
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


@cache
def installed_libraries() -> dict[str, str]:
    """The versions of the libraries a model depends on, in this process (read once)."""
    return {lib: package_version(lib) for lib in _MODEL_LIBRARIES}


def _refuse_other_libraries(metadata: dict, model: str, dataset: str, city: str) -> None:
    mismatched = incompatible_libraries(metadata.get("libraries", {}), installed_libraries())
    if mismatched:
        raise ModelLibraryMismatch(
            f"model {model} was trained with {', '.join(mismatched)}: another major version, which"
            " may not load it or may predict differently; retrain the city (`python -m"
            f" batchcast.entrypoints.job train --dataset {dataset} --city {city}`, or wait for its"
            " next scheduled training) or deploy the versions it was trained with"
        )


def _release_series(version: str) -> tuple[str, ...]:
    # Semantic versioning: 1.5.2 -> ("1",); below 1.0 the minor is the breaking part: 0.10.0 -> ("0", "10").
    parts = version.split(".")
    return tuple(parts[:2]) if parts[0] == "0" else tuple(parts[:1])


def incompatible_libraries(recorded: dict[str, str], installed: dict[str, str]) -> list[str]:
    """``"scikit-learn 1.5.2 (this deployment has 2.0.1)"`` for each model library whose major
    version differs between the training (``recorded``) and this process (``installed``).

    A library the training did not record is not compared (nothing to compare with).
    """
    return [
        f"{lib} {recorded[lib]} (this deployment has {installed[lib]})"
        for lib in _MODEL_LIBRARIES
        if lib in recorded
        and lib in installed
        and _release_series(recorded[lib]) != _release_series(installed[lib])
    ]


_CACHE_SIZE = 8
_loaded: dict[tuple[str, int], tuple[ForecastModel, dict]] = {}


def is_recent(ref: ModelRef, logical_time: datetime, minutes: int) -> bool:
    """Was ``ref`` trained less than ``minutes`` before ``logical_time``? (data-trigger debounce)"""
    return logical_time - datetime.fromisoformat(ref.trained_for) < timedelta(minutes=minutes)
