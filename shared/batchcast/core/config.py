"""Profiles: validated, declarative workload configuration.

Deployment settings live in :mod:`batchcast.core.settings`.

A profile says everything that differs between workloads: how users' columns map onto the pipeline's
schema, the entity key, target, frequency, horizon, schedule, time zone, cities, the covariates it
declares and the features. The code never branches on a profile's *name*, only on what the profile
declares. Every mapping mistake (a field that is neither in the schema nor a declared covariate, a
declared covariate no mapping reads, ...) is refused when the profile loads, never dropped silently.

Profiles are found by the ``name`` they declare, whatever their file is called: the built-in ones
and those in ``BATCHCAST_PROFILE_DIR`` (which shadow a built-in of the same name).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from batchcast.core import schemas
from batchcast.core.errors import ConfigError
from batchcast.core.messages import Action
from batchcast.core.schemas import BOOKKEEPING_FIELDS, GROUP_KEY

BUILTIN_PROFILES = ("retail", "bikeshare")
# What a ``trips`` mapping reads: field -> (kind of value, may be empty). The pipeline derives each
# station-period's departures and arrivals from them; no other field can come from a trip export.
TRIP_FIELDS: dict[str, tuple[str, bool]] = {
    "ride_id": ("text", True),
    "started_at": ("timestamp", False),
    "ended_at": ("timestamp", False),
    "start_station_id": ("id", False),
    "end_station_id": ("id", False),
    GROUP_KEY: ("city", False),
}
COUNT_FIELDS = ("departures", "arrivals")  # what trips and counts mappings count; target = their difference
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an Avro (and BigQuery) field name


class _Strict(BaseModel):
    # Each field's docstring is its description in the JSON Schema and docs/profile-reference.md,
    # read from the source by batchcast.tools.reference (pydantic's use_attribute_docstrings would
    # parse this module's source at every import: a third of a function's import of this module).
    model_config = ConfigDict(extra="forbid", frozen=True)


class City(_Strict):
    """A city (the group key): where its holidays and wall clock come from."""

    country: str = Field(min_length=2, max_length=2)
    """ISO 3166 country code of the city: its public holidays become features."""
    subdivision: str | None = None
    """ISO 3166-2 subdivision (state, Land) for regional holidays, e.g. BE for Berlin."""
    timezone: str | None = None  # defaults to the profile's
    """The city's wall clock, when it differs from the profile's timezone."""


class Covariate(_Strict):
    """An input the profile declares beside the target: its value type and when it is known.

    ``past``: known only up to the forecast origin (yesterday's footfall); the model uses its value
    as of the origin. ``known``: known in advance for the target period too (a weather forecast, a
    planned promo or closure); the model uses its value at the target period, which predict takes
    from future-values uploads (a mapping of kind ``future``).
    """

    type: Literal["number", "integer", "boolean"] = "number"
    """The value type of the covariate's column."""
    timing: Literal["past", "known"]
    """past: known only up to the forecast origin; known: known in advance for the target period too
    (uploaded with a future mapping)."""
    description: str = ""
    """What the covariate is, for people reading the profile."""


class ColumnMapping(_Strict):
    """How one kind of user file maps onto the profile's schema.

    ``kind`` is ``rows`` (one row per entity and period), ``trips`` (one row per trip: the pipeline
    derives departures and arrivals per station-hour), ``counts`` (per station-hour counts) or
    ``future`` (values of ``known`` covariates for target periods, per entity or, when the entity
    is empty or not mapped, for every entity of the city).
    """

    kind: Literal["rows", "trips", "counts", "future"] = "rows"
    """rows: one row per entity and period; trips: one row per trip (departures and arrivals are counted);
    counts: station-period counts; future: values of known covariates for coming periods."""
    columns: dict[str, str]  # pipeline field (or declared covariate) -> the user's column name
    """Pipeline field (or declared covariate) = the user's column name."""
    optional: list[str] = []  # pipeline fields whose column may be missing from a file
    """Fields whose column a file may lack."""
    constants: dict[str, str] = Field(default_factory=dict)  # pipeline field -> fixed value
    """Field = a fixed value, for files without that column (e.g. the city of a one-city export)."""
    date_format: str | None = Field(default=None, examples=["%m/%d/%Y"])
    """strftime format of the time column(s), e.g. \"%m/%d/%Y\"; unset: ISO 8601."""
    # The user's column holding the hour (0-23) or time of day (08:00, 08:00:00) that, added to the
    # date in the time column, makes the timestamp (files with a date column and an hour column).
    time_of_day: str | None = Field(default=None, examples=["hr"])
    """The user's column holding the hour (0-23) or time of day (08:15) added to the date."""
    # A reducer per field: rows are added up into the profile's periods (hourly rows into days):
    # each time is floored to its period and rows sharing (city, entity, period) are reduced, not
    # rejected as duplicates. Empty: each row must be one period.
    aggregate: dict[str, Literal["sum", "mean", "max", "last"]] = Field(
        default_factory=dict, examples=[{"rentals": "sum", "temp": "mean"}]
    )
    """A reducer per field (sum, mean, max, last): rows are added up into the profile's periods (hourly rows
    into days) instead of rejected as duplicates; unlisted fields keep their last value."""
    extra_columns: Literal["ignore", "reject"] = "ignore"
    """What happens to columns the mapping does not read: ignore (with a warning) or reject the file."""
    true_values: list[str] = ["1", "true", "True", "TRUE", "yes", "y"]
    """Texts read as true in boolean columns."""
    false_values: list[str] = ["0", "false", "False", "FALSE", "no", "n"]
    """Texts read as false in boolean columns."""

    @property
    def source_columns(self) -> set[str]:
        """The columns a file must have for this mapping to apply."""
        required = {column for field, column in self.columns.items() if field not in self.optional}
        return required | ({self.time_of_day} if self.time_of_day else set())

    @property
    def read_columns(self) -> set[str]:
        """Every column this mapping reads when a file has it."""
        return set(self.columns.values()) | ({self.time_of_day} if self.time_of_day else set())


class RollingFeature(_Strict):
    """Rolling statistics over ``window`` periods, shifted so they only see data before the origin."""

    window: int = Field(ge=2)
    """Periods in the rolling window."""
    stats: list[Literal["mean", "std", "min", "max"]] = ["mean"]
    """Statistics computed over the window."""


class Features(_Strict):
    """Declarative features, in the spirit of mlforecast: lags, rolling windows, calendar, holidays."""

    lags: list[int] = Field(min_length=1)
    """Past values used as features, in periods; each must be >= the horizon (the longest window)."""
    rolling: list[RollingFeature] = []
    """Rolling statistics, shifted so they only see data before the origin."""
    calendar: list[Literal["dayofweek", "month", "dayofyear", "hour", "is_weekend"]] = []
    """Calendar features of the target period."""
    holidays: bool = True
    """Whether the city's public holidays are a feature."""
    # The declared covariates the model uses (None: every one the profile declares), each as its
    # timing says: as of the origin (past) or at the target period (known).
    covariates: list[str] | None = None
    """The declared covariates the model uses; unset: every declared one."""
    scale_window: int = Field(default=28, ge=2)  # per-entity scaling, so one huge store is not special
    """Periods of history each entity's scale is taken from, so one huge store is not special."""
    # A period with no row: unknown ("nan", a store that did not report) or zero ("zero", a
    # station-hour without trips).
    fill_missing: Literal["nan", "zero"] = "nan"
    """A period without a row: nan (unknown, a store that did not report) or zero (a station-hour without
    trips)."""

    @field_validator("lags")
    @classmethod
    def _positive(cls, lags: list[int]) -> list[int]:
        if min(lags) < 1:
            raise ValueError("lags must be >= 1")
        return sorted(set(lags))


class Horizon(_Strict):
    """The target period: the next day, or the next of a set of intraday windows (hours, local)."""

    windows: list[tuple[int, int]] = []  # empty: daily frequency, the target is the next day
    """Intraday target periods as [start, end] local hours; required for an hourly profile, empty for a daily
    one (the target is the next day)."""
    closed_hours: tuple[int, int] | None = None  # service closed: no trips, no predictions
    """Local hours [start, end] when the service is closed: no predictions."""

    @field_validator("windows")
    @classmethod
    def _ordered(cls, windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for start, end in windows:
            if not 0 <= start < end <= 24:
                raise ValueError(f"window {start}-{end} is not within 0-24")
        return sorted(windows)


class ScheduleEntry(_Strict):
    """A Cloud Scheduler job: a cron line (in the profile's time zone) and what it asks for."""

    cron: str
    """Five-field cron line in the profile's timezone."""
    actions: list[Action] = Field(min_length=1)
    """What the tick asks for: train, predict, notify."""

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValueError(f"cron {cron!r} is not a valid five-field cron line")
        return cron

    def times_on(self, day: date, zone: ZoneInfo) -> list[datetime]:
        """Every time this entry fires on local ``day`` in ``zone``, as aware datetimes."""
        start = datetime.combine(day, time(), zone) - timedelta(microseconds=1)
        times = croniter(self.cron, start).all_next(datetime)
        fired = []
        for moment in times:
            if moment.astimezone(zone).date() != day:
                break
            fired.append(moment)
        return fired


class Training(_Strict):
    """How models are trained."""

    window: int = Field(ge=14)  # periods of history a model is trained on
    """Periods of history a model is trained on (at least 14)."""
    quantiles: list[float] = [0.1, 0.5, 0.9]
    """Quantiles forecast; must include 0.5."""
    max_iter: int = Field(default=200, ge=10)
    """Boosting iterations of each model."""
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    """Boosting learning rate."""
    max_leaf_nodes: int = 31
    """Leaves per tree."""
    # inline: train inside train_trigger; job: hand every training to a job (Cloud Run job, or a
    # ``batchcast train`` process locally). Inline is refused when the estimate exceeds the limit.
    mode: Literal["inline", "job"] = "inline"
    """inline: train inside train_trigger; job: hand every training to a job."""
    max_inline_seconds: int = Field(default=480, le=540)  # event-driven functions stop at 540 s
    """Inline training is refused when its estimate exceeds this (functions stop at 540 s)."""
    # The size estimate: each HistGradientBoosting fit costs a fixed part plus a part per row.
    # Measured on a 2-core machine: ~0.8 s per fit, plus ~10 s per million training rows.
    seconds_per_fit: float = Field(default=0.8, ge=0)
    """The size estimate's fixed cost per fit."""
    seconds_per_million_rows: float = Field(default=10.0, ge=0)
    """The size estimate's cost per million training rows."""
    debounce_minutes: int = Field(default=0, ge=0)  # data-triggered retrains at most this often
    """Data-triggered retrains happen at most this often (required with train in on_upload)."""

    @field_validator("quantiles")
    @classmethod
    def _median_included(cls, quantiles: list[float]) -> list[float]:
        if 0.5 not in quantiles or any(not 0 < q < 1 for q in quantiles):
            raise ValueError("quantiles must lie in (0, 1) and include 0.5")
        return sorted(quantiles)


class Backtest(_Strict):
    """Rolling-origin backtest: ``folds`` origins, each forecasting ``window`` periods."""

    folds: int = Field(default=3, ge=1)
    """Rolling-origin backtest folds."""
    window: int = Field(default=7, ge=1)
    """Periods each fold forecasts."""
    season: int = Field(default=7, ge=1)  # seasonal-naive baseline and MASE scale
    """Season length of the seasonal-naive baseline and the MASE scale."""


class Sharding(_Strict):
    """How a city's entities are split into predict requests: balanced by history rows."""

    target_rows: int = Field(default=200_000, ge=1)
    """History rows per predict request."""
    max_shards: int = Field(default=64, ge=1)
    """Most predict requests per city."""


class Validation(_Strict):
    """Row-level rules that are about values rather than types."""

    allow_negative_target: bool = False
    """Whether a negative target is a valid value (net change) or a rejected row (sales)."""
    # The accepted range of dates, around the upload's time: an older period (1900 in a 2026 sales
    # file) or a future value further ahead is a typo or a wrong date_format, rejected per row.
    max_days_back: int = Field(default=3660, ge=1)
    """Periods more than this many days before the upload's time are rejected as implausible (1900 in a 2026
    file)."""
    max_days_ahead: int = Field(default=400, ge=1)
    """Future values more than this many days after the upload's time are rejected as implausible."""


class Monitoring(_Strict):
    """How live accuracy is judged: the ops digest flags a city whose forecasts, scored against the
    actuals that arrived, do markedly worse than its latest model's backtest."""

    drift_margin: float = Field(default=0.25, gt=0, le=10)
    """A city drifts when its live MASE exceeds the latest backtest's MASE by more than this fraction
    (0.25: live MASE above 1.25 × backtest MASE). Above 0, at most 10."""
    live_window_days: int = Field(default=28, ge=1, le=366)
    """Days of live scores, ending with the schedule tick's date, summed before judging (1 to 366)."""
    min_points: int = Field(default=50, ge=1)
    """Scored forecast points (entity × period) a city needs in the window before it is judged; with
    fewer, the run notes it and no alert is raised. At least 1."""


class Profile(_Strict):
    """One workload: retail sales, bike-share net change, or a user's own."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    """The dataset's name, how uploads, results and tokens refer to it."""
    description: str = ""
    """One line about the workload."""
    # The shipped .avsc the partitioned rows extend (batchcast/core/schemas/<base_schema>.avsc); None:
    # the schema is generated from entity_key, time_column, target and the covariates. Never read
    # rows with it alone: schemas.observation(profile) adds the declared covariates. (Its TOML key
    # was schema_name, still accepted.)
    base_schema: str | None = Field(default=None, validation_alias=AliasChoices("base_schema", "schema_name"))
    """A shipped .avsc the rows extend; unset: the schema is generated from entity_key, time_column, target
    and covariates."""
    entity_key: str
    """The field naming what is forecast (store, station): its word in pages and emails too."""
    time_column: str
    """The field holding the period (a date, or an hour for hourly profiles)."""
    target: str
    """The field forecast."""
    frequency: Literal["daily", "hourly"]
    """The period of the target: daily or hourly."""
    timezone: str
    """The wall clock of schedules and of times without a UTC offset."""
    cities: dict[str, City] = Field(min_length=1)
    """The cities (group key) rows may name, each with its country for holidays."""
    schedule: list[ScheduleEntry] = Field(min_length=1)
    """Cloud Scheduler ticks: cron lines and what each asks for."""
    # What an upload asks for, for the entities it carried. Retraining belongs on the schedule:
    # with "train" here, training.debounce_minutes must say how often uploads may retrain.
    on_upload: list[Action] = ["predict"]
    """What an upload asks for, for the entities it carried."""
    horizon: Horizon = Horizon()
    """The target periods."""
    features: Features
    """The model's features."""
    training: Training
    """How models are trained."""
    backtest: Backtest = Backtest()
    """The rolling-origin backtest that scores and calibrates each model."""
    sharding: Sharding = Sharding()
    """How a city's entities are split into predict requests."""
    validation: Validation = Validation()
    """Row rules about values rather than types."""
    monitoring: Monitoring = Monitoring()
    """When the ops digest reports a city's live accuracy drifting from its backtest."""
    covariates: dict[str, Covariate] = {}
    """Inputs beside the target: name = type and timing."""
    mappings: dict[str, ColumnMapping] = Field(min_length=1)
    """How users' files map onto the schema, one entry per kind of file."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {zone!r}") from error
        return zone

    @model_validator(mode="after")
    def _consistent(self) -> Profile:
        problems = consistency_problems(self.model_dump())
        for city in self.cities.values():
            if city.timezone:
                self._known_zone(city.timezone)
        # Every mistake at once: fixing a profile one error per load is slow. The mappings are checked
        # against the schema, so only once the schema can be derived.
        schema = _schema_problems(self)
        problems += schema + _feature_problems(self) + ([] if schema else _mapping_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def period(self) -> timedelta:
        """The length of one period of the target's frequency."""
        return timedelta(days=1) if self.frequency == "daily" else timedelta(hours=1)

    @property
    def entity_word(self) -> str:
        """What one entity is called in the page, API answers and emails: the entity key without
        its id suffix (store_id: store, station_id: station, kiosk: kiosk)."""
        word = re.sub(r"_?id$", "", self.entity_key).strip("_") or self.entity_key
        return word.replace("_", " ")

    @property
    def model_covariates(self) -> dict[str, Covariate]:
        """The declared covariates the model uses, in feature order."""
        names = self.features.covariates
        return {n: self.covariates[n] for n in (list(self.covariates) if names is None else names)}

    def mapping_fields(self, kind: str) -> list[str]:
        """The fields a mapping of ``kind`` may read (columns or constants), in schema order."""
        if kind == "trips":
            return list(TRIP_FIELDS)
        if kind == "future":
            return [self.entity_key, GROUP_KEY, self.time_column, *self.known_covariates]
        observed = [f for f in schemas.fields(schemas.observation(self)) if f not in BOOKKEEPING_FIELDS]
        return [f for f in observed if f != self.target] if kind == "counts" else observed

    @property
    def known_covariates(self) -> list[str]:
        """The declared covariates known in advance (what future-values uploads carry)."""
        return [name for name, spec in self.covariates.items() if spec.timing == "known"]

    def zone(self, city: str | None = None) -> ZoneInfo:
        """The wall-clock zone of ``city`` (the profile's zone when the city sets none)."""
        zone = self.cities[city].timezone if city and city in self.cities else None
        return ZoneInfo(zone or self.timezone)

    def target_window(self, now: datetime, city: str | None = None) -> tuple[datetime, datetime]:
        """The first target period that starts at or after ``now``, as naive local datetimes.

        One rule serves both workloads: at 00:00 the daily target is the day that just began; at
        06:00 the intraday target is the 06-12 window; at 08:00 it is 12-18.
        """
        local = now.astimezone(self.zone(city)).replace(tzinfo=None)
        return _next_window(local, self.horizon.windows)

    def expected_window(self, now: datetime, city: str | None = None) -> tuple[datetime, datetime]:
        """The target period that the last scheduled predict run at or before ``now`` covered."""
        local = now.astimezone(self.zone(city)).replace(tzinfo=None)
        if not self.horizon.windows:
            day = datetime.combine(local.date(), time())
            return day, day + timedelta(days=1)
        for day in (local.date(), local.date() - timedelta(days=1)):
            for start, end in reversed(self.horizon.windows):
                window_start = datetime.combine(day, time()) + timedelta(hours=start)
                if window_start <= local:
                    return window_start, datetime.combine(day, time()) + timedelta(hours=end)
        raise AssertionError("unreachable: a window starts within any 48 hours")

    def scheduled_ticks(self, day: date) -> list[tuple[datetime, list[Action]]]:
        """The schedule's ticks on local ``day`` in the profile's zone, in time order.

        Ticks that fire at the same moment are merged, as one rerun should do the work once.
        """
        merged: dict[datetime, list[Action]] = {}
        for entry in self.schedule:
            for moment in entry.times_on(day, self.zone()):
                actions = merged.setdefault(moment, [])
                actions.extend(a for a in entry.actions if a not in actions)
        return sorted(merged.items())

    def mapping_for(self, columns: Iterable[str]) -> tuple[str, ColumnMapping] | None:
        """The mapping whose source columns a file header has (the most specific one wins)."""
        header = set(columns)
        fits = [(name, m) for name, m in self.mappings.items() if m.source_columns <= header]
        if not fits:
            return None
        return max(fits, key=lambda item: len(item[1].source_columns))


def consistency_problems(data: dict) -> list[str]:
    """Rules between sections (frequency and horizon, lags and horizon, uploads that train), read
    from the profile's raw table so they are reported together with missing or mistyped fields."""
    problems = []
    frequency = data.get("frequency")
    horizon = data.get("horizon") or {}
    windows = horizon.get("windows") or [] if isinstance(horizon, dict) else []
    if frequency == "hourly" and not windows:
        problems.append("an hourly profile needs horizon.windows (e.g. [[6, 12], [12, 18]], local hours)")
    if frequency == "daily" and windows:
        problems.append("a daily profile forecasts the next day: leave horizon.windows empty")
    training = data.get("training") if isinstance(data.get("training"), dict) else {}
    if "train" in (data.get("on_upload") or []) and (training.get("debounce_minutes") or 0) < 1:
        problems.append(
            "on_upload includes train but training.debounce_minutes is 0: every store's upload "
            "would retrain its city; set debounce_minutes (e.g. 60) or train on the schedule only"
        )
    spans = [end - start for start, end in windows if isinstance(start, int) and isinstance(end, int)]
    periods = max(spans, default=1)
    features = data.get("features") if isinstance(data.get("features"), dict) else {}
    lags = [lag for lag in features.get("lags") or [] if isinstance(lag, int)]
    if lags and min(lags) < periods:
        problems.append(
            f"every lag must be >= the horizon ({periods} periods); features.lags has {min(lags)}"
        )
    return problems


def _schema_problems(profile: Profile) -> list[str]:
    """What is wrong with the schema's base, its keys and the covariate declarations."""
    problems = []
    keys = {"entity_key": profile.entity_key, "time_column": profile.time_column, "target": profile.target}
    base: dict[str, dict] = {}
    if profile.base_schema is not None:
        if not schemas.shipped(profile.base_schema):
            known = ", ".join(sorted(p.stem for p in _shipped_schema_files()))
            return [
                f"base_schema {profile.base_schema!r} is not a shipped schema (shipped: {known}); leave "
                "base_schema out to generate the schema from entity_key, time_column, target and covariates"
            ]
        base = schemas.fields(profile.base_schema)
        for what, name in keys.items():
            if name not in base:
                problems.append(
                    f"{what} {name!r} is not a field of schema {profile.base_schema} "
                    f"(fields: {', '.join(f for f in base if f not in BOOKKEEPING_FIELDS)})"
                )
    else:
        problems += [f"{what} {_bad_name(n)}" for what, n in keys.items() if not _FIELD_NAME.match(n)]
    if len({*keys.values(), GROUP_KEY}) < 4:
        problems.append(f"entity_key, time_column and target must differ from each other and {GROUP_KEY!r}")
    reserved = {
        **{b: "a bookkeeping field the pipeline fills" for b in BOOKKEEPING_FIELDS},
        GROUP_KEY: "the group key",
        profile.target: "the target",
        profile.time_column: "the time column",
        profile.entity_key: "the entity key",
    }
    for name, spec in profile.covariates.items():
        if not _FIELD_NAME.match(name):
            problems.append(f"covariate {_bad_name(name)}")
        elif name in reserved:
            problems.append(f"covariate {name!r} has the name of {reserved[name]}: give it another name")
        elif name in base and not _same_type(base[name], spec):
            problems.append(
                f"covariate {name!r} is declared type = {spec.type!r}, but schema {profile.base_schema} "
                f"has it as {'optional ' if base[name]['nullable'] else 'required '}{base[name]['type']} "
                f"(declare it type = {_declared_type(base[name])!r})"
            )
    names = [*(base or [*keys.values(), GROUP_KEY]), *profile.covariates]
    by_case: dict[str, set[str]] = {}
    for name in names:
        by_case.setdefault(name.lower(), set()).add(name)
    problems += [
        f"field names {' and '.join(map(repr, sorted(same)))} differ only in case (BigQuery and many "
        "tools would take them for one column): rename one"
        for same in by_case.values()
        if len(same) > 1
    ]
    return problems


def _feature_problems(profile: Profile) -> list[str]:
    """Names in features.covariates that are not declared, or listed twice."""
    problems = []
    used = profile.features.covariates or []
    declared = ", ".join(profile.covariates) or "none"
    problems += [
        f"features.covariates names {name!r}, which is not declared: add [covariates.{name}] with its "
        f"type and timing (declared: {declared})" + _did_you_mean(name, profile.covariates)
        for name in used
        if name not in profile.covariates
    ]
    problems += [
        f"features.covariates lists {name!r} {count} times"
        for name, count in Counter(used).items()
        if count > 1
    ]
    return problems


def _bad_name(name: str) -> str:
    return f"{name!r} is not a valid field name (letters, digits and '_', not starting with a digit)"


def _same_type(info: dict, spec: Covariate) -> bool:
    return info["nullable"] and info["logical"] is None and _declared_type(info) == spec.type


def _declared_type(info: dict) -> str:
    kinds = {"double": "number", "float": "number", "int": "integer", "long": "integer", "boolean": "boolean"}
    return kinds.get(info["type"], info["type"])


def _mapping_problems(profile: Profile) -> list[str]:
    """Every mapping mistake: a field no mapping of its kind may read, a constant or optional entry
    for such a field, a column read twice, a required field left unfilled, a declared covariate no
    mapping reads."""
    problems = []
    observed = schemas.fields(schemas.observation(profile))
    for name, mapping in profile.mappings.items():
        where = f"mapping {name!r} (kind {mapping.kind!r})"
        allowed = profile.mapping_fields(mapping.kind)
        for field, column in mapping.columns.items():
            if field not in allowed:
                problems.append(
                    f"{where} maps {field!r} (from column {column!r}), which "
                    f"{_what_it_reads(profile, mapping.kind)}" + _did_you_mean(field, allowed)
                )
        problems += [
            f"{where} sets a constant for {field!r}, which {_what_it_reads(profile, mapping.kind)}"
            + _did_you_mean(field, allowed)
            for field in mapping.constants
            if field not in allowed
        ]
        problems += [
            f"{where} lists {field!r} as optional but maps no column to it"
            for field in mapping.optional
            if field not in mapping.columns
        ]
        for column, count in Counter(mapping.columns.values()).items():
            if count > 1:
                read = [f for f, c in mapping.columns.items() if c == column]
                problems.append(f"{where} reads column {column!r} for {' and '.join(read)}: map it once")
        unfilled = [
            f
            for f in _required(profile, mapping.kind, observed)
            if f not in mapping.columns and f not in mapping.constants
        ]
        if unfilled:
            problems.append(f"{where} provides no column or constant for the required {', '.join(unfilled)}")
        if mapping.kind in ("trips", "counts") and not set(COUNT_FIELDS) <= set(observed):
            problems.append(
                f"{where} counts {' and '.join(COUNT_FIELDS)}, which the schema does not have "
                f"(a {mapping.kind} mapping needs a schema with them, such as bikeshare_observation)"
            )
        problems += _reshaping_problems(profile, where, mapping)
        if mapping.kind == "future" and not set(mapping.columns) & set(profile.known_covariates):
            readable = ", ".join(profile.known_covariates) or 'none (none is declared timing = "known")'
            problems.append(f"{where} reads no covariate known in advance; it may read {readable}")
    problems += _unread_covariates(profile)
    return problems


def _reshaping_problems(profile: Profile, where: str, mapping: ColumnMapping) -> list[str]:
    """Mistakes in ``aggregate`` and ``time_of_day``: reducers for fields that are keys or not read,
    reshaping a kind that does not hold one row per period, a time-of-day column read twice."""
    problems = []
    if (mapping.aggregate or mapping.time_of_day) and mapping.kind not in ("rows", "counts"):
        problems.append(f"{where} sets aggregate or time_of_day, which only rows and counts mappings take")
    keys = {GROUP_KEY, profile.entity_key, profile.time_column}
    readable = [f for f in [*mapping.columns, *mapping.constants] if f not in keys]
    problems += [
        f"{where} aggregates {field!r}, which it does not read "
        f"(it reads {', '.join(readable) or 'no values'})" + _did_you_mean(field, readable)
        for field in mapping.aggregate
        if field not in readable
    ]
    if mapping.time_of_day and mapping.time_of_day in mapping.columns.values():
        problems.append(f"{where} reads column {mapping.time_of_day!r} as time_of_day and as a field")
    return problems


def _what_it_reads(profile: Profile, kind: str) -> str:
    if kind == "trips":
        return f"a trips mapping does not read (it reads {', '.join(TRIP_FIELDS)})"
    if kind == "future":
        return (
            "a future mapping does not read (it reads the entity key, city, the time column and the "
            f'covariates declared timing = "known": {", ".join(profile.mapping_fields("future"))})'
        )
    if kind == "counts" and profile.target in profile.mapping_fields("rows"):
        derived = f"; the target {profile.target!r} is derived as arrivals - departures"
    else:
        derived = ""
    fields = [f for f in profile.mapping_fields(kind) if f not in profile.covariates]
    return (
        f"is neither a field of the schema ({', '.join(fields)}) nor a declared covariate "
        f"({', '.join(profile.covariates) or 'none declared'}){derived}"
    )


def _required(profile: Profile, kind: str, observed: dict[str, dict]) -> list[str]:
    if kind == "trips":
        return [f for f, (_, nullable) in TRIP_FIELDS.items() if not nullable]
    if kind == "future":
        return [GROUP_KEY, profile.time_column]
    return [f for f in profile.mapping_fields(kind) if not observed[f]["nullable"]]


def _unread_covariates(profile: Profile) -> list[str]:
    """Declared covariates no history mapping reads, and known ones no future mapping reads."""
    read: dict[str, set[str]] = {"history": set(), "future": set()}
    for mapping in profile.mappings.values():
        side = "future" if mapping.kind == "future" else "history"
        read[side] |= set(mapping.columns) | set(mapping.constants)
    problems = [
        f"covariate {name!r} is declared but no mapping reads it: map it from one of your columns "
        f'(mappings.<mapping>.columns.{name} = "<your column>", listed in optional if files may lack it)'
        for name in profile.covariates
        if name not in read["history"]
    ]
    problems += [
        f'covariate {name!r} is known in advance (timing = "known") but no mapping of kind "future" '
        f'reads it, so its future values could never be uploaded: add it to one, or declare timing = "past"'
        for name in profile.known_covariates
        if name not in read["future"]
    ]
    return problems


def _did_you_mean(name: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _next_window(local: datetime, windows: list[tuple[int, int]]) -> tuple[datetime, datetime]:
    if not windows:
        day = datetime.combine(local.date(), time())
        start = day if local == day else day + timedelta(days=1)
        return start, start + timedelta(days=1)
    for day in (local.date(), local.date() + timedelta(days=1)):
        midnight = datetime.combine(day, time())
        for start, end in windows:
            if midnight + timedelta(hours=start) >= local:
                return midnight + timedelta(hours=start), midnight + timedelta(hours=end)
    raise AssertionError("unreachable: a window starts within any 48 hours")


# -- loading ---------------------------------------------------------------------------------------


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate a TOML profile; raise :class:`ConfigError` naming the source and, one per
    line, every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from error
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        # Field errors stop the checks between sections: add those, so every mistake comes at once.
        described = _describe(error)
        extra = [f"  {p}" for p in consistency_problems(data) if p not in described]
        raise ConfigError(f"{source}: invalid profile:\n" + "\n".join([described, *extra])) from error


def _describe(error: ValidationError) -> str:
    """Pydantic's errors as ``  <where>: <what>`` lines, without echoing the whole profile back."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"])
        for message in problem["msg"].removeprefix("Value error, ").splitlines():
            lines.append(f"  {where}: {message}" if where else f"  {message}")
    return "\n".join(lines)


@cache
def load_profile(name_or_path: str) -> Profile:
    """Load a profile by the name it declares, or a user's profile from a ``.toml`` path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"profile file {path} does not exist")
        return parse_profile(path.read_text(), str(path))
    files, unreadable = _profile_files()
    if name_or_path in files:
        return parse_profile(files[name_or_path].read_text(), str(files[name_or_path]))
    hints = [f"{p} is named {n!r}" for n, p in files.items() if p.stem == name_or_path]
    hints += [f"{p} could not be read ({why})" for p, why in unreadable.items()]
    known = ", ".join(sorted(files)) or "none"
    raise ConfigError(
        f"unknown profile {name_or_path!r}; known: {known}" + "".join(f"; {hint}" for hint in hints)
    )


def profile_names() -> list[str]:
    """Every profile name this installation knows (built-in and ``BATCHCAST_PROFILE_DIR``)."""
    return sorted(_profile_files()[0])


def _profile_files() -> tuple[dict[str, Path], dict[Path, str]]:
    """Each profile name -> its file, and the files whose name could not be read (-> why).

    A profile is known by the ``name`` it declares, not its file name. A file in
    ``BATCHCAST_PROFILE_DIR`` shadows a built-in profile of the same name; two files of one folder
    declaring one name are an error naming both.
    """
    files: dict[str, Path] = {}
    unreadable: dict[Path, str] = {}
    for directory in reversed(_profile_dirs()):  # built-ins first, so the user's folder wins
        here: dict[str, Path] = {}
        for path in sorted(directory.glob("*.toml")):
            try:
                name = tomllib.loads(path.read_text()).get("name")
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
                unreadable[path] = str(error)
                continue
            if not isinstance(name, str):
                unreadable[path] = "it declares no name"
                continue
            if name in here:
                clash = f"profiles {here[name]} and {path} both declare name = {name!r}: rename one"
                raise ConfigError(clash)
            here[name] = path
        files.update(here)
    return files, unreadable


def _shipped_schema_files() -> list[Path]:
    return sorted(Path(str(resources.files("batchcast.core.schemas"))).glob("*_observation.avsc"))


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: how settings and command options list several names."""
    return [item.strip() for item in text.split(",") if item.strip()]


def enabled_profiles() -> list[Profile]:
    """The profiles this deployment serves (``BATCHCAST_PROFILES``, default: all known) that load.

    A broken profile is left out rather than failing the others: every upload reads this list, and
    one invalid file must not stop every other dataset. :func:`profile_problems` says what is broken.
    """
    return _load_enabled()[0]


def profile_problems() -> dict[str, str]:
    """Each enabled profile that cannot be loaded (by name, or by file when no name can be read) ->
    why, naming its file: what ``batchcast profiles`` and ``batchcast status`` report."""
    return _load_enabled()[1]


def _load_enabled() -> tuple[list[Profile], dict[str, str]]:
    wanted = comma_list(os.environ.get("BATCHCAST_PROFILES", ""))
    loaded: list[Profile] = []
    problems: dict[str, str] = {}
    for name in wanted or profile_names():
        try:
            loaded.append(load_profile(name))
        except ConfigError as error:
            problems[name] = str(error)
    if not wanted:  # files whose name could not even be read belong to no name: report them by file
        unreadable = _profile_files()[1]
        problems |= {str(path): f"{path}: not a readable profile: {why}" for path, why in unreadable.items()}
    return loaded, problems


def _profile_dirs() -> list[Path]:
    dirs = [Path(str(resources.files("batchcast.core") / "profiles"))]
    extra = os.environ.get("BATCHCAST_PROFILE_DIR")
    return ([Path(extra)] if extra else []) + dirs
