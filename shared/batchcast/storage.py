"""Idempotent writes on top of the blob-store port: the patterns every step uses.

* :func:`write_once` — create-only; an existing object with the same bytes counts as success
  (a redelivered message rewrote what it wrote before), different bytes are a conflict.
* :func:`update_json` — read-modify-write guarded by the object's generation (compare-and-swap),
  retried (with jittered backoff) when someone else wrote in between.
* :func:`concurrently` — overlap many small reads or updates: on GCS each costs a round trip of
  tens of milliseconds, so one at a time would make a thousand-file read take minutes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from batchcast.errors import PermanentError
from batchcast.ports import BlobStore, NotFound, PreconditionFailed

JsonValue = Any
T = TypeVar("T")
R = TypeVar("R")
WORKERS = 16  # requests in flight at once; GCS serves far more, a 2-core function gains little beyond


class ConflictingWrite(PermanentError, RuntimeError):
    """A create-only object already exists with different content."""


def dumps(value: JsonValue) -> bytes:
    """Canonical JSON bytes: sorted keys, so equal content is byte-equal."""
    return (json.dumps(value, indent=2, sort_keys=True, default=str) + "\n").encode()


def write_once(
    blobs: BlobStore,
    name: str,
    data: bytes,
    *,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
) -> bool:
    """Create ``name`` with ``data``; return False if it already held exactly these bytes."""
    try:
        blobs.write(name, data, if_generation_match=0, metadata=metadata, content_type=content_type)
        return True
    except PreconditionFailed:
        if blobs.read(name) == data:
            return False
        raise ConflictingWrite(f"{name} exists with different content") from None


def read_json(blobs: BlobStore, name: str) -> JsonValue | None:
    """The parsed JSON object, or None when it does not exist."""
    try:
        return json.loads(blobs.read(name))
    except NotFound:
        return None


def update_json(
    blobs: BlobStore,
    name: str,
    change: Callable[[JsonValue | None], JsonValue | None],
    *,
    metadata: Callable[[JsonValue], dict[str, str]] | None = None,
    attempts: int = 20,
) -> JsonValue | None:
    """Apply ``change`` to the current JSON (None if absent) and write it with a generation check.

    ``change`` returns the new value, or None to leave the object as it is. Unchanged content is
    not rewritten, so replays leave generations alone. Returns what the object holds afterwards.
    """
    for attempt in range(attempts):
        if attempt:  # someone else wrote in between: step aside a little, more each time
            time.sleep(random.uniform(0, min(0.01 * 2**attempt, 1.0)))
        info = blobs.stat(name)
        current = None
        if info is not None:
            try:
                current = json.loads(blobs.read(name))
            except NotFound:
                continue
        new = change(current)
        if new is None or (current is not None and dumps(new) == dumps(current)):
            return current
        try:
            blobs.write(
                name,
                dumps(new),
                if_generation_match=info.generation if info else 0,
                metadata=metadata(new) if metadata else None,
                content_type="application/json",
            )
            return new
        except PreconditionFailed:
            continue
    raise PreconditionFailed(f"{name}: gave up after {attempts} concurrent updates")


def concurrently(work: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[work(item) for item in items]``, with up to :data:`WORKERS` calls in flight, in order.

    For I/O-bound calls on the blob store (reads, compare-and-swap updates of different objects);
    the first exception propagates.
    """
    items = list(items)
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(WORKERS, len(items)), thread_name_prefix="batchcast-io") as pool:
        return list(pool.map(work, items))


def read_many(blobs: BlobStore, names: Iterable[str]) -> list[bytes]:
    """The bytes of every object in ``names``, read concurrently, in order."""
    return concurrently(blobs.read, names)
