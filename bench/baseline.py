"""The benchmark's baseline: what a data scientist would write with bare pandas + scikit-learn.

    python bench/baseline.py sales.csv

Reads the CSV, builds the retail profile's features (lags 1/2/3/7/14/28, rolling 7 mean/std and
28 mean/max, day of week/month/day of year, public holidays, weather as of yesterday, the day's own
open and promo flags (known in advance), a per-store scale), and per city makes the same fits the
pipeline makes — three quantile models on the last 730 days plus three quantiles for each of six
7-day backtest folds — with the same fit settings and the same threading (single-threaded fits
side by side), then predicts the next day. It prints one JSON line: wall seconds (from the read to
the last prediction), peak RSS, predictions.

It deliberately imports nothing from batchcast: it is the hand-written alternative.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import holidays
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

CITIES = {"berlin": ("DE", "BE"), "munich": ("DE", "BY"), "cologne": ("DE", "NW"), "paris": ("FR", None)}
LAGS = (1, 2, 3, 7, 14, 28)
QUANTILES = (0.1, 0.5, 0.9)
WINDOW, FOLDS, FOLD_DAYS = 730, 6, 7


def features(frame: pd.DataFrame, country: str, subdivision: str | None) -> pd.DataFrame:
    """One row per store-day on a full daily grid, with every feature column."""
    frame = frame.set_index(["store_id", "date"]).sort_index()
    grid = pd.MultiIndex.from_product(
        [
            frame.index.levels[0],
            pd.date_range(frame.index.levels[1].min(), frame.index.levels[1].max() + pd.Timedelta(days=1)),
        ],
        names=["store_id", "date"],
    )
    frame = frame.reindex(grid).reset_index()
    by_store = frame.groupby("store_id", sort=False)
    yesterday = by_store["sales"].shift(1)
    scale = (
        yesterday.abs().groupby(frame["store_id"]).transform(lambda s: s.rolling(28, min_periods=1).mean())
    )
    scale = scale.fillna(1.0).clip(lower=1e-3)
    out = pd.DataFrame({"store_id": frame["store_id"], "date": frame["date"], "scale": scale})
    out["y"] = frame["sales"] / scale
    for lag in LAGS:
        out[f"lag_{lag}"] = by_store["sales"].shift(lag) / scale
    rolled = yesterday.groupby(frame["store_id"])
    out["roll7_mean"] = rolled.transform(lambda s: s.rolling(7, min_periods=1).mean()) / scale
    out["roll7_std"] = rolled.transform(lambda s: s.rolling(7, min_periods=2).std()) / scale
    out["roll28_mean"] = rolled.transform(lambda s: s.rolling(28, min_periods=1).mean()) / scale
    out["roll28_max"] = rolled.transform(lambda s: s.rolling(28, min_periods=1).max()) / scale
    out["dayofweek"] = frame["date"].dt.day_of_week
    out["month"] = frame["date"].dt.month
    out["dayofyear"] = frame["date"].dt.day_of_year
    calendar = holidays.country_holidays(country, subdiv=subdivision, years=range(2020, 2028))
    days = pd.DatetimeIndex(sorted(pd.Timestamp(d) for d in calendar))
    out["is_holiday"] = frame["date"].isin(days).astype(float)
    position = days.searchsorted(frame["date"])
    following = days[np.minimum(position, len(days) - 1)]
    previous = days[np.maximum(position - 1, 0)]
    out["days_to_holiday"] = (following - frame["date"]).dt.days.clip(0, 7)
    out["days_since_holiday"] = (frame["date"] - previous).dt.days.clip(0, 7)
    for column in ("open", "promo"):  # plans known in advance: the target day's own value
        out[f"known_{column}"] = frame[column].astype(float)
    for column in ("temp", "precipitation"):
        out[f"cov_{column}"] = by_store[column].shift(1).astype(float)
    out["log_scale"] = np.log1p(scale)
    return out


def fit_all(
    jobs: list[tuple[pd.DataFrame, float]], columns: list[str]
) -> list[HistGradientBoostingRegressor]:
    """Fit one model per (training rows, quantile), single-threaded fits side by side."""

    def fit(job: tuple[pd.DataFrame, float]) -> HistGradientBoostingRegressor:
        rows, quantile = job
        model = HistGradientBoostingRegressor(
            loss="quantile",
            quantile=quantile,
            max_iter=150,
            learning_rate=0.1,
            max_leaf_nodes=31,
            early_stopping=False,
            random_state=0,
        )
        with threadpool_limits(1, user_api="openmp"):
            return model.fit(rows[columns].to_numpy(np.float32), rows["y"].clip(-100, 100).to_numpy())

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(fit, jobs))


def run_city(frame: pd.DataFrame, city: str) -> int:
    """Fit, backtest and forecast one city; return how many stores were forecast."""
    table = features(frame, *CITIES[city])
    columns = [c for c in table.columns if c not in ("store_id", "date", "scale", "y")]
    last = frame["date"].max()
    known = table[table["y"].notna() & (table["date"] <= last)]
    jobs = []
    for fold in range(FOLDS, -1, -1):  # fold 0 is the final model on all data
        origin = last - pd.Timedelta(days=fold * FOLD_DAYS - 1) if fold else last + pd.Timedelta(days=1)
        rows = known[(known["date"] < origin) & (known["date"] >= origin - pd.Timedelta(days=WINDOW))]
        jobs += [(rows, q) for q in QUANTILES]
    models = fit_all(jobs, columns)
    for fold in range(FOLDS):  # evaluate the backtest folds, as the pipeline does
        origin = last - pd.Timedelta(days=(FOLDS - fold) * FOLD_DAYS - 1)
        window = known[(known["date"] >= origin) & (known["date"] < origin + pd.Timedelta(days=FOLD_DAYS))]
        p50 = models[fold * 3 + 1].predict(window[columns].to_numpy(np.float32)) * window["scale"].to_numpy()
        np.abs(p50 - window["y"].to_numpy() * window["scale"].to_numpy()).mean()
    tomorrow = table[table["date"] == last + pd.Timedelta(days=1)]
    forecast = (
        np.sort(
            np.column_stack([m.predict(tomorrow[columns].to_numpy(np.float32)) for m in models[-3:]]), axis=1
        )
        * tomorrow["scale"].to_numpy()[:, None]
    )
    return int(np.isfinite(forecast).all(axis=1).sum())


def main(path: str) -> None:
    started = time.perf_counter()
    frame = pd.read_csv(path, dtype={"store_id": str}, parse_dates=["date"])
    predictions = sum(run_city(group, city) for city, group in frame.groupby("city"))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "predictions": predictions}))


if __name__ == "__main__":
    main(sys.argv[1])
