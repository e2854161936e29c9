"""Shared fixtures: an embedded deployment on a temporary directory with a pinned clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcast import runtime
from batchcast.config import Profile, load_profile
from batchcast.obs import run_logger
from batchcast.ports import FixedClock
from batchcast.steps import RunContext


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def deployment(tmp_path: Path, clock: FixedClock) -> runtime.Runtime:
    return runtime.embedded(tmp_path / "bucket", clock=clock, backoff_seconds=0.001)


@pytest.fixture
def run_context() -> RunContext:
    return RunContext("test-run", "test", run_logger("test", "test-run", None, None))


@pytest.fixture(scope="module")
def retail() -> Profile:
    return load_profile("retail")


@pytest.fixture(scope="module")
def bikeshare() -> Profile:
    return load_profile("bikeshare")
