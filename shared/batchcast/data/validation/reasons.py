"""Why rows and files are rejected: the reason categories, the per-row reasons of a chunk, the
errors that reject a whole file, and how values and names are shown in messages."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_LISTED_NAMES = 20  # column names a message lists before it says how many more there are


MALFORMED = "malformed row"
MISSING = "missing value"
NOT_A_NUMBER = "not a number"
NOT_A_BOOLEAN = "not a boolean"
BAD_DATE = "bad date"
BAD_TIMESTAMP = "bad timestamp"
INVALID_ID = "invalid id"
UNKNOWN_CITY = "unknown city"
FUTURE = "future period"
IMPLAUSIBLE_DATE = "implausible date"
NEGATIVE_TARGET = "negative target"
NEGATIVE_COUNT = "negative count"
ENDED_BEFORE_STARTED = "ended before started"
DUPLICATE = "duplicate row"
CONFLICT = "conflicting duplicate"


class FileRejected(Exception):
    """The whole file is rejected; ``args[0]`` says why."""


class Unreadable(FileRejected):
    """The whole file is rejected before its rows could be read (so none are counted)."""


class Reasons:
    """Reasons per row position of one chunk; malformed rows keep only their one reason.

    Each check adds a mask; the detail texts are made only for the rows a report lists, so a file
    full of bad rows costs no Python string per row.
    """

    def __init__(self, rows: int, malformed: dict[int, str]) -> None:
        self.malformed = malformed
        self.bad = np.zeros(rows, bool)
        self.bad[list(malformed)] = True
        self._skip = self.bad.copy()
        self._checks: list[tuple[np.ndarray, str, Callable[[int], str]]] = []

    def add(self, mask: Any, category: str, detail: Callable[[int], str]) -> None:
        """Give every row in ``mask`` the reason ``"<category>: <detail(position)>"``."""
        hits = np.asarray(mask, bool) & ~self._skip
        if hits.any():
            self._checks.append((hits, category, detail))
            self.bad |= hits

    def counts(self) -> Counter[str]:
        """How many reasons of each category the chunk's rows got."""
        counts = Counter({MALFORMED: len(self.malformed)} if self.malformed else {})
        for hits, category, _ in self._checks:
            counts[category] += int(hits.sum())
        return counts

    def listed(self, limit: int) -> list[tuple[int, list[str]]]:
        """The first ``limit`` rejected positions with every reason, in the order they were found."""
        positions = np.flatnonzero(self.bad)[:limit]
        texts: dict[int, list[str]] = {int(p): [] for p in positions}
        for p, reason in self.malformed.items():
            if p in texts:
                texts[p].append(reason)
        for hits, category, detail in self._checks:
            for p in positions[hits[positions]]:
                texts[int(p)].append(f"{category}: {detail(int(p))}")
        return list(texts.items())


def listing(names: list[str], quote: bool = True) -> str:
    """Names for a message; a long list (a header with thousands of columns) is cut short."""
    shown = [repr(n) if quote else n for n in names[:MAX_LISTED_NAMES]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def show(value: Any, limit: int = 60) -> str:
    """A value quoted for a reason, shortened when long."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
