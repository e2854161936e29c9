"""The counting blob store: every request tallied under the step that made it, nothing changed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcast.backends.embedded import EmbeddedBlobStore
from batchcast.core import layout
from batchcast.data import catalog, storage
from batchcast.data.catalog import DataFile
from batchcast.ops import freshness
from batchcast.ports import NotFound, PreconditionFailed
from batchcast.tools.counting import OUTSIDE, CountingBlobStore, Operation, Tally


@pytest.fixture
def blobs(tmp_path: Path) -> CountingBlobStore:
    return CountingBlobStore(EmbeddedBlobStore(tmp_path), names=True)


def test_requests_are_tallied_under_the_step_in_force(blobs: CountingBlobStore) -> None:
    generation = blobs.write("a/x.json", b"12345", if_generation_match=0)
    blobs.write("a/y.json", b"xy")
    with blobs.attributed("one") as tally:
        assert blobs.read("a/x.json") == b"12345"
        assert blobs.stat("a/missing") is None
        with pytest.raises(NotFound):
            blobs.read("a/missing")
        with pytest.raises(PreconditionFailed):  # refused, but a request all the same
            blobs.write("a/x.json", b"abc", if_generation_match=generation + 1)
        listing = blobs.list("a/")
    # Consumed after the block: still the listing step's objects.
    assert [info.name for info in listing] == ["a/x.json", "a/y.json"]
    assert tally == Tally(list_calls=1, listed=2, reads=2, read_bytes=5, stats=1, writes=1, write_bytes=3)
    assert tally.operations == 5
    assert blobs.tallies["one"] == tally
    assert blobs.tallies[OUTSIDE] == Tally(writes=2, write_bytes=7)
    assert blobs.touched == {
        (OUTSIDE, "create", "a/x.json"),
        (OUTSIDE, "update", "a/y.json"),
        ("one", "read", "a/x.json"),
        ("one", "read", "a/missing"),
        ("one", "update", "a/x.json"),
        ("one", "read", "a/"),
    }
    assert blobs.inner.read("a/x.json") == b"12345"  # the failed write changed nothing


def test_pool_threads_count_for_the_step_and_as_concurrent(blobs: CountingBlobStore) -> None:
    names = [f"d/{i}.bin" for i in range(5)]
    for name in names:
        blobs.write(name, name.encode())
    seen: list[Operation] = []
    blobs.observers.append(seen.append)
    with blobs.attributed("predict") as tally:
        assert storage.read_many(blobs, names) == [n.encode() for n in names]
        blobs.stat(names[0])
    assert (tally.reads, tally.stats, tally.concurrent) == (5, 1, 5)
    assert tally.read_bytes == sum(len(n) for n in names)
    assert sorted((op.kind, op.name, op.concurrent) for op in seen) == sorted(
        [("read", n, True) for n in names] + [("stat", names[0], False)]
    )
    assert {op.step for op in seen} == {"predict"}


def test_blocks_nest_and_streams_count_their_bytes(blobs: CountingBlobStore) -> None:
    blobs.write("s/big", b"x" * 10_000)
    with blobs.attributed("outer") as outer:
        with blobs.attributed("inner") as inner:
            assert blobs.step == "inner"
            with blobs.open("s/big") as stream:
                assert len(stream.read(4_000)) == 4_000
                assert len(stream.read()) == 6_000
        assert blobs.step == "outer"
        blobs.stat("s/big")
    assert blobs.step == OUTSIDE
    assert inner == Tally(reads=1, read_bytes=10_000)
    assert outer == Tally(stats=1)


def test_a_whole_dataset_freshness_check_lists_results_once(blobs: CountingBlobStore, retail) -> None:
    """The counting store as a cost check: one listing of results/ however many cities have data."""
    now = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    expected = retail.expected_window(now)[0].isoformat()
    for city, store in (("berlin", "1"), ("munich", "2"), ("paris", "3")):
        file = DataFile(f"batch_data/{city}-{store}.avro", "upload", "2026-03-01T00:00:00", expected, 1, "x")
        catalog.record(blobs, retail, city, {store: file})
        if store != "3":  # store 3 has no forecast yet
            name = layout.results_object("retail", "store_id", store)
            blobs.write(name, b"{}", metadata={"target_start": expected, "as_of": now.isoformat()})
    with blobs.attributed("notify") as tally:
        statuses = freshness.entity_statuses(blobs, retail, now)
    assert {e: s["stale"] for e, s in statuses.items()} == {"1": False, "2": False, "3": True}
    assert (tally.list_calls, tally.listed) == (1, 2)
