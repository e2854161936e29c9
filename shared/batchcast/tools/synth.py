"""Realistic synthetic uploads: retail store-days and bike-share trips, in the formats users send.

What ``batchcast generate`` writes. The data carries the structure the pipeline has to learn, so a
demo or a test can check that forecasts beat a naive baseline for the right reasons:

* retail (a ``daily`` profile): store sizes spanning orders of magnitude plus one huge store,
  weekly and yearly seasonality, Sunday and public-holiday closures by country, a pre-holiday
  uplift, weather (rain lowers sales), promo blocks, a slow trend, noise, outliers, missing days;
* bike-share (an ``hourly`` profile): trips between residential, business and leisure stations
  with commuter flows on working days, leisure on weekends and holidays, weather and seasonality,
  and no trip in the service's closed hours.

Which workload is generated follows from what the profile declares (its frequency), so a user's
own profile gets the generator of its kind. Every random draw comes from a numpy ``Generator``
seeded from ``seed`` and a fixed stream number, so the same arguments give the same frame (and the
same CSV bytes), and the stores or stations do not change when only ``days`` does.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import holidays
import numpy as np
import pandas as pd
from dateutil.easter import easter

from batchcast.core.config import City, Profile

RETAIL_FORMATS = ("native", "rossmann")
TRIP_FORMATS = ("native", "citibike", "counts")
_FORMATS_BY_FREQUENCY = {"daily": RETAIL_FORMATS, "hourly": TRIP_FORMATS}

# The built-in profiles' formats, for the CLI's help; other profiles go by their frequency.
FORMATS: dict[str, tuple[str, ...]] = {"retail": RETAIL_FORMATS, "bikeshare": TRIP_FORMATS}

RETAIL_COLUMNS = ("store_id", "city", "date", "sales", "open", "promo", "temp", "precipitation")


def _split(line: str) -> tuple[str, ...]:
    """A comma-separated line as a tuple: column lists read like the headers they imitate."""
    return tuple(line.split(","))


ROSSMANN_COLUMNS = _split("Store,DayOfWeek,Date,Sales,Customers,Open,Promo,StateHoliday,SchoolHoliday")
TRIP_COLUMNS = ("ride_id", "started_at", "ended_at", "start_station_id", "end_station_id", "city")
CITIBIKE_COLUMNS = _split(
    "ride_id,rideable_type,started_at,ended_at,start_station_name,start_station_id,end_station_name,"
    "end_station_id,start_lat,start_lng,end_lat,end_lng,member_casual"
)
COUNT_COLUMNS = ("station_id", "city", "hour", "departures", "arrivals")
STATION_TYPES = ("residential", "business", "leisure")

# Independent random streams: stores/stations must not change when the number of days does.
_ENTITIES, _WEATHER, _DEMAND, _TRIPS, _MISSING, _EXTRAS = range(6)
_DAY_SECONDS = 86_400


def formats_for(profile: Profile) -> tuple[str, ...]:
    """The formats :func:`generate` can write for ``profile`` (decided by its frequency)."""
    return _FORMATS_BY_FREQUENCY[profile.frequency]


def generate(
    profile: Profile, entities: int, days: int, *, seed: int = 0, end: date, fmt: str = "native"
) -> pd.DataFrame:
    """Generate ``days`` days up to ``end`` (inclusive) for ``entities`` stores or stations.

    A ``daily`` profile gets store-day rows (``native`` or Kaggle ``rossmann`` columns); an
    ``hourly`` one gets trips (``native`` or ``citibike``) or station-hour ``counts``. Raise
    ValueError for a format the profile's kind does not support or for non-positive sizes.
    """
    _check_arguments(profile, entities, days, seed, fmt)
    dates = pd.date_range(end=pd.Timestamp(_as_date(end)), periods=days, freq="D")
    if profile.frequency == "daily":
        return _retail(profile, entities, dates, seed, fmt)
    return _bikeshare(profile, entities, dates, seed, fmt)


def entity_table(profile: Profile, entities: int, *, seed: int = 0, fmt: str = "native") -> pd.DataFrame:
    """The stores or stations behind :func:`generate` with the same arguments (the ground truth).

    Retail: ``store_id, city, size`` (expected sales of an ordinary open day). Bike-share:
    ``station_id, city, type, popularity, name, lat, lng``.
    """
    _check_arguments(profile, entities, 1, seed, fmt)
    if profile.frequency == "daily":
        return _stores(profile, entities, seed, fmt)
    return _stations(profile, entities, seed, fmt)


def split_days(frame: pd.DataFrame, days: int) -> tuple[pd.DataFrame, list[tuple[date, pd.DataFrame]]]:
    """A native frame as its owner would send it day by day: one history file, then one file for
    each of its last ``days`` days (store-days by ``date``, trips by ``started_at``; no generated
    trip crosses midnight, the service being closed then). Raise ValueError for other formats."""
    column = next((c for c in ("date", "started_at") if c in frame.columns), None)
    if column is None:
        raise ValueError("split_days takes the native formats (a date or a started_at column)")
    day = frame[column].str[:10]
    labels = sorted(day.unique())
    if not 0 < days < len(labels):
        raise ValueError(f"split_days needs 0 < days < the frame's {len(labels)} days, not {days}")
    history = frame[day < labels[-days]]
    recent = [(date.fromisoformat(label), frame[day == label]) for label in labels[-days:]]
    return history, recent


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as UTF-8 CSV with ``\\n`` line ends (byte-identical for identical frames)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(csv_bytes(frame))


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as the UTF-8 CSV bytes :func:`write_csv` writes."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def _check_arguments(profile: Profile, entities: int, days: int, seed: int, fmt: str) -> None:
    supported = formats_for(profile)
    if fmt not in supported:
        raise ValueError(
            f"format {fmt!r} is not supported for profile {profile.name!r} "
            f"({profile.frequency} data); choose one of: {', '.join(supported)}"
        )
    if entities < 1 or days < 1:
        raise ValueError(f"entities and days must be >= 1 (got {entities} and {days})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (got {seed})")


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


# -- shared: where entities live, calendars, weather ----------------------------------------------


def _spread(rng: np.random.Generator, total: int, groups: int, minimum: int) -> np.ndarray:
    """Split ``total`` over ``groups`` unevenly, each getting ``minimum`` when there are enough."""
    floor = min(minimum, total // groups)
    weights = rng.dirichlet(np.full(groups, 4.0))  # uneven, but no city is left tiny
    return floor + rng.multinomial(total - floor * groups, weights)


def _holidays(city: City, dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean arrays over ``dates``: public holiday, the day before one, and a shops-shut holiday."""
    years = range(dates[0].year, dates[-1].year + 2)  # +1: the day after the range may be one
    try:
        calendar = holidays.country_holidays(city.country, subdiv=city.subdivision, years=years)
    except NotImplementedError as error:
        raise ValueError(f"no public holidays known for {city.country}/{city.subdivision}") from error
    days = pd.DatetimeIndex(sorted(calendar))
    holiday = dates.isin(days)
    before = (dates + pd.Timedelta(days=1)).isin(days)
    # New Year, Labour Day and Christmas shut shops even where other holidays do not.
    strict = holiday & np.isin(dates.month * 100 + dates.day, (101, 501, 1225))
    return holiday, before, strict


def _holiday_matrix(profile: Profile, cities: list[str], dates: pd.DatetimeIndex) -> np.ndarray:
    """(3, days, cities): holiday, pre-holiday and strict-holiday flags per city."""
    flags = [_holidays(profile.cities[name], dates) for name in cities]
    return np.stack([np.stack(kind, axis=1) for kind in zip(*flags, strict=True)])


def _weather(seed: int, dates: pd.DatetimeIndex, cities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Daily mean temperature (°C) and precipitation (mm) per (day, city), rounded to 0.1.

    Temperature: a seasonal cycle plus AR(1) anomalies (weather lasts a few days). Precipitation:
    a wet/dry Markov chain (spells of rain, many dry days) with gamma-distributed amounts.
    """
    rng = _rng(seed, _WEATHER)
    n_days, n_cities = len(dates), len(cities)
    mean = rng.normal(10.5, 1.0, n_cities)
    amplitude = rng.uniform(8.0, 10.5, n_cities)
    cycle = np.cos(2 * np.pi * (dates.day_of_year.to_numpy()[:, None] - 200) / 365.25)
    shocks = rng.normal(0.0, 2.2, (n_days, n_cities))
    uniforms = rng.random((n_days, n_cities))
    amounts = rng.gamma(0.75, 4.5, (n_days, n_cities))
    anomaly = np.empty((n_days, n_cities))
    wet = np.empty((n_days, n_cities), dtype=bool)
    anomaly[0], wet[0] = shocks[0] * 1.5, uniforms[0] < 0.43  # start in the stationary state
    for day in range(1, n_days):  # a recursion over days; each step is vectorised over cities
        anomaly[day] = 0.75 * anomaly[day - 1] + shocks[day]
        wet[day] = uniforms[day] < np.where(wet[day - 1], 0.6, 0.3)
    temp = np.round(mean + amplitude * cycle + anomaly, 1)
    precipitation = np.round(np.where(wet, amounts, 0.0), 1)
    return temp, precipitation


def _date_labels(dates: pd.DatetimeIndex) -> np.ndarray:
    return dates.strftime("%Y-%m-%d").to_numpy(dtype=object)


# -- retail ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ShopRules:
    """Opening rules of a country: sales factor on Sundays and on holidays (0: closed)."""

    sunday: float
    holiday: float


# Germany's shop-closing law shuts shops on Sundays and holidays; French shops open on Sunday
# mornings and on most holidays, with fewer customers. Other countries: reduced, not closed.
_SHOP_RULES = {"DE": _ShopRules(0.0, 0.0), "FR": _ShopRules(0.4, 0.45)}
_DEFAULT_RULES = _ShopRules(0.6, 0.35)
_WEEKDAYS = np.array([1.02, 0.94, 0.92, 0.97, 1.10, 1.30])  # Mon..Sat; Saturday is the big day
_MEDIAN_SALES = 5_000.0  # a median store's ordinary day, in euros (Rossmann-like)


def _stores(profile: Profile, entities: int, seed: int, fmt: str) -> pd.DataFrame:
    """Stores ``1..N`` spread unevenly over the cities (only the first for ``rossmann``, whose mapping
    puts every row in one city); lognormal sizes plus one very large store."""
    rng = _rng(seed, _ENTITIES)
    cities = list(profile.cities)[:1] if fmt == "rossmann" else list(profile.cities)
    counts = _spread(rng, entities, len(cities), minimum=1)
    city = rng.permutation(np.repeat(np.arange(len(cities)), counts))  # ids interleave cities
    size = _MEDIAN_SALES * rng.lognormal(0.0, 1.0, entities)
    flagship = rng.integers(entities)
    size[flagship] = np.median(size) * rng.uniform(50, 100)
    return pd.DataFrame(
        {
            "store_id": [str(number) for number in range(1, entities + 1)],
            "city": np.array(cities, dtype=object)[city],
            "size": np.round(size, 2),
        }
    )


@dataclass(frozen=True)
class _Panel:
    """Retail store-days as (day, store) arrays, before missing days are dropped."""

    dates: pd.DatetimeIndex
    stores: pd.DataFrame
    city: np.ndarray  # (stores,) city index
    sales: np.ndarray
    open: np.ndarray
    promo: np.ndarray
    holiday: np.ndarray
    temp: np.ndarray
    precipitation: np.ndarray
    observed: np.ndarray


def _retail(profile: Profile, entities: int, dates: pd.DatetimeIndex, seed: int, fmt: str) -> pd.DataFrame:
    panel = _retail_panel(profile, entities, dates, seed, fmt)
    return _rossmann_frame(panel, seed) if fmt == "rossmann" else _retail_frame(panel)


def _retail_panel(profile: Profile, entities: int, dates: pd.DatetimeIndex, seed: int, fmt: str) -> _Panel:
    cities = list(profile.cities)
    stores = _stores(profile, entities, seed, fmt)
    city = pd.Index(cities).get_indexer(stores["city"])
    holiday, pre_holiday, strict = (flags[:, city] for flags in _holiday_matrix(profile, cities, dates))
    temp, precipitation = (values[:, city] for values in _weather(seed, dates, cities))
    rng = _rng(seed, _DEMAND)
    rules = [_SHOP_RULES.get(profile.cities[name].country, _DEFAULT_RULES) for name in cities]
    weekly = _weekly_factors(rng, rules, city, dates)
    on_holiday = np.array([rule.holiday for rule in rules])[city] * np.where(strict, 0.0, 1.0)
    day_factor = np.where(holiday, on_holiday, weekly * np.where(pre_holiday, 1.15, 1.0))
    is_open = day_factor > 0
    promo = _promo_blocks(rng, len(dates), entities) & is_open
    lift = rng.uniform(0.15, 0.25, entities)
    sales = (
        stores["size"].to_numpy()
        * day_factor
        * _yearly(dates)[:, None]
        * _trend(rng, dates, entities)
        * _weather_effect(temp, precipitation)
        * np.where(promo, 1.0 + lift, 1.0)
        * rng.lognormal(-0.005, 0.10, day_factor.shape)
    )
    sales = np.round(np.where(is_open, _outliers(rng, sales), 0.0), 2)
    observed = _observed(_rng(seed, _MISSING), len(dates), entities)
    return _Panel(dates, stores, city, sales, is_open, promo, holiday, temp, precipitation, observed)


def _weekly_factors(
    rng: np.random.Generator, rules: list[_ShopRules], city: np.ndarray, dates: pd.DatetimeIndex
) -> np.ndarray:
    """(days, stores) day-of-week factors: one shape, a little per-store character, Sundays by country."""
    sunday = np.array([rule.sunday for rule in rules])[city]
    per_store = np.column_stack([_WEEKDAYS * rng.lognormal(0.0, 0.04, (len(city), 6)), sunday])
    return per_store[:, dates.day_of_week].T


def _yearly(dates: pd.DatetimeIndex) -> np.ndarray:
    """Christmas shopping builds up through December and stops at once; a summer and January dip."""
    doy = dates.day_of_year.to_numpy().astype(float)
    december = 0.30 * np.exp(-0.5 * ((doy - 357) / np.where(doy <= 357, 14.0, 4.0)) ** 2)
    summer = -0.10 * np.exp(-0.5 * ((doy - 215) / 25.0) ** 2)
    january = -0.08 * np.exp(-0.5 * ((doy - 15) / 12.0) ** 2)
    return 1.0 + december + summer + january


def _trend(rng: np.random.Generator, dates: pd.DatetimeIndex, stores: int) -> np.ndarray:
    """Slow per-store growth (or decline), a few percent a year."""
    years = np.arange(len(dates))[:, None] / 365.25
    return np.exp(rng.normal(0.02, 0.04, stores) * years)


def _weather_effect(temp: np.ndarray, precipitation: np.ndarray) -> np.ndarray:
    """Rain keeps shoppers home (-7 % at 2 mm, about -20 % in a downpour); heat a little too."""
    rain = 1.0 - 0.22 * (1.0 - np.exp(-precipitation / 3.0))
    heat = 1.0 - 0.01 * np.clip(temp - 26.0, 0.0, None)
    return rain * heat


def _promo_blocks(rng: np.random.Generator, days: int, stores: int) -> np.ndarray:
    """(days, stores) promo flags: week-long blocks, each one a promo week with probability 1/3."""
    offset = rng.integers(0, 7, stores)
    weeks = rng.random((days // 7 + 2, stores)) < 1 / 3
    block = (np.arange(days)[:, None] + offset) // 7
    return np.take_along_axis(weeks, block, axis=0)


def _outliers(rng: np.random.Generator, sales: np.ndarray) -> np.ndarray:
    """About 0.05 % of store-days are 3-6 times too high (a bulk order, a data-entry slip)."""
    hit = rng.random(sales.shape) < 0.0005
    return np.where(hit, sales * rng.uniform(3.0, 6.0, sales.shape), sales)


def _observed(rng: np.random.Generator, days: int, stores: int) -> np.ndarray:
    """Which store-days are reported: ~1 % dropped at random, and a few stores miss a stretch."""
    observed = rng.random((days, stores)) >= 0.01
    gaps = np.flatnonzero(rng.random(stores) < 0.03)
    starts = rng.integers(0, days, len(gaps))
    lengths = rng.integers(7, 22, len(gaps))
    for store, start, length in zip(gaps, starts, lengths, strict=True):  # a handful of stores
        observed[start : start + length, store] = False
    return observed


def _retail_frame(panel: _Panel) -> pd.DataFrame:
    """The native columns, one row per reported store-day, ordered by date and store."""
    days, stores = np.nonzero(panel.observed)
    return pd.DataFrame(
        {
            "store_id": panel.stores["store_id"].to_numpy(dtype=object)[stores],
            "city": panel.stores["city"].to_numpy(dtype=object)[stores],
            "date": _date_labels(panel.dates)[days],
            "sales": panel.sales[days, stores],
            "open": panel.open[days, stores].astype(np.int8),
            "promo": panel.promo[days, stores].astype(np.int8),
            "temp": panel.temp[days, stores],
            "precipitation": panel.precipitation[days, stores],
        },
        columns=list(RETAIL_COLUMNS),
    )


def _rossmann_frame(panel: _Panel, seed: int) -> pd.DataFrame:
    """Kaggle Rossmann ``train.csv``: newest date first, then store; integer sales and customers."""
    rng = _rng(seed, _EXTRAS)
    n_days, n_stores = panel.sales.shape
    basket = rng.uniform(8.0, 10.0, n_stores)  # euros per customer, about Sales / 9
    customers = np.round(panel.sales / basket * rng.lognormal(0.0, 0.05, panel.sales.shape))
    school = _school_holidays(rng, panel.dates, int(panel.city.max()) + 1)[:, panel.city] | panel.holiday
    days, stores = np.nonzero(panel.observed[::-1])
    days = n_days - 1 - days
    return pd.DataFrame(
        {
            "Store": stores + 1,
            "DayOfWeek": panel.dates.day_of_week.to_numpy()[days] + 1,
            "Date": _date_labels(panel.dates)[days],
            "Sales": np.round(panel.sales[days, stores]).astype(np.int64),
            "Customers": customers[days, stores].astype(np.int64),
            "Open": panel.open[days, stores].astype(np.int8),
            "Promo": panel.promo[days, stores].astype(np.int8),
            "StateHoliday": np.where(panel.holiday[days, stores], "a", "0").astype(object),
            "SchoolHoliday": school[days, stores].astype(np.int8),
        },
        columns=list(ROSSMANN_COLUMNS),
    )


def _school_holidays(rng: np.random.Generator, dates: pd.DatetimeIndex, cities: int) -> np.ndarray:
    """(days, cities) approximate school holidays: Christmas, Easter, summer and autumn breaks.

    Regions stagger their summer and autumn breaks by whole weeks, as German states do.
    """
    doy = dates.day_of_year.to_numpy()[:, None]
    shift = rng.integers(0, 5, cities) * 7
    years = dates.year.to_numpy()
    by_year = {year: pd.Timestamp(easter(year)).day_of_year for year in np.unique(years).tolist()}
    easter_doy = np.vectorize(by_year.__getitem__)(years)[:, None]
    christmas = (doy >= 356) | (doy <= 6)
    spring = np.abs(doy - easter_doy) <= 7
    summer = (doy >= 176 + shift) & (doy < 218 + shift)
    autumn = (doy >= 285 + shift // 2) & (doy < 297 + shift // 2)
    return christmas | spring | summer | autumn


# -- bike-share --------------------------------------------------------------------------------------

_TYPE_SHARES = (0.45, 0.35, 0.20)
_TRIPS_PER_STATION_DAY = 80.0  # an average station on a summer weekday; ~55 over a year

# Departures per hour and station type: (height, centre hour, width) bumps over a floor of 0.15.
_WEEKDAY_BUMPS = (
    ((3.0, 7.8, 1.0), (0.9, 17.5, 1.5), (0.5, 13.0, 2.5)),  # residential: out to work
    ((0.5, 8.0, 1.0), (1.0, 12.5, 1.0), (3.0, 17.2, 1.2)),  # business: back home
    ((1.2, 14.0, 3.0), (0.6, 19.0, 1.5)),  # leisure: afternoons and evenings
)
_WEEKEND_BUMPS = ((1.6, 14.0, 3.2),)
_WEEKDAY_VOLUME = np.array([1.0, 1.0, 0.8])
_WEEKEND_VOLUME = np.array([0.7, 0.4, 1.5])

# Where a trip goes: trip class (morning commute, evening commute, other) -> start type -> end type.
_AM, _PM, _OTHER = range(3)
_AFFINITY = np.array(
    [
        [[0.15, 0.75, 0.10], [0.20, 0.60, 0.20], [0.30, 0.40, 0.30]],
        [[0.40, 0.30, 0.30], [0.75, 0.10, 0.15], [0.50, 0.20, 0.30]],
        [[0.30, 0.20, 0.50], [0.35, 0.25, 0.40], [0.30, 0.15, 0.55]],
    ]
)
_ROUND_TRIP = np.array([0.1, 0.1, 1.0])  # leisure riders often return where they started

_CENTRES = {"vancouver": (49.2827, -123.1207), "seattle": (47.6062, -122.3321)}
_STREETS = _split(
    "Main St,Oak St,Pine St,Cedar St,Maple St,Elm St,Park Ave,Lake St,Hill St,River Rd,King St,Queen St,"
    "Market St,Union St,Bay St,Harbour St,Granville St,Broadway,Water St,Station Rd"
)
_AVENUES = ("1st Ave", "2nd Ave", "3rd Ave", *(f"{n}th Ave" for n in range(4, 21)))


def _stations(profile: Profile, entities: int, seed: int, fmt: str) -> pd.DataFrame:
    """Stations spread over the cities (only the first for ``citibike``: one export, one system)."""
    rng = _rng(seed, _ENTITIES)
    cities = list(profile.cities)[:1] if fmt == "citibike" else list(profile.cities)
    counts = _spread(rng, entities, len(cities), minimum=3)
    parts = [
        _city_stations(rng, name, prefix, int(count))
        for name, prefix, count in zip(cities, _prefixes(cities), counts, strict=True)
    ]
    table = pd.concat(parts, ignore_index=True)
    popularity = rng.lognormal(0.0, 0.6, len(table))
    table.insert(3, "popularity", np.round(popularity / popularity.mean(), 4))
    return table


def _city_stations(rng: np.random.Generator, city: str, prefix: str, count: int) -> pd.DataFrame:
    """``count`` stations of one city: at least one of each type when there are three or more."""
    types = np.concatenate([np.arange(min(count, 3)), rng.choice(3, max(count - 3, 0), p=_TYPE_SHARES)])
    width = max(3, len(str(count)))
    names = _station_names(rng, count)
    lat, lng = _CENTRES.get(city, _fallback_centre(city))
    return pd.DataFrame(
        {
            "station_id": [f"{prefix}{number:0{width}d}" for number in range(1, count + 1)],
            "city": city,
            "type": np.array(STATION_TYPES, dtype=object)[rng.permutation(types)],
            "name": names,
            "lat": np.round(lat + rng.normal(0.0, 0.02, count), 6),
            "lng": np.round(lng + rng.normal(0.0, 0.03, count), 6),
        }
    )


def _prefixes(cities: list[str]) -> list[str]:
    """Three distinct uppercase letters per city, from its name (``vancouver`` -> ``VAN``)."""
    used: list[str] = []
    for city in cities:
        letters = "".join(ch for ch in city.upper() if "A" <= ch <= "Z").ljust(3, "X")
        candidates = [letters[:3]] + [
            letters[0] + a + b for i, a in enumerate(letters[1:], 1) for b in letters[i + 1 :]
        ]
        candidates += [letters[:2] + chr(code) for code in range(ord("A"), ord("Z") + 1)]
        used.append(next(c for c in candidates if c not in used))
    return used


def _station_names(rng: np.random.Generator, count: int) -> list[str]:
    corners = [f"{street} & {avenue}" for street in _STREETS for avenue in _AVENUES]
    order = rng.permutation(len(corners))
    return [
        corners[order[i % len(corners)]] + (f" ({i // len(corners) + 1})" if i >= len(corners) else "")
        for i in range(count)
    ]


def _fallback_centre(city: str) -> tuple[float, float]:
    """A fixed, made-up point for a city without a known centre (stable across runs)."""
    code = zlib.crc32(city.encode())
    return -50.0 + (code % 10_000) / 100.0, -170.0 + (code // 10_000 % 34_000) / 100.0


def _closed(profile: Profile) -> np.ndarray:
    """(24,) True for the hours the service is closed (no trip starts or ends then)."""
    hours = np.arange(24)
    if profile.horizon.closed_hours is None:
        return np.zeros(24, dtype=bool)
    start, stop = profile.horizon.closed_hours
    return (hours >= start) & (hours < stop) if start <= stop else (hours >= start) | (hours < stop)


def _hour_shapes(closed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(types, 24) departure shares per hour on working days and on weekends/holidays."""
    centres = np.arange(24) + 0.5

    def shape(bumps: tuple[tuple[float, float, float], ...], volume: float) -> np.ndarray:
        curve = 0.15 + sum(h * np.exp(-0.5 * ((centres - c) / w) ** 2) for h, c, w in bumps)
        curve = np.where(closed, 0.0, curve)
        return volume * curve / curve.sum()

    weekday = np.stack([shape(b, v) for b, v in zip(_WEEKDAY_BUMPS, _WEEKDAY_VOLUME, strict=True)])
    weekend = np.stack([shape(_WEEKEND_BUMPS, v) for v in _WEEKEND_VOLUME])
    return weekday, weekend


def _ride_weather(temp: np.ndarray, precipitation: np.ndarray) -> np.ndarray:
    """Rain and cold keep riders off bikes: -33 % at 5 mm of rain, -30 % at 2 °C."""
    rain = np.maximum(np.exp(-0.08 * precipitation), 0.4)
    cold = np.clip(1.0 - 0.03 * (12.0 - temp), 0.45, 1.0)
    heat = 1.0 - 0.02 * np.clip(temp - 30.0, 0.0, None)
    return rain * cold * heat


@dataclass(frozen=True)
class _Trips:
    """Trips as arrays: start/end seconds since the first day's midnight and station indices."""

    start: np.ndarray
    end: np.ndarray
    origin: np.ndarray
    destination: np.ndarray
    trip_class: np.ndarray


def _bikeshare(profile: Profile, entities: int, dates: pd.DatetimeIndex, seed: int, fmt: str) -> pd.DataFrame:
    table = _stations(profile, entities, seed, fmt)
    trips = _simulate_trips(profile, table, dates, seed)
    if fmt == "counts":
        return _counts_frame(table, trips, dates)
    frame = _trip_frame(table, trips, dates, seed)
    return _citibike_frame(table, trips, frame, seed) if fmt == "citibike" else frame


@dataclass(frozen=True)
class _Network:
    """The stations as arrays: city index, type index and popularity, plus their city names."""

    cities: list[str]
    city: np.ndarray
    kind: np.ndarray
    popularity: np.ndarray

    @classmethod
    def of(cls, table: pd.DataFrame) -> _Network:
        cities = list(dict.fromkeys(table["city"]))
        return cls(
            cities=cities,
            city=pd.Index(cities).get_indexer(table["city"]),
            kind=pd.Index(STATION_TYPES).get_indexer(table["type"]),
            popularity=table["popularity"].to_numpy(),
        )


def _simulate_trips(profile: Profile, table: pd.DataFrame, dates: pd.DatetimeIndex, seed: int) -> _Trips:
    """Departures per station-hour (Poisson around a demand surface), then where each trip goes."""
    rng = _rng(seed, _TRIPS)
    network = _Network.of(table)
    day_off = _day_off(profile, network.cities, dates)[:, network.city].T  # (stations, days)
    closed = _closed(profile)
    weather = _ride_weather(*_weather(seed, dates, network.cities))[:, network.city].T
    rate = _departure_rate(network, dates, weather, day_off, closed)
    rate = rate * rng.gamma(20.0, 1 / 20.0, rate.shape[:2])[:, :, None]  # busy and quiet days
    cell = np.repeat(np.arange(rate.size), rng.poisson(rate).ravel())
    origin, day, hour = np.unravel_index(cell, rate.shape)
    trip_class = np.where(day_off[origin, day], _OTHER, _commute_class(hour))
    start = day * _DAY_SECONDS + hour * 3600 + rng.integers(0, 3600, len(cell))
    destination = _destinations(rng, network, origin, trip_class)
    median = np.where(trip_class == _OTHER, 17 * 60, 11 * 60)  # leisure rides are longer
    duration = np.clip(np.round(median * rng.lognormal(0.0, 0.45, len(cell))), 240, 2700).astype(np.int64)
    end = start + duration
    # The service is closed: a trip that would end in a closed hour (past midnight) never happened.
    keep = ~closed[end % _DAY_SECONDS // 3600]
    order = np.lexsort((destination[keep], origin[keep], start[keep]))
    return _Trips(*(values[keep][order] for values in (start, end, origin, destination, trip_class)))


def _day_off(profile: Profile, cities: list[str], dates: pd.DatetimeIndex) -> np.ndarray:
    """(days, cities) True on weekends and public holidays (holidays ride like Sundays)."""
    holiday = _holiday_matrix(profile, cities, dates)[0]
    return holiday | (dates.day_of_week.to_numpy() >= 5)[:, None]


def _commute_class(hour: np.ndarray) -> np.ndarray:
    return np.select([(hour >= 6) & (hour < 10), (hour >= 16) & (hour < 20)], [_AM, _PM], _OTHER)


def _departure_rate(
    network: _Network, dates: pd.DatetimeIndex, weather: np.ndarray, day_off: np.ndarray, closed: np.ndarray
) -> np.ndarray:
    """(stations, days, 24) expected departures: popularity x season x weather x hourly shape."""
    doy = dates.day_of_year.to_numpy()
    season = 0.8 + 0.25 * np.cos(2 * np.pi * (doy - 196) / 365.25)  # summer high, winter low
    daily = _TRIPS_PER_STATION_DAY * network.popularity[:, None] * season[None, :] * weather
    weekday, weekend = _hour_shapes(closed)
    kind = network.kind
    shape = np.where(day_off[:, :, None], weekend[kind][:, None, :], weekday[kind][:, None, :])
    return daily[:, :, None] * shape


def _destinations(
    rng: np.random.Generator, network: _Network, origin: np.ndarray, trip_class: np.ndarray
) -> np.ndarray:
    """Each trip's end station, within its start station's city, by type affinity and popularity."""
    destination = np.empty_like(origin)
    for city in range(len(network.cities)):
        members = np.flatnonzero(network.city == city)
        local = np.full(len(network.city), -1)
        local[members] = np.arange(len(members))
        mine = np.flatnonzero(network.city[origin] == city)
        row = trip_class[mine] * len(members) + local[origin[mine]]
        cdf = _choice_cdf(network.kind[members], network.popularity[members])
        destination[mine] = members[_sample_rows(rng, cdf, row)]
    return destination


def _choice_cdf(kind: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """(classes * stations, stations) cumulative destination probabilities, one row per class and origin."""
    n = len(kind)
    type_popularity = np.bincount(kind, weights=popularity, minlength=3)
    pull = popularity / type_popularity[kind]  # each type's share splits by popularity
    weights = _AFFINITY[:, kind][:, :, kind] * pull  # (classes, origin, destination)
    weights[:, np.arange(n), np.arange(n)] *= _ROUND_TRIP[kind]
    cdf = np.cumsum(weights / weights.sum(axis=2, keepdims=True), axis=2).reshape(-1, n)
    cdf[:, -1] = 1.0
    return cdf


def _sample_rows(rng: np.random.Generator, cdf: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Draw a column per ``row`` from a row-wise CDF with one search over all rows at once."""
    n_rows, n_cols = cdf.shape
    stacked = (cdf + np.arange(n_rows)[:, None]).ravel()  # row r occupies (r, r + 1]
    position = np.searchsorted(stacked, row + rng.random(len(row)), side="right")
    return np.clip(position - row * n_cols, 0, n_cols - 1)


def _timestamps(dates: pd.DatetimeIndex, seconds: np.ndarray) -> np.ndarray:
    """Local wall-clock ``YYYY-MM-DD HH:MM:SS`` (the closed night hours hold every DST switch)."""
    stamps = dates[0].to_datetime64().astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    return pd.Series(stamps).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(dtype=object)


def _ride_ids(rng: np.random.Generator, count: int) -> np.ndarray:
    """16 hex digits per trip, unique: a random key plus the index, through a 64-bit bijection."""
    x = np.arange(count, dtype=np.uint64) + np.uint64(rng.integers(0, 2**63))
    with np.errstate(over="ignore"):  # splitmix64's finaliser: wrapping arithmetic is the point
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return np.array([f"{value:016X}" for value in x.tolist()], dtype=object)


def _trip_frame(table: pd.DataFrame, trips: _Trips, dates: pd.DatetimeIndex, seed: int) -> pd.DataFrame:
    """The native trip columns, ordered by start time."""
    ids = table["station_id"].to_numpy(dtype=object)
    return pd.DataFrame(
        {
            "ride_id": _ride_ids(_rng(seed, _EXTRAS), len(trips.start)),
            "started_at": _timestamps(dates, trips.start),
            "ended_at": _timestamps(dates, trips.end),
            "start_station_id": ids[trips.origin],
            "end_station_id": ids[trips.destination],
            "city": table["city"].to_numpy(dtype=object)[trips.origin],
        },
        columns=list(TRIP_COLUMNS),
    )


def _citibike_frame(table: pd.DataFrame, trips: _Trips, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Citi Bike's 2020+ export: names and coordinates of stations, bike type, member or casual."""
    rng = _rng(seed, _EXTRAS + 1)
    commute = trips.trip_class != _OTHER
    member = rng.random(len(commute)) < np.where(commute, 0.85, 0.5)
    electric = rng.random(len(commute)) < 0.35
    columns = {
        "ride_id": frame["ride_id"],
        "rideable_type": np.where(electric, "electric_bike", "classic_bike").astype(object),
        "started_at": frame["started_at"],
        "ended_at": frame["ended_at"],
    }
    for end, index in (("start", trips.origin), ("end", trips.destination)):
        columns[f"{end}_station_name"] = table["name"].to_numpy(dtype=object)[index]
        columns[f"{end}_station_id"] = table["station_id"].to_numpy(dtype=object)[index]
        columns[f"{end}_lat"] = table["lat"].to_numpy()[index]
        columns[f"{end}_lng"] = table["lng"].to_numpy()[index]
    columns["member_casual"] = np.where(member, "member", "casual").astype(object)
    return pd.DataFrame(columns, columns=list(CITIBIKE_COLUMNS))


def _counts_frame(table: pd.DataFrame, trips: _Trips, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """Departures and arrivals per station and local hour; only hours with at least one trip."""
    n_stations, n_hours = len(table), (len(dates) + 1) * 24  # +1 day: no trip ends later than that
    departures = np.bincount(trips.start // 3600 * n_stations + trips.origin, minlength=n_hours * n_stations)
    arrivals = np.bincount(trips.end // 3600 * n_stations + trips.destination, minlength=n_hours * n_stations)
    cell = np.flatnonzero(departures + arrivals)
    hour, station = np.divmod(cell, n_stations)
    labels = pd.date_range(dates[0], periods=n_hours, freq="h").strftime("%Y-%m-%d %H:00:00")
    return pd.DataFrame(
        {
            "station_id": table["station_id"].to_numpy(dtype=object)[station],
            "city": table["city"].to_numpy(dtype=object)[station],
            "hour": labels.to_numpy(dtype=object)[hour],
            "departures": departures[cell],
            "arrivals": arrivals[cell],
        },
        columns=list(COUNT_COLUMNS),
    )
