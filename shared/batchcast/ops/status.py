"""``batchcast status``: per dataset and city, what ran, what failed, what is stale, what is stuck,
and whether live accuracy drifted from the backtest.

Reads only small documents: ``status/outcomes/`` (last success and failure per function, long runs),
``status/freshness.json`` (stale entities, and the live-accuracy verdicts of the last scheduled
notify), the run-history index of the last few days (uploads and
how many were rejected) and the dead-letter topics. Nothing here lists ``runs/``.

Dead letters come through one function per backend, ``dead_letters(topic) -> list[dict]``, each dict
with ``attributes`` (the message's, so ``dataset``/``city``/``kind``), ``error``, ``subscription`` and
``dead_lettered_at`` (or ``publish_time``): the embedded bus reads its
``.batchcast/bus/<topic>-dlq.jsonl``; the gcp bus pulls (without acking) from the
``<topic>-dlq--hold`` subscription (``Topic.dead_letter_subscription``, as Terraform names it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from batchcast.core import config, layout
from batchcast.core.messages import Topic
from batchcast.data import storage
from batchcast.ops import outcomes, uploads_view
from batchcast.ports import BlobStore

DeadLetters = Callable[[str], list[dict]]
DATASET_WIDE = "*"  # the row of runs that concern a whole dataset (schedule ticks, notify)


def collect(blobs: BlobStore, dead_letters: DeadLetters, now: datetime | None = None) -> dict[str, Any]:
    """The status of every dataset and city, as one JSON-ready document.

    The dataset-wide row (city ``*``) counts the uploads of the last
    :data:`~batchcast.ops.uploads_view.RECENT_DAYS` days and how many were rejected whole, partly
    or failed (from the run-history index: one listing or read per day).
    """
    datasets: dict[str, dict[str, Any]] = {}

    def row(dataset: str, city: str | None) -> dict[str, Any]:
        section = datasets.setdefault(dataset, {"cities": {}})
        return section["cities"].setdefault(
            city or DATASET_WIDE,
            {
                "last_success": None,
                "last_failure": None,
                "stale": [],
                "stale_reasons": {},
                "dead_letters": [],
                "long_runs": [],
                "functions": {},
                "uploads": None,
                "live_accuracy": None,
            },
        )

    for document in outcomes.read_all(blobs):
        entry = row(document["dataset"], document["city"])
        entry["last_success"] = _latest(document, "last_success")
        entry["last_failure"] = _latest(document, "last_failure")
        entry["long_runs"] = document.get("long_runs", [])
        entry["functions"] = document.get("functions", {})
    freshness = storage.read_json(blobs, layout.FRESHNESS) or {"datasets": {}}
    for dataset, section in freshness["datasets"].items():
        datasets.setdefault(dataset, {"cities": {}}).update(
            checked_at=section.get("checked_at"), entities=len(section["entities"])
        )
        by_city: dict[str, list[str]] = {}
        for entity, status in sorted(section["entities"].items()):
            if status["stale"]:
                by_city.setdefault(status["city"], []).append(entity)
        for city, entities in by_city.items():
            entry = row(dataset, city)
            entry["stale"] = entities
            reasons = Counter(section["entities"][e]["reason"] for e in entities)
            entry["stale_reasons"] = dict(reasons.most_common())
        for city, verdict in section.get("live_accuracy", {}).items():
            row(dataset, city)["live_accuracy"] = verdict  # the last scheduled notify's drift verdict
    for topic in Topic:
        for letter in dead_letters(topic.value):
            attributes = letter.get("attributes", {})
            entry = row(attributes.get("dataset", "unknown"), attributes.get("city"))
            entry["dead_letters"].append(
                {
                    "topic": topic.value,
                    "kind": attributes.get("kind"),
                    "error": letter.get("error"),
                    "at": letter.get("dead_lettered_at") or letter.get("publish_time"),
                }
            )
    moment = now or datetime.now(UTC)
    recent = uploads_view.latest_uploads(blobs, uploads_view.recent_days(moment), now=moment, limit=10**9)
    for dataset, counts in uploads_view.rejected_counts(recent).items():
        row(dataset, None)["uploads"] = counts
    for dataset, why in config.profile_problems().items():
        datasets.setdefault(dataset, {"cities": {}})["profile_error"] = why
    return {"datasets": {d: datasets[d] for d in sorted(datasets)}}


def _latest(document: dict, which: str) -> dict | None:
    """The most recent ``last_success`` / ``last_failure`` over the document's functions."""
    found = [
        entry[which] | {"function": function}
        for function, entry in document.get("functions", {}).items()
        if entry.get(which)
    ]
    return max(found, key=lambda e: e["at"], default=None)


def rows(document: dict[str, Any]) -> list[dict[str, str]]:
    """One flat, printable row per (dataset, city), for the table."""
    printable = []
    for dataset, section in document["datasets"].items():
        if section.get("profile_error"):
            printable.append(_blank_row(dataset) | {"last failure": f"profile: {section['profile_error']}"})
        for city, entry in sorted(section["cities"].items()):
            success, failure = entry["last_success"], entry["last_failure"]
            printable.append(
                {
                    "dataset": dataset,
                    "city": city,
                    "last success": f"{success['function']} {success['at'][:16]}" if success else "-",
                    "last failure": f"{failure['function']} {failure['at'][:16]}: {failure['error']}"
                    if failure
                    else "-",
                    "stale": _stale_text(entry),
                    "rejected uploads": _uploads_text(entry.get("uploads")),
                    "dead letters": str(len(entry["dead_letters"])) if entry["dead_letters"] else "-",
                    "long runs": ", ".join(
                        f"{r['function']} {r['duration_seconds']:.0f}s" for r in entry["long_runs"]
                    )
                    or "-",
                }
            )
    return printable


def _uploads_text(counts: dict[str, int] | None) -> str:
    """``2 of 9 (1 whole, 1 partly), 37 rows``: uploads not fully taken in the recent days."""
    if not counts:
        return "-"
    bad = counts["rejected"] + counts["partial"] + counts["failed"]
    if not bad:
        return f"0 of {counts['uploads']}"
    kinds = [
        f"{counts[k]} {label}"
        for k, label in (("rejected", "whole"), ("partial", "partly"), ("failed", "failed"))
        if counts[k]
    ]
    return f"{bad} of {counts['uploads']} ({', '.join(kinds)}), {counts['rows_rejected']} rows"


def _blank_row(dataset: str) -> dict[str, str]:
    columns = (
        "last success",
        "last failure",
        "stale",
        "live accuracy",
        "rejected uploads",
        "dead letters",
        "long runs",
    )
    return {"dataset": dataset, "city": DATASET_WIDE} | dict.fromkeys(columns, "-")


def _stale_text(entry: dict[str, Any]) -> str:
    if not entry["stale"]:
        return "-"
    shown = ", ".join(entry["stale"][:3]) + (" …" if len(entry["stale"]) > 3 else "")
    reasons = "; ".join(entry["stale_reasons"])
    return f"{len(entry['stale'])} ({shown}): {reasons}"


def accuracy_rows(document: dict[str, Any]) -> list[dict[str, str]]:
    """One printable row per (dataset, city) the last scheduled notify judged: live MASE and coverage
    against the LATEST backtest's MASE, and whether it drifts (or why it was not judged)."""
    printable = []
    for dataset, section in document["datasets"].items():
        for city, entry in sorted(section["cities"].items()):
            verdict = entry.get("live_accuracy")
            if not verdict:
                continue
            coverage = verdict["live_coverage"]
            printable.append(
                {
                    "dataset": dataset,
                    "city": city,
                    "live MASE": _number(verdict["live_mase"]),
                    "backtest MASE": _number(verdict["backtest_mase"]),
                    "live coverage": "-" if coverage is None else f"{coverage:.0%}",
                    "points": str(verdict["points"]),
                    "drift": _drift_text(verdict),
                }
            )
    return printable


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _drift_text(verdict: dict[str, Any]) -> str:
    if verdict["note"]:
        return f"not judged: {verdict['note']}"
    return "DRIFTING" if verdict["drifting"] else "ok"
