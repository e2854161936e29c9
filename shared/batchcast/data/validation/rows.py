"""Parsing rows: each mapped field's text into typed values, and the rules about parsed values."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from batchcast.core import layout
from batchcast.core.config import ColumnMapping, Profile
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.validation.mapping import ARRIVALS, DEPARTURES, Field, source_of
from batchcast.data.validation.reasons import (
    BAD_DATE,
    BAD_TIMESTAMP,
    ENDED_BEFORE_STARTED,
    FUTURE,
    IMPLAUSIBLE_DATE,
    INVALID_ID,
    MISSING,
    NEGATIVE_COUNT,
    NEGATIVE_TARGET,
    NOT_A_BOOLEAN,
    NOT_A_NUMBER,
    UNKNOWN_CITY,
    Reasons,
    show,
)

_OFFSET = r"(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"  # a timestamp that names its UTC offset
_INT_BOUNDS = {"int": 2**31, "long": 2**63}


# -- rows ----------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the checks of one upload share."""

    profile: Profile
    mapping: ColumnMapping
    text: pd.DataFrame  # the user's columns, as strings
    header: list[str]
    logical_time: datetime
    reasons: Reasons
    typed: dict[str, pd.Series] = field(default_factory=dict)
    raw: dict[str, pd.Series] = field(default_factory=dict)  # each field's text
    labels: dict[str, str] = field(default_factory=dict)  # each field's user column (for reasons)
    mapping_name: str = ""

    def setting(self, name: str) -> str:
        """Where a mapping setting lives in the profile, for reasons that name the fix."""
        return f"mappings.{self.mapping_name or '<mapping>'}.{name}"

    def per_city(self, value: Callable[[str], Any]) -> pd.Series:
        """``value(city)`` for each row, computed once per distinct city (unknown ones included)."""
        cities = self.raw.get(GROUP_KEY, pd.Series("", index=self.text.index))
        return cities.map({city: value(city) for city in cities.unique()})

    def zones(self) -> pd.Series:
        """The wall-clock zone name of each row's city (the profile's for unknown cities)."""
        return self.per_city(lambda city: str(self.profile.zone(city)))

    def local_now(self) -> pd.Series:
        """The logical time on each row's city's wall clock (naive)."""
        zone = self.profile.zone
        return pd.to_datetime(
            self.per_city(lambda c: self.logical_time.astimezone(zone(c)).replace(tzinfo=None))
        )


def parse_field(context: Context, spec: Field) -> None:
    """Parse one field's text into ``context.typed``, giving reasons to rows whose value is bad."""
    source = source_of(spec.name, context.mapping, context.header)
    assert source is not None
    if source in context.text.columns:
        text = context.text[source]
    else:
        text = pd.Series(context.mapping.constants[spec.name], index=context.text.index, dtype="str")
    context.raw[spec.name] = text
    context.labels[spec.name] = source
    blank = is_blank(text)
    if not spec.nullable:
        context.reasons.add(blank, MISSING, lambda p: f"{source} is empty")
    values, problems = _PARSERS[spec.kind](text, spec, context)
    for mask, category, detail in problems:
        context.reasons.add(np.asarray(mask, bool) & ~blank, category, detail)
    context.typed[spec.name] = values


Problem = tuple[Any, str, Callable[[int], str]]


def _shown(context: Context, name: str) -> Callable[[int], str]:
    """``<user column> = '<value>'`` of one row, for reasons."""
    return lambda p: f"{context.labels[name]} = {show(context.raw[name].iat[p])}"


def _parse_id(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    label = context.labels[spec.name]
    errors = {}
    for value in text.unique():
        try:
            layout.check_id(str(value), label)
        except layout.LayoutError as error:
            errors[value] = str(error)
    bad = text.isin(list(errors)) if errors else np.zeros(len(text), bool)
    return text, [(bad, INVALID_ID, lambda p: errors[text.iat[p]])]


def _parse_city(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    cities = context.profile.cities
    known = ", ".join(sorted(cities))
    bad = ~text.isin(list(cities))
    return text, [(bad, UNKNOWN_CITY, lambda p: f"{show(text.iat[p])} (known: {known})")]


def _parse_number(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    values = pd.to_numeric(text, errors="coerce").astype("float64")
    show = _shown(context, spec.name)
    problems: list[Problem] = [(~np.isfinite(values), NOT_A_NUMBER, show)]
    if spec.kind == "integer":
        whole = (values == np.floor(values)) & (values.abs() < _INT_BOUNDS.get(spec.avro, 2**63))
        problems.append(
            (
                np.isfinite(values) & ~whole,
                NOT_A_NUMBER,
                lambda p: f"{show(p)} is not a whole number within the {spec.avro} range",
            )
        )
    return values, problems


def _parse_boolean(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    mapping = context.mapping
    true, false = text.isin(mapping.true_values), text.isin(mapping.false_values)
    values = pd.Series(pd.NA, index=text.index, dtype="boolean")
    values[true.to_numpy()] = True
    values[false.to_numpy()] = False
    expected = f"expected one of {', '.join(mapping.true_values)} or {', '.join(mapping.false_values)}"
    show = _shown(context, spec.name)
    return values, [(~(true | false), NOT_A_BOOLEAN, lambda p: f"{show(p)} ({expected})")]


def _parse_time(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    """Naive wall-clock times; a value with a UTC offset is converted to its city's wall clock.

    The period may be a date plus the mapping's ``time_of_day`` column; with ``aggregate`` it is
    floored to the profile's period (the rows are added up later), else it must start one."""
    date_format = context.mapping.date_format
    values = _to_wall_clock(text, date_format or "ISO8601", context)
    category = BAD_DATE if spec.logical == "date" else BAD_TIMESTAMP
    show = _shown(context, spec.name)
    problems: list[Problem] = [(values.isna(), category, _not_a_date(show, text, context))]
    if spec.kind != "period":
        return values, problems
    if context.mapping.time_of_day:
        offsets, bad_time = _time_of_day(context)
        problems.append(bad_time)
        values = values + offsets
    step = pd.Timedelta(context.profile.period)
    if context.mapping.aggregate:
        return values.dt.floor(step), problems
    unit = "a day" if step == pd.Timedelta(days=1) else "an hour"
    setting = context.setting("aggregate")
    problems.append(
        (
            values.notna() & (values.dt.floor(step) != values),
            category,
            lambda p: f"{show(p)} is not the start of {unit} (to add up rows into periods, set {setting})",
        )
    )
    return values, problems


def _to_wall_clock(text: pd.Series, fmt: str, context: Context) -> pd.Series:
    try:
        values = pd.to_datetime(text, format=fmt, errors="coerce")
        aware = values.dt.tz is not None
    except (ValueError, TypeError):  # offsets differ, or some values have one and some do not
        aware = True
    if aware:
        has_offset = text.str.contains(_OFFSET, regex=True, na=False)
        naive = pd.to_datetime(text.where(~has_offset), format=fmt, errors="coerce")
        instants = pd.to_datetime(text.where(has_offset), format=fmt, errors="coerce", utc=True)
        values = naive.where(~has_offset, _wall_clock(instants, context.zones()))
    return values


def _not_a_date(show: Callable[[int], str], text: pd.Series, context: Context) -> Callable[[int], str]:
    """The reason of a value that does not parse: the form expected and the setting that changes it."""
    date_format = context.mapping.date_format
    setting = context.setting("date_format")
    if date_format:
        return lambda p: f"{show(p)} does not match {setting} = {date_format!r}"

    def detail(p: int) -> str:
        hint = _format_hint(str(text.iat[p]))
        return (
            f"{show(p)} is not ISO 8601 (2024-05-01, 2024-05-01T08:15:00); for dates in another form set "
            f"{setting} (a strftime format{hint})"
        )

    return detail


def _format_hint(value: str) -> str:
    """An example format that reads ``value``, when its form is a common one."""
    for pattern, formats in _COMMON_FORMATS:
        if re.fullmatch(pattern, value.strip()):
            return ", e.g. " + " or ".join(repr(f) for f in formats)
    return ', e.g. "%d/%m/%Y"'


_COMMON_FORMATS = (
    (r"\d{1,2}/\d{1,2}/\d{4}", ("%m/%d/%Y", "%d/%m/%Y")),
    (r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d\d", ("%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M")),
    (r"\d{1,2}\.\d{1,2}\.\d{4}", ("%d.%m.%Y",)),
    (r"\d{1,2}-\d{1,2}-\d{4}", ("%d-%m-%Y", "%m-%d-%Y")),
    (r"\d{8}", ("%Y%m%d",)),
    (r"\d{4}/\d{1,2}/\d{1,2}", ("%Y/%m/%d",)),
)


def _time_of_day(context: Context) -> tuple[pd.Series, Problem]:
    """The ``time_of_day`` column as offsets from midnight: an hour (0-23) or a time (08:15[:00])."""
    column = context.mapping.time_of_day
    assert column is not None
    text = context.text[column].str.strip()
    hours = pd.to_numeric(text, errors="coerce")
    whole = (hours == np.floor(hours)) & (hours >= 0) & (hours < 24)
    clock = text.where(text.str.contains(":"))  # only values with a colon are times (5 is an hour)
    as_time = pd.to_timedelta(clock.where(clock.str.count(":") != 1, clock + ":00"), errors="coerce")
    offsets = pd.to_timedelta(hours.where(whole), unit="h").fillna(
        as_time.where(as_time < pd.Timedelta(days=1))
    )
    setting = context.setting("time_of_day")

    def detail(p: int) -> str:
        return f"{column} = {show(text.iat[p])} is not an hour (0-23) or a time of day (08:15) ({setting})"

    return offsets, (offsets.isna(), BAD_TIMESTAMP, detail)


def _wall_clock(instants: pd.Series, zones: pd.Series) -> pd.Series:
    local = pd.Series(pd.NaT, index=instants.index, dtype="datetime64[us]")
    for zone in zones[instants.notna()].unique():
        rows = (zones == zone) & instants.notna()
        local[rows] = instants[rows].dt.tz_convert(zone).dt.tz_localize(None).astype("datetime64[us]")
    return local


def _parse_text(text: pd.Series, spec: Field, context: Context) -> tuple[pd.Series, list[Problem]]:
    return text, []


_PARSERS: dict[str, Callable[[pd.Series, Field, Context], tuple[pd.Series, list[Problem]]]] = {
    "id": _parse_id,
    "city": _parse_city,
    "period": _parse_time,
    "timestamp": _parse_time,
    "integer": _parse_number,
    "number": _parse_number,
    "boolean": _parse_boolean,
    "text": _parse_text,
}


def value_rules(context: Context) -> None:
    """Rules about parsed values: future periods (except in future values, which are about the
    future), negative targets and counts, trip order."""
    typed, reasons, profile = context.typed, context.reasons, context.profile
    times = [n for n, v in typed.items() if pd.api.types.is_datetime64_any_dtype(v)]
    if times:
        now = context.local_now()
        for name in times:
            _implausible(context, name, now)
            if context.mapping.kind != "future":
                _future(context, name, now)
    if profile.target in typed and not profile.validation.allow_negative_target:
        show = _shown(context, profile.target)
        reasons.add(
            typed[profile.target] < 0,
            NEGATIVE_TARGET,
            lambda p: (
                f"{show(p)} is below zero (dataset {profile.name} does not allow a negative {profile.target})"
            ),
        )
    if context.mapping.kind == "counts":
        for name in (DEPARTURES, ARRIVALS):
            reasons.add(typed[name] < 0, NEGATIVE_COUNT, _below_zero(_shown(context, name)))
    if context.mapping.kind == "trips":
        start, end = _shown(context, "started_at"), _shown(context, "ended_at")
        reasons.add(
            typed["ended_at"] < typed["started_at"],
            ENDED_BEFORE_STARTED,
            lambda p: f"{end(p)} is before {start(p)}",
        )


def _future(context: Context, name: str, now: pd.Series) -> None:
    """A period (or trip time) after the upload's logical time, on the city's wall clock, is future.
    Rows added up into periods must also not end after it: a period still running is incomplete."""
    show = _shown(context, name)
    cities = context.raw.get(GROUP_KEY)
    values = context.typed[name]
    adding_up = bool(context.mapping.aggregate) and name == context.profile.time_column
    if adding_up:
        values = values + pd.Timedelta(context.profile.period)

    def detail(p: int) -> str:
        where = f" in {cities.iat[p]}" if cities is not None else ""
        what = "its period ends" if adding_up else "is"
        return f"{show(p)} {what} after the upload's time ({now.iat[p]:%Y-%m-%d %H:%M}{where})"

    context.reasons.add(values > now, FUTURE, detail)


def _implausible(context: Context, name: str, now: pd.Series) -> None:
    """Dates far from the upload's time (1900 in a 2026 file) are typos or a wrong date_format."""
    rules = context.profile.validation
    earliest = now - pd.Timedelta(days=rules.max_days_back)
    latest = now + pd.Timedelta(days=rules.max_days_ahead)
    values, show = context.typed[name], _shown(context, name)
    context.reasons.add(
        values < earliest,
        IMPLAUSIBLE_DATE,
        lambda p: (
            f"{show(p)} is more than {rules.max_days_back} days before the upload's time "
            f"(validation.max_days_back of dataset {context.profile.name})"
        ),
    )
    if context.mapping.kind != "future":
        return  # history after the upload's time is rejected as future anyway
    context.reasons.add(
        values > latest,
        IMPLAUSIBLE_DATE,
        lambda p: (
            f"{show(p)} is more than {rules.max_days_ahead} days after the upload's time "
            f"(validation.max_days_ahead of dataset {context.profile.name})"
        ),
    )


def _below_zero(show: Callable[[int], str]) -> Callable[[int], str]:
    return lambda p: f"{show(p)} is below zero"


def is_blank(text: pd.Series) -> np.ndarray:
    """Where a text column holds no value."""
    return (text.isna() | (text == "")).to_numpy()


def periods_ahead(context: Context) -> tuple[int, Any]:
    """Future values: how many good rows are for periods not yet ended at the upload's time, and
    the latest period among the good rows (None when there is none)."""
    good = ~context.reasons.bad
    periods = context.typed[context.profile.time_column][good]
    ended = periods + pd.Timedelta(context.profile.period) <= context.local_now()[good]
    return int((~ended).sum()), periods.max() if len(periods) else None
