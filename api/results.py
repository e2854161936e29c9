"""What the API serves, read from the bucket: results documents joined with their freshness.

``results/dataset=<d>/<entity>=<id>.json`` holds an entity's open forecasts and track record
(written by predict, merged by ``batchcast.ops.results``);
``status/freshness.json`` says per entity whether it is stale, why and since when (written by
notify). The freshness document and the per-dataset listings cover every entity at once, so they
are cached for a few seconds; a results document is read on each request (it is small and changes
when a new forecast lands).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from batchcast.core import layout
from batchcast.core.config import Profile, enabled_profiles
from batchcast.data import storage
from batchcast.ports import BlobStore

CACHE_SECONDS = 5.0


class Cached:
    """One value per key, recomputed when older than ``ttl`` seconds."""

    def __init__(self, ttl: float, monotonic: Callable[[], float]) -> None:
        self._ttl = ttl
        self._monotonic = monotonic
        self._values: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        now = self._monotonic()
        with self._lock:
            hit = self._values.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        value = compute()
        with self._lock:
            self._values[key] = (now, value)
        return value


class ResultsReader:
    """Reads results and freshness for the datasets this deployment serves."""

    def __init__(
        self,
        blobs: BlobStore,
        *,
        ttl: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.blobs = blobs
        self.profiles: dict[str, Profile] = {p.name: p for p in enabled_profiles()}
        self._cache = Cached(ttl, monotonic)

    def freshness(self, dataset: str) -> dict[str, dict]:
        """Per entity of ``dataset``: stale, since, reason, as_of, expected, forecast_for."""
        document = self._cache.get("freshness", lambda: storage.read_json(self.blobs, layout.FRESHNESS) or {})
        return document.get("datasets", {}).get(dataset, {}).get("entities", {})

    def document(self, dataset: str, entity_id: str) -> dict | None:
        """The latest results document of one entity, or None."""
        profile = self.profiles[dataset]
        return storage.read_json(self.blobs, layout.results_object(dataset, profile.entity_key, entity_id))

    def entities(self, dataset: str) -> dict[str, dict]:
        """Every known entity of ``dataset`` (with results, or tracked by freshness): city and stale."""

        def scan() -> dict[str, dict]:
            known: dict[str, dict] = {}
            for info in self.blobs.list(layout.results_prefix(dataset)):
                _, entity = layout.parse_results(info.name)
                known[entity] = {"city": info.metadata.get("city"), "stale": None}
            for entity, status in self.freshness(dataset).items():
                known.setdefault(entity, {"city": status.get("city"), "stale": None})
                known[entity]["stale"] = status.get("stale")
            return dict(sorted(known.items()))

        return self._cache.get(f"entities/{dataset}", scan)

    def result(self, dataset: str, entity_id: str) -> dict | None:
        """The API's view of one entity, or None when nothing at all is known about it."""
        document = self.document(dataset, entity_id)
        status = self.freshness(dataset).get(entity_id)
        if document is None and status is None:
            return None
        return assemble(self.profiles[dataset], entity_id, document or {}, status)


def assemble(profile: Profile, entity_id: str, document: dict, status: dict | None) -> dict:
    """Join a results document (possibly empty) with the entity's freshness entry (possibly None)."""
    city = document.get("city") or (status or {}).get("city")
    zone = document.get("timezone") or str(profile.zone(city))
    as_of = document.get("as_of") or (status or {}).get("as_of")
    return {
        "dataset": profile.name,
        "entity_key": profile.entity_key,
        "entity_id": entity_id,
        "city": city,
        "timezone": zone,
        "as_of": as_of,
        "as_of_local": _local(as_of, zone),
        "model_version": document.get("model_version"),
        "target": document.get("target"),
        "forecast": document.get("forecast", []),
        "forecasts": [e | {"as_of_local": _local(e["as_of"], zone)} for e in _open_targets(document)],
        "history": document.get("history", []),
        "track_record": document.get("track_record", []),
        "accuracy": document.get("accuracy") or {"periods": 0, "mae": None, "coverage": None},
        "stale": None if status is None else bool(status.get("stale")),
        "stale_reason": (status or {}).get("reason"),
        "stale_since": (status or {}).get("since"),
        "expected": (status or {}).get("expected"),
    }


def _open_targets(document: dict) -> list[dict]:
    # Documents written before ``forecasts`` existed hold their one target at the top.
    if "forecasts" in document:
        return document["forecasts"]
    keys = ("target", "as_of", "model_version", "forecast")
    return [{key: document[key] for key in keys}] if document.get("target") else []


def _local(moment: str | None, zone: str) -> str | None:
    # as_of is an aware UTC time; managers read it on their store's wall clock.
    if not moment:
        return None
    parsed = datetime.fromisoformat(moment)
    return parsed.astimezone(ZoneInfo(zone)).isoformat() if parsed.tzinfo else parsed.isoformat()
