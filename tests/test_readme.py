"""The README's worked example of bringing your own data runs exactly as written.

The test takes the files and commands from the README's blocks marked ``<!-- example: <path> -->``
(the path a block is saved as; ``commands`` is the shell session), so the README cannot drift.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.schemas.frames import read_frame
from batchcast.data.validation import validate_upload

README = Path(__file__).parents[1] / "README.md"
EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```", re.S)
KIOSKS = ("beach", "harbour", "park", "station")


@pytest.fixture(scope="module")
def blocks() -> dict[str, str]:
    found = dict(EXAMPLE.findall(README.read_text()))
    assert {"profiles/kiosks.toml", "make_history.py", "weather_forecast.csv", "commands"} <= set(found)
    return found


@pytest.fixture(scope="module")
def session(blocks: dict[str, str], tmp_path_factory) -> tuple[Path, str]:
    """Save the example's files, run its commands in bash as a user would; the folder and output."""
    folder = tmp_path_factory.mktemp("kiosks")
    for path, text in blocks.items():
        if path.endswith((".toml", ".py", ".csv")) and not path.startswith("retail"):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCAST_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's tools
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks["commands"]],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return folder, done.stdout


@pytest.mark.slow
def test_the_readme_example_forecasts_every_kiosk_under_its_own_key(session: tuple[Path, str]) -> None:
    folder, output = session
    assert "covariates  temp_max (number, known), humidity (number, known), wind (number, known)" in output
    results = folder / "bucket" / layout.results_prefix("kiosks")
    assert sorted(p.name for p in results.iterdir()) == [f"kiosk={k}.json" for k in KIOSKS]
    harbour = json.loads((results / "kiosk=harbour.json").read_text())
    assert (harbour["entity_key"], harbour["target"]["start"]) == ("kiosk", "2025-09-02T00:00:00")
    assert [p.name for p in (folder / "bucket/future/dataset=kiosks/city=hamburg").iterdir()] != []


@pytest.mark.slow
def test_the_readme_example_forecast_follows_the_uploaded_weather(session: tuple[Path, str]) -> None:
    folder, _ = session
    p50 = {}
    for day in ("2025-09-01", "2025-09-02"):
        [part] = (folder / "bucket/predictions/dataset=kiosks" / f"dt={day}" / "city=hamburg").iterdir()
        frame = read_frame(part.read_bytes(), "prediction")
        p50[day] = dict(zip(frame["entity_id"], frame["p50"], strict=True))
    for kiosk in KIOSKS:  # hot and dry on Monday, cold, wet and windy on Tuesday
        assert p50["2025-09-01"][kiosk] > 1.5 * p50["2025-09-02"][kiosk], kiosk


def test_the_readme_retail_plans_are_a_valid_future_upload(blocks: dict[str, str]) -> None:
    checked = validate_upload(
        blocks["retail-plans.csv"].encode(),
        "csv",
        logical_time=datetime(2026, 3, 2, tzinfo=UTC),
        profiles=[load_profile("retail")],
    )
    assert (checked.mapping, checked.rows_accepted, checked.row_errors) == ("plans", 2, [])
    assert checked.good["store_id"].isna().tolist() == [False, True]  # the second row: all of munich
