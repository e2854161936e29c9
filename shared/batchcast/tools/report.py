"""Reading a finished run back for people: per-city summaries and the actual-vs-forecast chart."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.schemas.frames import read_frame
from batchcast.ops import models
from batchcast.ports import BlobStore

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class CitySummary:
    """What one city's run produced."""

    city: str
    entities_forecast: int
    target: str | None
    model_version: str | None
    mase: float | None
    wape: float | None
    coverage: float | None  # of the calibrated P10–P90 band, on held-out backtest origins
    coverage_raw: float | None  # of the quantile models' own band, before calibration
    track_periods: int = 0  # periods in the entities' track records whose actual arrived
    track_coverage: float | None = None  # of the forecast band over those periods, as forecast


def results(blobs: BlobStore, profile: Profile) -> list[dict]:
    """Every entity's latest result document."""
    return [json.loads(blobs.read(info.name)) for info in blobs.list(layout.results_prefix(profile.name))]


def city_summaries(blobs: BlobStore, profile: Profile) -> list[CitySummary]:
    """Per city: entities with a forecast, the target, the model and its backtest metrics."""
    by_city: dict[str, list[dict]] = defaultdict(list)
    for document in results(blobs, profile):
        by_city[document["city"]].append(document)
    summaries = []
    for city in profile.cities:
        ref = models.latest(blobs, profile, city)
        metrics = {}
        if ref:
            metadata = models.read_metadata(blobs, profile, city, ref.version)
            metrics = (metadata or {}).get("metrics", {}).get("overall", {})
        documents = by_city.get(city, [])
        targets = sorted({d["target"]["start"] for d in documents})
        summaries.append(
            CitySummary(
                city=city,
                entities_forecast=len(documents),
                target=targets[-1] if targets else None,
                model_version=ref.version if ref else None,
                mase=metrics.get("mase"),
                wape=metrics.get("wape"),
                coverage=metrics.get("coverage"),
                coverage_raw=metrics.get("coverage_raw"),
                **_track_record(documents),
            )
        )
    return summaries


def _track_record(documents: list[dict]) -> dict[str, Any]:
    """The city's track record over its entities' pages: scored periods and the band's coverage."""
    scored = [d["accuracy"] for d in documents if d.get("accuracy", {}).get("periods")]
    periods = sum(a["periods"] for a in scored)
    covered = sum(a["coverage"] * a["periods"] for a in scored)
    return {"track_periods": periods, "track_coverage": covered / periods if periods else None}


def plot_forecasts(blobs: BlobStore, profile: Profile, out: Path, count: int = 4) -> Path | None:
    """Chart actuals, backtest P50 with its P10–P90 band, and the next forecast for a few entities.

    Picks the largest entity and a spread of others, so the chart shows the scale the model covers.
    """
    documents = [d for d in results(blobs, profile) if d["history"]]
    if not documents:
        return None
    # Imported here: matplotlib costs every ``batchcast`` command start-up time, and only this draws.
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    documents.sort(key=lambda d: -_mean_actual(d))
    step = max(1, len(documents) // count)
    chosen = documents[::step][:count]
    figure, axes = plt.subplots(len(chosen), 1, figsize=(10, 2.6 * len(chosen)), squeeze=False)
    for axis, document in zip(axes[:, 0], chosen, strict=True):
        _plot_entity(axis, blobs, profile, document)
    figure.suptitle(f"batchcast {profile.name}: actual vs forecast (P10–P90 band)")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _plot_entity(axis: Axes, blobs: BlobStore, profile: Profile, document: dict) -> None:
    history = pd.DataFrame(document["history"])
    history["period_start"] = pd.to_datetime(history["period_start"])
    axis.plot(history["period_start"], history["actual"], color="black", lw=1.2, label="actual")
    backtest = _backtest_points(blobs, profile, document)
    if not backtest.empty:
        start = history["period_start"].min()
        backtest = backtest[backtest["period_start"] >= start]
        axis.fill_between(
            backtest["period_start"],
            backtest["p10"],
            backtest["p90"],
            color="tab:blue",
            alpha=0.2,
            step="mid",
            label="backtest P10–P90",
        )
        axis.plot(
            backtest["period_start"], backtest["p50"], color="tab:blue", lw=1, ls="--", label="backtest P50"
        )
    forecast = pd.DataFrame(document["forecast"])
    forecast["period_start"] = pd.to_datetime(forecast["period_start"])
    axis.errorbar(
        forecast["period_start"],
        forecast["p50"],
        yerr=[forecast["p50"] - forecast["p10"], forecast["p90"] - forecast["p50"]],
        fmt="o",
        color="tab:red",
        ms=4,
        capsize=3,
        label="forecast P50 (P10–P90)",
    )
    axis.set_title(f"{document['city']} / {document['entity_key']}={document['entity_id']}", fontsize=9)
    axis.legend(fontsize=7, loc="upper left")
    axis.tick_params(labelsize=7)


def _backtest_points(blobs: BlobStore, profile: Profile, document: dict) -> pd.DataFrame:
    metadata = models.read_metadata(blobs, profile, document["city"], document["model_version"])
    if metadata is None:
        return pd.DataFrame()
    folder = layout.model_dir(profile.name, document["city"], document["model_version"])
    points = read_frame(blobs.read(folder + metadata["backtest_file"]), "backtest")
    points = points[points["entity_id"] == document["entity_id"]]
    return points.sort_values("period_start")


def _mean_actual(document: dict) -> float:
    values = [h["actual"] for h in document["history"] if h["actual"] is not None]
    return sum(values) / len(values) if values else 0.0


def step_times(blobs: BlobStore) -> tuple[dict[str, float], dict[str, int]]:
    """Per function, the seconds its invocations took in all and how many there were (run records)."""
    seconds: dict[str, float] = defaultdict(float)
    runs: dict[str, int] = defaultdict(int)
    for info in blobs.list(layout.RUNS):
        record = json.loads(blobs.read(info.name))
        seconds[record["function"]] += record["duration_seconds"]
        runs[record["function"]] += 1
    return dict(seconds), dict(runs)
