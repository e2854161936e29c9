"""Drift: is a city's live accuracy falling behind what its latest model's backtest promised?

Predict scores the forecasts whose actuals arrived (:func:`batchcast.ops.metrics.record_live`); the
scheduled notify sums those scores over ``monitoring.live_window_days`` and compares the live MASE
with the backtest MASE in the metadata of the model ``LATEST`` names. A city drifts when it has at
least ``monitoring.min_points`` scored points and its live MASE exceeds the backtest's by more than
``monitoring.drift_margin`` (relative). A city that cannot be judged (no model, no backtest MASE,
too few points) carries a note saying why, so it is never silently left out.

Small reads only (one pointer, one metadata file and one metrics file per day per city), and no
pandas: notify imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from batchcast.core.config import Monitoring, Profile
from batchcast.data import storage
from batchcast.ops import metrics, models
from batchcast.ports import BlobStore


@dataclass(frozen=True)
class CityDrift:
    """One city's live accuracy against its latest backtest, and the verdict."""

    city: str
    live: metrics.LiveScore
    backtest_mase: float | None
    model_version: str | None
    drifting: bool
    note: str | None  # why the city was not judged; None when it was

    def to_json(self) -> dict[str, Any]:
        """The verdict as stored in ``status/freshness.json`` and shown by status and the console."""
        return {
            "live_mase": _rounded(self.live.mase),
            "live_coverage": _rounded(self.live.coverage),
            "live_mae": _rounded(self.live.mae),
            "points": self.live.points,
            "backtest_mase": _rounded(self.backtest_mase),
            "model_version": self.model_version,
            "drifting": self.drifting,
            "note": self.note,
        }


def verdict(
    live: metrics.LiveScore, backtest_mase: float | None, rules: Monitoring
) -> tuple[bool, str | None]:
    """(drifting, note): the drift rule on one city's window of live scores.

    ``note`` says why the city was not judged (no backtest MASE, too few scored points).
    """
    if backtest_mase is None:
        return False, "the latest model has no backtest MASE"
    if live.scaled_points < rules.min_points:
        unscaled = live.points - live.scaled_points  # entities whose history gives no MASE scale
        without_scale = f" (and {unscaled} without a MASE scale)" if unscaled else ""
        window = f"{rules.live_window_days} days{without_scale}"
        return False, f"{live.scaled_points} of {rules.min_points} scored points in {window}"
    assert live.mase is not None  # scaled_points >= min_points >= 1
    return live.mase > backtest_mase * (1 + rules.drift_margin), None


def check(blobs: BlobStore, profile: Profile, through: date) -> dict[str, CityDrift]:
    """Per city of ``profile``: live accuracy over the window ending with ``through`` against the
    latest model's backtest."""
    verdicts = storage.concurrently(lambda city: _city(blobs, profile, city, through), profile.cities)
    return {verdict.city: verdict for verdict in verdicts}


def _city(blobs: BlobStore, profile: Profile, city: str, through: date) -> CityDrift:
    rules = profile.monitoring
    live = metrics.live_accuracy(blobs, profile.name, city, through, rules.live_window_days)
    ref = models.latest(blobs, profile, city)
    if ref is None:
        return CityDrift(city, live, None, None, False, "no model trained yet")
    metadata = models.read_metadata(blobs, profile, city, ref.version) or {}
    backtest = metadata.get("metrics", {}).get("overall", {}).get("mase")
    drifting, note = verdict(live, backtest, rules)
    return CityDrift(city, live, backtest, ref.version, drifting, note)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
