"""notify served by functions-framework: freshness per entity, one digest per change."""

import json

from batchcast import layout
from batchcast.messages import ScheduleTick


def _tick(partitioned) -> ScheduleTick:
    return ScheduleTick(dataset="retail", actions=["notify"], logical_time=partitioned.logical_time)


def test_a_tick_before_any_forecast_marks_every_store_stale_once(
    deployment, partitioned, serve, cloud_events
):
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(_tick(partitioned))
    )
    client = serve("notify")
    assert client.post("/", headers=headers, data=body).status_code == 200
    entities = json.loads(deployment.ports.blobs.read(layout.FRESHNESS))["datasets"]["retail"]["entities"]
    assert len(entities) == 6 and all(s["stale"] for s in entities.values())
    assert {s["reason"] for s in entities.values()} == {"no model trained yet"}
    assert client.post("/", headers=headers, data=body).status_code == 200  # redelivered
    assert len(deployment.ports.mailer.sent()) == 1  # the digest is not sent twice


def test_stores_recover_when_their_forecast_arrives(deployment, partitioned, serve, cloud_events):
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(_tick(partitioned))
    )
    client = serve("notify")
    client.post("/", headers=headers, data=body)
    deployment.handle("train_trigger", partitioned)
    deployment.bus.drain()  # predict, then notify through the in-process bus
    entities = json.loads(deployment.ports.blobs.read(layout.FRESHNESS))["datasets"]["retail"]["entities"]
    assert not any(s["stale"] for s in entities.values())
    assert "6 recovered" in deployment.ports.mailer.sent()[-1]["Subject"]
