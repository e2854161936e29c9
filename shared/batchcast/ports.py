"""The only things a pipeline step may touch: a blob store, a bus, a mailer and a clock.

Backends (``batchcast.backends``) implement these protocols; steps receive them bundled in
:class:`Ports` and never import a backend or a cloud client.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import BinaryIO, Protocol

from batchcast.core.messages import Message


class StorageError(Exception):
    """Base class of blob-store failures that a step may want to tell apart."""


class NotFound(StorageError):
    """The object does not exist."""


class PreconditionFailed(StorageError):
    """A generation precondition did not hold (someone else wrote first)."""


class TransientError(Exception):
    """A failure worth retrying (timeouts, 429, 5xx). Backends raise it; entry points re-raise it."""


@dataclass(frozen=True)
class BlobInfo:
    """What a listing or stat returns about one object, without reading it."""

    name: str
    generation: int
    size: int
    updated: datetime
    metadata: dict[str, str] = field(default_factory=dict)
    checksum: str = ""  # a digest of the content (GCS: md5/crc32c), so equal bytes are recognisable


class BlobStore(Protocol):
    """A bucket. Names are bucket-relative (``raw/dt=.../x.csv``)."""

    def read(self, name: str) -> bytes:
        """Return the whole object; raise :class:`NotFound`."""
        ...

    def open(self, name: str) -> BinaryIO:
        """Return a readable stream over the object, for objects too large to hold twice."""
        ...

    def write(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        """Write the object and return its new generation.

        ``if_generation_match=0`` means create-only; any other number means "only if the current
        generation is this one" (compare-and-swap). A failed precondition raises
        :class:`PreconditionFailed`.
        """
        ...

    def write_from(
        self,
        name: str,
        stream: BinaryIO,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        """:meth:`write` with the content read from ``stream`` to its end, a piece at a time, so an
        object larger than memory can be written. ``stream`` may be read only once."""
        ...

    def copy(self, source: str, destination: str, *, if_generation_match: int | None = None) -> int:
        """Copy ``source`` (content, metadata, content type) to ``destination`` inside the bucket,
        without passing it through this process's memory; return the new generation. Preconditions
        apply to ``destination`` as in :meth:`write`; a missing source raises :class:`NotFound`."""
        ...

    def stat(self, name: str) -> BlobInfo | None:
        """Return the object's info, or None when it does not exist."""
        ...

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Yield every object whose name starts with ``prefix``, in name order."""
        ...


class Bus(Protocol):
    """Publishes pipeline messages to topics; delivery to consumers is the backend's job.

    A message a consumer keeps failing is dead-lettered by the backend; the dead-letter methods let
    operators see, redrive or discard it. Each dead letter is a dict with ``id`` (what redrive and
    discard take), ``message_id``, ``attributes`` (the message's, so ``kind``/``dataset``/``city``),
    ``data`` (text), ``error`` (when the backend knows it), and the backend's own time and attempt
    fields (:mod:`batchcast.ops.deadletters` reads them all alike).
    """

    def publish(self, topic: str, message: Message) -> str:
        """Publish and return the message id."""
        ...

    def dead_letters(self, topic: str) -> list[dict]:
        """The messages dead-lettered from ``topic``, left in place."""
        ...

    def redrive(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Publish the dead letters ``ids`` (None: all) to ``topic`` again and remove them; return
        the ids redriven."""
        ...

    def discard(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Remove the dead letters ``ids`` (None: all) without publishing them; return their ids."""
        ...


class Mailer(Protocol):
    """Sends one email."""

    def send(self, email: EmailMessage) -> None: ...


class JobLauncher(Protocol):
    """Starts work too long for an event-driven function (a Cloud Run job, a local process)."""

    def launch(self, request: Message) -> str:
        """Start a job that runs ``request`` and return its id; do not wait for it."""
        ...


class Clock(Protocol):
    """Tells the time; steps use it instead of ``datetime.now`` so tests and demos control time."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that says what it is told; ``advance`` moves it."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at


@dataclass
class Ports:
    """Everything a step may use, handed to it by the entry point."""

    blobs: BlobStore
    bus: Bus
    mailer: Mailer
    clock: Clock
    jobs: JobLauncher | None = None  # None: this deployment cannot start jobs
