"""Shared fixtures: an embedded deployment on a temporary directory with a pinned clock."""

from __future__ import annotations

import os
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


# -- the emulator stack ----------------------------------------------------------------------------

TESTS = Path(__file__).parent


def require_emulators() -> None:
    """Skip without the stack's prerequisites, but fail under CI=true: CI must never skip these."""
    from batchcast import stack

    try:
        stack.find_prerequisites()
    except stack.StackError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {error}", pytrace=False)
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def emulator_stack(tmp_path_factory: pytest.TempPathFactory):
    """One emulator stack for the session; its predict fails the first delivery of every message."""
    from batchcast import stack

    require_emulators()
    directory = tmp_path_factory.mktemp("stack")
    flaky = directory / "flaky"
    flaky.mkdir()
    state = stack.up(
        directory,
        sources={"predict": TESTS / "stack_targets" / "flaky_predict.py"},
        extra_env={"BATCHCAST_TEST_FLAKY_DIR": str(flaky)},
    )
    try:
        yield state
    finally:
        stack.down(directory)


@pytest.fixture
def stack_env(emulator_stack, monkeypatch: pytest.MonkeyPatch):
    """This test's process talks to the stack (client libraries read the emulator variables)."""
    for name, value in emulator_stack.env().items():
        monkeypatch.setenv(name, value)
    return emulator_stack
