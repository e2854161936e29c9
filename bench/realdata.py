"""Benchmark on real demand data a package ships: Capital Bikeshare 2011, daily, with its weather.

    make bench-realdata                      # installs the data package, then runs this
    .venv/bin/pip install --no-deps ISLP     # or by hand, once (its own dependencies, torch and
    .venv/bin/python bench/realdata.py       #   the like, are not needed to read its data)

The data: ``ISLP``'s ``Bikeshare`` (the companion package of "An Introduction to Statistical
Learning"), 8,645 hourly rentals of Washington's Capital Bikeshare in 2011 with the hour's
weather; nothing is downloaded at run time and nothing is committed here. What a new user with
such a file would do, step by step:

1. write it as the user's own CSV: one row per day (``day, system, rentals``), the day's weather
   (mean temperature, hours of rain or snow, humidity, wind) and the public-holiday flag;
2. write a profile of its own (a TOML file) mapping the user's columns onto the retail schema's
   fields and declaring its covariates (``COVARIATES``: temperature, rain hours, and the user's
   own humidity and wind), each known up to the day before;
3. upload the CSV into an embedded deployment: validation, partitioning, training with a
   rolling-origin backtest (``--folds`` origins of ``--window`` days, the last ending on
   31 December) and the forecast of 1 January, as a real upload would run;
4. on the same origins, score batchcast, the seasonal naive forecast (same weekday a week before)
   and :func:`hgb_baseline` — a plain, tuned HistGradientBoosting script written here with pandas
   and scikit-learn only (it never imports batchcast), given the same information (lags, the
   previous day's weather — all four columns, humidity and wind included — calendar, holidays).

Every day of a fold is forecast from the data up to the day before (a one-day horizon), by a model
fitted on the days before the fold's origin, for all three. MASE divides each fold's errors by the
fold's in-sample seasonal-naive MAE (as batchcast's backtest does). It prints one table, the
ratios, and batchcast's own backtest metrics for cross-checking.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

PROFILE = "capital-bikes"
CITY = "washington"
YEAR = 2011
QUANTILES = (0.1, 0.5, 0.9)
SEASON = 7  # the seasonal naive forecast: the same weekday one week before
TRAINING_WINDOW = 365

# The user's column for each schema field batchcast should use as a covariate (as of the day
# before, like every covariate today). One line per covariate: the profile follows this mapping.
# The profile's covariates (each declared in it, past timing: known up to the origin) and the
# user's columns they come from; temp and precipitation are fields of the retail schema, humidity
# and wind the user's own.
COVARIATES = {"temp": "temp_c", "precipitation": "rain_hours", "humidity": "humidity_pct", "wind": "wind_kmh"}
USER_COLUMNS = ["day", "system", "rentals", "temp_c", "rain_hours", "humidity_pct", "wind_kmh", "holiday"]


# -- the data, as a user would have it ----------------------------------------------------------


def load_daily() -> pd.DataFrame:
    """ISLP's hourly Bikeshare as one row per day, in the user's own column names."""
    try:
        from ISLP import load_data
    except ImportError:
        raise SystemExit("needs the data package: .venv/bin/pip install --no-deps ISLP") from None
    hourly = load_data("Bikeshare")
    hourly["date"] = pd.Timestamp(f"{YEAR}-01-01") + pd.to_timedelta(hourly["day"] - 1, unit="D")
    wet = hourly["weathersit"].astype(str).isin(["light rain/snow", "heavy rain/snow"])
    # The data set's documented normalisations: temp = (t + 8) / 47, hum = h / 100, wind = w / 67.
    hourly = hourly.assign(
        temp_c=hourly["temp"] * 47 - 8, wet=wet, humidity=hourly["hum"] * 100, wind=hourly["windspeed"] * 67
    )
    daily = hourly.groupby("date").agg(
        rentals=("bikers", "sum"),
        temp_c=("temp_c", "mean"),
        rain_hours=("wet", "sum"),
        humidity_pct=("humidity", "mean"),
        wind_kmh=("wind", "mean"),
        holiday=("holiday", "max"),
    )
    daily = daily.reset_index().rename(columns={"date": "day"})
    daily["day"] = daily["day"].dt.strftime("%Y-%m-%d")
    daily["system"] = "capital"
    return daily[USER_COLUMNS].round(2)


def profile_toml(folds: int, window: int) -> str:
    """The user's profile: the retail schema's fields mapped onto their columns, one city."""
    columns = {"store_id": "system", "date": "day", "sales": "rentals", **COVARIATES}
    mapping = ", ".join(f'{field} = "{column}"' for field, column in columns.items())
    covariates = ", ".join(f'"{name}"' for name in COVARIATES)
    declared = "".join(f'\n[covariates.{name}]\ntype = "number"\ntiming = "past"\n' for name in COVARIATES)
    return f"""\
name = "{PROFILE}"
description = "Daily rentals of one bike-share system, with the previous day's weather"
schema_name = "retail_observation"
entity_key = "store_id"
time_column = "date"
target = "sales"
frequency = "daily"
timezone = "America/New_York"

[cities.{CITY}]
country = "US"
subdivision = "DC"

[[schedule]]
cron = "0 0 * * *"
actions = ["train", "predict"]
{declared}
[features]
lags = [1, 2, 3, 7, 14, 28]
rolling = [{{ window = 7, stats = ["mean", "std"] }}, {{ window = 28, stats = ["mean", "max"] }}]
calendar = ["dayofweek", "month", "dayofyear"]
holidays = true
covariates = [{covariates}]
scale_window = 28

[training]
window = {TRAINING_WINDOW}
max_iter = 150

[backtest]
folds = {folds}
window = {window}
season = {SEASON}

[mappings.capital]
kind = "rows"
columns = {{ {mapping} }}
constants = {{ city = "{CITY}" }}
"""


# -- batchcast ------------------------------------------------------------------------------------


def run_batchcast(csv: Path, profiles: Path, root: Path) -> dict:
    """Upload the user's CSV to an embedded deployment at the first midnight after the data and
    let everything run; return the trained model's metadata and its backtest points."""
    os.environ["BATCHCAST_PROFILE_DIR"] = str(profiles)
    from batchcast.core import layout
    from batchcast.core.config import load_profile
    from batchcast.core.obs import configure_logging
    from batchcast.core.schemas.frames import read_frame
    from batchcast.data import uploads
    from batchcast.entrypoints import runtime
    from batchcast.ops import models
    from batchcast.ports import FixedClock

    configure_logging(open(root.parent / "batchcast-log.jsonl", "w"))  # noqa: SIM115 - lives with the process
    profile = load_profile(PROFILE)
    at = datetime(YEAR + 1, 1, 1, tzinfo=profile.zone())
    deployment = runtime.embedded(root, clock=FixedClock(at))
    started = time.perf_counter()
    uploads.store_upload(deployment.ports.blobs, csv.read_bytes(), ext="csv", now=at, dataset=PROFILE)
    deployment.bus.drain()
    seconds = time.perf_counter() - started
    failed = {f: r.errors for f, r in deployment.results if r.status in ("failed", "partial")}
    ref = models.latest(deployment.ports.blobs, profile, CITY)
    if failed or ref is None:
        raise SystemExit(f"the pipeline did not train: {failed}")
    folder = layout.model_dir(PROFILE, CITY, ref.version)
    metadata = models.read_metadata(deployment.ports.blobs, profile, CITY, ref.version)
    points = read_frame(deployment.ports.blobs.read(folder + metadata["backtest_file"]), "backtest")
    return {"metadata": metadata, "points": points, "seconds": seconds}


# -- the plain HistGradientBoosting script (no batchcast) -----------------------------------------

BASELINE_LAGS = (1, 2, 3, 7, 14, 28)
BASELINE_WEATHER = ("temp_c", "rain_hours", "humidity_pct", "wind_kmh")
GRID = {
    "learning_rate": (0.05, 0.1),
    "max_leaf_nodes": (7, 15, 31),
    "min_samples_leaf": (5, 20),
    "target": ("raw", "log"),
}


def baseline_features(user: pd.DataFrame) -> pd.DataFrame:
    """One row per day: the target and what is known the day before (lags, rolling means, the
    previous day's weather) plus the day's own calendar and holiday flag."""
    frame = user.assign(day=pd.to_datetime(user["day"])).sort_values("day").reset_index(drop=True)
    out = pd.DataFrame({"day": frame["day"], "y": frame["rentals"].astype(float)})
    for lag in BASELINE_LAGS:
        out[f"lag_{lag}"] = out["y"].shift(lag)
    for window in (7, 28):
        out[f"mean_{window}"] = out["y"].shift(1).rolling(window, min_periods=1).mean()
    for column in BASELINE_WEATHER:
        out[f"prev_{column}"] = frame[column].shift(1)
    out["dayofweek"] = out["day"].dt.day_of_week
    out["month"] = out["day"].dt.month
    out["dayofyear"] = out["day"].dt.day_of_year
    out["holiday"] = frame["holiday"]
    return out


def _fit(rows: pd.DataFrame, quantile: float, params: dict) -> HistGradientBoostingRegressor:
    settings = {k: v for k, v in params.items() if k != "target"}
    target = np.log1p(rows["y"]) if params["target"] == "log" else rows["y"]
    model = HistGradientBoostingRegressor(
        loss="quantile", quantile=quantile, max_iter=300, random_state=0, **settings
    )
    return model.fit(rows[_columns(rows)], target)


def _predict(model: HistGradientBoostingRegressor, rows: pd.DataFrame, params: dict) -> np.ndarray:
    values = model.predict(rows[_columns(rows)])
    return np.expm1(values) if params["target"] == "log" else values


def _columns(rows: pd.DataFrame) -> list[str]:
    return [c for c in rows.columns if c not in ("day", "y")]


def tune(table: pd.DataFrame, first_origin: pd.Timestamp, folds: int = 4, window: int = 7) -> dict:
    """The grid point with the lowest MAE over ``folds`` weekly origins before the first backtest
    origin (so the tuning never sees a scored day)."""
    best, best_error = {}, np.inf
    for values in itertools.product(*GRID.values()):
        params = dict(zip(GRID, values, strict=True))
        errors = []
        for k in range(folds, 0, -1):
            origin = first_origin - pd.Timedelta(days=k * window)
            train = table[table["day"] < origin]
            test = table[(table["day"] >= origin) & (table["day"] < origin + pd.Timedelta(days=window))]
            predicted = _predict(_fit(train, 0.5, params), test, params)
            errors.append(np.abs(predicted - test["y"].to_numpy()))
        error = float(np.concatenate(errors).mean())
        if error < best_error:
            best, best_error = params, error
    return best


def hgb_baseline(user: pd.DataFrame, origins: list[pd.Timestamp], window: int) -> tuple[pd.DataFrame, dict]:
    """Per origin: quantile models fitted on the days before it forecast each day of its window.

    Returns ``day, p10, p50, p90`` for every scored day and the tuned parameters.
    """
    table = baseline_features(user)
    with threadpool_limits(1, user_api="openmp"):  # a few hundred rows: threads only cost time
        return _baseline(table, origins, window)


def _baseline(table: pd.DataFrame, origins: list[pd.Timestamp], window: int) -> tuple[pd.DataFrame, dict]:
    params = tune(table, origins[0])
    parts = []
    for origin in origins:
        train = table[(table["day"] < origin) & (table["day"] >= origin - pd.Timedelta(days=TRAINING_WINDOW))]
        test = table[(table["day"] >= origin) & (table["day"] < origin + pd.Timedelta(days=window))]
        values = np.column_stack([_predict(_fit(train, q, params), test, params) for q in QUANTILES])
        values = np.sort(values, axis=1)
        parts.append(
            pd.DataFrame(
                {"day": test["day"].to_numpy(), "p10": values[:, 0], "p50": values[:, 1], "p90": values[:, 2]}
            )
        )
    return pd.concat(parts, ignore_index=True), params


# -- scoring --------------------------------------------------------------------------------------


def naive_scales(user: pd.DataFrame, origins: list[pd.Timestamp]) -> list[float]:
    """Per origin: the in-sample seasonal-naive MAE over the training window before it."""
    series = user.assign(day=pd.to_datetime(user["day"])).set_index("day")["rentals"].astype(float)
    errors = (series - series.shift(SEASON, freq="D").reindex(series.index)).abs()
    return [
        float(errors[(errors.index < o) & (errors.index >= o - pd.Timedelta(days=TRAINING_WINDOW))].mean())
        for o in origins
    ]


def score(points: pd.DataFrame, column: str, scales: np.ndarray, low: str | None, high: str | None) -> dict:
    """MASE, MAE, WAPE of ``column`` and the coverage of [low, high] (if given)."""
    error = np.abs(points[column].to_numpy() - points["actual"].to_numpy())
    result = {
        "MASE": float(np.mean(error / scales)),
        "MAE": float(error.mean()),
        "WAPE": float(error.sum() / np.abs(points["actual"]).sum()),
    }
    if low and high:
        inside = (points[low] <= points["actual"]) & (points["actual"] <= points[high])
        result["coverage"] = float(inside.mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--folds", type=int, default=12, help="rolling origins (default 12)")
    parser.add_argument("--window", type=int, default=14, help="days each origin forecasts (default 14)")
    parser.add_argument("--keep", type=Path, help="keep the CSV, profile and bucket in this folder")
    args = parser.parse_args()

    user = load_daily()
    with tempfile.TemporaryDirectory(prefix="batchcast-realdata-") as scratch:
        folder = args.keep or Path(scratch)
        (folder / "profiles").mkdir(parents=True, exist_ok=True)
        csv = folder / "capital-bikes-2011.csv"
        user.to_csv(csv, index=False, lineterminator="\n")
        (folder / "profiles" / f"{PROFILE}.toml").write_text(profile_toml(args.folds, args.window))
        print(
            f"{csv.name}: {len(user)} days, columns {', '.join(user.columns)}; "
            f"batchcast maps {', '.join(f'{v} -> {k}' for k, v in COVARIATES.items())}"
        )
        ours = run_batchcast(csv, folder / "profiles", folder / "bucket")

    metrics = ours["metadata"]["metrics"]
    origins = [pd.Timestamp(fold["origin"]) for fold in metrics["per_fold"]]
    started = time.perf_counter()
    theirs, params = hgb_baseline(user, origins, args.window)
    baseline_seconds = time.perf_counter() - started

    points = ours["points"].rename(columns={"period_start": "day"})
    points["day"] = pd.to_datetime(points["day"])
    points = points.merge(theirs, on="day", suffixes=("", "_hgb"), validate="one_to_one")
    scales = np.array(naive_scales(user, origins))[points["fold"].to_numpy() - 1]
    rows = {
        "seasonal naive": score(points, "seasonal_naive", scales, None, None),
        "HGB script": score(points, "p50_hgb", scales, "p10_hgb", "p90_hgb"),
        "batchcast": score(points, "p50", scales, "p10", "p90"),
    }
    overall = metrics["overall"]
    rows["batchcast"]["coverage_raw"] = overall["coverage_raw"]
    rows["HGB script"]["seconds"] = baseline_seconds
    rows["batchcast"]["seconds"] = ours["metadata"]["train_seconds"]

    print(
        f"\n{len(origins)} origins x {args.window} days ({points['day'].min():%Y-%m-%d} .. "
        f"{points['day'].max():%Y-%m-%d}), {len(points)} days scored; one-day horizon\n"
    )
    header = ("MASE", 7), ("MAE", 9), ("WAPE", 8), ("P10–P90 raw", 13), ("calibrated", 12), ("seconds", 9)
    print(f"{'method':<16}" + "".join(f"{name:>{width}}" for name, width in header))
    for name, row in rows.items():
        raw = row.get("coverage_raw", row.get("coverage"))
        calibrated = row["coverage"] if "coverage_raw" in row else None
        print(
            f"{name:<16}{row['MASE']:>7.3f}{row['MAE']:>9.0f}{row['WAPE']:>8.3f}"
            f"{_fmt(raw):>13}{_fmt(calibrated):>12}{_fmt(row.get('seconds'), '.1f'):>9}"
        )
    ratio_naive = rows["batchcast"]["MASE"] / rows["seasonal naive"]["MASE"]
    ratio_hgb = rows["batchcast"]["MASE"] / rows["HGB script"]["MASE"]
    print("seconds: batchcast's training (final model and every fold); the script's tuning and folds")
    print(f"\nHGB script's tuned parameters: {params}")
    print(
        f"batchcast's own backtest: MASE {overall['mase']:.3f}, coverage raw {overall['coverage_raw']:.3f}, "
        f"calibrated {overall['coverage']:.3f}, band factors "
        f"{ {k: round(v, 2) for k, v in metrics['calibration']['factors'].items()} }; "
        f"upload to forecast {ours['seconds']:.1f} s"
    )
    print(f"ratios: MASE batchcast / seasonal naive = {ratio_naive:.3f}, ", end="")
    print(f"batchcast / HGB script = {ratio_hgb:.3f}")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
