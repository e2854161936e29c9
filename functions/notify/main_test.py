"""notify served by functions-framework: freshness per entity, one email per store and episode."""

import json

import pytest

from batchcast.core import layout
from batchcast.core.messages import ScheduleTick


def _tick(partitioned) -> ScheduleTick:
    return ScheduleTick(dataset="retail", actions=["notify"], logical_time=partitioned.logical_time)


def _managers(deployment) -> dict[str, str]:
    blobs = deployment.ports.blobs
    entities = {
        layout.parse_batch_data(i.name).entity_id for i in blobs.list(layout.batch_data_prefix("retail"))
    }
    owners = {entity: f"m{n}@example.com" for n, entity in enumerate(sorted(entities))}
    directory = {"ops": ["ops@example.com"], "datasets": {"retail": {e: [a] for e, a in owners.items()}}}
    deployment.ports.blobs.write(layout.MANAGERS, json.dumps(directory).encode())
    return owners


def test_a_tick_before_any_forecast_marks_every_store_stale_once(
    deployment, partitioned, serve, cloud_events
):
    _managers(deployment)
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(_tick(partitioned))
    )
    client = serve("notify")
    assert client.post("/", headers=headers, data=body).status_code == 200
    entities = json.loads(deployment.ports.blobs.read(layout.FRESHNESS))["datasets"]["retail"]["entities"]
    assert len(entities) == 6 and all(s["stale"] for s in entities.values())
    assert {s["reason"] for s in entities.values()} == {"no model trained yet"}
    assert client.post("/", headers=headers, data=body).status_code == 200  # redelivered
    sent = deployment.ports.mailer.sent()
    assert len(sent) == 7  # one per store and the ops digest, not twice
    assert sum(email["To"] == "ops@example.com" for email in sent) == 1


@pytest.mark.slow
def test_stores_recover_when_their_forecast_arrives(deployment, partitioned, serve, cloud_events):
    owners = _managers(deployment)
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(_tick(partitioned))
    )
    client = serve("notify")
    client.post("/", headers=headers, data=body)
    deployment.handle("train_trigger", partitioned)
    deployment.bus.drain()  # predict, then notify through the in-process bus
    entities = json.loads(deployment.ports.blobs.read(layout.FRESHNESS))["datasets"]["retail"]["entities"]
    assert not any(s["stale"] for s in entities.values())
    recovered = [e for e in deployment.ports.mailer.sent() if "fresh again" in e["Subject"]]
    assert sorted(e["To"] for e in recovered) == sorted(owners.values())
