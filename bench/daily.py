"""Benchmark: every store uploads its own day each day; a run must cost the same on day 1,095 as on day 30.

    python bench/daily.py [--stores 1000] [--days 30,365,730,1095] [--model cheap|retail]

For each measured day D (D days of history once that day's uploads are in), the bucket is first
brought to the state years of daily uploads leave (not measured), then the real daily flow runs
on the embedded backend, every step through ``Runtime.handle`` and the bus, on a counting blob
store (:mod:`batchcast.tools.counting`):

* **upload** — each store uploads a one-row CSV of day D in the evening (its own pinned time):
  partition → train_trigger (on_upload = predict) → predict (that store) → notify (that store);
* **tick 00:00** — the schedule's train + predict tick of day D+1 (train_trigger, the predict
  shards, and notify on each shard's predictions-ready);
* **tick 00:30** — the notify tick (every store's freshness).

The state before day D (see :func:`build_history`) is what daily uploads leave: per store, the
year segments compaction made of its older days, plus r = (store number mod 8) one-row upload
files of its last r days (compaction merges an entity's uploads once it has 8, so in steady state
each store holds 0..7 of them, and stores that started on different days are spread over 0..7);
one store in eight thus reaches 8 uploads and compacts during the measured day, as it would. It is
written fast, with the real code: partition runs directly (not through the bus, so nothing is
forecast) on bulk uploads of ~100 days, ``dataset.compact(..., force=True)`` merges them with the
segments already there, and each of the r recent days is one upload of its own. Segments hold the
same rows as daily compaction would write; only the rows' bookkeeping (which upload brought them)
differs. A train + predict tick at 00:00 of day D and the notify tick at 00:30 then leave the
model, every store's result and freshness as the schedule would.

The model: ``--model cheap`` (default) is retail with 40 boosting iterations and one backtest
fold, so that the nightly trainings do not dominate the bench's time on 2 cores; the data, cities,
schedule, look-back and 730-day training window are retail's, so what is read is the same.
``--model retail`` trains the shipped model.

Printed per measured day and step: objects listed, read and written per run (mean, max), KiB read,
stats, seconds per run (mean, p95) and peak memory per run: the tracemalloc peak (Python and numpy
allocations; not what native code such as scikit-learn's OpenMP allocates by itself). Traced runs
are slower, so they are not timed: every ``--trace-every``-th store's upload is traced, and for the
ticks the traced runs are the night-before ticks (the same work on one day less of data), leaving
the measured ticks timed. Then the ratio of the last to the first measured day (target <= 1.2),
the same between the last two days (training reads its window plus look-back, which fills up at
day 814), and the extrapolation to GCS for 4,600 stores (the formula is printed with it).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import statistics
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from batchcast.backends.embedded import EmbeddedBlobStore, finalize_event
from batchcast.core import layout
from batchcast.core.config import Profile, load_profile
from batchcast.core.messages import Message, PredictRequest, ScheduleTick, Topic
from batchcast.core.obs import configure_logging, run_logger
from batchcast.data import catalog, dataset, storage, uploads
from batchcast.entrypoints import runtime
from batchcast.ops import training
from batchcast.ports import FixedClock
from batchcast.steps import RunContext, partition
from batchcast.tools import synth
from batchcast.tools.counting import CountingBlobStore, Operation, Tally

PROFILE = "dailybench"
FIRST_DAY = date(2023, 1, 1)  # day 1 of the history; day 730 is 2024-12-30, day 1,095 2025-12-30
UPLOAD_HOURS = (18, 23)  # stores upload their day between these local hours
BULK_DAYS = 100  # history is written in bulk uploads of this many days (bounds partition's memory)
GCS_SECONDS = 0.040  # one GCS request, serial
GCS_TARGET_STORES = 4_600
LIST_PAGE = 1_000  # objects per GCS listing page (each page is a round trip)
console = Console(width=170)


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One step run: what it did through the blob store, how long it took, how much it allocated."""

    phase: str  # upload, tick 00:00, tick 00:30
    step: str  # function ← message kind
    tally: Tally
    city: str | None = None
    entities: int = 0  # the stores a predict request named
    status: str = "failed"  # the step's; an exception leaves "failed"
    counted: bool = True  # False: a probe run of the night before, measured for memory only
    seconds: float | None = None  # None when traced (tracemalloc slows a run down)
    peak_bytes: int | None = None  # tracemalloc peak, when traced
    per_store_serial: int = 0  # serial requests about one store's objects (results, batch_data)
    batches: list[tuple[int, int, bool]] = field(default_factory=list)  # (items, requests, per store)
    _per_store_concurrent: int = 0


class Meter:
    """Wraps ``Runtime.handle`` so each run is measured and attributed to its phase and step."""

    def __init__(self, deployment: runtime.Runtime, blobs: CountingBlobStore, profile: Profile) -> None:
        self.blobs = blobs
        self.phase = "setup"  # runs of this phase are not kept
        self.trace = False  # whether the next runs are traced (memory) instead of timed
        self.probe = False  # whether the next runs are kept for their memory only
        self.runs: list[Run] = []
        self._current: Run | None = None
        self._store_marker = f"/{profile.entity_key}="
        blobs.observers.append(self._observe)
        handle = deployment.handle

        def measured(function: str, message: Message, **options: Any) -> Any:
            step = f"{function} ← {message.kind}"
            with blobs.attributed(step) as tally:
                run = self._current = Run(
                    self.phase,
                    step,
                    tally,
                    city=message.city,
                    entities=len(message.entities) if isinstance(message, PredictRequest) else 0,
                    counted=not self.probe,
                )
                if self.trace:
                    tracemalloc.start()
                started = time.perf_counter()
                try:
                    result = handle(function, message, **options)
                    run.status = result.status
                    return result
                finally:
                    seconds = time.perf_counter() - started
                    if self.trace:
                        run.peak_bytes = tracemalloc.get_traced_memory()[1]
                        tracemalloc.stop()
                    else:
                        run.seconds = seconds
                    self._current = None
                    if self.phase != "setup":
                        self.runs.append(run)

        deployment.handle = measured  # type: ignore[method-assign]

    def _observe(self, operation: Operation) -> None:
        run = self._current
        if run is None or self._store_marker not in operation.name:
            return
        if operation.concurrent:
            run._per_store_concurrent += 1
        elif operation.kind != "list":
            run.per_store_serial += 1

    @contextmanager
    def counting_batches(self) -> Iterator[None]:
        """Note each ``storage.concurrently`` batch of a run: its items, the requests they made and
        whether those were about stores' objects, so the GCS estimate can overlap them as the code
        does (WORKERS at a time) and scale them with the number of stores."""
        original = storage.concurrently

        def counted(work: Callable, items: Any) -> list:
            items = list(items)
            run = self._current
            if run is None or len(items) <= 1:  # one item runs on the caller's thread: serial
                return original(work, items)
            before, per_store_before = run.tally.concurrent, run._per_store_concurrent
            try:
                return original(work, items)
            finally:
                requests = run.tally.concurrent - before
                per_store = 2 * (run._per_store_concurrent - per_store_before) > requests
                run.batches.append((len(items), requests, per_store))

        storage.concurrently = counted  # type: ignore[assignment]
        try:
            yield
        finally:
            storage.concurrently = original  # type: ignore[assignment]


# -- the bucket before a measured day ------------------------------------------------------------


def bench_profile(directory: Path, model: str) -> Profile:
    """The retail profile under another name; ``cheap`` trains fewer, shorter fits (40 iterations,
    one backtest fold) so the nightly training does not dominate the bench's time. The data, the
    cities, the schedule, the look-back and the training window stay retail's."""
    text = (Path(str(resources.files("batchcast.core") / "profiles")) / "retail.toml").read_text()
    text = text.replace('name = "retail"', f'name = "{PROFILE}"')
    if model == "cheap":
        text = re.sub(r"max_iter = \d+", "max_iter = 40", text)
        text = re.sub(r"folds = \d+", "folds = 1", text)
    (directory / f"{PROFILE}.toml").write_text(text)
    os.environ["BATCHCAST_PROFILE_DIR"] = str(directory)
    load_profile.cache_clear()
    return load_profile(PROFILE)


def day_date(day: int) -> date:
    """The calendar date of history day ``day`` (1-based)."""
    return FIRST_DAY + timedelta(days=day - 1)


def local_time(profile: Profile, day: int, hour: float) -> datetime:
    """``hour`` o'clock (fractions allowed, 24 = next midnight) on day ``day``, profile's zone."""
    midnight = datetime.combine(day_date(day), datetime.min.time(), tzinfo=profile.zone())
    return (midnight + timedelta(hours=hour)).astimezone(profile.zone())


def recent_uploads(store: str) -> int:
    """How many one-row upload files a store holds before the measured day (0..7), spread evenly."""
    return int(store) % dataset.COMPACT_AFTER


def build_history(
    deployment: runtime.Runtime,
    profile: Profile,
    frame: pd.DataFrame,
    after: int,
    day: int,
) -> None:
    """Bring the bucket from "data through day ``after``" to the state before day ``day``'s uploads.

    Per store: rows up to ``day - 1 - r`` go in bulk uploads and are compacted (force) into year
    segments, merged with those already there; the r most recent days each arrive as their own
    upload. Partition runs directly (not through the bus) on a store with no upload notification.
    """
    quiet = EmbeddedBlobStore(deployment.settings.root, clock=deployment.ports.clock)
    ports = replace(deployment.ports, blobs=quiet)
    clock: FixedClock = deployment.ports.clock  # type: ignore[assignment]
    days = (pd.to_datetime(frame["date"]) - pd.Timestamp(FIRST_DAY)).dt.days + 1
    lag = frame["store_id"].map(recent_uploads)
    bulk = frame[(days > after) & (days <= day - 1 - lag)]
    bulk_days = days[bulk.index]
    for start in range(after + 1, day, BULK_DAYS):
        chunk = bulk[(bulk_days >= start) & (bulk_days < start + BULK_DAYS)]
        if not chunk.empty:
            _partition(ports, clock, chunk, local_time(profile, int(bulk_days[chunk.index].max()), 20))
    for city in profile.cities:
        data = catalog.read(quiet, profile, city)
        stores = sorted(data)
        for first in range(0, len(stores), 200):  # bounded memory per compaction
            dataset.compact(quiet, profile, city, data, stores[first : first + 200], force=True)
    recent = frame[(days > after) & (days > day - 1 - lag) & (days < day)]
    for recent_day, rows in recent.groupby(days[recent.index]):
        _partition(ports, clock, rows, local_time(profile, int(recent_day), 20))


def _partition(ports: Any, clock: FixedClock, rows: pd.DataFrame, at: datetime) -> None:
    clock.set(at)
    name = uploads.store_upload(ports.blobs, _csv(rows), ext="csv", now=at, dataset=PROFILE)
    info = ports.blobs.stat(name)
    context = RunContext("history", "partition", run_logger("partition", "history", PROFILE, None))
    result = partition.run(ports, finalize_event("embedded", info), context)
    if result.status not in ("succeeded", "partial"):
        raise SystemExit(f"history upload failed: {result.errors}")


def _csv(rows: pd.DataFrame) -> bytes:
    return rows.to_csv(index=False, lineterminator="\n").encode()


def tick(deployment: runtime.Runtime, profile: Profile, at: datetime, actions: list[str]) -> None:
    """Publish a schedule tick for ``at`` and run everything it triggers."""
    clock: FixedClock = deployment.ports.clock  # type: ignore[assignment]
    clock.set(at)
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset=profile.name, actions=actions, logical_time=at)
    )
    deployment.bus.drain()
    deployment.results.clear()


# -- one measured day -------------------------------------------------------------------------------


def measure_day(
    deployment: runtime.Runtime,
    meter: Meter,
    profile: Profile,
    frame: pd.DataFrame,
    day: int,
    trace_every: int,
) -> dict[str, Any]:
    """Run day ``day``'s uploads and the next night's ticks; return sanity facts about the day."""
    clock: FixedClock = deployment.ports.clock  # type: ignore[assignment]
    today = frame[frame["date"] == day_date(day).isoformat()]
    today = today.sort_values("store_id", key=lambda ids: ids.astype(int))
    first, last = UPLOAD_HOURS
    spacing = (last - first) / max(len(today), 1)
    meter.phase = "upload"
    for index in range(len(today)):
        at = local_time(profile, day, first + index * spacing)
        clock.set(at)
        meter.trace = trace_every > 0 and index % trace_every == trace_every - 1
        uploads.store_upload(meter.blobs, _csv(today.iloc[[index]]), ext="csv", now=at, dataset=PROFILE)
        deployment.bus.drain()
        deployment.results.clear()
    meter.trace = False
    forecast_day = day_date(day + 1).isoformat()
    refreshed = _results_for(meter.blobs.inner, profile, forecast_day)
    meter.phase = "tick 00:00"
    tick(deployment, profile, local_time(profile, day, 24), ["train", "predict"])
    meter.phase = "tick 00:30"
    tick(deployment, profile, local_time(profile, day, 24.5), ["notify"])
    return {
        "uploads": len(today),
        "refreshed_by_uploads": refreshed,
        "results_after_tick": _results_for(meter.blobs.inner, profile, forecast_day),
        "dead_letters": sum(len(deployment.bus.dead_letters(t.value)) for t in Topic),
        "failed_runs": sum(run.status in ("failed", "partial") for run in meter.runs),
    }


def _results_for(blobs: Any, profile: Profile, target_day: str) -> int:
    return sum(
        1
        for info in blobs.list(layout.results_prefix(profile.name))
        if info.metadata.get("target_start", "").startswith(target_day)
    )


# -- reporting ------------------------------------------------------------------------------------

PHASES = ("upload", "tick 00:00", "tick 00:30")


def grouped(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    """Runs by (phase, step), in the order of the flow."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.phase, run.step), []).append(run)
    return dict(sorted(groups.items(), key=lambda item: (PHASES.index(item[0][0]), _step_order(item[0][1]))))


def _step_order(step: str) -> int:
    order = ("partition", "train_trigger", "predict", "notify")
    function = step.split(" ")[0]
    return order.index(function) if function in order else len(order)


def summarise(runs: list[Run]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (phase, step): per-run means and maxima of what the runs did.

    Requests and seconds come from the measured runs (seconds from those not traced); peak memory
    from the traced ones, which for the ticks are the probe runs of the night before.
    """
    summary = {}
    for key, group in grouped(runs).items():
        counted = [r for r in group if r.counted]
        if not counted:
            continue
        tallies = [r.tally for r in counted]
        seconds = sorted(r.seconds for r in counted if r.seconds is not None)
        peaks = [r.peak_bytes / 2**20 for r in group if r.peak_bytes is not None]
        summary[key] = {
            "runs": len(counted),
            "listed": statistics.fmean(t.listed for t in tallies),
            "listed_max": max(t.listed for t in tallies),
            "read": statistics.fmean(t.reads for t in tallies),
            "read_max": max(t.reads for t in tallies),
            "kib_read": statistics.fmean(t.read_bytes for t in tallies) / 1024,
            "stats": statistics.fmean(t.stats for t in tallies),
            "written": statistics.fmean(t.writes for t in tallies),
            "written_max": max(t.writes for t in tallies),
            "seconds": statistics.fmean(seconds) if seconds else math.nan,
            "p95": _p95(seconds),
            "peak_mib": statistics.fmean(peaks) if peaks else math.nan,
            "peak_mib_max": max(peaks) if peaks else math.nan,
        }
    return summary


def _p95(ordered: list[float]) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def gcs_estimate(group: list[Run], scale: Callable[[Run], float]) -> dict[str, float]:
    """Per-run GCS latency of these runs (mean and max), each run's per-store work scaled by k.

    T = 40 ms × (S + k·S_store + Σ_batches ceil(k_b·n/W) · ceil(o/n) + max(L, ceil(k·listed / 1000))),
    where S_store is the requests the step made one after another on its own thread about a
    store's objects (results/, batch_data/) and S its other serial requests; a
    ``storage.concurrently`` batch of n items making o requests runs W = storage.WORKERS at a time
    (k_b = k when they were about stores' objects, else 1); L list calls return 1,000 objects a page.
    k = 1 for a store's upload; for a predict shard of a tick, the stores of the largest shard the
    planner makes of its city at the target size over the stores of the measured shard; for the
    other tick runs, which work on every store, target stores / measured stores. CPU: measured
    seconds × k.
    """
    latencies, requests, cpu = [], [], []
    for run in group:
        k, tally = scale(run), run.tally
        # Requests from a pool other than storage.concurrently's are in no batch: counted serial.
        batched_requests = sum(made for _, made, _ in run.batches)
        serial = tally.operations - tally.list_calls - batched_requests - run.per_store_serial
        rounds = sum(
            math.ceil((k if per_store else 1) * n / storage.WORKERS) * math.ceil(made / n)
            for n, made, per_store in run.batches
        )
        pages = max(tally.list_calls, math.ceil(k * tally.listed / LIST_PAGE))
        latencies.append(GCS_SECONDS * (serial + k * run.per_store_serial + rounds + pages))
        batched = sum((k if per_store else 1) * made for _, made, per_store in run.batches)
        requests.append(serial + k * run.per_store_serial + batched + pages)
        if run.seconds is not None:
            cpu.append(k * run.seconds)
    return {
        "mean": statistics.fmean(latencies),
        "max": max(latencies),
        "requests": statistics.fmean(requests),
        "k": statistics.fmean(scale(run) for run in group),
        "cpu": statistics.fmean(cpu) if cpu else math.nan,
    }


def largest_shards(blobs: Any, profile: Profile, at: datetime, scale: float) -> dict[str, int]:
    """Per city, the stores in the largest predict shard of the tick at ``at`` had the city ``scale``
    times its stores: the real planner on copies of the city's stores."""
    tick = ScheduleTick(dataset=profile.name, actions=["predict"], logical_time=at)
    largest = {}
    for city in profile.cities:
        stores = list(catalog.read(blobs, profile, city).values())
        if not stores:
            continue
        copies = {f"copy-{i}": stores[i % len(stores)] for i in range(round(scale * len(stores)))}
        planned = training.predict_requests(profile, city, "target", copies, tick)
        largest[city] = max(len(request.entities) for request in planned)
    return largest


def _add_column(table: Table, column: str) -> None:
    label = column in ("phase", "step ← message")
    table.add_column(column, justify="left" if label else "right", no_wrap=label)


def _fmt(value: float, digits: int = 1) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}" if digits else f"{value:,.0f}"


def print_day(day: int, summary: dict, facts: dict[str, Any], seconds: float) -> None:
    """The day's table: one row per (phase, step)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        caption="per run: mean and max; peak MiB: tracemalloc peak per run (ticks: the night before's)",
        caption_justify="left",
        title=f"day {day:,} ({day_date(day)}): {facts['uploads']:,} uploads, {seconds:,.0f} s; "
        f"results for the next day after uploads {facts['refreshed_by_uploads']:,}, after the tick "
        f"{facts['results_after_tick']:,}; failed runs {facts['failed_runs']}, "
        f"dead letters {facts['dead_letters']}",
        title_justify="left",
    )
    for column in (
        "phase",
        "step ← message",
        "runs",
        "listed",
        "max",
        "read",
        "max",
        "KiB read",
        "stats",
        "written",
        "max",
        "s mean",
        "s p95",
        "peak MiB",
        "max",
    ):
        _add_column(table, column)
    for (phase, step), s in summary.items():
        table.add_row(
            phase,
            step,
            f"{s['runs']:,}",
            _fmt(s["listed"]),
            f"{s['listed_max']:,}",
            _fmt(s["read"]),
            f"{s['read_max']:,}",
            _fmt(s["kib_read"], 0),
            _fmt(s["stats"]),
            _fmt(s["written"]),
            f"{s['written_max']:,}",
            _fmt(s["seconds"], 3),
            _fmt(s["p95"], 3),
            _fmt(s["peak_mib"]),
            _fmt(s["peak_mib_max"]),
        )
    console.print(table)


RATIO_METRICS = (
    ("listed", "listed"),
    ("read", "read"),
    ("kib_read", "KiB read"),
    ("stats", "stats"),
    ("written", "written"),
    ("seconds", "s mean"),
    ("p95", "s p95"),
    ("peak_mib", "peak MiB"),
)


def print_ratios(title: str, later: dict, earlier: dict, target: float | None) -> None:
    """``later / earlier`` per step and metric (per-run means); over ``target`` is marked."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("phase", "step ← message", *(label for _, label in RATIO_METRICS)):
        _add_column(table, column)
    for key, late in later.items():
        early = earlier.get(key)
        if early is None:
            continue
        cells = []
        for metric, _ in RATIO_METRICS:
            a, b = late[metric], early[metric]
            if math.isnan(a) or math.isnan(b):
                cells.append("-")
            elif b == 0:
                cells.append("=" if a == 0 else "new")
            else:
                ratio = a / b
                mark = " !" if target is not None and ratio > target else ""
                cells.append(f"{ratio:.2f}{mark}")
        table.add_row(*key, *cells)
    console.print(table)


def print_gcs(runs: list[Run], stores: int, day: int, largest: dict[str, int]) -> None:
    """The GCS extrapolation for ``GCS_TARGET_STORES`` stores, from the runs of one measured day
    (``largest``: the largest predict shard per city at the target size)."""
    scale = GCS_TARGET_STORES / stores

    def k(run: Run) -> float:
        if run.phase == "upload":
            return 1.0
        if run.step.startswith("predict") and run.city in largest:
            return largest[run.city] / run.entities
        return scale

    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"GCS estimate for {GCS_TARGET_STORES:,} stores from day {day:,} (40 ms per request, "
        f"{storage.WORKERS} in flight in a batch; largest predict shard per city: "
        + ", ".join(f"{city} {n:,}" for city, n in largest.items())
        + ")",
        title_justify="left",
    )
    for column in ("phase", "step ← message", "k", "requests/run", "I/O s mean", "I/O s max", "+ CPU s"):
        _add_column(table, column)
    for (phase, step), group in grouped([r for r in runs if r.counted]).items():
        estimate = gcs_estimate(group, k)
        table.add_row(
            phase,
            step,
            f"{estimate['k']:.2f}",
            _fmt(estimate["requests"]),
            _fmt(estimate["mean"], 2),
            _fmt(estimate["max"], 2),
            _fmt(estimate["cpu"], 2),
        )
    console.print(table)


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--days", default="30,365,730,1095", help="measured days, ascending (comma list)")
    parser.add_argument("--model", choices=["cheap", "retail"], default="cheap")
    parser.add_argument(
        "--trace-every", type=int, default=10, help="trace memory of every N-th store's upload (0: none)"
    )
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--root", type=Path, help="keep the bucket here (default: a temporary directory)")
    args = parser.parse_args()
    days = sorted({int(d) for d in args.days.split(",")})
    if days[0] < 2 or any(b - a < dataset.COMPACT_AFTER for a, b in itertools.pairwise(days)):
        raise SystemExit(f"measured days must be >= 2 and at least {dataset.COMPACT_AFTER} apart")
    with tempfile.TemporaryDirectory(prefix="batchcast-daily-") as scratch:
        run_bench(args, days, Path(scratch), args.root or Path(scratch) / "bucket")


def run_bench(args: argparse.Namespace, days: list[int], scratch: Path, root: Path) -> None:
    """Build, measure and print every day, then the comparisons."""
    started = time.perf_counter()
    configure_logging(open(scratch / "runs-log.jsonl", "w"))  # noqa: SIM115 - lives as long as the process
    profile = bench_profile(scratch, args.model)
    frame = synth.generate(profile, args.stores, days[-1], seed=args.seed, end=day_date(days[-1]))
    console.print(
        f"[bold]bench/daily.py[/]: {args.stores:,} stores in {len(profile.cities)} cities, "
        f"profile {PROFILE} (retail, model {args.model}), measured days {days}, "
        f"python {sys.version.split()[0]}, storage.WORKERS={storage.WORKERS}"
    )
    clock = FixedClock(local_time(profile, 1, 0))
    deployment = runtime.embedded(root, clock=clock, backoff_seconds=0.01)
    blobs = CountingBlobStore(deployment.ports.blobs)
    deployment.ports.blobs = blobs
    meter = Meter(deployment, blobs, profile)
    summaries: dict[int, dict] = {}
    runs_by_day: dict[int, list[Run]] = {}
    largest_by_day: dict[int, dict[str, int]] = {}
    after = 0
    with meter.counting_batches():
        for day in days:
            day_started = time.perf_counter()
            meter.phase, meter.runs = "setup", []
            build_history(deployment, profile, frame, after, day)
            # The night before: a model and every store's result, as the schedule leaves them. Its
            # runs do what the measured night's do (on one day less): traced, they give the ticks'
            # memory, and the measured ticks are left untraced, so timed.
            meter.probe = meter.trace = True
            meter.phase = "tick 00:00"
            tick(deployment, profile, local_time(profile, day, 0), ["train", "predict"])
            meter.phase = "tick 00:30"
            tick(deployment, profile, local_time(profile, day, 0.5), ["notify"])
            meter.probe = meter.trace = False
            built = time.perf_counter() - day_started
            facts = measure_day(deployment, meter, profile, frame, day, args.trace_every)
            runs_by_day[day] = meter.runs
            largest_by_day[day] = largest_shards(
                blobs.inner, profile, local_time(profile, day, 24), GCS_TARGET_STORES / args.stores
            )
            summaries[day] = summarise(meter.runs)
            console.print(f"history to day {day:,} built in {built:,.0f} s")
            print_day(day, summaries[day], facts, time.perf_counter() - day_started - built)
            after = day
    first, last = days[0], days[-1]
    if len(days) > 1:
        print_ratios(
            f"ratio day {last:,} / day {first:,} (per-run means; ! over 1.2)",
            summaries[last],
            summaries[first],
            1.2,
        )
    if len(days) > 2:
        before = days[-2]
        print_ratios(
            f"ratio day {last:,} / day {before:,}: training reads its {profile.training.window}-day window, "
            f"the backtest folds and the look-back, full from day {training.history_periods(profile):,} on",
            summaries[last],
            summaries[before],
            1.2,
        )
    for day in dict.fromkeys((first, last)):  # shards are largest early in the year: show both ends
        print_gcs(runs_by_day[day], args.stores, day, largest_by_day[day])
    formula = (gcs_estimate.__doc__ or "").split("T = ", 1)[1].split("\n\n")[0]
    console.print(textwrap.fill("T = " + " ".join(formula.split()), width=110))
    console.print(f"total {time.perf_counter() - started:,.0f} s")


if __name__ == "__main__":
    main()
