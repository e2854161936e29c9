"""predict: forecast one request's entities (a shard of a city, or an upload's stores) and publish.

Reads only the request's entities' manifest parts and the files that reach into their look-back.
Writes, in this order: the request's predictions (create-only), each entity's latest result (only
moving forward in time), and, for scheduled shards, the city's metrics (merged). The predictions'
name digests the request and the data it read, so a redelivered or replayed request rewrites
exactly what it wrote before, and any other request of the same day (another upload, a rerun after
a correction) gets a file of its own: each file is one version of that day's forecasts, its rows
stamped with ``as_of`` and ``model_version``.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime

import pandas as pd

from batchcast.core import layout
from batchcast.core.config import Profile, load_profile
from batchcast.core.messages import InvalidMessage, Message, PredictionsReady, PredictRequest
from batchcast.core.schemas.frames import write_frame
from batchcast.data import catalog, dataset, future, storage
from batchcast.ml.features import history_start, to_series
from batchcast.ops import metrics, training
from batchcast.ports import Ports
from batchcast.steps import RunContext, StepResult

HISTORY_PERIODS = {"daily": 56, "hourly": 72}  # actuals kept beside a result, for the managers' chart


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Forecast the request's entities and write predictions, results and metrics."""
    if not isinstance(message, PredictRequest):
        raise InvalidMessage(f"predict does not handle {message.kind}")
    profile = load_profile(message.dataset)
    city = message.city_
    model, _ = training.load_model(ports.blobs, profile, city, message.model_version)
    data = catalog.read(ports.blobs, profile, city, entities=message.entities)
    since = _read_start(profile, message.target_start)
    until = message.target_start
    rows = dataset.read_rows(ports.blobs, profile, data, since=since, until=until)
    series = to_series(rows, profile, until=until)
    # Values of covariates known in advance for the target period (weather forecasts, promos).
    plans = future.read(
        ports.blobs, profile, city, message.target_start, message.target_end, message.entities
    )
    forecast = model.predict(
        series, profile, city, message.target_start, message.target_end, message.entities, future=plans.values
    )
    forecast = forecast.sort_values(["entity_id", "period_start"]).reset_index(drop=True)

    key = _content_key(message, data, since, until, plans.sources)
    predictions = _write_predictions(ports, profile, message, forecast, key)
    written = _write_results(ports, profile, message, forecast, series)
    if message.trigger == "schedule":  # an upload's forecast is in its run record, not the day's metrics
        _record_metrics(ports, profile, message, forecast)
    ready = PredictionsReady(
        dataset=message.dataset,
        city=city,
        shard=message.shard,
        shards=message.shards,
        model_version=message.model_version,
        target_start=message.target_start,
        target_end=message.target_end,
        predictions_object=predictions,
        entities=int(forecast["entity_id"].nunique()),
        entity_ids=sorted(map(str, forecast["entity_id"].unique())),
        trigger=message.trigger,
        logical_time=message.logical_time,
    )
    return StepResult(
        messages=[ready],
        counts={"entities": ready.entities, "rows": len(forecast), "results_written": written},
        city=city,
    )


def _read_start(profile: Profile, target_start: datetime) -> datetime:
    """The first period predict reads: the model's look-back, or the actuals shown beside a result
    (:data:`HISTORY_PERIODS`), whichever reaches further."""
    chart = target_start - profile.period * HISTORY_PERIODS[profile.frequency]
    return min(history_start(profile, target_start), chart)


def _content_key(
    message: PredictRequest, data: catalog.CityData, since: datetime, until: datetime, plans: tuple[str, ...]
) -> str:
    """A digest of what the predictions depend on: the request (without its rerun tag) and the
    exact files it read, history and future values."""
    read = sorted(f"{f.name}#{f.checksum}" for e in data.values() for f in e.files if f.reaches(since, until))
    return hashlib.sha256("\n".join([message.identity(), *read, *plans]).encode()).hexdigest()[:12]


def _write_predictions(
    ports: Ports, profile: Profile, message: PredictRequest, forecast: pd.DataFrame, key: str
) -> str:
    frame = forecast.assign(
        dataset=profile.name,
        city=message.city_,
        model_version=message.model_version,
        as_of=pd.Timestamp(message.logical_time),
    )
    intraday = profile.frequency != "daily"
    name = layout.predictions_object(
        profile.name,
        message.target_start.date(),
        message.city_,
        layout.shard_label(message.shard, message.target_start, intraday),
        key,
    )
    data = write_frame("prediction", frame, metadata={"batchcast.model_version": message.model_version})
    storage.write_once(ports.blobs, name, data, content_type="application/avro")
    return name


def _write_results(
    ports: Ports, profile: Profile, message: PredictRequest, forecast: pd.DataFrame, series: pd.DataFrame
) -> int:
    history_periods = HISTORY_PERIODS[profile.frequency]
    recent = (
        series[series["ts"] < pd.Timestamp(message.target_start)].groupby("entity_id").tail(history_periods)
    )
    history = {entity: group for entity, group in recent.groupby("entity_id")}
    documents = [
        _result_document(profile, message, str(entity), rows, history.get(entity))
        for entity, rows in forecast.groupby("entity_id", sort=True)
    ]

    def store(result: dict) -> bool:
        stored = storage.update_json(
            ports.blobs,
            layout.results_object(profile.name, profile.entity_key, result["entity_id"]),
            lambda current: result if _is_newer(result, current) else None,
            metadata=_result_metadata,
        )
        return stored == result

    # One object per entity, so nothing contends: a shard of thousands of stores writes them in
    # parallel (on GCS each costs a stat, a read and a write).
    return sum(storage.concurrently(store, documents))


def _result_document(
    profile: Profile,
    message: PredictRequest,
    entity: str,
    rows: pd.DataFrame,
    history: pd.DataFrame | None,
) -> dict:
    return {
        "dataset": profile.name,
        "entity_key": profile.entity_key,
        "entity_id": entity,
        "city": message.city_,
        "timezone": str(profile.zone(message.city_)),
        "as_of": message.logical_time.isoformat(),
        "model_version": message.model_version,
        "target": {"start": message.target_start.isoformat(), "end": message.target_end.isoformat()},
        "forecast": [
            {
                "period_start": row.period_start.isoformat(),
                "period_end": row.period_end.isoformat(),
                "p10": _round(row.p10),
                "p50": _round(row.p50),
                "p90": _round(row.p90),
            }
            for row in rows.itertuples()
        ],
        "history": []
        if history is None
        else [
            {"period_start": ts.isoformat(), "actual": None if pd.isna(y) else _round(y)}
            for ts, y in zip(history["ts"], history["y"], strict=True)
        ],
    }


def _is_newer(new: dict, current: dict | None) -> bool:
    # Results only move forward: a replay of an older day must not hide a newer forecast. Compared
    # as instants: as-of times of different runs may carry different UTC offsets.
    if current is None:
        return True
    return _when(new) >= _when(current)


def _when(document: dict) -> tuple[datetime, datetime]:
    """(target start on the city's clock, as-of instant) of a result document."""
    return datetime.fromisoformat(document["target"]["start"]), datetime.fromisoformat(document["as_of"])


def _result_metadata(document: dict) -> dict[str, str]:
    # Freshness is computed from listings, so what it needs travels as object metadata.
    return {
        "target_start": document["target"]["start"],
        "as_of": document["as_of"],
        "model_version": document["model_version"],
        "city": document["city"],
    }


def _record_metrics(ports: Ports, profile: Profile, message: PredictRequest, forecast: pd.DataFrame) -> None:
    entry = {
        "model_version": message.model_version,
        "entities": int(forecast["entity_id"].nunique()),
        "rows": len(forecast),
        "p50_sum": _round(float(forecast["p50"].sum())),
        "interval_width_mean": _round(float((forecast["p90"] - forecast["p10"]).mean())),
    }
    key = f"{message.target_start.isoformat()}/shard-{message.shard}-of-{message.shards}"
    metrics.record(
        ports.blobs, profile.name, message.target_start.date(), message.city_, "predictions", key, entry
    )


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
