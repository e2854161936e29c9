"""predict: forecast one request's entities (a shard of a city, or an upload's stores) and publish.

Reads only the request's entities' manifest parts and the files that reach into their look-back.
Writes, in this order: the request's predictions (create-only), each entity's results document
(merged by :mod:`batchcast.ops.results`: every open target period, and the track record), and, for
scheduled shards, the city's metrics (merged), live accuracy included. The predictions'
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
from batchcast.ml import accuracy
from batchcast.ml.features import history_start, to_series
from batchcast.ops import metrics, results, training
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
    documents = _write_results(ports, profile, message, forecast, series)
    written = sum(_shown(document, message) for document in documents)
    if message.trigger == "schedule":  # an upload's forecast is in its run record, not the day's metrics
        _record_metrics(ports, profile, message, forecast)
        _record_live(ports, profile, message, documents, series)
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
) -> list[dict]:
    """Merge each entity's forecast into its results document; returns the documents as stored."""
    history_periods = HISTORY_PERIODS[profile.frequency]
    recent = (
        series[series["ts"] < pd.Timestamp(message.target_start)].groupby("entity_id").tail(history_periods)
    )
    history = {entity: group for entity, group in recent.groupby("entity_id")}
    documents = [
        _result_document(profile, message, str(entity), rows, history.get(entity))
        for entity, rows in forecast.groupby("entity_id", sort=True)
    ]

    def store(result: dict) -> dict:
        return storage.update_json(
            ports.blobs,
            layout.results_object(profile.name, profile.entity_key, result["entity_id"]),
            lambda current: results.merge(current, result),
            metadata=_result_metadata,
        )

    # One object per entity, so nothing contends: a shard of thousands of stores writes them in
    # parallel (on GCS each costs a stat, a read and a write).
    return storage.concurrently(store, documents)


def _shown(document: dict, message: PredictRequest) -> bool:
    """Whether the stored document shows this request's forecast (a replay of an older one may not)."""
    mine = {"start": message.target_start.isoformat(), "end": message.target_end.isoformat()}
    as_of = message.logical_time.isoformat()
    return any(e["target"] == mine and e["as_of"] == as_of for e in document.get("forecasts", []))


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


def _record_live(
    ports: Ports, profile: Profile, message: PredictRequest, documents: list[dict], series: pd.DataFrame
) -> None:
    """Score the shard's forecasts of the day the period before the target belongs to (daily: the
    day before; intraday: the windows of that day so far) against the actuals that arrived.

    The whole day is rescored each time, so the shard's one entry per day only grows as windows
    complete, and a replay writes the same entry again."""
    day = (message.target_start - profile.period).date()
    rows = [
        row | {"entity_id": document["entity_id"]}
        for document in documents
        for row in document.get("track_record", [])
        if datetime.fromisoformat(row["period_start"]).date() == day
        and datetime.fromisoformat(row["period_end"]) <= message.target_start
    ]
    if not rows:
        return
    day_start = pd.Timestamp(datetime.combine(day, datetime.min.time()))
    scales = accuracy.naive_scales(series[series["ts"] < day_start], profile)
    points = pd.DataFrame(rows)
    score = metrics.LiveScore(**accuracy.totals(accuracy.score(points, scales)))
    if not score.points:
        return
    scored = points[points["actual"].notna()]
    version = scored["model_version"].mode().iloc[0]  # the forecasts' model, which the drift check compares
    shard = f"shard-{message.shard}-of-{message.shards}"
    metrics.record_live(ports.blobs, profile.name, day, message.city_, shard, score, str(version))


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)
