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
    model_config = ConfigDict(extra="forbid", frozen=True)


class City(_Strict):
    """A city (the group key): where its holidays and wall clock come from."""

    country: str = Field(min_length=2, max_length=2)
    subdivision: str | None = None
    timezone: str | None = None  # defaults to the profile's


class Covariate(_Strict):
    """An input the profile declares beside the target: its value type and when it is known.

    ``past``: known only up to the forecast origin (yesterday's footfall); the model uses its value
    as of the origin. ``known``: known in advance for the target period too (a weather forecast, a
    planned promo or closure); the model uses its value at the target period, which predict takes
    from future-values uploads (a mapping of kind ``future``).
    """

    type: Literal["number", "integer", "boolean"] = "number"
    timing: Literal["past", "known"]
    description: str = ""


class ColumnMapping(_Strict):
    """How one kind of user file maps onto the profile's schema.

    ``kind`` is ``rows`` (one row per entity and period), ``trips`` (one row per trip: the pipeline
    derives departures and arrivals per station-hour), ``counts`` (per station-hour counts) or
    ``future`` (values of ``known`` covariates for target periods, per entity or, when the entity
    is empty or not mapped, for every entity of the city).
    """

    kind: Literal["rows", "trips", "counts", "future"] = "rows"
    columns: dict[str, str]  # pipeline field (or declared covariate) -> the user's column name
    optional: list[str] = []  # pipeline fields whose column may be missing from a file
    constants: dict[str, str] = Field(default_factory=dict)  # pipeline field -> fixed value
    date_format: str | None = None  # strftime format of the time column(s); None: ISO 8601
    extra_columns: Literal["ignore", "reject"] = "ignore"
    true_values: list[str] = ["1", "true", "True", "TRUE", "yes", "y"]
    false_values: list[str] = ["0", "false", "False", "FALSE", "no", "n"]

    @property
    def source_columns(self) -> set[str]:
        """The columns a file must have for this mapping to apply."""
        return {column for field, column in self.columns.items() if field not in self.optional}


class RollingFeature(_Strict):
    """Rolling statistics over ``window`` periods, shifted so they only see data before the origin."""

    window: int = Field(ge=2)
    stats: list[Literal["mean", "std", "min", "max"]] = ["mean"]


class Features(_Strict):
    """Declarative features, in the spirit of mlforecast: lags, rolling windows, calendar, holidays."""

    lags: list[int] = Field(min_length=1)
    rolling: list[RollingFeature] = []
    calendar: list[Literal["dayofweek", "month", "dayofyear", "hour", "is_weekend"]] = []
    holidays: bool = True
    # The declared covariates the model uses (None: every one the profile declares), each as its
    # timing says: as of the origin (past) or at the target period (known).
    covariates: list[str] | None = None
    scale_window: int = Field(default=28, ge=2)  # per-entity scaling, so one huge store is not special
    # A period with no row: unknown ("nan", a store that did not report) or zero ("zero", a
    # station-hour without trips).
    fill_missing: Literal["nan", "zero"] = "nan"

    @field_validator("lags")
    @classmethod
    def _positive(cls, lags: list[int]) -> list[int]:
        if min(lags) < 1:
            raise ValueError("lags must be >= 1")
        return sorted(set(lags))


class Horizon(_Strict):
    """The target period: the next day, or the next of a set of intraday windows (hours, local)."""

    windows: list[tuple[int, int]] = []  # empty: daily frequency, the target is the next day
    closed_hours: tuple[int, int] | None = None  # service closed: no trips, no predictions

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
    actions: list[Action] = Field(min_length=1)

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
    quantiles: list[float] = [0.1, 0.5, 0.9]
    max_iter: int = Field(default=200, ge=10)
    learning_rate: float = Field(default=0.1, gt=0, le=1)
    max_leaf_nodes: int = 31
    # inline: train inside train_trigger; job: hand every training to a job (Cloud Run job, or a
    # ``batchcast train`` process locally). Inline is refused when the estimate exceeds the limit.
    mode: Literal["inline", "job"] = "inline"
    max_inline_seconds: int = Field(default=480, le=540)  # event-driven functions stop at 540 s
    # The size estimate: each HistGradientBoosting fit costs a fixed part plus a part per row.
    # Measured on a 2-core machine: ~0.8 s per fit, plus ~10 s per million training rows.
    seconds_per_fit: float = Field(default=0.8, ge=0)
    seconds_per_million_rows: float = Field(default=10.0, ge=0)
    debounce_minutes: int = Field(default=0, ge=0)  # data-triggered retrains at most this often

    @field_validator("quantiles")
    @classmethod
    def _median_included(cls, quantiles: list[float]) -> list[float]:
        if 0.5 not in quantiles or any(not 0 < q < 1 for q in quantiles):
            raise ValueError("quantiles must lie in (0, 1) and include 0.5")
        return sorted(quantiles)


class Backtest(_Strict):
    """Rolling-origin backtest: ``folds`` origins, each forecasting ``window`` periods."""

    folds: int = Field(default=3, ge=1)
    window: int = Field(default=7, ge=1)
    season: int = Field(default=7, ge=1)  # seasonal-naive baseline and MASE scale


class Sharding(_Strict):
    """How a city's entities are split into predict requests: balanced by history rows."""

    target_rows: int = Field(default=200_000, ge=1)
    max_shards: int = Field(default=64, ge=1)


class Validation(_Strict):
    """Row-level rules that are about values rather than types."""

    allow_negative_target: bool = False


class Profile(_Strict):
    """One workload: retail sales, bike-share net change, or a user's own."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    description: str = ""
    # The shipped .avsc the partitioned rows extend (batchcast/core/schemas/<base_schema>.avsc); None:
    # the schema is generated from entity_key, time_column, target and the covariates. Never read
    # rows with it alone: schemas.observation(profile) adds the declared covariates. (Its TOML key
    # was schema_name, still accepted.)
    base_schema: str | None = Field(default=None, validation_alias=AliasChoices("base_schema", "schema_name"))
    entity_key: str
    time_column: str
    target: str
    frequency: Literal["daily", "hourly"]
    timezone: str
    cities: dict[str, City] = Field(min_length=1)
    schedule: list[ScheduleEntry] = Field(min_length=1)
    # What an upload asks for, for the entities it carried. Retraining belongs on the schedule:
    # with "train" here, training.debounce_minutes must say how often uploads may retrain.
    on_upload: list[Action] = ["predict"]
    horizon: Horizon = Horizon()
    features: Features
    training: Training
    backtest: Backtest = Backtest()
    sharding: Sharding = Sharding()
    validation: Validation = Validation()
    covariates: dict[str, Covariate] = {}
    mappings: dict[str, ColumnMapping] = Field(min_length=1)

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
        if self.frequency == "hourly" and not self.horizon.windows:
            raise ValueError("an hourly profile needs horizon.windows")
        if self.frequency == "daily" and self.horizon.windows:
            raise ValueError("a daily profile forecasts the next day: leave horizon.windows empty")
        if "train" in self.on_upload and self.training.debounce_minutes < 1:
            raise ValueError(
                "on_upload includes train but training.debounce_minutes is 0: every store's upload "
                "would retrain its city; set debounce_minutes (e.g. 60) or train on the schedule only"
            )
        horizon = self.horizon_periods
        if min(self.features.lags) < horizon:
            raise ValueError(f"every lag must be >= the horizon ({horizon} periods)")
        for city in self.cities.values():
            if city.timezone:
                self._known_zone(city.timezone)
        # Every mistake at once: fixing a profile one error per load is slow. The mappings are checked
        # against the schema, so only once the schema can be derived.
        problems = _schema_problems(self)
        problems += _feature_problems(self) + ([] if problems else _mapping_problems(self))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def period(self) -> timedelta:
        """The length of one period of the target's frequency."""
        return timedelta(days=1) if self.frequency == "daily" else timedelta(hours=1)

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

    @property
    def horizon_periods(self) -> int:
        """How many periods a target window spans (1 for daily, the window length for hourly)."""
        if not self.horizon.windows:
            return 1
        return max(end - start for start, end in self.horizon.windows)

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
        if mapping.kind == "future" and not set(mapping.columns) & set(profile.known_covariates):
            readable = ", ".join(profile.known_covariates) or 'none (none is declared timing = "known")'
            problems.append(f"{where} reads no covariate known in advance; it may read {readable}")
    problems += _unread_covariates(profile)
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


def target_date(start: datetime) -> date:
    """The ``dt=`` of a target period: the local date it starts on."""
    return start.date()


# -- loading ---------------------------------------------------------------------------------------


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    """Parse and validate a TOML profile; raise :class:`ConfigError` naming the source and, one per
    line, every problem found."""
    try:
        return Profile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from error
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid profile:\n{_describe(error)}") from error


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
