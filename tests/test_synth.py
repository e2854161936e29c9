"""The synthetic data generator: determinism, formats the profiles recognise, and real structure."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import holidays
import numpy as np
import pandas as pd
import pytest

from batchcast.core.config import Profile, load_profile
from batchcast.core.layout import SAFE_ID
from batchcast.tools import synth

END = date(2024, 7, 31)  # a summer window: busy bikes; a year back covers Christmas and Easter


@pytest.fixture(scope="module")
def stores(retail: Profile) -> pd.DataFrame:
    """Two years of 40 stores, with per-row helpers: weekday, holiday flag, relative sales."""
    frame = synth.generate(retail, 40, 730, seed=7, end=END)
    dates = pd.to_datetime(frame["date"])
    frame["weekday"] = dates.dt.day_of_week
    frame["holiday"] = _holiday_flags(retail, frame["city"], dates)
    open_mean = frame[frame["open"] == 1].groupby("store_id")["sales"].mean()
    frame["relative"] = frame["sales"] / frame["store_id"].map(open_mean)
    return frame


@pytest.fixture(scope="module")
def trips(bikeshare: Profile) -> pd.DataFrame:
    return synth.generate(bikeshare, 24, 28, seed=7, end=END)


def _holiday_flags(profile: Profile, cities: pd.Series, dates: pd.Series) -> np.ndarray:
    flags = np.zeros(len(dates), dtype=bool)
    years = range(dates.min().year, dates.max().year + 1)
    for name, city in profile.cities.items():
        days = holidays.country_holidays(city.country, subdiv=city.subdivision, years=years)
        rows = (cities == name).to_numpy()
        flags[rows] = dates[rows].dt.date.isin(set(days)).to_numpy()
    return flags


# -- determinism and formats ---------------------------------------------------------------------

ALL_FORMATS = [("retail", fmt) for fmt in synth.FORMATS["retail"]] + [
    ("bikeshare", fmt) for fmt in synth.FORMATS["bikeshare"]
]


@pytest.mark.parametrize(("name", "fmt"), ALL_FORMATS)
def test_same_arguments_give_identical_csv_bytes(name: str, fmt: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    first = synth.generate(profile, 8, 10, seed=3, end=END, fmt=fmt)
    second = synth.generate(profile, 8, 10, seed=3, end=END, fmt=fmt)
    pd.testing.assert_frame_equal(first, second)
    synth.write_csv(first, tmp_path / "a.csv")
    synth.write_csv(second, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize(("name", "fmt"), ALL_FORMATS)
def test_a_different_seed_gives_different_data(name: str, fmt: str) -> None:
    profile = load_profile(name)
    first = synth.generate(profile, 8, 10, seed=3, end=END, fmt=fmt)
    other = synth.generate(profile, 8, 10, seed=4, end=END, fmt=fmt)
    assert not first.equals(other)


EXPECTED = [
    ("retail", "native", synth.RETAIL_COLUMNS, "native"),
    ("retail", "rossmann", synth.ROSSMANN_COLUMNS, "rossmann"),
    ("bikeshare", "native", synth.TRIP_COLUMNS, "native"),
    ("bikeshare", "citibike", synth.CITIBIKE_COLUMNS, "citibike"),
    ("bikeshare", "counts", synth.COUNT_COLUMNS, "counts"),
]


@pytest.mark.parametrize(("name", "fmt", "columns", "mapping"), EXPECTED)
def test_each_format_has_its_columns_and_the_profile_recognises_the_header(
    name: str, fmt: str, columns: tuple[str, ...], mapping: str, tmp_path: Path
) -> None:
    profile = load_profile(name)
    frame = synth.generate(profile, 6, 5, seed=1, end=END, fmt=fmt)
    assert tuple(frame.columns) == columns
    assert len(frame) > 0
    synth.write_csv(frame, tmp_path / "upload.csv")
    header = (tmp_path / "upload.csv").read_text().splitlines()[0].split(",")
    found = profile.mapping_for(header)
    assert found is not None and found[0] == mapping


def test_the_exact_column_names_the_brief_fixes() -> None:
    assert synth.RETAIL_COLUMNS == (
        "store_id", "city", "date", "sales", "open", "promo", "temp", "precipitation",
    )  # fmt: skip
    assert ",".join(synth.ROSSMANN_COLUMNS) == (
        "Store,DayOfWeek,Date,Sales,Customers,Open,Promo,StateHoliday,SchoolHoliday"
    )
    assert ",".join(synth.CITIBIKE_COLUMNS) == (
        "ride_id,rideable_type,started_at,ended_at,start_station_name,start_station_id,"
        "end_station_name,end_station_id,start_lat,start_lng,end_lat,end_lng,member_casual"
    )


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("retail", "citibike"), ("retail", "counts"), ("bikeshare", "rossmann"), ("retail", "x")],
)
def test_an_unsupported_format_raises_value_error(name: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="not supported"):
        synth.generate(load_profile(name), 3, 3, end=END, fmt=fmt)


def test_non_positive_sizes_raise_value_error(retail: Profile) -> None:
    with pytest.raises(ValueError, match=">= 1"):
        synth.generate(retail, 0, 3, end=END)


def test_end_is_the_last_day_and_days_counts_days(retail: Profile) -> None:
    frame = synth.generate(retail, 50, 10, seed=2, end=END)
    assert frame["date"].max() == "2024-07-31"
    assert frame["date"].nunique() == 10


def test_stores_do_not_change_with_the_number_of_days(retail: Profile) -> None:
    short = synth.generate(retail, 12, 5, seed=2, end=END)
    long = synth.generate(retail, 12, 50, seed=2, end=END)
    in_short = dict(zip(short["store_id"], short["city"], strict=True))
    in_long = dict(zip(long["store_id"], long["city"], strict=True))
    assert len(in_short) >= 10  # a store may miss all five days (a gap in its reports)
    assert in_short.items() <= in_long.items()


# -- retail structure -------------------------------------------------------------------------------


def test_store_ids_are_numeric_strings_spread_over_every_city(stores: pd.DataFrame, retail: Profile) -> None:
    assert sorted(stores["store_id"].unique(), key=int) == [str(n) for n in range(1, 41)]
    assert stores.groupby("store_id")["city"].nunique().max() == 1
    per_city = stores.groupby("city")["store_id"].nunique()
    assert set(per_city.index) == set(retail.cities)
    assert per_city.nunique() > 1  # unevenly


def test_values_are_rounded_and_flags_binary(stores: pd.DataFrame) -> None:
    assert (stores["sales"] == stores["sales"].round(2)).all()
    assert (stores["temp"] == stores["temp"].round(1)).all()
    assert set(stores["open"]) == {0, 1} and set(stores["promo"]) <= {0, 1}
    assert (stores.loc[stores["open"] == 0, "sales"] == 0).all()
    assert stores["date"].str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()


def test_german_stores_close_on_sundays_and_paris_opens_quieter(stores: pd.DataFrame) -> None:
    sundays = stores[stores["weekday"] == 6]
    german = sundays[sundays["city"] != "paris"]
    assert (german["open"] == 0).all() and (german["sales"] == 0).all()
    paris = stores[(stores["city"] == "paris") & ~stores["holiday"]]
    by_day = paris.groupby("weekday")["relative"].mean()
    assert (paris.loc[paris["weekday"] == 6, "open"] == 1).all()
    assert by_day[6] < 0.7 * by_day[:6].mean()


def test_saturday_is_the_busiest_day(stores: pd.DataFrame) -> None:
    open_days = stores[(stores["open"] == 1) & ~stores["holiday"]]
    by_day = open_days.groupby("weekday")["relative"].mean()
    assert by_day.idxmax() == 5


def test_holidays_lower_sales_against_the_same_weekday(stores: pd.DataFrame) -> None:
    working = stores[stores["weekday"] < 6]
    holiday = working[working["holiday"]].groupby("weekday")["relative"].mean()
    ordinary = working[~working["holiday"]].groupby("weekday")["relative"].mean()
    assert len(holiday) >= 3
    assert (holiday < 0.7 * ordinary[holiday.index]).all()


def test_december_is_the_peak_month(stores: pd.DataFrame) -> None:
    open_days = stores[stores["open"] == 1]
    by_month = open_days.groupby(open_days["date"].str[5:7])["relative"].mean()
    assert by_month.idxmax() == "12"
    assert by_month["12"] > 1.1 * by_month[["07", "08"]].mean()


def test_rain_lowers_sales(stores: pd.DataFrame) -> None:
    open_days = stores[(stores["open"] == 1) & ~stores["holiday"]]
    # Per store, so a big store's rainy days do not stand in for the rain effect.
    wet = open_days[open_days["precipitation"] >= 3].groupby("store_id")["relative"].mean()
    dry = open_days[open_days["precipitation"] == 0].groupby("store_id")["relative"].mean()
    ratio = (wet / dry).dropna()
    assert ratio.median() < 0.92
    assert (ratio < 1).mean() > 0.8


def test_promo_days_sell_more(stores: pd.DataFrame) -> None:
    open_days = stores[stores["open"] == 1]
    assert 0.25 < open_days["promo"].mean() < 0.42
    lift = open_days.groupby("promo")["relative"].mean()
    assert 1.1 < lift[1] / lift[0] < 1.35


def test_store_sizes_span_orders_of_magnitude(stores: pd.DataFrame) -> None:
    means = stores[stores["open"] == 1].groupby("store_id")["sales"].mean()
    assert means.max() / means.median() > 30
    assert means.median() / means.min() > 3


def test_some_store_days_are_missing(stores: pd.DataFrame) -> None:
    expected = 40 * 730
    missing = 1 - len(stores) / expected
    assert 0.003 < missing < 0.05
    assert (stores.groupby("store_id").size() < 730).sum() > 10
    assert not stores.duplicated(["store_id", "date"]).any()


def test_rossmann_rows_are_consistent(retail: Profile) -> None:
    frame = synth.generate(retail, 10, 120, seed=5, end=END, fmt="rossmann")
    dates = pd.to_datetime(frame["Date"])
    assert (frame["DayOfWeek"] == dates.dt.day_of_week + 1).all()
    assert set(frame["Store"]) == set(range(1, 11))
    assert set(frame["StateHoliday"]) <= {"0", "a"} and "a" in set(frame["StateHoliday"])
    assert set(frame["SchoolHoliday"]) == {0, 1}
    open_days = frame[frame["Open"] == 1]
    basket = open_days["Sales"] / open_days["Customers"]
    assert 7 < basket.median() < 11
    assert (frame.loc[frame["Open"] == 0, ["Sales", "Customers"]] == 0).all().all()
    assert frame["Date"].is_monotonic_decreasing


# -- bike-share structure -----------------------------------------------------------------------------


def _net_change(trips: pd.DataFrame) -> pd.DataFrame:
    """Arrivals minus departures per station and local hour, zero-filled over every open hour."""
    start = pd.to_datetime(trips["started_at"]).dt.floor("h")
    end = pd.to_datetime(trips["ended_at"]).dt.floor("h")
    departures = pd.crosstab(trips["start_station_id"], start)
    arrivals = pd.crosstab(trips["end_station_id"], end)
    net = arrivals.sub(departures, fill_value=0).fillna(0).stack().rename("net").reset_index()
    net.columns = ["station_id", "hour", "net"]
    return net


def test_no_trip_starts_or_ends_in_closed_hours(trips: pd.DataFrame, bikeshare: Profile) -> None:
    closed_from, closed_to = bikeshare.horizon.closed_hours
    for column in ("started_at", "ended_at"):
        hours = pd.to_datetime(trips[column]).dt.hour
        assert not ((hours >= closed_from) & (hours < closed_to)).any()
    starts, ends = pd.to_datetime(trips["started_at"]), pd.to_datetime(trips["ended_at"])
    assert (starts.dt.date == ends.dt.date).all()  # nothing crosses midnight


def test_trips_are_plausible(trips: pd.DataFrame) -> None:
    assert trips["ride_id"].is_unique
    minutes = (
        pd.to_datetime(trips["ended_at"]) - pd.to_datetime(trips["started_at"])
    ).dt.total_seconds() / 60
    assert minutes.between(4, 45).all()
    assert (trips["start_station_id"].str[:3] == trips["end_station_id"].str[:3]).all()
    assert trips["started_at"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}").all()
    per_station_day = len(trips) / (24 * 28)
    assert 20 <= per_station_day <= 150


def test_stations_cover_cities_and_ids_are_safe(trips: pd.DataFrame, bikeshare: Profile) -> None:
    table = synth.entity_table(bikeshare, 24, seed=7)
    assert set(table["city"]) == set(bikeshare.cities)
    assert set(table["type"]) == set(synth.STATION_TYPES)
    assert table["station_id"].str.fullmatch(r"[A-Z]{3}\d{3}").all()
    ids = pd.concat([trips["start_station_id"], trips["end_station_id"], trips["ride_id"]])
    assert ids.map(lambda value: bool(SAFE_ID.fullmatch(value))).all()
    assert set(ids.iloc[: 2 * len(trips)]) <= set(table["station_id"])


def test_retail_store_ids_are_safe(stores: pd.DataFrame) -> None:
    assert stores["store_id"].map(lambda value: bool(SAFE_ID.fullmatch(value))).all()


def test_commuter_flows_shape_the_net_change(trips: pd.DataFrame, bikeshare: Profile) -> None:
    table = synth.entity_table(bikeshare, 24, seed=7).set_index("station_id")
    net = _net_change(trips)
    net["type"] = net["station_id"].map(table["type"])
    net["weekday"] = net["hour"].dt.day_of_week < 5
    morning = net[net["weekday"] & net["hour"].dt.hour.between(7, 9)].groupby("type")["net"].mean()
    evening = net[net["weekday"] & net["hour"].dt.hour.between(16, 19)].groupby("type")["net"].mean()
    assert morning["residential"] < 0 < evening["residential"]
    assert morning["business"] > 0 > evening["business"]


def test_weekday_mornings_run_from_homes_to_offices_and_evenings_back(
    trips: pd.DataFrame, bikeshare: Profile
) -> None:
    types = synth.entity_table(bikeshare, 24, seed=7).set_index("station_id")["type"]
    starts = pd.to_datetime(trips["started_at"])
    weekday = (starts.dt.day_of_week < 5).to_numpy()
    origin, destination = trips["start_station_id"].map(types), trips["end_station_id"].map(types)
    morning = weekday & starts.dt.hour.between(7, 8).to_numpy() & (origin == "residential").to_numpy()
    evening = weekday & starts.dt.hour.between(16, 18).to_numpy() & (origin == "business").to_numpy()
    assert (destination[morning] == "business").mean() > 0.5
    assert (destination[evening] == "residential").mean() > 0.5


def test_public_holidays_ride_like_weekends(trips: pd.DataFrame, bikeshare: Profile) -> None:
    starts = pd.to_datetime(trips["started_at"])
    flags = _holiday_flags(bikeshare, trips["city"], starts)
    weekday = (starts.dt.day_of_week < 5).to_numpy()
    morning = starts.dt.hour.between(7, 8).to_numpy()
    assert (weekday & flags).sum() > 100  # Independence Day lies in the window
    assert morning[weekday & flags].mean() < 0.5 * morning[weekday & ~flags].mean()


def test_weekends_ride_later_than_weekdays(trips: pd.DataFrame) -> None:
    starts = pd.to_datetime(trips["started_at"])
    weekend = starts.dt.day_of_week >= 5
    morning = starts.dt.hour.between(7, 8)
    assert morning[~weekend].mean() > 2 * morning[weekend].mean()


def test_rain_and_cold_mean_fewer_trips(bikeshare: Profile) -> None:
    summer = synth.generate(bikeshare, 10, 28, seed=2, end=date(2024, 7, 31))
    winter = synth.generate(bikeshare, 10, 28, seed=2, end=date(2024, 1, 31))
    assert len(winter) < 0.7 * len(summer)


def test_counts_are_the_trips_aggregated(trips: pd.DataFrame, bikeshare: Profile) -> None:
    counts = synth.generate(bikeshare, 24, 28, seed=7, end=END, fmt="counts")
    assert counts["departures"].sum() == counts["arrivals"].sum() == len(trips)
    assert ((counts["departures"] + counts["arrivals"]) > 0).all()
    assert counts["hour"].str.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:00:00").all()
    start = pd.to_datetime(trips["started_at"]).dt.strftime("%Y-%m-%d %H:00:00")
    expected = trips.groupby([trips["start_station_id"], start]).size()
    got = counts[counts["departures"] > 0].set_index(["station_id", "hour"])["departures"]
    assert expected.sort_index().tolist() == got.sort_index().tolist()


def test_citibike_exports_one_city(bikeshare: Profile) -> None:
    frame = synth.generate(bikeshare, 12, 7, seed=1, end=END, fmt="citibike")
    first = next(iter(bikeshare.cities))
    assert bikeshare.mappings["citibike"].constants["city"] == first
    assert frame["start_station_id"].str.startswith(first[:3].upper()).all()
    assert frame["end_station_id"].str.startswith(first[:3].upper()).all()
    assert set(frame["member_casual"]) == {"member", "casual"}
    assert set(frame["rideable_type"]) == {"classic_bike", "electric_bike"}
    assert frame[["start_lat", "start_lng", "end_lat", "end_lng"]].notna().all().all()


# -- day by day ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["retail", "bikeshare"])
def test_split_days_gives_a_history_and_one_file_per_recent_day(name: str) -> None:
    frame = synth.generate(load_profile(name), 6, 40, seed=3, end=END)
    history, recent = synth.split_days(frame, 5)
    assert [day for day, _ in recent] == [date(2024, 7, 27 + i) for i in range(5)]
    column = "date" if name == "retail" else "started_at"
    assert history[column].str[:10].max() == "2024-07-26"
    for day, rows in recent:
        assert set(rows[column].str[:10]) == {day.isoformat()}
    # Nothing lost or doubled: the pieces put back together are the frame.
    assert pd.concat([history, *(rows for _, rows in recent)]).sort_index().equals(frame)


def test_split_days_refuses_other_formats_and_sizes(retail: Profile) -> None:
    frame = synth.generate(retail, 4, 10, seed=3, end=END)
    with pytest.raises(ValueError, match="native formats"):
        synth.split_days(synth.generate(retail, 4, 10, seed=3, end=END, fmt="rossmann"), 2)
    with pytest.raises(ValueError, match="0 < days < the frame's 10 days, not 10"):
        synth.split_days(frame, 10)
