"""train_trigger served by functions-framework: trains per city and fans out predict requests."""

import json

import pytest

from batchcast.core import layout
from batchcast.core.messages import ScheduleTick


def _published(deployment, topic):
    return [e for e in deployment.bus.log() if e["topic"] == topic]


@pytest.mark.slow
def test_partitions_ready_trains_each_city_and_requests_predictions(
    deployment, partitioned, serve, cloud_events
):
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(partitioned)
    )
    assert serve("train_trigger").post("/", headers=headers, data=body).status_code == 200
    latest = [i.name for i in deployment.ports.blobs.list(layout.MODELS) if i.name.endswith("LATEST")]
    assert len(latest) == len(partitioned.cities)
    requests = [json.loads(e["data"]) for e in _published(deployment, "predict-requests")]
    assert {r["city"] for r in requests} == set(partitioned.cities)
    # The upload came at 00:00 UTC = 01:00 in Berlin: the day that has begun is past, so tomorrow.
    assert {r["target_start"] for r in requests} == {"2026-03-03T00:00:00"}


def test_a_tick_that_asks_only_for_notify_is_skipped(deployment, partitioned, serve, cloud_events):
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=partitioned.logical_time)
    headers, body = cloud_events.structured(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(tick)
    )
    assert serve("train_trigger").post("/", headers=headers, data=body).status_code == 200
    assert list(deployment.ports.blobs.list(layout.MODELS)) == []
    assert _published(deployment, "predict-requests") == []
