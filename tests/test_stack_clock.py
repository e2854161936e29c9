"""Days of a shop on the emulator stack, under the stack's clock (``<dir>/clock``, FileClock).

The embedded daily scenario (tests/test_daily.py) moves a FixedClock; here the functions are
functions-framework servers that read the stack's clock file at every look, so the same days run
on GCS and Pub/Sub emulators: each store uploads its own day at 21:00, the nightly tick retrains
and re-forecasts at midnight, the next morning an operator reruns a past day, and every forecast,
run record and upload carries the scenario's time, not the real one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from functools import partial

import pandas as pd
import pytest
from factories import wait_for
from typer.testing import CliRunner

from batchcast.backends.gcp import PubSubBus, storage_client
from batchcast.core import layout
from batchcast.core.config import Profile, load_profile
from batchcast.core.errors import ConfigError
from batchcast.core.events import STORAGE_FINALIZED
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.core.settings import Settings
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ports import FileClock, SystemClock
from batchcast.tools import synth
from batchcast.tools.cli import app

END = date(2026, 3, 1)  # the scenario's days lie in the past: events published now are never "old"
HISTORY, DAYS = 45, 3


def _consumers(actions: list[str]) -> set[str]:
    """The functions that run a schedule tick with these actions."""
    return ({"train_trigger"} if {"train", "predict"} & set(actions) else set()) | (
        {"notify"} if "notify" in actions else set()
    )


def _at(profile: Profile, day: date, hour: int) -> datetime:
    return datetime.combine(day, clock_time(hour), profile.zone())


@pytest.fixture
def stack_clock(stack_env) -> Iterator[FileClock]:
    """The stack's clock; the real one again after the test, for the tests that follow."""
    clock = stack_env.clock
    yield clock
    clock.set(None)


@pytest.mark.slow
def test_daily_uploads_and_nightly_ticks_run_on_the_stack_under_its_clock(
    stack_env, stack_profiles, stack_clock, monkeypatch, profile_writer
):
    # A profile of its own ("takings" columns), so these files fit nothing else on the stack.
    profile_writer(stack_profiles, "clockshop", sales_column="takings")
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(stack_profiles))
    load_profile.cache_clear()
    profile = load_profile("clockshop")
    frame = synth.generate(profile, 2, HISTORY + DAYS, seed=11, end=END + timedelta(days=DAYS))
    frame["date"] = pd.to_datetime(frame["date"])
    stores = sorted(frame["store_id"].astype(str).unique())
    bucket = storage_client(stack_env.project).bucket(stack_env.bucket)
    names = {layout.results_object(profile.name, profile.entity_key, s) for s in stores}

    def upload(day: date, name: str, rows: pd.DataFrame) -> None:
        data = rows.rename(columns={"sales": "takings"}).to_csv(index=False).encode()
        bucket.blob(f"raw/dt={day}/{name}.csv").upload_from_string(data, if_generation_match=0)

    def results_as_of(moment: datetime) -> list[dict] | None:
        if not names <= {b.name for b in bucket.list_blobs(prefix=layout.results_prefix(profile.name))}:
            return None
        results = [json.loads(bucket.blob(n).download_as_bytes()) for n in sorted(names)]
        return results if all(datetime.fromisoformat(r["as_of"]) == moment for r in results) else None

    first = END - timedelta(days=1)
    args = ["stack", "clock", "--dir", stack_env.directory, "--at", _at(profile, first, 21).isoformat()]
    assert CliRunner().invoke(app, args).exit_code == 0  # as an operator sets it
    assert stack_clock.now() == _at(profile, first, 21)
    upload(first, "clock-history", frame[frame["date"] <= pd.Timestamp(first)])
    wait_for("the history's forecasts", lambda: results_as_of(stack_clock.now()))
    bus = PubSubBus(stack_env.project)
    ticks = []
    for offset in range(DAYS):
        day = END + timedelta(days=offset)
        stack_clock.set(_at(profile, day, 21))  # each store closes, then uploads its own day
        on_day = frame[frame["date"] == pd.Timestamp(day)]
        todays = [(day, f"clock-{s}-{day}", on_day[on_day["store_id"].astype(str) == s]) for s in stores]
        with ThreadPoolExecutor(len(stores)) as pool:
            list(pool.map(upload, *zip(*todays, strict=True)))
        results = wait_for(f"forecasts from the uploads of {day}", lambda: results_as_of(stack_clock.now()))
        for result in results:  # for tomorrow, from this upload, its day included
            assert result["target"]["start"] == f"{day + timedelta(days=1)}T00:00:00"
            assert result["history"][-1]["period_start"] == f"{day}T00:00:00"
        midnight = _at(profile, day + timedelta(days=1), 0)
        stack_clock.set(midnight)
        ticks.append(ScheduleTick(dataset=profile.name, actions=["train", "predict"], logical_time=midnight))
        bus.publish(Topic.SCHEDULE, ticks[-1])
        wait_for(f"the nightly forecasts of {day}", partial(results_as_of, midnight))
    bus.close()

    # The next morning an operator reruns a past day: its ticks run now, at their own logical times,
    # and the results, newer than that day, stay as they are.
    morning, past = _at(profile, END + timedelta(days=DAYS), 10), END + timedelta(days=1)
    stack_clock.set(morning)
    rerun = CliRunner().invoke(app, ["rerun", "--dataset", profile.name, "--date", str(past)])
    assert rerun.exit_code == 0, rerun.output
    wanted = {(f, t) for t, actions in profile.scheduled_ticks(past) for f in _consumers(actions)}

    def rerun_runs() -> set[tuple[str, datetime]]:
        runs = [
            json.loads(b.download_as_bytes())
            for b in bucket.list_blobs(prefix=f"{layout.RUNS}dt={morning.astimezone(UTC).date()}/")
        ]
        done = {
            (r["function"], datetime.fromisoformat(r["message"]["logical_time"]))
            for r in runs
            if r["dataset"] == profile.name and datetime.fromisoformat(r["started_at"]) == morning
        }
        return done if done >= wanted else set()

    wait_for(f"the rerun of {past}", rerun_runs)
    assert results_as_of(midnight)  # results only move forward

    everything = [json.loads(b.download_as_bytes()) for b in bucket.list_blobs(prefix=layout.RUNS)]
    # Every run names its dataset, partition's too (from the profile its upload fits).
    runs = [r for r in everything if r["dataset"] == profile.name]
    assert [r for r in runs if r["status"] == "failed"] == []
    partitions = sorted(
        datetime.fromisoformat(r["message"]["logical_time"]) for r in runs if r["function"] == "partition"
    )
    # Every upload's logical time is the clock's at 21:00 that day, not the object's real update time.
    days = [END + timedelta(days=o) for o in range(DAYS)]
    assert partitions == [_at(profile, first, 21)] + [_at(profile, d, 21) for d in days for _ in stores]
    # The nightly ticks (split per city by train_trigger) ran under the scenario's clock: their runs
    # started at its midnights, each tick's own logical time.
    nightly = [
        r
        for r in runs
        if r["function"] == "train_trigger"
        and r["message"]["kind"] == "schedule"
        and datetime.fromisoformat(r["started_at"]) < morning  # not the rerun's
    ]
    started = {datetime.fromisoformat(r["started_at"]) for r in nightly}
    assert started == {t.logical_time for t in ticks}
    assert all(r["started_at"] == r["message"]["logical_time"] for r in nightly)
    assert sum(r["counts"].get("models_trained", 0) for r in nightly) == DAYS * frame["city"].nunique()
    load_profile.cache_clear()


def test_a_file_clock_follows_the_real_clock_until_set_and_names_a_bad_time(tmp_path):
    clock = FileClock(tmp_path / "clock")
    assert not clock.pinned and abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=5)
    clock.set(datetime(2026, 3, 1, 21, tzinfo=UTC))
    assert clock.pinned and clock.now() == datetime(2026, 3, 1, 21, tzinfo=UTC)
    clock.path.write_text("tomorrow")
    with pytest.raises(ConfigError, match=r"clock file .*clock holds 'tomorrow', not an ISO time"):
        clock.now()
    clock.path.write_text("2026-03-01T21:00:00")
    with pytest.raises(ConfigError, match="without a UTC offset"):
        clock.now()
    clock.set(None)
    assert not clock.pinned


def test_an_upload_event_takes_its_logical_time_from_a_pinned_clock(deployment, clock):
    name = uploads.store_upload(deployment.ports.blobs, b"a,b\n", ext="csv", now=clock.now())
    info = deployment.ports.blobs.stat(name)
    # The emulator's update time is the real one, days away from the scenario's.
    resource = {"bucket": "b", "name": name, "generation": info.generation, "updated": "2026-12-04T10:00:00Z"}
    clock.set(clock.now() + timedelta(minutes=5))
    deployment.handle_event("partition", STORAGE_FINALIZED, resource)
    [record] = [
        json.loads(deployment.ports.blobs.read(i.name)) for i in deployment.ports.blobs.list(layout.RUNS)
    ]
    assert datetime.fromisoformat(record["message"]["logical_time"]) == clock.now()


def test_settings_choose_the_clock(tmp_path):
    assert isinstance(runtime.clock_for(Settings()), SystemClock)
    pinned = runtime.clock_for(Settings(now=datetime(2026, 3, 1, tzinfo=UTC)))
    assert pinned.pinned and pinned.now() == datetime(2026, 3, 1, tzinfo=UTC)
    both = Settings(now=datetime(2026, 3, 1, tzinfo=UTC), clock_file=tmp_path / "clock")
    assert isinstance(runtime.clock_for(both), FileClock)  # the file wins: it can move
