"""Mappings that reshape a user's file: rows added up into the profile's periods, a time built from
a date column and an hour column, a date_format; and choosing a mapping is never a silent guess."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources

import pandas as pd
import pytest
from factories import daily_profile_toml

from batchcast.core import config
from batchcast.core.errors import ConfigError
from batchcast.data.validation import validate_upload

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)

# A public bike-rental file's shape: a date in US form, an hour column, one row per hour.
RENTALS = daily_profile_toml(
    "rentals",
    key="station_id",
    target="rentals",
    city=("dc", "US", "America/New_York"),
    tail="""[training]
window = 28

[covariates.temp]
timing = "past"

[mappings.hourly]
columns = { station_id = "station", day = "dteday", rentals = "cnt", temp = "temp" }
optional = ["temp"]
constants = { city = "dc" }
date_format = "%m/%d/%Y"
time_of_day = "hr"
aggregate = { rentals = "sum", temp = "mean" }
""",
)


def rentals(replace: str = "", by: str = "") -> config.Profile:
    return config.parse_profile(RENTALS.replace(replace, by) if replace else RENTALS)


def check(text: str, profile: config.Profile, **kwargs):
    return validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[profile], **kwargs)


def test_hourly_rows_add_up_into_days_with_a_reducer_per_column() -> None:
    text = (
        "station,dteday,hr,cnt,temp\n"
        "A,02/27/2026,0,3,1.0\n"
        "A,02/27/2026,13,5,3.0\n"
        "A,02/28/2026,9,7,\n"
        "B,02/27/2026,23,2,4.0\n"
        "A,02/27/2026,13,1,5.0\n"  # a repeated hour is added, not a conflicting duplicate
    )
    checked = check(text, rentals())
    assert checked.file_errors == [] and checked.row_errors == []
    good = checked.good[["station_id", "day", "rentals", "temp"]].fillna({"temp": -1})
    assert good.values.tolist() == [
        ["A", pd.Timestamp("2026-02-27"), 9.0, 3.0],
        ["A", pd.Timestamp("2026-02-28"), 7.0, -1],  # a mean of nothing stays empty
        ["B", pd.Timestamp("2026-02-27"), 2.0, 4.0],
    ]
    assert checked.rows_accepted == 5


def test_the_other_reducers_take_the_max_and_the_last_value_in_file_order() -> None:
    profile = rentals('aggregate = { rentals = "sum", temp = "mean" }', 'aggregate = { rentals = "max" }')
    checked = check(
        "station,dteday,hr,cnt,temp\nA,02/27/2026,1,4,9\nA,02/27/2026,2,6,8\nA,02/27/2026,3,5,7\n", profile
    )
    assert checked.good[["rentals", "temp"]].values.tolist() == [[6.0, 7.0]]  # temp: last, by default


def test_a_day_still_running_at_the_upload_is_incomplete_so_rejected() -> None:
    checked = check("station,dteday,hr,cnt,temp\nA,03/01/2026,5,1,\nA,03/02/2026,5,1,\n", rentals())
    assert checked.row_errors == [
        {
            "row": 2,
            "reasons": [
                "future period: dteday = '03/02/2026' its period ends after the upload's time "
                "(2026-03-02 07:00 in dc)"
            ],
        }
    ]


def test_an_hourly_profile_takes_a_date_plus_an_hour_or_a_time_of_day() -> None:
    profile = config.parse_profile(
        RENTALS.replace('frequency = "daily"', 'frequency = "hourly"')
        .replace("[features]\nlags = [1, 7]", "[horizon]\nwindows = [[6, 12]]\n\n[features]\nlags = [6, 24]")
        .replace('aggregate = { rentals = "sum", temp = "mean" }\n', "")
    )
    text = (
        "station,dteday,hr,cnt,temp\n"
        "A,02/27/2026,7,3,\nA,02/27/2026,08:00,4,\nA,02/27/2026,25,1,\nA,02/27/2026,9:30,1,\n"
    )
    checked = check(text, profile)
    assert checked.good["day"].tolist() == [
        pd.Timestamp("2026-02-27 07:00"),
        pd.Timestamp("2026-02-27 08:00"),
    ]
    assert checked.row_errors == [
        {
            "row": 3,
            "reasons": [
                "bad timestamp: hr = '25' is not an hour (0-23) or a time of day (08:15) "
                "(mappings.hourly.time_of_day)"
            ],
        },
        {
            "row": 4,
            "reasons": [
                "bad timestamp: dteday = '02/27/2026' is not the start of an hour (to add up rows into "
                "periods, set mappings.hourly.aggregate)"
            ],
        },
    ]


def test_a_date_in_another_form_names_the_setting_and_a_format_that_reads_it() -> None:
    profile = rentals('date_format = "%m/%d/%Y"\n', "")
    checked = check("station,dteday,hr,cnt,temp\nA,06/11/2012,1,4,\n", profile)
    assert checked.row_errors[0]["reasons"] == [
        "bad date: dteday = '06/11/2012' is not ISO 8601 (2024-05-01, 2024-05-01T08:15:00); for dates in "
        "another form set mappings.hourly.date_format (a strftime format, e.g. '%m/%d/%Y' or '%d/%m/%Y')"
    ]


def test_a_date_implausibly_far_back_is_a_rejected_row_with_a_setting_for_the_range() -> None:
    checked = check("station,dteday,hr,cnt,temp\nA,01/01/1900,1,4,\nA,02/27/2026,1,4,\n", rentals())
    assert checked.row_errors == [
        {
            "row": 1,
            "reasons": [
                "implausible date: dteday = '01/01/1900' is more than 3660 days before the upload's time "
                "(validation.max_days_back of dataset rentals)"
            ],
        }
    ]
    wider = rentals("[features]", "[validation]\nmax_days_back = 60000\n\n[features]")
    assert check("station,dteday,hr,cnt,temp\nA,01/01/1900,1,4,\n", wider).rows_accepted == 1


def retail() -> config.Profile:
    return config.parse_profile((resources.files("batchcast.core") / "profiles" / "retail.toml").read_text())


def test_a_sales_export_without_its_sales_column_is_not_taken_for_plans() -> None:
    text = "store_id,city,date,open,promo,temp,precipitation\n1,berlin,2026-02-20,1,0,3.5,0\n"
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[retail()])
    assert checked.file_errors == [
        "no mapping fits without dropping columns: mapping plans (future) of dataset retail would ignore "
        "'precipitation', 'temp', which mapping native (rows) reads, and for mapping native the file lacks "
        "'sales'; add the missing columns, or set the object metadata 'mapping' to plans if the file really "
        "is future data"
    ]
    assert checked.rows_accepted == 0


def test_plans_whose_dates_have_all_passed_are_refused_naming_the_history_mapping() -> None:
    text = "store_id,city,date,open,promo\n1,berlin,2026-02-20,1,0\n1,berlin,2026-02-21,1,1\n"
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[retail()], mapping="plans")
    assert checked.file_errors == [
        "no future values: every date in the file has already ended at the upload's time; the latest is "
        "2026-02-21 00:00; mapping plans of dataset retail takes values for coming periods. Is it history? "
        "Then it needs mapping native (the file lacks 'sales')"
    ]
    today = validate_upload(
        (text + "1,berlin,2026-03-02,0,0\n").encode(), "csv", logical_time=NOW, profiles=[retail()]
    )
    assert today.file_errors == [] and today.kind == "future" and today.rows_accepted == 3


def test_plans_implausibly_far_ahead_are_rejected_rows() -> None:
    text = "store_id,city,date,open\n1,berlin,2026-03-03,1\n1,berlin,2036-03-03,1\n"
    checked = validate_upload(text.encode(), "csv", logical_time=NOW, profiles=[retail()])
    assert checked.row_errors == [
        {
            "row": 2,
            "reasons": [
                "implausible date: date = '2036-03-03' is more than 400 days after the upload's time "
                "(validation.max_days_ahead of dataset retail)"
            ],
        }
    ]


def test_profile_mistakes_in_aggregate_and_time_of_day_are_all_reported() -> None:
    with pytest.raises(ConfigError) as raised:
        rentals('aggregate = { rentals = "sum", temp = "mean" }', 'aggregate = { rental = "sum" }')
    assert (
        "mapping 'hourly' (kind 'rows') aggregates 'rental', which it does not read "
        "(it reads rentals, temp); did you mean 'rentals'?"
    ) in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        rentals('time_of_day = "hr"', 'time_of_day = "cnt"')
    assert "reads column 'cnt' as time_of_day and as a field" in str(raised.value)


def test_a_semicolon_separated_file_is_read_by_its_delimiter() -> None:
    text = 'station;dteday;hr;cnt;temp\nA;02/27/2026;1;4;"2.5"\nA;02/27/2026;2;6\nB;02/27/2026;2;1;\n'
    checked = check(text, rentals())
    assert checked.row_errors == [
        {"row": 2, "reasons": ["malformed row: 4 fields where the header has 5 (line 3)"]}
    ]
    assert checked.good[["station_id", "rentals"]].values.tolist() == [["A", 4.0], ["B", 1.0]]
