"""Live accuracy in ``metrics/``: shard scores add up per city over a window of days."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from batchcast.backends.embedded import EmbeddedBlobStore
from batchcast.ops import metrics
from batchcast.ops.metrics import LiveScore


def test_live_scores_of_shards_and_days_add_up_within_the_window(tmp_path: Path) -> None:
    blobs = EmbeddedBlobStore(tmp_path)
    first = LiveScore(points=4, abs_error=8.0, scaled_error=2.0, scaled_points=4, covered=3)
    second = LiveScore(points=2, abs_error=2.0, scaled_error=3.0, scaled_points=1, covered=2)
    metrics.record_live(blobs, "retail", date(2026, 3, 2), "berlin", "shard-0-of-2", first, "v1")
    metrics.record_live(blobs, "retail", date(2026, 3, 2), "berlin", "shard-1-of-2", second, "v1")
    metrics.record_live(blobs, "retail", date(2026, 2, 20), "berlin", "shard-0-of-1", second, "v0")
    metrics.record_live(blobs, "retail", date(2026, 3, 2), "paris", "shard-0-of-1", second, "v1")

    week = metrics.live_accuracy(blobs, "retail", "berlin", through=date(2026, 3, 3), days=7)

    assert week == first + second  # not the day before the window, not another city
    assert (week.mae, week.mase, week.coverage) == (10.0 / 6, 5.0 / 5, 5 / 6)


def test_no_scored_forecasts_give_no_figures(tmp_path: Path) -> None:
    empty = metrics.live_accuracy(EmbeddedBlobStore(tmp_path), "retail", "berlin", date(2026, 3, 3), 28)
    assert empty.points == 0 and (empty.mae, empty.mase, empty.coverage) == (None, None, None)
