"""The operators' actions on the emulator stack: dead letters redriven and discarded through the
``<topic>-dlq--hold`` subscriptions, and a rerun after ticks and seeks writing no second predictions."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from factories import wait_for
from google.cloud import pubsub_v1, storage
from typer.testing import CliRunner

from batchcast.backends.gcp import GcsBlobStore, PubSubBus, storage_client
from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ScheduleTick, Topic, encode
from batchcast.entrypoints.wiring import ROUTES
from batchcast.ops import deadletters
from batchcast.tools import synth
from batchcast.tools.cli import app

pytestmark = pytest.mark.slow


def _runs(bucket: storage.Bucket, dataset: str) -> list[dict]:
    records = [json.loads(b.download_as_bytes()) for b in bucket.list_blobs(prefix=layout.RUNS)]
    return [r for r in records if r["dataset"] == dataset]


@pytest.fixture
def bus(stack_env):
    bus = PubSubBus(stack_env.project)
    yield bus
    bus.close()


def test_dead_letters_are_listed_redriven_and_discarded_on_the_stack(stack_env, bus):
    blobs = GcsBlobStore(stack_env.bucket, stack_env.project)
    # Two notify ticks as Pub/Sub dead-letters them: on the DLQ topic, with its source attributes.
    moment = datetime.now(UTC).replace(microsecond=0)
    ticks = [
        ScheduleTick(dataset="retail", actions=["notify"], logical_time=moment + timedelta(seconds=n))
        for n in (1, 2)
    ]
    source = bus.subscription_path("notify--schedule")
    publisher = pubsub_v1.PublisherClient()
    for tick in ticks:
        data, attributes = encode(tick)
        attributes |= {
            "CloudPubSubDeadLetterSourceSubscription": source,
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        }
        publisher.publish(bus.topic_path(Topic.SCHEDULE.dead_letter), data, **attributes).result(30)
    bodies = {tick.idempotency_key: tick for tick in ticks}

    def mine() -> list[dict]:
        letters = deadletters.list_letters(bus, blobs, datetime.now(UTC), "schedule")
        return [letter for letter in letters if letter["attributes"].get("idempotency_key") in bodies]

    letters = wait_for(
        "both dead letters listed", lambda: (found := mine()) and len(found) == 2 and found, 60
    )
    assert all(letter["function"] == "notify" and letter["attempts"] == 5 for letter in letters)
    assert all(letter["dataset"] == "retail" and letter["kind"] == "schedule" for letter in letters)
    assert all(letter["subscription"] == "notify--schedule" and letter["error"] for letter in letters)
    assert not any(k.startswith("CloudPubSub") for letter in letters for k in letter["attributes"])
    first, second = letters
    assert deadletters.redrive(bus, "schedule", [first["id"]]) == [first["id"]]
    key = first["attributes"]["idempotency_key"]
    bucket = storage_client(stack_env.project).bucket(stack_env.bucket)
    wait_for(
        "the redriven tick's notify run",
        lambda: [r for r in _runs(bucket, "retail") if r["message"]["idempotency_key"] == key],
    )
    assert deadletters.discard(bus, "schedule", [second["id"]]) == [second["id"]]
    wait_for("neither letter listed any more", lambda: mine() == [], 60)


def test_a_rerun_after_ticks_and_seeks_writes_no_second_predictions(
    stack_env, stack_profiles, bus, monkeypatch, profile_writer
):
    profile_writer(stack_profiles, "rerunstack", sales_column="receipts")
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(stack_profiles))
    load_profile.cache_clear()
    profile = load_profile("rerunstack")
    bucket = storage_client(stack_env.project).bucket(stack_env.bucket)
    before = datetime.now(UTC) - timedelta(seconds=2)
    today = date.today()
    frame = synth.generate(profile, 4, 70, seed=11, end=today - timedelta(days=1))
    export = frame.rename(columns={"sales": "receipts"}).to_csv(index=False).encode()
    half = len(export) // 2
    cut = export.index(b"\n", half) + 1
    header = export[: export.index(b"\n") + 1]
    for n, part in enumerate((export[:cut], header + export[cut:])):  # two uploads, as gcloud storage cp does
        bucket.blob(f"raw/dt={datetime.now(UTC).date()}/rerun-{n}.csv").upload_from_string(
            part, content_type="text/csv", if_generation_match=0
        )
    stores = set(frame["store_id"].astype(str))
    wanted = {layout.results_object("rerunstack", profile.entity_key, s) for s in stores}
    wait_for(
        "the uploads' forecasts", lambda: wanted <= {b.name for b in bucket.list_blobs(prefix="results/")}
    )

    cli = CliRunner()
    for moment, actions in profile.scheduled_ticks(today):  # the day's two ticks, as Cloud Scheduler sends
        at = moment.astimezone(UTC).isoformat()
        done = cli.invoke(
            app, ["tick", "--dataset", "rerunstack", "--actions", ",".join(actions), "--at", at]
        )
        assert done.exit_code == 0, done.output
    prefix = f"{layout.PREDICTIONS}dataset=rerunstack/dt={today}/"
    cities = sorted(frame["city"].unique())

    def predictions() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for blob in bucket.list_blobs(prefix=prefix):
            found.setdefault(blob.name.split("city=")[1].split("/")[0], []).append(blob.name)
        return found

    wait_for("the scheduled predictions of every city", lambda: sorted(predictions()) == cities)
    for route in ROUTES:  # replay everything since the start, as an operator might
        bus.seek(route.subscription, before)
    time.sleep(10)  # the redeliveries are acknowledged without work

    rerun = cli.invoke(app, ["rerun", "--dataset", "rerunstack", "--date", today.isoformat()])
    assert rerun.exit_code == 0, rerun.output
    tick_time = profile.scheduled_ticks(today)[0][0]

    def scheduled_predicts() -> list[dict]:
        runs = [
            r
            for r in _runs(bucket, "rerunstack")
            if r["function"] == "predict"
            and datetime.fromisoformat(r["message"]["logical_time"]) == tick_time
            and r["status"] == "succeeded"
        ]
        return runs if len(runs) >= 2 * len(cities) else []

    runs = wait_for("the rerun's predictions", scheduled_predicts)
    found = predictions()
    assert all(len(names) == 1 for names in found.values()), (found, runs)
    load_profile.cache_clear()
