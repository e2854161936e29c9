"""Reruns and backfills: republish the scheduled work (train, predict, notify) of a range of local
days, for all of a dataset's cities or a few, tagged with one rerun id.

The tag gives every message of the rerun a new idempotency key, so the work really runs again;
outputs are named and computed from logical times and the data read, so a rerun whose inputs did
not change writes no second version of a day's predictions (see
:func:`batchcast.steps.predict._content_key`). A dry run is :func:`plan` without :func:`publish`.

The CLI (``batchcast rerun``) and the operators' console both call this module.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from batchcast.core.config import Profile
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.ports import Bus

MAX_DAYS = 366  # a backfill longer than a year is almost certainly a typo in a date


class RerunError(ValueError):
    """A rerun that cannot be planned (dates in the wrong order, an unknown city); says why."""


@dataclass(frozen=True)
class Plan:
    """The ticks a rerun republishes, in time order, and the tag they carry."""

    dataset: str
    first: date
    last: date
    cities: tuple[str, ...]
    rerun_id: str
    ticks: tuple[ScheduleTick, ...]

    def lines(self) -> list[str]:
        """One line per tick: its local time and actions (what a dry run prints)."""
        where = f" ({', '.join(self.cities)})" if self.cities else ""
        return [f"{t.logical_time.isoformat()} {','.join(t.actions)}{where}" for t in self.ticks]


def new_rerun_id(now: datetime) -> str:
    """A unique tag for one rerun, readable in message logs and run records: the time it was asked
    for, plus a random part, since two reruns asked under one (pinned or coarse) clock must still
    both run."""
    return f"rerun-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def plan(profile: Profile, first: date, last: date, cities: list[str], rerun_id: str) -> Plan:
    """The schedule ticks of local days ``first`` to ``last`` (inclusive), tagged ``rerun_id``, for
    ``cities`` only when given; raise :class:`RerunError` naming what is wrong."""
    if last < first:
        raise RerunError(f"--to {last} is before --from {first}")
    days = (last - first).days + 1
    if days > MAX_DAYS:
        raise RerunError(f"{days} days from {first} to {last}: at most {MAX_DAYS} at once")
    unknown = sorted(set(cities) - set(profile.cities))
    if unknown:
        known = ", ".join(profile.cities)
        raise RerunError(f"{profile.name} has no city {', '.join(unknown)}; known: {known}")
    ticks = [
        ScheduleTick(
            dataset=profile.name, actions=actions, cities=sorted(cities), logical_time=moment, rerun=rerun_id
        )
        for offset in range(days)
        for moment, actions in profile.scheduled_ticks(first + timedelta(days=offset))
    ]
    return Plan(profile.name, first, last, tuple(sorted(cities)), rerun_id, tuple(ticks))


def publish(bus: Bus, ticks: tuple[ScheduleTick, ...] | list[ScheduleTick]) -> list[str]:
    """Publish ``ticks`` to the schedule topic in order; return their message ids.

    On Pub/Sub they then run concurrently (a day's training and predictions are ordered by the
    schedule's own tick times only on the embedded bus, which the CLI drains tick by tick).
    """
    return [bus.publish(Topic.SCHEDULE, tick) for tick in ticks]
