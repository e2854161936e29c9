"""``status/outcomes/``: the last success and the last failure of each function per (dataset, city).

Run records (``runs/``) are the full history, one object per invocation; reading them to learn
"did Munich's predict fail?" would mean listing every run. Instead :meth:`Runtime.handle` folds each
run into one small document per (dataset, city) (plus ``_dataset.json`` for dataset-wide runs such
as a schedule tick), which freshness reasons and ``batchcast status`` read directly.

The documents are kept cheap under concurrency: a success that repeats the one already recorded
(another shard of the same run, a redelivery, another store's upload forecast for the same target
minutes later) leaves the object untouched, so only the first shard of a run writes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import UNKNOWN_DATASET, Message
from batchcast.data import storage
from batchcast.ports import BlobStore
from batchcast.steps import StepResult

SUCCESS_REFRESH = timedelta(minutes=10)  # a repeated success is recorded at most this often
LONG_RUN_SECONDS = 600  # a push delivery's ack deadline at most; longer runs are worth a look
KEEP_LONG_RUNS = 5
_RECORDED = ("succeeded", "partial", "failed", "rejected")  # "skipped" runs did nothing to report


def city_outcomes(
    record: dict[str, Any], message: Message, result: StepResult | None
) -> dict[str | None, str]:
    """What one run means per city: ``{city or None: error text, or "" for a success}``.

    A run about one city (predict) has one outcome. A dataset-wide run (train_trigger, notify) has
    a dataset outcome (key None), a failure for each city named in its per-city errors, and a
    success for each city it handed work on for (the cities of its outgoing messages and of a
    ``partitions-ready`` it consumed).
    """
    error = record.get("error") or ""
    if record["status"] in ("failed", "rejected") and not error:
        error = "; ".join(f"{k}: {v}" for k, v in (record.get("errors") or {}).items()) or record["status"]
    # The step says whether its work was about one city (predict sets ``result.city``); notify,
    # though triggered by one city's predictions, checks the whole dataset. A run that died
    # without a result is put on the city of its message.
    city = result.city if result is not None else message.city
    if city:
        return {city: error or (record.get("errors") or {}).get(city, "")}
    outcomes: dict[str | None, str] = {None: error}
    cities = _profile_cities(record["dataset"])
    touched = set(getattr(message, "cities", []) or [])
    if result is not None:
        touched |= {m.city for m in result.messages if m.city}
        for where, what in result.errors.items():
            if where in cities:
                outcomes[where] = what
    for city in sorted(touched & cities):
        outcomes.setdefault(city, error)
    return outcomes


def record_run(blobs: BlobStore, record: dict[str, Any], message: Message, result: StepResult | None) -> None:
    """Fold one run (its run record, message and result) into the outcome documents it concerns."""
    if record["status"] not in _RECORDED or record["dataset"] == UNKNOWN_DATASET:
        return
    if record["function"] == "partition" and record["status"] != "failed":
        # Uploads are counted by the upload views (rejected ones too); only a partition that could
        # not run at all (a broken profile) is a dataset's failure worth a status row.
        return
    target = getattr(message, "target_start", None)
    base = {
        "at": record["started_at"],
        "run_id": record["run_id"],
        "logical_time": record["message"]["logical_time"],
        "target_start": target.isoformat() if target else None,
    }
    long_run = (
        {k: record[k] for k in ("run_id", "function", "started_at", "duration_seconds")}
        if record["duration_seconds"] > LONG_RUN_SECONDS
        else None
    )
    for city, error in city_outcomes(record, message, result).items():
        storage.update_json(
            blobs,
            layout.outcome_object(record["dataset"], city),
            lambda current, city=city, error=error: _fold(
                current, record["dataset"], city, record["function"], base, error, long_run
            ),
        )


def _fold(
    current: dict | None,
    dataset: str,
    city: str | None,
    function: str,
    base: dict[str, Any],
    error: str,
    long_run: dict | None,
) -> dict:
    document = current or {"dataset": dataset, "city": city, "functions": {}, "long_runs": []}
    entry = dict(document["functions"].get(function, {}))
    if error:
        entry["last_failure"] = base | {"error": error[:2000]}
    else:
        before = entry.get("last_success") or {}
        same_run = all(before.get(k) == base[k] for k in ("logical_time", "target_start"))
        entry["last_success"] = before if same_run or _repeats(entry, base) else base
    # Which came last, by arrival: pinned clocks (tests, reruns) give equal times.
    entry["last"] = "failure" if error else "success"
    long_runs = document.get("long_runs", [])
    if long_run and long_run not in long_runs:
        long_runs = [*long_runs, long_run][-KEEP_LONG_RUNS:]
    return document | {"functions": document["functions"] | {function: entry}, "long_runs": long_runs}


def _repeats(entry: dict[str, Any], success: dict[str, Any]) -> bool:
    """Whether a success adds nothing worth a write: the last outcome already was a success for the
    same target, recorded less than :data:`SUCCESS_REFRESH` ago. A thousand stores uploading in a
    burst each run predict for tomorrow; the city's document then changes about once per window,
    not once per store (GCS takes about one write per second per object)."""
    before = entry.get("last_success")
    if entry.get("last") != "success" or not before or before.get("target_start") != success["target_start"]:
        return False
    return datetime.fromisoformat(success["at"]) - datetime.fromisoformat(before["at"]) < SUCCESS_REFRESH


def read(blobs: BlobStore, dataset: str, city: str | None) -> dict:
    """The outcome document of (dataset, city); an empty one when nothing was recorded yet."""
    return storage.read_json(blobs, layout.outcome_object(dataset, city)) or {
        "dataset": dataset,
        "city": city,
        "functions": {},
        "long_runs": [],
    }


def read_all(blobs: BlobStore) -> list[dict]:
    """Every outcome document of the bucket (one small object per dataset and city)."""
    documents = []
    for info in blobs.list(layout.OUTCOMES):
        try:
            layout.parse_outcome(info.name)
        except layout.LayoutError:
            continue
        document = storage.read_json(blobs, info.name)
        if document:
            documents.append(document)
    return documents


def latest_failure(document: dict, function: str) -> dict | None:
    """The function's last failure when it is newer than its last success, else None."""
    entry = document.get("functions", {}).get(function, {})
    return entry.get("last_failure") if entry.get("last") == "failure" else None


def _profile_cities(dataset: str) -> set[str]:
    try:
        return set(load_profile(dataset).cities)
    except ConfigError:
        return set()
