"""``metrics/dataset=<d>/dt=<date>/city=<c>.json``: backtest, run and live-accuracy metrics, merged by key.

Several writers touch one day's file (a training, each predict shard); each owns one key of one
section, and the merge is a compare-and-swap, so concurrent shards and replays never lose or
duplicate an entry.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, timedelta
from typing import Any

from batchcast.core import layout
from batchcast.data import storage
from batchcast.ports import BlobStore


def record(
    blobs: BlobStore, dataset: str, dt: date, city: str, section: str, key: str, entry: dict[str, Any]
) -> None:
    """Set ``document[section][key] = entry`` in the city's metrics file for ``dt``."""

    def merge(current: dict | None) -> dict:
        document = current or {"dataset": dataset, "city": city, "dt": dt.isoformat()}
        return document | {section: dict(document.get(section, {})) | {key: entry}}

    storage.update_json(blobs, layout.metrics_object(dataset, dt, city), merge)


# -- live accuracy: forecasts scored against the actuals that arrived later -------------------------

LIVE = "live"  # the metrics section predict writes, one entry per scheduled shard


@dataclass(frozen=True)
class LiveScore:
    """How forecasts did once their actuals arrived, kept as sums so shards and days add up.

    ``scaled_error`` divides each absolute error by its entity's in-sample seasonal-naive MAE (the
    backtest's MASE scale); points whose entity has no usable scale count in ``points`` but not in
    ``scaled_points``.
    """

    points: int = 0
    abs_error: float = 0.0
    scaled_error: float = 0.0
    scaled_points: int = 0
    covered: int = 0  # actuals inside the forecast's P10–P90 band

    def __add__(self, other: LiveScore) -> LiveScore:
        return LiveScore(
            self.points + other.points,
            self.abs_error + other.abs_error,
            self.scaled_error + other.scaled_error,
            self.scaled_points + other.scaled_points,
            self.covered + other.covered,
        )

    @property
    def mae(self) -> float | None:
        return self.abs_error / self.points if self.points else None

    @property
    def mase(self) -> float | None:
        return self.scaled_error / self.scaled_points if self.scaled_points else None

    @property
    def coverage(self) -> float | None:
        return self.covered / self.points if self.points else None

    def to_json(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "abs_error": round(self.abs_error, 6),
            "scaled_error": round(self.scaled_error, 6),
            "scaled_points": self.scaled_points,
            "covered": self.covered,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveScore:
        return cls(*(data[f.name] for f in fields(cls)))


def record_live(
    blobs: BlobStore, dataset: str, dt: date, city: str, key: str, score: LiveScore, model_version: str
) -> None:
    """Record one shard's score of the periods of ``dt`` whose actuals arrived (key: the shard)."""
    record(blobs, dataset, dt, city, LIVE, key, score.to_json() | {"model_version": model_version})


def live_accuracy(blobs: BlobStore, dataset: str, city: str, through: date, days: int) -> LiveScore:
    """The city's live score over the ``days`` days ending with ``through``: one small read per day,
    so the cost is the same after three years."""
    total = LiveScore()
    for offset in range(days):
        document = storage.read_json(blobs, layout.metrics_object(dataset, through - timedelta(offset), city))
        for entry in (document or {}).get(LIVE, {}).values():
            total += LiveScore.from_json(entry)
    return total
