"""Every port method of the gcp backend goes through the retry policy, against real emulators.

Faults are injected between the client and the emulator: for GCS, a ``requests`` adapter inside the
storage client's session (connection resets before a request reaches the server or after it did,
429, 500, 503, read timeouts, 403); for Pub/Sub, a gRPC interceptor on the publisher's channel
(UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL, DEADLINE_EXCEEDED, PERMISSION_DENIED). Each method meets
four faults in a row and still succeeds on its fifth attempt; five make it give up with a
TransientError naming the object; permanent errors are raised at the first answer.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import pytest
import requests
from google.api_core import exceptions as api
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from batchcast.backends import gcp
from batchcast.backends.gcp import RETRY, GcsBlobStore, PubSubBus, RetryPolicy
from batchcast.core.messages import PredictRequest, ScheduleTick
from batchcast.data import storage as blob_helpers
from batchcast.ports import NotFound, PreconditionFailed, TransientError

PIECE = 256 * 1024  # the smallest resumable-upload piece: four of them make a 1 MiB object
DATA = bytes(range(256)) * (4 * PIECE // 256)


def _range_of(content_range: str | None) -> tuple[int, int] | None:
    """A Content-Range's first and last byte; None for a status query or an empty last piece."""
    match = re.match(r"bytes (\d+)-(\d+)/", content_range or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def _reset(adapter, request, options):
    raise requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))


def _lost_answer(adapter, request, options):
    """The server did the work; the client never heard back (the case that makes retries unsafe
    unless they resume from what the server says it has)."""
    adapter.forward(request, options)
    raise requests.ConnectionError(ConnectionResetError(104, "Connection reset by peer"))


def _timeout(adapter, request, options):
    raise requests.ReadTimeout("read timed out (injected)")


def _status(code: int) -> Callable:
    def answer(adapter, request, options):
        response = requests.Response()
        response.status_code = code
        response._content = b'{"error": {"code": %d, "message": "injected %d"}}' % (code, code)
        response.headers["Content-Type"] = "application/json"
        response.url, response.request, response.raw = request.url, request, io.BytesIO(response._content)
        return response

    answer.__name__ = f"status_{code}"
    return answer


FOUR_FAULTS = [_reset, _status(429), _status(503), _timeout]


@dataclass
class Sent:
    method: str
    url: str
    headers: requests.structures.CaseInsensitiveDict
    fault: str | None


@dataclass
class FaultyAdapter(requests.adapters.HTTPAdapter):
    """Sends requests to the emulator, except those a planned fault answers instead."""

    plan: list[Callable] = field(default_factory=list)
    matches: Callable[[requests.PreparedRequest], bool] = lambda request: False
    sent: list[Sent] = field(default_factory=list)
    gcs_status_queries: bool = False  # answer "how far did my upload get" as GCS does
    received: dict[str, int] = field(default_factory=dict)  # upload id: bytes the emulator took

    def __post_init__(self) -> None:
        super().__init__()

    def __hash__(self) -> int:
        return id(self)

    def inject(self, faults: list[Callable], matches: Callable[[requests.PreparedRequest], bool]) -> None:
        """The next ``len(faults)`` requests that ``matches`` meet these faults, in this order."""
        self.plan, self.matches = list(faults), matches

    def forward(self, request, options) -> requests.Response:
        response = super().send(request, **options)
        upload, sent = (
            re.search(r"upload_id=(\w+)", request.url),
            _range_of(request.headers.get("Content-Range")),
        )
        if upload and sent and response.status_code in (200, 308):
            self.received[upload.group(1)] = sent[1] + 1
        return response

    def send(self, request, **options):
        fault = self.plan.pop(0) if self.plan and self.matches(request) else None
        self.sent.append(Sent(request.method, request.url, request.headers.copy(), fault and fault.__name__))
        if fault:
            return fault(self, request, options)
        if self.gcs_status_queries and request.headers.get("Content-Range") == "bytes */*":
            return self.status_query_as_gcs_answers(request)
        return self.forward(request, options)

    def status_query_as_gcs_answers(self, request) -> requests.Response:
        """308 with the bytes received so far, as GCS answers; fake-gcs-server instead finalizes the
        upload with what it has (fsouza/fake-gcs-server#2354, #1362)."""
        received = self.received.get(re.search(r"upload_id=(\w+)", request.url).group(1), 0)
        response = requests.Response()
        response.status_code, response._content, response.request = 308, b"", request
        if received:
            response.headers["Range"] = f"bytes=0-{received - 1}"
        return response

    def faults_met(self) -> list[str]:
        return [s.fault for s in self.sent if s.fault]


@pytest.fixture
def faulty(stack_env) -> tuple[GcsBlobStore, FaultyAdapter]:
    """A blob store on a fresh bucket whose storage client sends through a :class:`FaultyAdapter`."""
    adapter = FaultyAdapter()
    session = requests.Session()
    session.mount("http://", adapter)
    client = storage.Client(project=stack_env.project, credentials=AnonymousCredentials(), _http=session)
    name = f"retry-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return GcsBlobStore(name, client=client), adapter


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch):
    """Pieces of 256 KiB, so a 1 MiB object is read and written in four requests."""
    monkeypatch.setattr(gcp, "READ_CHUNK_BYTES", PIECE)
    monkeypatch.setattr(gcp, "UPLOAD_CHUNK_BYTES", PIECE)
    monkeypatch.setattr(gcp, "RETRY", RetryPolicy(base_seconds=0.01, max_seconds=0.01))


def _on(method: str, pattern: str) -> Callable[[requests.PreparedRequest], bool]:
    return lambda request: request.method == method and re.search(pattern, request.url) is not None


def _read_all(blobs: GcsBlobStore, name: str) -> bytes:
    with blobs.open(name) as stream:
        return stream.read()


# Each port method, the request a fault hits, and what proves it did its work.
METHODS = {
    "read": (lambda b: b.read("o/a.bin"), _on("GET", r"/o/o%2Fa\.bin\?alt=media")),
    "open-and-stream": (lambda b: _read_all(b, "o/a.bin"), _on("GET", r"alt=media")),
    "write": (lambda b: b.write("o/new.bin", b"new", if_generation_match=0), _on("POST", r"/upload/")),
    "copy": (lambda b: b.copy("o/a.bin", "o/copy.bin"), _on("POST", r"rewriteTo")),
    "list": (lambda b: [i.name for i in b.list("o/")], _on("GET", r"/o\?")),
    "compare-and-swap": (
        lambda b: b.write("o/a.bin", b"v2", if_generation_match=b.stat("o/a.bin").generation),
        _on("POST", r"/upload/"),
    ),
    "update_json": (
        lambda b: blob_helpers.update_json(b, "o/doc.json", lambda cur: {"n": 1}),
        _on("POST", r"/upload/"),
    ),
}


READS = {"read": DATA, "open-and-stream": DATA, "list": ["o/a.bin"]}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_storage_method_survives_four_faults_in_a_row(faulty, method):
    blobs, adapter = faulty
    blobs.write("o/a.bin", DATA)
    call, target = METHODS[method]
    adapter.inject(FOUR_FAULTS, target)
    result = call(blobs)
    assert adapter.faults_met() == ["_reset", "status_429", "status_503", "_timeout"], method
    if method in READS:
        assert result == READS[method]
    stored = {
        "write": ("o/new.bin", b"new"),
        "copy": ("o/copy.bin", DATA),
        "compare-and-swap": ("o/a.bin", b"v2"),
        "update_json": ("o/doc.json", blob_helpers.dumps({"n": 1})),
    }
    if method in stored:
        name, content = stored[method]
        assert blobs.read(name) == content, method


def test_a_streamed_read_resumes_from_the_offset_it_reached_not_from_zero(faulty):
    blobs, adapter = faulty
    blobs.write("o/big.bin", DATA)
    third_piece = _on("GET", r"alt=media")
    adapter.inject([], third_piece)
    with blobs.open("o/big.bin") as stream:
        head = stream.read(2 * PIECE)
        adapter.inject([_lost_answer, _status(500), _reset, _timeout], third_piece)
        rest = stream.read()
    assert head + rest == DATA
    ranges = [s.headers.get("Range") for s in adapter.sent if s.method == "GET" and "alt=media" in s.url]
    third = f"bytes={2 * PIECE}-{3 * PIECE - 1}"
    assert ranges == [f"bytes=0-{PIECE - 1}", f"bytes={PIECE}-{2 * PIECE - 1}", *[third] * 5, ranges[-1]]
    assert ranges[-1] == f"bytes={3 * PIECE}-{4 * PIECE - 1}"  # and nothing past the end


def test_a_resumable_write_resumes_from_the_offset_the_server_confirms(faulty):
    blobs, adapter = faulty
    adapter.gcs_status_queries = True
    pieces = (DATA[i : i + 100_000] for i in range(0, len(DATA), 100_000))
    # The first piece reaches the server but its answer is lost; then three more faults.
    adapter.inject([_lost_answer, _status(503), _reset, _status(429)], _on("PUT", r"upload_id="))
    generation = blobs.write_from("o/stream.bin", blob_helpers.chunks_stream(pieces), metadata={"a": "1"})
    assert blobs.read("o/stream.bin") == DATA
    info = blobs.stat("o/stream.bin")
    assert info.generation == generation and info.metadata == {"a": "1"}
    puts = [s.headers.get("Content-Range") for s in adapter.sent if s.method == "PUT"]
    # The lost answer's piece had arrived: after asking ("bytes */*", once per failure) the upload
    # went on from the next byte, and no byte was sent twice.
    assert puts == [
        f"bytes 0-{PIECE - 1}/*",
        *["bytes */*"] * 4,
        f"bytes {PIECE}-{2 * PIECE - 1}/*",
        *puts[6:],
    ]
    starts = [r[0] for r in map(_range_of, puts) if r]
    assert starts == [0, PIECE, 2 * PIECE, 3 * PIECE], puts


def test_an_upload_the_emulator_finishes_early_is_deleted_not_left_truncated(faulty):
    blobs, adapter = faulty  # the emulator's own answer to "how far did it get": it finalizes
    adapter.inject([_lost_answer], _on("PUT", r"upload_id="))
    with pytest.raises(TransientError, match=r"finished with 262144 of more bytes; the object was deleted"):
        blobs.write_from("o/cut.bin", blob_helpers.chunks_stream([DATA]))
    assert blobs.stat("o/cut.bin") is None


@pytest.mark.parametrize("create_only", [True, False])
def test_a_conditional_write_whose_answer_was_lost_finds_its_own_write_and_succeeds(faulty, create_only):
    blobs, adapter = faulty
    current = None if create_only else blobs.write("o/a.bin", b"v1")
    adapter.inject([_lost_answer], _on("POST", r"/upload/"))
    generation = blobs.write("o/a.bin", b"v2", if_generation_match=0 if create_only else current)
    # The retry met 412 (the first try had written); the bytes there are its own, so it is done.
    assert adapter.faults_met() == ["_lost_answer"]
    assert blobs.read("o/a.bin") == b"v2" and blobs.stat("o/a.bin").generation == generation
    with pytest.raises(PreconditionFailed):  # while a write that really lost still fails
        blobs.write("o/a.bin", b"v3", if_generation_match=0 if create_only else current)


def test_five_faults_in_a_row_give_up_with_a_transient_error_naming_the_object(faulty):
    blobs, adapter = faulty
    blobs.write("o/a.bin", DATA)
    adapter.inject([_status(500)] * RETRY.attempts, _on("GET", r"alt=media"))
    lines = _RetryLines()
    gcp.RETRY_LOG.addHandler(lines)
    try:
        with pytest.raises(TransientError, match=rf"gs://{blobs.bucket}/o/a\.bin: gave up after 5 attempts"):
            blobs.read("o/a.bin")
    finally:
        gcp.RETRY_LOG.removeHandler(lines)
    assert len(adapter.faults_met()) == RETRY.attempts
    # Each retry left a line an operator can count (the last attempt's failure is the error itself).
    assert [r.fields["attempt"] for r in lines.records] == [1, 2, 3, 4]
    assert all(
        r.fields["metric"] == "batchcast_retry" and "InternalServerError" in r.getMessage()
        for r in lines.records
    )


class _RetryLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(
    ("status", "raised"), [(404, NotFound), (403, api.Forbidden), (412, PreconditionFailed)]
)
def test_permanent_errors_are_raised_at_the_first_answer(faulty, status, raised):
    blobs, adapter = faulty
    first = blobs.write("o/a.bin", b"v1")
    sent_before = len(adapter.sent)
    with pytest.raises(raised):
        if status == 404:
            blobs.read("o/missing.bin")  # a real 404 from the emulator
        elif status == 412:
            blobs.write("o/a.bin", b"v3", if_generation_match=first + 1)  # a stale generation: real 412
        else:
            adapter.inject([_status(403)], _on("GET", r"alt=media"))
            blobs.read("o/a.bin")
    assert len(adapter.sent) - sent_before == 1  # one request, no retry
    assert blobs.read("o/a.bin") == b"v1"


# -- Pub/Sub -----------------------------------------------------------------------------------------


class _InjectedRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(f"injected {code.name}")
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"injected {self._code.name}"

    def trailing_metadata(self):
        return None

    def result(self, timeout=None):
        raise self  # what grpc's own failed outcome does when the interceptor's caller asks


class FaultyChannel(grpc.UnaryUnaryClientInterceptor):
    """Fails the next Publish calls with the planned status codes, then lets them through."""

    def __init__(self) -> None:
        self.plan: list[grpc.StatusCode] = []
        self.publishes = 0

    def intercept_unary_unary(self, continuation, details, request):
        if details.method.endswith("/Publish"):
            self.publishes += 1
            if self.plan:
                return _InjectedRpcError(self.plan.pop(0))
        return continuation(details, request)


@pytest.fixture
def faulty_bus(stack_env):
    interceptor = FaultyChannel()
    channel = grpc.intercept_channel(
        grpc.insecure_channel(stack_env.env()["PUBSUB_EMULATOR_HOST"]), interceptor
    )
    bus = PubSubBus(stack_env.project, transport=PublisherGrpcTransport(channel=channel))
    topic = f"retry-{uuid.uuid4().hex[:8]}"
    bus.publisher.create_topic(request={"name": bus.topic_path(topic)})
    yield bus, interceptor, topic
    bus.close()


TICK = ScheduleTick(dataset="retail", actions=["notify"], logical_time=datetime(2026, 3, 2, tzinfo=UTC))
C = grpc.StatusCode


# A city's messages carry an ordering key, which a failed publish pauses until it is resumed.
REQUEST = PredictRequest(
    dataset="retail",
    city="berlin",
    shard=0,
    shards=1,
    model_version="v0",
    target_start=datetime(2026, 3, 3),
    target_end=datetime(2026, 3, 4),
    entities=["1"],
    logical_time=datetime(2026, 3, 2, tzinfo=UTC),
)


@pytest.mark.parametrize("message", [TICK, REQUEST], ids=["no-ordering-key", "ordering-key"])
def test_publish_survives_four_faults_in_a_row(faulty_bus, message):
    bus, interceptor, topic = faulty_bus
    interceptor.plan = [C.UNAVAILABLE, C.RESOURCE_EXHAUSTED, C.INTERNAL, C.DEADLINE_EXCEEDED]
    assert bus.publish(topic, message)
    assert interceptor.publishes == 5 and interceptor.plan == []


@pytest.mark.parametrize(
    ("code", "raised"), [(C.PERMISSION_DENIED, api.PermissionDenied), (None, api.NotFound)]
)
def test_publish_raises_permanent_errors_at_once(faulty_bus, code, raised):
    bus, interceptor, topic = faulty_bus
    if code is None:
        topic = "no-such-topic"  # a real NOT_FOUND from the emulator
    else:
        interceptor.plan = [code]
    with pytest.raises(raised):
        bus.publish(topic, TICK)
    assert interceptor.publishes == 1
