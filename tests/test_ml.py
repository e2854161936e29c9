"""The ml package: series grid, features, the global quantile model, persistence, the backtest and
the conformal calibration of its band."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from batchcast.core import schemas
from batchcast.core.config import Profile, parse_profile
from batchcast.core.schemas.frames import read_frame, write_frame
from batchcast.ml import (
    BacktestResult,
    ForecastModel,
    backtest,
    feature_names,
    fit_and_backtest,
    make_features,
    to_series,
)
from batchcast.ml.calibration import MIN_SPREAD, apply_factors, conformal_factors
from batchcast.ml.model import FORMAT
from batchcast.tools import synth

WEEKLY = np.array([1.0, 0.8, 0.9, 1.0, 1.3, 1.6, 0.4])  # Monday .. Sunday


# -- synthetic data -----------------------------------------------------------------------------


def retail_observations(
    entities: int = 20,
    days: int = 200,
    seed: int = 0,
    start: str = "2024-01-01",
    noise: float | np.ndarray = 0.08,
) -> pd.DataFrame:
    """Store-days with a clear weekly pattern, per-store levels over two orders of magnitude, promos.

    ``noise`` is the sigma of the log-normal noise: one for all days, or one per day.
    """
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D")
    level = rng.lognormal(6, 1.0, entities)
    promo = rng.random((entities, days)) < 0.2
    sales = level[:, None] * WEEKLY[dates.day_of_week][None, :] * (1 + 0.3 * promo)
    sales *= rng.lognormal(0, noise, (entities, days))
    frame = pd.DataFrame(
        {
            "store_id": np.repeat([f"S{i:03d}" for i in range(entities)], days),
            "city": "berlin",
            "date": np.tile(dates.to_numpy(), entities),
            "sales": sales.ravel(),
            "open": pd.array(np.ones(entities * days, dtype=bool), dtype="boolean"),
            "promo": pd.array(promo.ravel(), dtype="boolean"),
            "temp": rng.normal(12, 5, entities * days),
            "precipitation": rng.exponential(1.0, entities * days),
        }
    )
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # arrives unsorted


def bikeshare_observations(stations: int = 8, days: int = 21, seed: int = 0) -> pd.DataFrame:
    """Station-hours with commute peaks; no trips (and so no rows) in the closed hours 00-06."""
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2024-03-01", periods=days * 24, freq="h")
    peak = np.where((hours.hour >= 7) & (hours.hour < 10), 3.0, 0.0)
    peak -= np.where((hours.hour >= 16) & (hours.hour < 19), 3.0, 0.0)
    sign = np.where(np.arange(stations) % 2 == 0, 1.0, -1.0)[:, None]
    arrivals = rng.poisson(np.clip(2 + sign * peak, 0.2, None))
    departures = rng.poisson(np.clip(2 - sign * peak, 0.2, None))
    frame = pd.DataFrame(
        {
            "station_id": np.repeat([f"st{i}" for i in range(stations)], len(hours)),
            "city": "vancouver",
            "hour": np.tile(hours.to_numpy(), stations),
            "departures": departures.ravel(),
            "arrivals": arrivals.ravel(),
            "net_change": (arrivals - departures).ravel(),
            "temp": 8.0,
            "precipitation": 0.0,
        }
    )
    return frame[frame["hour"].dt.hour >= 6].reset_index(drop=True)


@pytest.fixture(scope="module")
def retail_series(retail: Profile) -> pd.DataFrame:
    return to_series(retail_observations(), retail)


@pytest.fixture(scope="module")
def retail_model(retail: Profile, retail_series: pd.DataFrame) -> ForecastModel:
    return ForecastModel.fit(retail_series, retail, "berlin")


@pytest.fixture(scope="module")
def retail_backtest(retail: Profile, retail_series: pd.DataFrame) -> BacktestResult:
    return backtest(retail_series, retail, "berlin")


END = date(2025, 10, 15)  # synthetic data for calibration tests ends in a season without holidays
NEXT_DAY = (datetime(2024, 7, 19), datetime(2024, 7, 20))  # the day after the 200 synthetic days


# -- series ---------------------------------------------------------------------------------------


def test_to_series_leaves_missing_store_days_unknown(retail: Profile) -> None:
    observations = retail_observations(entities=3, days=10)
    gap = (observations["store_id"] == "S001") & (observations["date"] == pd.Timestamp("2024-01-05"))
    series = to_series(observations[~gap], retail, until=datetime(2024, 1, 13))

    assert list(series.columns) == ["entity_id", "ts", "y", "open", "promo", "temp", "precipitation"]
    assert series.groupby("entity_id").size().tolist() == [12, 12, 12]  # grid runs up to `until`
    assert series.equals(series.sort_values(["entity_id", "ts"]).reset_index(drop=True))
    missing = series[(series["entity_id"] == "S001") & (series["ts"] == "2024-01-05")].iloc[0]
    assert np.isnan(missing["y"]) and np.isnan(missing["promo"])
    assert series["y"].isna().sum() == 1 + 3 * 2  # the gap and two future days per store
    assert series["open"].dtype == np.float64


def test_to_series_fills_station_hours_without_trips_with_zero(bikeshare: Profile) -> None:
    observations = bikeshare_observations(stations=2, days=2)
    series = to_series(observations, bikeshare, until=datetime(2024, 3, 3, 6))

    per_station = series.groupby("entity_id")["ts"].agg(["min", "max", "size"])
    assert (per_station["min"] == pd.Timestamp("2024-03-01 06:00")).all()
    assert (per_station["max"] == pd.Timestamp("2024-03-03 05:00")).all()  # `until` is exclusive
    assert (per_station["size"] == 48).all()
    night = series[series["ts"].dt.hour < 6]
    assert len(night) == 2 * 2 * 6 and (night["y"] == 0).all()
    assert series["y"].notna().all()


# -- features -------------------------------------------------------------------------------------


def test_features_only_see_data_one_horizon_back(retail: Profile, retail_series: pd.DataFrame) -> None:
    features = make_features(retail_series, retail, "berlin")
    assert list(features.columns[:3]) == ["entity_id", "ts", "scale"]
    assert features[feature_names(retail)].dtypes.eq(np.float32).all()
    row = 150  # well inside the first store's history
    store = retail_series[retail_series["entity_id"] == "S000"].reset_index(drop=True)
    scale = features.loc[row, "scale"]
    assert features.loc[row, "lag_7"] == pytest.approx(store.loc[row - 7, "y"] / scale, rel=1e-5)
    assert scale == pytest.approx(store.loc[row - 28 : row - 1, "y"].abs().mean())

    # Changing today's value must not change today's features: no leakage (a past covariate's
    # neither; a known one's, like promo, is meant to be seen: tests/test_covariates.py).
    changed = retail_series.copy()
    changed.loc[row, "y"] *= 10
    changed.loc[row, "temp"] += 10
    again = make_features(changed, retail, "berlin")
    pd.testing.assert_frame_equal(
        again.loc[[row], feature_names(retail)], features.loc[[row], feature_names(retail)]
    )


def test_features_for_targets_beyond_the_series(retail: Profile, retail_series: pd.DataFrame) -> None:
    targets = pd.DataFrame({"entity_id": ["S000", "S001"], "ts": [pd.Timestamp(NEXT_DAY[0])] * 2})
    features = make_features(retail_series, retail, "berlin", targets)
    last = retail_series[retail_series["ts"] == retail_series["ts"].max()].set_index("entity_id")["y"]
    assert features["lag_1"].to_numpy() == pytest.approx(
        (last.loc[["S000", "S001"]] / features["scale"].to_numpy()).to_numpy(), rel=1e-5
    )
    assert features["y_scaled"].isna().all()


def test_holiday_feature_is_one_on_christmas_in_germany(retail: Profile) -> None:
    series = pd.DataFrame(
        {"entity_id": ["S"], "ts": [pd.Timestamp("2024-12-01")], "y": [1.0]},
    )
    days = pd.to_datetime(["2024-12-24", "2024-12-25", "2024-12-27"])
    targets = pd.DataFrame({"entity_id": "S", "ts": days})
    features = make_features(series, retail, "berlin", targets)
    assert features["is_holiday"].tolist() == [0.0, 1.0, 0.0]
    assert features["days_to_holiday"].tolist() == [1.0, 0.0, 5.0]  # New Year
    assert features["days_since_holiday"].tolist()[1:] == [0.0, 1.0]


# -- the model ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_fit_is_deterministic(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    again = ForecastModel.fit(retail_series, retail, "berlin")
    first = retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY)
    second = again.predict(retail_series, retail, "berlin", *NEXT_DAY)
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_daily_predictions_one_row_per_store_monotone(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    forecast = retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY)

    assert list(forecast.columns) == ["entity_id", "period_start", "period_end", "p10", "p50", "p90"]
    assert len(forecast) == 20 and forecast["entity_id"].is_unique
    assert (forecast["period_start"] == NEXT_DAY[0]).all() and (forecast["period_end"] == NEXT_DAY[1]).all()
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    assert (forecast["p10"] >= 0).all()
    assert retail_model.training_rows == 20 * 199  # a store's first day has no history to scale by
    assert (forecast["p90"] < 2 * forecast["p50"]).all()  # no runaway upper quantile
    assert retail_model.quantiles == [0.1, 0.5, 0.9]


def test_store_with_no_history_still_gets_a_forecast(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    forecast = retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY, entities=["S003", "NEW"])
    assert forecast["entity_id"].tolist() == ["NEW", "S003"]
    assert np.isfinite(forecast[["p10", "p50", "p90"]].to_numpy()).all()


@pytest.mark.slow
def test_a_store_a_hundred_times_bigger_gets_a_hundred_times_the_forecast(retail: Profile) -> None:
    observations = retail_observations(entities=12, days=200, seed=3)
    twin = observations[observations["store_id"] == "S000"].assign(store_id="BIG")
    twin["sales"] *= 100
    series = to_series(pd.concat([observations, twin]), retail)
    model = ForecastModel.fit(series, retail, "berlin")

    forecast = model.predict(series, retail, "berlin", *NEXT_DAY).set_index("entity_id")
    ratio = forecast.loc["BIG", ["p10", "p50", "p90"]] / forecast.loc["S000", ["p10", "p50", "p90"]]
    assert ratio.to_numpy() == pytest.approx([100, 100, 100], rel=0.1)


@pytest.mark.slow
def test_hourly_forecasts_skip_closed_hours(bikeshare: Profile) -> None:
    window = (datetime(2024, 3, 22, 6), datetime(2024, 3, 22, 12))
    trips_only = bikeshare_observations().drop(columns=["temp", "precipitation"])  # no weather uploaded
    series = to_series(trips_only, bikeshare, until=window[0])
    model = ForecastModel.fit(series, bikeshare, "vancouver")
    # Closed hours are not trained on, nor are the first hours with no history to scale by.
    assert 8 * 20 * 18 < model.training_rows <= 8 * 21 * 18 - 8 * 6

    forecast = model.predict(series, bikeshare, "vancouver", *window)
    assert len(forecast) == 8 * 6
    assert (forecast.groupby("entity_id").size() == 6).all()
    assert sorted(forecast["period_start"].dt.hour.unique()) == [6, 7, 8, 9, 10, 11]
    assert (forecast["period_end"] - forecast["period_start"] == pd.Timedelta(hours=1)).all()
    assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
    assert (forecast["p10"] < 0).any()  # net change may be negative

    overnight = model.predict(series, bikeshare, "vancouver", datetime(2024, 3, 22), window[1])
    assert overnight["period_start"].dt.hour.min() == 6 and len(overnight) == 8 * 6


# -- persistence ----------------------------------------------------------------------------------


def test_dumps_loads_round_trip(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    loaded = ForecastModel.loads(retail_model.dumps())
    assert loaded.feature_names == retail_model.feature_names
    assert (loaded.profile_name, loaded.city, loaded.training_rows) == ("retail", "berlin", 20 * 199)
    pd.testing.assert_frame_equal(
        loaded.predict(retail_series, retail, "berlin", *NEXT_DAY),
        retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY),
        check_exact=True,
    )


def test_payload_with_a_disallowed_type_is_refused(retail_model: ForecastModel) -> None:
    payload = {
        "format": FORMAT,
        "meta": "{}",
        "estimators": [*retail_model.estimators, FunctionTransformer(os.system)],
    }
    with pytest.raises(ValueError, match=r"disallowed types: .*system"):
        ForecastModel.loads(sio.dumps(payload))


def test_payload_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="not a"):
        ForecastModel.loads(sio.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a batchcast model payload"):
        ForecastModel.loads(b"not a zip file")


def test_model_refuses_another_city(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    with pytest.raises(ValueError, match="cannot forecast"):
        retail_model.predict(retail_series, retail, "munich", *NEXT_DAY)


# -- backtest -------------------------------------------------------------------------------------


def test_backtest_beats_seasonal_naive_with_sensible_intervals(retail_backtest: BacktestResult) -> None:
    overall = retail_backtest.metrics["overall"]
    assert overall["count"] == 20 * 6 * 7
    assert overall["mase"] < 1
    assert overall["mae"] < overall["naive_mae"]
    assert 0.5 <= overall["coverage"] <= 0.98


def test_backtest_points_and_metrics_fit_their_formats(retail_backtest: BacktestResult) -> None:
    points, metrics = retail_backtest.points, retail_backtest.metrics
    assert list(points.columns) == list(schemas.fields("backtest"))
    assert read_frame(write_frame("backtest", points), "backtest").shape == points.shape
    json.dumps(metrics, allow_nan=False)
    assert (metrics["folds"], metrics["window"], metrics["season"]) == (6, 7, 7)
    assert [fold["fold"] for fold in metrics["per_fold"]] == [1, 2, 3, 4, 5, 6]
    # The last fold ends at the last observed day; folds are consecutive weeks.
    assert points["period_start"].max() == pd.Timestamp("2024-07-18")
    starts = points.groupby("fold")["period_start"].min()
    assert (starts.diff().dropna() == pd.Timedelta(days=7)).all()
    for key in ("mae", "wape", "mase", "naive_mae", "naive_wape", "coverage", "count"):
        assert key in metrics["overall"] and key in metrics["per_fold"][0]


@pytest.mark.slow
def test_hourly_backtest_scores_open_hours_only(bikeshare: Profile) -> None:
    series = to_series(bikeshare_observations(days=14), bikeshare)
    result = backtest(series, bikeshare, "vancouver")
    assert result.points["period_start"].dt.hour.min() == 6
    assert result.metrics["overall"]["count"] == 8 * 3 * 18
    assert result.points["seasonal_naive"].notna().all()


@pytest.mark.slow
def test_fit_and_backtest_match_the_separate_calls(
    retail: Profile,
    retail_series: pd.DataFrame,
    retail_model: ForecastModel,
    retail_backtest: BacktestResult,
) -> None:
    model, result = fit_and_backtest(retail_series, retail, "berlin")
    assert len(model.band_factors) == 3 and model.band_factors == retail_backtest.band_factors
    calibrated = dataclasses.replace(retail_model, band_factors=retail_backtest.band_factors)
    pd.testing.assert_frame_equal(
        model.predict(retail_series, retail, "berlin", *NEXT_DAY),
        calibrated.predict(retail_series, retail, "berlin", *NEXT_DAY),
        check_exact=True,
    )
    assert result.metrics == retail_backtest.metrics
    pd.testing.assert_frame_equal(result.points, retail_backtest.points, check_exact=True)


# -- conformal calibration ------------------------------------------------------------------------

QUANTILES = [0.1, 0.5, 0.9]
Z90 = 1.2815515655446004  # the standard normal's 0.9 quantile


def _band_of(sigma: float, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Scaled P10/P50/P90 claiming unit-normal errors, and actuals whose errors have ``sigma``."""
    median = rng.normal(0, 1, n)
    values = median[:, None] + np.array([-Z90, 0.0, Z90])[None, :]
    return values, median + rng.normal(0, sigma, n)


def _inside(values: np.ndarray, actual: np.ndarray) -> float:
    return float(((values[:, 0] <= actual) & (actual <= values[:, -1])).mean())


@pytest.mark.parametrize(("sigma", "widens"), [(2.0, True), (0.4, False)])
def test_factors_widen_a_band_too_narrow_and_narrow_one_too_wide(sigma: float, widens: bool) -> None:
    rng = np.random.default_rng(5)
    factors = conformal_factors(*_band_of(sigma, rng, 400), QUANTILES)
    assert factors is not None and factors[1] == 1.0
    assert (factors[0] > 1 and factors[2] > 1) if widens else (factors[0] < 1 and factors[2] < 1)

    values, actual = _band_of(sigma, rng, 20_000)  # held out: fresh draws
    assert (_inside(values, actual) < 0.6) if widens else (_inside(values, actual) > 0.95)
    assert _inside(apply_factors(values, factors, QUANTILES), actual) == pytest.approx(0.8, abs=0.03)


def test_too_few_points_cannot_calibrate_a_p10_p90_band() -> None:
    values = np.tile([-1.0, 0.0, 1.0], (9, 1))
    actual = np.arange(9.0) - 4  # -4 .. 4 around a median of 0, spread 1
    assert conformal_factors(values[:8], actual[:8], QUANTILES) is None  # rank 0.9 (n + 1) > n
    assert conformal_factors(values, actual, QUANTILES) == [4.0, 1.0, 4.0]  # the extremes, n = 9
    with_nan = np.append(actual[:8], np.nan)
    assert conformal_factors(values, with_nan, QUANTILES) is None  # a point without actual is no point


def test_a_backtest_with_too_few_points_leaves_the_band_uncalibrated(retail: Profile) -> None:
    one_week = retail.model_copy(update={"backtest": retail.backtest.model_copy(update={"folds": 1})})
    series = to_series(retail_observations(entities=1, days=60), one_week)
    model, result = fit_and_backtest(series, one_week, "berlin")  # 7 points: 9 are the least
    calibration, overall = result.metrics["calibration"], result.metrics["overall"]
    assert calibration["points"] < 9 and calibration["factors"] == {} and model.band_factors == []
    assert overall["coverage"] == overall["coverage_raw"]


def test_factors_keep_quantiles_monotone_and_the_median_in_place() -> None:
    quantiles = [0.05, 0.1, 0.5, 0.9, 0.95]
    values = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    calibrated = apply_factors(values, [0.25, -1.0, 1.0, 2.0, 0.5], quantiles)
    # P10 would cross the median (a negative factor): it stops there; P90 and P95 crossed: sorted.
    assert calibrated[0].tolist() == [-0.5, 0.0, 0.0, 1.0, 2.0]
    # A band collapsed to a point (a certain zero, a closed day) stays within MIN_SPREAD of it.
    spread = np.array([-0.25, 0.0, 0.0, 0.5, 2.0]) * MIN_SPREAD
    assert calibrated[1] == pytest.approx(3.0 + spread)
    assert (np.diff(calibrated, axis=1) >= 0).all()


@pytest.fixture(scope="module")
def calibrated_model(retail_model: ForecastModel, retail_backtest: BacktestResult) -> ForecastModel:
    """The module's model with the factors ``fit_and_backtest`` would give it."""
    return dataclasses.replace(retail_model, band_factors=retail_backtest.band_factors)


def test_calibration_survives_save_and_load(
    retail: Profile,
    retail_series: pd.DataFrame,
    retail_model: ForecastModel,
    calibrated_model: ForecastModel,
) -> None:
    loaded = ForecastModel.loads(calibrated_model.dumps())
    assert loaded.band_factors == calibrated_model.band_factors != [1.0, 1.0, 1.0]
    forecast = loaded.predict(retail_series, retail, "berlin", *NEXT_DAY)
    pd.testing.assert_frame_equal(
        forecast, calibrated_model.predict(retail_series, retail, "berlin", *NEXT_DAY), check_exact=True
    )
    raw = retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY)
    assert not np.allclose(forecast[["p10", "p90"]], raw[["p10", "p90"]])
    assert forecast["p50"].equals(raw["p50"])  # the median is never moved


def test_a_model_saved_before_calibration_loads_uncalibrated(
    retail: Profile, retail_series: pd.DataFrame, retail_model: ForecastModel
) -> None:
    meta = {f.name: getattr(retail_model, f.name) for f in dataclasses.fields(retail_model)}
    del meta["estimators"], meta["band_factors"]
    payload = {"format": FORMAT, "meta": json.dumps(meta), "estimators": list(retail_model.estimators)}
    loaded = ForecastModel.loads(sio.dumps(payload))
    assert loaded.band_factors == []
    pd.testing.assert_frame_equal(
        loaded.predict(retail_series, retail, "berlin", *NEXT_DAY),
        retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY),
    )
    meta["band_factors"] = [1.2, 1.0]  # not one per quantile
    bad = {"format": FORMAT, "meta": json.dumps(meta), "estimators": list(retail_model.estimators)}
    with pytest.raises(ValueError, match="band_factors"):
        ForecastModel.loads(sio.dumps(bad))


def test_calibrated_quantiles_stay_monotone_and_non_negative(
    retail: Profile, retail_series: pd.DataFrame, calibrated_model: ForecastModel
) -> None:
    for factors in ([50.0, 1.0, 50.0], [-5.0, 1.0, -5.0]):  # absurdly wide, absurdly narrow
        model = dataclasses.replace(calibrated_model, band_factors=factors)
        forecast = model.predict(retail_series, retail, "berlin", *NEXT_DAY)
        assert (forecast["p10"] <= forecast["p50"]).all() and (forecast["p50"] <= forecast["p90"]).all()
        assert (forecast["p10"] >= 0).all()
    assert (forecast["p10"] == forecast["p90"]).all()  # narrowed down to the median, no further


@pytest.mark.slow
def test_backtest_widens_a_band_too_narrow(retail: Profile) -> None:
    # The noise grows tenfold just before the backtest's six weeks: the model learnt calm days.
    days = 200
    noise = np.where(np.arange(days) < days - 42, 0.03, 0.3)
    series = to_series(retail_observations(entities=10, days=days, noise=noise, seed=4), retail)
    model, result = fit_and_backtest(series, retail, "berlin")
    overall, factors = result.metrics["overall"], result.metrics["calibration"]["factors"]

    assert overall["coverage_raw"] < 0.6
    assert factors["p10"] > 1 and factors["p90"] > 1
    assert overall["coverage"] == pytest.approx(0.8, abs=0.1)  # each fold calibrated on the others
    raw = dataclasses.replace(model, band_factors=[]).predict(series, retail, "berlin", *NEXT_DAY)
    served = model.predict(series, retail, "berlin", *NEXT_DAY)
    assert (served["p90"] - served["p10"]).sum() > 1.2 * (raw["p90"] - raw["p10"]).sum()


@pytest.mark.slow
def test_calibration_narrows_a_band_too_wide(retail: Profile) -> None:
    # Trained on rough days; then three calm weeks calibrate it and four more calm weeks judge it.
    days, rough = 200, 130
    noise = np.where(np.arange(days) < rough, 0.35, 0.02)
    series = to_series(retail_observations(entities=10, days=days, noise=noise, seed=4), retail)
    first_calm = series["ts"].min() + pd.Timedelta(days=rough)
    model = ForecastModel.fit(series[series["ts"] < first_calm], retail, "berlin")

    def held_out(weeks: range) -> tuple[np.ndarray, pd.DataFrame]:
        stamps = first_calm + pd.to_timedelta(np.arange(weeks.start * 7, weeks.stop * 7), unit="D")
        rows = series[series["ts"].isin(stamps)]
        return rows["y"].to_numpy(), make_features(series, retail, "berlin", rows[["entity_id", "ts"]])

    _, calibration = held_out(range(0, 3))
    factors = conformal_factors(model.predict_raw(calibration), calibration["y_scaled"], model.quantiles)
    assert factors is not None and factors[0] < 1 and factors[2] < 1

    actual, frame = held_out(range(3, 7))
    raw = _inside(model.predict_values(frame, retail), actual)
    narrowed = dataclasses.replace(model, band_factors=factors)
    assert raw > 0.9
    assert _inside(narrowed.predict_values(frame, retail), actual) == pytest.approx(0.8, abs=0.1)


def _observations(profile: Profile, entities: int, days: int, seed: int) -> pd.DataFrame:
    """``synth`` data as the partitioned rows the pipeline reads (typed columns, net change)."""
    fmt = "native" if profile.frequency == "daily" else "counts"
    frame = synth.generate(profile, entities, days, seed=seed, end=END, fmt=fmt)
    frame[profile.time_column] = pd.to_datetime(frame[profile.time_column])
    if profile.frequency == "hourly":
        frame["net_change"] = frame["arrivals"] - frame["departures"]
    return frame


@pytest.mark.slow  # many backtest folds on enough data to judge an 80% band
def test_retail_band_covers_80_percent_of_held_out_days(retail: Profile) -> None:
    observations = _observations(retail, 40, 400, seed=11)
    city = observations.groupby("city")["store_id"].nunique().idxmax()
    series = to_series(observations[observations["city"] == city], retail)
    metrics = backtest(series, retail, city).metrics
    assert metrics["overall"]["count"] > 500
    assert metrics["calibration"]["held_out_folds"] == [1, 2, 3, 4, 5, 6]
    assert metrics["overall"]["coverage"] == pytest.approx(0.8, abs=0.05)
    assert metrics["overall"]["coverage_raw"] is not None


@pytest.mark.slow  # many backtest folds on enough data to judge an 80% band
def test_bikeshare_band_covers_80_percent_of_held_out_hours(bikeshare: Profile) -> None:
    observations = _observations(bikeshare, 40, 120, seed=11)
    series = to_series(observations[observations["city"] == "vancouver"], bikeshare)
    result = backtest(series, bikeshare, "vancouver")
    overall = result.metrics["overall"]
    assert overall["count"] > 600
    assert overall["coverage"] == pytest.approx(0.8, abs=0.05)
    assert (
        _inside(result.points[["p10", "p90"]].to_numpy(), result.points["actual"]) == overall["coverage"]
    )  # the stored points are the calibrated band


SOLO = """
name = "solo"
schema_name = "retail_observation"
entity_key = "store_id"
time_column = "date"
target = "sales"
frequency = "daily"
timezone = "Europe/Berlin"

[cities.berlin]
country = "DE"
subdivision = "BE"

[[schedule]]
cron = "0 0 * * *"
actions = ["train", "predict"]

[features]
lags = [1, 2, 7, 14]
rolling = [{ window = 7, stats = ["mean", "std"] }]
calendar = ["dayofweek", "dayofyear"]

[training]
window = 365
max_iter = 60

[backtest]
folds = 10
window = 14

[mappings.native]
kind = "rows"
columns = { store_id = "store_id", city = "city", date = "date", sales = "sales" }
"""


@pytest.mark.slow  # many backtest folds on enough data to judge an 80% band
def test_a_single_series_band_covers_80_percent_of_held_out_days() -> None:
    solo = parse_profile(SOLO)
    series = to_series(_observations(solo, 1, 600, seed=3), solo)
    assert series["entity_id"].nunique() == 1
    metrics = backtest(series, solo, "berlin").metrics
    assert metrics["overall"]["count"] > 130  # one series needs many origins to be judged
    assert metrics["calibration"]["held_out_folds"] == list(range(1, 11))
    assert metrics["overall"]["coverage"] == pytest.approx(0.8, abs=0.05)
