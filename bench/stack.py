"""Benchmark: the same upload on the emulator stack and on the embedded backend.

    python bench/stack.py [--stores 200] [--days 730]

Generates one retail CSV (not timed), then:

* embedded — what ``batchcast upload`` does, in this process: store the file under raw/ and drain
  the in-process bus (partition → train_trigger → predict → notify);
* stack — ``batchcast stack up`` in a temporary directory (not timed), then the file is uploaded
  into raw/ with the plain google-cloud-storage client; GCS notification → Pub/Sub push →
  functions-framework servers do the rest.

Both report the wall time from the upload to the end of the last predict run (from the run
records the functions write), and the ratio stack / embedded.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ports import BlobStore
from batchcast.tools import stack, synth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=200)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the stack")
    args = parser.parse_args()
    profile = load_profile("retail")
    frame = synth.generate(
        profile, args.stores, args.days, seed=args.seed, end=date.today() - timedelta(days=1)
    )
    data = frame.to_csv(index=False).encode()
    print(f"retail {args.stores} stores × {args.days} days: {len(frame):,} rows, {len(data) / 1e6:.1f} MB")
    with tempfile.TemporaryDirectory(prefix="batchcast-bench-stack-") as scratch:
        embedded = run_embedded(Path(scratch) / "bucket", data)
        print(f"embedded: {embedded:8.1f} s upload → last prediction")
        emulated = run_stack(Path(scratch) / "stack", data, args.stores, args.timeout)
        print(f"stack:    {emulated:8.1f} s upload → last prediction")
    print(f"ratio stack / embedded: {emulated / embedded:.2f}")


def run_embedded(root: Path, data: bytes) -> float:
    """Upload and drain in-process; seconds from the upload to the end of the last predict run."""
    deployment = runtime.embedded(root)
    started = datetime.now(UTC)
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=started, dataset="retail")
    deployment.bus.drain()
    return _last_prediction(deployment.ports.blobs, started)


def run_stack(directory: Path, data: bytes, stores: int, timeout: float) -> float:
    """Bring the stack up, upload with the plain client, wait for every store's result."""
    from batchcast.backends.gcp import GcsBlobStore, storage_client

    state = stack.up(directory)
    try:
        with stack.environ(state.env()):
            bucket = storage_client(state.project).bucket(state.bucket)
            started = datetime.now(UTC)
            name = f"{layout.RAW}dt={started.date()}/bench-{started:%H%M%S}.csv"
            bucket.blob(name).upload_from_string(data, content_type="text/csv", if_generation_match=0)
            blobs = GcsBlobStore(state.bucket, state.project)
            deadline = time.monotonic() + timeout
            while sum(1 for _ in blobs.list(layout.results_prefix("retail"))) < stores:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the stack did not forecast {stores} stores in {timeout:.0f}s")
                time.sleep(2)
            time.sleep(5)  # the last predict run writes its record after its results
            return _last_prediction(blobs, started)
    finally:
        stack.down(directory)


def _last_prediction(blobs: BlobStore, started: datetime) -> float:
    ends = []
    for info in blobs.list(layout.RUNS):
        record = json.loads(blobs.read(info.name))
        if record["function"] == "predict" and record["status"] != "failed":
            begun = datetime.fromisoformat(record["started_at"])
            ends.append(begun + timedelta(seconds=record["duration_seconds"]))
    if not ends:
        raise SystemExit("no predict run was recorded")
    return (max(ends) - started).total_seconds()


if __name__ == "__main__":
    main()
