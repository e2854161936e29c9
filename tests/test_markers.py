"""The unit / integration / browser split `make test-unit` relies on (tests/conftest.py marks them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


class FakeItem:
    """What the marking hook reads and writes of a collected test."""

    def __init__(self, *fixtures: str) -> None:
        self.fixturenames = list(fixtures)
        self.markers: set[str] = set()

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        self.markers.add(marker.name)

    def get_closest_marker(self, name: str) -> str | None:
        return name if name in self.markers else None


def _conftest(request: pytest.FixtureRequest):
    [plugin] = [p for p in request.config.pluginmanager.get_plugins() if hasattr(p, "INTEGRATION_FIXTURES")]
    return plugin


def test_tests_are_marked_by_the_fixtures_they_use(request):
    conftest = _conftest(request)
    stack, smtp, page, pure = (
        FakeItem("blobs", "stack_env"),
        FakeItem("smtp"),
        FakeItem("chromium", "server"),
        FakeItem("tmp_path"),
    )
    conftest.pytest_collection_modifyitems([stack, smtp, page, pure])
    assert stack.markers == {"integration"} and smtp.markers == {"integration"}
    assert page.markers == {"integration", "browser"}
    assert pure.markers == {"unit"}


def test_the_marking_fixtures_exist(request):
    """A renamed fixture would silently turn its tests into unit tests: fail instead."""
    conftest = _conftest(request)
    source = "\n".join(p.read_text() for p in TESTS.rglob("*.py"))
    defined = set(re.findall(r"@pytest\.fixture(?:\([^)]*\))?\s*\ndef (\w+)\(", source))
    missing = (conftest.INTEGRATION_FIXTURES | conftest.BROWSER_FIXTURES) - defined
    assert not missing, f"no fixture named {sorted(missing)} under tests/: update tests/conftest.py"
