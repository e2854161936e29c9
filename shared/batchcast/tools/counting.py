"""A blob store wrapper that counts what goes through it, per step and per operation.

Wrap any :class:`~batchcast.ports.BlobStore` (embedded, GCS) in :class:`CountingBlobStore` and hand
the wrapper to the steps. Every operation is tallied under the step currently named (``with
store.attributed("predict"): ...``; ``"outside"`` otherwise): list calls and the objects they
yielded, reads and bytes read, stats, writes and bytes written. It answers two questions:

* *what does one run cost?* (``bench/daily.py``): per-run tallies, including how many operations
  ran on other threads than the step's own (``storage.concurrently``'s pool), which on GCS overlap;
* *what did each process touch?* (with ``names=True``): the set of ``(step, access, name)`` where
  access is ``read``, ``create`` (a create-only write) or ``update``, which tests check against
  the Terraform grants or use to prove a request touched nothing.

Callers that need more (which objects a run's requests were about) add an observer, called with
each request's :class:`Operation`.

It adds no behaviour: every call is passed to the wrapped store unchanged.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal

from batchcast.ports import BlobInfo, BlobStore

Access = Literal["read", "create", "update"]
OUTSIDE = "outside"  # the step of operations made outside any attributed block


@dataclass
class Tally:
    """What was done through the store; ``concurrent`` counts operations made on other threads than
    the one that opened the attributed block (they may overlap each other)."""

    list_calls: int = 0
    listed: int = 0  # objects the listings yielded
    reads: int = 0  # read and open calls
    read_bytes: int = 0
    stats: int = 0
    writes: int = 0
    write_bytes: int = 0
    concurrent: int = 0

    @property
    def operations(self) -> int:
        """Requests made: list calls, reads, stats and writes (a listing counted as one call)."""
        return self.list_calls + self.reads + self.stats + self.writes


@dataclass(frozen=True)
class Operation:
    """One request, as observers see it."""

    step: str
    kind: Literal["list", "read", "stat", "write"]
    access: Access
    name: str  # the object, or the prefix of a listing
    concurrent: bool  # made on another thread than the attributed block's own


# An attributed block: its step, its own tally and the thread that opened it.
_Block = tuple[str, Tally | None, int | None]


class CountingBlobStore:
    """Passes every call to ``inner`` and tallies it; ``names=True`` also remembers what was touched."""

    def __init__(self, inner: BlobStore, *, names: bool = False) -> None:
        self.inner = inner
        self.tallies: defaultdict[str, Tally] = defaultdict(Tally)  # step -> everything it did
        self.touched: set[tuple[str, Access, str]] = set()  # (step, access, name), when ``names``
        self._names = names
        self.observers: list[Callable[[Operation], None]] = []
        self._lock = threading.Lock()  # pool threads tally at once
        # The block in force: its step, its own tally and the thread that opened it. A plain
        # attribute, not a thread-local, so that a step's pool threads are attributed to it too.
        self._block: _Block = (OUTSIDE, None, None)

    @property
    def step(self) -> str:
        """The step operations are attributed to now."""
        return self._block[0]

    @contextmanager
    def attributed(self, step: str) -> Iterator[Tally]:
        """Attribute every operation made until the block ends to ``step``; yield the block's own
        tally (filled in as the block runs). Blocks nest; steps run one at a time."""
        previous = self._block
        tally = Tally()
        self._block = (step, tally, threading.get_ident())
        try:
            yield tally
        finally:
            self._block = previous

    def _note(
        self,
        kind: Literal["list", "read", "stat", "write"] | None,
        access: Access,
        name: str,
        block: _Block | None = None,
        **counts: int,
    ) -> None:
        """Add ``counts`` to the step's tally and its block's (``block``: the one in force then).

        ``kind`` names the request; None adds to a request already noted (objects a listing
        yields, bytes read from a stream).
        """
        step, tally, owner = block or self._block
        concurrent = kind is not None and owner is not None and threading.get_ident() != owner
        with self._lock:
            for target in (self.tallies[step], tally) if tally is not None else (self.tallies[step],):
                for key, value in counts.items():
                    setattr(target, key, getattr(target, key) + value)
                target.concurrent += concurrent
            if self._names:
                self.touched.add((step, access, name))
        if kind is not None:
            for observe in self.observers:
                observe(Operation(step, kind, access, name, concurrent))

    # Requests are noted before they are made: one that fails (NotFound, a failed precondition)
    # was a round trip all the same.

    def read(self, name: str) -> bytes:
        block = self._block
        self._note("read", "read", name, reads=1)
        data = self.inner.read(name)
        self._note(None, "read", name, block, read_bytes=len(data))
        return data

    def open(self, name: str) -> BinaryIO:
        block = self._block
        self._note("read", "read", name, reads=1)
        stream = self.inner.open(name)

        def count(n: int) -> None:
            self._note(None, "read", name, block, read_bytes=n)

        return _CountedStream(stream, count)  # type: ignore[return-value]

    def write(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        access: Access = "create" if if_generation_match == 0 else "update"
        self._note("write", access, name, writes=1, write_bytes=len(data))
        return self.inner.write(
            name, data, if_generation_match=if_generation_match, metadata=metadata, content_type=content_type
        )

    def write_from(
        self,
        name: str,
        stream: BinaryIO,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        block = self._block
        access: Access = "create" if if_generation_match == 0 else "update"
        self._note("write", access, name, writes=1)

        def count(n: int) -> None:
            self._note(None, access, name, block, write_bytes=n)

        return self.inner.write_from(
            name,
            _CountedStream(stream, count),  # type: ignore[arg-type]
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
        )

    def copy(self, source: str, destination: str, *, if_generation_match: int | None = None) -> int:
        # One request (a rewrite inside the bucket): it reads the source and writes the copy.
        access: Access = "create" if if_generation_match == 0 else "update"
        self._note(None, "read", source)
        self._note("write", access, destination, writes=1)
        return self.inner.copy(source, destination, if_generation_match=if_generation_match)

    def stat(self, name: str) -> BlobInfo | None:
        self._note("stat", "read", name, stats=1)
        return self.inner.stat(name)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        self._note("list", "read", prefix, list_calls=1)
        return self._listed(prefix, self._block)

    def _listed(self, prefix: str, block: _Block) -> Iterator[BlobInfo]:
        # Objects are counted as the listing yields them, under the block that asked for the listing.
        for info in self.inner.list(prefix):
            self._note(None, "read", prefix, block, listed=1)
            yield info


class _CountedStream:
    """A read stream that reports how many bytes were read from it."""

    def __init__(self, stream: BinaryIO, count: Callable[[int], None]) -> None:
        self._stream = stream
        self._count = count

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._count(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._stream.readinto(buffer)  # type: ignore[attr-defined]
        self._count(n or 0)
        return n

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    def __enter__(self) -> _CountedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def readline(self, size: int = -1) -> bytes:
        data = self._stream.readline(size)
        self._count(len(data))
        return data
