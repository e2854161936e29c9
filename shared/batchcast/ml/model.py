"""One global quantile model per (profile, city): a HistGradientBoostingRegressor per quantile.

The model learns ``y / scale`` from scaled lags, rolling statistics, calendar, holidays and
covariates, so a huge store and a small one share what they have in common. Its outer quantiles
carry conformal factors (:mod:`batchcast.ml.calibration`) learnt from the backtest folds, so the
P10–P90 band holds what it promises out of sample. Persistence goes through skops with an explicit
allowlist, never through pickle; the factors are plain numbers in the JSON metadata.
"""

from __future__ import annotations

import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from batchcast.core.config import Profile
from batchcast.ml.calibration import apply_factors
from batchcast.ml.features import (
    FEATURE_DTYPE,
    closed_mask,
    feature_names,
    from_periods,
    lookback,
    make_features,
    period_number,
    to_periods,
    with_future,
)

FORMAT = "batchcast-forecast-model/1"
RANDOM_STATE = 0
TARGET_LIMIT = 100.0  # |y / scale| beyond this is clipped in training: 100x the recent mean level

# Types skops does not trust by default that a fitted HistGradientBoostingRegressor needs. Anything
# else in a payload is refused before it is loaded. The first is the one current versions report;
# the rest are inert data classes older or newer skops versions may also report.
ALLOWED_TYPES = frozenset(
    {
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn._loss.loss.PinballLoss",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss._loss.CyPinballLoss",
        "numpy.random._generator.Generator",
        "numpy.random._pcg64.PCG64",
        "numpy.random.bit_generator.SeedSequence",
    }
)


def quantile_column(quantile: float) -> str:
    """The output column of a quantile: 0.1 -> ``p10``, 0.5 -> ``p50``, 0.025 -> ``p2.5``."""
    return f"p{quantile * 100:g}"


@dataclass
class ForecastModel:
    """Fitted estimators (one per quantile, ascending) and the facts needed to use them."""

    estimators: list[HistGradientBoostingRegressor]
    feature_names: list[str]
    quantiles: list[float]
    profile_name: str
    city: str
    training_rows: int
    trained_through: str  # ISO start of the last period with a known target the model saw
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable notes the caller adds
    # Conformal calibration: per quantile, its distance from the median is multiplied by this
    # (1 for the median); empty: not calibrated.
    band_factors: list[float] = field(default_factory=list)

    # -- training ---------------------------------------------------------------------------------

    @classmethod
    def fit(cls, series: pd.DataFrame, profile: Profile, city: str) -> ForecastModel:
        """Fit every quantile of the profile on the last ``training.window`` periods of ``series``."""
        return fit_models([training_set(series, profile, city)], profile, city)[0]

    # -- prediction -------------------------------------------------------------------------------

    def predict(
        self,
        series: pd.DataFrame,
        profile: Profile,
        city: str,
        target_start: datetime,
        target_end: datetime,
        entities: list[str] | None = None,
        *,
        future: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Quantile forecasts of every open period in [target_start, target_end) for each entity.

        ``series`` is read only up to ``target_start`` (what was known at the origin). ``future``
        (``entity_id, ts`` and known covariates: what :func:`batchcast.data.future.read` found) holds
        the values of covariates known in advance for the target periods; without it they are
        unknown. Entities default to every entity of the series; one without history still gets a forecast.
        Columns: ``entity_id, period_start, period_end`` and one per quantile (``p10, p50, p90``).
        """
        self._check(profile, city)
        starts = target_periods(profile, target_start, target_end)
        history = history_before(series, profile, period_number(target_start, profile), entities)
        history = with_future(history, future, profile)
        ids = _entity_list(series, entities)
        targets = pd.DataFrame({"entity_id": np.repeat(ids, len(starts)), "ts": np.tile(starts, len(ids))})
        frame = make_features(history, profile, city, targets)
        values = self.predict_values(frame, profile)
        end = np.datetime64(pd.Timestamp(target_end).to_datetime64(), "us")
        out = pd.DataFrame(
            {
                "entity_id": frame["entity_id"],
                "period_start": frame["ts"],
                "period_end": np.minimum(frame["ts"].to_numpy() + np.timedelta64(profile.period), end),
            }
        )
        for j, quantile in enumerate(self.quantiles):
            out[quantile_column(quantile)] = values[:, j]
        return out

    def predict_raw(self, frame: pd.DataFrame) -> np.ndarray:
        """The estimators' scaled predictions for feature rows, sorted per row, before calibration."""
        features = frame[self.feature_names].to_numpy(dtype=FEATURE_DTYPE)
        if len(features) == 0:
            return np.zeros((0, len(self.estimators)))
        with threadpool_limits(1, user_api="openmp"):  # a few rows: threads cost more than they save
            values = np.column_stack([estimator.predict(features) for estimator in self.estimators])
        return np.sort(values, axis=1)  # quantiles never cross

    def predict_scaled(self, frame: pd.DataFrame) -> np.ndarray:
        """Scaled, calibrated quantile predictions for feature rows (monotone per row)."""
        return apply_factors(self.predict_raw(frame), self.band_factors, self.quantiles)

    def predict_values(self, frame: pd.DataFrame, profile: Profile) -> np.ndarray:
        """Calibrated quantile forecasts (rows x quantiles) in the target's units for feature rows."""
        return to_units(self.predict_scaled(frame), frame["scale"].to_numpy(), profile)

    def _check(self, profile: Profile, city: str) -> None:
        if profile.name != self.profile_name or city != self.city:
            raise ValueError(
                f"model of {self.profile_name}/{self.city} cannot forecast {profile.name}/{city}"
            )
        if feature_names(profile) != self.feature_names:
            raise ValueError("the profile's features changed since this model was trained: retrain it")

    # -- persistence ------------------------------------------------------------------------------

    def dumps(self) -> bytes:
        """Serialise with skops: the estimators plus plain JSON metadata (no pickle)."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "estimators"}
        payload = {"format": FORMAT, "meta": json.dumps(meta), "estimators": list(self.estimators)}
        return sio.dumps(payload, compression=zipfile.ZIP_DEFLATED)

    @classmethod
    def loads(cls, data: bytes) -> ForecastModel:
        """Load a payload of :meth:`dumps`; refuse (ValueError) any type outside the allowlist."""
        try:
            untrusted = sio.get_untrusted_types(data=data)
        except Exception as error:  # a corrupt or foreign file: say so, whatever skops raised
            raise ValueError(f"not a batchcast model payload: {error}") from error
        refused = sorted(set(untrusted) - ALLOWED_TYPES)
        if refused:
            raise ValueError(f"model payload contains disallowed types: {', '.join(refused)}")
        payload = sio.loads(data, trusted=list(untrusted))
        return cls._from_payload(payload)

    @classmethod
    def _from_payload(cls, payload: object) -> ForecastModel:
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} payload")
        estimators = payload.get("estimators")
        if not isinstance(estimators, list) or not all(
            isinstance(e, HistGradientBoostingRegressor) for e in estimators
        ):
            raise ValueError("model payload's estimators are not HistGradientBoostingRegressors")
        meta = json.loads(payload.get("meta", "null"))
        expected = {f.name for f in fields(cls)} - {"estimators"}
        # Models saved before calibration existed have no factors: they load as uncalibrated.
        if not isinstance(meta, dict) or not expected - {"band_factors"} <= set(meta) <= expected:
            raise ValueError(
                f"model payload's metadata must have exactly: {', '.join(sorted(expected))} "
                "(band_factors may be missing)"
            )
        if len(estimators) != len(meta["quantiles"]):
            raise ValueError("model payload has a different number of estimators and quantiles")
        factors = meta.get("band_factors", [])
        if not isinstance(factors, list) or len(factors) not in (0, len(estimators)):
            raise ValueError("model payload's band_factors do not match its quantiles")
        if not all(isinstance(f, int | float) and np.isfinite(f) for f in factors):
            raise ValueError("model payload's band_factors must be finite numbers")
        return cls(estimators=estimators, **meta)


def to_units(scaled: np.ndarray, scale: np.ndarray, profile: Profile) -> np.ndarray:
    """Scaled quantile predictions (rows x quantiles) times each row's scale, clipped at 0 if it must be."""
    values = scaled * scale[:, None]
    if not profile.validation.allow_negative_target:
        values = np.maximum(values, 0.0)  # monotone before, monotone after
    return values


# -- fitting --------------------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """What one model is fitted on: float32 features, the scaled target, the last period seen."""

    features: np.ndarray
    target: np.ndarray
    trained_through: str


def training_set(series: pd.DataFrame, profile: Profile, city: str) -> TrainingSet:
    """The training rows of a series as matrices; ValueError when there is nothing to learn from."""
    rows = training_rows(series, profile, city)
    rows = rows[rows["y_scaled"].notna().to_numpy()]  # rows without a scale to learn relative to
    if rows.empty:
        raise ValueError(f"no training rows for {profile.name}/{city}: no known target with history")
    features = rows[feature_names(profile)].to_numpy(dtype=FEATURE_DTYPE)
    # A feature with no value at all (a covariate the uploads lack) cannot be split on anyway, and
    # scikit-learn's binning fails on an all-NaN column: make it a harmless constant.
    empty = np.isnan(features).all(axis=0)
    if empty.any():
        features = features.copy()  # pandas hands out a read-only view
        features[:, empty] = 0.0
    # A last guard against degenerate scales (an entity with one trip in months): a few huge
    # targets in a leaf would drag its upper quantile up for every entity in that leaf.
    target = np.clip(rows["y_scaled"].to_numpy(), -TARGET_LIMIT, TARGET_LIMIT)
    return TrainingSet(features, target, pd.Timestamp(rows["ts"].max()).isoformat())


def fit_models(sets: list[TrainingSet], profile: Profile, city: str) -> list[ForecastModel]:
    """Fit one model per training set (the backtest's folds), all (set, quantile) fits in parallel."""
    quantiles = list(profile.training.quantiles)
    tasks = [(data.features, data.target, q) for data in sets for q in quantiles]
    estimators = _fit_parallel(tasks, profile)
    return [
        ForecastModel(
            estimators=estimators[i * len(quantiles) : (i + 1) * len(quantiles)],
            feature_names=feature_names(profile),
            quantiles=quantiles,
            profile_name=profile.name,
            city=city,
            training_rows=len(data.target),
            trained_through=data.trained_through,
        )
        for i, data in enumerate(sets)
    ]


def _fit_parallel(
    tasks: list[tuple[np.ndarray, np.ndarray, float]], profile: Profile
) -> list[HistGradientBoostingRegressor]:
    """Fit quantile regressors concurrently, one per core, each on a single OpenMP thread.

    Measured on 2 vCPUs: OpenMP inside one fit synchronises thousands of times per fit and, on a
    shared host, a briefly descheduled vCPU stalls every barrier (single fits took 2-8x longer at
    random). Whole fits side by side are as fast on average, steady, and bit-for-bit deterministic.
    """

    def fit_one(task: tuple[np.ndarray, np.ndarray, float]) -> HistGradientBoostingRegressor:
        features, target, quantile = task
        with threadpool_limits(1, user_api="openmp"):  # per thread: OpenMP settings are thread-local
            return _estimator(profile, quantile).fit(features, target)

    workers = min(len(tasks), _cores())
    if workers <= 1:
        return [fit_one(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batchcast-fit") as pool:
        return list(pool.map(fit_one, tasks))


def _cores() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# -- helpers --------------------------------------------------------------------------------------


def _estimator(profile: Profile, quantile: float) -> HistGradientBoostingRegressor:
    """One quantile regressor; no early stopping and a fixed seed, so fitting is deterministic."""
    return HistGradientBoostingRegressor(
        loss="quantile",
        quantile=quantile,
        max_iter=profile.training.max_iter,
        learning_rate=profile.training.learning_rate,
        max_leaf_nodes=profile.training.max_leaf_nodes,
        early_stopping=False,
        random_state=RANDOM_STATE,
    )


def training_rows(series: pd.DataFrame, profile: Profile, city: str) -> pd.DataFrame:
    """Feature rows of the last ``training.window`` periods with a known target, open hours only;
    a share of the known covariates hidden, as periods nobody uploads future values for are."""
    recent, targets = training_targets(series, profile)
    return make_features(recent, profile, city, targets, hide_known=True)


def training_targets(series: pd.DataFrame, profile: Profile) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The recent part of the series that training reads, and the (entity_id, ts) rows it trains on.

    Training rows: the last ``training.window`` periods up to the last known target, with a known
    target, outside closed hours.
    """
    periods = to_periods(series["ts"], profile)
    known = series["y"].notna().to_numpy()
    if not known.any():
        return series.iloc[:0], series.iloc[:0][["entity_id", "ts"]]
    first = periods[known].max() - profile.training.window + 1
    # Predict reads `lookback` periods before its target; training rows get as much, so their
    # features and scale are computed as a forecast's would be. Older history would only cost time.
    needed = periods >= first - lookback(profile)
    recent, recent_periods = series[needed], periods[needed]
    wanted = (recent_periods >= first) & known[needed]
    wanted &= ~closed_mask(from_periods(recent_periods, profile), profile)
    return recent, recent.loc[wanted, ["entity_id", "ts"]]


def target_periods(profile: Profile, target_start: datetime, target_end: datetime) -> np.ndarray:
    """Starts of the periods in [target_start, target_end), closed hours left out."""
    for moment in (target_start, target_end):
        if getattr(moment, "tzinfo", None) is not None:
            raise ValueError("target_start and target_end must be naive local wall-clock times")
    first = period_number(target_start, profile)
    end = period_number(target_end, profile, ceil=True)
    starts = from_periods(np.arange(first, max(end, first + 1)), profile)
    return starts[~closed_mask(starts, profile)]


def history_before(
    series: pd.DataFrame, profile: Profile, origin: int, entities: list[str] | None = None
) -> pd.DataFrame:
    """The series as known at period ``origin``: before it, recent enough, the wanted entities."""
    periods = to_periods(series["ts"], profile)
    # The scale's fallback (the entity's mean |y|) looks at up to a training window of history.
    keep = (periods < origin) & (periods >= origin - lookback(profile) - profile.training.window)
    if entities is not None:
        keep &= series["entity_id"].astype(str).isin(entities).to_numpy()
    return series[keep]


def _entity_list(series: pd.DataFrame, entities: list[str] | None) -> np.ndarray:
    """The entities to forecast, sorted: the requested ones, or every one in the series."""
    if entities is not None:
        return np.array(sorted({str(e) for e in entities}), dtype=object)
    return np.array(sorted(pd.unique(series["entity_id"].astype(str))), dtype=object)
