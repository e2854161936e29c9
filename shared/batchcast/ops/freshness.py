"""Freshness per entity: is the forecast managers read the one the last scheduled run owed them?

The expected target period comes from the profile's windows and time zone; what ``results/`` holds
comes from object metadata (results carry ``target_start``/``as_of``), read by listing ``results/``
for a whole-dataset check or by a stat per entity for a few; which entities exist and their last
period come from the cities' manifests; why an entity is stale comes from the model registry and
``status/outcomes/`` (which runs failed). So a check costs a listing of ``results/`` and a few small
reads per city, however many days of data the bucket holds.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.data import catalog, storage
from batchcast.ops import outcomes, training
from batchcast.ports import BlobStore

Status = dict[str, Any]  # city, as_of, forecast_for, expected, stale, reason, since
Scope = dict[str, list[str]]  # city -> entities to check; None checks every entity


def entity_statuses(
    blobs: BlobStore, profile: Profile, now: datetime, scope: Scope | None = None
) -> dict[str, Status]:
    """Per entity (of ``scope``, or all): city, as_of, forecast_for, expected, stale and why.

    ``since`` comes from :func:`merge`.
    """
    cities = list(profile.cities) if scope is None else [c for c in scope if c in profile.cities]
    statuses = {}
    # A whole-dataset check lists results/ once: its listing covers every city.
    everyone = _results(blobs, profile, None) if scope is None else None
    for city in cities:
        data = catalog.read(blobs, profile, city, entities=None if scope is None else scope[city])
        if not data:
            continue
        results = everyone if everyone is not None else _results(blobs, profile, list(data))
        expected_start, _ = profile.expected_window(now, city)
        causes = _city_causes(blobs, profile, city, expected_start)
        for entity, entity_data in data.items():
            meta = results.get(entity, {})
            forecast_for = meta.get("target_start")
            stale = forecast_for is None or datetime.fromisoformat(forecast_for) < expected_start
            statuses[entity] = {
                "city": city,
                "as_of": meta.get("as_of"),
                "forecast_for": forecast_for,
                "expected": expected_start.isoformat(),
                "stale": stale,
                "reason": _reason(profile, expected_start, entity_data.last, forecast_for, causes)
                if stale
                else None,
            }
    return statuses


def _results(blobs: BlobStore, profile: Profile, entities: list[str] | None) -> dict[str, dict[str, str]]:
    """Entity -> its result's metadata: one listing for the dataset, or a stat per entity."""
    if entities is None:
        return {
            layout.parse_results(i.name)[1]: i.metadata
            for i in blobs.list(layout.results_prefix(profile.name))
        }
    names = [layout.results_object(profile.name, profile.entity_key, e) for e in entities]
    infos = storage.concurrently(blobs.stat, names)
    return {e: info.metadata for e, info in zip(entities, infos, strict=True) if info is not None}


def _city_causes(blobs: BlobStore, profile: Profile, city: str, expected: datetime) -> dict[str, str | None]:
    """What went wrong for the city's current target, from its outcomes and its model registry."""
    document = outcomes.read(blobs, profile.name, city)
    predict = document["functions"].get("predict", {}).get("last_failure")
    # A predict failure counts when it was for the target now due (or a later one): an old
    # failure that a later run made good says nothing about today.
    predict_failed = predict and (predict.get("target_start") or "") >= expected.isoformat()
    # Trainings run inline in train_trigger or, when long, in a ``train`` job.
    train = outcomes.latest_failure(document, "train") or outcomes.latest_failure(document, "train_trigger")
    has_model = training.latest(blobs, profile, city) is not None
    return {
        "predict": f"predict failed for city {city}: {predict['error']}" if predict_failed else None,
        "train": _training_reason(city, train["error"], has_model) if train else None,
        "model": None if has_model else "no model trained yet",
    }


def _training_reason(city: str, error: str, has_model: bool) -> str:
    cause = error.removeprefix("model training failed: ")
    if not has_model or error.startswith("model training failed"):
        return f"model training failed for city {city}: {cause}"
    return f"train_trigger failed for city {city}: {cause}"


def data_cutoff(profile: Profile, expected: datetime) -> datetime:
    """The last period an entity's data must reach for the forecast due at ``expected``: data that
    ends before it cannot feed the model's shortest lag, so the entity counts as not uploading."""
    return expected - max(profile.period * min(profile.features.lags), timedelta(days=1))


def _reason(
    profile: Profile,
    expected: datetime,
    last_data: str,
    forecast_for: str | None,
    causes: dict[str, str | None],
) -> str:
    if last_data and datetime.fromisoformat(last_data) < data_cutoff(profile, expected):
        return f"no data uploaded since {last_data[:10]}"
    for cause in ("predict", "train", "model"):
        if causes[cause]:
            return causes[cause]  # type: ignore[return-value]
    if forecast_for is None:
        return "no forecast produced yet"
    return f"latest forecast is for {forecast_for}, expected {expected.isoformat()}"


def merge(statuses: dict[str, Status], previous: dict[str, Status]) -> dict[str, Status]:
    """Give each status its ``since``: when its current state (stale or fresh) began.

    ``since`` survives re-checks of the same state. A stale entity has been stale since its forecast
    fell due; a fresh one since its as-of.
    """
    merged = {}
    for entity, status in statuses.items():
        before = previous.get(entity)
        same_state = before is not None and before.get("stale") == status["stale"]
        since = (
            before.get("since") if same_state else status["expected"] if status["stale"] else status["as_of"]
        )
        merged[entity] = status | {"since": since}
    return merged


def transitions(current: dict[str, Status], previous: dict[str, Status]) -> dict[str, list[str]]:
    """Entities that turned stale and entities that recovered since the previous check."""
    turned = [e for e, s in current.items() if s["stale"] and not previous.get(e, {}).get("stale")]
    recovered = [e for e, s in current.items() if not s["stale"] and previous.get(e, {}).get("stale")]
    return {"stale": sorted(turned), "recovered": sorted(recovered)}


def changed(current: dict[str, Status], previous: dict[str, Status]) -> bool:
    """Whether a reader of ``freshness.json`` would see ``current`` differently from ``previous``:
    an entity is new, turned stale or fresh, or got a newer forecast (``as_of``, ``forecast_for``),
    another expected period or another reason. Comparing the stale flag alone would leave
    ``as_of``/``forecast_for`` one forecast behind after each fresh store's new forecast."""
    return any(previous.get(entity) != status for entity, status in current.items())
