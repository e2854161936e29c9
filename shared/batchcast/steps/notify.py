"""notify: compute every entity's freshness and tell operations when it changes.

Runs on each ``predictions-ready`` and on schedule ticks with the ``notify`` action. Freshness
compares the target period the last scheduled run should have produced (from the profile's
windows and time zone) with what ``results/`` holds, using object listings only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.message import EmailMessage

from batchcast import dataset, layout, storage, training
from batchcast.config import Profile, load_profile
from batchcast.messages import InvalidMessage, Message, PredictionsReady, ScheduleTick
from batchcast.ports import Ports
from batchcast.steps import RunContext, StepResult

OPS_ADDRESS = "batchcast-ops@localhost"


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Refresh ``status/freshness.json`` for the message's dataset."""
    if isinstance(message, ScheduleTick) and "notify" not in message.actions:
        return StepResult(status="skipped")
    if not isinstance(message, PredictionsReady | ScheduleTick):
        raise InvalidMessage(f"notify does not handle {message.kind}")
    profile = load_profile(message.dataset)
    now = ports.clock.now()
    statuses = entity_statuses(ports, profile, now)
    changes: dict[str, list[str]] = {}

    def merge(current: dict | None) -> dict:
        document = current or {"datasets": {}}
        previous = document.get("datasets", {}).get(profile.name, {}).get("entities", {})
        merged = _carry_since(statuses, previous)
        changes.update(_transitions(merged, previous))
        section = {
            "checked_at": now.isoformat(),
            "stale": sum(s["stale"] for s in merged.values()),
            "entities": merged,
        }
        return document | {"datasets": document.get("datasets", {}) | {profile.name: section}}

    storage.update_json(ports.blobs, layout.FRESHNESS, merge)
    if changes.get("stale") or changes.get("recovered"):
        ports.mailer.send(_digest(profile, changes, now))
    stale = sum(s["stale"] for s in statuses.values())
    return StepResult(
        counts={
            "entities": len(statuses),
            "stale": stale,
            "turned_stale": len(changes.get("stale", [])),
            "recovered": len(changes.get("recovered", [])),
        },
        details=changes,
    )


def entity_statuses(ports: Ports, profile: Profile, now: datetime) -> dict[str, dict]:
    """Per entity: as_of, forecast_for, expected, stale and why (``since`` is filled by the caller)."""
    results = {}
    for info in ports.blobs.list(layout.results_prefix(profile.name)):
        _, entity = layout.parse_results(info.name)
        results[entity] = info.metadata
    statuses = {}
    for city in profile.cities:
        files = dataset.entity_files(ports.blobs, profile, city)
        expected_start, _ = profile.expected_window(now, city)
        has_model = training.latest(ports.blobs, profile, city) is not None
        for entity, entity_files in files.items():
            meta = results.get(entity, {})
            forecast_for = meta.get("target_start")
            stale = forecast_for is None or forecast_for < expected_start.isoformat()
            statuses[entity] = {
                "city": city,
                "as_of": meta.get("as_of"),
                "forecast_for": forecast_for,
                "expected": expected_start.isoformat(),
                "stale": stale,
                "reason": _reason(profile, expected_start, entity_files.last, forecast_for, has_model)
                if stale
                else None,
            }
    return statuses


def _reason(
    profile: Profile, expected: datetime, last_data: str, forecast_for: str | None, has_model: bool
) -> str:
    data_cutoff = expected - max(profile.period * min(profile.features.lags), timedelta(days=1))
    if last_data and datetime.fromisoformat(last_data) < data_cutoff:
        return f"no data uploaded since {last_data[:10]}"
    if not has_model:
        return "no model trained yet"
    if forecast_for is None:
        return "no forecast produced yet"
    return f"latest forecast is for {forecast_for}, expected {expected.isoformat()}"


def _carry_since(statuses: dict[str, dict], previous: dict[str, dict]) -> dict[str, dict]:
    # ``since`` marks when the current state began, so it survives re-checks of the same state.
    merged = {}
    for entity, status in statuses.items():
        before = previous.get(entity)
        same_state = before is not None and before.get("stale") == status["stale"]
        # A stale entity has been stale since its forecast fell due; a fresh one since its as-of.
        since = (
            before.get("since") if same_state else status["expected"] if status["stale"] else status["as_of"]
        )
        merged[entity] = status | {"since": since}
    return merged


def _transitions(current: dict[str, dict], previous: dict[str, dict]) -> dict[str, list[str]]:
    turned = [e for e, s in current.items() if s["stale"] and not previous.get(e, {}).get("stale")]
    recovered = [e for e, s in current.items() if not s["stale"] and previous.get(e, {}).get("stale")]
    return {"stale": sorted(turned), "recovered": sorted(recovered)}


def _digest(profile: Profile, changes: dict[str, list[str]], now: datetime) -> EmailMessage:
    email = EmailMessage()
    email["From"] = OPS_ADDRESS
    email["To"] = OPS_ADDRESS
    email["Subject"] = (
        f"[batchcast] {profile.name}: {len(changes['stale'])} stale, {len(changes['recovered'])} recovered"
    )
    lines = [f"Freshness check at {now.isoformat()} for {profile.name}."]
    lines += [f"stale: {entity}" for entity in changes["stale"]]
    lines += [f"recovered: {entity}" for entity in changes["recovered"]]
    email.set_content("\n".join(lines) + "\n")
    return email
