"""Declarative features for a global direct forecaster, in the spirit of Nixtla's mlforecast.

A *series* frame is a regular grid (one row per entity and period) of the target ``y`` and the
covariates. Features for a target period ``ts`` only look at data up to ``ts - min(lags)``: every lag
is at least the horizon, so a forecast made at the origin never needs a value it cannot know. The
one exception is what is known in advance: the calendar, holidays and the covariates a profile
declares ``timing = "known"`` (a weather forecast, a planned promo or closure), which are taken at
the target period itself (feature ``known_<name>``; a ``past`` covariate is ``cov_<name>``, as of the
origin). In training those are the values the period actually had; when predicting they come from
future-values uploads (:func:`with_future`). Where none was uploaded the value is unknown (NaN), and
never the last known value carried forward: a Sunday closure carried into Monday would forecast
Monday closed. So that the model knows what to do then, training hides a fixed share
(:data:`KNOWN_HIDDEN_SHARE`) of each known covariate's values, the same rows whatever the fold.

Everything is vectorised over one flat array: the entities' blocks lie end to end, each preceded by
``pad`` empty (NaN) periods, so a plain shift or rolling window never reaches into the previous
entity's data. No Python loop runs over entities or rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

from batchcast.core.config import Profile

# Training hides this share of each known covariate's values, so the model learns to forecast
# without them (from calendar, holidays and lags) for periods nobody uploaded future values for.
KNOWN_HIDDEN_SHARE = 0.2
SCALE_EPSILON = 1e-3  # floor of the per-entity scale: an all-zero history must not divide by zero
HOLIDAY_RANGE = 7  # days to the next / since the last holiday, clipped: further away is "far"
FEATURE_DTYPE = np.float32


# -- time as integer periods ----------------------------------------------------------------------


def _unit(profile: Profile) -> str:
    return "D" if profile.frequency == "daily" else "h"


def to_periods(stamps: pd.Series | np.ndarray | pd.DatetimeIndex, profile: Profile) -> np.ndarray:
    """Naive timestamps as integer period numbers since the epoch (floored to the period)."""
    values = np.asarray(pd.to_datetime(stamps), dtype="datetime64[us]")
    return values.astype(f"datetime64[{_unit(profile)}]").astype(np.int64)


def from_periods(periods: np.ndarray, profile: Profile) -> np.ndarray:
    """Integer period numbers back to ``datetime64[us]`` period starts."""
    return periods.astype(f"datetime64[{_unit(profile)}]").astype("datetime64[us]")


def period_number(moment: datetime, profile: Profile, ceil: bool = False) -> int:
    """One naive datetime as a period number (floored, or ceiled for exclusive ends)."""
    stamp = np.datetime64(pd.Timestamp(moment).to_datetime64(), "us")
    number = int(stamp.astype(f"datetime64[{_unit(profile)}]").astype(np.int64))
    if ceil and from_periods(np.array([number]), profile)[0] < stamp:
        number += 1
    return number


def closed_mask(stamps: np.ndarray, profile: Profile) -> np.ndarray:
    """True where a period falls in the profile's closed hours (hourly profiles only)."""
    closed = profile.horizon.closed_hours
    if profile.frequency != "hourly" or closed is None:
        return np.zeros(len(stamps), dtype=bool)
    hours = pd.DatetimeIndex(stamps).hour.to_numpy()
    start, end = closed
    # A range like (22, 6) wraps around midnight.
    return (hours >= start) & (hours < end) if start <= end else (hours >= start) | (hours < end)


# -- series ---------------------------------------------------------------------------------------


def to_series(observations: pd.DataFrame, profile: Profile, until: datetime | None = None) -> pd.DataFrame:
    """Observations of one city as a regular per-entity grid: ``entity_id, ts, y`` and the covariates.

    Each entity's grid runs from its first observation to its last one, or up to (not including)
    ``until`` if that is later. Periods without a row get ``y`` per ``profile.features.fill_missing``
    and NaN covariates. Duplicate (entity, period) rows: the last one wins.
    """
    covariates = [c for c in profile.model_covariates if c in observations.columns]
    columns = ["entity_id", "ts", "y", *covariates]
    if observations.empty:
        empty = {c: pd.Series(dtype=float) for c in columns}
        empty["entity_id"] = pd.Series(dtype=str)
        empty["ts"] = pd.Series(dtype="datetime64[us]")
        return pd.DataFrame(empty)

    names, (codes,) = _encode(observations[profile.entity_key])
    periods = to_periods(observations[profile.time_column], profile)
    order = np.lexsort((periods, codes))
    codes, periods = codes[order], periods[order]
    keep = np.ones(len(order), dtype=bool)
    keep[:-1] = (codes[1:] != codes[:-1]) | (periods[1:] != periods[:-1])  # last duplicate wins
    order, codes, periods = order[keep], codes[keep], periods[keep]

    first = np.full(len(names), np.iinfo(np.int64).max)
    last = np.full(len(names), np.iinfo(np.int64).min)
    np.minimum.at(first, codes, periods)
    np.maximum.at(last, codes, periods)
    end = last + 1 if until is None else np.maximum(last + 1, period_number(until, profile, ceil=True))
    lengths = end - first
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(lengths.sum())

    grid_codes = np.repeat(np.arange(len(names)), lengths)
    grid_periods = np.arange(total) - np.repeat(starts, lengths) + np.repeat(first, lengths)
    index = starts[codes] + periods - first[codes]

    fill = 0.0 if profile.features.fill_missing == "zero" else np.nan
    y = np.full(total, fill)
    y[index] = _as_float(observations[profile.target])[order]
    out = {"entity_id": names[grid_codes], "ts": from_periods(grid_periods, profile), "y": y}
    for name in covariates:
        values = np.full(total, np.nan)
        values[index] = _as_float(observations[name])[order]
        out[name] = values
    return pd.DataFrame(out, columns=columns)


def _encode(*columns: pd.Series) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted unique entity names (as ``str``) over all columns, and each column's codes into them."""
    joined = pd.concat([c.astype(str) for c in columns], ignore_index=True)
    codes, names = pd.factorize(joined, sort=True)  # hashing, then sorting only the unique names
    bounds = np.cumsum([len(c) for c in columns])[:-1]
    return np.asarray(names, dtype=object), np.split(codes.astype(np.int64), bounds)


def _as_float(column: pd.Series) -> np.ndarray:
    """A numeric or (nullable) boolean column as float64, missing values as NaN."""
    return column.to_numpy(dtype="float64", na_value=np.nan)


# -- feature definitions --------------------------------------------------------------------------


def feature_names(profile: Profile) -> list[str]:
    """The model's feature columns, in order; they depend on the profile only, never on the data."""
    spec = profile.features
    names = [f"lag_{k}" for k in spec.lags]
    names += [f"roll{r.window}_{stat}" for r in spec.rolling for stat in r.stats]
    names += list(spec.calendar)
    if spec.holidays:
        names += ["is_holiday", "days_to_holiday", "days_since_holiday"]
    names += [covariate_feature(name, c.timing) for name, c in profile.model_covariates.items()]
    return [*names, "log_scale"]


def covariate_feature(name: str, timing: str) -> str:
    """The feature column of a covariate: ``known_<name>`` (at the target) or ``cov_<name>`` (past)."""
    return f"known_{name}" if timing == "known" else f"cov_{name}"


def lookback(profile: Profile) -> int:
    """How many periods before a target period a forecast reads; predict, the sharding of predict
    requests and training all read this much history before the periods they forecast or fit.

    The features reach back to the furthest lag, and to the start of the rolling and scale windows,
    which end ``min(lags)`` periods back (:func:`_reach`). Beyond that comes one more scale window:
    when the latest one is empty or all zero, the scale falls back to the mean |y| of the history
    read (see :func:`_scale`), so a store closed for a few weeks keeps its usual size.
    """
    return _reach(profile) + profile.features.scale_window


def history_start(profile: Profile, target_start: datetime) -> datetime:
    """The first period a forecast for ``target_start`` reads: :func:`lookback` periods before it."""
    return target_start - profile.period * lookback(profile)


def _reach(profile: Profile) -> int:
    """How many periods before a target period its lag, rolling and scale features reach."""
    spec = profile.features
    origin = min(spec.lags)
    windows = [r.window for r in spec.rolling] + [spec.scale_window]
    return max(max(spec.lags), origin + max(windows) - 1)


# -- the padded flat grid -------------------------------------------------------------------------


@dataclass
class _Grid:
    """Entities' blocks end to end, each after ``pad`` NaN periods; ``rows`` are the target rows."""

    y: np.ndarray  # float64, NaN where unknown (and in the padding)
    covariates: dict[str, np.ndarray]
    rows: np.ndarray  # flat index of each target row
    block_start: np.ndarray  # per target row: flat index where its entity's block (with padding) starts

    def at(self, values: np.ndarray, back: int) -> np.ndarray:
        """``values`` ``back`` periods before each target row (NaN before the entity's data)."""
        return values[self.rows - back]


def _build_grid(
    series: pd.DataFrame,
    series_codes: np.ndarray,
    target_codes: np.ndarray,
    target_periods: np.ndarray,
    entities: int,
    pad: int,
    profile: Profile,
) -> _Grid:
    """Lay the series on the padded grid spanning every entity's history and targets."""
    series_periods = to_periods(series["ts"], profile)
    lo = np.full(entities, np.iinfo(np.int64).max)
    hi = np.full(entities, np.iinfo(np.int64).min)
    for codes, periods in ((series_codes, series_periods), (target_codes, target_periods)):
        np.minimum.at(lo, codes, periods)
        np.maximum.at(hi, codes, periods)
    lengths = hi - lo + 1 + pad  # every name occurs in the series or the targets
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(lengths.sum())

    def place(codes: np.ndarray, periods: np.ndarray) -> np.ndarray:
        return starts[codes] + pad + periods - lo[codes]

    series_index = place(series_codes, series_periods)
    y = np.full(total, np.nan)
    y[series_index] = series["y"].to_numpy(dtype="float64", na_value=np.nan)
    covariates = {}
    for name in profile.model_covariates:
        if name in series.columns:
            values = np.full(total, np.nan)
            values[series_index] = series[name].to_numpy(dtype="float64", na_value=np.nan)
            covariates[name] = values
    return _Grid(y, covariates, place(target_codes, target_periods), starts[target_codes])


def _rolling(values: np.ndarray, window: int, stat: str) -> np.ndarray:
    """A trailing rolling statistic over the flat grid; NaNs (gaps, padding) are skipped."""
    rolling = pd.Series(values).rolling(window, min_periods=1)
    return getattr(rolling, stat)().to_numpy()


# -- features -------------------------------------------------------------------------------------


def make_features(
    series: pd.DataFrame,
    profile: Profile,
    city: str,
    targets: pd.DataFrame | None = None,
    *,
    hide_known: bool = False,
) -> pd.DataFrame:
    """Feature rows for target periods: ``entity_id, ts, scale``, the features (float32), ``y_scaled``.

    ``targets=None`` makes one row per series row (training). Otherwise ``targets`` (``entity_id, ts``)
    names the periods to forecast, which may lie beyond the series; their lags, rolling statistics,
    scale and past covariates come from ``series``, and so do known covariates, from the series'
    rows at the target periods (:func:`with_future` adds them). ``hide_known`` (training) hides
    :data:`KNOWN_HIDDEN_SHARE` of the known covariates' values. ``y_scaled`` is ``y / scale``, NaN
    where ``y`` is unknown or the entity has no nonzero history to scale by (such rows are not
    trained on); predictions of it are multiplied back by ``scale``.
    """
    if targets is None:
        targets = series[["entity_id", "ts"]]
    names, (series_codes, target_codes) = _encode(series["entity_id"], targets["entity_id"])
    target_ids = names[target_codes]
    target_periods = to_periods(targets["ts"], profile)
    stamps = from_periods(target_periods, profile)
    columns = _Columns(len(targets), feature_names(profile))
    if len(targets) == 0:
        return _assemble(target_ids, stamps, np.ones(0), columns, np.zeros(0))

    grid = _build_grid(
        series, series_codes, target_codes, target_periods, len(names), _reach(profile), profile
    )
    origin = min(profile.features.lags)
    scale, informative = _scale(grid, profile.features.scale_window, origin)
    _level_features(grid, profile, origin, scale, columns)
    columns.update(calendar_features(stamps, profile, city))
    for name, covariate in grid.covariates.items():  # absent covariates stay NaN
        if profile.covariates[name].timing == "past":
            columns[covariate_feature(name, "past")] = grid.at(covariate, origin)
            continue
        values = grid.at(covariate, 0)
        if hide_known:
            values = np.where(_hidden(names, target_codes, target_periods, name), np.nan, values)
        columns[covariate_feature(name, "known")] = values
    columns["log_scale"] = np.log1p(scale)
    # Without a real scale y / scale can be y / 1e-3: such rows would swamp a quantile's leaves.
    y_scaled = np.where(informative, grid.y[grid.rows] / scale, np.nan)
    return _assemble(target_ids, stamps, scale, columns, y_scaled)


def _hidden(names: np.ndarray, codes: np.ndarray, periods: np.ndarray, covariate: str) -> np.ndarray:
    """A fixed pseudo-random share of (entity, period) rows per covariate: a hash of the three, so
    the same rows are hidden in every fold and every process (no random state to carry)."""
    entity = pd.util.hash_array(np.asarray(names, dtype=object))[codes]
    salt = pd.util.hash_array(np.array([covariate], dtype=object))[0]
    mixed = _mix(entity ^ salt ^ _mix(periods.astype(np.uint64)))
    return mixed % np.uint64(1000) < np.uint64(round(KNOWN_HIDDEN_SHARE * 1000))


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads nearby integers over all 64 bits (uint64 arithmetic wraps)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def with_future(history: pd.DataFrame, future: pd.DataFrame | None, profile: Profile) -> pd.DataFrame:
    """``history`` (a series up to the origin) plus rows for target periods after it holding the
    future values of known covariates (``future``: ``entity_id, ts`` and covariate columns, NaN
    where unknown), with ``y`` unknown.

    Features then read those values at the target periods; periods without a row stay unknown.
    """
    if future is None or future.empty:
        return history
    known = [n for n, c in profile.model_covariates.items() if c.timing == "known" and n in future]
    if not known:
        return history
    rows = {
        "entity_id": future["entity_id"].astype(str).to_numpy(dtype=object),
        "ts": np.asarray(pd.to_datetime(future["ts"]), dtype="datetime64[us]"),
        "y": np.nan,
    }
    rows |= {name: _as_float(future[name]) for name in known}
    return pd.concat([history, pd.DataFrame(rows)], ignore_index=True)


class _Columns:
    """The float32 feature matrix, filled one named column at a time so no float64 copies pile up."""

    def __init__(self, rows: int, names: list[str]) -> None:
        self.names = names
        self.matrix = np.full((rows, len(names)), np.nan, dtype=FEATURE_DTYPE)
        self._index = {name: j for j, name in enumerate(names)}

    def __setitem__(self, name: str, values: np.ndarray) -> None:
        self.matrix[:, self._index[name]] = values

    def update(self, values: dict[str, np.ndarray]) -> None:
        for name, column in values.items():
            self[name] = column


def _scale(grid: _Grid, window: int, origin: int) -> tuple[np.ndarray, np.ndarray]:
    """Per target row: mean |y| over ``window`` periods ending ``origin`` periods back.

    An empty or all-zero window falls back to the entity's mean |y| over all its history before
    that, then to 1 (no history at all); the floor is ``SCALE_EPSILON``. Also returns whether the
    scale is informative (some nonzero history): only then is ``y / scale`` a fair training target.
    """
    magnitude = np.abs(grid.y)
    rolling = grid.at(_rolling(magnitude, window, "mean"), origin)
    # Expanding mean per entity from cumulative sums, reset at each block's start.
    sums = np.cumsum(np.nan_to_num(magnitude))
    counts = np.cumsum(~np.isnan(magnitude))
    before = grid.rows - origin
    history = counts[before] - counts[grid.block_start]
    expanding = (sums[before] - sums[grid.block_start]) / np.maximum(history, 1)
    fallback = np.where(expanding > 0, expanding, np.where(history > 0, SCALE_EPSILON, 1.0))
    scale = np.where(rolling > 0, rolling, fallback)
    return np.maximum(scale, SCALE_EPSILON), expanding > 0


def _level_features(grid: _Grid, profile: Profile, origin: int, scale: np.ndarray, columns: _Columns) -> None:
    """Lags and rolling statistics of y, divided by the scale so every entity looks alike."""
    for k in profile.features.lags:
        columns[f"lag_{k}"] = grid.at(grid.y, k) / scale
    for rolling in profile.features.rolling:
        for stat in rolling.stats:
            values = _rolling(grid.y, rolling.window, stat)
            columns[f"roll{rolling.window}_{stat}"] = grid.at(values, origin) / scale


def calendar_features(stamps: np.ndarray, profile: Profile, city: str) -> dict[str, np.ndarray]:
    """Calendar and holiday features of the target periods themselves (known in advance)."""
    index = pd.DatetimeIndex(stamps)
    values = {
        "dayofweek": lambda: index.day_of_week,
        "month": lambda: index.month,
        "dayofyear": lambda: index.day_of_year,
        "hour": lambda: index.hour,
        "is_weekend": lambda: index.day_of_week >= 5,
    }
    features = {name: np.asarray(values[name](), dtype=float) for name in profile.features.calendar}
    if profile.features.holidays:
        features.update(holiday_features(stamps, profile, city))
    return features


def holiday_features(stamps: np.ndarray, profile: Profile, city: str) -> dict[str, np.ndarray]:
    """``is_holiday`` of each period's local date, and days to the next / since the last holiday."""
    if city not in profile.cities:
        raise ValueError(f"city {city!r} is not in profile {profile.name!r}")
    days = np.asarray(stamps, dtype="datetime64[D]").astype(np.int64)
    if len(days) == 0:
        return {name: np.zeros(0) for name in ("is_holiday", "days_to_holiday", "days_since_holiday")}
    place = profile.cities[city]
    years = tuple(range(_year(days.min()) - 1, _year(days.max()) + 2))
    calendar = holiday_days(place.country, place.subdivision, years)
    after = np.searchsorted(calendar, days, side="left")  # first holiday on or after the day
    next_day = calendar[np.minimum(after, len(calendar) - 1)] if len(calendar) else days + HOLIDAY_RANGE
    found = np.searchsorted(calendar, days, side="right") - 1  # last holiday on or before the day
    last_day = calendar[np.maximum(found, 0)] if len(calendar) else days - HOLIDAY_RANGE
    to_next = np.where(after < len(calendar), next_day - days, HOLIDAY_RANGE)
    since_last = np.where(found >= 0, days - last_day, HOLIDAY_RANGE)
    return {
        "is_holiday": (to_next == 0).astype(float),
        "days_to_holiday": np.clip(to_next, 0, HOLIDAY_RANGE).astype(float),
        "days_since_holiday": np.clip(since_last, 0, HOLIDAY_RANGE).astype(float),
    }


def _year(day: np.int64) -> int:
    return int(np.datetime64(int(day), "D").astype("datetime64[Y]").astype(int)) + 1970


@lru_cache(maxsize=64)
def holiday_days(country: str, subdivision: str | None, years: tuple[int, ...]) -> np.ndarray:
    """Sorted public holidays (days since the epoch) of a country / subdivision, cached per years."""
    try:
        calendar = holidays.country_holidays(country, subdiv=subdivision, years=years)
    except NotImplementedError as error:
        raise ValueError(f"no holiday calendar for {country}/{subdivision}: {error}") from error
    days = np.array(sorted(calendar.keys()), dtype="datetime64[D]").astype(np.int64)
    days.flags.writeable = False  # shared by every caller through the cache
    return days


def _assemble(
    ids: np.ndarray, stamps: np.ndarray, scale: np.ndarray, columns: _Columns, y_scaled: np.ndarray
) -> pd.DataFrame:
    """The output frame: identifiers, scale, float32 features in ``feature_names`` order, y_scaled."""
    frame = pd.DataFrame(columns.matrix, columns=columns.names, copy=False)
    frame.insert(0, "entity_id", pd.array(ids, dtype=str))
    frame.insert(1, "ts", stamps)
    frame.insert(2, "scale", scale)
    frame["y_scaled"] = y_scaled
    return frame


def lagged_target(series: pd.DataFrame, targets: pd.DataFrame, back: int, profile: Profile) -> np.ndarray:
    """``y`` of ``series`` ``back`` periods before each target row (NaN where unknown).

    Used for the seasonal-naive baseline (``back`` = the season).
    """
    shifted = pd.DataFrame(
        {
            "entity_id": targets["entity_id"].astype(str).to_numpy(dtype=object),
            "period": to_periods(targets["ts"], profile) - back,
        }
    )
    known = pd.DataFrame(
        {
            "entity_id": series["entity_id"].astype(str).to_numpy(dtype=object),
            "period": to_periods(series["ts"], profile),
            "y": series["y"].to_numpy(dtype="float64", na_value=np.nan),
        }
    ).drop_duplicates(["entity_id", "period"], keep="last")
    merged = shifted.merge(known, on=["entity_id", "period"], how="left", sort=False)
    return merged["y"].to_numpy()
