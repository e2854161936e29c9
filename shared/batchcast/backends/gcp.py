"""The ``gcp`` backend: the ports on google-cloud-storage and google-cloud-pubsub.

The same code talks to Google Cloud and to the local emulators: the clients honour the standard
``STORAGE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` variables, and on an emulator we use anonymous
credentials.

Retries are ours, not the clients' (``retry=None`` on every storage call), so exactly the failures
:func:`is_transient` names are retried: 429, 5xx, connection errors and timeouts. Anything else —
a failed precondition, a missing object, a 403 — surfaces at once.
"""

from __future__ import annotations

import base64
import itertools
import os
import random
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import BinaryIO, TypeVar

import requests
from google.api_core import exceptions as api
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import TransportError
from google.cloud import pubsub_v1, storage
from google.protobuf import timestamp_pb2

from batchcast.core.messages import InvalidMessage, Message, Topic, decode, encode
from batchcast.data.storage import chunks_stream as storage_chunks
from batchcast.ports import BlobInfo, NotFound, PreconditionFailed, TransientError

T = TypeVar("T")
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
# Attributes Pub/Sub adds to a dead-lettered message (source subscription, delivery count, ...).
DEAD_LETTER_ATTRIBUTES = "CloudPubSubDeadLetter"  # resumable uploads: a multiple of 256 KiB

# HTTP statuses and exceptions worth retrying: rate limits, server errors, the network.
TRANSIENT_API_ERRORS = (
    api.TooManyRequests,
    api.InternalServerError,
    api.BadGateway,
    api.ServiceUnavailable,
    api.GatewayTimeout,
    api.DeadlineExceeded,
    api.RetryError,
)
TRANSIENT_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    TransportError,
    ConnectionError,
    TimeoutError,
)


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: 429, 5xx, timeouts and connection errors; False otherwise."""
    if isinstance(error, TRANSIENT_API_ERRORS + TRANSIENT_NETWORK_ERRORS):
        return True
    # Some paths raise a bare GoogleAPICallError carrying only the status code.
    code = getattr(error, "code", None)
    status_says_so = isinstance(code, int) and (code == 429 or code >= 500)
    return isinstance(error, api.GoogleAPICallError) and status_says_so


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    base_seconds: float = 0.2,
    max_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; retry transient failures with jittered exponential backoff, then raise TransientError.

    Non-transient errors propagate unchanged on the first occurrence.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise TransientError(f"{what}: gave up after {attempts} attempts: {error}") from error
            delay = min(base_seconds * 2 ** (attempt - 1), max_seconds)
            sleep(delay * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def on_emulator() -> bool:
    """True when either standard emulator variable is set."""
    return bool(os.environ.get("STORAGE_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"))


def storage_client(project: str | None) -> storage.Client:
    """A storage client; anonymous on the emulator (``STORAGE_EMULATOR_HOST``)."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project or "batchcast-local", credentials=AnonymousCredentials())
    return storage.Client(project=project)


class GcsBlobStore:
    """A GCS bucket as a :class:`batchcast.ports.BlobStore`."""

    def __init__(self, bucket: str, project: str | None = None, client: storage.Client | None = None) -> None:
        self.bucket = bucket
        self.client = client or storage_client(project)
        self._bucket = self.client.bucket(bucket)

    def read(self, name: str) -> bytes:
        blob = self._bucket.blob(name)
        return self._call(lambda: blob.download_as_bytes(retry=None), name)

    def open(self, name: str) -> BinaryIO:
        # BlobReader fetches in chunks: a large raw file is never held twice in memory.
        blob = self._call(lambda: self._bucket.get_blob(name, retry=None), name)
        if blob is None:
            raise NotFound(name)
        return blob.open("rb", chunk_size=8 * 1024 * 1024, retry=None)

    def write(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        def upload() -> int:
            blob = self._bucket.blob(name)
            if metadata:
                blob.metadata = metadata
            blob.upload_from_string(
                data,
                content_type=content_type or "application/octet-stream",
                if_generation_match=if_generation_match,
                retry=None,
            )
            return int(blob.generation)

        return self._call(upload, name)

    def write_from(
        self,
        name: str,
        stream: BinaryIO,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        head = stream.read(UPLOAD_CHUNK_BYTES + 1)
        if len(head) <= UPLOAD_CHUNK_BYTES:  # all of it: one request, like write
            return self.write(
                name,
                head,
                if_generation_match=if_generation_match,
                metadata=metadata,
                content_type=content_type,
            )
        rest = storage_chunks(itertools.chain([head], iter(lambda: stream.read(UPLOAD_CHUNK_BYTES), b"")))

        def upload() -> int:
            # A resumable upload in 8 MiB pieces: the client holds one piece at a time. GCS checks
            # the precondition when the upload completes (fake-gcs-server before 2026-07 did not).
            blob = self._bucket.blob(name, chunk_size=UPLOAD_CHUNK_BYTES)
            if metadata:
                blob.metadata = metadata
            blob.upload_from_file(
                rest,
                content_type=content_type or "application/octet-stream",
                if_generation_match=if_generation_match,
                retry=None,
            )
            return int(blob.generation)

        # A stream read halfway cannot be sent again: one attempt; redelivery retries the step.
        return self._call(upload, name, attempts=1)

    def copy(self, source: str, destination: str, *, if_generation_match: int | None = None) -> int:
        def rewrite() -> int:
            # Server-side: large objects take several rewrite calls, each resuming with its token.
            target, token = self._bucket.blob(destination), None
            while True:
                token, _, _ = target.rewrite(
                    self._bucket.blob(source),
                    token=token,
                    if_generation_match=if_generation_match,
                    retry=None,
                )
                if token is None:
                    return int(target.generation)

        return self._call(rewrite, destination)

    def stat(self, name: str) -> BlobInfo | None:
        blob = self._call(lambda: self._bucket.get_blob(name, retry=None), name)
        return None if blob is None else _info(blob)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        def fetch() -> list[storage.Blob]:
            return list(self.client.list_blobs(self._bucket, prefix=prefix, retry=None))

        blobs = self._call(fetch, prefix)
        for blob in sorted(blobs, key=lambda b: b.name):
            yield _info(blob)

    def _call(self, call: Callable[[], T], name: str, attempts: int = 5) -> T:
        try:
            return with_retries(call, what=f"gs://{self.bucket}/{name}", attempts=attempts)
        except api.NotFound as error:
            raise NotFound(name) from error
        except api.PreconditionFailed as error:
            raise PreconditionFailed(f"{name}: {error.message}") from error


def _info(blob: storage.Blob) -> BlobInfo:
    md5 = base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else ""
    return BlobInfo(
        name=blob.name,
        generation=int(blob.generation),
        size=int(blob.size or 0),
        updated=blob.updated or datetime.now(UTC),
        metadata=dict(blob.metadata or {}),
        checksum=md5,
    )


class PubSubBus:
    """Pub/Sub topics of one project as a :class:`batchcast.ports.Bus`, plus seek and dead letters."""

    def __init__(self, project: str) -> None:
        self.project = project
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        self.publisher = pubsub_v1.PublisherClient(publisher_options=options)
        self.subscriber = pubsub_v1.SubscriberClient()

    def topic_path(self, topic: str) -> str:
        """``projects/<project>/topics/<topic>``."""
        return self.publisher.topic_path(self.project, str(topic))

    def subscription_path(self, subscription: str) -> str:
        """``projects/<project>/subscriptions/<subscription>``."""
        return self.subscriber.subscription_path(self.project, subscription)

    def publish(self, topic: str, message: Message) -> str:
        data, attributes = encode(message)
        # Validate what leaves as strictly as what arrives (the consumer decodes the same way).
        decode(data, attributes)
        # One city's messages keep their order (e.g. predictions-ready for notify's freshness).
        key = f"{message.dataset}/{message.city}" if message.city else ""
        return self.publish_raw(topic, data, attributes, ordering_key=key)

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str = "") -> str:
        """Publish already-encoded bytes (replay, or a poison message in a test); return the id."""
        path = self.topic_path(topic)

        def send() -> str:
            future = self.publisher.publish(path, data, ordering_key=ordering_key, **attributes)
            try:
                return future.result(timeout=60)
            except Exception:
                if ordering_key:  # a failed publish pauses its ordering key until resumed
                    self.publisher.resume_publish(path, ordering_key)
                raise

        return with_retries(send, what=f"publish to {topic}")

    def seek(self, subscription: str, when: datetime) -> None:
        """Seek ``subscription`` to ``when``: messages retained since then are delivered again.

        Only messages published after ``when`` and still retained (``retain_acked_messages``) come back.
        """
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(when.astimezone(UTC))
        path = self.subscription_path(subscription)
        with_retries(
            lambda: self.subscriber.seek(request={"subscription": path, "time": stamp}),
            what=f"seek {subscription}",
        )

    def _peek(self, path: str, max_messages: int) -> pubsub_v1.types.PullResponse:
        # A status check must not wait for messages that may never come: without
        # return_immediately a pull on an empty subscription blocks until its deadline (~30 s per
        # topic). The flag is deprecated for consumers that poll in loops, not for a one-off look.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.subscriber.pull(
                request={"subscription": path, "max_messages": max_messages, "return_immediately": True},
                timeout=30,
            )

    def dead_letters(self, topic: str, max_messages: int = 100, ack: bool = False) -> list[dict]:
        """Pull up to ``max_messages`` dead-lettered from ``topic``.

        They are read from the dead-letter topic's pull subscription,
        :attr:`Topic.dead_letter_subscription` (the emulator stack and Terraform create it).

        Each entry: ``message_id``, ``publish_time``, ``attributes``, ``data`` (text), ``message``
        (the decoded message, or None when it breaks the contract) and ``error``. Unless ``ack``,
        the messages are released at once so they stay listed for the next reader.
        """
        subscription = Topic(topic).dead_letter_subscription
        path = self.subscription_path(subscription)
        response = with_retries(lambda: self._peek(path, max_messages), what=f"pull {subscription}")
        entries, ack_ids = [], []
        for received in response.received_messages:
            raw = received.message
            attributes = dict(raw.attributes)
            try:
                message, error = decode(raw.data, attributes), None
            except InvalidMessage as exc:
                message, error = None, str(exc)
            entries.append(
                {
                    "id": raw.message_id,
                    "message_id": raw.message_id,
                    "publish_time": raw.publish_time.isoformat() if raw.publish_time else None,
                    "attributes": attributes,
                    "data": raw.data.decode(errors="replace"),
                    "message": message,
                    "error": error,
                }
            )
            ack_ids.append(received.ack_id)
        if ack_ids:
            if ack:
                self.subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
            else:
                self.subscriber.modify_ack_deadline(
                    request={"subscription": path, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
                )
        return entries

    def redrive(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Republish the dead letters ``ids`` (None: all) of ``topic`` to ``topic``, then acknowledge
        them on its ``<topic>-dlq--hold`` subscription; return the ids redriven. Pub/Sub's own
        dead-letter attributes are left off, so the redriven message is the original again."""

        def republish(received: pubsub_v1.types.ReceivedMessage) -> None:
            attributes = {
                k: v
                for k, v in received.message.attributes.items()
                if not k.startswith(DEAD_LETTER_ATTRIBUTES)
            }
            self.publish_raw(topic, received.message.data, attributes)

        return self._take_dead_letters(topic, ids, republish)

    def discard(self, topic: str, ids: Collection[str] | None = None) -> list[str]:
        """Acknowledge the dead letters ``ids`` (None: all) of ``topic`` without republishing them."""
        return self._take_dead_letters(topic, ids, lambda received: None)

    def _take_dead_letters(
        self,
        topic: str,
        ids: Collection[str] | None,
        handle: Callable[[pubsub_v1.types.ReceivedMessage], None],
    ) -> list[str]:
        """Pull the hold subscription until it is empty; hand each chosen letter to ``handle`` then
        acknowledge it; release every other letter at the end (they stay for later)."""
        path = self.subscription_path(Topic(topic).dead_letter_subscription)
        taken: list[str] = []
        held: list[str] = []
        seen: set[str] = set()
        try:
            while True:
                response = with_retries(lambda: self._peek(path, 100), what=f"pull {path}")
                fresh = [r for r in response.received_messages if r.message.message_id not in seen]
                if not fresh:  # empty, or only letters held here whose deadline ran out: all seen
                    return taken
                for received in fresh:
                    seen.add(received.message.message_id)
                    if ids is not None and received.message.message_id not in ids:
                        held.append(received.ack_id)
                        continue
                    handle(received)
                    self.subscriber.acknowledge(request={"subscription": path, "ack_ids": [received.ack_id]})
                    taken.append(received.message.message_id)
                if ids is not None and set(ids) <= set(taken):
                    return taken
        finally:
            if held:
                self.subscriber.modify_ack_deadline(
                    request={"subscription": path, "ack_ids": held, "ack_deadline_seconds": 0}
                )

    def close(self) -> None:
        """Release the clients' channels."""
        self.publisher.stop()
        self.subscriber.close()
