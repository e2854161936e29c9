"""The whole pipeline on the emulator stack, wired as production is: uploads with the plain
google-cloud-storage client, GCS notifications, push subscriptions into functions-framework servers,
redelivery after a real failure, dead letters after 5 attempts.

The stack's predict fails the first delivery of every message (tests/stack_targets/flaky_predict.py),
so every prediction below exists only because Pub/Sub redelivered.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from factories import predict_request, wait_for
from google.cloud import storage
from typer.testing import CliRunner

from batchcast.backends.gcp import PubSubBus, storage_client
from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ObjectFinalized, Topic
from batchcast.entrypoints.wiring import Route
from batchcast.tools import stack, synth
from batchcast.tools.cli import app

pytestmark = pytest.mark.slow


def _upload(bucket: storage.Bucket, name: str, data: bytes) -> None:
    # The plain client, as a user's script would: batchcast plays no part in the upload.
    bucket.blob(name).upload_from_string(data, content_type="text/csv", if_generation_match=0)


def _names(bucket: storage.Bucket, prefix: str) -> set[str]:
    return {blob.name for blob in bucket.list_blobs(prefix=prefix)}


@pytest.fixture
def bucket(stack_env) -> storage.Bucket:
    return storage_client(stack_env.project).bucket(stack_env.bucket)


def test_stack_status_and_env_file(stack_env):
    processes = stack.status(stack_env.directory)
    assert {p.name for p, _ in processes} == {"pubsub-emulator", "fake-gcs-server", *stack.FUNCTIONS}
    assert all(alive for _, alive in processes)
    script = (Path(stack_env.directory) / stack.ENV_FILE).read_text()
    assert f"export STORAGE_EMULATOR_HOST=http://127.0.0.1:{stack_env.gcs_port}" in script
    assert "export CLOUDSDK_AUTH_DISABLE_CREDENTIALS=True" in script
    assert all(Path(p.log).is_file() for p, _ in processes)


def test_uploads_flow_to_predictions_and_results_for_every_entity(stack_env, bucket):
    end = date.today() - timedelta(days=1)
    today = datetime.now(UTC).date()
    expected = {}
    for dataset, entities, days in (("retail", 6, 120), ("bikeshare", 5, 30)):
        profile = load_profile(dataset)
        frame = synth.generate(profile, entities, days, seed=3, end=end)
        expected[dataset] = synth.entity_table(profile, entities, seed=3)[profile.entity_key].astype(str)
        _upload(bucket, f"raw/dt={today}/stack-{dataset}.csv", frame.to_csv(index=False).encode())

    def results_complete() -> bool:
        return all(
            {layout.results_object(d, load_profile(d).entity_key, e) for e in ids}
            <= _names(bucket, layout.results_prefix(d))
            for d, ids in expected.items()
        )

    wait_for("results for every entity", results_complete)
    for dataset in expected:
        assert _names(bucket, f"{layout.PREDICTIONS}dataset={dataset}/"), dataset
    # Each predict request failed once (its first delivery) and was redelivered.
    flaky = list((Path(stack_env.directory) / "flaky").iterdir())
    assert len(flaky) >= len({c for c in _cities(bucket)})
    assert "injected failure" in (Path(stack_env.directory) / "logs" / "predict.log").read_text()

    # Every run the functions recorded succeeded; duplicates, if any, were acknowledged without work.
    def runs_of_every_function() -> list[dict]:
        runs = [json.loads(bucket.blob(n).download_as_bytes()) for n in _names(bucket, layout.RUNS)]
        runs = [r for r in runs if r["dataset"] in expected or r["function"] == "partition"]
        functions = {r["function"] for r in runs}
        return runs if functions >= {"partition", "train_trigger", "predict", "notify"} else []

    runs = wait_for(
        "a run of every function (notify follows the last results)", runs_of_every_function, timeout=60
    )
    assert [r for r in runs if r["status"] == "failed"] == []


def _cities(bucket: storage.Bucket) -> set[str]:
    return {n.split("city=")[1].split("/")[0] for n in _names(bucket, layout.PREDICTIONS)}


def test_a_bad_file_ends_in_rejected(stack_env, bucket):
    today = datetime.now(UTC).date()
    _upload(bucket, f"raw/dt={today}/stack-bad.csv", b"this,is,not\na,sales,file\n")
    report = layout.rejected_report(today, "stack-bad")
    wait_for(report, lambda: report in _names(bucket, layout.REJECTED), timeout=120)
    reasons = json.loads(bucket.blob(report).download_as_bytes())
    assert reasons  # it names why


def test_a_message_failing_on_every_delivery_is_dead_lettered_after_five_attempts(stack_env):
    bus = PubSubBus(stack_env.project)
    # The stack's predict fails this entity on every delivery.
    poison = predict_request(shards=1, entities=["outage-1"], logical_time=datetime.now(UTC))
    bus.publish(Topic.PREDICT_REQUESTS, poison)
    letters = wait_for(
        "the poison message in predict-requests-dlq",
        lambda: [d for d in bus.dead_letters(Topic.PREDICT_REQUESTS) if d["message"] == poison],
        timeout=180,
    )
    assert letters[0]["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert (
        "an outage that outlasts every retry"
        in (Path(stack_env.directory) / "logs" / "predict.log").read_text()
    )
    bus.close()


def test_a_permanent_error_is_recorded_and_acknowledged_not_retried(stack_env, bucket):
    bus = PubSubBus(stack_env.project)
    # No such profile: no redelivery can fix that.
    ghost = predict_request(dataset="ghost", shards=1, entities=["x1"], logical_time=datetime.now(UTC))
    bus.publish(Topic.PREDICT_REQUESTS, ghost)

    def failed_runs() -> list[dict]:
        runs = [json.loads(bucket.blob(n).download_as_bytes()) for n in _names(bucket, layout.RUNS)]
        return [r for r in runs if r["dataset"] == "ghost" and r["function"] == "predict"]

    [record] = wait_for("the failed predict run of the ghost request", failed_runs, timeout=120)
    assert record["status"] == "failed" and "unknown profile 'ghost'" in record["error"]
    time.sleep(5)  # a retry would have come by now (the first delivery failed by injection)
    assert len(failed_runs()) == 1
    assert [d for d in bus.dead_letters(Topic.PREDICT_REQUESTS) if d["message"] == ghost] == []
    bus.close()


def test_missing_prerequisites_are_named(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(stack.StackError) as raised:
        stack.find_prerequisites("/nonexistent/cloud-pubsub-emulator")
    assert "java" in str(raised.value) and "Pub/Sub emulator" in str(raised.value)
    assert "gcloud components install pubsub-emulator" in str(raised.value)


def test_an_external_emulator_must_be_listening(tmp_path):
    with pytest.raises(stack.StackError, match="no Pub/Sub emulator listens"):
        stack.up(tmp_path, external_pubsub=True, pubsub_port=stack.free_port())
    assert stack.status(tmp_path) == []  # nothing left running


def test_seek_redelivers_an_upload_and_the_function_acks_it_without_work(stack_env, bucket):
    today = datetime.now(UTC).date()
    before = datetime.now(UTC) - timedelta(seconds=2)
    name = f"raw/dt={today}/stack-seek.csv"
    _upload(bucket, name, b"store_id,city,date,sales\nnot-a-store,atlantis,yesterday,-1\n")
    report = layout.rejected_report(today, "stack-seek")
    wait_for(report, lambda: report in _names(bucket, layout.REJECTED), timeout=120)
    key = ObjectFinalized(
        bucket=stack_env.bucket, name=name, generation=bucket.get_blob(name).generation, logical_time=before
    ).idempotency_key
    runs_before = _names(bucket, layout.RUNS)
    bus = PubSubBus(stack_env.project)
    bus.seek(Route(Topic.RAW_OBJECTS, "partition").subscription, before)  # as `batchcast replay` will
    bus.close()
    log = Path(stack_env.directory) / "logs" / "partition.log"
    acked = f"duplicate acknowledged: object-finalized {key}"
    wait_for("the redelivered upload", lambda: acked in log.read_text())
    assert _names(bucket, layout.RUNS) == runs_before  # acknowledged without a run


def test_job_mode_trains_in_a_batchcast_train_process_that_publishes_the_predictions(
    stack_env, stack_profiles, bucket, monkeypatch
):
    # "retailjob" (tests/conftest.py) is the two-city retail profile with training.mode = "job".
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(stack_profiles))
    load_profile.cache_clear()
    profile = load_profile("retailjob")
    frame = synth.generate(profile, 4, 90, seed=5, end=date.today() - timedelta(days=1))
    export = frame.rename(columns={"sales": "units"}).to_csv(index=False).encode()  # its own header
    _upload(bucket, f"raw/dt={datetime.now(UTC).date()}/stack-job.csv", export)
    stores = set(frame["store_id"].astype(str))
    wanted = {layout.results_object("retailjob", profile.entity_key, s) for s in stores}
    wait_for(
        "results from the job's predictions",
        lambda: wanted <= _names(bucket, layout.results_prefix("retailjob")),
    )
    runs = [json.loads(bucket.blob(n).download_as_bytes()) for n in _names(bucket, layout.RUNS)]
    runs = [r for r in runs if r["dataset"] == "retailjob"]
    [trigger] = [r for r in runs if r["function"] == "train_trigger"]
    assert trigger["counts"]["jobs_launched"] == 2 and trigger["published"] == 0
    jobs = [r for r in runs if r["function"] == "train"]
    assert sorted(r["city"] for r in jobs) == ["berlin", "munich"]
    assert all(r["status"] == "succeeded" and r["published"] >= 1 for r in jobs)
    logs = list((Path(stack_env.directory) / "local" / ".batchcast" / "jobs").glob("train-*.log"))
    assert len(logs) == 2
    load_profile.cache_clear()


def test_replay_command_seeks_the_subscription_on_gcp(stack_env):
    cli = CliRunner()
    since = datetime.now(UTC).isoformat()
    args = ["replay", "--subscription", "notify--schedule", "--since", since]
    dry = cli.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would seek notify--schedule" in dry.output and "notify acknowledges without work" in dry.output
    done = cli.invoke(app, args)  # a real seek on the emulator, to now: nothing is re-delivered
    assert done.exit_code == 0, done.output and "seeking notify--schedule" in done.output
    unknown = cli.invoke(app, ["replay", "--subscription", "notify--nothing", "--since", since])
    assert unknown.exit_code != 0 and "unknown subscription" in unknown.output


def test_stores_uploading_their_own_files_each_end_in_results_with_no_dead_letters(
    stack_env, stack_profiles, bucket, monkeypatch, profile_writer
):
    # A profile of its own ("turnover" columns), so these files fit nothing else on the stack.
    profile_writer(stack_profiles, "dailystack", sales_column="turnover")
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(stack_profiles))
    load_profile.cache_clear()
    profile = load_profile("dailystack")
    end = date.today() - timedelta(days=1)
    frame = synth.generate(profile, 4, 61, seed=8, end=end)
    frame["date"] = pd.to_datetime(frame["date"])

    def export(rows: pd.DataFrame) -> bytes:
        return rows.rename(columns={"sales": "turnover"}).to_csv(index=False).encode()

    today = datetime.now(UTC).date()
    stores = sorted(frame["store_id"].astype(str).unique())
    _upload(bucket, f"raw/dt={today}/daily-history.csv", export(frame[frame["date"] < pd.Timestamp(end)]))
    wanted = {layout.results_object("dailystack", profile.entity_key, s) for s in stores}
    wait_for("the history's forecasts", lambda: wanted <= _names(bucket, layout.results_prefix("dailystack")))

    # Each store uploads its own day, all at once; the first store's file arrives twice.
    started = datetime.now(UTC)
    files = {
        f"daily-{s}": export(frame[(frame["store_id"] == s) & (frame["date"] == pd.Timestamp(end))])
        for s in stores
    }
    files["daily-again"] = files[f"daily-{stores[0]}"]
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        list(pool.map(lambda item: _upload(bucket, f"raw/dt={today}/{item[0]}.csv", item[1]), files.items()))

    def reforecast() -> bool:
        results = [json.loads(bucket.blob(name).download_as_bytes()) for name in wanted]
        actuals = [{h["period_start"]: h["actual"] for h in r["history"]} for r in results]
        return all(
            a.get(f"{end}T00:00:00") is not None and datetime.fromisoformat(r["as_of"]) >= started
            for r, a in zip(results, actuals, strict=True)
        )

    wait_for("every store's forecast from its own upload", reforecast, timeout=180)
    runs = [json.loads(bucket.blob(n).download_as_bytes()) for n in _names(bucket, layout.RUNS)]
    runs = [r for r in runs if r["dataset"] == "dailystack"]
    assert [r for r in runs if r["status"] == "failed"] == []
    uploads = [r for r in runs if r["message"]["kind"] == "partitions-ready"]  # one per upload, twice none
    assert len(uploads) == len(files) + 1
    # Training ran once per city for the history (the cold start), never for a store's upload.
    trained = sum(r["counts"].get("models_trained", 0) for r in runs if r["function"] == "train_trigger")
    assert trained == frame["city"].nunique()
    bus = PubSubBus(stack_env.project)
    letters = [
        d for t in Topic for d in bus.dead_letters(t) if d["message"] and d["message"].dataset == "dailystack"
    ]
    bus.close()
    assert letters == []
