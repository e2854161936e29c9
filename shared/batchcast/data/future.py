"""Future values: covariates known in advance (weather forecasts, planned promos and closures).

A future-values upload (a mapping of kind ``future``) holds target periods and values of the
profile's ``known`` covariates, per entity or, with an empty entity, for every entity of a city.
Partition stores it with :func:`write`, one Avro file (:func:`schemas.future`) per city and target
date::

    future/dataset=<profile>/city=<city>/dt=<local date of the target periods>/<upload_id>.avro

Predict reads the values for its target period with :func:`read`: one listing of one date's prefix
(two for a window that crosses midnight), which does not grow with history. Per entity, period and
covariate the value comes from the latest upload that has one (by ingestion time, then upload id),
so a corrected forecast replaces the earlier one and a promo plan does not erase a weather forecast
uploaded apart; an entity's own value beats its city's. A period nobody uploaded a value for stays
unknown: see :mod:`batchcast.ml.features` for what the model does then.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from batchcast.core import layout, schemas
from batchcast.core.config import Profile
from batchcast.core.schemas import GROUP_KEY
from batchcast.core.schemas.frames import records_to_frame, write_frame
from batchcast.data import storage
from batchcast.ports import BlobInfo, BlobStore


def write(
    blobs: BlobStore,
    profile: Profile,
    rows: pd.DataFrame,
    *,
    upload_id: str,
    logical_time: datetime,
    raw_object: str,
) -> int:
    """Write an upload's validated future values (fields of :func:`schemas.future`, create-only and
    byte-deterministic like every partition file); return how many files were written."""
    schema = schemas.future(profile)
    ingested_at = logical_time.astimezone(UTC)
    metadata = {
        "batchcast.upload_id": upload_id,
        "batchcast.ingested_at": ingested_at.isoformat(),
        "batchcast.raw_object": raw_object,
        "batchcast.schema_version": str(schemas.version(schema)),
    }
    rows = rows.assign(ingested_at=ingested_at, upload_id=upload_id)
    periods = pd.to_datetime(rows[profile.time_column])
    written = 0
    for (city, day), group in rows.groupby([rows[GROUP_KEY], periods.dt.normalize()], sort=True):
        storage.write_once(
            blobs,
            layout.future_object(profile.name, str(city), day.date(), upload_id),
            write_frame(schema, group, metadata=metadata),
            metadata={"rows": str(len(group))},
            content_type="application/avro",
        )
        written += 1
    return written


@dataclass(frozen=True)
class FutureValues:
    """What :func:`read` found for a target period."""

    # entity_id, ts and one float column per known covariate (NaN: nobody uploaded one); a row per
    # entity and period that has any value
    values: pd.DataFrame
    # "<object name>#<checksum>" of every file read: a forecast depends on them as on its history
    sources: tuple[str, ...]


def read(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    target_start: datetime,
    target_end: datetime,
    entities: Iterable[str],
) -> FutureValues:
    """The future values of ``entities`` of ``city`` for periods in [target_start, target_end)
    (naive local times), and the files they came from."""
    known = profile.known_covariates
    columns = ["entity_id", "ts", *known]
    files = _files(blobs, profile, city, target_start, target_end)
    sources = tuple(f"{info.name}#{info.checksum or info.generation}" for info in files)
    contents = storage.read_many(blobs, [info.name for info in files])
    frames = [_frame(content, profile) for content in contents]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if rows.empty or not known:
        empty = pd.DataFrame({c: pd.Series(dtype=float) for c in columns}).astype({"entity_id": str})
        return FutureValues(empty, sources)
    time, entity = profile.time_column, profile.entity_key
    rows = rows[(rows[time] >= pd.Timestamp(target_start)) & (rows[time] < pd.Timestamp(target_end))]
    # Latest last; GroupBy.last takes each column's last non-null value: per value, the latest wins.
    rows = rows.sort_values(["ingested_at", "upload_id"], kind="stable", na_position="first")
    wanted = sorted({str(e) for e in entities})
    own = rows[rows[entity].isin(wanted)].groupby([entity, time])[known].last()
    citywide = rows[rows[entity].isna()].groupby(time)[known].last()
    periods = sorted(set(own.index.get_level_values(time)) | set(citywide.index))
    grid = pd.MultiIndex.from_product([wanted, periods], names=[entity, time])
    values = own.reindex(grid)
    fallback = citywide.reindex(grid.get_level_values(time)).set_axis(grid)
    values = values.fillna(fallback).dropna(how="all")
    out = values.reset_index().rename(columns={entity: "entity_id", time: "ts"})
    out["ts"] = out["ts"].astype("datetime64[us]")
    return FutureValues(out[columns].reset_index(drop=True), sources)


def _files(
    blobs: BlobStore, profile: Profile, city: str, target_start: datetime, target_end: datetime
) -> list[BlobInfo]:
    """The future-values files of every local date the target periods fall on, by name."""
    first, last = target_start.date(), (target_end - timedelta(microseconds=1)).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    listed = [info for day in days for info in blobs.list(layout.future_prefix(profile.name, city, day))]
    return sorted((info for info in listed if _is_file(info.name)), key=lambda info: info.name)


def _is_file(name: str) -> bool:
    try:
        layout.parse_future(name)
    except layout.LayoutError:
        return False  # a stray object: never fatal for a reader
    return True


def _frame(content: bytes, profile: Profile) -> pd.DataFrame:
    schema = schemas.future(profile)
    records, _ = schemas.read_records(content, schema)
    frame = records_to_frame(records, schema)
    for covariate in profile.known_covariates:  # booleans as 0/1 floats, nulls as NaN: model inputs
        frame[covariate] = frame[covariate].to_numpy(dtype="float64", na_value=np.nan)
    return frame
