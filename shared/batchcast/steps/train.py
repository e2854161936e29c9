"""train: the job train_trigger hands long trainings to (``batchcast train``, a Cloud Run job).

It trains one city as of the request's logical time (falling back to the previous model if the
training fails), then publishes that city's predict requests, exactly as an inline training in
train_trigger would have. It has no time limit, so nothing is refused for its size.
"""

from __future__ import annotations

from batchcast.core.config import load_profile
from batchcast.core.messages import InvalidMessage, Message, TrainRequest
from batchcast.data import catalog
from batchcast.ops import training
from batchcast.ports import Ports
from batchcast.steps import RunContext, StepResult


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Train the requested city and publish its predict requests."""
    if not isinstance(message, TrainRequest):
        raise InvalidMessage(f"train does not handle {message.kind}")
    profile = load_profile(message.dataset)
    city = message.city_
    result = StepResult(city=city)
    data = catalog.read(ports.blobs, profile, city)
    if not data:
        raise ValueError(f"no data for {profile.name}/{city}")
    outcome = training.train_with_fallback(
        ports.blobs, profile, city, message.logical_time, data, run.log, inline=False
    )
    result.record_training(city, outcome.error)
    if "predict" in message.actions:
        requests = training.predict_requests(profile, city, outcome.ref.version, data, message)
        result.publish(requests, "predict_requests")
    return result
