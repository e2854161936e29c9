"""Turn what arrives at an entry point (a CloudEvent) into a pipeline message.

Three shapes arrive in production and on the emulator stack:

* Eventarc storage events, ``google.cloud.storage.object.v1.finalized``, whose data is the object;
* GCS Pub/Sub notifications wrapped in ``google.cloud.pubsub.topic.v1.messagePublished``
  (attributes ``eventType``, ``bucketId``, ``objectId``, ``objectGeneration``);
* pipeline messages wrapped in ``messagePublished``.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from batchcast.core.messages import InvalidMessage, Message, ObjectFinalized, decode, encode

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


def message_from_event(event_type: str, data: Any, event_time: str | None = None) -> Message:
    """Decode one CloudEvent's type and data; raise :class:`InvalidMessage` for anything else."""
    data = _as_dict(data)
    if event_type == STORAGE_FINALIZED:
        return _object_finalized(data, event_time)
    if event_type == PUBSUB_PUBLISHED:
        return _published(data)
    raise InvalidMessage(f"unsupported event type {event_type!r}")


def published_event_data(message: Message, publish_time: datetime) -> dict[str, Any]:
    """The data of the ``messagePublished`` CloudEvent a push subscription sends for ``message``
    (what :func:`message_from_event` reads back): tests and benchmarks build events with it."""
    body, attributes = encode(message)
    return {
        "message": {
            "data": base64.b64encode(body).decode(),
            "attributes": attributes,
            "messageId": "m1",
            "publishTime": publish_time.isoformat(),
        },
        "subscription": "projects/p/subscriptions/s",
    }


def published_at(event_type: str, data: Any, event_time: str | None = None) -> datetime | None:
    """When the event was sent: the Pub/Sub publish time, else the CloudEvent's ``time``; None if unknown.

    This, not the message's logical time, says how old an event is: a rerun of last month's data
    is new work, a message redelivered for two days is not.
    """
    stamp = event_time
    if event_type == PUBSUB_PUBLISHED:
        try:
            envelope = _as_dict(data).get("message")
        except InvalidMessage:
            envelope = None
        if isinstance(envelope, dict) and envelope.get("publishTime"):
            stamp = envelope["publishTime"]
    try:
        return _parse_time(stamp) if stamp else None
    except ValueError:
        return None


def _as_dict(data: Any) -> dict[str, Any]:
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as error:
            raise InvalidMessage(f"event data is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise InvalidMessage("event data is not a JSON object")
    return data


def _published(data: dict[str, Any]) -> Message:
    envelope = data.get("message")
    if not isinstance(envelope, dict):
        raise InvalidMessage("messagePublished event without a message")
    attributes = envelope.get("attributes") or {}
    try:
        body = base64.b64decode(envelope.get("data") or "", validate=True)
    except ValueError as error:
        raise InvalidMessage(f"message data is not base64: {error}") from error
    if attributes.get("eventType") == "OBJECT_FINALIZE":
        try:
            resource = json.loads(body)
        except ValueError as error:
            raise InvalidMessage(f"GCS notification payload is not JSON: {error}") from error
        resource.setdefault("bucket", attributes.get("bucketId"))
        resource.setdefault("name", attributes.get("objectId"))
        resource.setdefault("generation", attributes.get("objectGeneration"))
        return _object_finalized(resource, envelope.get("publishTime"))
    if "eventType" in attributes:
        raise InvalidMessage(f"GCS notification {attributes['eventType']} is not handled")
    if attributes.get("kind") == "schedule":
        body = _stamp_tick(body, envelope.get("publishTime"))
    return decode(body, {k: v for k, v in attributes.items() if k in ("kind", "dataset", "city")})


def _stamp_tick(body: bytes, publish_time: str | None) -> bytes:
    """Give a Cloud Scheduler tick its logical time: the publish time, to the minute.

    A Scheduler job's body is fixed, so it cannot say when it fired; its publish time can (it is
    the same on every redelivery, so the tick's idempotency key is too). Ticks that carry a
    ``logical_time`` (``batchcast tick``, replays) keep it.
    """
    try:
        tick = json.loads(body)
    except ValueError:
        return body  # decode() reports it
    if not isinstance(tick, dict) or "logical_time" in tick or not publish_time:
        return body
    tick["logical_time"] = _parse_time(publish_time).replace(second=0, microsecond=0).isoformat()
    return json.dumps(tick).encode()


def _object_finalized(resource: dict[str, Any], event_time: str | None) -> ObjectFinalized:
    try:
        stamp = resource.get("updated") or resource.get("timeCreated") or event_time
        return ObjectFinalized(
            bucket=str(resource["bucket"]),
            name=str(resource["name"]),
            generation=int(resource["generation"]),
            size=int(resource.get("size") or 0),
            metadata={str(k): str(v) for k, v in (resource.get("metadata") or {}).items()},
            logical_time=_parse_time(stamp),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidMessage(f"storage event lacks a valid bucket, name or generation: {error}") from error


def _parse_time(stamp: str | None) -> datetime:
    if not stamp:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
