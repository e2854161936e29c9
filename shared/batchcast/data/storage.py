"""Idempotent writes on top of the blob-store port: the patterns every step uses.

* :func:`write_once` — create-only; an existing object with the same bytes counts as success
  (a redelivered message rewrote what it wrote before), different bytes are a conflict.
  :func:`write_once_from` and :func:`copy_once` do the same for content streamed or copied inside
  the bucket, comparing digests, so large objects never sit in memory.
* :func:`update_json` — read-modify-write guarded by the object's generation (compare-and-swap),
  retried (with jittered backoff) when someone else wrote in between.
* :func:`concurrently` — overlap many small reads or updates: on GCS each costs a round trip of
  tens of milliseconds, so one at a time would make a thousand-file read take minutes.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

from batchcast.core.crashpoints import COMPARE_AND_SWAP, crash_point
from batchcast.core.errors import PermanentError
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


def write_once_from(
    blobs: BlobStore,
    name: str,
    content: Callable[[], BinaryIO],
    *,
    metadata: dict[str, str] | None = None,
    content_type: str | None = None,
) -> bool:
    """:func:`write_once` for content too large to hold: ``content()`` opens it as a stream, again
    when the object exists already (then its digest is compared, and nothing is uploaded)."""
    if blobs.stat(name) is None:
        try:
            blobs.write_from(
                name, content(), if_generation_match=0, metadata=metadata, content_type=content_type
            )
            return True
        except PreconditionFailed:
            pass
    if _stored_md5(blobs, name) == _md5(content()):
        return False
    raise ConflictingWrite(f"{name} exists with different content")


def copy_once(blobs: BlobStore, source: str, destination: str) -> bool:
    """Copy ``source`` to ``destination`` create-only inside the bucket; return False if the
    destination already held the same bytes, raise :class:`ConflictingWrite` if other ones."""
    if blobs.stat(destination) is None:  # a redelivery finds the copy made: nothing to rewrite
        try:
            blobs.copy(source, destination, if_generation_match=0)
            return True
        except PreconditionFailed:
            pass
    if _stored_md5(blobs, destination) == _stored_md5(blobs, source):
        return False
    raise ConflictingWrite(f"{destination} exists with different content")


def _stored_md5(blobs: BlobStore, name: str) -> str:
    """The MD5 (hex) of an object: its recorded checksum, else computed by reading it through."""
    info = blobs.stat(name)
    if info is None:
        raise NotFound(name)
    if info.checksum:
        return info.checksum
    with blobs.open(name) as stream:
        return _md5(stream)


def _md5(stream: BinaryIO) -> str:
    digest = hashlib.md5()
    with stream:
        while piece := stream.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


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
        crash_point(COMPARE_AND_SWAP, name)
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
