"""Fixtures of the results API's tests: a bucket the real pipeline filled, a token map, clients.

The bucket is built once per session (4 retail stores through partition → train → predict →
notify), then copied per test that changes it; a second notify three days later turns every store
stale, which is what managers see when the pipeline stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from batchcast.backends.embedded import EmbeddedBlobStore
from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops.tokens import TokenStore, hash_token
from batchcast.ports import FixedClock
from batchcast.tools import synth
from batchcast.tools.counting import CountingBlobStore
from batchcast_api.app import create_app

NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
START_SECONDS = 180  # a busy 2-core machine can take a minute to import the app
LATER = NOW + timedelta(days=3)
TOKEN_MAP = {  # the token of the holder named X is "X-token"
    "tokens": [
        {"sha256": hash_token("ops-token"), "name": "ops", "role": "operator"},
        # anna manages stores 1 and 2, and "ghost", which has no results (yet)
        {
            "sha256": hash_token("anna-token"),
            "name": "anna",
            "role": "manager",
            "entities": {"retail": ["1", "2", "ghost"]},
        },
        {
            "sha256": hash_token("bob-token"),
            "name": "bob",
            "role": "manager",
            "entities": {"retail": ["3"], "bikeshare": ["st-1"]},
        },
        {"sha256": hash_token("feed-token"), "name": "feed", "role": "uploader", "datasets": ["retail"]},
    ]
}
STATION = {  # a bike-share station's results document, in the shape predict writes
    "dataset": "bikeshare",
    "entity_key": "station_id",
    "entity_id": "st-1",
    "city": "vancouver",
    "timezone": "America/Vancouver",
    "as_of": "2026-03-02T14:00:00+00:00",
    "model_version": "20260302T140000Z-0123456789",
    "target": {"start": "2026-03-02T06:00:00", "end": "2026-03-02T12:00:00"},
    "forecast": [
        {
            "period_start": f"2026-03-02T{h:02d}:00:00",
            "period_end": f"2026-03-02T{h + 1:02d}:00:00",
            "p10": -3.0,
            "p50": float(h - 8),
            "p90": 4.5,
        }
        for h in range(6, 12)
    ],
    "history": [{"period_start": "2026-03-02T05:00:00", "actual": 1.0}],
}


def _auth(holder: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {holder}-token"}


@pytest.fixture
def auth():
    """``auth("anna")`` -> the Authorization header of anna's token (see TOKEN_MAP)."""
    return _auth


@pytest.fixture(scope="session")
def token_map_json() -> str:
    """The token map as BATCHCAST_API_TOKENS holds it."""
    return json.dumps(TOKEN_MAP)


@pytest.fixture(scope="session")
def filled_bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bucket after the whole retail flow (fresh), plus one bike-share station's results."""
    root = tmp_path_factory.mktemp("api") / "fresh"
    deployment = runtime.embedded(root, clock=FixedClock(NOW), backoff_seconds=0.001)
    frame = synth.generate(load_profile("retail"), 4, 90, seed=2, end=NOW.date() - timedelta(days=1))
    uploads.store_upload(
        deployment.ports.blobs, frame.to_csv(index=False).encode(), ext="csv", now=NOW, dataset="retail"
    )
    deployment.bus.drain()
    deployment.ports.blobs.write(
        layout.results_object("bikeshare", "station_id", "st-1"), json.dumps(STATION).encode()
    )
    return root


@pytest.fixture(scope="session")
def stale_bucket(filled_bucket: Path) -> Path:
    """The same bucket three days later: notify found every store's forecast out of date."""
    root = filled_bucket.parent / "stale"
    shutil.copytree(filled_bucket, root)
    deployment = runtime.embedded(root, clock=FixedClock(LATER), backoff_seconds=0.001)
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset="retail", actions=["notify"], logical_time=LATER)
    )
    deployment.bus.drain()
    return root


def recording_store(root: Path) -> CountingBlobStore:
    """The embedded store over ``root``, remembering every name it is asked about (to prove none was)."""
    return CountingBlobStore(EmbeddedBlobStore(root), names=True)


@pytest.fixture
def recording():
    """``recording(root)`` -> a :func:`recording_store` over ``root``."""
    return recording_store


@pytest.fixture
def blobs(stale_bucket: Path, tmp_path: Path) -> CountingBlobStore:
    """A private copy of the stale bucket (tests may change it), recording what is read."""
    root = tmp_path / "bucket"
    shutil.copytree(stale_bucket, root)
    return recording_store(root)


@pytest.fixture
def client(blobs: CountingBlobStore) -> Iterator[TestClient]:
    """The app over the stale bucket with the token map from the environment's JSON."""
    app = create_app(blobs=blobs, tokens=TokenStore(blobs, json.dumps(TOKEN_MAP)))
    with TestClient(app) as test_client:
        yield test_client


@contextlib.contextmanager
def serving(root: Path, token_map_json: str, now: datetime | None = None) -> Iterator[str]:
    """``batchcast serve --port 0 --root <root>`` in its own process (its clock pinned to ``now``
    when given); yields its base URL."""
    env = os.environ | {"BATCHCAST_API_TOKENS": token_map_json}
    if now is not None:
        env["BATCHCAST_NOW"] = now.isoformat()
    command = [sys.executable, "-m", "batchcast.tools.cli", "serve", "--port", "0", "--root", str(root)]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:  # read stderr to the end, so a chatty server never blocks on a full pipe
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while True:  # uvicorn says where it listens once it does
            try:
                if time.monotonic() > deadline:
                    raise queue.Empty
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"batchcast serve did not start within {START_SECONDS} s")
            if line is None:
                pytest.fail(f"batchcast serve exited with {process.wait()}")
            if "Uvicorn running on" in line:
                base = line.split("Uvicorn running on ")[1].split()[0]
                break
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def server(stale_bucket: Path, token_map_json: str) -> Iterator[str]:
    """``batchcast serve`` over the stale bucket; yields its base URL."""
    with serving(stale_bucket, token_map_json) as base:
        yield base
