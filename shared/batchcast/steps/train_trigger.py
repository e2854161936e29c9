"""train_trigger: decide per city whether to retrain, train (inline or in a job) and fan out predicts.

Triggered by ``partitions-ready`` (new data: the profile's ``on_upload`` actions, for the entities
the upload carried) and by schedule ticks (their ``actions``, for every entity). A failure in one
city is recorded and the other cities go on. What a city holds comes from its manifest
(:mod:`batchcast.data.catalog`), so the cost of a run does not grow with the days of history.

Event-driven functions stop at 540 s, so a training is handed to a job (``batchcast train``: a
Cloud Run job on GCP, a local process otherwise) when the profile says ``training.mode = "job"``.
In inline mode a training whose size estimate exceeds ``training.max_inline_seconds`` is refused
rather than left to be killed half-way; the city keeps predicting with its previous model.
"""

from __future__ import annotations

from batchcast.core.config import Profile, load_profile
from batchcast.core.messages import (
    InvalidMessage,
    Message,
    PartitionsReady,
    ScheduleTick,
    TrainRequest,
)
from batchcast.data import catalog, dataset
from batchcast.ops import models, training
from batchcast.ports import Ports
from batchcast.steps import RunContext, StepResult


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Train and/or plan predictions for every city the message concerns."""
    if isinstance(message, PartitionsReady):
        profile = load_profile(message.dataset)
        actions, cities = set(profile.on_upload), list(message.cities)
    elif isinstance(message, ScheduleTick):
        profile = load_profile(message.dataset)
        actions = set(message.actions)
        cities = message.cities or list(profile.cities)
    else:
        raise InvalidMessage(f"train_trigger does not handle {message.kind}")
    result = StepResult()
    if not actions & {"train", "predict"}:
        result.status = "skipped"
        return result
    if isinstance(message, ScheduleTick) and not message.cities and len(cities) > 1:
        return _per_city(message, cities, actions)
    failed = 0
    for city in cities:
        try:
            _one_city(ports, profile, city, message, actions, result, run)
        except Exception as error:  # one city failing must not stop the others
            run.log.exception(f"{profile.name}/{city} failed")
            result.fail(city, f"{type(error).__name__}: {error}")
            failed += 1
    if cities and failed == len(cities):
        result.status = "failed"
    return result


def _per_city(tick: ScheduleTick, cities: list[str], actions: set[str]) -> StepResult:
    """One tick per city, so each city trains in an invocation of its own: a dataset's cities one
    after another could outlast an event-driven function (540 s) even when each city fits.
    Notify sees the original tick; the per-city ones carry only train and predict."""
    wanted = sorted(actions & {"train", "predict"})
    ticks: list[Message] = [
        ScheduleTick(dataset=tick.dataset, actions=wanted, cities=[city], logical_time=tick.logical_time)
        for city in cities
    ]
    return StepResult(messages=ticks, notes=[f"one tick per city: {', '.join(cities)}"])


def _one_city(
    ports: Ports,
    profile: Profile,
    city: str,
    message: PartitionsReady | ScheduleTick,
    actions: set[str],
    result: StepResult,
    run: RunContext,
) -> None:
    uploaded = message.entities.get(city) if isinstance(message, PartitionsReady) else None
    current = models.latest(ports.blobs, profile, city)
    # Only a training needs the whole city (its fingerprint, its rows); an upload re-forecasting
    # its stores with the current model reads just their manifest parts.
    may_train = current is None or "train" in actions
    data = catalog.read(ports.blobs, profile, city, entities=None if may_train else uploaded)
    if not data:
        result.notes.append(f"{city}: no data yet")
        return
    ref = current
    fingerprint = dataset.fingerprint(data, profile) if may_train else ""
    if may_train and _should_train(profile, city, message, actions, current, fingerprint, result):
        if profile.training.mode == "job":
            _hand_to_job(ports, profile, city, message, actions, fingerprint, result)
            return  # the job publishes this city's predict requests when its model is ready
        outcome = training.train_with_fallback(
            ports.blobs, profile, city, message.logical_time, data, run.log, fingerprint=fingerprint
        )
        result.record_training(city, outcome.error)
        ref = outcome.ref
    if "predict" in actions and ref is not None:
        result.publish(
            training.predict_requests(profile, city, ref.version, data, message, entities=uploaded),
            "predict_requests",
        )


def _should_train(
    profile: Profile,
    city: str,
    message: PartitionsReady | ScheduleTick,
    actions: set[str],
    current: models.ModelRef | None,
    fingerprint: str,
    result: StepResult,
) -> bool:
    if current is None:
        return True  # without any model there is nothing to predict with, whatever the tick asked
    if current.fingerprint == fingerprint:
        result.notes.append(f"{city}: model {current.version} already saw this data")
        return False
    if "train" not in actions:
        return False
    debounce = profile.training.debounce_minutes
    if isinstance(message, PartitionsReady) and models.is_recent(current, message.logical_time, debounce):
        result.notes.append(f"{city}: retrained less than {debounce} min ago; the next tick trains")
        return False
    return True


def _hand_to_job(
    ports: Ports,
    profile: Profile,
    city: str,
    message: PartitionsReady | ScheduleTick,
    actions: set[str],
    fingerprint: str,
    result: StepResult,
) -> None:
    if ports.jobs is None:
        raise RuntimeError("training.mode is 'job' but this deployment has no job launcher")
    request = TrainRequest(
        dataset=profile.name,
        city=city,
        actions=sorted(actions & {"train", "predict"}),
        fingerprint=fingerprint,
        logical_time=message.logical_time,
        rerun=message.rerun,
    )
    job_id = ports.jobs.launch(request)
    result.notes.append(f"{city}: training handed to job {job_id}")
    result.count("jobs_launched")
