"""Test data factories shared by tests/ and functions/ (on pytest's ``pythonpath``: ``from factories
import ...``): one place for the messages tests build by hand."""

from __future__ import annotations

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
