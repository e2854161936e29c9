"""Real use: every store uploads its own file every day, for years.

Each store's upload re-forecasts that store at once with the current model; the schedule retrains.
Any number of uploads per city per day — the same file twice, two at once, late or corrected ones —
each ends in results for its stores and no dead letters. The manifest, not a listing, says which
files hold a store's rows, and compaction keeps their number bounded whatever the order uploads
were processed in.
"""

from __future__ import annotations

import json
import shutil
import threading
from datetime import date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from batchcast.backends.embedded import finalize_event
from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.messages import PredictRequest, ScheduleTick, Topic
from batchcast.data import catalog, dataset, uploads
from batchcast.entrypoints import runtime
from batchcast.ops import metrics, models, training
from batchcast.ports import FixedClock
from batchcast.steps import predict
from batchcast.tools import synth
from batchcast.tools.cli import app

# Every test here trains models on generated data: make test-unit leaves the file out.
pytestmark = pytest.mark.slow

END = date(2026, 3, 1)
HISTORY = 60  # days uploaded in one file before the daily uploads begin


def _at(profile: Profile, day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), profile.zone())


def _csv(rows: pd.DataFrame) -> bytes:
    return rows.to_csv(index=False).encode()


def _shop(root: Path, profile: Profile, days: int, stores: int = 6) -> tuple[runtime.Runtime, pd.DataFrame]:
    """A deployment whose stores uploaded ``HISTORY`` days in one file; the rest is theirs to upload."""
    frame = synth.generate(profile, stores, HISTORY + days, seed=7, end=END + timedelta(days=days))
    frame["date"] = pd.to_datetime(frame["date"])
    first = frame["date"].min().date() + timedelta(days=HISTORY - 1)
    clock = FixedClock(_at(profile, first, 21))
    deployment = runtime.embedded(root, clock=clock, backoff_seconds=0.001)
    history = frame[frame["date"] <= pd.Timestamp(first)]
    uploads.store_upload(
        deployment.ports.blobs, _csv(history), ext="csv", now=clock.now(), dataset=profile.name
    )
    deployment.bus.drain()
    return deployment, frame


def _upload(
    deployment: runtime.Runtime, profile: Profile, rows: pd.DataFrame, upload_id: str | None = None
) -> None:
    blobs, now = deployment.ports.blobs, deployment.ports.clock.now()
    uploads.store_upload(blobs, _csv(rows), ext="csv", now=now, dataset=profile.name, upload_id=upload_id)


def _tick(deployment: runtime.Runtime, profile: Profile, at: datetime, actions: list[str]) -> None:
    deployment.ports.clock.set(at)
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset=profile.name, actions=actions, logical_time=at)
    )
    deployment.bus.drain()


def _result(deployment: runtime.Runtime, profile: Profile, store: str) -> dict:
    return json.loads(
        deployment.ports.blobs.read(layout.results_object(profile.name, profile.entity_key, store))
    )


def _runs(deployment: runtime.Runtime) -> list[dict]:
    blobs = deployment.ports.blobs
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]


def _dead_letters(deployment: runtime.Runtime) -> list[dict]:
    return [d for topic in Topic for d in deployment.bus.dead_letters(topic)]


def _stored_rows(deployment: runtime.Runtime, profile: Profile, city: str) -> pd.DataFrame:
    data = catalog.read(deployment.ports.blobs, profile, city)
    return dataset.read_rows(deployment.ports.blobs, profile, data)


def test_stores_uploading_their_own_file_daily_are_reforecast_at_once_and_trained_nightly(
    small_retail, tmp_path
):
    profile = small_retail("dailyshop")
    days = 9
    deployment, frame = _shop(tmp_path, profile, days)
    stores = sorted(frame["store_id"].unique())
    first = frame["date"].min().date() + timedelta(days=HISTORY)
    for offset in range(days):
        day = first + timedelta(days=offset)
        for minute, store in enumerate(stores):  # each store closes, then uploads its own day
            deployment.ports.clock.set(_at(profile, day, 21, minute))
            _upload(
                deployment,
                profile,
                frame[(frame["store_id"] == store) & (frame["date"] == pd.Timestamp(day))],
            )
            deployment.bus.drain()
            result = _result(deployment, profile, store)
            # Forecast for tomorrow, made from this upload (its time is the as-of), history included.
            assert result["target"]["start"] == f"{day + timedelta(days=1)}T00:00:00"
            assert datetime.fromisoformat(result["as_of"]) == deployment.ports.clock.now()
            assert result["history"][-1]["period_start"] == f"{day}T00:00:00"
        midnight = _at(profile, day + timedelta(days=1), 0)
        _tick(deployment, profile, midnight, ["train", "predict"])
        _tick(deployment, profile, midnight + timedelta(minutes=30), ["notify"])

    runs = _runs(deployment)
    assert [r for r in runs if r["status"] == "failed"] == [] and _dead_letters(deployment) == []
    # Trainings: the first upload's cold start and one per nightly tick and city, never per upload.
    by_trigger = {"upload": 0, "schedule": 0}
    for run in runs:
        if run["function"] == "train_trigger":
            kind = "upload" if run["message"]["kind"] == "partitions-ready" else "schedule"
            by_trigger[kind] += run["counts"].get("models_trained", 0)
    cities = frame["city"].nunique()
    assert by_trigger == {"upload": cities, "schedule": cities * days}
    freshness = json.loads(deployment.ports.blobs.read(layout.FRESHNESS))["datasets"][profile.name]
    assert freshness["stale"] == 0 and sorted(freshness["entities"]) == stores
    # Every store's files: a few segments and fewer uploads than trigger a compaction.
    for city in frame["city"].unique():
        data = catalog.read(deployment.ports.blobs, profile, city)
        for entity in data.values():
            assert len(entity.uploads) < dataset.COMPACT_AFTER
            assert [f for f in entity.files if f.kind == "segment"]
        stored = _stored_rows(deployment, profile, city)
        expected = frame[frame["city"] == city].sort_values(["store_id", "date"]).reset_index(drop=True)
        assert stored["sales"].tolist() == pytest.approx(expected["sales"].tolist())
        assert (stored["date"].to_numpy() == expected["date"].to_numpy()).all()
    _assert_track_record_and_live_accuracy(deployment, profile, frame, first, days)


def _assert_track_record_and_live_accuracy(
    deployment: runtime.Runtime, profile: Profile, frame: pd.DataFrame, first: date, days: int
) -> None:
    """Each day was forecast at midnight (and the evening before); its actual came with the store's
    upload at 21:00. The results keep each day's midnight forecast with its actual, and each
    midnight tick scored the day before in the city's metrics."""
    blobs = deployment.ports.blobs
    actual = frame.set_index(["store_id", "date"])["sales"]
    abs_error: dict[tuple[str, date], float] = {}
    for store in sorted(frame["store_id"].unique()):
        result = _result(deployment, profile, store)
        track = result["track_record"]
        # From the day the history upload forecast to the last tick's day, which has no actual yet.
        assert [row["period_start"][:10] for row in track] == [
            str(first + timedelta(days=i)) for i in range(days + 1)
        ]
        assert track[-1]["actual"] is None
        for row in track[:-1]:
            day = date.fromisoformat(row["period_start"][:10])
            assert row["actual"] == pytest.approx(actual[(store, pd.Timestamp(day))])
            # the forecast made at or before the day began: midnight's, or the evening's before it
            assert datetime.fromisoformat(row["as_of"]) <= _at(profile, day, 0)
            city = result["city"]
            abs_error[(city, day)] = abs_error.get((city, day), 0.0) + abs(row["p50"] - row["actual"])
        errors = [abs(r["p50"] - r["actual"]) for r in track[:-1]]
        assert result["accuracy"]["periods"] == days
        assert result["accuracy"]["mae"] == pytest.approx(sum(errors) / days, abs=1e-3)
        assert [f["target"]["start"][:10] for f in result["forecasts"]] == [str(first + timedelta(days=days))]

    for (city, day), expected in abs_error.items():
        document = json.loads(blobs.read(layout.metrics_object(profile.name, day, city)))
        assert document.get("live"), f"no live accuracy for {city} on {day}"
        live = metrics.LiveScore()
        for entry in document["live"].values():
            live += metrics.LiveScore.from_json(entry)
        assert live.points == (frame[frame["city"] == city]["store_id"].nunique())
        assert live.abs_error == pytest.approx(expected, abs=1e-3)
        assert live.scaled_points == live.points and live.mase > 0

    # A redelivered scheduled predict writes the same live entry again (same key, same values).
    request = _last_scheduled_request(deployment, profile, frame)
    name = layout.metrics_object(profile.name, first + timedelta(days=days - 1), request.city_)
    before = blobs.read(name)
    predict.run(deployment.ports, request, None)
    assert blobs.read(name) == before


def _last_scheduled_request(
    deployment: runtime.Runtime, profile: Profile, frame: pd.DataFrame
) -> PredictRequest:
    """The last midnight tick's request for the first store's city (one shard per city)."""
    result = _result(deployment, profile, sorted(frame["store_id"].unique())[0])
    target = datetime.fromisoformat(result["target"]["start"])
    metrics_name = layout.metrics_object(profile.name, target.date(), result["city"])
    day = json.loads(deployment.ports.blobs.read(metrics_name))
    assert list(day["predictions"]) == [f"{target.isoformat()}/shard-0-of-1"]
    return PredictRequest(
        dataset=profile.name,
        city=result["city"],
        shard=0,
        shards=1,
        model_version=result["model_version"],
        target_start=target,
        target_end=datetime.fromisoformat(result["target"]["end"]),
        entities=sorted(frame[frame["city"] == result["city"]]["store_id"].unique()),
        logical_time=datetime.fromisoformat(result["as_of"]),
    )


def test_the_same_file_twice_and_two_uploads_at_once_each_end_in_results(small_retail, tmp_path):
    profile = small_retail("twiceshop")
    deployment, frame = _shop(tmp_path, profile, days=1)
    day = frame["date"].max()
    todays = {s: frame[(frame["store_id"] == s) & (frame["date"] == day)] for s in frame["store_id"].unique()}
    berlin = sorted(frame.loc[frame["city"] == "berlin", "store_id"].unique())
    same, left, right = berlin[0], berlin[1], berlin[2]
    deployment.ports.clock.set(_at(profile, day.date(), 21))

    _upload(deployment, profile, todays[same], upload_id="same-file-a")
    _upload(deployment, profile, todays[same], upload_id="same-file-b")  # a retry under another id
    deployment.bus.drain()

    # Two stores of one city at once: both partitions update the same city's manifest concurrently.
    blobs = deployment.ports.blobs
    names = [
        uploads.store_upload(blobs, _csv(todays[s]), ext="csv", now=blobs.clock.now(), dataset=profile.name)
        for s in (left, right)
    ]
    events = [finalize_event(blobs.bucket, blobs.stat(n)) for n in names]
    threads = [threading.Thread(target=deployment.handle, args=("partition", e)) for e in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deployment.bus.drain()  # the queued notifications: already processed, acknowledged

    assert _dead_letters(deployment) == [] and [r for r in _runs(deployment) if r["status"] == "failed"] == []
    for store in (same, left, right):
        result = _result(deployment, profile, store)
        assert result["target"]["start"] == f"{(day + timedelta(days=1)).date()}T00:00:00"
        assert result["history"][-1]["period_start"] == f"{day.date()}T00:00:00"
    data = catalog.read(blobs, profile, "berlin", entities=[left, right])
    assert all(f"{day.date()}T00:00:00" == data[s].last for s in (left, right))
    # Every predictions file of the day is its own version: one per request, none overwritten.
    predictions = [
        i.name for i in blobs.list(layout.PREDICTIONS) if f"dt={(day + timedelta(days=1)).date()}" in i.name
    ]
    assert len(predictions) == len(set(predictions)) >= 3


def _raw(deployment: runtime.Runtime, profile: Profile, rows: pd.DataFrame, at: datetime, upload_id: str):
    """Store an upload finalized at ``at`` and return its event, undelivered."""
    deployment.ports.clock.set(at)
    blobs = deployment.ports.blobs
    name = uploads.store_upload(
        blobs, _csv(rows), ext="csv", now=at, dataset=profile.name, upload_id=upload_id
    )
    return finalize_event(blobs.bucket, blobs.stat(name))


def test_the_latest_upload_wins_whatever_order_uploads_are_processed_and_compacted_in(small_retail, tmp_path):
    profile = small_retail("ordershop")
    deployment, frame = _shop(tmp_path, profile, days=12, stores=2)
    store = sorted(frame["store_id"].unique())[0]
    city = frame.loc[frame["store_id"] == store, "city"].iloc[0]
    rows = frame[frame["store_id"] == store].sort_values("date")
    day = rows["date"].iloc[HISTORY]
    base = _at(profile, day.date(), 10)

    def corrected(sales: float) -> pd.DataFrame:
        return rows[rows["date"] == day].assign(sales=sales)

    first = _raw(deployment, profile, corrected(100.0), base, "first")
    fix = _raw(deployment, profile, corrected(200.0), base + timedelta(hours=1), "fix")
    deployment.handle("partition", fix)  # the correction is processed before what it corrects
    deployment.handle("partition", first)

    def sales_on(when: pd.Timestamp) -> float:
        stored = _stored_rows(deployment, profile, city)
        return float(stored.loc[(stored["store_id"] == store) & (stored["date"] == when), "sales"].iloc[0])

    assert sales_on(day) == 200.0
    # More days arrive until the store's upload files are compacted into segments.
    for offset in range(1, dataset.COMPACT_AFTER + 1):
        later = rows["date"].iloc[HISTORY + offset]
        deployment.handle(
            "partition",
            _raw(
                deployment, profile, rows[rows["date"] == later], base + timedelta(days=offset), f"d{offset}"
            ),
        )
    data = catalog.read(deployment.ports.blobs, profile, city, entities=[store])[store]
    assert [f for f in data.files if f.kind == "segment"] and len(data.uploads) < dataset.COMPACT_AFTER
    assert sales_on(day) == 200.0
    # A late upload finalized between the two is older than the fix: the fix still wins.
    between = _raw(deployment, profile, corrected(150.0), base + timedelta(minutes=30), "between")
    deployment.handle("partition", between)
    assert sales_on(day) == 200.0
    newest = _raw(deployment, profile, corrected(300.0), base + timedelta(days=30), "newest")
    deployment.handle("partition", newest)
    assert sales_on(day) == 300.0
    stored = _stored_rows(deployment, profile, city)
    mine = stored[stored["store_id"] == store]
    assert mine["date"].is_unique and len(mine) == HISTORY + dataset.COMPACT_AFTER + 1


def test_a_compaction_that_dies_before_the_manifest_swap_loses_nothing_and_completes_on_retry(
    small_retail, tmp_path, monkeypatch
):
    profile = small_retail("crashshop")
    # The history file plus these daily uploads make COMPACT_AFTER upload files at the last one.
    deployment, frame = _shop(tmp_path, profile, days=dataset.COMPACT_AFTER - 1, stores=1)
    store, city = frame["store_id"].iloc[0], frame["city"].iloc[0]
    days = sorted(frame["date"].unique())[HISTORY:]
    events = [
        _raw(
            deployment, profile, frame[frame["date"] == d], _at(profile, pd.Timestamp(d).date(), 21), f"d{i}"
        )
        for i, d in enumerate(days)
    ]
    for event in events[:-1]:
        deployment.handle("partition", event)
    before = len(_stored_rows(deployment, profile, city))

    real_replace = catalog.replace
    monkeypatch.setattr(catalog, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        deployment.handle("partition", events[-1])  # the upload that makes compaction due
    orphans = {
        i.name
        for i in deployment.ports.blobs.list(layout.batch_data_prefix(profile.name, city))
        if "/segment-" in i.name
    }
    data = catalog.read(deployment.ports.blobs, profile, city)[store]
    assert orphans and not [f for f in data.files if f.kind == "segment"]  # written, never listed
    stored = _stored_rows(deployment, profile, city)
    assert len(stored) == before + 1  # every row still readable through the upload files

    monkeypatch.setattr(catalog, "replace", real_replace)
    deployment.handle("partition", events[-1])  # Pub/Sub redelivers
    data = catalog.read(deployment.ports.blobs, profile, city)[store]
    segments = {f.name for f in data.files if f.kind == "segment"}
    assert segments == orphans  # the same bytes, so the same names: nothing duplicated
    assert _stored_rows(deployment, profile, city)["sales"].tolist() == pytest.approx(
        frame.sort_values("date")["sales"].tolist()
    )


def test_two_compactions_of_one_store_at_once_leave_one_consistent_manifest(small_retail, tmp_path):
    profile = small_retail("raceshop")
    deployment, frame = _shop(tmp_path, profile, days=3, stores=1)
    store, city = frame["store_id"].iloc[0], frame["city"].iloc[0]
    for i, d in enumerate(sorted(frame["date"].unique())[HISTORY:]):
        deployment.handle(
            "partition",
            _raw(
                deployment,
                profile,
                frame[frame["date"] == d],
                _at(profile, pd.Timestamp(d).date(), 21),
                f"d{i}",
            ),
        )
    blobs = deployment.ports.blobs
    data = catalog.read(blobs, profile, city)
    barrier = threading.Barrier(2)

    def compact() -> None:
        barrier.wait()
        dataset.compact(blobs, profile, city, data, [store], force=True)

    threads = [threading.Thread(target=compact) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = catalog.read(blobs, profile, city)[store].files
    assert len({f.name for f in files}) == len(files) and all(f.kind == "segment" for f in files)
    stored = _stored_rows(deployment, profile, city)
    assert stored["sales"].tolist() == pytest.approx(frame.sort_values("date")["sales"].tolist())


def test_racing_trainings_of_one_version_leave_a_model_that_matches_its_checksum(
    small_retail, tmp_path, monkeypatch
):
    profile = small_retail("raceshop")
    deployment, _ = _shop(tmp_path, profile, days=1, stores=2)
    blobs = deployment.ports.blobs
    city = "berlin" if catalog.read(blobs, profile, "berlin") else "munich"
    data = catalog.read(blobs, profile, city)
    at = deployment.ports.clock.now() + timedelta(hours=5)
    ref = models.ModelRef(models.version_name(at, "f" * 64), "f" * 64, at.isoformat())
    folder = layout.model_dir(profile.name, city, ref.version)
    # Training A writes its artifacts, then stalls until training B has finished and registered
    # the version; B trained with other settings, so their model bytes differ.
    other = profile.model_copy(update={"training": profile.training.model_copy(update={"max_iter": 41})})
    b_done = threading.Event()
    original = training._write_content_named

    def stalling(blobs_, folder_, stem, extension, content):
        name = original(blobs_, folder_, stem, extension, content)
        if threading.current_thread().name == "A" and stem == "backtest":
            assert b_done.wait(120)
        return name

    monkeypatch.setattr(training, "_write_content_named", stalling)
    written: dict[str, str] = {}

    def train(name: str, settings: Profile) -> None:
        training._train_and_store(blobs, settings, city, data, ref, folder)
        written[name] = json.loads(blobs.read(folder + models.METADATA_FILE))["model_file"]
        if name == "B":
            b_done.set()

    a = threading.Thread(target=train, args=("A", profile), name="A")
    a.start()
    train("B", other)
    a.join()
    model_files = [i.name for i in blobs.list(folder) if "/model-" in i.name]
    assert len(model_files) == 2  # both trainings wrote their own model, neither overwrote the other
    metadata = json.loads(blobs.read(folder + models.METADATA_FILE))
    training._loaded.clear()
    _, loaded = training.load_model(blobs, profile, city, ref.version)  # checksum verified
    assert loaded == metadata and written == {"A": metadata["model_file"], "B": metadata["model_file"]}


def test_a_bucket_written_before_manifests_is_indexed_once_and_reads_the_same(small_retail, tmp_path):
    profile = small_retail("oldshop")
    deployment, frame = _shop(tmp_path, profile, days=dataset.COMPACT_AFTER + 1, stores=2)
    for i, day in enumerate(sorted(frame["date"].unique())[HISTORY:]):
        rows = frame[frame["date"] == day]
        deployment.handle(
            "partition", _raw(deployment, profile, rows, _at(profile, pd.Timestamp(day).date(), 21), f"d{i}")
        )
    cities = sorted(frame["city"].unique())
    before = {c: _stored_rows(deployment, profile, c) for c in cities}
    listed = {c: catalog.read(deployment.ports.blobs, profile, c) for c in cities}
    assert any(f.kind == "segment" for d in listed.values() for e in d.values() for f in e.files)
    shutil.rmtree(tmp_path / layout.MANIFESTS)  # as a bucket from before manifests looks
    assert all(catalog.read(deployment.ports.blobs, profile, c) == {} for c in cities)

    outcome = CliRunner().invoke(app, ["reindex", "--dataset", profile.name, "--root", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    for city in cities:
        assert f"{profile.name}/{city}:" in outcome.output
        # Every file is listed again, compacted uploads too: the rows read are the same.
        files = catalog.read(deployment.ports.blobs, profile, city)
        assert {f.name for e in listed[city].values() for f in e.files} <= {
            f.name for e in files.values() for f in e.files
        }
        pd.testing.assert_frame_equal(_stored_rows(deployment, profile, city), before[city])
