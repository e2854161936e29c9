"""Dead letters, for operators: list them with their error, attempts, attributes and age; redrive
(republish to the original topic) or discard them, one, several or all.

Works through the bus port on both backends: the embedded bus keeps its dead letters in
``.batchcast/bus/<topic>-dlq.jsonl``; on GCP they wait in the ``<topic>-dlq--hold`` pull
subscriptions (Terraform and the emulator stack create them). Pub/Sub does not keep the error of a
dead-lettered message, so when the backend does not say it, the error is taken from the last
failure of the consuming function for the letter's dataset and city (``status/outcomes/``).

A redriven message reaches every subscription of its topic again; those that had finished it
acknowledge it without work (their idempotency markers), so only the failed work runs.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from batchcast.core.messages import Topic
from batchcast.ops import outcomes
from batchcast.ports import BlobStore, Bus

Letter = dict[str, Any]
# Pub/Sub's attributes on a dead-lettered message.
_SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
_DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"


class UnknownTopic(ValueError):
    """A topic name that is not one of :class:`Topic`."""


def topics(topic: str | None = None) -> list[Topic]:
    """``[Topic(topic)]``, or every topic when None; raise :class:`UnknownTopic` naming the known ones."""
    if topic is None:
        return list(Topic)
    try:
        return [Topic(topic)]
    except ValueError:
        known = ", ".join(t.value for t in Topic)
        raise UnknownTopic(f"unknown topic {topic!r}; known: {known}") from None


def list_letters(bus: Bus, blobs: BlobStore, now: datetime, topic: str | None = None) -> list[Letter]:
    """Every dead letter (of ``topic``, or of all topics), oldest first.

    Each: ``id``, ``topic``, ``subscription``, ``kind``, ``dataset``, ``city``, ``attributes``,
    ``error`` (never empty: "unknown" only when neither the backend nor a recorded failure says),
    ``attempts`` (None when unknown), ``dead_lettered_at``, ``age_seconds`` and ``data``.
    """
    letters = [
        _normalise(raw, chosen.value, now)
        for chosen in topics(topic)
        for raw in bus.dead_letters(chosen.value)
    ]
    errors: dict[tuple[str, str | None, str], str | None] = {}
    for letter in letters:
        if not letter["error"]:
            key = (letter["dataset"], letter["city"], letter["function"] or "")
            if key not in errors:
                errors[key] = _recorded_error(blobs, *key)
            letter["error"] = errors[key] or "unknown (the backend keeps no error; see the run records)"
    return sorted(letters, key=lambda letter: letter["dead_lettered_at"] or "")


def redrive(bus: Bus, topic: str, ids: Collection[str] | None = None) -> list[str]:
    """Republish the dead letters ``ids`` (None: all) of ``topic`` to it; return the ids redriven."""
    [chosen] = topics(topic)
    return bus.redrive(chosen.value, ids)


def discard(bus: Bus, topic: str, ids: Collection[str] | None = None) -> list[str]:
    """Drop the dead letters ``ids`` (None: all) of ``topic``; return the ids dropped."""
    [chosen] = topics(topic)
    return bus.discard(chosen.value, ids)


def _normalise(raw: dict, topic: str, now: datetime) -> Letter:
    """One backend's dead-letter entry in the shape :func:`list_letters` documents."""
    attributes = dict(raw.get("attributes") or {})
    subscription = raw.get("subscription") or attributes.get(_SOURCE_SUBSCRIPTION, "").rsplit("/", 1)[-1]
    attempts = raw.get("attempts") or attributes.get(_DELIVERY_COUNT)
    at = raw.get("dead_lettered_at") or raw.get("publish_time")
    age = (now - datetime.fromisoformat(at)).total_seconds() if at else None
    return {
        "id": raw["id"],
        "topic": topic,
        "subscription": subscription or None,
        "function": _function_of(subscription),
        "kind": attributes.get("kind"),
        "dataset": attributes.get("dataset", "unknown"),
        "city": attributes.get("city"),
        "attributes": {k: v for k, v in attributes.items() if not k.startswith("CloudPubSub")},
        "error": raw.get("error"),
        "attempts": int(attempts) if attempts else None,
        "dead_lettered_at": at,
        "age_seconds": round(age) if age is not None else None,
        "data": raw.get("data"),
    }


def _function_of(subscription: str | None) -> str | None:
    # Subscription ids are <function with dashes>--<topic> (batchcast.entrypoints.wiring.Route).
    if not subscription or "--" not in subscription:
        return None
    return subscription.split("--", 1)[0].replace("-", "_")


def _recorded_error(blobs: BlobStore, dataset: str, city: str | None, function: str) -> str | None:
    if not function:
        return None
    document = outcomes.read(blobs, dataset, city)
    failure = document.get("functions", {}).get(function, {}).get("last_failure")
    return f"{failure['error']} (last failure of {function}, {failure['at'][:16]})" if failure else None
