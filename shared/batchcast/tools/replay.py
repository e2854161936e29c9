"""Re-running past work: ``replay`` re-delivers retained messages, ``rerun`` republishes a day.

* Replay seeks one subscription back to a time (Pub/Sub ``seek`` on GCP; the message log on the
  embedded backend) so every message published to it since then is delivered again, with its
  original idempotency key: work that already succeeded is acknowledged without being redone, and
  what failed or was lost runs now.
* Rerun publishes the schedule ticks of one local day again, tagged with a fresh rerun id. The tag
  gives every message of the rerun a new idempotency key, so the day's work really runs again;
  outputs are named and computed from logical times, so they come out byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.messages import InvalidMessage, Message, ScheduleTick, decode
from batchcast.entrypoints.wiring import route_for_subscription
from batchcast.ops import reruns
from batchcast.ports import BlobStore


@dataclass(frozen=True)
class Redelivery:
    """One logged message that a replay hands to the subscription again."""

    entry: dict  # the message-log entry: message_id, topic, publish_time, attributes, data
    message: Message | None  # None: the logged body breaks the contract (it will be rejected again)

    @property
    def published(self) -> datetime:
        """When the message was first published."""
        return datetime.fromisoformat(self.entry["publish_time"])

    def done(self, blobs: BlobStore, function: str) -> bool:
        """Has ``function`` already finished this message? (Then it is acknowledged without work.)"""
        if self.message is None:
            return False
        return blobs.stat(layout.processed_marker(function, self.message.idempotency_key)) is not None

    def describe(self) -> str:
        """A one-line account of the work this redelivery re-runs."""
        if self.message is None:
            return f"{self.entry['message_id']}: a message that breaks the contract"
        city = f" {self.message.city}" if self.message.city else ""
        return (
            f"{self.published:%Y-%m-%d %H:%M:%S} {self.message.kind} "
            f"{self.message.dataset}{city} for {self.message.logical_time.isoformat()}"
        )


def plan_replay(log: list[dict], subscription: str, since: datetime) -> list[Redelivery]:
    """The logged messages a seek of ``subscription`` to ``since`` delivers again, oldest first."""
    topic = route_for_subscription(subscription).topic
    chosen = []
    for entry in log:
        if entry["topic"] != topic or datetime.fromisoformat(entry["publish_time"]) < since:
            continue
        try:
            message: Message | None = decode(entry["data"], entry["attributes"])
        except InvalidMessage:
            message = None
        chosen.append(Redelivery(entry, message))
    return chosen


def rerun_ticks(profile: Profile, day: date, cities: list[str], rerun_id: str) -> list[ScheduleTick]:
    """The schedule ticks of local ``day``, tagged ``rerun_id``, optionally for some cities only
    (:func:`batchcast.ops.reruns.plan` of one day)."""
    return list(reruns.plan(profile, day, day, cities, rerun_id).ticks)
