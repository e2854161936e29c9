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

from batchcast.core.config import Profile
from batchcast.core.messages import Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ports import FixedClock
from batchcast.tools import report, synth

Progress = Callable[[str, int], None]  # (function, deliveries so far)


@dataclass
class DemoResult:
    """What the demo did and where its outputs are."""

    profile: str
    root: Path
    rows: int
    upload: str
    clock: datetime
    seconds: float
    cities: list[report.CitySummary]
    step_seconds: dict[str, float] = field(default_factory=dict)
    step_runs: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    chart: Path | None = None


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
) -> DemoResult:
    """Generate, upload and run everything to completion on the embedded backend (in ``root``,
    which the caller has prepared with :func:`prepare_root`)."""
    started = time.monotonic()
    frame = synth.generate(profile, entities, days, seed=seed, end=end)
    source = runtime.state_dir(root) / "demo" / f"{profile.name}.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    synth.write_csv(frame, source)
    at = demo_clock(profile, end)
    deployment = runtime.embedded(root, clock=FixedClock(at))
    if progress:
        counts: Counter[str] = Counter()

        def listen(function: str) -> None:
            counts[function] += 1
            progress(function, counts[function])

        deployment.on_delivery(listen)
    name = uploads.store_upload(
        deployment.ports.blobs, source.read_bytes(), ext="csv", now=at, dataset=profile.name
    )
    deployment.bus.drain()
    result = DemoResult(
        profile=profile.name,
        root=root,
        rows=len(frame),
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
    return result
