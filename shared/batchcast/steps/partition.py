"""Step partition: validate a raw upload and Hive-partition its good rows.

Input: an :class:`ObjectFinalized` for an object under ``raw/``. Output, all create-only and
byte-deterministic, so redelivery and replay rewrite nothing and publish the same message:

* ``batch_data/dataset=<profile>/city=<city>/<entity>=<id>/<upload_id>.avro`` per (city, entity):
  the upload's good rows of that entity sorted by period, each carrying the bookkeeping fields
  ``ingested_at`` (the message's logical time) and ``upload_id``; Avro metadata ``batchcast.upload_id``,
  ``batchcast.ingested_at`` (the message's logical time, UTC ISO), ``batchcast.raw_object``,
  ``batchcast.schema_version``; object metadata ``rows``, ``first``, ``last`` (ISO period starts).
  The files are then listed in the city's manifest (:mod:`batchcast.data.catalog`), and an entity with
  enough upload files has them compacted into segments (:func:`batchcast.data.dataset.compact`).
* ``rejected/dt=<raw dt>/<upload_id>.csv`` (every bad row in the user's columns, plus ``row``; an
  Avro upload's bad rows are written as CSV too) or, when the whole file is rejected, a copy of the
  raw object under its own extension (copied inside the bucket, never through memory); and
  ``<upload_id>.error.json``, the report: exact counts per reason category and the reasons of the
  first rejected rows (``validation.MAX_LISTED_ROWS``), saying how many more it leaves out.
* A misnamed object under ``raw/`` is copied to ``rejected/dt=<logical UTC date>/<safe name>``.
* An upload of future values (a mapping of kind ``future``) goes to ``future/`` instead of
  ``batch_data/`` (:func:`batchcast.data.future.write`); the entities it concerns are re-forecast.

The upload is read as a stream, chunk by chunk (``BATCHCAST_PARTITION_CHUNK_BYTES``), so memory stays
bounded whatever its size (see :mod:`batchcast.data.validation`); a file larger than
``BATCHCAST_MAX_UPLOAD_BYTES`` is rejected whole, unread, with a reason saying to split it.

Readers merging several uploads of one entity take, per (entity, period), the row with the latest
``ingested_at`` (then ``upload_id``): a corrected re-upload wins.
The raw object is never modified or deleted.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC
from typing import Any

import pandas as pd

from batchcast.core import layout, schemas
from batchcast.core.config import Profile
from batchcast.core.messages import InvalidMessage, Message, ObjectFinalized, PartitionsReady
from batchcast.core.schemas import GROUP_KEY
from batchcast.data import catalog, dataset, future, storage
from batchcast.data.validation import Upload, ValidatedUpload, read_upload
from batchcast.ports import Ports
from batchcast.steps import RunContext, Status, StepResult

_WRITE_BATCH = 64  # partition files held in memory to be written at once (each one entity's rows)
CONTENT_TYPES = {"csv": "text/csv", "avro": "application/avro", "json": "application/json"}


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Partition the upload ``message`` announces; see the module docstring for what is written."""
    if not isinstance(message, ObjectFinalized):
        raise InvalidMessage(f"partition takes object-finalized messages, not {message.kind}")
    name = message.name
    if not name.startswith(layout.RAW) or name.endswith("/"):
        return StepResult(status="skipped", notes=[f"{name} is not an upload under {layout.RAW}"])
    info = ports.blobs.stat(name)
    if info is None:
        return StepResult(status="failed", errors={name: "the object no longer exists"})
    if info.generation > message.generation:
        note = (
            f"{name}#{message.generation} was overwritten (now #{info.generation}); its own event covers it"
        )
        return StepResult(status="skipped", notes=[note])
    try:
        raw = layout.parse_raw(name)
    except layout.LayoutError as error:
        return _quarantine_misnamed(ports, message, str(error))
    metadata = {**info.metadata, **message.metadata}
    settings = run.settings
    with (
        ports.blobs.open(name) as stream,
        read_upload(
            stream,
            raw.ext,
            size=info.size,
            logical_time=message.logical_time,
            dataset=metadata.get("dataset") or None,
            mapping=metadata.get("mapping") or None,
            max_bytes=settings.max_upload_bytes,
            chunk_bytes=settings.partition_chunk_bytes,
        ) as upload,
    ):
        try:
            write = _write_future if upload.result.kind == "future" else _write_partitions
            cities, partitions = write(ports, message, raw.upload_id, upload)
            report = _write_rejected(ports, message, raw, upload)
        except storage.ConflictingWrite as error:
            # An earlier delivery of this upload id wrote other bytes: the raw object was replaced
            # under the same name (uploads are immutable). Retrying cannot help; the run record says why.
            why = f"{error}; was {name} replaced? Upload changed data under a new name"
            return StepResult(status="failed", errors={name: why})
    result = _result(message, raw.upload_id, upload.result, cities, partitions, report)
    run.log.info(result.notes[-1], fields={"counts": result.counts, "status": result.status})
    return result


def _write_partitions(
    ports: Ports, message: ObjectFinalized, upload_id: str, upload: Upload
) -> tuple[dict[str, list[str]], int]:
    """Write one Avro file per (city, entity); return each city's entities and how many files there are."""
    profile = upload.result.profile
    if profile is None or upload.result.rows_accepted == 0:
        return {}, 0
    schema = schemas.observation(profile)
    metadata = {
        "batchcast.upload_id": upload_id,
        "batchcast.ingested_at": message.logical_time.astimezone(UTC).isoformat(),
        "batchcast.raw_object": message.name,
        "batchcast.schema_version": str(schemas.version(schema)),
    }
    written: dict[str, dict[str, catalog.DataFile]] = {}
    batch: list[tuple[catalog.DataFile, bytes]] = []

    def write(item: tuple[catalog.DataFile, bytes]) -> None:
        file, content = item
        storage.write_once(
            ports.blobs,
            file.name,
            content,
            metadata=file.object_metadata(),
            content_type=CONTENT_TYPES["avro"],
        )

    # One (city, entity) at a time, its rows in time order; groups come in no particular order.
    for city, entity, rows in upload.groups():
        name = layout.batch_data_object(profile.name, city, profile.entity_key, entity, upload_id)
        # An optional field that no row has (trips' weather) is left out: write_frame writes it as
        # null all the same, without converting a column of nulls value by value.
        rows = rows.dropna(axis=1, how="all").assign(
            ingested_at=message.logical_time.astimezone(UTC), upload_id=upload_id
        )
        content = schemas.write_frame(schema, rows, metadata=metadata)
        file = dataset.describe(name, content, rows, profile, "upload")
        written.setdefault(city, {})[entity] = file
        batch.append((file, content))
        if len(batch) == _WRITE_BATCH:  # thousands of stores: overlap the writes, a few at a time
            storage.concurrently(write, batch)
            batch = []
    storage.concurrently(write, batch)
    for city, files in sorted(written.items()):
        _catalogue(ports, profile, city, files)
    partitions = sum(len(files) for files in written.values())
    return {city: sorted(files) for city, files in sorted(written.items())}, partitions


def _write_future(
    ports: Ports, message: ObjectFinalized, upload_id: str, upload: Upload
) -> tuple[dict[str, list[str]], int]:
    """Store an upload of future values (few rows: known covariates of coming periods); return the
    entities it re-forecasts, per city, and how many files there are."""
    profile = upload.result.profile
    if profile is None or upload.result.rows_accepted == 0:
        return {}, 0
    rows = pd.concat(list(upload.good_rows()), ignore_index=True)
    written = future.write(
        ports.blobs,
        profile,
        rows,
        upload_id=upload_id,
        logical_time=message.logical_time,
        raw_object=message.name,
    )
    return _planned_for(ports, profile, rows), written


def _planned_for(ports: Ports, profile: Profile, rows: pd.DataFrame) -> dict[str, list[str]]:
    """The entities whose forecasts an upload of future values may change, per city: those it names,
    and every entity of a city it gives a city-wide value for. They are re-forecast at once."""
    affected: dict[str, list[str]] = {}
    for city, group in rows.groupby(GROUP_KEY, sort=True):
        named = group[profile.entity_key].astype("string").fillna("")
        ids = set(named) - {""}
        if (named == "").any():  # a city-wide value
            ids |= set(catalog.read(ports.blobs, profile, str(city)))
        if ids:
            affected[str(city)] = sorted(ids)
    return affected


def _catalogue(ports: Ports, profile: Profile, city: str, files: dict[str, catalog.DataFile]) -> None:
    """List the upload's files in the city's manifest, then compact the entities that are due."""
    data = catalog.record(ports.blobs, profile, city, files)
    dataset.compact(ports.blobs, profile, city, data, files)


def _write_rejected(
    ports: Ports, message: ObjectFinalized, raw: layout.RawName, upload: Upload
) -> str | None:
    """Quarantine what was rejected and write its report; return the report's name (None: nothing)."""
    result = upload.result
    if result.file_errors:
        quarantined = layout.rejected_object(raw.dt, raw.upload_id, raw.ext)
        storage.copy_once(ports.blobs, message.name, quarantined)
    elif result.rows_rejected:
        quarantined = layout.rejected_object(raw.dt, raw.upload_id, "csv")
        storage.write_once_from(
            ports.blobs,
            quarantined,
            lambda: storage.chunks_stream(upload.rejected_csv()),
            content_type=CONTENT_TYPES["csv"],
        )
    else:
        return None
    return _write_report(
        ports,
        layout.rejected_report(raw.dt, raw.upload_id),
        _report(message, raw.upload_id, result, quarantined),
    )


def _report(message: ObjectFinalized, upload_id: str, upload: ValidatedUpload, quarantined: str) -> dict:
    profile = upload.profile
    return {
        "upload_id": upload_id,
        "raw_object": message.name,
        "logical_time": message.logical_time.astimezone(UTC).isoformat(),
        "dataset": profile.name if profile else None,
        "mapping": upload.mapping,
        "status": _status(upload),
        "summary": _summary(upload),
        "rejected_object": quarantined,
        "file_errors": upload.file_errors,
        "warnings": upload.warnings,
        "counts": {
            "read": upload.rows_read,
            "accepted": upload.rows_accepted,
            "rejected": upload.rows_rejected,
        },
        "reasons": upload.reason_counts(),
        "rows": upload.row_errors,
        "rows_left_out": upload.rows_unlisted,
        **({"note": _left_out(upload, quarantined)} if upload.rows_unlisted else {}),
    }


def _left_out(upload: ValidatedUpload, quarantined: str) -> str:
    return (
        f"rows lists the reasons of the first {len(upload.row_errors):,} rejected rows and leaves out "
        f"{upload.rows_unlisted:,} more (reasons counts them all); {quarantined} holds every rejected row "
        "and the raw object every row"
    )


def _write_report(ports: Ports, name: str, report: dict[str, Any]) -> str:
    storage.write_once(ports.blobs, name, storage.dumps(report), content_type=CONTENT_TYPES["json"])
    return name


def _quarantine_misnamed(ports: Ports, message: ObjectFinalized, why: str) -> StepResult:
    """Copy an object whose name breaks the raw/ layout to rejected/, with a report saying why."""
    dt = message.logical_time.astimezone(UTC).date()
    safe_id, ext = _safe_name(message.name)
    quarantined = layout.rejected_object(dt, safe_id, ext)
    storage.copy_once(ports.blobs, message.name, quarantined)
    upload = ValidatedUpload(file_errors=[why])
    report = _write_report(
        ports, layout.rejected_report(dt, safe_id), _report(message, safe_id, upload, quarantined)
    )
    return StepResult(
        status="rejected",
        errors={message.name: why},
        notes=[f"quarantined as {quarantined}"],
        counts=_counts(upload, 0),
        details={"report": report},
    )


def _safe_name(name: str) -> tuple[str, str]:
    """A valid id and extension for a misnamed object; a hash of the full name keeps them unique."""
    base = name.rstrip("/").rsplit("/", 1)[-1]
    stem, _, ext = base.rpartition(".") if "." in base else (base, "", "")
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._-")[:80] or "upload"
    ext = re.sub(r"[^A-Za-z0-9]+", "", ext)[:16].lower() or "bin"
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:10]}", ext


def _result(
    message: ObjectFinalized,
    upload_id: str,
    upload: ValidatedUpload,
    cities: dict[str, list[str]],
    partitions: int,
    report: str | None,
) -> StepResult:
    status = _status(upload)
    result = StepResult(
        status=status,
        counts=_counts(upload, partitions),
        notes=[*upload.warnings, _summary(upload)],
        details=_upload_details(message, upload_id, upload, cities, report),
        dataset=upload.profile.name if upload.profile is not None else None,
    )
    if upload.file_errors:
        result.errors[message.name] = "; ".join(upload.file_errors)
    if cities and upload.profile is not None:
        result.messages.append(
            PartitionsReady(
                dataset=upload.profile.name,
                logical_time=message.logical_time,
                upload_id=upload_id,
                raw_object=message.name,
                raw_generation=message.generation,
                cities=sorted(cities),
                entities=cities,
                rows_accepted=upload.rows_accepted,
                rows_rejected=upload.rows_rejected,
            )
        )
    return result


def _upload_details(
    message: ObjectFinalized,
    upload_id: str,
    upload: ValidatedUpload,
    cities: dict[str, list[str]],
    report: str | None,
) -> dict[str, Any]:
    """What the run record keeps of an upload, for the operators' upload views: its ids, cities,
    and where its error report and rejected rows are (None when nothing was rejected)."""
    raw = layout.parse_raw(message.name)
    rejected = None
    if upload.file_errors:
        rejected = layout.rejected_object(raw.dt, upload_id, raw.ext)
    elif upload.rows_rejected:
        rejected = layout.rejected_object(raw.dt, upload_id, "csv")
    return {
        "upload_id": upload_id,
        "raw_object": message.name,
        "kind": upload.kind,
        "cities": sorted(cities),
        "entities": sum(len(entities) for entities in cities.values()),
        "report": report,
        "rejected_rows": rejected,
    }


def _status(upload: ValidatedUpload) -> Status:
    if upload.file_errors or upload.rows_accepted == 0:
        return "rejected"
    return "partial" if upload.rows_rejected else "succeeded"


def _counts(upload: ValidatedUpload, partitions: int) -> dict[str, int | float]:
    return {
        "rows_read": upload.rows_read,
        "rows_accepted": upload.rows_accepted,
        "rows_rejected": upload.rows_rejected,
        "partitions": partitions,
    }


def _summary(upload: ValidatedUpload) -> str:
    """One line for the uploader: what flowed and why the rest did not."""
    if upload.file_errors:
        return f"file rejected: {'; '.join(upload.file_errors)}"
    text = f"{upload.rows_accepted} of {upload.rows_read} rows accepted"
    reasons = upload.reason_counts()
    if reasons:
        text += (
            f"; {upload.rows_rejected} rejected (" + ", ".join(f"{n} {r}" for r, n in reasons.items()) + ")"
        )
    return text
