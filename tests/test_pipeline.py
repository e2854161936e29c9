"""The whole flow on the embedded backend: upload → partition → train → predict → notify."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.errors import PermanentError
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.core.schemas.frames import read_frame
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops import models, training
from batchcast.ports import FixedClock
from batchcast.tools import synth
from batchcast.tools.cli import app
from batchcast.tools.demo import demo_clock

# Every test here trains models on generated data: make test-unit leaves the file out.
pytestmark = pytest.mark.slow

END = date(2026, 3, 1)


def _csv(profile_name: str, entities: int, days: int, seed: int = 1, end: date = END) -> bytes:
    frame = synth.generate(load_profile(profile_name), entities, days, seed=seed, end=end)
    return frame.to_csv(index=False).encode()


def _run(root: Path, profile_name: str, data: bytes, **options) -> runtime.Runtime:
    profile = load_profile(profile_name)
    at = demo_clock(profile, END)
    deployment = runtime.embedded(root, clock=FixedClock(at), backoff_seconds=0.001, **options)
    uploads.store_upload(deployment.ports.blobs, data, ext="csv", now=at, dataset=profile_name)
    deployment.bus.drain()
    return deployment


def _json(deployment: runtime.Runtime, name: str) -> dict:
    return json.loads(deployment.ports.blobs.read(name))


def _names(deployment: runtime.Runtime, prefix: str) -> list[str]:
    return [info.name for info in deployment.ports.blobs.list(prefix)]


def _runs(deployment: runtime.Runtime) -> list[dict]:
    return [_json(deployment, name) for name in _names(deployment, layout.RUNS)]


@pytest.fixture(scope="module")
def retail_run(tmp_path_factory) -> runtime.Runtime:
    return _run(tmp_path_factory.mktemp("retail"), "retail", _csv("retail", 16, 160))


def test_every_store_gets_a_next_day_forecast(retail_run):
    profile = load_profile("retail")
    results = [_json(retail_run, n) for n in _names(retail_run, layout.results_prefix("retail"))]
    assert len(results) == 16
    for result in results:
        assert result["target"]["start"] == "2026-03-02T00:00:00"  # the day that begins at the tick
        [row] = result["forecast"]
        assert 0 <= row["p10"] <= row["p50"] <= row["p90"]
        assert result["history"] and result["as_of"].startswith("2026-03-02T00:00:00")
    cities = {r["city"] for r in results}
    assert cities <= set(profile.cities) and len(cities) >= 2


def test_predictions_are_avro_per_city_and_shard(retail_run):
    names = _names(retail_run, layout.PREDICTIONS)
    assert names and all(n.startswith("predictions/dataset=retail/dt=2026-03-02/city=") for n in names)
    rows = [
        r for n in names for r in read_frame(retail_run.ports.blobs.read(n), "prediction").to_dict("records")
    ]
    assert sorted(r["entity_id"] for r in rows) == sorted(
        json.loads(retail_run.ports.blobs.read(n))["entity_id"]
        for n in _names(retail_run, layout.results_prefix("retail"))
    )


def test_models_are_versioned_with_metadata_and_a_verified_checksum(retail_run):
    profile = load_profile("retail")
    city = next(c for c in profile.cities if models.latest(retail_run.ports.blobs, profile, c))
    ref = models.latest(retail_run.ports.blobs, profile, city)
    _, metadata = training.load_model(retail_run.ports.blobs, profile, city, ref.version)
    for key in ("training_window", "rows", "features", "libraries", "metrics", "fingerprint", "model_sha256"):
        assert metadata[key], key
    assert metadata["libraries"]["scikit-learn"] and metadata["rows"] > 0
    overall = metadata["metrics"]["overall"]
    assert {"mae", "wape", "mase"} <= set(overall)
    assert overall["mae"] < overall["naive_mae"]  # beats seasonal naive on the same backtest points
    name = layout.model_dir("retail", city, ref.version) + metadata["model_file"]
    original = retail_run.ports.blobs.read(name)
    retail_run.ports.blobs.write(name, original[:-1] + b"x")
    try:
        with pytest.raises(training.ModelIntegrityError, match="checksum"):
            training.load_model(retail_run.ports.blobs, profile, city, ref.version)
    finally:
        retail_run.ports.blobs.write(name, original)


def test_a_model_trained_with_another_major_library_version_is_refused(retail_run):
    profile = load_profile("retail")
    city = next(c for c in profile.cities if training.latest(retail_run.ports.blobs, profile, c))
    ref = training.latest(retail_run.ports.blobs, profile, city)
    name = layout.model_dir("retail", city, ref.version) + training.METADATA_FILE
    original = retail_run.ports.blobs.read(name)
    metadata = json.loads(original)
    installed = training.installed_libraries()
    major = int(installed["scikit-learn"].split(".")[0])
    newer_minor = f"{major}.{int(installed['scikit-learn'].split('.')[1]) + 1}.0"
    try:  # another minor release of the same major version still loads
        metadata["libraries"]["scikit-learn"] = newer_minor
        retail_run.ports.blobs.write(name, json.dumps(metadata).encode())
        training.load_model(retail_run.ports.blobs, profile, city, ref.version)
        metadata["libraries"]["scikit-learn"] = f"{major - 1}.24.2"
        retail_run.ports.blobs.write(name, json.dumps(metadata).encode())
        with pytest.raises(training.ModelLibraryMismatch) as refused:
            training.load_model(retail_run.ports.blobs, profile, city, ref.version)
    finally:
        retail_run.ports.blobs.write(name, original)
    message = str(refused.value)
    assert f"scikit-learn {major - 1}.24.2 (this deployment has {installed['scikit-learn']})" in message
    assert f"retail/{city}/{ref.version}" in message and "retrain" in message
    assert isinstance(refused.value, PermanentError)  # retrying the message cannot fix it


def test_library_versions_compare_by_release_series():
    installed = {"scikit-learn": "1.5.2", "skops": "0.10.0", "numpy": "2.1.0"}
    assert training.incompatible_libraries(installed, installed) == []
    assert training.incompatible_libraries({"scikit-learn": "1.4.0", "numpy": "2.0.1"}, installed) == []
    assert training.incompatible_libraries({"skops": "0.9.0"}, installed) == [
        "skops 0.9.0 (this deployment has 0.10.0)"  # below 1.0 a minor release may break files
    ]
    assert training.incompatible_libraries({"numpy": "1.26.4", "pandas": "1.0"}, installed) == [
        "numpy 1.26.4 (this deployment has 2.1.0)"  # pandas is recorded, not a model library
    ]


def test_metrics_runs_and_freshness_are_written(retail_run):
    [metrics_name, *_] = _names(retail_run, layout.METRICS)
    document = _json(retail_run, metrics_name)
    # An upload's forecasts are in its run records; the day's metrics hold trainings and the
    # schedule's shards (one entry each), never one entry per store upload.
    assert document["trainings"] and "predictions" not in document
    runs = _runs(retail_run)
    assert {r["function"] for r in runs} == {"partition", "train_trigger", "predict", "notify"}
    assert all(r["status"] == "succeeded" for r in runs), [r for r in runs if r["status"] != "succeeded"]
    freshness = _json(retail_run, layout.FRESHNESS)["datasets"]["retail"]
    assert freshness["stale"] == 0 and len(freshness["entities"]) == 16


def test_bikeshare_forecasts_the_next_window_and_nothing_in_closed_hours(tmp_path):
    deployment = _run(tmp_path, "bikeshare", _csv("bikeshare", 6, 50))
    results = [_json(deployment, n) for n in _names(deployment, layout.results_prefix("bikeshare"))]
    assert len(results) == 6
    for result in results:
        starts = [row["period_start"] for row in result["forecast"]]
        assert starts == [f"2026-03-02T{h:02d}:00:00" for h in range(6, 12)]
    assert all("/part-06h-000-" in n for n in _names(deployment, layout.PREDICTIONS))


def _outputs(deployment: runtime.Runtime) -> dict[str, str]:
    """Digest of every output the guarantees cover (runs are per invocation; models hold timings)."""
    prefixes = (layout.BATCH_DATA, layout.PREDICTIONS, layout.RESULTS, layout.METRICS, layout.REJECTED)
    blobs = deployment.ports.blobs
    return {n: hashlib.sha256(blobs.read(n)).hexdigest() for p in prefixes for n in _names(deployment, p)}


def test_every_message_delivered_twice_gives_identical_outputs(tmp_path):
    data = _csv("retail", 8, 120) + b"8,berlin,not-a-date,5\n"
    once = _run(tmp_path / "once", "retail", data)
    twice = _run(tmp_path / "twice", "retail", data, deliver_twice=True)
    assert _outputs(once) == _outputs(twice) and _outputs(once)
    assert any(n.startswith(layout.REJECTED) for n in _outputs(once))
    trained = sum(r["counts"].get("models_trained", 0) for r in _runs(twice))
    assert trained == len({n.split("/")[2] for n in _names(twice, layout.MODELS) if n.endswith("LATEST")})
    before = _outputs(twice)
    for entry in twice.bus.log():  # and once more, everything, into the same bucket
        twice.bus.publish_raw(entry["topic"], entry["data"].encode(), entry["attributes"])
    twice.bus.drain()
    assert _outputs(twice) == before


def test_a_burst_of_uploads_trains_each_city_once(tmp_path):
    profile = load_profile("retail")
    at = demo_clock(profile, END)
    deployment = runtime.embedded(tmp_path, clock=FixedClock(at), backoff_seconds=0.001)
    full = synth.generate(profile, 8, 120, seed=3, end=END)
    for part, (_, chunk) in enumerate(full.groupby(full.index // (len(full) // 3 + 1))):
        uploads.store_upload(
            deployment.ports.blobs,
            chunk.to_csv(index=False).encode(),
            ext="csv",
            now=at,
            dataset="retail",
            upload_id=f"burst-{part}",
        )
    deployment.bus.drain()
    runs = _runs(deployment)
    assert sum(r["function"] == "partition" for r in runs) == 3
    trainings = sum(r["counts"].get("models_trained", 0) for r in runs)
    assert trainings == len({c for c in full["city"]})


def test_a_tick_without_new_data_predicts_without_retraining(retail_run, tmp_path):
    profile = load_profile("retail")
    before = {c: models.latest(retail_run.ports.blobs, profile, c) for c in profile.cities}
    next_midnight = demo_clock(profile, END) + timedelta(days=1)
    deployment = runtime.embedded(retail_run.ports.blobs.root, clock=FixedClock(next_midnight))
    deployment.ports.bus.publish(
        Topic.SCHEDULE,
        ScheduleTick(dataset="retail", actions=["train", "predict"], logical_time=next_midnight),
    )
    deployment.bus.drain()
    assert {c: models.latest(deployment.ports.blobs, profile, c) for c in profile.cities} == before
    results = [_json(deployment, n) for n in _names(deployment, layout.results_prefix("retail"))]
    assert {r["target"]["start"] for r in results} == {"2026-03-03T00:00:00"}


def test_one_city_failing_to_predict_leaves_the_others_fresh(tmp_path, predict_fails_for):
    profile = load_profile("retail")
    predict_fails_for("munich")
    deployment = _run(tmp_path, "retail", _csv("retail", 16, 120))
    results = [_json(deployment, n) for n in _names(deployment, layout.results_prefix("retail"))]
    assert results and "munich" not in {r["city"] for r in results}
    assert deployment.bus.dead_letters(Topic.PREDICT_REQUESTS)  # after 5 attempts
    # An upload's forecasts re-check just their own stores; the schedule's check sees every city.
    at = deployment.ports.clock.now()
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset="retail", actions=["notify"], logical_time=at)
    )
    deployment.bus.drain()
    entities = _json(deployment, layout.FRESHNESS)["datasets"]["retail"]["entities"]
    munich = [s for s in entities.values() if s["city"] == "munich"]
    assert munich and all(s["stale"] and s["reason"] for s in munich)
    assert all(not s["stale"] for s in entities.values() if s["city"] != "munich")
    assert profile.cities["munich"]


def test_training_failure_falls_back_to_the_previous_model(retail_run, monkeypatch):
    profile = load_profile("retail")
    city = next(c for c in profile.cities if models.latest(retail_run.ports.blobs, profile, c))
    previous = models.latest(retail_run.ports.blobs, profile, city)
    monkeypatch.setattr(
        training, "_train_and_store", lambda *a, **k: (_ for _ in ()).throw(MemoryError("oom"))
    )
    later = demo_clock(profile, END) + timedelta(days=2)
    deployment = runtime.embedded(retail_run.ports.blobs.root, clock=FixedClock(later))
    extra = _csv("retail", 16, 2, seed=1, end=END + timedelta(days=1))
    uploads.store_upload(deployment.ports.blobs, extra, ext="csv", now=later, dataset="retail")
    deployment.bus.drain()
    tick = ScheduleTick(dataset="retail", actions=["train", "predict"], logical_time=later)
    deployment.ports.bus.publish(Topic.SCHEDULE, tick)
    deployment.bus.drain()
    # The upload re-forecasts; the schedule trains, one city per run.
    upload, _split, *per_city = [r for f, r in deployment.results if f == "train_trigger"]
    assert upload.counts.get("models_trained", 0) == 0 and len(per_city) == len(profile.cities)
    [trigger] = [r for r in per_city if city in r.errors]
    assert trigger.status == "partial" and "model training failed" in trigger.errors[city]
    assert models.latest(deployment.ports.blobs, profile, city) == previous
    fresh = [_json(deployment, n) for n in _names(deployment, layout.results_prefix("retail"))]
    assert {r["model_version"] for r in fresh if r["city"] == city} == {previous.version}


def test_demo_command_prints_a_summary_and_draws_the_chart(tmp_path):
    root = tmp_path / "demo"
    outcome = CliRunner().invoke(
        app,
        ["demo", "--stores", "8", "--days", "120", "--root", str(root), "--end", "2026-03-01"],
        env={"COLUMNS": "200"},
    )
    assert outcome.exit_code == 0, outcome.output
    assert "MASE" in outcome.output and "time per step" in outcome.output
    assert "P10–P90 raw" in outcome.output  # coverage before and after calibration
    chart = root / "forecast-retail.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 20_000
    # Not a terminal: no spinner frames, no live timers; the steps table has the real times.
    assert not re.search("[\u2800-\u28ff]", outcome.output), "spinner glyphs in non-terminal output"
    assert not re.search(r"\b0:\d\d:\d\d\b", outcome.output), "a live elapsed timer in non-terminal output"
    # The demo ends ready to look at: a manager token that the page's API accepts, and how to serve.
    assert f"batchcast serve --root {root}" in outcome.output
    token = re.search(r"#token=(\S+)", outcome.output).group(1)
    from fastapi.testclient import TestClient

    from batchcast_api.app import create_app

    with TestClient(create_app(blobs=runtime.embedded(root).ports.blobs)) as client:
        seen = client.get("/stores", headers={"Authorization": f"Bearer {token}"})
        first = seen.json()["stores"][0]["entity_id"]
        result = client.get(f"/results/{first}", headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 200, seen.text
    assert seen.json()["caller"] == "demo-manager" and len(seen.json()["stores"]) == 5
    # The last 14 days came as daily uploads: each was forecast before its actual, so the page has
    # a track record (closed Sundays included) and the summary counts it.
    assert "and 14 daily uploads after it" in outcome.output
    track = result.json()["track_record"]
    assert len([row for row in track if row["actual"] is not None]) == 14, track
    assert result.json()["accuracy"]["periods"] == 14
    assert "live P10–P90" in outcome.output


def test_demo_refuses_to_wipe_a_directory_it_did_not_create(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    outcome = CliRunner().invoke(app, ["demo", "--stores", "4", "--days", "60", "--root", str(tmp_path)])
    assert outcome.exit_code != 0 and (tmp_path / "precious.txt").exists()


def _upload(source: Path, root: Path, day: int = 2) -> Any:
    """``batchcast upload`` in-process, its clock at midnight in Berlin (the demo's) of a March day."""
    now = datetime(2026, 3, day, 0, 0).isoformat() + "+01:00"
    return CliRunner().invoke(app, ["upload", str(source), "--root", str(root), "--now", now])


def test_upload_command_runs_the_flow_and_exits_by_what_flowed(tmp_path):
    source = tmp_path / "sales.csv"
    source.write_bytes(_csv("retail", 4, 90))
    outcome = _upload(source, tmp_path / "b")
    assert outcome.exit_code == 0, outcome.output
    assert len(list((tmp_path / "b" / "results" / "dataset=retail").glob("*.json"))) == 4
    # The next day's rows, one of them bad: the good one flows, the command says what did not.
    source.write_bytes(b"store_id,city,date,sales\n1,berlin,2026-03-02,10\n2,berlin,2026-03-02,lots\n")
    outcome = _upload(source, tmp_path / "b", day=3)
    assert outcome.exit_code == 4, outcome.output
    [why] = [line for line in outcome.output.splitlines() if line.startswith("exit 4: ")]
    upload_id = why.split("raw/dt=2026-03-02/")[1].split(".csv")[0]
    assert why == (
        f"exit 4: raw/dt=2026-03-02/{upload_id}.csv: 1 of 2 rows accepted; 1 rejected (1 not a number) "
        f"(report: rejected/dt=2026-03-02/{upload_id}.error.json)"
    )


def test_upload_command_exits_3_when_nothing_flowed(tmp_path):
    source = tmp_path / "sales.csv"
    source.write_bytes(b"Store,Date,Revenue\n1,2026-02-27,100\n")
    outcome = _upload(source, tmp_path / "b")
    assert outcome.exit_code == 3, outcome.output
    assert "file rejected: missing columns: Sales (closest fit: dataset retail" in outcome.output
    assert list((tmp_path / "b" / "batch_data").glob("**/*.avro")) == []


def test_upload_command_exits_1_when_a_run_fails(tmp_path, monkeypatch):
    from batchcast.steps import partition

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(partition, "run", broken)
    source = tmp_path / "sales.csv"
    source.write_bytes(_csv("retail", 2, 10))
    outcome = _upload(source, tmp_path / "b")
    assert outcome.exit_code == 1, outcome.output
    assert "exit 1: 1 message(s) dead-lettered (batchcast status lists them)" in outcome.output


def test_upload_streams_a_local_file_and_dedupes_it(tmp_path):
    """The CLI's upload path writes a file from disk in pieces; the same file twice is one upload."""
    blobs = runtime.embedded(tmp_path / "b").ports.blobs
    source = tmp_path / "big.csv"
    source.write_bytes(b"x" * (3 << 20) + b"\n")  # more than one 1 MiB piece
    at = datetime(2026, 3, 2, 12, 0).astimezone()
    name = uploads.store_upload(blobs, source, ext="csv", now=at, dataset="retail")
    assert name == layout.raw_object(at.date(), uploads.new_upload_id(at, source.read_bytes()), "csv")
    assert blobs.read(name) == source.read_bytes() and blobs.stat(name).metadata == {"dataset": "retail"}
    generation = blobs.stat(name).generation
    assert uploads.store_upload(blobs, source, ext="csv", now=at, dataset="retail") == name
    assert blobs.stat(name).generation == generation  # not written again: no second event
    other = tmp_path / "other.csv"
    other.write_bytes(b"y\n")
    upload_id = name.rsplit("/", 1)[1].removesuffix(".csv")
    with pytest.raises(uploads.UploadConflict):
        uploads.store_upload(blobs, other, ext="csv", now=at, upload_id=upload_id)


@pytest.mark.parametrize(
    ("profile_name", "fmt", "city"),
    [("retail", "rossmann", "berlin"), ("bikeshare", "citibike", "vancouver")],
)
def test_users_own_export_flows_through_its_mapping_without_naming_the_dataset(
    tmp_path, profile_name, fmt, city
):
    profile = load_profile(profile_name)
    frame = synth.generate(profile, 5, 60, seed=4, end=END, fmt=fmt)
    at = demo_clock(profile, END)
    deployment = runtime.embedded(tmp_path, clock=FixedClock(at), backoff_seconds=0.001)
    uploads.store_upload(deployment.ports.blobs, frame.to_csv(index=False).encode(), ext="csv", now=at)
    deployment.bus.drain()
    results = [_json(deployment, n) for n in _names(deployment, layout.results_prefix(profile_name))]
    assert len(results) == 5 and {r["city"] for r in results} == {city}
    [partition] = [r for r in _runs(deployment) if r["function"] == "partition"]
    assert partition["status"] == "succeeded", partition
