"""The run history, for the operators' console and CLI: per day, every run's summary; per run, its
record and log lines.

Each run writes (see :meth:`batchcast.entrypoints.runtime.Runtime.handle`) its full record
(``runs/dt=<day>/<run_id>.json``), its log lines (``logs/dt=<day>/<run_id>.jsonl``) and a small
summary in the index (``status/runs/dt=<day>/<run_id>.json``, the same fields also as the object's
metadata). Reading a day therefore costs one listing of that day's index, never a listing of
``runs/``: three years of history cost what one week does. A day that is closed (older than
:data:`CLOSED_AFTER`, so no run started then can still be finishing) is rolled up into
``_day.json`` by its first reader, and read with one request from then on.

Writers never share an object (one index entry per run), so concurrent runs need no locking.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.data import storage
from batchcast.ports import BlobStore, NotFound, PreconditionFailed

Summary = dict[str, Any]
# The summary's fields: what a grid cell and a run list show without reading the record.
SUMMARY_FIELDS = (
    "run_id",
    "function",
    "dataset",
    "city",
    "status",
    "started_at",
    "duration_seconds",
    "error_class",
    "error",
    "logical_time",
    "parent_run_id",
)
# A partition run's upload: what the upload views show and link to (see steps.partition).
UPLOAD_FIELDS = ("upload_id", "raw_object", "report", "rejected_rows")
MAX_SUMMARY_ERROR = 300  # characters of the error kept in the index (the record has all of it)
# Runs are dated by their start; a training job may run for hours, so a day is final two days on.
CLOSED_AFTER = timedelta(days=2)
DATASET_WIDE = "*"  # the city of runs about a whole dataset (a schedule tick, notify)
# How outcomes rank when a grid cell holds several runs: the worst one colours it.
SEVERITY = {"failed": 4, "rejected": 3, "partial": 2, "succeeded": 1, "skipped": 0}


def summary(record: dict[str, Any]) -> Summary:
    """The index entry of a run record: :data:`SUMMARY_FIELDS`, the error shortened, plus the
    upload's row counts for a partition run."""
    message = record.get("message", {})
    entry = {
        **{k: record.get(k) for k in SUMMARY_FIELDS},
        "logical_time": message.get("logical_time"),
        "parent_run_id": message.get("parent_run_id"),
    }
    if entry["error"]:
        entry["error"] = entry["error"][:MAX_SUMMARY_ERROR]
    for count in ("rows_accepted", "rows_rejected"):
        if count in record.get("counts", {}):
            entry[count] = record["counts"][count]
    details = record.get("details") or {}
    entry |= {k: details[k] for k in UPLOAD_FIELDS if details.get(k) is not None}
    return entry


def record(blobs: BlobStore, day: date, run: dict[str, Any], lines: list[dict[str, Any]]) -> None:
    """Write a finished run's log lines and its index entry (create-only; a repeat is a no-op)."""
    run_id = run["run_id"]
    if lines:
        text = "".join(json.dumps(line, default=str) + "\n" for line in lines)
        _create(blobs, layout.run_log(day, run_id), text.encode(), "application/x-ndjson", None)
    entry = summary(run)
    metadata = {k: "" if v is None else str(v) for k, v in entry.items()}
    _create(blobs, layout.run_index_entry(day, run_id), storage.dumps(entry), "application/json", metadata)


def runs_for_days(
    blobs: BlobStore, days: Iterable[date], *, now: datetime | None = None
) -> dict[date, list[Summary]]:
    """Every run summary of each of ``days`` (oldest run first), from the index: one listing per
    open day, one read per closed day (rolled up on its first read)."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return {day: _day(blobs, day, closed=today - day >= CLOSED_AFTER) for day in days}


def grid(by_day: dict[date, list[Summary]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Days × (dataset, function, city) cells: ``{day: {"dataset/function/city": cell}}``.

    A cell has ``runs``, ``by_status`` (counts), ``status`` (the worst outcome, for its colour),
    ``seconds`` (total duration), ``last_run_id`` and, when one failed, ``error`` (the last failure's).
    """
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for day, summaries in sorted(by_day.items()):
        row = cells.setdefault(day.isoformat(), {})
        for entry in summaries:
            key = f"{entry['dataset']}/{entry['function']}/{entry.get('city') or DATASET_WIDE}"
            cell = row.setdefault(key, {"runs": 0, "by_status": {}, "status": "skipped", "seconds": 0.0})
            status = entry["status"]
            cell["runs"] += 1
            cell["by_status"][status] = cell["by_status"].get(status, 0) + 1
            cell["seconds"] = round(cell["seconds"] + float(entry.get("duration_seconds") or 0), 3)
            cell["last_run_id"] = entry["run_id"]
            if SEVERITY.get(status, 0) >= SEVERITY.get(cell["status"], 0):
                cell["status"] = status
            if entry.get("error") and status in ("failed", "rejected"):
                cell["error"] = entry["error"]
    return cells


def run_detail(blobs: BlobStore, run_id: str) -> dict[str, Any] | None:
    """A run's full record plus ``log`` (its kept log lines), found from the date in its id; None
    when no such run exists."""
    layout.check_id(run_id, "run id")
    for day in _candidate_days(run_id):
        run = storage.read_json(blobs, layout.run_record(day, run_id))
        if run is None:
            continue
        try:
            text = blobs.read(layout.run_log(day, run_id)).decode()
        except NotFound:
            text = ""
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        return run | {"log": lines, "record_object": layout.run_record(day, run_id)}
    return None


def _candidate_days(run_id: str) -> list[date]:
    # Ids start with the start time as the clock gave it (UTC, or a pinned clock's offset), while
    # records are dated in UTC: the day of the id, or the one either side.
    try:
        started = datetime.strptime(run_id[:15], "%Y%m%dT%H%M%S").date()
    except ValueError:
        return []
    return [started, started + timedelta(days=1), started - timedelta(days=1)]


def _day(blobs: BlobStore, day: date, *, closed: bool) -> list[Summary]:
    rollup = layout.run_index_rollup(day)
    if closed:
        kept = storage.read_json(blobs, rollup)
        if kept is not None:
            return kept["runs"]
    summaries = [
        _entry(blobs, info) for info in blobs.list(layout.run_index_prefix(day)) if info.name != rollup
    ]
    summaries.sort(key=lambda s: (s.get("started_at") or "", s["run_id"]))
    if closed:
        # The rollup is a cache of the listing just made: a reader allowed only to read (a console
        # with a viewer role) still gets the day, and lists it again next time.
        rolled = storage.dumps({"day": day.isoformat(), "runs": summaries})
        with contextlib.suppress(Exception):
            _create(blobs, rollup, rolled, "application/json", None)
    return summaries


def _entry(blobs: BlobStore, info: Any) -> Summary:
    """A summary from a listing's metadata (no read), or from the object when metadata is missing."""
    if info.metadata.get("run_id"):
        entry: Summary = {k: info.metadata.get(k) or None for k in info.metadata}
        entry["duration_seconds"] = float(entry.get("duration_seconds") or 0)
        for count in ("rows_accepted", "rows_rejected"):
            if entry.get(count) is not None:
                entry[count] = int(entry[count])
        return entry
    return json.loads(blobs.read(info.name))


def _create(
    blobs: BlobStore, name: str, data: bytes, content_type: str, metadata: dict[str, str] | None
) -> None:
    # Written already: a retried bookkeeping step, or another reader's rollup.
    with contextlib.suppress(PreconditionFailed):
        blobs.write(name, data, if_generation_match=0, content_type=content_type, metadata=metadata)
