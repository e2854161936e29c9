"""Results documents ``results/dataset=<d>/<entity>=<id>.json``: how one predict's forecast of an
entity lands on what the document already holds.

A document keeps:

- ``forecasts``: every target period that has not ended on the city's clock (today's and the next
  ones), sorted by target start, each with its ``as_of`` and ``model_version``; a target's entry is
  replaced only by a newer forecast of the same target.
- ``target``/``as_of``/``model_version``/``forecast`` at the top: the latest target's entry (what
  freshness reads, through the object's metadata).
- ``history``: recent actuals, from the newest forecast's read.
- ``track_record``: for each period of the last :data:`TRACK_RECORD` that has begun, the last
  forecast made at or before its start (a late rerun never replaces it), joined with its actual
  once that arrived; ``accuracy`` sums it up (MAE and P10–P90 coverage over the scored periods).

Everything is keyed by period, so merging the same forecast twice changes nothing (replays write
nothing) and the document stays bounded.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from batchcast.ml import accuracy

TRACK_RECORD = timedelta(weeks=8)
ENTRY_FIELDS = ("target", "as_of", "model_version", "forecast")


def merge(current: dict | None, new: dict) -> dict:
    """The document once ``new`` (one predict's document of one target) lands on ``current``."""
    current = current or {}
    zone = ZoneInfo(new["timezone"])
    entries = [*_entries(current), _entry(new)]
    now = max(_local(entry["as_of"], zone) for entry in entries)
    track = _harvest(current.get("track_record", []), entries, zone, now)
    newer = not current or _when(new) >= _when(current)
    history = new.get("history", []) if newer else current.get("history", [])
    track = _with_actuals(track, new.get("history", []), overwrite=newer)
    track = [row for row in track if datetime.fromisoformat(row["period_start"]) >= now - TRACK_RECORD]
    forecasts = _open(entries, now)
    latest = forecasts[-1] if forecasts else max(entries, key=_when)
    return (
        {key: value for key, value in new.items() if key not in (*ENTRY_FIELDS, "history")}
        | {field: latest[field] for field in ENTRY_FIELDS}
        | {
            "forecasts": forecasts,
            "history": history,
            "track_record": track,
            "accuracy": track_accuracy(track),
        }
    )


def track_accuracy(track: list[dict]) -> dict[str, Any]:
    """MAE and P10–P90 coverage over the track record's periods whose actual arrived."""
    columns = ([row[q] for row in track] for q in ("p10", "p50", "p90", "actual"))
    sums = accuracy.totals(accuracy.score_points(*columns))
    scored = sums["points"]
    return {
        "periods": scored,
        "mae": round(sums["abs_error"] / scored, 4) if scored else None,
        "coverage": round(sums["covered"] / scored, 4) if scored else None,
    }


def _entry(document: dict) -> dict:
    return {field: document[field] for field in ENTRY_FIELDS}


def _entries(document: dict) -> list[dict]:
    # Documents written before ``forecasts`` existed hold their one entry at the top.
    if "forecasts" in document:
        return list(document["forecasts"])
    return [_entry(document)] if document.get("target") else []


def _when(document: dict) -> tuple[datetime, datetime]:
    """(target start on the city's clock, as-of instant): what makes one forecast newer than another.

    As-of times are compared as instants: different runs may carry different UTC offsets."""
    return datetime.fromisoformat(document["target"]["start"]), datetime.fromisoformat(document["as_of"])


def _local(moment: str, zone: ZoneInfo) -> datetime:
    """An as-of instant on the city's wall clock, comparable with the (naive, local) periods."""
    parsed = datetime.fromisoformat(moment)
    return parsed.astimezone(zone).replace(tzinfo=None) if parsed.tzinfo else parsed


def _open(entries: list[dict], now: datetime) -> list[dict]:
    """The newest entry of each target that has not ended at ``now``, by target start."""
    newest: dict[str, dict] = {}
    for entry in entries:
        start = entry["target"]["start"]
        if start not in newest or _when(entry) >= _when(newest[start]):
            newest[start] = entry
    alive = [e for e in newest.values() if datetime.fromisoformat(e["target"]["end"]) > now]
    return sorted(alive, key=lambda e: datetime.fromisoformat(e["target"]["start"]))


def _harvest(track: list[dict], entries: list[dict], zone: ZoneInfo, now: datetime) -> list[dict]:
    """The track record with every period that has begun by ``now`` given the last forecast made at
    or before its start (among the record and ``entries``), sorted by period."""
    kept = {row["period_start"]: row for row in track}
    for entry in entries:
        made = _local(entry["as_of"], zone)
        for row in entry["forecast"]:
            start = datetime.fromisoformat(row["period_start"])
            if not made <= start <= now:  # not yet begun, or forecast after it began
                continue
            held = kept.get(row["period_start"])
            if held is None or datetime.fromisoformat(entry["as_of"]) > datetime.fromisoformat(held["as_of"]):
                kept[row["period_start"]] = {
                    "period_start": row["period_start"],
                    "period_end": row["period_end"],
                    "p10": row["p10"],
                    "p50": row["p50"],
                    "p90": row["p90"],
                    "as_of": entry["as_of"],
                    "model_version": entry["model_version"],
                    "actual": held["actual"] if held else None,
                }
    return sorted(kept.values(), key=lambda row: datetime.fromisoformat(row["period_start"]))


def _with_actuals(track: list[dict], history: list[dict], *, overwrite: bool) -> list[dict]:
    """Join the track record with the actuals of ``history`` (corrections win only from a newer read)."""
    actuals = {h["period_start"]: h["actual"] for h in history if h["actual"] is not None}
    return [
        row | {"actual": actuals[row["period_start"]]}
        if row["period_start"] in actuals and (overwrite or row["actual"] is None)
        else row
        for row in track
    ]
