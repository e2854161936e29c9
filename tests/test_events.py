"""What arrives at an entry point and is acknowledged without work: other prefixes, old events,
duplicates (same object generation, same idempotency key). "Done" is recorded only after the step
and its publishes succeeded."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from batchcast.core import layout
from batchcast.core.events import PUBSUB_PUBLISHED, STORAGE_FINALIZED
from batchcast.core.messages import ScheduleTick, encode
from batchcast.data import uploads
from batchcast.ports import TransientError

CSV = b"store_id,city,date,sales\n1,berlin,2026-02-27,100\n1,berlin,2026-02-28,120\n"


def _upload(deployment) -> str:
    blobs = deployment.ports.blobs
    return uploads.store_upload(blobs, CSV, ext="csv", now=deployment.ports.clock.now(), dataset="retail")


def _storage_event(deployment, name: str) -> dict:
    info = deployment.ports.blobs.stat(name)
    return {
        "bucket": "b",
        "name": name,
        "generation": str(info.generation),
        "updated": info.updated.isoformat(),
        "metadata": info.metadata,
    }


def _gcs_notification(resource: dict, published) -> dict:
    return {
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": {
                "eventType": "OBJECT_FINALIZE",
                "bucketId": resource["bucket"],
                "objectId": resource["name"],
                "objectGeneration": resource["generation"],
            },
            "publishTime": published.isoformat(),
        }
    }


def _published(message, published) -> dict:
    data, attributes = encode(message)
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": attributes,
            "publishTime": published.isoformat(),
        }
    }


def _run_records(deployment) -> list[dict]:
    blobs = deployment.ports.blobs
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]


def test_an_upload_runs_once_whichever_shape_its_events_arrive_in(deployment, clock):
    name = _upload(deployment)
    resource = _storage_event(deployment, name)
    first = deployment.handle_event("partition", STORAGE_FINALIZED, resource, clock.now().isoformat())
    assert first.status == "succeeded" and first.messages
    # The same generation again, as a GCS notification through Pub/Sub: acknowledged, no work.
    again = deployment.handle_event("partition", PUBSUB_PUBLISHED, _gcs_notification(resource, clock.now()))
    assert again.status == "skipped" and "already processed" in again.notes[0]
    assert [r["function"] for r in _run_records(deployment)] == ["partition"]
    assert deployment.ports.blobs.stat(layout.processed_marker("partition", first_key(resource)))


def first_key(resource: dict) -> str:
    from batchcast.core.events import message_from_event

    return message_from_event(STORAGE_FINALIZED, resource).idempotency_key


def test_a_new_generation_of_the_same_name_is_new_work(deployment, clock):
    name = _upload(deployment)
    deployment.handle_event("partition", STORAGE_FINALIZED, _storage_event(deployment, name))
    deployment.ports.blobs.write(name, CSV)  # same name, new generation
    second = deployment.handle_event("partition", STORAGE_FINALIZED, _storage_event(deployment, name))
    assert second.status == "succeeded"
    assert len(_run_records(deployment)) == 2


def test_objects_outside_raw_are_ignored(deployment, clock):
    deployment.ports.blobs.write("results/dataset=retail/store_id=1.json", b"{}")
    resource = _storage_event(deployment, "results/dataset=retail/store_id=1.json")
    assert deployment.handle_event("partition", STORAGE_FINALIZED, resource) is None
    notification = _gcs_notification(resource, clock.now())
    assert deployment.handle_event("partition", PUBSUB_PUBLISHED, notification) is None
    assert _run_records(deployment) == []


@pytest.mark.parametrize(("age", "runs"), [(timedelta(days=2), 0), (timedelta(hours=1), 1)])
def test_events_older_than_the_limit_are_acked_without_work(deployment, clock, age, runs):
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=clock.now())
    sent = clock.now() - age
    result = deployment.handle_event("notify", PUBSUB_PUBLISHED, _published(tick, sent))
    assert (result is None) is (runs == 0)
    assert len(_run_records(deployment)) == runs
    # An Eventarc storage event's age comes from the CloudEvent's time.
    name = _upload(deployment)
    stored = deployment.handle_event(
        "partition", STORAGE_FINALIZED, _storage_event(deployment, name), sent.isoformat()
    )
    assert (stored is None) is (runs == 0)


def test_the_age_limit_comes_from_the_settings(deployment, clock):
    deployment.settings = deployment.settings.model_copy(update={"max_event_age_seconds": 60})
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=clock.now())
    old = _published(tick, clock.now() - timedelta(minutes=2))
    assert deployment.handle_event("notify", PUBSUB_PUBLISHED, old) is None


class _FailingOnce:
    """The real bus, except that its first publish fails as Pub/Sub does when it is unavailable."""

    def __init__(self, bus) -> None:
        self.bus, self.failed = bus, False

    def publish(self, topic, message):
        if not self.failed:
            self.failed = True
            raise TransientError("publish: 503 service unavailable")
        return self.bus.publish(topic, message)


def test_done_is_recorded_only_after_the_publishes_succeeded(deployment, clock):
    name = _upload(deployment)
    resource = _storage_event(deployment, name)
    marker = layout.processed_marker("partition", first_key(resource))
    deployment.ports.bus = _FailingOnce(deployment.ports.bus)
    with pytest.raises(TransientError):
        deployment.handle_event("partition", STORAGE_FINALIZED, resource)
    assert deployment.ports.blobs.stat(marker) is None  # redelivery must do the work again
    retried = deployment.handle_event("partition", STORAGE_FINALIZED, resource)
    assert retried.status == "succeeded" and deployment.ports.blobs.stat(marker) is not None
    assert [r["status"] for r in _run_records(deployment)].count("failed") == 1
    assert deployment.handle_event("partition", STORAGE_FINALIZED, resource).status == "skipped"


class _MarkerAnswerLost:
    """The real store, except that writing ``marker`` fails after every retry: the write reached
    the bucket and only its answers were lost (``reached``), or it never got there."""

    def __init__(self, blobs, marker: str, reached: bool) -> None:
        self.blobs, self.marker, self.reached = blobs, marker, reached

    def write(self, name, data, **kwargs):
        if name != self.marker:
            return self.blobs.write(name, data, **kwargs)
        if self.reached:
            self.blobs.write(name, data, **kwargs)
        raise TransientError(f"gs://b/{name}: gave up after 5 attempts: 503")

    def __getattr__(self, name):
        return getattr(self.blobs, name)


@pytest.mark.parametrize("reached", [True, False])
def test_a_marker_that_cannot_be_written_leaves_the_done_run_succeeded(deployment, clock, reached):
    name = _upload(deployment)
    resource = _storage_event(deployment, name)
    marker = layout.processed_marker("partition", first_key(resource))
    blobs = deployment.ports.blobs
    deployment.ports.blobs = _MarkerAnswerLost(blobs, marker, reached)
    result = deployment.handle_event("partition", STORAGE_FINALIZED, resource)
    assert result.status == "succeeded" and [m.kind for m in result.messages] == ["partitions-ready"]
    [record] = _run_records(deployment)
    assert record["status"] == "succeeded"
    assert any(marker in note and "gave up after 5 attempts" in note for note in record["notes"])
    deployment.ports.blobs = blobs
    outputs = _outputs(blobs)
    # At-least-once delivery may still bring the message again: skipped when the marker got
    # there, else run again to the same outputs.
    again = deployment.handle_event("partition", STORAGE_FINALIZED, resource)
    assert again.status == ("skipped" if reached else "succeeded")
    assert _outputs(blobs) == outputs and outputs


def _outputs(blobs) -> dict[str, bytes]:
    return {i.name: blobs.read(i.name) for p in (layout.BATCH_DATA, layout.MANIFESTS) for i in blobs.list(p)}


def test_pipeline_messages_dedup_on_their_idempotency_key_per_function(deployment, clock):
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=clock.now())
    assert deployment.handle("notify", tick).status != "skipped"
    assert deployment.handle("notify", tick).status == "skipped"
    # Another function consuming the same message is not affected, and force re-runs (replays).
    # notify's marker does not cover train_trigger: its step runs (and has nothing to do here).
    other = deployment.handle("train_trigger", tick)
    assert not any("already processed" in note for note in other.notes)
    assert len([r for r in _run_records(deployment) if r["function"] == "train_trigger"]) == 1
    assert deployment.handle("notify", tick, force=True).status != "skipped"
    later = ScheduleTick(dataset="retail", actions=["notify"], logical_time=clock.now() + timedelta(days=1))
    assert deployment.handle("notify", later).status != "skipped"
