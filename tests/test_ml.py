"""The ml package: series grid, features, the global quantile model, persistence and the backtest."""

from __future__ import annotations

import json
import os
from datetime import datetime

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.preprocessing import FunctionTransformer

from batchcast import schemas
from batchcast.config import Profile
from batchcast.ml import (
    BacktestResult,
    ForecastModel,
    backtest,
    feature_names,
    fit_and_backtest,
    make_features,
    to_series,
)
from batchcast.ml.model import FORMAT

WEEKLY = np.array([1.0, 0.8, 0.9, 1.0, 1.3, 1.6, 0.4])  # Monday .. Sunday


# -- synthetic data -----------------------------------------------------------------------------


def retail_observations(
    entities: int = 20, days: int = 200, seed: int = 0, start: str = "2024-01-01"
) -> pd.DataFrame:
    """Store-days with a clear weekly pattern, per-store levels over two orders of magnitude, promos."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=days, freq="D")
    level = rng.lognormal(6, 1.0, entities)
    promo = rng.random((entities, days)) < 0.2
    sales = level[:, None] * WEEKLY[dates.day_of_week][None, :] * (1 + 0.3 * promo)
    sales *= rng.lognormal(0, 0.08, (entities, days))
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


def test_a_store_a_hundred_times_bigger_gets_a_hundred_times_the_forecast(retail: Profile) -> None:
    observations = retail_observations(entities=12, days=200, seed=3)
    twin = observations[observations["store_id"] == "S000"].assign(store_id="BIG")
    twin["sales"] *= 100
    series = to_series(pd.concat([observations, twin]), retail)
    model = ForecastModel.fit(series, retail, "berlin")

    forecast = model.predict(series, retail, "berlin", *NEXT_DAY).set_index("entity_id")
    ratio = forecast.loc["BIG", ["p10", "p50", "p90"]] / forecast.loc["S000", ["p10", "p50", "p90"]]
    assert ratio.to_numpy() == pytest.approx([100, 100, 100], rel=0.1)


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
    assert overall["count"] == 20 * 3 * 7
    assert overall["mase"] < 1
    assert overall["mae"] < overall["naive_mae"]
    assert 0.5 <= overall["coverage"] <= 0.98


def test_backtest_points_and_metrics_fit_their_formats(retail_backtest: BacktestResult) -> None:
    points, metrics = retail_backtest.points, retail_backtest.metrics
    assert list(points.columns) == list(schemas.fields("backtest"))
    assert schemas.read_frame(schemas.write_frame("backtest", points), "backtest").shape == points.shape
    json.dumps(metrics, allow_nan=False)
    assert (metrics["folds"], metrics["window"], metrics["season"]) == (3, 7, 7)
    assert [fold["fold"] for fold in metrics["per_fold"]] == [1, 2, 3]
    # The last fold ends at the last observed day; folds are consecutive weeks.
    assert points["period_start"].max() == pd.Timestamp("2024-07-18")
    starts = points.groupby("fold")["period_start"].min()
    assert (starts.diff().dropna() == pd.Timedelta(days=7)).all()
    for key in ("mae", "wape", "mase", "naive_mae", "naive_wape", "coverage", "count"):
        assert key in metrics["overall"] and key in metrics["per_fold"][0]


def test_hourly_backtest_scores_open_hours_only(bikeshare: Profile) -> None:
    series = to_series(bikeshare_observations(days=14), bikeshare)
    result = backtest(series, bikeshare, "vancouver")
    assert result.points["period_start"].dt.hour.min() == 6
    assert result.metrics["overall"]["count"] == 8 * 3 * 18
    assert result.points["seasonal_naive"].notna().all()


def test_fit_and_backtest_match_the_separate_calls(
    retail: Profile,
    retail_series: pd.DataFrame,
    retail_model: ForecastModel,
    retail_backtest: BacktestResult,
) -> None:
    model, result = fit_and_backtest(retail_series, retail, "berlin")
    pd.testing.assert_frame_equal(
        model.predict(retail_series, retail, "berlin", *NEXT_DAY),
        retail_model.predict(retail_series, retail, "berlin", *NEXT_DAY),
        check_exact=True,
    )
    assert result.metrics == retail_backtest.metrics
    pd.testing.assert_frame_equal(result.points, retail_backtest.points, check_exact=True)
