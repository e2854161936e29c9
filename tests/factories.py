"""Test helpers shared by tests/ and functions/ (on pytest's ``pythonpath``: ``from factories
import ...``): one place for the messages, documents, profiles, models and live scores tests build
by hand, and for waiting on asynchronous work."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from batchcast.core.config import Profile
from batchcast.core.messages import PredictRequest
from batchcast.ops import models
from batchcast.ops.metrics import LiveScore
from batchcast.ports import BlobStore

MODEL_VERSION = "20260301T230000Z-abcdef0123"


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


def daily_result(
    target: date, as_of: str, p50: float, history: dict[date, float] | None = None, entity: str = "berlin-001"
) -> dict:
    """The results document predict builds for one daily Berlin target: one period with a band of
    ±10 around ``p50``, made at ``as_of`` (Berlin wall clock in March, UTC+1), with the actuals of
    ``history``."""
    start = datetime.combine(target, datetime.min.time())
    actuals = {datetime.combine(d, datetime.min.time()): y for d, y in (history or {}).items()}
    return result_document(start, 1, timedelta(days=1), as_of, p50, actuals, entity)


def result_document(
    start: datetime,
    periods: int,
    period: timedelta,
    as_of: str,
    p50: float,
    history: dict[datetime, float],
    entity: str = "berlin-001",
) -> dict:
    """The results document of a target of ``periods`` periods from ``start`` (see :func:`daily_result`)."""
    starts = [start + period * i for i in range(periods)]
    return {
        "dataset": "retail",
        "entity_key": "store_id",
        "entity_id": entity,
        "city": "berlin",
        "timezone": "Europe/Berlin",
        "as_of": datetime.fromisoformat(as_of + "+01:00").isoformat(),
        "model_version": "v1",
        "target": {"start": start.isoformat(), "end": (start + period * periods).isoformat()},
        "forecast": [
            {
                "period_start": s.isoformat(),
                "period_end": (s + period).isoformat(),
                "p10": p50 - 10,
                "p50": p50,
                "p90": p50 + 10,
            }
            for s in starts
        ],
        "history": [{"period_start": ts.isoformat(), "actual": y} for ts, y in history.items()],
    }


def live_score(mase: float, points: int = 100) -> LiveScore:
    """A live score of ``points`` forecasts with MASE ``mase``, MAE 2 and 80 % band coverage."""
    return LiveScore(
        points=points,
        abs_error=2.0 * points,
        scaled_error=mase * points,
        scaled_points=points,
        covered=int(0.8 * points),
    )


def seed_model(
    blobs: BlobStore, profile: Profile, city: str, backtest_mase: float, version: str = MODEL_VERSION
) -> None:
    """Register a model version of ``city`` whose backtest scored ``backtest_mase``; point LATEST at it."""
    metadata = {"version": version, "metrics": {"overall": {"mase": backtest_mase, "coverage": 0.8}}}
    models.register(blobs, profile, city, version, metadata)
    pointer = models.ModelRef(version, "f" * 64, "2026-03-01T23:00:00+00:00")
    models.advance_latest(blobs, profile, city, pointer)


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
