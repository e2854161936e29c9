"""The unit / integration / browser split `make test-unit` relies on (tests/conftest.py marks them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


class FakeItem:
    """What the marking hook reads and writes of a collected test."""

    def __init__(self, *fixtures: str, marked: str = "") -> None:
        self.fixturenames = list(fixtures)
        self.markers: set[str] = {marked} if marked else set()
        self.path = TESTS / "test_somewhere.py"
        self.group = ""

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        if marker.name == "xdist_group":
            self.group = marker.args[0]
        else:
            self.markers.add(marker.name)

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


def _conftest(request: pytest.FixtureRequest):
    [plugin] = [p for p in request.config.pluginmanager.get_plugins() if hasattr(p, "INTEGRATION_FIXTURES")]
    return plugin


def test_tests_are_marked_by_the_fixtures_they_use(request):
    conftest = _conftest(request)
    stack, smtp, page, pure, training = (
        FakeItem("blobs", "stack_env"),
        FakeItem("smtp"),
        FakeItem("chromium", "server"),
        FakeItem("tmp_path"),
        FakeItem("tmp_path", marked="slow"),
    )
    conftest.pytest_collection_modifyitems([stack, smtp, page, pure, training])
    assert stack.markers == {"integration"} and smtp.markers == {"integration"}
    assert page.markers == {"integration", "browser"}
    assert pure.markers == {"unit"}
    assert training.markers == {"slow"}  # trains models: make test-unit leaves it out


def test_the_session_stack_runs_in_one_worker_and_every_other_test_with_its_file(request):
    """Two xdist workers must never each start an emulator stack or rebuild a module's fixtures."""
    conftest = _conftest(request)
    assert conftest.work_group(TESTS / "test_stack.py") == conftest.STACK_GROUP
    assert conftest.work_group(TESTS / "test_markers.py") == str(TESTS / "test_markers.py")
    # Every test of this run that uses the session stack (in `make test`, all of them) is in its group.
    for item in request.session.items:
        if set(item.fixturenames) & conftest.STACK_FIXTURES:
            assert conftest.work_group(item.path) == conftest.STACK_GROUP, item.nodeid


def test_the_longest_files_run_first_in_their_own_order(request):
    conftest = _conftest(request)
    items = [FakeItem() for _ in range(4)]
    for item, name in zip(
        items, ("test_markers.py", "test_stack.py", "test_crashes.py", "test_stack.py"), strict=True
    ):
        item.path = TESTS / name
    short, stack, crashes, more_stack = items
    conftest.pytest_collection_modifyitems(items)
    assert items == [stack, crashes, more_stack, short]


def test_make_test_unit_leaves_out_exactly_the_marked_tests():
    makefile = (TESTS.parent / "Makefile").read_text()
    assert '-m "not integration and not browser and not slow"' in makefile


def test_the_marking_fixtures_exist(request):
    """A renamed fixture would silently turn its tests into unit tests: fail instead."""
    conftest = _conftest(request)
    source = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))
    defined = set(re.findall(r"@pytest\.fixture(?:\([^)]*\))?\s*\ndef (\w+)\(", source))
    missing = (conftest.INTEGRATION_FIXTURES | conftest.BROWSER_FIXTURES) - defined
    assert not missing, f"no fixture named {sorted(missing)} under tests/: update tests/conftest.py"
