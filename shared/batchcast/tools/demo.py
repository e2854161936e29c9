"""``batchcast demo``: generate data, run the whole event-driven flow in-process, summarise it.

The demo's clock stands at the first scheduled run after the generated data ends (retail: midnight;
bike-share: 06:00), the moment a real deployment would forecast from such an upload.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import pandas as pd

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.messages import Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops import tokens
from batchcast.ports import BlobStore, FixedClock
from batchcast.tools import report, synth

Progress = Callable[[str, int], None]  # (function, deliveries so far)
DAILY_DAYS = 14  # the last days, uploaded one day at a time: the pages' track record


@dataclass
class DemoResult:
    """What the demo did and where its outputs are."""

    profile: str
    root: Path
    rows: int
    upload: str  # the history's upload; then daily_uploads more, one per recent day
    clock: datetime
    seconds: float
    cities: list[report.CitySummary]
    step_seconds: dict[str, float] = field(default_factory=dict)
    step_runs: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    chart: Path | None = None
    manager_token: str = ""  # a demo manager's token for the page, and what it may see
    manager_entities: list[str] = field(default_factory=list)
    daily_uploads: int = 0


def demo_clock(profile: Profile, last_day: date) -> datetime:
    """The first scheduled forecast after data ending on ``last_day``: 00:00 or the first window."""
    first_hour = profile.horizon.windows[0][0] if profile.horizon.windows else 0
    local = datetime.combine(last_day + timedelta(days=1), clock_time(first_hour))
    return local.replace(tzinfo=profile.zone())


def prepare_root(root: Path) -> None:
    """Start from an empty root; refuse to wipe a directory batchcast did not create."""
    if root.exists() and any(root.iterdir()):
        if not runtime.state_dir(root).is_dir():
            raise FileExistsError(f"{root} is not empty and is not a batchcast root; choose another --root")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)


def run_demo(
    profile: Profile,
    *,
    entities: int,
    days: int,
    root: Path,
    seed: int = 0,
    end: date,
    progress: Progress | None = None,
    daily_days: int = DAILY_DAYS,
) -> DemoResult:
    """Generate, upload and run everything to completion on the embedded backend (in ``root``,
    which the caller has prepared with :func:`prepare_root`).

    The last ``daily_days`` days arrive as daily uploads, each at the first scheduled forecast
    after its day, so every page has a track record: each of those periods was forecast before its
    actuals came."""
    started = time.monotonic()
    frame = synth.generate(profile, entities, days, seed=seed, end=end)
    source = runtime.state_dir(root) / "demo" / f"{profile.name}.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    synth.write_csv(frame, source)
    at = demo_clock(profile, end)
    clock = FixedClock(at)
    deployment = runtime.embedded(root, clock=clock)
    if progress:
        counts: Counter[str] = Counter()

        def listen(function: str) -> None:
            counts[function] += 1
            progress(function, counts[function])

        deployment.on_delivery(listen)
    name, daily_uploads = _upload_in_days(deployment, clock, profile, frame, end, daily_days)
    result = DemoResult(
        profile=profile.name,
        root=root,
        rows=len(frame),
        daily_uploads=daily_uploads,
        upload=name,
        clock=at,
        seconds=time.monotonic() - started,
        cities=report.city_summaries(deployment.ports.blobs, profile),
        dead_letters=sum(len(deployment.bus.dead_letters(topic.value)) for topic in Topic),
    )
    result.step_seconds, result.step_runs = report.step_times(deployment.ports.blobs)
    result.chart = report.plot_forecasts(
        deployment.ports.blobs, profile, root / f"forecast-{profile.name}.png"
    )
    result.manager_token, result.manager_entities = grant_demo_manager(deployment.ports.blobs, profile)
    return result


def _upload_in_days(
    deployment: runtime.Runtime,
    clock: FixedClock,
    profile: Profile,
    frame: pd.DataFrame,
    end: date,
    daily_days: int,
) -> tuple[str, int]:
    """Upload the history, then each recent day at its own clock; return the history's upload name
    and how many daily uploads followed."""
    if daily_days <= 0:
        return _upload(deployment, clock, profile, frame, demo_clock(profile, end)), 0
    history, recent = synth.split_days(frame, daily_days)
    name = _upload(deployment, clock, profile, history, demo_clock(profile, recent[0][0] - timedelta(days=1)))
    for day, rows in recent:
        _upload(deployment, clock, profile, rows, demo_clock(profile, day))
    return name, len(recent)


def _upload(
    deployment: runtime.Runtime, clock: FixedClock, profile: Profile, rows: pd.DataFrame, at: datetime
) -> str:
    """Upload ``rows`` with the clock at ``at`` and run what it triggers; return the upload's name."""
    clock.set(at)  # the deployment's clock: events, runs and objects take this time
    data = synth.csv_bytes(rows)
    name = uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=at, dataset=profile.name)
    deployment.bus.drain()
    return name


DEMO_MANAGER_ENTITIES = 5  # what the demo manager sees: the first entities with a forecast


def grant_demo_manager(blobs: BlobStore, profile: Profile) -> tuple[str, list[str]]:
    """Give ``demo-manager`` a token for the first entities with a forecast; return it and them."""
    entities = forecast_entities(blobs, profile.name)[:DEMO_MANAGER_ENTITIES]
    return tokens.grant(blobs, "demo-manager", "manager", {profile.name: entities}), entities


def forecast_entities(blobs: BlobStore, dataset: str) -> list[str]:
    """The ids of a dataset's entities that have a forecast in ``results/``, sorted."""
    return sorted(layout.parse_results(info.name)[1] for info in blobs.list(layout.results_prefix(dataset)))
