"""predict served by functions-framework: one shard in, predictions/results/metrics out."""

import json

import pytest

from batchcast.core import layout
from batchcast.core.messages import PredictRequest, decode
from batchcast.core.schemas.frames import read_frame


def _requests(deployment, partitioned) -> list[PredictRequest]:
    result = deployment.handle("train_trigger", partitioned)
    return [m for m in result.messages if isinstance(m, PredictRequest)]


@pytest.mark.slow
def test_a_predict_request_writes_its_shard_and_the_stores_results(
    deployment, partitioned, serve, cloud_events
):
    request = _requests(deployment, partitioned)[0]
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(request)
    )
    assert serve("predict").post("/", headers=headers, data=body).status_code == 200
    [ready] = [e for e in deployment.bus.log() if e["topic"] == "predictions-ready"]
    message = decode(ready["data"], ready["attributes"])
    rows = read_frame(deployment.ports.blobs.read(message.predictions_object), "prediction")
    assert sorted(rows["entity_id"]) == sorted(request.entities)
    for entity in request.entities:
        result = json.loads(deployment.ports.blobs.read(layout.results_object("retail", "store_id", entity)))
        assert result["model_version"] == request.model_version


@pytest.mark.slow
def test_a_request_for_a_missing_model_is_recorded_and_acknowledged_not_retried(
    deployment, partitioned, serve, cloud_events
):
    # No redelivery can make a model appear that was never registered: a permanent error is
    # recorded as a failed run and answered 2xx, so it does not cycle into the dead-letter topic.
    request = _requests(deployment, partitioned)[0].model_copy(update={"model_version": "no-such-version"})
    headers, body = cloud_events.binary(
        "google.cloud.pubsub.topic.v1.messagePublished", cloud_events.pubsub(request)
    )
    assert serve("predict").post("/", headers=headers, data=body).status_code == 200
    [record] = [
        json.loads(deployment.ports.blobs.read(i.name))
        for i in deployment.ports.blobs.list(layout.RUNS)
        if json.loads(deployment.ports.blobs.read(i.name))["function"] == "predict"
    ]
    assert record["status"] == "failed" and "incomplete" in record["error"]
