"""How forecasts did against the actuals that arrived later: the one place scoring lives.

The backtest scales its errors with :func:`seasonal_naive_errors` (MASE's in-sample scale); predict
scores a results document's track record and, on scheduled runs, the city's live accuracy with
:func:`score` and :func:`totals`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from batchcast.core.config import Profile
from batchcast.ml.features import lagged_target


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


@dataclass(frozen=True)
class Scored:
    """Points that have an actual: each one's absolute error, whether the actual fell inside the
    P10–P90 band, and its error scaled by its entity's scale (NaN when it has none)."""

    abs_error: np.ndarray
    inside: np.ndarray
    scaled_error: np.ndarray


def score_points(
    p10: ArrayLike, p50: ArrayLike, p90: ArrayLike, actual: ArrayLike, scale: ArrayLike | None = None
) -> Scored:
    """Score forecast points against their actuals (None or NaN: not arrived, left out).

    Plain arrays, so a results document's few dozen periods score without a DataFrame's overhead."""
    low, median, high, value = (np.asarray(v, dtype="float64") for v in (p10, p50, p90, actual))
    scales = np.full(len(value), np.nan) if scale is None else np.asarray(scale, dtype="float64")
    known = np.isfinite(value) & np.isfinite(median)
    error = np.abs(median[known] - value[known])
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = error / scales[known]
    return Scored(error, (low[known] <= value[known]) & (value[known] <= high[known]), scaled)


def score(points: pd.DataFrame, scales: Mapping[str, float] | None = None) -> Scored:
    """Score ``points`` (entity_id, p10, p50, p90, actual), each scaled by its entity's entry in
    ``scales``."""
    scale = points["entity_id"].astype(str).map(dict(scales or {})).to_numpy(dtype="float64", na_value=np.nan)
    columns = (points[c].to_numpy(dtype="float64", na_value=np.nan) for c in ("p10", "p50", "p90", "actual"))
    return score_points(*columns, scale)


def totals(scored: Scored) -> dict[str, float | int]:
    """Sums of scored points that add up across shards and days (the fields of ``metrics.LiveScore``)."""
    finite = np.isfinite(scored.scaled_error)
    return {
        "points": len(scored.abs_error),
        "abs_error": float(scored.abs_error.sum()),
        "scaled_error": float(scored.scaled_error[finite].sum()),
        "scaled_points": int(finite.sum()),
        "covered": int(scored.inside.sum()),
    }
