"""The ``gcp`` backend: the ports on google-cloud-storage and google-cloud-pubsub.

The same code talks to Google Cloud and to the local emulators: the clients honour the standard
``STORAGE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` variables, and on an emulator we use anonymous
credentials.

Retries are ours, not the clients' (``retry=None`` on every storage and publish call), so exactly
the failures :func:`is_transient` names are retried, with the backoff :data:`RETRY` sets: 408, 429, 5xx,
connection errors (a reset halfway through a body too) and timeouts. Anything else — a failed
precondition, a missing object, a 403 — surfaces at once. Every call goes through
:func:`with_retries`, one request at a time: a streamed read re-requests the range it had reached
(:class:`RangedReader`), a resumable upload asks the server how far it got and resumes there
(:meth:`GcsBlobStore.write_from`), never from zero.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import itertools
import json
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar

import requests
import urllib3.exceptions
from google.api_core import exceptions as api
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import TransportError
from google.cloud import pubsub_v1, storage
from google.cloud.storage._media.requests import ResumableUpload  # what Blob.upload_from_file uses
from google.cloud.storage.exceptions import InvalidResponse
from google.protobuf import timestamp_pb2

from batchcast.core.messages import InvalidMessage, Message, Topic, decode, encode
from batchcast.data.storage import chunks_stream as storage_chunks
from batchcast.ports import BlobInfo, NotFound, PreconditionFailed, TransientError

T = TypeVar("T")
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024  # resumable uploads: a multiple of 256 KiB
READ_CHUNK_BYTES = 8 * 1024 * 1024  # streamed reads: one ranged request per chunk
FINISHED = (http.client.OK, http.client.CREATED)  # a resumable upload's last answer (308: go on)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is tried again.

    Attempt ``n`` (from 1) that fails waits ``min(base * 2**(n-1), max)`` seconds, jittered to 50-100 %
    of that, before attempt ``n + 1``; after ``attempts`` failures the call raises TransientError.
    The defaults: 5 attempts, waits of ~0.2, 0.4, 0.8, 1.6 s (at most ~3 s in all).
    """

    attempts: int = 5
    base_seconds: float = 0.2
    max_seconds: float = 5.0

    def delay(self, attempt: int) -> float:
        """The jittered wait after failed attempt ``attempt`` (1-based)."""
        return min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds) * (0.5 + random.random() / 2)


RETRY = RetryPolicy()
RETRY_LOG = logging.getLogger("batchcast.retry")

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
    # A connection reset halfway through a response body surfaces as one of these, not as above.
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.TimeoutError,
    http.client.IncompleteRead,
    TransportError,
    ConnectionError,
    TimeoutError,
)


def _transient_status(code: object) -> bool:
    return isinstance(code, int) and (code == 429 or code == 408 or code >= 500)


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: 408, 429, 5xx, timeouts and connection errors; False otherwise.

    The one place that says what is transient: the storage, upload and publish paths all ask it.
    """
    if isinstance(error, TRANSIENT_API_ERRORS + TRANSIENT_NETWORK_ERRORS):
        return True
    if isinstance(error, InvalidResponse):  # the resumable-upload layer's answer to a bad status
        return _transient_status(getattr(error.response, "status_code", None))
    # Some paths raise a bare GoogleAPICallError carrying only the status code.
    return isinstance(error, api.GoogleAPICallError) and _transient_status(getattr(error, "code", None))


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int | None = None,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``call``; retry transient failures as ``policy`` (default :data:`RETRY`) says, then raise
    TransientError. Non-transient errors propagate unchanged on the first occurrence.
    """
    policy = policy or RETRY
    attempts = attempts or policy.attempts
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise TransientError(f"{what}: gave up after {attempts} attempts: {error}") from error
            # One line per retry (metric "batchcast_retry"): an operator sees faults that retries hid.
            fields = {"metric": "batchcast_retry", "call": what, "attempt": attempt}
            message = f"{what}: retrying after {type(error).__name__}: {error}"
            RETRY_LOG.warning(message, extra={"fields": fields})
            sleep(policy.delay(attempt))
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
        # One ranged request per chunk, each retried on its own from the offset it reached: a large
        # raw file is never held twice in memory, and a reset costs one chunk, not the whole read.
        blob = self._call(lambda: self._bucket.get_blob(name, retry=None), name)
        if blob is None:
            raise NotFound(name)
        return io.BufferedReader(RangedReader(self, blob), buffer_size=READ_CHUNK_BYTES)

    def write(
        self,
        name: str,
        data: bytes,
        *,
        if_generation_match: int | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> int:
        tries = 0

        def upload() -> int:
            nonlocal tries
            tries += 1
            blob = self._bucket.blob(name)
            if metadata:
                blob.metadata = metadata
            try:
                blob.upload_from_string(
                    data,
                    content_type=content_type or "application/octet-stream",
                    if_generation_match=if_generation_match,
                    retry=None,
                )
            except api.PreconditionFailed:
                # A retry whose earlier try reached the server but lost its answer finds its own
                # write there: the same bytes mean it is done, not that someone else won.
                landed = self._generation_holding(name, data) if tries > 1 else None
                if landed is None:
                    raise
                return landed
            return int(blob.generation)

        return self._call(upload, name)

    def _generation_holding(self, name: str, data: bytes) -> int | None:
        """The object's generation if it holds exactly ``data`` (by MD5), else None."""
        blob = self._bucket.get_blob(name, retry=None)
        digest = base64.b64encode(hashlib.md5(data).digest()).decode()
        return int(blob.generation) if blob is not None and blob.md5_hash == digest else None

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
        resource = {"name": name, "contentType": content_type or "application/octet-stream"}
        if metadata:
            resource["metadata"] = metadata
        return self._resumable_upload(name, ResendableStream(rest), resource, if_generation_match)

    def _resumable_upload(
        self, name: str, source: ResendableStream, resource: dict, if_generation_match: int | None
    ) -> int:
        """Send ``source`` in pieces; after a failure, ask the server how much arrived and go on from
        there. GCS checks the precondition when the upload completes (fake-gcs-server before 2026-07
        did not). The client's crc32c check catches an object that ends up other than what was sent."""
        upload = ResumableUpload(self._upload_url(if_generation_match), UPLOAD_CHUNK_BYTES, retry=None)
        transport = self.client._http
        self._call(
            lambda: upload.initiate(transport, source, resource, resource["contentType"], stream_final=False),
            name,
        )
        failed = False

        def next_piece() -> requests.Response:
            nonlocal failed
            if failed:  # the last piece may have arrived in part or whole: ask, then go on from there
                try:
                    upload.recover(transport)
                except InvalidResponse as error:
                    if error.response.status_code in FINISHED:  # it had all arrived; the answer was lost
                        return error.response
                    raise
            failed = True
            response = upload.transmit_next_chunk(transport)
            failed = False
            return response

        response = self._call(next_piece, name)
        while response.status_code not in FINISHED:
            response = self._call(next_piece, name)
        stored = json.loads(response.content)
        if upload.total_bytes is None or int(stored["size"]) != upload.total_bytes:
            # Finished before every byte was sent: real GCS never does this, fake-gcs-server does when
            # asked how far an upload got (its issue #2354). A truncated object must not stay.
            self._call(lambda: self._bucket.blob(name).delete(if_generation_match=stored["generation"]), name)
            raise TransientError(
                f"gs://{self.bucket}/{name}: the upload finished with {stored['size']} of "
                f"{upload.total_bytes or 'more'} bytes; the object was deleted, the step must run again"
            )
        return int(stored["generation"])

    def _upload_url(self, if_generation_match: int | None) -> str:
        base = self.client._connection.API_BASE_URL  # the emulator's, under STORAGE_EMULATOR_HOST
        url = f"{base}/upload/storage/v1/b/{self.bucket}/o?uploadType=resumable"
        return url if if_generation_match is None else f"{url}&ifGenerationMatch={if_generation_match}"

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

    def _call(self, call: Callable[[], T], name: str) -> T:
        try:
            return with_retries(call, what=f"gs://{self.bucket}/{name}")
        except InvalidResponse as error:  # the upload layer's bad status: the same errors as elsewhere
            raise _port_error(api.from_http_response(error.response), name) from error
        except (api.NotFound, api.PreconditionFailed) as error:
            raise _port_error(error, name) from error


def _port_error(error: api.GoogleAPICallError, name: str) -> Exception:
    """The port's NotFound / PreconditionFailed for a 404 / 412; any other error as it is."""
    if isinstance(error, api.NotFound):
        return NotFound(name)
    if isinstance(error, api.PreconditionFailed):
        return PreconditionFailed(f"{name}: {error.message}")
    return error


class RangedReader(io.RawIOBase):
    """An object's bytes, one ranged request per read, each through the retry policy.

    A failed chunk is asked for again from the offset reached, never from zero; the generation is
    pinned, so every chunk comes from the object as it was opened.
    """

    def __init__(self, store: GcsBlobStore, blob: storage.Blob) -> None:
        self._store, self._blob = store, blob
        self._size = int(blob.size or 0)
        self._position = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True  # a ranged request can start anywhere (validation reads rows back)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readall(self) -> bytes:
        # io's default reads 8 KiB at a time: a request each. One chunk per request instead.
        return b"".join(iter(lambda: self.read(READ_CHUNK_BYTES), b""))

    def readinto(self, target: Any) -> int:
        want = min(len(target), READ_CHUNK_BYTES, self._size - self._position)
        if want <= 0:
            return 0  # at the end: no request past it
        start, end = self._position, self._position + want - 1
        data = self._store._call(
            lambda: self._blob.download_as_bytes(start=start, end=end, checksum=None, retry=None),
            self._blob.name,
        )
        target[: len(data)] = data
        self._position += len(data)
        return len(data)


class ResendableStream:
    """A read-once stream that can seek back into the piece it last returned.

    A resumable upload that failed asks the server how much of the last piece arrived and seeks
    there; everything before that piece was confirmed already, so one piece is all it keeps.
    """

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self._piece, self._piece_start, self._position = b"", 0, 0

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        end = self._piece_start + len(self._piece)
        if whence != io.SEEK_SET or not self._piece_start <= offset <= end:
            raise io.UnsupportedOperation(f"can seek only within bytes {self._piece_start}-{end}")
        self._position = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        held = self._piece[self._position - self._piece_start :]
        if 0 <= size <= len(held):
            data = held[:size]
        else:
            data = held + self._source.read(-1 if size < 0 else size - len(held))
        self._piece, self._piece_start = data, self._position
        self._position += len(data)
        return data


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

    def __init__(self, project: str, **publisher_arguments: Any) -> None:
        """``publisher_arguments`` go to the PublisherClient (a test's fault-injecting transport)."""
        self.project = project
        options = pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
        self.publisher = pubsub_v1.PublisherClient(publisher_options=options, **publisher_arguments)
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
            # retry=None: the client's own retry would hide failures from the one policy (RETRY).
            future = self.publisher.publish(path, data, ordering_key=ordering_key, retry=None, **attributes)
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
            lambda: self.subscriber.seek(request={"subscription": path, "time": stamp}, retry=None),
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
                retry=None,
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
                    "message_id": raw.message_id,
                    "publish_time": raw.publish_time.isoformat() if raw.publish_time else None,
                    "attributes": attributes,
                    "data": raw.data.decode(errors="replace"),
                    "message": message,
                    "error": error,
                }
            )
            ack_ids.append(received.ack_id)
        if ack_ids and ack:
            request = {"subscription": path, "ack_ids": ack_ids}
            with_retries(lambda: self.subscriber.acknowledge(request=request, retry=None), what=f"ack {path}")
        elif ack_ids:
            request = {"subscription": path, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
            release = self.subscriber.modify_ack_deadline
            with_retries(lambda: release(request=request, retry=None), what=f"release {path}")
        return entries

    def close(self) -> None:
        """Release the clients' channels."""
        self.publisher.stop()
        self.subscriber.close()
