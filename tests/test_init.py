"""``batchcast init`` on files of different shapes: it writes a profile that validates and a dry
partition that accepts the file, and says what it inferred."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from batchcast.tools import reference
from batchcast.tools.cli import app

NOW = "2026-03-02T12:00:00+00:00"
ZONE = ("--country", "US", "--timezone", "America/New_York")  # never guessed: a script passes them
RNG = np.random.default_rng(7)
DAYS = pd.date_range("2025-11-01", "2026-02-28", freq="D")
HOURS = pd.date_range("2026-02-01", "2026-02-28 23:00", freq="h")


def flat(output: str) -> str:
    """Output without the box rich draws around an error, on one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def init(tmp_path: Path, name: str, frame: pd.DataFrame, *options: str, sep: str = ",") -> tuple[dict, str]:
    """Write ``frame`` as a CSV, run init on it; return the profile it wrote and init's output."""
    data = tmp_path / f"{name}.csv"
    frame.to_csv(data, index=False, sep=sep)
    out = tmp_path / "profiles" / f"{name}.toml"
    result = CliRunner().invoke(
        app,
        ["init", str(data), "--out", str(out), "--now", NOW, "--city", "dc", *ZONE, *options],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    profile = tomllib.loads(out.read_text())
    jsonschema.validate(profile, json.loads(reference.SCHEMA.read_text()))  # as an editor would check it
    return profile, result.output


def test_daily_rows_per_store(tmp_path: Path) -> None:
    rows = [
        (s, d.strftime("%Y-%m-%d"), int(RNG.integers(0, 2)), float(RNG.integers(100, 900)))
        for s in (1, 2, 3)
        for d in DAYS
    ]
    profile, output = init(
        tmp_path, "stores", pd.DataFrame(rows, columns=["store", "date", "promo", "sales"])
    )
    assert (profile["entity_key"], profile["target"], profile["frequency"]) == ("store", "sales", "daily")
    assert profile["covariates"] == {"promo": {"type": "boolean", "timing": "past"}}
    mapping = profile["mappings"]["file"]
    assert mapping["columns"] == {"date": "date", "store": "store", "sales": "sales", "promo": "promo"}
    assert "aggregate" not in mapping and "date_format" not in mapping
    assert f"rows read {len(rows):,}, accepted {len(rows):,}, rejected 0" in output
    assert "3 entities" in output


def test_hourly_rows_added_up_into_a_daily_target(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "dteday": HOURS.strftime("%Y-%m-%d"),
            "hr": HOURS.hour,
            "temp": RNG.random(len(HOURS)).round(2),
            "cnt": RNG.integers(0, 40, len(HOURS)),
        }
    )
    profile, output = init(tmp_path, "hour", frame, "--frequency", "daily")
    mapping = profile["mappings"]["file"]
    assert profile["frequency"] == "daily"
    assert mapping["time_of_day"] == "hr"
    assert mapping["aggregate"] == {"cnt": "sum", "temp": "mean"}
    assert "up to 24 rows per day: the mapping adds them up (aggregate)" in output
    assert "1 entities, 28 periods" in output  # 28 days, each the sum of its 24 hours


def test_events_are_counted_per_station_and_hour(tmp_path: Path) -> None:
    n = 3000
    started = pd.Timestamp("2026-02-20") + pd.to_timedelta(RNG.integers(0, 7 * 24 * 60, n), unit="min")
    frame = pd.DataFrame(
        {"station_id": RNG.choice(["S1", "S2"], n), "started_at": started.strftime("%Y-%m-%d %H:%M:%S")}
    )
    profile, output = init(tmp_path, "trips", frame.sort_values("started_at"))
    mapping = profile["mappings"]["file"]
    assert profile["frequency"] == "hourly" and profile["horizon"]["windows"]
    assert mapping["constants"]["events"] == "1" and mapping["aggregate"] == {"events": "sum"}
    assert profile["features"]["fill_missing"] == "zero"
    assert "each row is one event: the target counts them per period" in output
    assert f"rows read {n:,}, accepted {n:,}" in output


def test_a_semicolon_separated_file_with_us_dates(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"Datum": DAYS.strftime("%m/%d/%Y"), "Filiale": "F1", "Umsatz": RNG.integers(1, 99, len(DAYS))}
    )
    profile, output = init(tmp_path, "semi", frame, sep=";")
    assert profile["mappings"]["file"]["date_format"] == "%m/%d/%Y"
    assert "(semicolon-separated)" in output
    assert "Datum reads as %m/%d/%Y; if your days and months are the other way round" in output
    assert f"accepted {len(DAYS):,}, rejected 0" in output


def test_day_first_dates_are_told_apart_by_a_day_over_twelve(tmp_path: Path) -> None:
    frame = pd.DataFrame({"day": DAYS.strftime("%d/%m/%Y"), "shop_id": "A", "sales": 1.5})
    profile, output = init(tmp_path, "dayfirst", frame)
    assert profile["mappings"]["file"]["date_format"] == "%d/%m/%Y"
    assert profile["entity_key"] == "shop_id"
    assert "rejected 0" in output


def test_a_single_series_without_an_entity_column(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "instant": range(len(DAYS)),
            "dteday": DAYS.strftime("%Y-%m-%d"),
            "workingday": RNG.integers(0, 2, len(DAYS)),
            "cnt": RNG.integers(100, 900, len(DAYS)),
        }
    )
    profile, output = init(tmp_path, "day", frame)
    mapping = profile["mappings"]["file"]
    assert mapping["constants"] == {"series": "all", "city": "dc"}
    assert set(profile["covariates"]) == {"workingday"}  # instant is a row number, not an input
    assert "no entity column" in output and "1 entities" in output


def test_a_file_without_dates_is_refused_naming_the_option(tmp_path: Path) -> None:
    data = tmp_path / "nodates.csv"
    data.write_text("a,b\nx,1\ny,2\n")
    result = CliRunner().invoke(app, ["init", str(data), "--out", str(tmp_path / "p.toml")])
    assert result.exit_code == 2
    assert "pass --time COLUMN" in flat(result.output)
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize("flag", ["--entity", "--target", "--time"])
def test_an_option_naming_a_missing_column_is_refused(tmp_path: Path, flag: str) -> None:
    data = tmp_path / "f.csv"
    data.write_text("date,sales\n2026-01-01,1\n2026-01-02,2\n")
    result = CliRunner().invoke(app, ["init", str(data), flag, "nope", "--out", str(tmp_path / "p.toml")])
    assert result.exit_code == 2
    assert f"{flag} 'nope' is not a column (columns: date, sales)" in flat(result.output)


@pytest.mark.slow
def test_the_readme_walkthrough_from_a_csv_to_a_forecast_a_manager_can_see(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [(s, d.strftime("%Y-%m-%d"), float(100 * s + d.day_of_week * 10)) for s in (1, 2) for d in DAYS]
    frame = pd.DataFrame(rows, columns=["store", "date", "sales"])
    profile, _ = init(tmp_path, "kiosk-sales", frame)
    monkeypatch.setenv("BATCHCAST_PROFILE_DIR", str(tmp_path / "profiles"))  # the API reads it too
    env = {"BATCHCAST_PROFILE_DIR": str(tmp_path / "profiles")}
    bucket = str(tmp_path / "bucket")
    runner = CliRunner()
    data = str(tmp_path / "kiosk-sales.csv")
    uploaded = runner.invoke(
        app, ["upload", data, "--root", bucket, "--now", "2026-03-01T00:30:00+00:00"], env=env
    )
    assert uploaded.exit_code == 0, uploaded.output
    granted = runner.invoke(app, ["grant", "anna", "--dataset", profile["name"], "--root", bucket], env=env)
    assert granted.exit_code == 0, granted.output
    assert f"anna may see 2 of {profile['name']}: 1, 2" in granted.output
    token = re.search(r"#token=(\S+)", granted.output).group(1)
    from fastapi.testclient import TestClient

    from batchcast.entrypoints import runtime
    from batchcast_api.app import create_app

    with TestClient(create_app(blobs=runtime.embedded(Path(bucket)).ports.blobs)) as client:
        seen = client.get("/stores", headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 200, seen.text
    assert [s["entity_id"] for s in seen.json()["stores"]] == ["1", "2"]


def test_without_a_terminal_the_city_country_and_time_zone_are_required_not_guessed(tmp_path: Path) -> None:
    data = tmp_path / "sales.csv"
    data.write_text("store,date,sales\n1,2026-01-01,5\n1,2026-01-02,6\n")
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(app, ["init", str(data), "--out", str(out), "--country", "US"])
    assert result.exit_code == 2
    assert "pass --city ... --timezone ..." in flat(result.output)
    assert not out.exists()


def test_a_city_column_declares_each_of_its_cities(tmp_path: Path) -> None:
    rows = [(c, s, d.strftime("%Y-%m-%d"), 1.0 + s) for c in ("dc", "nyc") for s in (1, 2) for d in DAYS]
    data = tmp_path / "cities.csv"
    pd.DataFrame(rows, columns=["city", "store", "date", "sales"]).to_csv(data, index=False)
    out = tmp_path / "p.toml"
    result = CliRunner().invoke(app, ["init", str(data), "--out", str(out), "--now", NOW, *ZONE])
    assert result.exit_code == 0, result.output
    profile = tomllib.loads(out.read_text())
    assert set(profile["cities"]) == {"dc", "nyc"}
    assert profile["mappings"]["file"]["columns"]["city"] == "city"
