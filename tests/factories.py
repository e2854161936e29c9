"""Test helpers shared by tests/ and functions/ (on pytest's ``pythonpath``: ``from factories
import ...``): one place for the messages and profiles tests build by hand, and for waiting on
asynchronous work."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from batchcast.core.messages import PredictRequest


def predict_request(**changes: Any) -> PredictRequest:
    """A valid predict request for two retail stores in Berlin (target 2026-03-02); ``changes``
    override any field."""
    fields: dict[str, Any] = dict(
        dataset="retail",
        city="berlin",
        shard=0,
        shards=2,
        model_version="v1",
        target_start=datetime(2026, 3, 2),
        target_end=datetime(2026, 3, 3),
        entities=["1", "2"],
        logical_time=datetime(2026, 3, 2, tzinfo=UTC),
    )
    return PredictRequest(**(fields | changes))


def daily_profile_toml(
    name: str, *, key: str, target: str, city: tuple[str, str, str], tail: str, head: str = ""
) -> str:
    """A daily profile's TOML keyed by a user's own names: ``key`` and ``target`` columns, time
    column "day", one ``city`` (name, country, timezone), a nightly train-and-predict tick, lags 1
    and 7; ``head`` goes after the name, ``tail`` (from ``[training]`` on) after the features."""
    city_name, country, timezone = city
    return f"""
name = "{name}"
{head}entity_key = "{key}"
time_column = "day"
target = "{target}"
frequency = "daily"
timezone = "{timezone}"

[cities.{city_name}]
country = "{country}"

[[schedule]]
cron = "0 0 * * *"
actions = ["train", "predict"]

[features]
lags = [1, 7]

{tail}"""


def wait_for(what: str, check: Callable[[], object], timeout: float = 240, every: float = 0.25) -> object:
    """Poll ``check`` every ``every`` seconds until it returns something truthy, and return that;
    fail naming ``what`` after ``timeout`` seconds. Polls fast: the asynchronous work it waits
    on (emulator deliveries, function runs) usually ends well within a second of being ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
