"""The operators' data: freshness.json kept current by every notify, the run-history index, each
run's log lines, the upload views, dead letters (list, redrive, discard) and reruns."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from batchcast.core import layout
from batchcast.core.messages import ScheduleTick
from batchcast.data import catalog, storage, uploads
from batchcast.entrypoints import runtime
from batchcast.ops import deadletters, runs, status, uploads_view
from batchcast.ports import FixedClock
from batchcast.tools import synth
from batchcast.tools.cli import app

DAY = date(2026, 3, 2)


def _shop_csv(profile, entities: int, days: int, end: date) -> bytes:
    frame = synth.generate(profile, entities, days, seed=5, end=end)
    return frame.to_csv(index=False).encode()


@pytest.fixture
def shop(small_retail):
    return small_retail("shop")


@pytest.fixture
def shop_run(tmp_path, shop):
    """A shop deployment after a first upload (3 stores, 70 days up to the day before ``DAY``)."""
    return _shop_deployment(tmp_path, shop)


def _shop_deployment(tmp_path, shop):
    midnight = datetime.combine(DAY, datetime.min.time(), tzinfo=shop.zone())
    clock = FixedClock(midnight)
    deployment = runtime.embedded(tmp_path / "b", clock=clock, backoff_seconds=0.001)
    uploads.store_upload(
        deployment.ports.blobs,
        _shop_csv(shop, 3, 70, DAY - timedelta(days=1)),
        ext="csv",
        now=midnight,
        dataset="shop",
    )
    deployment.bus.drain()
    return deployment, clock


def test_freshness_json_moves_with_the_forecast_of_every_notify(shop_run, shop):
    deployment, clock = shop_run
    blobs = deployment.ports.blobs
    check = clock.now() + timedelta(minutes=30)
    clock.set(check)
    deployment.handle("notify", ScheduleTick(dataset="shop", actions=["notify"], logical_time=check))
    # The next day: each store uploads its day, is forecast for the day after, notify runs for it.
    next_midnight = clock.now() - timedelta(minutes=30) + timedelta(days=1)
    clock.set(next_midnight)
    uploads.store_upload(blobs, _shop_csv(shop, 3, 1, DAY), ext="csv", now=next_midnight, dataset="shop")
    deployment.bus.drain()
    entities = storage.read_json(blobs, layout.FRESHNESS)["datasets"]["shop"]["entities"]
    assert len(entities) == 3
    for entity, entry in entities.items():
        result = blobs.stat(layout.results_object("shop", shop.entity_key, entity))
        assert entry["forecast_for"] == result.metadata["target_start"]
        assert entry["as_of"] == result.metadata["as_of"]
        assert entry["forecast_for"].startswith((DAY + timedelta(days=1)).isoformat()), entry
        assert entry["stale"] is False


def test_every_run_is_indexed_by_day_with_its_log_lines(shop_run):
    deployment, clock = shop_run
    blobs = deployment.ports.blobs
    records = [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]
    by_day = runs.runs_for_days(blobs, [DAY - timedelta(days=1), DAY], now=clock.now())
    indexed = (
        by_day[DAY - timedelta(days=1)] + by_day[DAY]
    )  # run ids are UTC: Berlin's midnight is the day before
    assert sorted(s["run_id"] for s in indexed) == sorted(r["run_id"] for r in records)
    functions = {s["function"] for s in indexed}
    assert {"partition", "train_trigger", "predict", "notify"} <= functions
    [partition] = [s for s in indexed if s["function"] == "partition"]
    [partition_record] = [r for r in records if r["function"] == "partition"]
    rows = partition_record["counts"]["rows_accepted"]
    assert partition["dataset"] == "shop" and partition["rows_accepted"] == rows > 200
    assert partition["rows_rejected"] == 0 and partition["status"] == "succeeded"

    cells = runs.grid(by_day)
    day_cells = cells[(DAY - timedelta(days=1)).isoformat()]
    predicts = [key for key in day_cells if key.startswith("shop/predict/")]
    assert predicts and all(day_cells[key]["status"] == "succeeded" for key in predicts)
    assert all(day_cells[key]["seconds"] > 0 for key in predicts)

    detail = runs.run_detail(blobs, partition["run_id"])
    assert detail["status"] == "succeeded" and detail["details"]["upload_id"]
    messages = [line["message"] for line in detail["log"]]
    assert any(f"{rows} of {rows} rows accepted" in m for m in messages), messages
    assert messages[-1].startswith("partition succeeded in ")
    assert runs.run_detail(blobs, "20260101T000000-00000000") is None


def test_a_failed_run_shows_in_its_grid_cell_with_its_error(deployment, monkeypatch):
    from batchcast.steps import notify

    def fails(*args, **kwargs):
        raise OSError("results bucket unreachable")

    monkeypatch.setattr(notify, "run", fails)
    at = deployment.ports.clock.now()
    with pytest.raises(OSError):
        deployment.handle("notify", ScheduleTick(dataset="retail", actions=["notify"], logical_time=at))
    cells = runs.grid(runs.runs_for_days(deployment.ports.blobs, [at.date()], now=at))
    cell = cells[at.date().isoformat()]["retail/notify/*"]
    assert cell["status"] == "failed" and cell["by_status"] == {"failed": 1}
    assert cell["error"] == "OSError: results bucket unreachable"
    detail = runs.run_detail(deployment.ports.blobs, cell["last_run_id"])
    assert detail["log"][-1]["severity"] == "ERROR"
    assert detail["log"][-1]["error"] == "OSError: results bucket unreachable"


def test_a_closed_day_is_rolled_up_and_then_read_in_one_request(deployment):
    blobs = deployment.ports.blobs
    day = date(2026, 2, 1)
    for n in range(3):
        run = {"run_id": f"20260201T00000{n}-0000000{n}", "function": "predict", "dataset": "retail"}
        runs.record(blobs, day, run | {"city": "berlin", "status": "succeeded", "duration_seconds": 1.5}, [])
    later = datetime(2026, 3, 1, tzinfo=UTC)
    first = runs.runs_for_days(blobs, [day], now=later)[day]
    assert [s["run_id"] for s in first] == [f"20260201T00000{n}-0000000{n}" for n in range(3)]
    assert blobs.stat(layout.run_index_rollup(day)) is not None
    # What the rollup holds is what a closed day is: an entry written after it is not listed again.
    runs.record(
        blobs, day, {"run_id": "20260201T235959-ffffffff", "function": "notify", "dataset": "retail"}, []
    )
    assert runs.runs_for_days(blobs, [day], now=later)[day] == first
    # An open day is always listed.
    assert len(runs.runs_for_days(blobs, [day], now=datetime(2026, 2, 2, tzinfo=UTC))[day]) == 4


def test_uploads_show_rejected_rows_missing_stores_and_each_stores_history(shop_run, shop):
    deployment, clock = shop_run
    blobs = deployment.ports.blobs
    # Two days on, store 1 uploads two days, one row of them bad; the other stores upload nothing.
    later = clock.now() + timedelta(days=2)
    clock.set(later)
    rows = _shop_csv(shop, 3, 2, DAY + timedelta(days=1)).decode().splitlines()
    header, store_1 = rows[0], [r for r in rows[1:] if r.startswith("1,")]
    bad = store_1[0].split(",")
    bad[3] = "lots"
    text = "\n".join([header, ",".join(bad), *store_1[1:]]) + "\n"
    uploads.store_upload(blobs, text.encode(), ext="csv", now=later, dataset="shop")
    deployment.bus.drain()

    latest = uploads_view.latest_uploads(blobs, uploads_view.recent_days(later), now=later, dataset="shop")
    assert [u["status"] for u in latest] == ["partial", "succeeded"]
    newest = latest[0]
    assert (newest["rows_accepted"], newest["rows_rejected"]) == (1, 1)
    report = json.loads(blobs.read(newest["report"]))
    assert report["counts"] == {"read": 2, "accepted": 1, "rejected": 1}
    assert b"lots" in blobs.read(newest["rejected_rows"])
    assert latest[1]["report"] is None and latest[1]["rejected_rows"] is None

    missing = uploads_view.missing_stores(blobs, shop, later)
    late = sorted(store["entity"] for stores in missing.values() for store in stores)
    assert late == ["2", "3"]
    [city] = [c for c in shop.cities if "1" in catalog.read(blobs, shop, c)]
    history = uploads_view.store_history(blobs, shop, city, "1")
    assert [h["upload_id"] for h in history] == [newest["upload_id"], latest[1]["upload_id"]]
    assert history[0]["rows"] == 1

    document = status.collect(blobs, deployment.bus.dead_letters, later)
    assert document["datasets"]["shop"]["cities"]["*"]["uploads"]["partial"] == 1
    [row] = [r for r in status.rows(document) if r["dataset"] == "shop" and r["city"] == "*"]
    assert row["rejected uploads"] == "1 of 2 (1 partly), 1 rows"


# -- dead letters ----------------------------------------------------------------------------------


def _cli(root, *args: str, input: str | None = None):
    return CliRunner().invoke(app, [*args, "--root", str(root)], input=input)


def test_a_dead_letter_is_listed_with_its_error_then_redriven_and_its_stores_forecast(
    tmp_path, shop, predict_fails_for
):
    end_outage = predict_fails_for("munich")
    deployment, _ = _shop_deployment(tmp_path, shop)
    blobs, root = deployment.ports.blobs, tmp_path / "b"
    [letter] = deadletters.list_letters(
        deployment.ports.bus, blobs, datetime.now(UTC)
    )  # the bus keeps real times
    assert (letter["topic"], letter["kind"], letter["dataset"], letter["city"]) == (
        "predict-requests",
        "predict-request",
        "shop",
        "munich",
    )
    assert letter["error"] == "OSError: model storage for munich unreachable"
    assert letter["attempts"] == 5 and letter["function"] == "predict"
    assert letter["age_seconds"] >= 0
    munich = [e for e in catalog.read(blobs, shop, "munich")]
    assert munich and not any(blobs.stat(layout.results_object("shop", "store_id", e)) for e in munich)

    listed = _cli(root, "deadletters", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [entry["id"] for entry in json.loads(listed.output)] == [letter["id"]]

    end_outage()
    redriven = _cli(root, "deadletters", "redrive", "--topic", "predict-requests", letter["id"], "--yes")
    assert redriven.exit_code == 0, redriven.output
    assert f"redrove 1 dead letter(s) to predict-requests: {letter['id']}" in redriven.output
    assert all(blobs.stat(layout.results_object("shop", "store_id", e)) for e in munich)
    assert deployment.bus.dead_letters("predict-requests") == []


def test_discarding_asks_first_and_an_unknown_id_is_an_error(deployment):
    bus, root = deployment.bus, deployment.settings.root
    bus.publish_raw("schedule", b"not json", {"kind": "schedule", "dataset": "retail"})
    bus.drain()
    letters = deadletters.list_letters(bus, deployment.ports.blobs, deployment.ports.clock.now(), "schedule")
    assert len(letters) == 2  # both subscriptions of the topic (train_trigger, notify) gave up on it
    assert all(letter["error"].startswith("InvalidMessage: ") for letter in letters)
    first = letters[0]["id"]

    refused = _cli(root, "deadletters", "discard", "--topic", "schedule", first, input="n\n")
    assert refused.exit_code == 1 and "discard 1 dead letter(s) of schedule?" in refused.output
    assert len(bus.dead_letters("schedule")) == 2

    done = _cli(root, "deadletters", "discard", "--topic", "schedule", first, input="y\n")
    assert done.exit_code == 0, done.output
    assert [entry["id"] for entry in bus.dead_letters("schedule")] == [letters[1]["id"]]

    again = _cli(root, "deadletters", "discard", "--topic", "schedule", first, "--yes")
    assert again.exit_code == 1 and f"not found (already handled?): {first}" in again.output
    assert _cli(root, "deadletters", "list", "--topic", "nope").exit_code == 2
    assert deadletters.discard(bus, "schedule") == [letters[1]["id"]]  # all the rest
    assert bus.dead_letters("schedule") == []


# -- reruns and backfills --------------------------------------------------------------------------


def test_a_backfill_over_days_and_one_city_lists_its_ticks_then_writes_no_second_predictions(shop_run, shop):
    deployment, clock = shop_run
    root, blobs = deployment.settings.root, deployment.ports.blobs
    now = ["--now", clock.now().isoformat()]
    dry = _cli(
        root,
        "rerun",
        "--dataset",
        "shop",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-02",
        "--city",
        "munich",
        "--dry-run",
        *now,
    )
    assert dry.exit_code == 0, dry.output
    assert "would republish 4 schedule tick(s) of shop on 2026-03-01 to 2026-03-02:" in dry.output
    assert dry.output.count("(munich)") == 4 and "2026-03-01T00:30:00+01:00 notify (munich)" in dry.output
    assert not list(blobs.list(f"{layout.PREDICTIONS}dataset=shop/dt=2026-03-01/"))

    first = _cli(root, "rerun", "--dataset", "shop", "--date", DAY.isoformat(), *now)
    assert first.exit_code == 0, first.output
    day_prefix = f"{layout.PREDICTIONS}dataset=shop/dt={DAY}/"
    before = sorted(i.name for i in blobs.list(day_prefix))
    predicts = len([r for r in _all_runs(blobs) if r["function"] == "predict"])

    backfill = _cli(
        root,
        "rerun",
        "--dataset",
        "shop",
        "--from",
        "2026-03-01",
        "--to",
        DAY.isoformat(),
        "--city",
        "munich",
        *now,
    )
    assert backfill.exit_code == 0, backfill.output
    assert sorted(i.name for i in blobs.list(day_prefix)) == before  # the same inputs: no second version
    assert len([r for r in _all_runs(blobs) if r["function"] == "predict"]) == predicts + 2  # it did run
    backfilled = [i.name for i in blobs.list(f"{layout.PREDICTIONS}dataset=shop/dt=2026-03-01/")]
    assert backfilled and all("city=munich/" in name for name in backfilled)

    wrong = _cli(
        root, "rerun", "--dataset", "shop", "--from", DAY.isoformat(), "--to", "2026-03-01", "--dry-run"
    )
    assert wrong.exit_code == 2 and "is before --from" in wrong.output


def _all_runs(blobs) -> list[dict]:
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]


def test_a_rerun_after_a_tick_sent_in_utc_writes_no_second_predictions(shop_run, shop):
    # Cloud Scheduler's ticks carry UTC times, a rerun the profile's local ones: the same instants.
    deployment, clock = shop_run
    root, blobs = deployment.settings.root, deployment.ports.blobs
    [(midnight, actions), *_] = shop.scheduled_ticks(DAY)
    at = midnight.astimezone(UTC).isoformat()
    ticked = _cli(root, "tick", "--dataset", "shop", "--actions", ",".join(actions), "--at", at)
    assert ticked.exit_code == 0, ticked.output
    day_prefix = f"{layout.PREDICTIONS}dataset=shop/dt={DAY}/"
    before = sorted(i.name for i in blobs.list(day_prefix))
    # The upload's forecast (its time local) and the tick's (UTC) are one request at one instant.
    assert len([n for n in before if "city=munich/" in n]) == 1
    rerun = _cli(
        root, "rerun", "--dataset", "shop", "--date", DAY.isoformat(), "--now", clock.now().isoformat()
    )
    assert rerun.exit_code == 0, rerun.output
    assert sorted(i.name for i in blobs.list(day_prefix)) == before


def test_the_same_instant_written_with_another_offset_is_the_same_work():
    utc = ScheduleTick(
        dataset="retail", actions=["predict"], logical_time=datetime(2026, 3, 1, 23, tzinfo=UTC)
    )
    berlin = utc.model_copy(update={"logical_time": utc.logical_time.astimezone(ZoneInfo("Europe/Berlin"))})
    assert berlin.logical_time.isoformat() != utc.logical_time.isoformat()
    assert berlin.idempotency_key == utc.idempotency_key
