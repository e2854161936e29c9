"""The gcp backend against the emulators: preconditions, CAS, streaming, listing, transient errors,
publish/pull with the message contract, seek and dead letters."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from google.api_core import exceptions as api
from google.cloud import pubsub_v1

from batchcast.backends.gcp import GcsBlobStore, PubSubBus, is_transient, storage_client, with_retries
from batchcast.core.messages import ScheduleTick, Topic, decode
from batchcast.data import storage
from batchcast.ports import NotFound, PreconditionFailed, TransientError, chunks_stream
from batchcast.tools.stack import free_port

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def blobs(stack_env) -> GcsBlobStore:
    """A fresh bucket of its own (no notifications: those are for the stack's bucket only)."""
    name = f"unit-{uuid.uuid4().hex[:12]}"
    storage_client(stack_env.project).create_bucket(name)
    return GcsBlobStore(name, stack_env.project)


def test_create_only_write_refuses_a_second_write(blobs):
    generation = blobs.write("a/x.json", b"one", if_generation_match=0, metadata={"rows": "3"})
    with pytest.raises(PreconditionFailed):
        blobs.write("a/x.json", b"two", if_generation_match=0)
    assert blobs.read("a/x.json") == b"one"
    info = blobs.stat("a/x.json")
    assert info.generation == generation and info.size == 3 and info.metadata == {"rows": "3"}
    assert info.checksum == hashlib.md5(b"one").hexdigest()  # content-based dataset fingerprints
    assert info.updated.tzinfo is not None


def test_compare_and_swap_needs_the_current_generation(blobs):
    first = blobs.write("models/LATEST", b"v1", if_generation_match=0)
    second = blobs.write("models/LATEST", b"v2", if_generation_match=first)
    assert second != first
    with pytest.raises(PreconditionFailed):
        blobs.write("models/LATEST", b"v3", if_generation_match=first)  # a stale reader loses
    assert blobs.read("models/LATEST") == b"v2"


def test_storage_helpers_keep_their_guarantees_on_gcs(blobs):
    assert storage.write_once(blobs, "r/1.json", b"same") is True
    assert storage.write_once(blobs, "r/1.json", b"same") is False  # a redelivery rewrote it
    with pytest.raises(storage.ConflictingWrite):
        storage.write_once(blobs, "r/1.json", b"different")
    storage.update_json(blobs, "status/s.json", lambda cur: {"n": (cur or {"n": 0})["n"] + 1})
    assert storage.update_json(blobs, "status/s.json", lambda cur: {"n": cur["n"] + 1}) == {"n": 2}


def test_missing_objects(blobs):
    assert blobs.stat("nope") is None
    with pytest.raises(NotFound):
        blobs.read("nope")
    with pytest.raises(NotFound):
        blobs.open("nope")


def test_open_streams_large_objects_and_list_is_in_name_order(blobs):
    data = bytes(range(256)) * 40_000  # ~10 MB: more than one 8 MB chunk
    blobs.write("big/b.bin", data)
    blobs.write("big/a.bin", b"a")
    blobs.write("bigger/c.bin", b"c")
    with blobs.open("big/b.bin") as stream:
        assert stream.read(5) == data[:5]
        assert stream.read() == data[5:]
    assert [i.name for i in blobs.list("big/")] == ["big/a.bin", "big/b.bin"]


def test_streamed_writes_and_copies_keep_preconditions_and_content(blobs):
    data = bytes(range(256)) * 50_000  # ~12 MB: more than one resumable-upload piece
    pieces = (data[i : i + 999_983] for i in range(0, len(data), 999_983))
    first = blobs.write_from("big/x.csv", chunks_stream(pieces), if_generation_match=0, metadata={"a": "1"})
    assert blobs.read("big/x.csv") == data and blobs.stat("big/x.csv").generation == first
    # Content of one piece goes in one request (GCS checks a resumable upload's precondition when it
    # completes, which fake-gcs-server before 2026-07 skipped: the small case shows the promise here).
    small = blobs.write_from("small/x.csv", chunks_stream([b"a,", b"b\n"]), if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blobs.write_from("small/x.csv", chunks_stream([b"other"]), if_generation_match=0)
    assert blobs.read("small/x.csv") == b"a,b\n" and blobs.stat("small/x.csv").generation == small
    # Copies are rewrites inside the bucket (fake-gcs-server does not check their preconditions).
    assert storage.copy_once(blobs, "big/x.csv", "rejected/x.csv") is True
    assert blobs.read("rejected/x.csv") == data and blobs.stat("rejected/x.csv").metadata == {"a": "1"}
    with pytest.raises(NotFound):
        blobs.copy("big/missing.csv", "rejected/y.csv")
    # The storage helpers on top: a redelivery finds equal bytes and writes nothing.
    generation = blobs.stat("rejected/x.csv").generation
    assert storage.copy_once(blobs, "big/x.csv", "rejected/x.csv") is False
    assert blobs.stat("rejected/x.csv").generation == generation
    with pytest.raises(storage.ConflictingWrite):
        storage.copy_once(blobs, "small/x.csv", "rejected/x.csv")
    assert storage.write_once_from(blobs, "big/x.csv", lambda: chunks_stream([data])) is False
    with pytest.raises(storage.ConflictingWrite):
        storage.write_once_from(blobs, "big/x.csv", lambda: chunks_stream([b"other"]))


def test_an_upload_validates_from_a_gcs_stream_reading_back_its_rejected_rows(blobs):
    from batchcast.data.validation import read_upload, validate_upload

    rows = [f"{i},berlin,2026-02-{1 + i % 27:02d},{i}\n" for i in range(1, 80)]
    rows[10], rows[50] = "11,berlin,2026-02-30,1\n", '51,berlin,"2026-02-25,1\n'
    data = ("store_id,city,date,sales\n" + "".join(rows) + "1,berlin,2026-02-02,9\n").encode()
    blobs.write("raw/u.csv", data)
    options = {"logical_time": T0, "chunk_bytes": 64}
    with blobs.open("raw/u.csv") as stream, read_upload(stream, "csv", size=len(data), **options) as upload:
        groups = sorted((city, entity) for city, entity, _ in upload.groups())
        rejected = pd.concat(list(upload.rejected_frames()), ignore_index=True)
        result = upload.result
    expected = validate_upload(data, "csv", **options)
    assert result.row_errors == expected.row_errors and len(result.row_errors) == 4  # a conflict: 2
    assert rejected.equals(expected.rejected) and rejected["row"].tolist() == [1, 11, 51, 80]
    assert len(groups) == 76  # stores 1 (both its rows conflict), 11 and 51 have no good row


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (api.TooManyRequests("slow down"), True),
        (api.ServiceUnavailable("503"), True),
        (api.InternalServerError("500"), True),
        (api.GatewayTimeout("504"), True),
        (ConnectionResetError("reset"), True),
        (api.NotFound("404"), False),
        (api.PreconditionFailed("412"), False),
        (api.Forbidden("403"), False),
        (api.BadRequest("400"), False),
        (ValueError("bug"), False),
    ],
)
def test_transient_classification(error, transient):
    assert is_transient(error) is transient


def test_only_transient_errors_are_retried():
    calls = []

    def failing(error):
        def call():
            calls.append(error)
            raise error

        return call

    with pytest.raises(TransientError):
        with_retries(failing(api.ServiceUnavailable("503")), what="x", attempts=3, sleep=lambda s: None)
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(api.Forbidden):
        with_retries(failing(api.Forbidden("403")), what="x", attempts=3, sleep=lambda s: None)
    assert len(calls) == 1


class _Always(http.server.BaseHTTPRequestHandler):
    status = 503
    requests = 0

    def do_GET(self):
        # Count the object's requests only (the client may also look the bucket up).
        type(self).requests += "/o/x" in self.path
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"code": %d, "message": "said so"}}' % self.status)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "raised", "requests"), [(503, TransientError, 5), (404, NotFound, 1)])
def test_a_real_server_answering_errors(monkeypatch, status, raised, requests):
    handler = type("Handler", (_Always,), {"status": status, "requests": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        with pytest.raises(raised):
            GcsBlobStore("b", "p").read("x")
    finally:
        server.shutdown()
    assert handler.requests == requests


def test_connection_refused_is_transient(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(TransientError, match="gave up after 5 attempts"):
        GcsBlobStore("b", "p").stat("x")
    assert time.monotonic() - started > 0.5  # it backed off between attempts


# -- Pub/Sub -----------------------------------------------------------------------------------------


@pytest.fixture
def bus(stack_env):
    bus = PubSubBus(stack_env.project)
    yield bus
    bus.close()


def _pull_subscription(bus: PubSubBus, topic: str, **options) -> str:
    name = f"test-{uuid.uuid4().hex[:10]}"
    bus.subscriber.create_subscription(
        request={"name": bus.subscription_path(name), "topic": bus.topic_path(topic), **options}
    )
    return name


def _pull(bus: PubSubBus, subscription: str, want: int = 1, timeout: float = 20) -> list:
    deadline, got = time.monotonic() + timeout, []
    while len(got) < want and time.monotonic() < deadline:
        response = bus.subscriber.pull(
            request={"subscription": bus.subscription_path(subscription), "max_messages": 10}, timeout=5
        )
        got.extend(response.received_messages)
    return got


def test_publish_carries_the_contract_attributes(bus):
    # A topic nobody else uses in this session, so the stack's functions do not consume it.
    topic = f"unit-{uuid.uuid4().hex[:8]}"
    bus.publisher.create_topic(request={"name": bus.topic_path(topic)})
    subscription = _pull_subscription(bus, topic)
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=T0, run_id="r1")
    bus.publish(topic, tick)
    [received] = _pull(bus, subscription)
    attributes = dict(received.message.attributes)
    assert attributes == {
        "kind": "schedule",
        "dataset": "retail",
        "run_id": "r1",
        "idempotency_key": tick.idempotency_key,
    }
    assert decode(received.message.data, attributes) == tick


def test_seek_redelivers_acked_messages(bus):
    topic = f"unit-{uuid.uuid4().hex[:8]}"
    bus.publisher.create_topic(request={"name": bus.topic_path(topic)})
    subscription = _pull_subscription(bus, topic, retain_acked_messages=True)
    before = datetime.now(UTC) - timedelta(seconds=5)
    bus.publish(topic, ScheduleTick(dataset="retail", actions=["notify"], logical_time=T0))
    [received] = _pull(bus, subscription)
    bus.subscriber.acknowledge(
        request={"subscription": bus.subscription_path(subscription), "ack_ids": [received.ack_id]}
    )
    bus.seek(subscription, before)
    [again] = _pull(bus, subscription)
    assert again.message.message_id == received.message.message_id


def test_dead_letters_are_listed_and_stay_until_acked(bus, stack_env):
    # Straight onto the dead-letter topic: what the DLQ pull subscription sees.
    tick = ScheduleTick(dataset="retail", actions=["train"], logical_time=T0 + timedelta(days=400))
    publisher = pubsub_v1.PublisherClient()
    data, attributes = tick.model_dump_json(by_alias=True).encode(), {"kind": "schedule"}
    publisher.publish(bus.topic_path(Topic.SCHEDULE.dead_letter), data, **attributes).result(30)
    deadline = time.monotonic() + 20
    mine = []
    while not mine and time.monotonic() < deadline:
        mine = [d for d in bus.dead_letters(Topic.SCHEDULE) if d["message"] == tick]
    assert mine and mine[0]["error"] is None
    # Listing released them: they are still there for the next reader, until acknowledged.
    deadline = time.monotonic() + 20
    acked = []
    while not acked and time.monotonic() < deadline:
        acked = [d for d in bus.dead_letters(Topic.SCHEDULE, ack=True) if d["message"] == tick]
    assert acked


def test_from_env_builds_the_gcp_runtime_on_the_emulators(stack_env, monkeypatch, tmp_path):
    from batchcast.core.errors import ConfigError
    from batchcast.core.settings import Settings
    from batchcast.entrypoints import runtime

    monkeypatch.setenv("BATCHCAST_ROOT", str(tmp_path))
    runtime.from_env.cache_clear()
    try:
        deployment = runtime.from_env()
        assert isinstance(deployment.ports.blobs, GcsBlobStore) and isinstance(
            deployment.ports.bus, PubSubBus
        )
        assert deployment.ports.blobs.bucket == stack_env.bucket
        assert deployment.ports.blobs.stat("nothing/here") is None  # it really talks to fake-gcs-server
    finally:
        runtime.from_env.cache_clear()
    with pytest.raises(ConfigError, match="BATCHCAST_PROJECT"):
        runtime.gcp(Settings(backend="gcp", bucket="b"))
