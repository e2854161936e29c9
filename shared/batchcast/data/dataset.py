"""Reading the Hive-partitioned ``batch_data/`` back, and keeping it compact.

Which files hold an entity's rows comes from the city's manifest (:mod:`batchcast.data.catalog`), never
from a listing. An entity's rows may be spread over several files: its uploads and the segments
compaction made of older uploads. When two files carry the same entity and period, the row of the
latest upload wins (by the rows' ``ingested_at``, then ``upload_id``), so a corrected re-upload
replaces what it corrects, whatever order the files were processed or compacted in.

Compaction keeps the number of files per entity bounded: once an entity has
:data:`COMPACT_AFTER` upload files, they are merged with the segments of the calendar spans they touch
(a year of daily data, a month of hourly data) into one ``segment-<span>-<digest>.avro`` per span.
Segments are written create-only under a name derived from their content, then swapped into the
manifest by compare-and-swap, so a crash at any point leaves either the old files or the new ones
listed (an unlisted segment is harmless and a retry recreates the same bytes), and two compactions
of the same entity at once leave one result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd

from batchcast.core import layout, schemas
from batchcast.core.config import Profile
from batchcast.core.crashpoints import COMPACTION, crash_point
from batchcast.core.schemas.frames import records_to_frame, write_frame
from batchcast.data import catalog, storage
from batchcast.data.catalog import CityData, DataFile, EntityData
from batchcast.ports import BlobStore

COMPACT_AFTER = 8  # upload files an entity keeps before they are merged into segments
_BATCH_RECORDS = 50_000  # records turned into a DataFrame at a time: bounds Python objects held
# A segment holds one calendar span: a year of daily data (≤ 366 rows), a month of hourly (≤ 744).
_SPANS = {"daily": ("Y", "%Y"), "hourly": ("M", "%Y-%m")}


def fingerprint(data: CityData, profile: Profile) -> str:
    """A hash of exactly which data (file names and contents) and which model settings a training
    would see: equal fingerprints mean retraining would learn the same model, wherever the bucket
    is (content checksums, not generations, so a replayed bucket gets the same one)."""
    digest = hashlib.sha256()
    settings = profile.model_dump_json(include={"features", "training", "backtest", "horizon", "covariates"})
    digest.update(settings.encode())
    for entity in data.values():
        for file in sorted(entity.files, key=lambda f: f.name):
            digest.update(f"{file.name}#{file.checksum}\n".encode())
    return digest.hexdigest()


def read_rows(
    blobs: BlobStore,
    profile: Profile,
    data: CityData,
    entities: Iterable[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pd.DataFrame:
    """The merged rows of ``entities`` (all when None) with periods in ``[since, until)``.

    Only files that reach into the range are read, concurrently; per (entity, period) the latest
    upload's row wins.
    """
    wanted = data.values() if entities is None else [data[e] for e in entities if e in data]
    files = [f for entity in wanted for f in entity.files if f.reaches(since, until)]
    schema = schemas.observation(profile)  # the profile's schema: its declared covariates included
    frames, batch = [], []
    for file, content in zip(files, storage.read_many(blobs, [f.name for f in files]), strict=True):
        records, metadata = schemas.read_records(content, schema)
        batch.extend(_with_bookkeeping(records, file, metadata))
        if len(batch) >= _BATCH_RECORDS:
            frames.append(records_to_frame(batch, schema))
            batch = []
    frames.append(records_to_frame(batch, schema))
    rows = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    time = profile.time_column
    if since is not None:
        rows = rows[rows[time] >= pd.Timestamp(since)]
    if until is not None:
        rows = rows[rows[time] < pd.Timestamp(until)]
    order = [profile.entity_key, time, "ingested_at", "upload_id"]
    rows = rows.sort_values(order, kind="stable").drop_duplicates([profile.entity_key, time], keep="last")
    return rows.reset_index(drop=True)


def _with_bookkeeping(records: list[dict], file: DataFile, metadata: dict[str, str]) -> list[dict]:
    """Records of files written before rows carried their upload get it from the file's metadata."""
    if not records or records[0].get("ingested_at") is not None:
        return records
    ingested = metadata.get("batchcast.ingested_at")
    ingested_at = datetime.fromisoformat(ingested) if ingested else datetime.min.replace(tzinfo=UTC)
    upload_id = metadata.get("batchcast.upload_id") or layout.parse_batch_data(file.name).upload_id
    return [r | {"ingested_at": ingested_at, "upload_id": upload_id} for r in records]


def describe(name: str, content: bytes, rows: pd.DataFrame, profile: Profile, kind: catalog.Kind) -> DataFile:
    """The manifest entry of a file just written (``rows`` sorted by period)."""
    periods = rows[profile.time_column]
    return DataFile(
        name=name,
        kind=kind,
        first=pd.Timestamp(periods.iloc[0]).isoformat(),
        last=pd.Timestamp(periods.iloc[-1]).isoformat(),
        rows=len(rows),
        checksum=hashlib.md5(content).hexdigest(),
    )


def compact(
    blobs: BlobStore,
    profile: Profile,
    city: str,
    data: CityData,
    entities: Iterable[str],
    *,
    force: bool = False,
) -> int:
    """Merge the upload files of those ``entities`` that have :data:`COMPACT_AFTER` of them (any
    number with ``force``) into segments; return how many entities were compacted."""
    due = {
        e: data[e] for e in entities if e in data and len(data[e].uploads) >= (1 if force else COMPACT_AFTER)
    }
    if not due:
        return 0
    inputs = {e: EntityData(e, _compaction_inputs(entity, profile)) for e, entity in due.items()}
    rows = read_rows(blobs, profile, inputs)
    spans = rows[profile.time_column].dt.strftime(_SPANS[profile.frequency][1])
    segments: dict[str, list[DataFile]] = {e: [] for e in due}
    for (entity, span), group in rows.groupby([profile.entity_key, spans], sort=True):
        segments[entity].append(_write_segment(blobs, profile, city, entity, span, group))
    swaps = {e: (list(inputs[e].files), segments[e]) for e in due}
    crash_point(COMPACTION, city)
    return len(catalog.replace(blobs, profile, city, swaps))


def _compaction_inputs(entity: EntityData, profile: Profile) -> tuple[DataFile, ...]:
    """The entity's uploads and the segments of every span they touch (those get rewritten)."""
    frequency, span_format = _SPANS[profile.frequency]
    touched = {
        span
        for f in entity.uploads
        for span in pd.period_range(f.first, f.last, freq=frequency).strftime(span_format)
    }
    segments = tuple(f for f in entity.files if f.kind == "segment" and _span(f.first, profile) in touched)
    return entity.uploads + segments


def _span(period: str, profile: Profile) -> str:
    return pd.Timestamp(period).strftime(_SPANS[profile.frequency][1])


def _write_segment(
    blobs: BlobStore, profile: Profile, city: str, entity: str, span: str, rows: pd.DataFrame
) -> DataFile:
    schema = schemas.observation(profile)
    metadata = {"batchcast.segment": span, "batchcast.schema_version": str(schemas.version(schema))}
    content = write_frame(schema, rows, metadata=metadata)
    digest = hashlib.sha256(content).hexdigest()[:12]
    name = layout.segment_object(profile.name, city, profile.entity_key, entity, span, digest)
    file = describe(name, content, rows, profile, "segment")
    storage.write_once(blobs, name, content, metadata=file.object_metadata(), content_type="application/avro")
    return file
