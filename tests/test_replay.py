"""Re-running past work: replaying a subscription from the message log, rerunning a day."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchcast.core import layout
from batchcast.core.config import Profile, load_profile, parse_profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ports import FixedClock
from batchcast.tools import replay, synth
from batchcast.tools.cli import app
from batchcast.tools.demo import demo_clock

END = date(2026, 3, 1)
# Everything a rerun writes except its own bookkeeping (run records, processed markers).
OUTPUTS = (
    layout.BATCH_DATA,
    layout.MODELS,
    layout.PREDICTIONS,
    layout.RESULTS,
    layout.METRICS,
    layout.FRESHNESS,
)


def _snapshot(root: Path) -> dict[str, str]:
    blobs = runtime.embedded(root).ports.blobs
    return {
        info.name: hashlib.sha256(blobs.read(info.name)).hexdigest()
        for prefix in OUTPUTS
        for info in blobs.list(prefix)
        # Which runs succeeded last is run bookkeeping, like runs/: a rerun adds runs to it.
        if not info.name.startswith(layout.OUTCOMES)
    }


def _runs(root: Path) -> list[dict]:
    blobs = runtime.embedded(root).ports.blobs
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS)]


def _results(root: Path, name: str) -> list[dict]:
    blobs = runtime.embedded(root).ports.blobs
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.results_prefix(name))]


def _first_run(root: Path, profile: Profile, *, with_schedule: bool = False) -> datetime:
    """An upload an hour before the day's first tick; ``with_schedule``: then the day's ticks."""
    at = demo_clock(profile, END)
    clock = FixedClock(at - timedelta(hours=1))
    deployment = runtime.embedded(root, clock=clock, backoff_seconds=0.001)
    data = synth.generate(profile, 6, 120, seed=4, end=END).to_csv(index=False).encode()
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=clock.now(), dataset=profile.name)
    deployment.bus.drain()
    clock.set(at)
    ticks = profile.scheduled_ticks(at.astimezone(profile.zone()).date()) if with_schedule else []
    for moment, actions in ticks:
        tick = ScheduleTick(dataset=profile.name, actions=actions, logical_time=moment)
        deployment.ports.bus.publish(Topic.SCHEDULE, tick)
        deployment.bus.drain()
    return at


def test_the_schedule_expands_to_local_ticks_across_daylight_saving():
    retail, bikeshare = load_profile("retail"), load_profile("bikeshare")
    spring = retail.scheduled_ticks(date(2026, 3, 29))  # Europe/Berlin moves to UTC+2 at 02:00
    assert [(t.isoformat(), a) for t, a in spring] == [
        ("2026-03-29T00:00:00+01:00", ["train", "predict"]),
        ("2026-03-29T00:30:00+01:00", ["notify"]),
    ]
    summer = bikeshare.scheduled_ticks(date(2026, 7, 1))
    assert [t.strftime("%H:%M") for t, _ in summer] == [
        "04:00", "06:00", "06:30", "10:00", "12:00", "12:30", "16:00", "18:00", "18:30"
    ]  # fmt: skip
    assert {t.utcoffset() for t, _ in summer} == {timedelta(hours=-7)}


def test_an_invalid_cron_line_is_refused_on_load():
    text = (Path(__file__).parents[1] / "shared/batchcast/core/profiles/retail.toml").read_text()
    with pytest.raises(ConfigError, match="not a valid five-field cron"):
        parse_profile(text.replace('cron = "0 0 * * *"', 'cron = "0 25 * * *"'))


def test_a_rerun_tag_makes_new_work_while_redelivery_keeps_the_key():
    at = datetime(2026, 3, 2, tzinfo=UTC)
    tick = ScheduleTick(dataset="retail", actions=["predict"], logical_time=at)
    assert tick.model_copy(update={"run_id": "other"}).idempotency_key == tick.idempotency_key
    rerun = tick.model_copy(update={"rerun": "rerun-1"})
    assert rerun.idempotency_key != tick.idempotency_key
    assert rerun.model_copy(update={"rerun": "rerun-2"}).idempotency_key != rerun.idempotency_key
    one_city = ScheduleTick(dataset="retail", actions=["predict"], logical_time=at, cities=["paris"])
    assert one_city.idempotency_key != tick.idempotency_key


def test_rerun_ticks_name_only_known_cities():
    profile = load_profile("retail")
    ticks = replay.rerun_ticks(profile, date(2026, 3, 2), ["paris"], "rerun-x")
    assert [t.cities for t in ticks] == [["paris"], ["paris"]] and {t.rerun for t in ticks} == {"rerun-x"}
    with pytest.raises(ValueError, match="no city atlantis"):
        replay.rerun_ticks(profile, date(2026, 3, 2), ["atlantis"], "rerun-x")


def test_rerunning_a_day_twice_really_runs_and_gives_byte_identical_outputs(small_retail, tmp_path):
    profile = small_retail("rerunday")
    at = _first_run(tmp_path, profile, with_schedule=True)  # the upload forecast the day, then the schedule
    original = _snapshot(tmp_path)
    assert any(n.startswith(layout.PREDICTIONS) for n in original)
    day = at.astimezone(profile.zone()).date().isoformat()
    cli = CliRunner()
    args = ["rerun", "--dataset", "rerunday", "--date", day, "--root", str(tmp_path), "--now", at.isoformat()]
    for attempt in (1, 2):
        predicts_before = sum(r["function"] == "predict" for r in _runs(tmp_path))
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "republishing as rerun-" in result.output
        assert _snapshot(tmp_path) == original, f"rerun {attempt} changed an output"
        # It really ran again: one more predict per city, each from a message tagged with the rerun.
        assert sum(r["function"] == "predict" for r in _runs(tmp_path)) == predicts_before + 2
    log = runtime.embedded(tmp_path).bus.log()
    tagged = [e for e in log if '"rerun":"rerun-' in e["data"]]
    assert {e["topic"] for e in tagged} >= {Topic.SCHEDULE, Topic.PREDICT_REQUESTS, Topic.PREDICTIONS_READY}


def test_rerun_dry_run_lists_the_ticks_and_changes_nothing(small_retail, tmp_path):
    profile = small_retail("rerundry")
    _first_run(tmp_path, profile)
    runs = len(_runs(tmp_path))
    cli = CliRunner()
    dry = cli.invoke(
        app, ["rerun", "--dataset", "rerundry", "--date", "2026-03-02", "--root", str(tmp_path), "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert "would republish 2 schedule tick(s)" in dry.output and "train,predict" in dry.output
    assert len(_runs(tmp_path)) == runs
    bad = cli.invoke(app, ["rerun", "--dataset", "rerundry", "--date", "2026-03-02", "--city", "atlantis"])
    assert bad.exit_code != 0 and "no city atlantis" in bad.output


def test_replay_re_delivers_what_failed_once_the_cause_is_fixed(small_retail, tmp_path, predict_fails_for):
    profile = small_retail("replayfix")
    end_outage = predict_fails_for("munich")
    started = datetime.now(UTC)
    _first_run(tmp_path, profile)
    bus = runtime.embedded(tmp_path).bus
    assert [json.loads(d["data"])["city"] for d in bus.dead_letters(Topic.PREDICT_REQUESTS)] == ["munich"]
    assert {r["city"] for r in _results(tmp_path, "replayfix")} == {"berlin"}

    end_outage()  # the fix is deployed
    cli = CliRunner()
    subscription = ["replay", "--subscription", "predict--predict-requests", "--root", str(tmp_path)]
    args = [*subscription, "--since", started.isoformat()]
    runs = len(_runs(tmp_path))
    dry = cli.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would re-deliver 2 message(s)" in dry.output
    listed = [line.split() for line in dry.output.splitlines() if " replayfix " in line]
    states = {words[words.index("replayfix") + 1]: words[0] for words in listed}
    assert states == {"berlin": "done", "munich": "run"}  # only what failed will run again
    assert len(_runs(tmp_path)) == runs  # a dry run runs nothing

    done = cli.invoke(app, args)
    assert done.exit_code == 0, done.output
    results = _results(tmp_path, "replayfix")
    assert {r["city"] for r in results} == {"berlin", "munich"} and len(results) == 6
    # Only the failed work ran again: one new predict run, for munich.
    new_runs = _runs(tmp_path)[runs:]
    assert [(r["function"], r["city"]) for r in new_runs if r["function"] == "predict"] == [
        ("predict", "munich")
    ]

    later = cli.invoke(app, [*subscription, "--since", datetime.now(UTC).isoformat()])
    assert later.exit_code == 0 and "re-delivering 0 message(s)" in later.output


def test_replay_refuses_an_unknown_subscription(tmp_path):
    result = CliRunner().invoke(
        app, ["replay", "--subscription", "nope", "--since", "2026-03-01", "--root", str(tmp_path)]
    )
    assert result.exit_code != 0 and "unknown subscription 'nope'" in result.output
