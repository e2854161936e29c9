"""train_trigger: decide per city whether to retrain, train (inline) and fan out predict requests.

Triggered by ``partitions-ready`` (new data: the profile's ``on_upload`` actions) and by schedule
ticks (their ``actions``). A failure in one city is recorded and the other cities go on.
"""

from __future__ import annotations

from batchcast import dataset, training
from batchcast.config import Profile, load_profile
from batchcast.messages import InvalidMessage, Message, PartitionsReady, PredictRequest, ScheduleTick
from batchcast.ports import Ports
from batchcast.sharding import plan_shards
from batchcast.steps import RunContext, StepResult


def run(ports: Ports, message: Message, run: RunContext) -> StepResult:
    """Train and/or plan predictions for every city the message concerns."""
    if isinstance(message, PartitionsReady):
        profile = load_profile(message.dataset)
        actions, cities = set(profile.on_upload), list(message.cities)
    elif isinstance(message, ScheduleTick):
        profile = load_profile(message.dataset)
        actions, cities = set(message.actions), dataset.cities_with_data(ports.blobs, profile)
    else:
        raise InvalidMessage(f"train_trigger does not handle {message.kind}")
    result = StepResult()
    if not actions & {"train", "predict"}:
        result.status = "skipped"
        return result
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


def _one_city(
    ports: Ports,
    profile: Profile,
    city: str,
    message: PartitionsReady | ScheduleTick,
    actions: set[str],
    result: StepResult,
    run: RunContext,
) -> None:
    files = dataset.entity_files(ports.blobs, profile, city)
    if not files:
        result.notes.append(f"{city}: no data yet")
        return
    ref = _model_for(ports, profile, city, message, actions, files, result, run)
    if "predict" in actions and ref is not None:
        requests = predict_requests(profile, city, ref.version, files, message)
        result.messages.extend(requests)
        result.counts["predict_requests"] = result.counts.get("predict_requests", 0) + len(requests)


def _model_for(
    ports: Ports,
    profile: Profile,
    city: str,
    message: PartitionsReady | ScheduleTick,
    actions: set[str],
    files: dict[str, dataset.EntityFiles],
    result: StepResult,
    run: RunContext,
) -> training.ModelRef | None:
    current = training.latest(ports.blobs, profile, city)
    if current is not None:
        if current.fingerprint == dataset.fingerprint(files, profile):
            result.notes.append(f"{city}: model {current.version} already saw this data")
            return current
        if "train" not in actions:
            return current
        debounce = profile.training.debounce_minutes
        if isinstance(message, PartitionsReady) and training.is_recent(
            current, message.logical_time, debounce
        ):
            result.notes.append(f"{city}: retrained less than {debounce} min ago; the next tick trains")
            return current
    if profile.training.mode == "job":
        # Handing long trainings to a Cloud Run job is not built yet; say so rather than pretend.
        result.notes.append(f"{city}: training.mode=job is not implemented yet, trained inline")
    try:
        ref = training.train_city(ports.blobs, profile, city, message.logical_time, files)
    except Exception as error:
        if current is None:
            raise
        # Forecasts from the previous model beat no forecasts; the failure is still reported.
        run.log.exception(f"{profile.name}/{city}: training failed, predicting with {current.version}")
        result.fail(city, f"model training failed: {type(error).__name__}: {error}")
        return current
    result.counts["models_trained"] = result.counts.get("models_trained", 0) + 1
    return ref


def predict_requests(
    profile: Profile,
    city: str,
    version: str,
    files: dict[str, dataset.EntityFiles],
    message: PartitionsReady | ScheduleTick,
) -> list[PredictRequest]:
    """One request per shard for the next target window after the message's logical time."""
    start, end = profile.target_window(message.logical_time, city)
    weights = {entity: info.rows for entity, info in files.items()}
    shards = plan_shards(weights, profile.sharding.target_rows, profile.sharding.max_shards)
    return [
        PredictRequest(
            dataset=profile.name,
            city=city,
            shard=index,
            shards=len(shards),
            model_version=version,
            target_start=start,
            target_end=end,
            entities=entities,
            logical_time=message.logical_time,
        )
        for index, entities in enumerate(shards)
    ]
