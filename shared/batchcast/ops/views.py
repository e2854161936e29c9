"""What the operators' console shows about models and freshness, assembled from small documents.

Models come from the registry (``models/.../version=<v>/metadata.json`` and ``LATEST``), with the
live accuracy the last scheduled notify kept in ``status/freshness.json``; freshness
from ``status/freshness.json`` (written by every notify) joined with each stale store's alert episode
in ``status/alerts/dataset=<d>.json`` and the manager directory. Nothing here lists ``runs/``.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.data import storage
from batchcast.ops import training
from batchcast.ops.alerts import ManagerDirectory
from batchcast.ports import BlobStore

KEEP_VERSIONS = 20  # versions shown per city, newest first


def models(blobs: BlobStore, profile: Profile, keep: int = KEEP_VERSIONS) -> list[dict[str, Any]]:
    """Per city of ``profile``: its recent model versions (newest first) with their backtests,
    which one LATEST names, and the live accuracy the last scheduled notify judged against it."""
    document = storage.read_json(blobs, layout.FRESHNESS) or {}
    live = document.get("datasets", {}).get(profile.name, {}).get("live_accuracy", {})
    cities = []
    for city in profile.cities:
        latest = training.latest(blobs, profile, city)
        folders = _recent_versions(blobs, profile.name, city, latest)[:keep]
        documents = storage.concurrently(
            lambda folder: storage.read_json(blobs, folder + training.METADATA_FILE), folders
        )
        versions = [_version_row(d, latest) for d in documents if d]
        cities.append(
            {
                "city": city,
                "latest": latest.version if latest else None,
                "versions": versions,
                "live": live.get(city),
            }
        )
    return cities


def _recent_versions(
    blobs: BlobStore, dataset: str, city: str, latest: training.ModelRef | None
) -> list[str]:
    """The folders of versions trained in LATEST's month and the month before, newest first.

    Version names start with the time they were trained for, so two prefix listings find them
    however many years of daily trainings the registry keeps.
    """
    if latest is None:
        return []
    month = date.fromisoformat(latest.version[:4] + "-" + latest.version[4:6] + "-01")
    before = (month - timedelta(days=1)).replace(day=1)
    folders = set()
    for start in (month, before):
        prefix = f"{layout.model_prefix(dataset, city)}version={start:%Y%m}"
        folders |= {
            info.name.removesuffix(training.METADATA_FILE)
            for info in blobs.list(prefix)
            if info.name.endswith("/" + training.METADATA_FILE)
        }
    return sorted(folders, reverse=True)


def _version_row(metadata: dict[str, Any], latest: training.ModelRef | None) -> dict[str, Any]:
    scores = metadata.get("metrics", {}).get("overall") or {}
    return {
        "version": metadata["version"],
        "latest": latest is not None and latest.version == metadata["version"],
        "trained_for": metadata.get("trained_for"),
        "training_window": metadata.get("training_window"),
        "rows": metadata.get("rows"),
        "entities": metadata.get("entities"),
        "train_seconds": metadata.get("train_seconds"),
        "mase": scores.get("mase"),
        "coverage_raw": scores.get("coverage_raw"),
        "coverage_calibrated": scores.get("coverage"),
        "mae": scores.get("mae"),
        "wape": scores.get("wape"),
    }


def alert_state(episode: dict | None, managers: list[str]) -> dict[str, Any]:
    """How a stale store's managers were told: ``emailed``, ``unconfirmed`` (handed to the SMTP
    server by a run that died before its answer), ``pending``, ``grace`` or ``no manager``.

    ``grace``: stale for less than the grace period, so no episode was opened yet.
    """
    if episode is None:
        return {"state": "grace" if managers else "no manager"}
    email = episode.get("stale", {})
    state = {"sent": "emailed", "skipped": "no manager", "unconfirmed": "unconfirmed"}.get(
        email.get("state"), "pending"
    )
    return {
        "state": state,
        "episode": episode.get("id"),
        "sent_at": email.get("sent_at"),
        "attempts": email.get("attempts", 0),
        "last_error": email.get("last_error"),
    }


def freshness(blobs: BlobStore, profile: Profile, directory: ManagerDirectory | None) -> dict[str, Any]:
    """Per city of ``profile``: expected period, stores counted, and each stale store with its alert.

    ``directory`` None means the manager directory is unreadable (every alert shows as unknown).
    """
    document = storage.read_json(blobs, layout.FRESHNESS) or {}
    section = document.get("datasets", {}).get(profile.name, {})
    episodes = (storage.read_json(blobs, layout.alerts_object(profile.name)) or {}).get("episodes", {})
    cities: dict[str, dict[str, Any]] = {}
    for entity, status in sorted(section.get("entities", {}).items()):
        city = cities.setdefault(
            status["city"],
            {"city": status["city"], "expected": status.get("expected"), "entities": 0, "stale": []},
        )
        city["entities"] += 1
        city["expected"] = max(city["expected"] or "", status.get("expected") or "") or None
        if not status.get("stale"):
            continue
        if directory is None:
            alert = {"state": "unknown", "last_error": f"{layout.MANAGERS} is invalid"}
        else:
            alert = alert_state(episodes.get(entity), directory.managers(profile.name, entity))
        city["stale"].append(
            {
                "entity": entity,
                "as_of": status.get("as_of"),
                "forecast_for": status.get("forecast_for"),
                "since": status.get("since"),
                "reason": status.get("reason"),
                "alert": alert,
            }
        )
    return {
        "dataset": profile.name,
        "period": str(profile.period),
        "checked_at": section.get("checked_at"),
        "as_of": document.get("as_of"),
        "cities": [cities[c] for c in sorted(cities)],
    }
