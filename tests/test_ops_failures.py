"""Failures are never silent or anonymous: every failed run names its dataset, city, error class and
why; a broken profile fails only its own dataset and is reported by ``status`` and ``profiles``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.errors import PermanentError
from batchcast.core.messages import ScheduleTick
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops import status
from batchcast.ports import FixedClock
from batchcast.tools import synth
from batchcast.tools.cli import app

AT = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)


@pytest.fixture
def profiles_with_one_broken(tmp_path: Path, monkeypatch, profile_writer) -> Path:
    """A profile folder holding a small retail profile ``shop`` and ``citybikes``, an hourly
    profile without ``horizon.windows`` (invalid)."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    profile_writer(directory, "shop", sales_column="turnover")
    bikes = (Path(str(resources.files("batchcast.core") / "profiles")) / "bikeshare.toml").read_text()
    bikes = bikes.replace('name = "bikeshare"', 'name = "citybikes"')
    bikes = "\n".join(line for line in bikes.splitlines() if not line.startswith("windows ="))
    (directory / "citybikes.toml").write_text(bikes)
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(directory))
    load_profile.cache_clear()
    yield directory
    load_profile.cache_clear()


def _shop_csv(entities: int = 3, days: int = 70) -> bytes:
    frame = synth.generate(load_profile("shop"), entities, days, seed=3, end=date(2026, 3, 1))
    return frame.rename(columns={"sales": "turnover"}).to_csv(index=False).encode()


def _runs(deployment: runtime.Runtime, function: str) -> list[dict]:
    blobs = deployment.ports.blobs
    records = [json.loads(blobs.read(i.name)) for i in blobs.list(layout.RUNS) if i.name.endswith(".json")]
    return [r for r in records if r.get("function") == function]


def test_a_broken_profile_fails_only_its_own_datasets_uploads(tmp_path, profiles_with_one_broken):
    deployment = runtime.embedded(tmp_path / "b", clock=FixedClock(AT), backoff_seconds=0.001)
    blobs = deployment.ports.blobs
    # The shop's upload names no dataset: its header is matched against every profile that loads.
    uploads.store_upload(blobs, _shop_csv(), ext="csv", now=AT)
    deployment.bus.drain()
    assert len(list(blobs.list(layout.results_prefix("shop")))) == 3
    [shop_run] = _runs(deployment, "partition")
    assert (shop_run["status"], shop_run["dataset"]) == ("succeeded", "shop")

    # An upload for the broken dataset fails, under its name, with the profile's reason.
    uploads.store_upload(blobs, b"station_id,city,hour,trips\n", ext="csv", now=AT, dataset="citybikes")
    deployment.bus.drain()
    [failed] = [r for r in _runs(deployment, "partition") if r["status"] == "failed"]
    assert failed["dataset"] == "citybikes"
    assert failed["error_class"] == "ConfigError"
    assert "citybikes.toml" in failed["error"] and "needs horizon.windows" in failed["error"]
    assert "needs horizon.windows" in failed["errors"]["citybikes"]

    document = status.collect(blobs, deployment.bus.dead_letters)
    broken = document["datasets"]["citybikes"]
    assert "needs horizon.windows" in broken["profile_error"]
    assert broken["cities"]["*"]["last_failure"]["function"] == "partition"
    rows = [r for r in status.rows(document) if r["dataset"] == "citybikes"]
    assert any("needs horizon.windows" in r["last failure"] for r in rows)
    assert "shop" in document["datasets"] and "profile_error" not in document["datasets"]["shop"]


def test_an_upload_fitting_no_loaded_profile_is_rejected_naming_the_broken_ones(
    tmp_path, profiles_with_one_broken
):
    deployment = runtime.embedded(tmp_path / "b", clock=FixedClock(AT), backoff_seconds=0.001)
    uploads.store_upload(deployment.ports.blobs, b"station,hour,rides\nx,1,2\n", ext="csv", now=AT)
    deployment.bus.drain()
    [run] = _runs(deployment, "partition")
    assert run["status"] == "rejected" and run["error_class"] == "Rejected"
    assert "profiles that could not be loaded" in run["error"] and "citybikes.toml" in run["error"]


def test_batchcast_profiles_lists_the_good_ones_and_fails_naming_the_broken_file(profiles_with_one_broken):
    result = CliRunner().invoke(app, ["profiles"])
    assert result.exit_code == 1
    assert "shop: " in result.output  # the good profile is still listed
    broken = profiles_with_one_broken / "citybikes.toml"
    assert f"broken profile: {broken}: invalid profile:" in result.output
    assert "needs horizon.windows" in result.output


def test_batchcast_status_shows_a_broken_profile(tmp_path, profiles_with_one_broken):
    root = tmp_path / "b"
    runtime.embedded(root)
    result = CliRunner().invoke(app, ["status", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert "needs horizon.windows" in json.loads(result.output)["datasets"]["citybikes"]["profile_error"]


class Silent(PermanentError):
    """An exception whose text is empty."""


def test_a_failure_with_an_empty_message_is_named_by_its_class(deployment, monkeypatch):
    from batchcast.steps import notify

    def fails(*args, **kwargs):
        raise Silent()

    monkeypatch.setattr(notify, "run", fails)
    deployment.handle("notify", ScheduleTick(dataset="retail", actions=["notify"], logical_time=AT))
    [record] = _runs(deployment, "notify")
    assert record["status"] == "failed" and record["dataset"] == "retail"
    assert record["error_class"] == "Silent"
    assert record["error"] == "Silent: Silent()"


def test_an_unexpected_failure_is_recorded_with_its_class_then_retried(deployment, monkeypatch):
    from batchcast.steps import notify

    def fails(*args, **kwargs):
        raise RuntimeError()

    monkeypatch.setattr(notify, "run", fails)
    with pytest.raises(RuntimeError):
        deployment.handle("notify", ScheduleTick(dataset="retail", actions=["notify"], logical_time=AT))
    [record] = _runs(deployment, "notify")
    assert (record["error_class"], record["error"]) == ("RuntimeError", "RuntimeError: RuntimeError()")


def test_a_failed_upload_names_its_dataset_from_the_objects_metadata():
    from batchcast.core.messages import ObjectFinalized

    message = ObjectFinalized(
        bucket="b",
        name="raw/dt=2026-03-02/u.csv",
        generation=1,
        metadata={"dataset": "retail"},
        logical_time=AT,
    )
    assert runtime.run_dataset(message, None, RuntimeError("x")) == "retail"
    assert runtime.run_dataset(message.model_copy(update={"metadata": {}}), None, None) == "unknown"
