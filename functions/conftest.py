"""Fixtures for the tests beside each function: a real functions-framework app per function.

Each test serves ``functions/<name>/main.py`` through functions-framework's own app factory (the
code path ``functions-framework --target <name>`` uses) on the embedded backend in a temp dir.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import functions_framework
import pytest
from flask.testing import FlaskClient

from batchcast.backends.embedded import finalize_event
from batchcast.core.config import load_profile
from batchcast.core.events import published_event_data
from batchcast.core.messages import Message, PartitionsReady
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.tools import synth

FUNCTIONS = Path(__file__).parent
NOW = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> runtime.Runtime:
    """The runtime the function's process builds from BATCHCAST_* (embedded, clock pinned)."""
    monkeypatch.setenv("BATCHCAST_ROOT", str(tmp_path / "bucket"))
    monkeypatch.setenv("BATCHCAST_NOW", NOW.isoformat())
    monkeypatch.delenv("BATCHCAST_API_TOKENS", raising=False)
    runtime.from_env.cache_clear()
    yield runtime.from_env()
    runtime.from_env.cache_clear()


@pytest.fixture
def serve() -> Callable[[str, str], FlaskClient]:
    """``serve("predict")`` -> a test client of that function's functions-framework app."""

    def make(function: str, signature: str = "cloudevent") -> FlaskClient:
        app = functions_framework.create_app(function, str(FUNCTIONS / function / "main.py"), signature)
        return app.test_client()

    return make


def binary_event(event_type: str, data: dict) -> tuple[dict, bytes]:
    """Headers and body of a binary-mode CloudEvent, as Eventarc sends them."""
    headers = {
        "ce-id": "1",
        "ce-source": "//test",
        "ce-type": event_type,
        "ce-specversion": "1.0",
        "ce-time": NOW.isoformat(),
        "Content-Type": "application/json",
    }
    return headers, json.dumps(data).encode()


def structured_event(event_type: str, data: dict) -> tuple[dict, bytes]:
    """Headers and body of a structured-mode CloudEvent, as curl examples send them."""
    envelope = {
        "specversion": "1.0",
        "id": "1",
        "source": "//test",
        "type": event_type,
        "time": NOW.isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    return {"Content-Type": "application/cloudevents+json"}, json.dumps(envelope).encode()


def published(message: Message) -> dict:
    """The data of a messagePublished CloudEvent carrying ``message`` (a push subscription's shape)."""
    return published_event_data(message, NOW)


@pytest.fixture
def cloud_events():
    """The event builders above, for tests (importlib mode keeps conftest out of imports)."""

    class Events:
        binary = staticmethod(binary_event)
        structured = staticmethod(structured_event)
        pubsub = staticmethod(published)

    return Events


@pytest.fixture
def partitioned(deployment):
    """A bucket with a small retail upload already partitioned; returns the partitions-ready message."""
    frame = synth.generate(load_profile("retail"), 6, 90, seed=2, end=NOW.date())
    blobs = deployment.ports.blobs
    name = uploads.store_upload(
        blobs, frame.to_csv(index=False).encode(), ext="csv", now=NOW, dataset="retail"
    )
    result = deployment.handle("partition", finalize_event(blobs.bucket, blobs.stat(name)))
    [ready] = [m for m in result.messages if isinstance(m, PartitionsReady)]
    return ready
