"""The operators' view of uploads: the latest per dataset with accepted and rejected rows and links
to the error report and rejected rows, the stores expected to upload that have not, and one store's
upload history.

Everything comes from what the pipeline already writes, at a cost independent of history: the
run-history index (:mod:`batchcast.ops.runs`, one listing or read per day shown) for partition runs,
and the cities' manifests (:mod:`batchcast.data.catalog`, a few small parts per city) for which
stores exist, what each holds and when its data ends. Nothing lists ``raw/``, ``rejected/`` or
``batch_data/``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.data import catalog
from batchcast.ops import freshness, runs
from batchcast.ports import BlobStore

RECENT_DAYS = 7  # how far back "latest uploads" and status's rejected counts look
Upload = dict[str, Any]


def recent_days(now: datetime, days: int = RECENT_DAYS) -> list[date]:
    """The UTC dates of the last ``days`` days, today first."""
    today = now.date()
    return [today - timedelta(days=n) for n in range(days)]


def latest_uploads(
    blobs: BlobStore, days: Iterable[date], *, now: datetime, dataset: str | None = None, limit: int = 100
) -> list[Upload]:
    """The partition runs of ``days`` (of ``dataset``, or all), newest first, at most ``limit``.

    Each: ``run_id``, ``dataset`` ("unknown" when no profile fitted), ``status`` (succeeded,
    partial: some rows rejected, rejected: none flowed, failed: could not run), ``rows_accepted``,
    ``rows_rejected``, ``upload_id``, ``raw_object``, ``report`` and ``rejected_rows`` (object names,
    None when nothing was rejected), ``error`` and ``started_at``.
    """
    found = [
        entry
        for summaries in runs.runs_for_days(blobs, days, now=now).values()
        for entry in summaries
        if entry["function"] == "partition" and entry["status"] != "skipped"
    ]
    if dataset is not None:
        found = [entry for entry in found if entry["dataset"] == dataset]
    found.sort(key=lambda entry: (entry.get("started_at") or "", entry["run_id"]), reverse=True)
    return [_upload(entry) for entry in found[:limit]]


def _upload(entry: runs.Summary) -> Upload:
    fields = ("run_id", "dataset", "status", "started_at", "error", *runs.UPLOAD_FIELDS)
    return {k: entry.get(k) for k in fields} | {
        "rows_accepted": int(entry.get("rows_accepted") or 0),
        "rows_rejected": int(entry.get("rows_rejected") or 0),
    }


def rejected_counts(uploads: list[Upload]) -> dict[str, dict[str, int]]:
    """Per dataset: ``uploads``, ``rejected`` (nothing flowed), ``partial`` (some rows rejected),
    ``failed`` (could not run) and ``rows_rejected``."""
    counts: dict[str, dict[str, int]] = {}
    for upload in uploads:
        entry = counts.setdefault(
            upload["dataset"], {"uploads": 0, "rejected": 0, "partial": 0, "failed": 0, "rows_rejected": 0}
        )
        entry["uploads"] += 1
        entry["rows_rejected"] += upload["rows_rejected"]
        if upload["status"] in ("rejected", "partial", "failed"):
            entry[upload["status"]] += 1
    return counts


def missing_stores(blobs: BlobStore, profile: Profile, now: datetime) -> dict[str, list[dict[str, str]]]:
    """Per city, the entities whose data stops before the forecast now due needs it (they have not
    uploaded), each with ``entity``, ``last_data`` (its last period) and ``needed_from`` (the period
    its data should reach). A few manifest reads per city."""
    missing: dict[str, list[dict[str, str]]] = {}
    for city in profile.cities:
        expected, _ = profile.expected_window(now, city)
        cutoff = freshness.data_cutoff(profile, expected)
        late = [
            {"entity": entity, "last_data": data.last, "needed_from": cutoff.isoformat()}
            for entity, data in sorted(catalog.read(blobs, profile, city).items())
            if not data.last or datetime.fromisoformat(data.last) < cutoff
        ]
        if late:
            missing[city] = late
    return missing


def store_history(blobs: BlobStore, profile: Profile, city: str, entity: str) -> list[dict[str, Any]]:
    """One store's data files, newest data first: ``upload_id`` (None for a compacted segment, which
    merges older uploads), ``kind``, ``first``/``last`` period, ``rows`` and the object ``name``.
    One manifest part read."""
    data = catalog.read(blobs, profile, city, entities=[entity]).get(entity)
    if data is None:
        return []
    history = []
    for file in data.files:
        upload_id = layout.parse_batch_data(file.name).upload_id if file.kind == "upload" else None
        history.append(
            {
                "upload_id": upload_id,
                "kind": file.kind,
                "first": file.first,
                "last": file.last,
                "rows": file.rows,
                "name": file.name,
            }
        )
    return sorted(history, key=lambda f: f["last"], reverse=True)
