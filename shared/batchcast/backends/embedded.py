"""The embedded backend: a local directory is the bucket, an in-process queue is Pub/Sub.

It keeps the promises the cloud makes, so the pipeline cannot come to rely on anything the cloud
does not give: objects have generations and honour ``if_generation_match``; the bus delivers at
least once (optionally twice, to prove idempotency), retries failures with exponential backoff,
dead-letters a message after ``max_attempts`` and logs every publish so ``replay`` works.

Bookkeeping lives under ``<root>/.batchcast/`` so the rest of the root is exactly the bucket layout.
"""

from __future__ import annotations

import fcntl
import hashlib
import heapq
import io
import itertools
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import BinaryIO

from batchcast.core.messages import Message, ObjectFinalized, decode, encode
from batchcast.ports import BlobInfo, Clock, NotFound, PreconditionFailed, SystemClock

STATE_DIR = ".batchcast"

FinalizeListener = Callable[[BlobInfo], None]


class EmbeddedBlobStore:
    """A bucket in a local directory, with object generations and GCS-style notifications."""

    def __init__(self, root: Path, bucket: str = "embedded", clock: Clock | None = None) -> None:
        self.root = Path(root)
        self.bucket = bucket
        self.clock = clock or SystemClock()
        self._meta_root = self.root / STATE_DIR / "meta"
        self._meta_root.mkdir(parents=True, exist_ok=True)
        self._lock_path = self.root / STATE_DIR / "blobs.lock"
        self._thread_lock = threading.RLock()
        self._listeners: list[tuple[str, FinalizeListener]] = []

    def on_finalize(self, prefix: str, listener: FinalizeListener) -> None:
        """Call ``listener`` after every write under ``prefix`` (like a GCS bucket notification)."""
        self._listeners.append((prefix, listener))

    def read(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise NotFound(name) from error

    def open(self, name: str) -> BinaryIO:
        try:
            return self._path(name).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as error:
            raise NotFound(name) from error

    def write(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        return self.write_from(
            name,
            io.BytesIO(data),
            if_generation_match=if_generation_match,
            metadata=metadata,
            content_type=content_type,
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
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The content goes to a temporary file beside its place first (outside the lock: it may be
        # large), then is renamed into place if the precondition holds.
        temp, md5 = _spool(path.parent, stream)
        try:
            with self._locked():
                current = self.stat(name)
                current_generation = current.generation if current else 0
                if if_generation_match is not None and if_generation_match != current_generation:
                    raise PreconditionFailed(
                        f"{name}: generation is {current_generation}, expected {if_generation_match}"
                    )
                generation = max(time.time_ns() // 1000, current_generation + 1)
                os.replace(temp, path)
                meta = {
                    "generation": generation,
                    "metadata": metadata or {},
                    "content_type": content_type,
                    "updated": self.clock.now().isoformat(),
                    "md5": md5,
                }
                meta_path = self._meta_path(name)
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(meta_path, json.dumps(meta).encode())
        finally:
            temp.unlink(missing_ok=True)
        info = self.stat(name)
        assert info is not None
        for prefix, listener in self._listeners:
            if name.startswith(prefix):
                listener(info)
        return generation

    def copy(self, source: str, destination: str, *, if_generation_match: int | None = None) -> int:
        info = self.stat(source)
        if info is None:
            raise NotFound(source)
        try:
            content_type = json.loads(self._meta_path(source).read_bytes()).get("content_type")
        except FileNotFoundError:  # put there by hand
            content_type = None
        with self.open(source) as stream:
            return self.write_from(
                destination,
                stream,
                if_generation_match=if_generation_match,
                metadata=info.metadata,
                content_type=content_type,
            )

    def stat(self, name: str) -> BlobInfo | None:
        path = self._path(name)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        try:
            meta = json.loads(self._meta_path(name).read_bytes())
        except FileNotFoundError:  # put there by hand: give it a generation from its mtime
            meta = {"generation": stat.st_mtime_ns // 1000, "metadata": {}}
        return BlobInfo(
            name=name,
            generation=int(meta["generation"]),
            size=stat.st_size,
            # The writer's clock, so a pinned clock pins event times too (mtime for hand-put files).
            updated=datetime.fromisoformat(meta["updated"])
            if "updated" in meta
            else datetime.fromtimestamp(stat.st_mtime, UTC),
            metadata=dict(meta.get("metadata") or {}),
            checksum=meta.get("md5", ""),
        )

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        # Walk only below the deepest directory the prefix names, as GCS lists only that range.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        names = []
        for directory, subdirs, files in os.walk(start):
            # Descend only where names can start with the prefix (as GCS lists only that range):
            # a prefix like "models/.../version=2026" skips the other years' folders.
            base = Path(directory).relative_to(self.root).as_posix()
            subdirs[:] = [d for d in subdirs if d != STATE_DIR and _may_hold(f"{base}/{d}/", prefix)]
            for file_name in files:
                rel = Path(directory, file_name).relative_to(self.root).as_posix()
                if rel.startswith(prefix) and not file_name.startswith(".tmp-"):
                    names.append(rel)
        for name in sorted(names):
            info = self.stat(name)
            if info is not None:
                yield info

    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or ".." in name.split("/") or name.startswith(STATE_DIR):
            raise ValueError(f"invalid object name {name!r}")
        return self.root / name

    def _meta_path(self, name: str) -> Path:
        return self._meta_root / f"{name}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # A thread lock for this process, a file lock for others (``batchcast train`` jobs).
        with self._thread_lock, self._lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _spool(directory: Path, stream: BinaryIO) -> tuple[Path, str]:
    """Copy ``stream`` into a new temporary file in ``directory``; return it and the content's MD5."""
    handle, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    digest = hashlib.md5()
    try:
        with os.fdopen(handle, "wb") as out:
            while piece := stream.read(1 << 20):
                digest.update(piece)
                out.write(piece)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return Path(temp), digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


Handler = Callable[[Message], None]
DeliveryListener = Callable[["Delivery", "BaseException | None", float], None]


@dataclass(order=True)
class Delivery:
    """One attempt to hand one message to one subscription."""

    due: float
    sequence: int
    subscription: str = field(compare=False)
    topic: str = field(compare=False)
    message_id: str = field(compare=False)
    data: bytes = field(compare=False)
    attributes: dict[str, str] = field(compare=False)
    attempt: int = field(compare=False, default=1)


class EmbeddedBus:
    """An in-process Pub/Sub: at-least-once delivery, backoff, dead letters and a message log."""

    def __init__(
        self,
        root: Path,
        *,
        max_attempts: int = 5,
        backoff_seconds: float = 0.05,
        max_backoff_seconds: float = 2.0,
        deliver_twice: bool = False,
    ) -> None:
        self.bus_dir = Path(root) / STATE_DIR / "bus"
        self.bus_dir.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.deliver_twice = deliver_twice
        self._subscriptions: dict[str, list[tuple[str, Handler]]] = {}
        self._queue: list[Delivery] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self.listeners: list[DeliveryListener] = []

    def subscribe(self, topic: str, subscription: str, handler: Handler) -> None:
        """Deliver every message published to ``topic`` to ``handler`` (push subscription)."""
        self._subscriptions.setdefault(topic, []).append((subscription, handler))

    def publish(self, topic: str, message: Message) -> str:
        data, attributes = encode(message)
        return self.publish_raw(topic, data, attributes)

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> str:
        """Publish an already-encoded message (replay, or a poison message in a test)."""
        message_id = f"{time.time_ns()}-{next(self._sequence)}"
        self._append_log(
            "log.jsonl",
            {
                "message_id": message_id,
                "topic": topic,
                "publish_time": datetime.now(UTC).isoformat(),
                "attributes": attributes,
                "data": data.decode(),
            },
        )
        copies = 2 if self.deliver_twice else 1
        for subscription, _ in self._subscriptions.get(topic, []):
            for _ in range(copies):
                self._enqueue(subscription, topic, message_id, data, attributes)
        return message_id

    def redeliver(self, subscription: str, entry: dict) -> None:
        """Deliver one logged message again to one subscription only (what a Pub/Sub seek does)."""
        data, attributes = entry["data"].encode(), dict(entry["attributes"])
        self._enqueue(subscription, entry["topic"], entry["message_id"], data, attributes)

    def _enqueue(
        self, subscription: str, topic: str, message_id: str, data: bytes, attributes: dict[str, str]
    ) -> None:
        with self._lock:
            delivery = Delivery(
                time.monotonic(), next(self._sequence), subscription, topic, message_id, data, attributes
            )
            heapq.heappush(self._queue, delivery)

    def pending(self) -> int:
        """How many deliveries are waiting."""
        return len(self._queue)

    def drain(self, timeout: float | None = None) -> int:
        """Deliver until nothing is pending; return how many deliveries were made."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delivered = 0
        while True:
            with self._lock:
                if not self._queue:
                    return delivered
                delivery = heapq.heappop(self._queue)
            wait = delivery.due - time.monotonic()
            if deadline is not None and time.monotonic() + max(wait, 0) > deadline:
                with self._lock:
                    heapq.heappush(self._queue, delivery)
                raise TimeoutError(f"bus still has {self.pending()} deliveries after {timeout}s")
            if wait > 0:
                time.sleep(wait)
            self._deliver(delivery)
            delivered += 1

    def _deliver(self, delivery: Delivery) -> None:
        handler = dict(self._subscriptions[delivery.topic])[delivery.subscription]
        started = time.monotonic()
        error: BaseException | None = None
        try:
            handler(decode(delivery.data, delivery.attributes))
        except Exception as exc:  # a handler that raises asks for redelivery, as a push 5xx does
            error = exc
        for listener in self.listeners:
            listener(delivery, error, time.monotonic() - started)
        if error is None:
            return
        if delivery.attempt >= self.max_attempts:
            self._dead_letter(delivery, error)
            return
        backoff = min(self.backoff_seconds * 2 ** (delivery.attempt - 1), self.max_backoff_seconds)
        delivery.attempt += 1
        delivery.due = time.monotonic() + backoff
        delivery.sequence = next(self._sequence)
        with self._lock:
            heapq.heappush(self._queue, delivery)

    def _dead_letter(self, delivery: Delivery, error: BaseException) -> None:
        self._append_log(
            f"{delivery.topic}-dlq.jsonl",
            {
                "message_id": delivery.message_id,
                "subscription": delivery.subscription,
                "attempts": delivery.attempt,
                "error": f"{type(error).__name__}: {error}",
                "dead_lettered_at": datetime.now(UTC).isoformat(),
                "attributes": delivery.attributes,
                "data": delivery.data.decode(),
            },
        )

    def dead_letters(self, topic: str) -> list[dict]:
        """The messages dead-lettered from ``topic``, oldest first, each with its ``id``
        (``<message_id>.<subscription>``: one message may fail on two subscriptions of a topic)."""
        return [entry | {"id": _letter_id(entry)} for entry in _read_jsonl(self._dead_letter_file(topic))]

    def redrive(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Publish the dead letters ``ids`` (None: all) of ``topic`` to ``topic`` again, then drop
        them from the dead-letter file; return the ids redriven. Published before dropped, so a
        crash in between leaves a letter to redrive again, never a lost one."""
        chosen = [e for e in self.dead_letters(topic) if ids is None or e["id"] in ids]
        for entry in chosen:
            self.publish_raw(topic, entry["data"].encode(), dict(entry["attributes"]))
        return self._drop_dead_letters(topic, {e["id"] for e in chosen})

    def discard(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Drop the dead letters ``ids`` (None: all) of ``topic`` for good; return the ids dropped."""
        return self._drop_dead_letters(topic, None if ids is None else set(ids))

    def _dead_letter_file(self, topic: str) -> Path:
        return self.bus_dir / f"{topic}-dlq.jsonl"

    def _drop_dead_letters(self, topic: str, ids: set[str] | None) -> list[str]:
        path = self._dead_letter_file(topic)
        with self._lock, (self.bus_dir / "dlq.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = _read_jsonl(path)
            dropped = [e for e in entries if ids is None or _letter_id(e) in ids]
            kept = [e for e in entries if e not in dropped]
            text = "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept)
            _atomic_write(path, text.encode())
        return [_letter_id(e) for e in dropped]

    def log(self) -> list[dict]:
        """Every message ever published, oldest first (what ``replay`` re-delivers from)."""
        return _read_jsonl(self.bus_dir / "log.jsonl")

    def _append_log(self, file_name: str, entry: dict) -> None:
        # Under the lock dead letters are dropped with, so an append never lands in a replaced file.
        with (self.bus_dir / "dlq.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with (self.bus_dir / file_name).open("a") as out:
                out.write(json.dumps(entry, sort_keys=True) + "\n")


def _letter_id(entry: dict) -> str:
    return f"{entry['message_id']}.{entry['subscription']}"


def _may_hold(folder: str, prefix: str) -> bool:
    """Whether names below ``folder`` (relative, ending in "/") can start with ``prefix``."""
    folder = folder.removeprefix("./")
    return folder.startswith(prefix) or prefix.startswith(folder)


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OutboxMailer:
    """Writes each email as an ``.eml`` file under ``<root>/.batchcast/outbox`` instead of sending it."""

    def __init__(self, root: Path) -> None:
        self.outbox = Path(root) / STATE_DIR / "outbox"
        self.outbox.mkdir(parents=True, exist_ok=True)
        self._count = itertools.count()

    def send(self, email: EmailMessage) -> None:
        name = f"{time.time_ns()}-{next(self._count)}.eml"
        (self.outbox / name).write_bytes(bytes(email))

    def sent(self) -> list[EmailMessage]:
        """Every email written so far, oldest first."""
        from email import message_from_bytes, policy

        return [
            message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for p in sorted(self.outbox.glob("*.eml"))
        ]


def finalize_event(bucket: str, info: BlobInfo) -> ObjectFinalized:
    """The message a GCS bucket notification would carry for ``info``."""
    return ObjectFinalized(
        bucket=bucket,
        name=info.name,
        generation=info.generation,
        size=info.size,
        metadata=info.metadata,
        logical_time=info.updated,
    )
