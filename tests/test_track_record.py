"""Results documents keep every open target period and a bounded track record; scoring is one module."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from factories import daily_result, result_document

from batchcast.ml import accuracy
from batchcast.ops import results


def _merge(*documents: dict) -> dict:
    current = None
    for document in documents:
        current = results.merge(current, document)
    return current


def test_a_morning_upload_adds_tomorrow_and_keeps_today() -> None:
    tick = daily_result(date(2026, 3, 2), "2026-03-02T00:00:00", 100)
    upload = daily_result(date(2026, 3, 3), "2026-03-02T06:00:00", 120)

    merged = _merge(tick, upload)

    assert [(f["target"]["start"][:10], f["forecast"][0]["p50"]) for f in merged["forecasts"]] == [
        ("2026-03-02", 100),
        ("2026-03-03", 120),
    ]
    assert merged["forecasts"][0]["as_of"] == tick["as_of"]
    # the top level is the latest target, as freshness expects
    assert (merged["target"], merged["as_of"]) == (upload["target"], upload["as_of"])


def test_a_target_is_replaced_only_by_a_newer_forecast_of_it() -> None:
    morning = daily_result(date(2026, 3, 3), "2026-03-02T06:00:00", 120)
    evening = daily_result(date(2026, 3, 3), "2026-03-02T21:00:00", 130)

    assert _merge(morning, evening)["forecasts"][0]["forecast"][0]["p50"] == 130
    assert _merge(evening, morning)["forecasts"][0]["forecast"][0]["p50"] == 130  # a replay of the older
    assert _merge(evening, morning) == _merge(evening)  # ...changes nothing at all


def test_targets_that_ended_are_dropped_into_the_track_record() -> None:
    merged = _merge(
        daily_result(date(2026, 3, 2), "2026-03-02T00:00:00", 100),
        daily_result(date(2026, 3, 3), "2026-03-03T00:00:00", 110, history={date(2026, 3, 2): 95}),
    )

    assert [f["target"]["start"][:10] for f in merged["forecasts"]] == ["2026-03-03"]
    assert [(r["period_start"][:10], r["p50"], r["actual"]) for r in merged["track_record"]] == [
        ("2026-03-02", 100, 95),
        ("2026-03-03", 110, None),  # begun at the tick, its actual not in yet
    ]


def test_a_late_rerun_does_not_replace_the_forecast_made_before_the_period_began() -> None:
    before = daily_result(date(2026, 3, 2), "2026-03-02T00:00:00", 100)
    late = daily_result(date(2026, 3, 2), "2026-03-02T10:00:00", 150)
    earlier = daily_result(date(2026, 3, 2), "2026-03-01T06:00:00", 80)

    merged = _merge(earlier, before, late)

    assert merged["forecasts"][0]["forecast"][0]["p50"] == 150  # the page shows the newest
    assert [(r["p50"], r["as_of"]) for r in merged["track_record"]] == [(100, before["as_of"])]


def test_intraday_windows_move_into_the_track_record_hour_by_hour_as_they_begin() -> None:
    hour = timedelta(hours=1)
    morning = result_document(datetime(2026, 3, 2, 6), 6, hour, "2026-03-02T06:00:00", 50, {})
    actuals = {datetime(2026, 3, 2, h): float(h) for h in range(6, 12)}
    noon = result_document(datetime(2026, 3, 2, 12), 6, hour, "2026-03-02T12:00:00", 60, actuals)

    merged = _merge(morning, noon)

    assert [f["target"]["start"] for f in merged["forecasts"]] == ["2026-03-02T12:00:00"]  # 06-12 ended
    assert [(r["period_start"][11:13], r["p50"], r["actual"]) for r in merged["track_record"]] == [
        *((f"{h:02d}", 50, float(h)) for h in range(6, 12)),
        ("12", 60, None),  # begun at noon; 13-17 have not
    ]
    assert merged["accuracy"]["mae"] == round(sum(abs(50 - h) for h in range(6, 12)) / 6, 4)


def test_the_track_record_keeps_eight_weeks_and_sums_up_mae_and_coverage() -> None:
    first = date(2026, 1, 1)
    days = [first + timedelta(days=i) for i in range(70)]
    actuals = {d: 100.0 + (i % 3) * 8 for i, d in enumerate(days)}  # errors 0, 8, 16: 16 is outside the band
    merged = _merge(
        *(
            daily_result(d, f"{d.isoformat()}T00:00:00", 100, history={p: actuals[p] for p in days if p < d})
            for d in days
        )
    )

    track = merged["track_record"]
    assert len(track) == 57  # 8 weeks back from the last tick, and the day it began
    assert track[0]["period_start"][:10] == (days[-1] - timedelta(weeks=8)).isoformat()
    scored = [r for r in track if r["actual"] is not None]
    errors = [abs(r["actual"] - r["p50"]) for r in scored]
    assert merged["accuracy"] == {
        "periods": 56,
        "mae": round(sum(errors) / len(errors), 4),
        "coverage": round(sum(e <= 10 for e in errors) / len(errors), 4),
    }


def test_a_document_written_before_forecasts_existed_is_carried_over() -> None:
    legacy = daily_result(date(2026, 3, 2), "2026-03-02T00:00:00", 100)

    merged = results.merge(legacy, daily_result(date(2026, 3, 3), "2026-03-02T06:00:00", 120))

    assert [f["target"]["start"][:10] for f in merged["forecasts"]] == ["2026-03-02", "2026-03-03"]


def test_scoring_gives_abs_error_band_and_scaled_error_per_point() -> None:
    points = pd.DataFrame(
        {
            "entity_id": ["a", "a", "b", "b"],
            "p10": [90.0, 90.0, 5.0, 5.0],
            "p50": [100.0, 100.0, 10.0, 10.0],
            "p90": [110.0, 110.0, 15.0, 15.0],
            "actual": [104.0, 130.0, 10.0, None],  # the last one has not arrived
        }
    )

    scored = accuracy.score(points, {"a": 2.0})

    assert scored.abs_error.tolist() == [4.0, 30.0, 0.0]
    assert scored.inside.tolist() == [True, False, True]
    assert scored.scaled_error.tolist()[:2] == [2.0, 15.0] and np.isnan(scored.scaled_error[2])
    assert accuracy.totals(scored) == {
        "points": 3,
        "abs_error": 34.0,
        "scaled_error": 17.0,
        "scaled_points": 2,
        "covered": 2,
    }


def test_naive_scales_are_each_entitys_seasonal_naive_mae(small_retail) -> None:
    profile = small_retail("retail")
    season = profile.backtest.season
    ts = pd.date_range("2026-01-01", periods=3 * season, freq="D")
    steady = np.tile(np.arange(season, dtype=float), 3)
    series = pd.DataFrame(
        {
            "entity_id": ["grows"] * len(ts) + ["flat"] * len(ts),
            "ts": list(ts) * 2,
            "y": np.concatenate([steady + np.repeat([0.0, 3.0, 6.0], season), np.full(len(ts), 5.0)]),
        }
    )

    assert accuracy.naive_scales(series, profile) == {"grows": 3.0}  # flat: no usable scale
