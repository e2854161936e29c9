"""Benchmark: per-store daily uploads on the emulator stack, through a proxy that injects faults.

    python bench/faults.py [--stores 200] [--days 3] [--reset 0.05] [--unavailable 0.02] [--latency 0.02]

The same run twice, each on a fresh stack (``batchcast stack up``) with a mitmproxy reverse proxy
(bench/fault_proxy.py, bench/fault_addon.py) between the functions and the emulators: once with no
faults, once with faults. The proxy sits on

* every GCS request of the functions (their ``STORAGE_EMULATOR_HOST`` is the proxy; answers that
  name fake-gcs-server's own address are rewritten so streamed reads and resumable uploads stay on
  the proxy too);
* every Pub/Sub push (the push subscriptions' endpoints are the proxy): a 503 or a dropped
  connection there is a failed delivery, which the emulator redelivers with backoff and counts
  towards the dead-letter limit of 5 attempts.

Publishing is gRPC (HTTP/2) to the Pub/Sub emulator and does not go through the proxy; the stores'
own uploads do not either (the faults are between the functions and the emulators).

The workload: one history file for every store (the cities' first training), then for each of
``--days`` days every store uploads a one-day file of its own, all stores at once; each day's
uploads must have re-forecast every store before the next day starts. Printed for each run:
uploads, runs, faults injected, retries (the functions' logged in-call retries, metric
``batchcast_retry``, and the pushes Pub/Sub delivered again), runs failed finally, dead letters,
stores with results, rows lost (rows uploaded that a reader of the dataset does not get back).

The stack's clock (``<dir>/clock``) is pinned to each day's 21:00, so both runs have the same
logical times, and their outputs are compared byte for byte where the README promises it:
``batch_data/``, ``manifests/``, ``predictions/``, ``results/`` and the models' backtests. (A
model file's bytes differ between two trainings on the same data, and so does the training's
duration recorded in metadata.json and metrics/; the version and every prediction are the same.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import fault_proxy
import pandas as pd
from daily import bench_profile

from batchcast.backends.gcp import GcsBlobStore, PubSubBus, storage_client
from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.messages import Topic
from batchcast.data import catalog, dataset
from batchcast.entrypoints.wiring import FUNCTIONS
from batchcast.tools import stack, synth

PUSHED = [name for name in FUNCTIONS if name != "ingest"]  # ingest is HTTP, called by stores
END = date(2026, 3, 1)  # the last uploaded day; in the past, so no event is ever "too old"
# Longer than 5 deliveries at the stack's 10 s maximum backoff, plus their runs.
SETTLE_SECONDS = 120
COMPARED = ("batch_data/", "manifests/", "predictions/", "results/", "models/")


@dataclass
class Outcome:
    """What one run left: its counts and the outputs compared between runs."""

    label: str
    counts: dict[str, object]
    rows: pd.DataFrame
    outputs: dict[str, bytes]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--history-days", type=int, default=60)
    parser.add_argument("--days", type=int, default=3, help="days of per-store uploads")
    parser.add_argument("--reset", type=float, default=0.05, help="share of requests dropped")
    parser.add_argument("--unavailable", type=float, default=0.02, help="share answered 503")
    parser.add_argument("--latency", type=float, default=0.02, help="share delayed")
    parser.add_argument("--latency-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for one day's forecasts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchcast-bench-faults-") as scratch:
        profile = bench_profile(Path(scratch), "cheap")
        frame = synth.generate(profile, args.stores, args.history_days + args.days, seed=args.seed, end=END)
        frame["date"] = pd.to_datetime(frame["date"])
        days = sorted(frame["date"].unique())[-args.days :]
        print(
            f"{profile.name}: {args.stores} stores, {args.history_days} days of history, "
            f"then {args.days} days of per-store uploads ({len(frame):,} rows)"
        )
        faults = fault_proxy.FaultMix(
            args.reset, args.unavailable, args.latency, args.latency_seconds, seed=args.seed
        )
        runs = [("no faults", fault_proxy.FaultMix()), ("faults", faults)]
        outcomes = [
            run(label, mix, Path(scratch) / label.replace(" ", "-"), profile, frame, days, args.timeout)
            for label, mix in runs
        ]
    report(outcomes, faults)
    if not all(_target_met(o, args.stores) for o in outcomes) or not _same_outputs(*outcomes):
        sys.exit(1)


def run(
    label: str,
    mix: fault_proxy.FaultMix,
    directory: Path,
    profile: Profile,
    frame: pd.DataFrame,
    days: list[pd.Timestamp],
    timeout: float,
) -> Outcome:
    """One whole run on a fresh stack behind a proxy injecting ``mix``."""
    gcs_port = stack.free_port()
    function_ports = {name: stack.free_port() for name in FUNCTIONS}
    gcs = f"http://{stack.HOST}:{gcs_port}"
    upstreams = {"gcs": gcs} | {name: f"http://{stack.HOST}:{function_ports[name]}" for name in PUSHED}
    proxy = fault_proxy.start(upstreams, directory / "proxy", mix, rewrite={gcs: "gcs"})
    started = time.monotonic()
    try:
        state = stack.up(
            directory / "stack",
            gcs_port=gcs_port,
            function_ports=function_ports,
            extra_env={
                "STORAGE_EMULATOR_HOST": proxy.url("gcs"),
                "BATCHCAST_PROFILE_DIR": str(Path(str(directory)).parent),
            },
            push_endpoints={name: proxy.url(name) + "/" for name in PUSHED},
        )
        try:
            with stack.environ(state.env()):
                uploads = upload_all(state, profile, frame, days, timeout)
                counts, rows, outputs = collect(state, profile, frame)
                counts = {"uploads": uploads, **counts}
        finally:
            stack.down(directory / "stack")
    finally:
        proxy.stop()
    injected = proxy.injected()
    counts["faults injected"] = ", ".join(f"{n} {kind}" for kind, n in sorted(injected.items())) or "0"
    # A dropped or refused push is a failed delivery: Pub/Sub delivers it again.
    pushes = sum(n for name in PUSHED for kind, n in proxy.injected(name).items() if kind != "latency")
    counts["retries"] = f"{counts.pop('retries logged')} in calls, {pushes} redelivered pushes"
    counts["seconds"] = round(time.monotonic() - started)
    print(f"{label}: done in {counts['seconds']} s", flush=True)
    return Outcome(label, counts, rows, outputs)


def upload_all(
    state: stack.StackState, profile: Profile, frame: pd.DataFrame, days: list[pd.Timestamp], timeout: float
) -> int:
    """The history file, then each day every store's own file; wait for each step's forecasts.

    Returns how many files were uploaded."""
    bucket = storage_client(state.project).bucket(state.bucket)
    stores = sorted(frame["store_id"].astype(str).unique())

    def upload(name: str, rows: pd.DataFrame) -> None:
        data = rows.to_csv(index=False).encode()
        blob = bucket.blob(f"{layout.RAW}dt={state.clock.now().date()}/{name}.csv")
        blob.metadata = {"dataset": profile.name}  # retail's columns: say which dataset it is
        blob.upload_from_string(data, content_type="text/csv", if_generation_match=0)

    blobs = GcsBlobStore(state.bucket, state.project)
    state.clock.set(_evening(profile, days[0] - pd.Timedelta(days=1)))
    upload("history", frame[frame["date"] < days[0]])
    uploads = 1
    _wait("every store's first forecast", lambda: _forecast_through(blobs, profile, stores, None), timeout)
    for day in days:
        rows = frame[frame["date"] == day]
        files = {s: group for s, group in rows.groupby(rows["store_id"].astype(str))}
        state.clock.set(_evening(profile, day))  # each store uploads its day at 21:00
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(upload, [f"{s}-{day:%Y%m%d}" for s in files], files.values()))
        uploads += len(files)
        # A store with no sales row that day (the data has gaps) uploads nothing that day.
        _wait(
            f"every uploading store's forecast after {day:%F}",
            lambda d=day, uploaded=list(files): _forecast_through(blobs, profile, uploaded, d),
            timeout,
        )
        print(f"  {day:%F}: {len(files)} uploads forecast", flush=True)
    return uploads


def _evening(profile: Profile, day: pd.Timestamp) -> datetime:
    return datetime.combine(day.date(), datetime.min.time(), profile.zone()) + timedelta(hours=21)


def _forecast_through(
    blobs: GcsBlobStore, profile: Profile, stores: list[str], day: pd.Timestamp | None
) -> bool:
    """Every store has a result, and (with ``day``) its actuals include that day."""
    names = {info.name for info in blobs.list(layout.results_prefix(profile.name))}
    wanted = [layout.results_object(profile.name, profile.entity_key, s) for s in stores]
    if not set(wanted) <= names:
        return False
    if day is None:
        return True
    stamp = f"{day:%Y-%m-%d}T00:00:00"
    for name in wanted:
        history = json.loads(blobs.read(name))["history"]
        if not any(h["period_start"] == stamp and h["actual"] is not None for h in history):
            return False
    return True


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(3)


def collect(
    state: stack.StackState, profile: Profile, frame: pd.DataFrame
) -> tuple[dict[str, object], pd.DataFrame, dict[str, object]]:
    """Counts from the run records and dead-letter topics, the dataset's rows, each store's forecast."""
    blobs = GcsBlobStore(state.bucket, state.project)
    time.sleep(10)  # notify runs after the last result is written; let its record land
    logs = Path(state.directory) / "logs"
    retries = sum(
        line.count('"metric": "batchcast_retry"')
        for f in logs.glob("*.log")
        for line in f.open(errors="replace")
    )
    records, failed_finally = _settled_runs(blobs)
    for record in failed_finally:
        print(
            f"  failed finally: {record['function']} {record['dataset']}/{record.get('city') or '-'} "
            f"{record['message']['idempotency_key']}: {record.get('error') or record.get('errors')}",
            flush=True,
        )
    bus = PubSubBus(state.project)
    letters = sum(len(bus.dead_letters(topic)) for topic in Topic)
    bus.close()
    rows = pd.concat(
        dataset.read_rows(blobs, profile, catalog.read(blobs, profile, city)) for city in profile.cities
    )
    columns = ["store_id", "date", "sales"]
    rows = rows[columns].assign(store_id=rows["store_id"].astype(str)).sort_values(columns[:2])
    rows = rows.reset_index(drop=True)
    uploaded = frame[columns].assign(store_id=frame["store_id"].astype(str))
    merged = uploaded.merge(rows, on=columns, how="left", indicator=True)
    names = [i.name for prefix in COMPARED for i in blobs.list(f"{prefix}dataset={profile.name}/")]
    names = [n for n in names if not Path(n).name.startswith(("model-", "metadata.json"))]
    outputs = {name: blobs.read(name) for name in names}
    stores = {n for n in names if n.startswith(layout.results_prefix(profile.name))}
    counts = {
        "runs": len(records),
        "runs failed (then redelivered)": sum(r["status"] == "failed" for r in records),
        "runs failed finally": len(failed_finally),
        "dead letters": letters,
        "stores with results": len(stores),
        "rows lost": int((merged["_merge"] == "left_only").sum()),
        "retries logged": retries,
    }
    return counts, rows, outputs


def _settled_runs(blobs: GcsBlobStore) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every run record, and the last record of each message whose every run failed.

    A failed push is delivered again within the subscriptions' backoff (at most 10 s) until its
    5th attempt, so a message counts as failed finally only once it has stayed failed for longer
    than that: a notify failing just before the count would otherwise be counted while its
    redelivery is still on the way."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        records = [json.loads(blobs.read(info.name)) for info in blobs.list(layout.RUNS)]
        by_message: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record in records:
            key = (record["function"], record["message"]["idempotency_key"])
            by_message.setdefault(key, []).append(record)
        failed = [
            max(runs, key=lambda r: r.get("started_at", ""))
            for runs in by_message.values()
            if all(r["status"] == "failed" for r in runs)
        ]
        if not failed or time.monotonic() > deadline:
            return records, failed
        time.sleep(10)


def report(outcomes: list[Outcome], mix: fault_proxy.FaultMix) -> None:
    """The counts side by side, then whether the outputs are the same."""
    print(
        f"\nfaults: {mix.reset:.0%} dropped connections, {mix.unavailable:.0%} 503 answers, "
        f"{mix.latency:.0%} delayed {mix.latency_seconds:g} s (GCS requests and Pub/Sub pushes)"
    )
    names = list(outcomes[0].counts)
    width = max(len(n) for n in names)
    print(f"{'':{width}}  " + "  ".join(f"{o.label:>24}" for o in outcomes))
    for name in names:
        print(f"{name:{width}}  " + "  ".join(f"{o.counts[name]!s:>24}" for o in outcomes))
    clean, faulty = outcomes
    print(f"rows read back identical: {clean.rows.equals(faulty.rows)} ({len(faulty.rows):,} rows)")
    differ = sorted(set(clean.outputs) ^ set(faulty.outputs))
    differ += sorted(
        n for n in set(clean.outputs) & set(faulty.outputs) if clean.outputs[n] != faulty.outputs[n]
    )
    print(
        f"outputs byte-identical: {not differ} ({len(clean.outputs):,} objects under {', '.join(COMPARED)})"
    )
    for name in differ[:10]:
        print(f"  differs: {name}")


def _target_met(outcome: Outcome, stores: int) -> bool:
    counts = outcome.counts
    return (
        counts["runs failed finally"] == 0
        and counts["dead letters"] == 0
        and counts["stores with results"] == stores
        and counts["rows lost"] == 0
    )


def _same_outputs(clean: Outcome, faulty: Outcome) -> bool:
    return clean.rows.equals(faulty.rows) and clean.outputs == faulty.outputs


if __name__ == "__main__":
    main()
