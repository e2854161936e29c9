"""How forecasts did against the actuals that arrived later: the one place scoring lives.

The backtest scales its errors with :func:`seasonal_naive_errors` (MASE's in-sample scale); predict
scores a results document's track record and, on scheduled runs, the city's live accuracy with
:func:`score` and :func:`totals`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from batchcast.core.config import Profile
from batchcast.ml.features import lagged_target

SCORED_COLUMNS = ["abs_error", "inside", "scaled_error"]


def seasonal_naive_errors(series: pd.DataFrame, targets: pd.DataFrame, profile: Profile) -> np.ndarray:
    """|actual − the value one season back| for the ``targets`` rows of ``series`` (NaN where unknown)."""
    actual = series.loc[targets.index, "y"].to_numpy(dtype="float64", na_value=np.nan)
    return np.abs(actual - lagged_target(series, targets, profile.backtest.season, profile))


def naive_scales(series: pd.DataFrame, profile: Profile) -> dict[str, float]:
    """Per entity of ``series``: its in-sample seasonal-naive MAE, the scale MASE divides by.

    Entities with no usable scale (too short a history, or a constant series) are left out.
    """
    errors = seasonal_naive_errors(series, series[["entity_id", "ts"]], profile)
    per_entity = pd.Series(errors, index=series["entity_id"].astype(str).to_numpy()).groupby(level=0).mean()
    return {str(e): float(v) for e, v in per_entity.items() if np.isfinite(v) and v > 0}


def score(points: pd.DataFrame, scales: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The ``points`` (entity_id, p10, p50, p90, actual) that have an actual, each with its absolute
    error, whether the actual fell inside the P10–P90 band, and its error scaled by the entity's
    scale (NaN when ``scales`` has none for it)."""
    scored = points[points["actual"].notna() & points["p50"].notna()].copy()
    actual = scored["actual"].to_numpy(dtype="float64")
    scored["abs_error"] = np.abs(scored["p50"].to_numpy(dtype="float64") - actual)
    scored["inside"] = (scored["p10"].to_numpy(dtype="float64") <= actual) & (
        actual <= scored["p90"].to_numpy(dtype="float64")
    )
    scale = scored["entity_id"].astype(str).map(dict(scales or {})).to_numpy(dtype="float64", na_value=np.nan)
    scored["scaled_error"] = scored["abs_error"].to_numpy() / scale
    return scored


def totals(scored: pd.DataFrame) -> dict[str, float | int]:
    """Sums of scored points that add up across shards and days (the fields of ``metrics.LiveScore``)."""
    scaled = scored["scaled_error"].to_numpy(dtype="float64")
    return {
        "points": len(scored),
        "abs_error": float(scored["abs_error"].sum()),
        "scaled_error": float(scaled[np.isfinite(scaled)].sum()),
        "scaled_points": int(np.isfinite(scaled).sum()),
        "covered": int(scored["inside"].sum()),
    }
