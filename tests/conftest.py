"""Shared fixtures: an embedded deployment on a temporary directory with a pinned clock."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from batchcast.core.config import Profile, load_profile
from batchcast.entrypoints import runtime
from batchcast.ports import FixedClock

# Tests that need more than this process and the venv, told apart by the fixtures they use (the
# emulator stack, an SMTP server, a server subprocess, Chromium), and tests marked `slow` (they
# train models on larger data): `make test-unit` leaves them out, `make test` runs everything.
# Everything else is a unit test.
INTEGRATION_FIXTURES = frozenset(
    {"emulator_stack", "stack_env", "stack_profiles", "smtp", "server", "console_server"}
)
BROWSER_FIXTURES = frozenset({"chromium", "browser"})
# Fixtures that train models (the API tests' bucket after the whole retail flow, a retail
# backtest): a test using one is slow wherever it lives. Single tests that train are marked slow
# in their files.
SLOW_FIXTURES = frozenset({"filled_bucket", "retail_backtest"})


# `make test` runs two pytest-xdist workers (`-n 2`), each given whole files (xdist's load-file
# scheduling), so a fixture shared by a module is built once. Every file that uses the session's
# emulator stack goes to one worker, so one stack serves them all. (xdist's own `--dist loadgroup`
# renames node ids, which pytest 9 no longer allows: this scheduler groups by file name instead.)
# The longest work goes first, so neither worker is left with a long tail: the crash tests (minutes
# of killed and restarted processes) and the emulator stack's files.
STACK_FIXTURES = frozenset({"emulator_stack", "stack_env", "stack_profiles"})
STACK_GROUP = "emulator-stack"
LONG_FILES = frozenset({"test_crashes.py"})
STACK_USE = re.compile(r"def \w+\([^)]*\b(" + "|".join(sorted(STACK_FIXTURES)) + r")\b")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist (the test extra installs it)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """xdist's load-file scheduler with every file that uses the session stack in one group, the
    groups handed out in collection order (longest first, see pytest_collection_modifyitems)."""
    from xdist.scheduler import LoadFileScheduling

    class StackAwareScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_group(config.rootpath / nodeid.split("::", 1)[0])

    config.option.loadscopereorder = False  # by default xdist hands out the groups with most tests first
    return StackAwareScheduling(config, log)


@functools.cache
def work_group(path: Path) -> str:
    """A test file's xdist work group: STACK_GROUP for the files that use the session stack, else the file."""
    return STACK_GROUP if path.is_file() and STACK_USE.search(path.read_text()) else str(path)


def runs_long(path: Path) -> bool:
    """Whether a test file's work is among the longest of the suite (it goes first)."""
    return path.name in LONG_FILES or work_group(path) == STACK_GROUP


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every collected test (here and under functions/) unit, integration and/or browser
    (unit unless it is one of those or slow), and put the longest-running files first."""
    items.sort(key=lambda item: not runs_long(item.path))  # stable: each file keeps its order
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        if used & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if not any(item.get_closest_marker(name) for name in ("integration", "browser", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 0, 0, tzinfo=UTC))


@pytest.fixture
def deployment(tmp_path: Path, clock: FixedClock) -> runtime.Runtime:
    return runtime.embedded(tmp_path / "bucket", clock=clock, backoff_seconds=0.001)


@pytest.fixture(scope="module")
def retail() -> Profile:
    return load_profile("retail")


@pytest.fixture(scope="module")
def bikeshare() -> Profile:
    return load_profile("bikeshare")


def write_small_retail(directory: Path, name: str, sales_column: str = "sales", **training: object) -> Path:
    """Write ``<directory>/<name>.toml``: the retail profile cut to two cities and a cheaper model.

    ``sales_column`` renames the native export's sales column (so its files fit only this
    profile); keyword arguments become extra ``[training]`` settings (strings are quoted).
    """
    text = (Path(str(resources.files("batchcast.core") / "profiles")) / "retail.toml").read_text()
    text = text.replace('sales = "sales"', f'sales = "{sales_column}"')
    text = re.sub(r"\n\[cities\.(cologne|paris)\]\n(\w+ = .*\n)+", "\n", text)
    text = text.replace("max_iter = 150", "max_iter = 40").replace("folds = 6", "folds = 1")
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in training.items())
    text = text.replace('name = "retail"', f'name = "{name}"')
    text = text.replace("debounce_minutes = 0\n", "debounce_minutes = 0\n" + extra)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def profile_writer() -> Callable[..., Path]:
    """:func:`write_small_retail`, for tests that put a profile where a running stack reads it."""
    return write_small_retail


@pytest.fixture
def small_retail(tmp_path_factory, monkeypatch) -> Iterator[Callable[..., Profile]]:
    """``small_retail("name", **training)``: a :func:`write_small_retail` profile, loaded.

    Its directory is ``BATCHCAST_PROFILE_DIR`` for the test (child processes inherit it).
    """
    directory = tmp_path_factory.mktemp("profiles")
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(directory))

    def make(name: str, **training: object) -> Profile:
        write_small_retail(directory, name, **training)
        load_profile.cache_clear()
        return load_profile(name)

    yield make
    load_profile.cache_clear()


@pytest.fixture
def predict_fails_for(monkeypatch) -> Callable[[str], Callable[[], None]]:
    """``predict_fails_for("munich")`` makes predict's model load fail there (an outage).

    Returns a function that ends the outage, as deploying a fix would.
    """
    from batchcast.steps import predict

    original = predict.training.load_model

    def start(failing_city: str) -> Callable[[], None]:
        def broken(blobs, profile, city, version):
            if city == failing_city:
                raise OSError(f"model storage for {city} unreachable")
            return original(blobs, profile, city, version)

        monkeypatch.setattr(predict.training, "load_model", broken)
        return lambda: monkeypatch.setattr(predict.training, "load_model", original)

    return start


# -- the emulator stack ----------------------------------------------------------------------------

TESTS = Path(__file__).parent
STACK_PROFILES = "profiles"


def require_emulators() -> None:
    """Skip without the stack's prerequisites, but fail under CI=true: CI must never skip these."""
    from batchcast.tools import stack

    try:
        stack.find_prerequisites()
    except stack.StackError as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {error}", pytrace=False)
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def emulator_prerequisites() -> None:
    """For a test that starts a stack of its own: skip without the prerequisites (fail under CI=true)."""
    require_emulators()


@pytest.fixture(scope="session")
def emulator_stack(tmp_path_factory: pytest.TempPathFactory):
    """One emulator stack for the session; its predict fails the first delivery of every message."""
    from batchcast.tools import stack

    require_emulators()
    directory = tmp_path_factory.mktemp("stack")
    flaky = directory / "flaky"
    flaky.mkdir()
    # A profile whose trainings run as jobs, for the job test (STACK_PROFILES in the stack's dir).
    profiles = directory / STACK_PROFILES
    profiles.mkdir()
    # Its export names sales "units", so plain retail files still fit only the retail profile.
    write_small_retail(profiles, "retailjob", sales_column="units", mode="job")
    state = stack.up(
        directory,
        sources={"predict": TESTS / "stack_targets" / "flaky_predict.py"},
        extra_env={"BATCHCAST_TEST_FLAKY_DIR": str(flaky), "BATCHCAST_PROFILE_DIR": str(profiles)},
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


@pytest.fixture
def stack_profiles(emulator_stack) -> Path:
    """The profile directory the stack's functions read (it holds the job-mode "retailjob")."""
    return Path(emulator_stack.directory) / STACK_PROFILES
