"""Which function consumes which topic: the routes, in one place.

The embedded backend subscribes steps to topics from this table, the emulator stack creates push
subscriptions from it, and Terraform's consistency test checks its triggers against it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from batchcast.core.messages import Topic
from batchcast.steps import Step

FUNCTIONS = ("ingest", "partition", "train_trigger", "predict", "notify")
# Steps that run as jobs (``batchcast train``), started by a function rather than by a topic.
JOBS = ("train",)


@dataclass(frozen=True)
class Route:
    """Messages on ``topic`` are pushed to ``function``."""

    topic: Topic
    function: str

    @property
    def subscription(self) -> str:
        """The subscription's id (Pub/Sub ids need at least three characters)."""
        return f"{self.function.replace('_', '-')}--{self.topic.value}"


ROUTES: tuple[Route, ...] = (
    Route(Topic.RAW_OBJECTS, "partition"),
    Route(Topic.PARTITIONS_READY, "train_trigger"),
    Route(Topic.SCHEDULE, "train_trigger"),
    Route(Topic.PREDICT_REQUESTS, "predict"),
    Route(Topic.PREDICTIONS_READY, "notify"),
    Route(Topic.SCHEDULE, "notify"),
)


def step_for(function: str) -> Step:
    """The step a function or job runs (``batchcast.steps.<function>.run``)."""
    if function not in FUNCTIONS + JOBS or function == "ingest":
        raise KeyError(f"no event-driven step named {function!r}")
    return importlib.import_module(f"batchcast.steps.{function}").run


def route_for_subscription(subscription: str) -> Route:
    """The route a subscription id belongs to; raise KeyError naming the known ones."""
    for route in ROUTES:
        if route.subscription == subscription:
            return route
    known = ", ".join(r.subscription for r in ROUTES)
    raise KeyError(f"unknown subscription {subscription!r}; known: {known}")
