"""Latency of the operators' console routes over a long history, against the same bucket a month old.

    python bench/console.py [--stores 1000] [--days 365] [--baseline-days 30] [--requests 40]

Seeds two embedded buckets directly (no pipeline runs, so it takes a minute or two, not hours):
``--stores`` retail stores, each uploading once a day for ``--days`` (and ``--baseline-days``) days,
with a partition run per upload (2 % partly rejected, 0.5 % rejected outright), a train_trigger and
a predict run per city and a notify run per day in the run index; one model version per city per day;
results, freshness and alert episodes; 20 dead letters and a few audit records. Days older than two
days are seeded as the rolled-up ``_day.json`` their first reader writes (see batchcast.ops.runs),
the two open days as one index entry per run, as the runtime writes them.

Then ``batchcast serve`` answers ``--requests`` sequential GETs per console route on loopback (one
keep-alive connection, an operator's token); the table gives p50 and p95 per route for both buckets
and the ratio of the p95s (near 1: the cost does not grow with history). Target: p95 <= 300 ms.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import random
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from batchcast.backends.embedded import STATE_DIR, EmbeddedBlobStore
from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.data import catalog, storage
from batchcast.ops import runs

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("results_bench", HERE / "api.py")
results_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results_bench)  # write_bucket (results, freshness, tokens) and start_server

OPERATOR_TOKEN = "operator-secret"  # bench/api.py's token map has this operator
CITIES = results_bench.CITIES
TARGET_P95 = 0.300


def seed(root: Path, stores: int, days: int, today: date, seed_value: int = 7) -> dict[str, str]:
    """Write the history; return sample ids the routes ask about (a run, a store, an upload day)."""
    rng = random.Random(seed_value)
    results_bench.write_bucket(root, stores)
    blobs = EmbeddedBlobStore(root)
    profile = load_profile("retail")
    entities = [results_bench.store_id(i) for i in range(stores)]
    city_of = {e: CITIES[i % len(CITIES)] for i, e in enumerate(entities)}
    first = today - timedelta(days=days - 1)
    sample_run = ""
    latest: dict[str, str] = {}
    for offset in range(days):
        day = first + timedelta(days=offset)
        summaries = _day_runs(day, entities, city_of, rng)
        if today - day >= runs.CLOSED_AFTER:
            rollup = {"day": day.isoformat(), "runs": summaries}
            blobs.write(layout.run_index_rollup(day), json.dumps(rollup).encode())
        else:
            for entry in summaries:
                runs.record(blobs, day, _as_record(entry), [])
        failed = next(s for s in summaries if s["status"] == "failed")
        sample_run = failed["run_id"]
        record = failed | {"message": {"kind": "predict-request", "city": failed["city"]}, "outputs": []}
        blobs.write(layout.run_record(day, sample_run), storage.dumps(record))
        blobs.write(
            layout.run_log(day, sample_run),
            json.dumps({"level": "ERROR", "message": failed["error"]}).encode() + b"\n",
        )
        for city in CITIES:
            version = latest[city] = f"{day:%Y%m%d}T000000Z-{rng.getrandbits(40):010x}"
            blobs.write(
                layout.model_dir("retail", city, version) + "metadata.json",
                storage.dumps(_metadata(version, day, city, rng)),
            )
    for city in CITIES:
        blobs.write(
            layout.model_latest("retail", city),
            storage.dumps(
                {"version": latest[city], "fingerprint": "x", "trained_for": f"{today}T00:00:00+00:00"}
            ),
        )
    _seed_manifests(blobs, profile, entities, city_of, first, today)
    _seed_dead_letters(root, today)
    return {"run": sample_run, "store": entities[1], "day": today.isoformat()}


def _day_runs(day: date, entities: list[str], city_of: dict[str, str], rng: random.Random) -> list[dict]:
    """One day's run summaries: a partition per store's upload, train_trigger and predict per city."""
    at = f"{day}T06:00:00+00:00"
    summaries = []
    for index, entity in enumerate(entities):
        draw = rng.random()
        status = "rejected" if draw < 0.005 else "partial" if draw < 0.025 else "succeeded"
        upload = f"{entity}-{day:%Y%m%d}"
        rejected = {"succeeded": 0, "partial": 3, "rejected": 120}[status]
        summaries.append(
            _summary(f"{day:%Y%m%d}T060000Z-p{index:05d}", "partition", city_of[entity], status, at)
            | {
                "rows_accepted": 120 - rejected,
                "rows_rejected": rejected,
                "upload_id": upload,
                "raw_object": layout.raw_object(day, upload, "csv"),
                "report": layout.rejected_report(day, upload) if rejected else None,
                "rejected_rows": layout.rejected_object(day, upload, "csv") if rejected else None,
                "error": "3 rows: sales is not a number" if rejected else None,
            }
        )
    for number, city in enumerate(CITIES):
        summaries.append(_summary(f"{day:%Y%m%d}T070000Z-t{number}", "train_trigger", city, "succeeded", at))
        failed = number == 0 and day.day % 7 == 0
        summaries.append(
            _summary(
                f"{day:%Y%m%d}T080000Z-f{number}", "predict", city, "failed" if failed else "succeeded", at
            )
            | (
                {"error": f"OSError: model storage for {city} unreachable", "error_class": "OSError"}
                if failed
                else {}
            )
        )
    summaries.append(_summary(f"{day:%Y%m%d}T090000Z-n", "notify", None, "succeeded", at))
    # Every day has at least one failure to sample: a predict outage on day 0 of the week, else this.
    summaries.append(
        _summary(f"{day:%Y%m%d}T100000Z-x", "predict", CITIES[1], "failed", at)
        | {"error": "ConfigError: retail needs horizon.windows", "error_class": "ConfigError"}
    )
    return summaries


def _as_record(summary: dict) -> dict:
    """A run record carrying ``summary`` the way the runtime writes one (counts, upload details)."""
    counts = {k: summary.pop(k) for k in ("rows_accepted", "rows_rejected") if k in summary}
    details = {k: summary.pop(k) for k in runs.UPLOAD_FIELDS if k in summary}
    return summary | {
        "message": {"logical_time": summary["logical_time"]},
        "counts": counts,
        "details": details,
    }


def _summary(run_id: str, function: str, city: str | None, status: str, at: str) -> dict:
    return {
        "run_id": run_id,
        "function": function,
        "dataset": "retail",
        "city": city,
        "status": status,
        "started_at": at,
        "duration_seconds": round(random.uniform(0.2, 4.0), 3),
        "error_class": None,
        "error": None,
        "logical_time": at,
        "parent_run_id": None,
    }


def _metadata(version: str, day: date, city: str, rng: random.Random) -> dict:
    return {
        "dataset": "retail",
        "city": city,
        "version": version,
        "trained_for": f"{day}T00:00:00+00:00",
        "training_window": {"start": f"{day - timedelta(days=365)}", "end": f"{day}"},
        "rows": 250 * 365,
        "entities": 250,
        "train_seconds": round(rng.uniform(20, 60), 1),
        "metrics": {"overall": {"mase": rng.uniform(0.5, 0.9), "coverage": 0.8, "coverage_raw": 0.7}},
    }


def _seed_manifests(blobs, profile, entities, city_of, first: date, today: date) -> None:
    # One compacted segment per store up to yesterday; every tenth store stopped uploading a week ago.
    for city in CITIES:
        files = {}
        for index, entity in enumerate(e for e in entities if city_of[e] == city):
            last = today - timedelta(days=8 if index % 10 == 0 else 1)
            name = layout.segment_object("retail", city, "store_id", entity, f"{last:%Y}", "0" * 8)
            files[entity] = catalog.DataFile(
                name, "segment", f"{first}T00:00:00", f"{last}T00:00:00", (last - first).days + 1, "0" * 32
            )
        catalog.record(blobs, profile, city, files)


def _seed_dead_letters(root: Path, today: date) -> None:
    lines = [
        {
            "id": f"dl-{n}",
            "message_id": f"dl-{n}",
            "subscription": "predict--predict-requests",
            "attempts": 5,
            "error": "OSError: model storage for berlin unreachable",
            "dead_lettered_at": f"{today}T08:00:00+00:00",
            "attributes": {"dataset": "retail", "city": "berlin", "kind": "predict-request"},
            "data": "{}",
        }
        for n in range(20)
    ]
    bus = root / STATE_DIR / "bus"
    bus.mkdir(parents=True, exist_ok=True)
    (bus / "predict-requests-dlq.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def routes(sample: dict[str, str]) -> list[str]:
    """The console's GET routes, with ids the bucket has."""
    return [
        "/api/ops/runs?days=14",
        f"/api/ops/runs/{sample['run']}",
        "/api/ops/uploads/retail?days=7",
        f"/api/ops/uploads/retail/stores/{sample['store']}",
        "/api/ops/deadletters",
        "/api/ops/models/retail",
        "/api/ops/freshness/retail",
        "/api/ops/audit",
    ]


def measure(base: str, paths: list[str], requests: int) -> dict[str, tuple[float, float, float]]:
    """The first (cold) request's time, then p50 and p95 (seconds) of ``requests`` sequential GETs
    of each path on one connection. Grid and uploads are cached for 10 s by the app: the cold time
    is what a request pays when the cache has expired."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "Accept": "application/json"}
    figures = {}
    for path in paths:
        times = []
        cold = 0.0
        for attempt in range(requests + 2):
            started = time.perf_counter()
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise SystemExit(f"{path}: {response.status} {body[:500]!r}")
            if attempt == 0:  # rolls closed days up if no reader did yet
                cold = time.perf_counter() - started
            if attempt >= 2:
                times.append(time.perf_counter() - started)
        times.sort()
        figures[path] = (cold, statistics.median(times), times[int(0.95 * (len(times) - 1))])
    connection.close()
    return figures


def run(days: int, stores: int, requests: int, workdir: Path) -> dict[str, tuple[float, float, float]]:
    """Seed a bucket with ``days`` of history, serve it and measure every route."""
    root = workdir / f"days-{days}"
    today = datetime.now(UTC).date()  # batchcast serve runs on the system clock
    started = time.perf_counter()
    sample = seed(root, stores, days, today)
    print(f"seeded {stores} stores x {days} days in {time.perf_counter() - started:.0f} s", flush=True)
    process, base = results_bench.start_server(root, workdir / f"serve-{days}.log", timeout=300)
    try:
        figures = measure(base, routes(sample), requests)
    finally:
        process.terminate()
        process.wait(timeout=20)
    # Sample ids differ between buckets; report by route shape.
    return {_shape(path): value for path, value in figures.items()}


def _shape(path: str) -> str:
    parts = path.split("?")[0].split("/")
    if parts[3] == "runs" and len(parts) == 5:
        parts[4] = "{run_id}"
    if parts[-2] == "stores":
        parts[-1] = "{store}"
    return "/".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--baseline-days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as workdir:
        baseline = run(args.baseline_days, args.stores, args.requests, Path(workdir))
        history = run(args.days, args.stores, args.requests, Path(workdir))
    print(
        f"\n{'route':40} {'cold':>8} {'p50':>8} {'p95':>8} at {args.baseline_days} days | at {args.days} days"
    )
    worst = 0.0
    for route, (cold, p50, p95) in history.items():
        base_cold, base50, base95 = baseline[route]
        worst = max(worst, p95)
        print(
            f"{route:40} {base_cold * 1000:6.0f}ms {base50 * 1000:6.1f}ms {base95 * 1000:6.1f}ms | "
            f"{cold * 1000:6.0f}ms {p50 * 1000:6.1f}ms {p95 * 1000:6.1f}ms  p95 ratio {p95 / base95:.2f}"
        )
    verdict = "meets" if worst <= TARGET_P95 else "MISSES"
    target = f"{TARGET_P95 * 1000:.0f} ms"
    print(f"\nworst p95 at {args.days} days: {worst * 1000:.1f} ms ({verdict} the {target} target)")


if __name__ == "__main__":
    main()
