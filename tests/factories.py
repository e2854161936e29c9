"""Test data factories shared by tests/ and functions/ (on pytest's ``pythonpath``: ``from factories
import ...``): one place for the messages, models and live scores tests build by hand."""

from __future__ import annotations

from datetime import UTC, datetime
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
