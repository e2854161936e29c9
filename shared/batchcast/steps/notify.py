"""notify: compute entities' freshness, then tell the managers and operations, once.

Runs on schedule ticks with the ``notify`` action (every entity of the dataset: the schedule checks
freshness half an hour after predicting, when every city's forecasts are due) and on each
``predictions-ready`` (just the entities forecast, so a store's upload or a scheduled shard clears
their stale flags at once without a whole-dataset check per upload or shard):

1. :mod:`batchcast.ops.freshness` compares the target period the last scheduled run owed each entity with
   what ``results/`` holds, names the cause of staleness, and the result is merged into
   ``status/freshness.json`` (``since`` survives re-checks of the same state). A check of a few
   entities writes only when one of them turned stale or fresh or is new there.
   A schedule tick also judges each city's live accuracy against its latest backtest
   (:mod:`batchcast.ops.drift`) and keeps the verdicts there, under ``live_accuracy``.
2. :mod:`batchcast.ops.alerts` opens and closes email episodes in ``status/alerts/dataset=<d>.json``
   (a schedule tick also adds the run's ops digest: stale stores and drifting cities) and sends
   whatever is pending. An SMTP outage leaves the emails pending for the next run; the run is
   then ``partial``.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from batchcast.core import layout
from batchcast.core.config import Profile, load_profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import InvalidMessage, Message, PredictionsReady, ScheduleTick
from batchcast.data import storage
from batchcast.ops import alerts, drift, freshness
from batchcast.ports import Ports
from batchcast.steps import RunContext, StepResult


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Refresh ``status/freshness.json`` for the message's entities and send the alerts it calls for."""
    if isinstance(message, ScheduleTick) and "notify" not in message.actions:
        return StepResult(status="skipped")
    if not isinstance(message, PredictionsReady | ScheduleTick):
        raise InvalidMessage(f"notify does not handle {message.kind}")
    profile = load_profile(message.dataset)
    now = ports.clock.now()
    scope = {message.city_: message.entity_ids} if isinstance(message, PredictionsReady) else None
    statuses = freshness.entity_statuses(ports.blobs, profile, now, scope)
    accuracy = _live_accuracy(ports, profile, message) if scope is None else None
    changes: dict[str, list[str]] = {}
    merged: dict[str, freshness.Status] = {}

    def merge(current: dict | None) -> dict | None:
        document = current or {"datasets": {}}
        previous = document.get("datasets", {}).get(profile.name, {}).get("entities", {})
        updated = freshness.merge(statuses, previous)
        changes.clear()
        changes.update(freshness.transitions(updated, previous))
        merged.clear()
        merged.update(updated if scope is None else previous | updated)
        if scope is not None and not freshness.changed(updated, previous):
            return None  # nothing a reader of freshness.json would see differently
        section = document.get("datasets", {}).get(profile.name, {}) | {
            "checked_at": now.isoformat(),
            "stale": sum(s["stale"] for s in merged.values()),
            "entities": merged,
        }
        if accuracy is not None:
            section["live_accuracy"] = accuracy
        return document | {"datasets": document.get("datasets", {}) | {profile.name: section}}

    storage.update_json(ports.blobs, layout.FRESHNESS, merge)
    stale_by_city = Counter(s["city"] for s in merged.values() if s["stale"])
    stale = sum(stale_by_city.values())
    # A line log-based metrics read: stale stores per dataset (and per city, as a label-like field).
    run.log.info(
        f"{profile.name}: {stale} of {len(merged)} entities stale",
        fields={
            "metric": "batchcast_freshness",
            "dataset": profile.name,
            "entities": len(merged),
            "stale": stale,
            "stale_by_city": dict(sorted(stale_by_city.items())),
        },
    )
    result = StepResult(
        counts={
            "entities": len(merged),
            "checked": len(statuses),
            "stale": stale,
            "turned_stale": len(changes.get("stale", [])),
            "recovered": len(changes.get("recovered", [])),
        },
        details=dict(changes),
    )
    drifting = _report_accuracy(accuracy or {}, result)
    if accuracy:
        # A line log-based metrics read: live MASE per city, and which cities drift.
        run.log.info(
            f"{profile.name}: live accuracy drifting in {len(drifting)} of {len(accuracy)} cities",
            fields={
                "metric": "batchcast_live_accuracy",
                "dataset": profile.name,
                "live_mase": {city: v["live_mase"] for city, v in accuracy.items()},
                "drifting": [line["city"] for line in drifting],
            },
        )
    if scope is None or any(changes.values()):
        _alert(ports, message, run, profile, merged, result, drifting)
    return result


def _live_accuracy(ports: Ports, profile: Profile, message: ScheduleTick) -> dict[str, dict]:
    """Each city's drift verdict (JSON) over the live window ending with the tick's local date."""
    through = message.logical_time.astimezone(profile.zone()).date()
    return {city: verdict.to_json() for city, verdict in drift.check(ports.blobs, profile, through).items()}


def _report_accuracy(verdicts: dict[str, dict], result: StepResult) -> list[dict]:
    """Put the verdicts in the run's counts, details and notes (status and the console's run page
    show them); return the digest lines of the drifting cities."""
    if not verdicts:
        return []
    result.details["live_accuracy"] = verdicts
    result.counts["drifting"] = sum(v["drifting"] for v in verdicts.values())
    result.notes += [
        f"live accuracy of {city} not judged: {v['note']}" for city, v in verdicts.items() if v["note"]
    ]
    return [{"city": city} | v for city, v in verdicts.items() if v["drifting"]]


def _alert(
    ports: Ports,
    message: PredictionsReady | ScheduleTick,
    run: RunContext,
    profile: Profile,
    statuses: dict[str, freshness.Status],
    result: StepResult,
    drifting: list[dict],
) -> None:
    settings = run.settings
    grace = timedelta(minutes=settings.alert_grace_minutes)
    # Only the schedule's check sends the ops digest, one per expected target period: forecasts
    # arriving city by city would otherwise mail operations a half-finished picture each time.
    digest_key = (
        profile.expected_window(message.logical_time)[0].isoformat()
        if isinstance(message, ScheduleTick)
        else None
    )
    now = ports.clock.now()
    storage.update_json(
        ports.blobs,
        layout.alerts_object(profile.name),
        lambda current: alerts.plan(current, profile, statuses, now, grace, digest_key, drifting),
    )
    mailing = alerts.Mailing(sender=settings.smtp_sender, public_url=settings.public_url)
    try:
        delivery = alerts.deliver(ports, profile, mailing, run.run_id)
    except ConfigError as error:  # a broken managers.json: freshness is written, emails wait
        result.fail("managers", str(error))
        return
    result.counts["emails_sent"] = len(delivery.sent)
    result.details["emails_sent"] = delivery.sent
    if delivery.skipped:
        result.notes.append(f"no recipients for: {', '.join(delivery.skipped)}")
    if delivery.unconfirmed:
        note = (
            f"not sent again, delivery unconfirmed: {', '.join(delivery.unconfirmed)} (a run died after "
            "handing them to the SMTP server and before recording its answer)"
        )
        run.log.warning(note)
        result.notes.append(note)
    if delivery.error:
        run.log.warning(f"email delivery failed, left pending for the next run: {delivery.error}")
        result.fail("smtp", delivery.error)
