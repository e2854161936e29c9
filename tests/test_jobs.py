"""Long trainings: the size estimate, inline refusal, and hand-off to a ``batchcast train`` job."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchcast.backends.jobs import job_arguments, run_job_request
from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.messages import TrainRequest, decode
from batchcast.data import catalog, uploads
from batchcast.entrypoints import runtime
from batchcast.ops import models, training
from batchcast.ports import FixedClock
from batchcast.tools import synth
from batchcast.tools.cli import app
from batchcast.tools.demo import demo_clock

END = date(2026, 3, 1)


def _upload(root: Path, profile: Profile, stores: int = 6, days: int = 120) -> runtime.Runtime:
    at = demo_clock(profile, END)
    deployment = runtime.embedded(root, clock=FixedClock(at), backoff_seconds=0.001)
    frame = synth.generate(profile, stores, days, seed=2, end=END)
    data = frame.to_csv(index=False).encode()
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=at, dataset=profile.name)
    deployment.bus.drain()
    return deployment


def _results(deployment: runtime.Runtime, profile: Profile) -> list[dict]:
    blobs = deployment.ports.blobs
    return [json.loads(blobs.read(i.name)) for i in blobs.list(layout.results_prefix(profile.name))]


def test_the_estimate_grows_with_rows_and_counts_every_fit(small_retail, tmp_path):
    profile = small_retail("estimate", seconds_per_fit=1.0, seconds_per_million_rows=1e6)
    deployment = _upload(tmp_path, profile, stores=6, days=60)
    files = catalog.read(deployment.ports.blobs, profile, "berlin")
    rows = sum(f.rows for f in files.values())
    fits = len(profile.training.quantiles) * (1 + profile.backtest.folds)
    assert training.estimate_seconds(profile, files) == fits * (1.0 + rows)
    one = dict(list(files.items())[:1])
    assert training.estimate_seconds(profile, one) < training.estimate_seconds(profile, files)


def test_inline_training_that_would_not_fit_is_refused_with_the_fix_named(small_retail, tmp_path):
    profile = small_retail("toolong", seconds_per_fit=100.0)
    deployment = _upload(tmp_path, profile, stores=4, days=90)
    [trigger] = [r for f, r in deployment.results if f == "train_trigger"]
    assert trigger.status == "failed"
    for city in ("berlin", "munich"):
        assert "TrainingRefused" in trigger.errors[city]
        assert 'training.mode = "job"' in trigger.errors[city]
    assert not list(deployment.ports.blobs.list(layout.MODELS))  # refused before any fit
    assert not list(deployment.ports.blobs.list(layout.PREDICTIONS))


@pytest.mark.slow
def test_job_mode_trains_in_a_separate_process_that_publishes_the_predictions(small_retail, tmp_path):
    # A refusal-sized estimate does not matter in job mode: jobs have no time limit.
    profile = small_retail("jobbed", mode="job", seconds_per_fit=100.0)
    deployment = _upload(tmp_path, profile)
    [trigger] = [r for f, r in deployment.results if f == "train_trigger"]
    assert trigger.counts == {"jobs_launched": 2} and not trigger.messages
    assert not _results(deployment, profile)  # nothing predicted until the jobs finish
    assert deployment.ports.jobs.wait(timeout=240) == [0, 0]
    runs = [json.loads(deployment.ports.blobs.read(i.name)) for i in deployment.ports.blobs.list(layout.RUNS)]
    jobs = [r for r in runs if r["function"] == "train"]
    assert sorted(r["city"] for r in jobs) == ["berlin", "munich"]
    assert all(r["status"] == "succeeded" and r["counts"]["models_trained"] == 1 for r in jobs)
    assert all(models.latest(deployment.ports.blobs, profile, c) for c in ("berlin", "munich"))
    results = _results(deployment, profile)
    assert len(results) == 6 and {r["city"] for r in results} == {"berlin", "munich"}
    assert sum(r["function"] == "predict" for r in runs) == 2  # run by the jobs, one shard per city
    logs = list((tmp_path / ".batchcast" / "jobs").glob("train-*.log"))
    assert len(logs) == 2


def test_train_command_trains_one_city_and_rejects_other_messages(small_retail, tmp_path, monkeypatch):
    profile = small_retail("manual")
    _upload(tmp_path, profile, stores=2, days=90)
    monkeypatch.setenv("BATCHCAST_NOW", demo_clock(profile, END).isoformat())
    cli = CliRunner()
    done = cli.invoke(app, ["train", "--dataset", "manual", "--city", "munich", "--root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    blobs = runtime.embedded(tmp_path).ports.blobs
    assert models.latest(blobs, profile, "munich") is not None
    missing = cli.invoke(app, ["train", "--dataset", "manual", "--root", str(tmp_path)])
    assert missing.exit_code != 0 and "--city" in missing.output
    tick = json.dumps(
        {
            "kind": "schedule",
            "dataset": "manual",
            "actions": ["train"],
            "logical_time": "2026-03-02T00:00:00Z",
        }
    )
    wrong = cli.invoke(app, ["train", "--message", tick, "--root", str(tmp_path)])
    assert wrong.exit_code != 0 and "not a train-request" in wrong.output
    garbage = cli.invoke(app, ["train", "--message", "{not json", "--root", str(tmp_path)])
    assert garbage.exit_code != 0 and "contract" in garbage.output


def test_the_job_module_refuses_bad_arguments_without_the_cli(tmp_path, capsys):
    """The job image runs ``python -m batchcast.entrypoints.job``: no Typer, no rich, same checks."""
    from batchcast.entrypoints import job

    tick = '{"kind":"schedule","dataset":"retail","actions":["train"],"logical_time":"2026-03-02T00:00:00Z"}'
    for arguments, reason in (
        (["--message", tick], "not a train-request"),
        (["--dataset", "retail"], "--city"),
        (["--dataset", "nosuch", "--city", "berlin"], "nosuch"),
    ):
        with pytest.raises(SystemExit) as exited:
            job.main(["train", *arguments, "--root", str(tmp_path)])
        assert exited.value.code == 2 and reason in capsys.readouterr().err
    probe = "import sys, batchcast.entrypoints.job; print(sorted({'typer', 'rich'} & set(sys.modules)))"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert imported.stdout.strip() == "[]", imported.stderr


def test_a_cloud_run_execution_carries_the_request_as_the_job_arguments():
    request = TrainRequest(
        dataset="retail",
        city="berlin",
        actions=["train", "predict"],
        fingerprint="f" * 64,
        logical_time=demo_clock(_retail(), END),
        rerun="rerun-1",
    )
    job = "projects/p/locations/europe-west1/jobs/batchcast-train"
    built = run_job_request(job, request)
    assert built.name == job
    [override] = built.overrides.container_overrides
    assert list(override.args) == job_arguments(request)
    assert override.args[:2] == ["train", "--message"]
    assert decode(override.args[2]) == request  # the job sees exactly what train_trigger meant
    assert decode(override.args[2]).idempotency_key == request.idempotency_key


def _retail() -> Profile:
    from batchcast.core.config import load_profile

    return load_profile("retail")


def test_the_training_job_is_named_in_full_from_a_short_name():
    from batchcast.core.errors import ConfigError
    from batchcast.core.settings import Settings
    from batchcast.entrypoints.runtime import job_resource_name

    short = Settings(train_job="batchcast-train", project="p", region="europe-west1")
    assert job_resource_name(short) == "projects/p/locations/europe-west1/jobs/batchcast-train"
    full = "projects/q/locations/us-central1/jobs/j"
    assert job_resource_name(Settings(train_job=full)) == full
    with pytest.raises(ConfigError, match="BATCHCAST_REGION"):
        job_resource_name(Settings(train_job="batchcast-train", project="p"))
