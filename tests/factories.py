"""Test data factories shared by tests/ and functions/ (on pytest's ``pythonpath``: ``from factories
import ...``): one place for the messages and documents tests build by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
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
