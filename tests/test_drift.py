"""The drift rule: a city's live MASE against its latest model's backtest MASE, with the profile's
``[monitoring]`` settings; cities that cannot be judged say why."""

from __future__ import annotations

from datetime import date
from importlib import resources
from pathlib import Path

import pytest
from factories import MODEL_VERSION, live_score, seed_model

from batchcast.backends.embedded import EmbeddedBlobStore
from batchcast.core.config import Monitoring, load_profile, parse_profile
from batchcast.core.errors import ConfigError
from batchcast.ops import drift, metrics, status
from batchcast.ops.metrics import LiveScore

TODAY = date(2026, 3, 2)
RULES = Monitoring(drift_margin=0.25, live_window_days=28, min_points=50)


@pytest.mark.parametrize(
    ("live_mase", "drifting"),
    [(1.0, False), (1.24, False), (1.26, True), (3.0, True)],  # backtest 1.0, margin 25 %
)
def test_a_city_drifts_only_when_live_mase_exceeds_the_backtest_by_the_margin(live_mase, drifting) -> None:
    assert drift.verdict(live_score(live_mase), 1.0, RULES) == (drifting, None)


def test_too_few_scored_points_are_not_judged_and_say_so() -> None:
    drifting, note = drift.verdict(live_score(5.0, points=49), 1.0, RULES)
    assert not drifting
    assert note == "49 of 50 scored points in 28 days"


def test_points_without_a_mase_scale_do_not_count_towards_judging() -> None:
    unscaled = LiveScore(points=80, abs_error=160.0, scaled_error=40.0, scaled_points=20, covered=60)
    assert drift.verdict(unscaled, 1.0, RULES) == (
        False,
        "20 of 50 scored points in 28 days (and 60 without a MASE scale)",
    )


def test_a_model_without_a_backtest_mase_is_not_judged() -> None:
    assert drift.verdict(live_score(5.0), None, RULES) == (
        False,
        "the latest model has no backtest MASE",
    )


def test_check_reads_the_window_and_the_latest_model_and_notes_cities_without_one(tmp_path: Path) -> None:
    blobs = EmbeddedBlobStore(tmp_path)
    profile = load_profile("retail")
    seed_model(blobs, profile, "berlin", backtest_mase=0.8)
    seed_model(blobs, profile, "paris", backtest_mase=0.8)
    for day in (TODAY, date(2026, 2, 20)):
        metrics.record_live(blobs, "retail", day, "berlin", "shard-0-of-1", live_score(1.5, points=30), "v")
    metrics.record_live(blobs, "retail", TODAY, "paris", "shard-0-of-1", live_score(0.9), "v")
    metrics.record_live(
        blobs, "retail", date(2026, 1, 1), "paris", "shard-0-of-1", live_score(9.0), "v"
    )  # outside

    verdicts = drift.check(blobs, profile, TODAY)

    berlin, paris, munich = verdicts["berlin"], verdicts["paris"], verdicts["munich"]
    assert berlin.drifting and berlin.live.points == 60 and berlin.live.mase == pytest.approx(1.5)
    assert berlin.model_version == MODEL_VERSION and berlin.backtest_mase == 0.8
    assert not paris.drifting and paris.note is None and paris.live.mase == pytest.approx(0.9)
    assert not munich.drifting and munich.note == "no model trained yet"
    row = berlin.to_json()
    assert row | {"live_mae": None} == {
        "live_mase": 1.5,
        "live_coverage": 0.8,
        "live_mae": None,
        "points": 60,
        "backtest_mase": 0.8,
        "model_version": MODEL_VERSION,
        "drifting": True,
        "note": None,
    }


def test_status_shows_live_mase_against_the_backtest_and_the_drifting_flag() -> None:
    judged = {"live_mase": 1.5, "live_coverage": 0.64, "points": 410, "backtest_mase": 0.8, "note": None}
    cities = {
        "berlin": {"live_accuracy": judged | {"drifting": True}},
        "paris": {"live_accuracy": judged | {"drifting": False}},
        "cologne": {
            "live_accuracy": judged
            | {"live_mase": None, "live_coverage": None, "points": 0}
            | {"backtest_mase": None, "drifting": False, "note": "no model trained yet"}
        },
        "*": {"live_accuracy": None},
    }
    rows = status.accuracy_rows({"datasets": {"retail": {"cities": cities}}})
    assert [
        (r["city"], r["live MASE"], r["backtest MASE"], r["live coverage"], r["points"], r["drift"])
        for r in rows
    ] == [
        ("berlin", "1.50", "0.80", "64%", "410", "DRIFTING"),
        ("cologne", "-", "-", "-", "0", "not judged: no model trained yet"),
        ("paris", "1.50", "0.80", "64%", "410", "ok"),
    ]


def test_bad_monitoring_settings_are_reported_at_once_with_the_other_profile_mistakes() -> None:
    shipped = (resources.files("batchcast.core") / "profiles" / "retail.toml").read_text()
    broken = shipped.replace('timezone = "Europe/Berlin"', 'timezone = "Europe/Berlinn"', 1)
    broken += "\n[monitoring]\ndrift_margin = -0.1\nlive_window_days = 0\nmin_points = 0\n"
    with pytest.raises(ConfigError) as raised:
        parse_profile(broken, "retail.toml")
    problems = str(raised.value)
    assert "timezone: unknown time zone 'Europe/Berlinn'" in problems
    assert "monitoring.drift_margin: Input should be greater than 0" in problems
    assert "monitoring.live_window_days: Input should be greater than or equal to 1" in problems
    assert "monitoring.min_points: Input should be greater than or equal to 1" in problems
    assert load_profile("retail").monitoring == Monitoring()  # the defaults: 25 %, 28 days, 50 points
