"""Pipeline steps: pure functions of (ports, message) that return what to publish.

A step reads and writes through :class:`batchcast.ports.Ports` only and returns a
:class:`StepResult`; the entry point publishes the result's messages after the step's writes have
succeeded, and records the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from batchcast.core.messages import Message
from batchcast.core.obs import RunLogger
from batchcast.core.settings import Settings
from batchcast.ports import Ports

Status = Literal["succeeded", "partial", "failed", "skipped", "rejected"]


@dataclass
class StepResult:
    """What a step did: its outcome, messages to publish, counts, and per-city failures."""

    status: Status = "succeeded"
    messages: list[Message] = field(default_factory=list)
    counts: dict[str, int | float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # where (a city, a file) -> what went wrong
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    city: str | None = None
    dataset: str | None = None  # set when the message did not know it (an upload's chosen profile)

    def fail(self, where: str, error: str) -> None:
        """Record a local failure (one city, one shard); the rest of the step goes on."""
        self.errors[where] = error
        self.status = "partial" if self.status in ("succeeded", "partial") else self.status


@dataclass
class RunContext:
    """Who is running: the invocation's id, labelled logger and the deployment's settings."""

    run_id: str
    function: str
    log: RunLogger
    settings: Settings = field(default_factory=Settings)  # the deployment's (mail sender, public URL)


class Step(Protocol):
    """The signature every step has."""

    def __call__(self, ports: Ports, message: Message, run: RunContext) -> StepResult: ...
