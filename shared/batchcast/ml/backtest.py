"""Rolling-origin backtest: refit before each origin, forecast its window as operation would.

Fold ``i`` (1 = earliest) has its origin ``(folds - i + 1) * window`` periods before the end of the
series, so the last fold ends at the last observed period. Each fold fits every quantile on data
before its origin (the same training-window rule as operation) and forecasts each period of its
window from lags >= the horizon, i.e. from data one horizon earlier, exactly like the scheduled
predict runs between two retrains. Closed hours are never scored.

The folds' out-of-sample forecasts also calibrate the band (:mod:`batchcast.ml.calibration`): all
folds together give the factors of the model trained on the whole series, and each fold's scored
band is calibrated on the *other* folds only (leave one fold out), so the reported coverage is
held out, never the calibration set scoring itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from batchcast.core.config import Profile
from batchcast.ml.accuracy import seasonal_naive_errors
from batchcast.ml.calibration import apply_factors, conformal_factors
from batchcast.ml.features import closed_mask, from_periods, lagged_target, make_features, to_periods
from batchcast.ml.model import (
    ForecastModel,
    TrainingSet,
    fit_models,
    history_before,
    quantile_column,
    to_units,
    training_set,
    training_targets,
)

POINT_COLUMNS = ["fold", "entity_id", "period_start", "actual", "p10", "p50", "p90", "seasonal_naive"]


@dataclass
class BacktestResult:
    """Metrics (JSON-serialisable), the scored points (the fields of ``schemas/backtest.avsc``) and
    the conformal band factors of all folds (empty when too few points) for a model of the whole
    series.
    """

    metrics: dict
    points: pd.DataFrame
    band_factors: list[float]


@dataclass
class _Fold:
    number: int
    origin: int  # first forecast period
    points: pd.DataFrame  # POINT_COLUMNS (the band calibrated on the other folds) + raw_low, raw_high
    naive_scale: float  # in-sample seasonal-naive MAE over the fold's training rows
    training_rows: int
    raw: np.ndarray  # the fold model's scaled quantile predictions (points x quantiles)
    scale: np.ndarray  # per point: the scale that turns scaled predictions into the target's units
    y_scaled: np.ndarray  # actual / scale (NaN where the entity has no scale to learn relative to)


def backtest(series: pd.DataFrame, profile: Profile, city: str) -> BacktestResult:
    """Run ``profile.backtest.folds`` rolling origins of ``profile.backtest.window`` periods each.

    Folds without training data or without scoreable points are skipped (listed in the metrics).
    The point columns p10/p50/p90 hold the lowest, median and highest of the profile's quantiles.
    """
    result, _ = _backtest(series, profile, city, [])
    return result


def fit_and_backtest(
    series: pd.DataFrame, profile: Profile, city: str
) -> tuple[ForecastModel, BacktestResult]:
    """``ForecastModel.fit`` and :func:`backtest` of one series with all their fits sharing the cores.

    Same results as calling both (the model calibrated with the backtest's factors); faster,
    because (1 + folds) x quantiles fits balance better over the cores than the model's fits and
    the folds' fits one after the other.
    """
    result, (model,) = _backtest(series, profile, city, [training_set(series, profile, city)])
    model.band_factors = result.band_factors
    return model, result


def _backtest(
    series: pd.DataFrame, profile: Profile, city: str, extra: list[TrainingSet]
) -> tuple[BacktestResult, list[ForecastModel]]:
    """The backtest, fitting the ``extra`` training sets alongside the folds' (returned first)."""
    spec = profile.backtest
    periods = to_periods(series["ts"], profile)
    known = series["y"].notna().to_numpy()
    end = int(periods[known].max()) + 1 if known.any() else 0  # just past the last observed period
    runnable: dict[int, tuple[int, TrainingSet]] = {}
    for number in range(1, spec.folds + 1):
        origin = end - (spec.folds - number + 1) * spec.window
        data = _training_data(series, periods, profile, city, origin) if known.any() else None
        if data is not None:
            runnable[number] = (origin, data)
    skipped = [n for n in range(1, spec.folds + 1) if n not in runnable]
    models = fit_models([*extra, *(data for _, data in runnable.values())], profile, city)
    extra_models, fold_models = models[: len(extra)], models[len(extra) :]
    folds = [
        _score_fold(series, periods, profile, city, number, origin, model)
        for (number, (origin, _)), model in zip(runnable.items(), fold_models, strict=True)
    ]
    factors, calibration = _calibrate(folds, profile)
    points = pd.concat([f.points for f in folds], ignore_index=True) if folds else _empty_points()
    metrics = _metrics(folds, skipped, profile) | {"calibration": calibration}
    result = BacktestResult(metrics=metrics, points=points[POINT_COLUMNS], band_factors=factors)
    return result, extra_models


def _calibrate(folds: list[_Fold], profile: Profile) -> tuple[list[float], dict]:
    """Fill each fold's band, calibrated on the other folds; the factors of all folds; a summary."""
    quantiles = profile.training.quantiles

    def factors_of(chosen: list[_Fold]) -> list[float] | None:
        if not chosen:
            return None
        values = np.vstack([f.raw for f in chosen])
        return conformal_factors(values, np.concatenate([f.y_scaled for f in chosen]), quantiles)

    held_out = []
    for fold in folds:
        factors = factors_of([f for f in folds if f is not fold])
        _band(fold, factors or [], profile)
        if factors is not None:
            held_out.append(fold.number)
    factors = factors_of(folds) or []
    summary = {
        "method": "conformal (CQR-m): per quantile, its distance from the median times a factor",
        "points": int(sum(np.isfinite(f.y_scaled).sum() for f in folds)),
        # Empty when the folds scored too few points to calibrate on: the band is the models' own.
        "factors": {quantile_column(q): f for q, f in zip(quantiles, factors, strict=False)},
        "held_out_folds": held_out,  # folds whose band (and coverage) is calibrated, not raw
    }
    return factors, summary


def _window(periods: np.ndarray, series: pd.DataFrame, profile: Profile, origin: int) -> np.ndarray:
    """The fold's scored rows: known targets in [origin, origin + window), open hours only."""
    in_window = (periods >= origin) & (periods < origin + profile.backtest.window)
    in_window &= series["y"].notna().to_numpy()
    return in_window & ~closed_mask(from_periods(periods, profile), profile)


def _training_data(
    series: pd.DataFrame, periods: np.ndarray, profile: Profile, city: str, origin: int
) -> TrainingSet | None:
    """The fold's training set; None when there is nothing to train on or nothing to score."""
    if not _window(periods, series, profile, origin).any():
        return None
    try:
        return training_set(series[periods < origin], profile, city)
    except ValueError:  # no known target with history before the origin
        return None


def _score_fold(
    series: pd.DataFrame,
    periods: np.ndarray,
    profile: Profile,
    city: str,
    number: int,
    origin: int,
    model: ForecastModel,
) -> _Fold:
    """Forecast the fold's window with its (uncalibrated) model next to the actuals.

    The band's columns are filled by :func:`_band` once the other folds' forecasts are known.
    """
    in_window = _window(periods, series, profile, origin)
    targets = series.loc[in_window, ["entity_id", "ts"]]
    # Features only look back >= the horizon, so the history up to the window's end is what the
    # scheduled runs inside the window would have seen.
    stop = origin + profile.backtest.window
    frame = make_features(history_before(series, profile, stop), profile, city, targets)
    raw = model.predict_raw(frame)
    points = pd.DataFrame(
        {
            "fold": number,
            "entity_id": frame["entity_id"].astype(str),
            "period_start": frame["ts"],
            "actual": series.loc[in_window, "y"].to_numpy(dtype="float64"),
            "seasonal_naive": lagged_target(series, targets, profile.backtest.season, profile),
        }
    )
    y_scaled = frame["y_scaled"].to_numpy(dtype="float64")
    recent, train_targets = training_targets(series[periods < origin], profile)
    naive_errors = seasonal_naive_errors(recent, train_targets, profile)
    naive_scale = float(np.nanmean(naive_errors)) if np.isfinite(naive_errors).any() else math.nan
    scale = frame["scale"].to_numpy(dtype="float64")
    return _Fold(number, origin, points, naive_scale, model.training_rows, raw, scale, y_scaled)


def _band(fold: _Fold, factors: list[float], profile: Profile) -> None:
    """Fill the fold's p10/p50/p90 (calibrated by ``factors``) and raw_low/raw_high (not)."""
    quantiles = profile.training.quantiles
    raw = to_units(fold.raw, fold.scale, profile)
    calibrated = to_units(apply_factors(fold.raw, factors, quantiles), fold.scale, profile)
    low, middle, high = 0, quantiles.index(0.5), len(quantiles) - 1
    fold.points = fold.points.assign(
        p10=calibrated[:, low],
        p50=calibrated[:, middle],
        p90=calibrated[:, high],
        raw_low=raw[:, low],
        raw_high=raw[:, high],
    )


def _empty_points() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "fold": pd.Series(dtype="int64"),
            "entity_id": pd.Series(dtype=str),
            "period_start": pd.Series(dtype="datetime64[us]"),
            **{
                c: pd.Series(dtype="float64")
                for c in ("actual", "p10", "p50", "p90", "seasonal_naive", "raw_low", "raw_high")
            },
        }
    )


# -- metrics --------------------------------------------------------------------------------------


def _metrics(folds: list[_Fold], skipped: list[int], profile: Profile) -> dict:
    """Overall and per-fold accuracy, JSON-serialisable (NaN becomes None)."""
    spec = profile.backtest
    quantiles = profile.training.quantiles
    per_fold = []
    for fold in folds:
        scores = _scores(fold.points, np.full(len(fold.points), fold.naive_scale))
        origin = pd.Timestamp(from_periods(np.array([fold.origin]), profile)[0]).isoformat()
        per_fold.append(
            {"fold": fold.number, "origin": origin, "training_rows": fold.training_rows, **scores}
        )
    if folds:
        points = pd.concat([f.points for f in folds], ignore_index=True)
        scales = np.concatenate([np.full(len(f.points), f.naive_scale) for f in folds])
        overall = _scores(points, scales)
    else:
        overall = _scores(_empty_points(), np.zeros(0))
    return {
        "folds": spec.folds,
        "window": spec.window,
        "season": spec.season,
        "interval": [quantiles[0], quantiles[-1]],
        "skipped_folds": skipped,
        "overall": overall,
        "per_fold": per_fold,
    }


def _scores(points: pd.DataFrame, naive_scales: np.ndarray) -> dict:
    """MAE, WAPE, MASE, seasonal-naive MAE/WAPE, P10–P90 coverage and counts of some points.

    MASE pools the folds: each error is divided by its own fold's in-sample seasonal-naive MAE.
    The naive baseline is scored on the points where the value one season back is known.
    ``coverage`` is the calibrated band's (held out), ``coverage_raw`` the model's own quantiles'.
    """
    actual = points["actual"].to_numpy(dtype="float64")
    error = np.abs(points["p50"].to_numpy(dtype="float64") - actual)
    naive = points["seasonal_naive"].to_numpy(dtype="float64", na_value=np.nan)
    has_naive = np.isfinite(naive)
    naive_error = np.abs(naive[has_naive] - actual[has_naive])
    inside = (points["p10"].to_numpy() <= actual) & (actual <= points["p90"].to_numpy())
    inside_raw = (points["raw_low"].to_numpy() <= actual) & (actual <= points["raw_high"].to_numpy())
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = error / naive_scales
    return {
        "mae": _mean(error),
        "wape": _ratio(error.sum(), np.abs(actual).sum()),
        "mase": _mean(scaled[np.isfinite(scaled)]),
        "naive_mae": _mean(naive_error),
        "naive_wape": _ratio(naive_error.sum(), np.abs(actual[has_naive]).sum()),
        "coverage": _mean(inside.astype(float)),
        "coverage_raw": _mean(inside_raw.astype(float)),
        "count": len(points),
        "naive_count": int(has_naive.sum()),
    }


def _mean(values: np.ndarray) -> float | None:
    return _number(values.mean()) if len(values) else None


def _ratio(numerator: float, denominator: float) -> float | None:
    return _number(numerator / denominator) if denominator > 0 else None


def _number(value: float) -> float | None:
    """A plain float for JSON; NaN and infinities become None."""
    value = float(value)
    return value if math.isfinite(value) else None
