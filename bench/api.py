"""Load benchmark of the results API on loopback: authenticated GET /results/{store_id} at a fixed rate.

    python bench/api.py [--stores 1000] [--rate 200] [--seconds 30]

Writes a bucket with ``--stores`` retail results documents (the shape predict writes: one forecast
row, 56 days of history), ``status/freshness.json`` for all of them and a token map with one
manager per store plus an operator (in ``config/api_tokens.json``, as a deployment without
``BATCHCAST_API_TOKENS`` reads it). Starts ``batchcast serve`` in its own process, then sends
requests open-loop (each at its scheduled time, whether or not earlier ones have answered), each
with a random store's manager token. Latency counts from the scheduled time, so a slow server
cannot hide queueing. The last line prints p50, p99 and errors; targets: p99 <= 50 ms, 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import date, timedelta
from pathlib import Path

from batchcast.backends.embedded import EmbeddedBlobStore
from batchcast.core import layout
from batchcast.ops.tokens import hash_token

AS_OF = "2026-03-02T00:00:00+00:00"
TARGET = date(2026, 3, 3)
CITIES = ("berlin", "cologne", "munich", "paris")


def store_id(index: int) -> str:
    return f"store-{index:04d}"


def token(index: int) -> str:
    return f"manager-{index:04d}-secret"


def write_bucket(root: Path, stores: int, seed: int = 1) -> None:
    """Results documents, freshness and the token map for ``stores`` stores."""
    rng = random.Random(seed)
    blobs = EmbeddedBlobStore(root)
    entities = {}
    for index in range(stores):
        entity, city = store_id(index), CITIES[index % len(CITIES)]
        level = rng.uniform(2_000, 20_000)
        document = {
            "dataset": "retail",
            "entity_key": "store_id",
            "entity_id": entity,
            "city": city,
            "timezone": "Europe/Paris" if city == "paris" else "Europe/Berlin",
            "as_of": AS_OF,
            "model_version": "20260302T000000Z-0123456789",
            "target": {"start": f"{TARGET}T00:00:00", "end": f"{TARGET + timedelta(days=1)}T00:00:00"},
            "forecast": [
                {
                    "period_start": f"{TARGET}T00:00:00",
                    "period_end": f"{TARGET + timedelta(days=1)}T00:00:00",
                    "p10": round(level * 0.8, 4),
                    "p50": round(level, 4),
                    "p90": round(level * 1.2, 4),
                }
            ],
            "history": [
                {
                    "period_start": f"{TARGET - timedelta(days=d)}T00:00:00",
                    "actual": round(rng.gauss(level, level / 5), 4),
                }
                for d in range(56, 0, -1)
            ],
        }
        blobs.write(
            layout.results_object("retail", "store_id", entity),
            json.dumps(document, indent=2, sort_keys=True).encode(),
            metadata={"city": city, "as_of": AS_OF, "target_start": document["target"]["start"]},
        )
        stale = index % 10 == 0
        entities[entity] = {
            "city": city,
            "as_of": AS_OF,
            "forecast_for": document["target"]["start"],
            "expected": f"{TARGET + timedelta(days=1)}T00:00:00" if stale else f"{TARGET}T00:00:00",
            "stale": stale,
            "since": AS_OF,
            "reason": "latest forecast is older than expected" if stale else None,
        }
    freshness = {"datasets": {"retail": {"checked_at": AS_OF, "stale": stores // 10, "entities": entities}}}
    blobs.write(layout.FRESHNESS, json.dumps(freshness).encode())
    managers = [
        {
            "sha256": hash_token(token(i)),
            "name": f"manager-{i}",
            "role": "manager",
            "entities": {"retail": [store_id(i)]},
        }
        for i in range(stores)
    ]
    operator = {"sha256": hash_token("operator-secret"), "name": "ops", "role": "operator"}
    blobs.write(layout.API_TOKENS, json.dumps({"tokens": [*managers, operator]}).encode())


def start_server(root: Path, log: Path, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """``batchcast serve --port 0`` on ``root``; returns the process and its base URL."""
    env = {k: v for k, v in os.environ.items() if k != "BATCHCAST_API_TOKENS"}
    command = [sys.executable, "-m", "batchcast.tools.cli", "serve", "--port", "0", "--root", str(root)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "Uvicorn running on" in line:
                return process, line.split("Uvicorn running on ")[1].split()[0]
        if process.poll() is not None:
            raise SystemExit(f"batchcast serve exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    process.terminate()
    raise SystemExit(f"batchcast serve did not start within {timeout:.0f} s")


class Connection:
    """One keep-alive HTTP/1.1 connection with just enough parsing for the API's answers.

    A hand-rolled client keeps the load generator's own CPU cost far below the server's, so on
    a 2-core machine the numbers measure the API rather than the client.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str, token: str) -> tuple[int, bytes]:
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n".encode()
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length"
        )
        return status, await self.reader.readexactly(length)


async def drive(
    base: str, stores: int, rate: float, seconds: float, seed: int = 2
) -> tuple[list[float], int]:
    """Send ``rate`` requests per second for ``seconds``; return latencies (s) and the error count."""
    rng = random.Random(seed)
    host, port = base.removeprefix("http://").split(":")
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(await Connection.open(host, int(port)))
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0

    async def one(scheduled: float, index: int) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
        connection = await pool.get()
        try:
            status, body = await asyncio.wait_for(
                connection.get(f"/results/{store_id(index)}", token(index)), 5
            )
            ok = status == 200 and json.loads(body)["entity_id"] == store_id(index)
            pool.put_nowait(connection)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, KeyError, StopIteration):
            ok = False
            connection.writer.close()
            pool.put_nowait(await Connection.open(host, int(port)))  # a broken connection is replaced
        latencies.append(time.perf_counter() - scheduled)
        errors += not ok

    start = time.perf_counter() + 0.5
    await asyncio.gather(*(one(start + i / rate, rng.randrange(stores)) for i in range(total)))
    while not pool.empty():
        pool.get_nowait().writer.close()
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batchcast-bench-api-") as scratch:
        root = Path(scratch) / "bucket"
        started = time.perf_counter()
        write_bucket(root, args.stores)
        print(
            f"wrote {args.stores} results documents and a {args.stores + 1}-token map in "
            f"{time.perf_counter() - started:.1f} s"
        )
        process, base = start_server(root, Path(scratch) / "serve.log")
        try:
            warm = urllib.request.Request(
                f"{base}/results/{store_id(0)}", headers={"Authorization": f"Bearer {token(0)}"}
            )
            with urllib.request.urlopen(warm, timeout=10) as response:  # first request loads the caches
                assert response.status == 200
            print(f"serving on {base}; {args.rate:.0f} requests/s for {args.seconds:.0f} s")
            began = time.perf_counter()
            latencies, errors = asyncio.run(drive(base, args.stores, args.rate, args.seconds))
            elapsed = time.perf_counter() - began
        finally:
            process.terminate()
            process.wait(timeout=20)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"{len(ordered)} requests in {elapsed:.1f} s; max {ordered[-1] * 1000:.1f} ms")
    verdict = "PASS" if p99 <= 50 and errors == 0 else "FAIL"
    print(
        f"p50={p50:.1f}ms p99={p99:.1f}ms errors={errors} requests={len(ordered)} "
        f"rate={args.rate:.0f}/s target=p99<=50ms,errors=0 {verdict}"
    )


if __name__ == "__main__":
    main()
