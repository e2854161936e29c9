"""Conformal calibration of the quantile band, in the spirit of conformalized quantile regression.

Quantile regressors fitted in-sample make bands that are too narrow out of sample (or too wide,
when the recent past was calmer than what they learnt from). Conformalized quantile regression
(Romano et al., 2019, as in MAPIE; mlforecast's ``PredictionIntervals`` likewise calibrate on
cross-validation windows) fixes that with conformity scores of held-out points: here the backtest
folds' out-of-sample forecasts.

Each quantile ``q`` other than the median is calibrated on its own (each tail misses its share even
when errors are skewed), relative to the model's own spread: the score of a held-out point is how
far beyond the median its actual lies, in units of that quantile's distance from the median
(CQR-m). The calibrated quantile is ``median ± factor * distance``, where ``factor`` is the
finite-sample-corrected quantile of the scores. So a band that was 20 % too narrow everywhere
becomes 25 % wider everywhere, the model's view of which days or hours are uncertain is kept, and a
day the model pins at zero (a closed day: P10 = P50 = P90 = 0) keeps P10 = P50 = 0, where an
additive shift would lift its P10 above the zero it will certainly be (its P90 moves by at most the
factor times ``MIN_SPREAD``). The median is never moved.

Everything is in the model's scaled units (``y / scale``) and plain numpy; the factors are a list
of floats stored in the model's JSON metadata.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MEDIAN = 0.5
# The smallest distance from the median a score is measured in (scaled units: 2 % of an entity's
# recent mean level), so a band the model collapsed to a point can still widen.
MIN_SPREAD = 0.02


def conformal_factors(
    values: np.ndarray, actual: np.ndarray, quantiles: Sequence[float]
) -> list[float] | None:
    """Per quantile, the factor that calibrates it (1 for the median); None with too few points.

    ``values`` are held-out scaled quantile predictions (points x quantiles, ascending), ``actual``
    the scaled actuals; points with a NaN are left out. A quantile's factor is the score at rank
    ``(n + 1) p`` of the ``n`` sorted scores, interpolated between neighbours, where ``p`` is the
    share of points that must stay inside its side of the band (``q`` above, ``1 - q`` below): the
    finite-sample correction of split conformal prediction. (Rounding the rank up would guarantee
    at least ``p`` but over-cover by up to ``1 / (n + 1)`` per tail: 0.87 instead of 0.80 with 14
    points, as one series' folds give.) Fewer than ``1 / min(q, 1 - q) - 1`` points leave that
    rank outside the data: the band cannot be calibrated.
    """
    actual = np.asarray(actual, dtype="float64")
    values = np.asarray(values, dtype="float64").reshape(len(actual), len(quantiles))
    keep = np.isfinite(actual) & np.isfinite(values).all(axis=1)
    values, actual = values[keep], actual[keep]
    n = len(actual)
    median = values[:, list(quantiles).index(MEDIAN)]
    factors = []
    for j, quantile in enumerate(quantiles):
        if quantile == MEDIAN:
            factors.append(1.0)
            continue
        side = 1.0 if quantile > MEDIAN else -1.0
        inside = quantile if quantile > MEDIAN else 1 - quantile
        # The tolerance keeps float noise ((n + 1) * 0.9 = 8.999999999999998) from refusing a rank.
        if not 1 - 1e-9 <= (n + 1) * inside <= n + 1e-9:
            return None
        scores = side * (actual - median) / np.maximum(side * (values[:, j] - median), MIN_SPREAD)
        # numpy's "weibull" method is exactly the rank p (n + 1), linearly interpolated.
        factors.append(float(np.quantile(scores, inside, method="weibull")))
    return factors


def apply_factors(values: np.ndarray, factors: Sequence[float], quantiles: Sequence[float]) -> np.ndarray:
    """Scaled quantile predictions (rows x quantiles, ascending) calibrated by ``factors``.

    No factors: the values as they are. Quantiles stay monotone and the median where it was (a
    negative factor, from a model biased far to one side, stops that side at the median).
    """
    if len(factors) == 0 or len(values) == 0:
        return values
    middle = list(quantiles).index(MEDIAN)
    median = values[:, middle : middle + 1]
    side = np.sign(np.asarray(quantiles, dtype="float64") - MEDIAN)[None, :]
    spread = np.maximum(side * (values - median), MIN_SPREAD)
    moved = median + side * np.asarray(factors, dtype="float64")[None, :] * spread
    moved[:, :middle] = np.minimum(moved[:, :middle], median)
    moved[:, middle + 1 :] = np.maximum(moved[:, middle + 1 :], median)
    moved[:, middle] = median[:, 0]
    return np.sort(moved, axis=1)  # two quantiles on one side of the median may have crossed
