"""Crash points: tests kill a function's process (SIGKILL) at a named place to prove redelivery recovers.

``BATCHCAST_CRASH_AT`` lists points, comma-separated, each ``<point>`` or ``<point>=<prefix>`` (only
where the place's detail — an object name, a function — starts with the prefix). Each fires once:
``BATCHCAST_CRASH_DIR`` holds a marker per fired point, so the restarted process and Pub/Sub's
redelivery run past it. Unset (production), a crash point costs one environment lookup.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

BEFORE_PUBLISH = "before-publish"  # a step's writes done, its messages not yet published
COMPARE_AND_SWAP = "compare-and-swap"  # an object read, its new version not yet written
COMPACTION = "compaction"  # a segment written, the manifest not yet swapped to it
ALERT_CLAIMED = "alert-claimed"  # emails claimed ("sending"), none sent yet
ALERT_SENT = "alert-sent"  # one email accepted by the SMTP server, not yet marked sent


def crash_point(point: str, detail: str = "") -> None:
    """SIGKILL this process here if ``BATCHCAST_CRASH_AT`` names ``point`` (and a prefix of ``detail``)
    and that entry has not fired yet."""
    wanted = os.environ.get("BATCHCAST_CRASH_AT")
    if not wanted:
        return
    for entry in wanted.split(","):
        name, _, prefix = entry.strip().partition("=")
        if name == point and detail.startswith(prefix):
            marker = Path(os.environ["BATCHCAST_CRASH_DIR"]) / hashlib.sha256(entry.encode()).hexdigest()[:16]
            try:
                marker.open("x").close()
            except FileExistsError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)
