"""The operators' audit trail: one bucket object per console action (who, what, when, outcome).

Each action writes its own create-only record under ``audit/dt=<UTC day>/``, so concurrent actions
never contend for one object, and reading a day costs one listing of that day only.
"""

from __future__ import annotations

import secrets
import time
from datetime import date, datetime
from typing import Any

from batchcast.core import layout
from batchcast.data import storage
from batchcast.ports import BlobStore


def record(
    blobs: BlobStore,
    *,
    who: str,
    action: str,
    target: dict[str, Any],
    outcome: str,
    at: datetime,
    detail: str = "",
) -> dict[str, Any]:
    """Write one action's record and return it; ``outcome`` is e.g. ``ok``, ``refused``, ``failed``."""
    # Nanoseconds first: names sort in the order actions happened, even under a pinned clock.
    action_id = f"{time.time_ns()}-{secrets.token_hex(3)}"
    entry = {
        "id": action_id,
        "at": at.isoformat(),
        "who": who,
        "action": action,
        "target": target,
        "outcome": outcome,
        "detail": detail[:2000],
    }
    storage.write_once(blobs, layout.audit_record(at, action_id), storage.dumps(entry))
    return entry


def read_day(blobs: BlobStore, day: date) -> list[dict[str, Any]]:
    """Every action of one UTC day, oldest first."""
    entries = []
    for info in sorted(blobs.list(layout.audit_prefix(day)), key=lambda i: i.name):
        entry = storage.read_json(blobs, info.name)
        if entry:
            entries.append(entry)
    return entries
