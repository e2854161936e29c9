"""Benchmark: peak memory and speed of partition on a large upload, against a bare pandas read.

    python bench/partition_memory.py [--trips-size 2G] [--rows-size 2G] [--dir DIR] [--keep]

For each kind of file it generates a CSV on local disk, streamed block by block (never whole in
memory; generation is not timed):

* trips — a Citi Bike style trip export (13 columns, some quoted station names with commas), the
  realistic big file: bike share, aggregated to station-hours;
* rows — retail store-days in the native columns, one row per store and day.

It puts the file into an embedded bucket by writing it into the bucket directory directly (the
embedded store accepts hand-put files), then runs, each in its own process so each peak is its own:

* partition — ``steps.partition.run`` on the object's finalize event, as the function would; its
  spool directory (``TMPDIR``) is polled for its peak size, because on Cloud Functions local files
  live in memory too;
* baseline — ``pandas.read_csv(path, dtype=str)`` of the same file, what the simplest script does.

It prints peak RSS, wall time and rows/s of both, the ratio of peak RSS partition / baseline, the
peak spool size, and whether partition held the target: peak RSS <= 512 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_MIB = 512
# The upload's logical time: every generated period lies before it.
AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
BLOCK_ROWS = 200_000  # rows generated and written per block


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sizes = "bytes, with a K, M or G suffix (binary units); 0 skips the file"
    parser.add_argument("--trips-size", type=_size, default=_size("2G"), help=sizes)
    parser.add_argument("--rows-size", type=_size, default=_size("2G"), help=sizes)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files and buckets")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--side", choices=["partition", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "partition":
        print(json.dumps(run_partition(args.root, args.name)))
        return
    if args.side == "baseline":
        print(json.dumps(run_baseline(args.csv)))
        return
    work = args.dir or Path(tempfile.mkdtemp(prefix="batchcast-bench-partition-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        for kind, size in (("trips", args.trips_size), ("rows", args.rows_size)):
            if size:
                compare(kind, size, work, args.seed)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def compare(kind: str, size: int, work: Path, seed: int) -> None:
    """Generate one file, run partition and the baseline on it, print both and their ratio."""
    root = work / f"bucket-{kind}"
    shutil.rmtree(root, ignore_errors=True)
    name = f"raw/dt={AT.date().isoformat()}/bench-{kind}.csv"
    path = root / name
    path.parent.mkdir(parents=True)
    started = time.perf_counter()
    rows = (generate_trips if kind == "trips" else generate_rows)(path, size, seed)
    print(
        f"{kind}: generated {rows:,} rows, {path.stat().st_size / 2**20:,.0f} MiB "
        f"in {time.perf_counter() - started:.0f} s"
    )
    spool = work / f"spool-{kind}"
    spool.mkdir(exist_ok=True)
    # The benchmark measures any size: the deployment's upload limit would reject large files unread.
    limit = {"BATCHCAST_MAX_UPLOAD_BYTES": str(path.stat().st_size)}
    partition = _child(["--side", "partition", "--root", str(root), "--name", name], spool=spool, env=limit)
    baseline = _child(["--side", "baseline", "--csv", str(path)])
    for side, result in (("partition", partition), ("baseline", baseline)):
        print(
            f"  {side:<9} peak RSS {result['peak_rss_mib']:7.0f} MiB   wall {result['seconds']:7.1f} s   "
            f"cpu {result['cpu_seconds']:7.1f} s   {result['rows'] / result['seconds']:>11,.0f} rows/s"
        )
    print(f"  partition: {partition['status']}, {partition['counts']}")
    print(f"  partition peak spool on local disk: {partition['spool_peak_mib']:,.0f} MiB")
    ratio = partition["peak_rss_mib"] / baseline["peak_rss_mib"]
    held = "holds" if partition["peak_rss_mib"] <= TARGET_MIB else "MISSED"
    print(
        f"  ratio partition/baseline peak RSS = {ratio:.2f}; target peak RSS <= {TARGET_MIB} MiB {held}; "
        f"partition RSS + spool = {partition['peak_rss_mib'] + partition['spool_peak_mib']:,.0f} MiB"
    )
    if not os.environ.get("BENCH_KEEP_BUCKETS"):
        shutil.rmtree(root, ignore_errors=True)


def _child(argv: list[str], spool: Path | None = None, env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **(env or {})}
    if spool is not None:
        env["TMPDIR"] = str(spool)
    done = subprocess.run(
        [sys.executable, __file__, *argv], capture_output=True, text=True, check=False, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv[1]} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the measured sides --------------------------------------------------------------------------


def run_partition(root: Path, name: str) -> dict:
    """Partition the hand-put object ``name`` of the embedded bucket at ``root``."""
    from batchcast.backends.embedded import finalize_event
    from batchcast.core.obs import run_logger
    from batchcast.entrypoints.runtime import embedded
    from batchcast.ports import FixedClock
    from batchcast.steps import RunContext, partition

    watcher = _SpoolWatcher(Path(tempfile.gettempdir()))
    deployment = embedded(root, clock=FixedClock(AT))
    blobs = deployment.ports.blobs
    message = finalize_event(blobs.bucket, blobs.stat(name)).model_copy(update={"logical_time": AT})
    run = RunContext("bench", "partition", run_logger("partition", "bench", None, None), deployment.settings)
    started, cpu = time.perf_counter(), time.process_time()
    result = partition.run(deployment.ports, message, run)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    watcher.stop()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "rows": result.counts.get("rows_read", 0),
        "peak_rss_mib": _peak_rss_mib(),
        "spool_peak_mib": watcher.peak / 2**20,
        "status": result.status,
        "counts": result.counts,
    }


def run_baseline(csv: Path) -> dict:
    """What the simplest script does: read the whole file as strings."""
    started, cpu = time.perf_counter(), time.process_time()
    frame = pd.read_csv(csv, dtype=str)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": len(frame), "peak_rss_mib": _peak_rss_mib()}


class _SpoolWatcher:
    """Polls the size of everything under ``directory`` and keeps the peak."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            total = 0
            for folder, _, files in os.walk(self.directory):
                for file in files:
                    with contextlib.suppress(FileNotFoundError):  # removed while we looked
                        total += os.stat(os.path.join(folder, file)).st_size
            self.peak = max(self.peak, total)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# -- generated files -----------------------------------------------------------------------------

TRIP_COLUMNS = (
    "ride_id,rideable_type,started_at,ended_at,start_station_name,start_station_id,end_station_name,"
    "end_station_id,start_lat,start_lng,end_lat,end_lng,member_casual"
)


def generate_trips(path: Path, size: int, seed: int) -> int:
    """A trip export of at most ``size`` bytes: 2,000 stations, trips spread over 120 days."""
    rng = np.random.default_rng(seed)
    stations = 2_000
    ids = np.array([f"VAN{i:04d}" for i in range(stations)], dtype=object)
    # Some station names hold a comma, so they are quoted, as in real exports.
    names = np.array(
        [f"Main St, {i} Ave" if i % 7 == 0 else f"Station {i} & {i % 97} St" for i in range(stations)],
        dtype=object,
    )
    lat, lng = 49.2 + rng.random(stations) / 10, -123.2 + rng.random(stations) / 10
    start = pd.Timestamp(AT.date()) - pd.Timedelta(days=121)
    span = int(timedelta(days=120).total_seconds())

    def block(n: int, offset: int) -> pd.DataFrame:
        began = start + pd.to_timedelta(np.sort(rng.integers(0, span, n)), unit="s")
        ended = began + pd.to_timedelta(rng.integers(120, 3600, n), unit="s")
        a, b = rng.integers(0, stations, n), rng.integers(0, stations, n)
        return pd.DataFrame(
            {
                "ride_id": [f"{offset + i:016X}" for i in range(n)],
                "rideable_type": np.where(rng.random(n) < 0.6, "classic_bike", "electric_bike"),
                "started_at": began.strftime("%Y-%m-%d %H:%M:%S"),
                "ended_at": ended.strftime("%Y-%m-%d %H:%M:%S"),
                "start_station_name": names[a],
                "start_station_id": ids[a],
                "end_station_name": names[b],
                "end_station_id": ids[b],
                "start_lat": lat[a].round(6),
                "start_lng": lng[a].round(6),
                "end_lat": lat[b].round(6),
                "end_lng": lng[b].round(6),
                "member_casual": np.where(rng.random(n) < 0.7, "member", "casual"),
            }
        )

    return _write_blocks(path, size, TRIP_COLUMNS, block)


ROW_COLUMNS = "store_id,city,date,sales,open,promo,temp,precipitation"


def generate_rows(path: Path, size: int, seed: int) -> int:
    """Retail store-days of at most ``size`` bytes: 5,000 stores in four cities, day after day
    (a concatenation of daily exports), as many days as fit, ending the day before the upload."""
    rng = np.random.default_rng(seed)
    stores = 5_000
    cities = np.array(["berlin", "munich", "cologne", "paris"], dtype=object)[np.arange(stores) % 4]
    level = rng.lognormal(8.3, 0.5, stores)
    days = int(size / (41 * stores)) + 1  # about 41 bytes a row
    first = pd.Timestamp(AT.date()) - pd.Timedelta(days=days)
    per_block = max(1, BLOCK_ROWS // stores)

    def block(n: int, offset: int) -> pd.DataFrame:
        day = offset // stores
        count = min(per_block, max(1, n // stores))
        days_ = first + pd.to_timedelta(np.arange(day, day + count), unit="D")
        dates = np.repeat(days_.strftime("%Y-%m-%d"), stores)
        open_ = rng.random(count * stores) < 0.85
        sales = np.tile(level, count) * rng.gamma(8, 1 / 8, count * stores)
        return pd.DataFrame(
            {
                "store_id": np.tile(np.arange(1, stores + 1), count),
                "city": np.tile(cities, count),
                "date": dates,
                "sales": np.where(open_, sales, 0).round(2),
                "open": open_.astype(int),
                "promo": (rng.random(count * stores) < 0.4).astype(int),
                "temp": rng.normal(10, 8, count * stores).round(1),
                "precipitation": np.maximum(rng.normal(-1, 3, count * stores), 0).round(1),
            }
        )

    return _write_blocks(path, size, ROW_COLUMNS, block, block_rows=per_block * stores)


def _write_blocks(path: Path, size: int, header: str, block, block_rows: int = BLOCK_ROWS) -> int:
    """Append generated blocks to ``path`` while they fit in ``size`` bytes; return the rows written."""
    rows = 0
    with path.open("wb") as out:
        out.write((header + "\n").encode())
        written = out.tell()
        while True:
            text = block(block_rows, rows).to_csv(index=False, header=False, lineterminator="\n").encode()
            if written + len(text) > size:
                # The last block only partly fits: keep its whole lines up to the size.
                cut = text.rfind(b"\n", 0, size - written) + 1
                out.write(text[:cut])
                rows += text[:cut].count(b"\n")
                return rows
            out.write(text)
            written += len(text)
            rows += text.count(b"\n")


def _size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1:] in units else int(text)


if __name__ == "__main__":
    main()
