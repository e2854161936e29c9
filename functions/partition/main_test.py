"""partition served by functions-framework: both CloudEvent modes, both GCS event shapes."""

import pytest

from batchcast.core import layout
from batchcast.core.events import PUBSUB_PUBLISHED, STORAGE_FINALIZED
from batchcast.core.messages import ObjectFinalized
from batchcast.data import uploads

CSV = b"store_id,city,date,sales\n1,berlin,2026-02-27,100\n1,berlin,2026-02-28,120\n2,munich,2026-02-28,80\n"


def _upload(deployment) -> ObjectFinalized:
    blobs = deployment.ports.blobs
    name = uploads.store_upload(blobs, CSV, ext="csv", now=deployment.ports.clock.now(), dataset="retail")
    info = blobs.stat(name)
    return ObjectFinalized(
        bucket="b", name=name, generation=info.generation, logical_time=info.updated, metadata=info.metadata
    )


def _resource(event: ObjectFinalized) -> dict:
    return {
        "bucket": event.bucket,
        "name": event.name,
        "generation": str(event.generation),
        "metadata": event.metadata,
        "updated": event.logical_time.isoformat(),
    }


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_eventarc_storage_event_partitions_the_upload(deployment, serve, cloud_events, mode):
    event = _upload(deployment)
    headers, body = getattr(cloud_events, mode)(STORAGE_FINALIZED, _resource(event))
    response = serve("partition").post("/", headers=headers, data=body)
    assert response.status_code == 200
    names = [i.name for i in deployment.ports.blobs.list(layout.BATCH_DATA)]
    assert len(names) == 2 and all(n.endswith(".avro") for n in names)
    [logged] = [e for e in deployment.bus.log() if e["topic"] == "partitions-ready"]
    assert logged["attributes"]["dataset"] == "retail"


def test_gcs_notification_through_pubsub_partitions_the_upload(deployment, serve, cloud_events):
    import base64
    import json

    event = _upload(deployment)
    data = {
        "message": {
            "data": base64.b64encode(json.dumps(_resource(event)).encode()).decode(),
            "attributes": {
                "eventType": "OBJECT_FINALIZE",
                "bucketId": "b",
                "objectId": event.name,
                "objectGeneration": str(event.generation),
            },
        }
    }
    headers, body = cloud_events.binary(PUBSUB_PUBLISHED, data)
    assert serve("partition").post("/", headers=headers, data=body).status_code == 200
    assert len(list(deployment.ports.blobs.list(layout.BATCH_DATA))) == 2


def test_event_outside_raw_is_acknowledged_without_work(deployment, serve, cloud_events):
    resource = {"bucket": "b", "name": "results/dataset=retail/store_id=1.json", "generation": "3"}
    headers, body = cloud_events.binary(STORAGE_FINALIZED, resource)
    assert serve("partition").post("/", headers=headers, data=body).status_code == 200
    assert list(deployment.ports.blobs.list(layout.BATCH_DATA)) == []


def test_an_event_we_cannot_read_is_acknowledged_not_retried_forever(deployment, serve, cloud_events):
    headers, body = cloud_events.binary(STORAGE_FINALIZED, {"no": "name"})
    assert serve("partition").post("/", headers=headers, data=body).status_code == 200
