"""The only things a pipeline step may touch: a blob store, a bus, a mailer and a clock.

Backends (``batchcast.backends``) implement these protocols; steps receive them bundled in
:class:`Ports` and never import a backend or a cloud client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO, Protocol

from batchcast.core.errors import ConfigError
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
    """Publishes pipeline messages to topics; delivery to consumers is the backend's job."""

    def publish(self, topic: str, message: Message) -> str:
        """Publish and return the message id."""
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
    """Tells the time; steps use it instead of ``datetime.now`` so tests and demos control time.

    A clock that is ``pinned`` says a time it was told, not the real one: then an upload's logical
    time is the clock's, not the object's update time (the entry point applies it).
    """

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock, in UTC."""

    pinned = False

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that says what it is told; ``set`` moves it."""

    pinned = True

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._at = at

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = at


class FileClock:
    """The time written in a file (ISO 8601 with an offset), read at every ``now``; the real clock
    while the file is absent. Long-running processes (the emulator stack's functions) share it, so
    a scenario sets the time of each step by writing the file (``batchcast stack clock``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def pinned(self) -> bool:
        return self.path.is_file()

    def now(self) -> datetime:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return datetime.now(UTC)
        try:
            at = datetime.fromisoformat(text)
        except ValueError as error:
            raise ConfigError(f"clock file {self.path} holds {text!r}, not an ISO time: {error}") from error
        if at.tzinfo is None:
            raise ConfigError(f"clock file {self.path} holds {text!r}, a time without a UTC offset")
        return at

    def set(self, at: datetime | None) -> None:
        """Pin the clock at ``at`` (aware); None lets it follow the real clock again."""
        if at is None:
            self.path.unlink(missing_ok=True)
            return
        if at.tzinfo is None:
            raise ValueError("FileClock needs an aware datetime")
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(at.isoformat())
        temporary.replace(self.path)  # readers never see a half-written time


@dataclass
class Ports:
    """Everything a step may use, handed to it by the entry point."""

    blobs: BlobStore
    bus: Bus
    mailer: Mailer
    clock: Clock
    jobs: JobLauncher | None = None  # None: this deployment cannot start jobs
