"""Profiles (validated, declarative workload configuration) and settings from the environment.

A profile says everything that differs between workloads: how users' columns map onto the pipeline's
schema, the entity key, target, frequency, horizon, schedule, time zone, cities and features. The
code never branches on a profile's *name*, only on what the profile declares.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from batchcast.messages import Action

BUILTIN_PROFILES = ("retail", "bikeshare")


class ConfigError(ValueError):
    """A profile or setting is invalid; the message says which and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class City(_Strict):
    """A city (the group key): where its holidays and wall clock come from."""

    country: str = Field(min_length=2, max_length=2)
    subdivision: str | None = None
    timezone: str | None = None  # defaults to the profile's


class ColumnMapping(_Strict):
    """How one kind of user file maps onto the profile's schema.

    ``kind`` is ``rows`` (one row per entity and period), ``trips`` (one row per trip: the pipeline
    derives departures and arrivals per station-hour) or ``counts`` (per station-hour counts).
    """

    kind: Literal["rows", "trips", "counts"] = "rows"
    columns: dict[str, str]  # pipeline field -> the user's column name
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
    covariates: list[str] = []  # numeric input fields, used as of the forecast origin
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
    schema_name: str  # the .avsc of the partitioned rows (batchcast/schemas/<schema_name>.avsc)
    entity_key: str
    time_column: str
    target: str
    frequency: Literal["daily", "hourly"]
    timezone: str
    cities: dict[str, City] = Field(min_length=1)
    schedule: list[ScheduleEntry] = Field(min_length=1)
    on_upload: list[Action] = ["train", "predict"]
    horizon: Horizon = Horizon()
    features: Features
    training: Training
    backtest: Backtest = Backtest()
    sharding: Sharding = Sharding()
    validation: Validation = Validation()
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
        horizon = self.horizon_periods
        if min(self.features.lags) < horizon:
            raise ValueError(f"every lag must be >= the horizon ({horizon} periods)")
        for city in self.cities.values():
            if city.timezone:
                self._known_zone(city.timezone)
        return self

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def period(self) -> timedelta:
        """The length of one period of the target's frequency."""
        return timedelta(days=1) if self.frequency == "daily" else timedelta(hours=1)

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
    """Parse and validate a TOML profile; raise :class:`ConfigError` naming the source."""
    try:
        return Profile.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from error
    except ValidationError as error:
        raise ConfigError(f"{source}: invalid profile: {error}") from error


@cache
def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name, or a user's profile from a ``.toml`` path."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"profile file {path} does not exist")
        return parse_profile(path.read_text(), str(path))
    for directory in _profile_dirs():
        candidate = directory / f"{name_or_path}.toml"
        if candidate.is_file():
            return parse_profile(candidate.read_text(), str(candidate))
    raise ConfigError(f"unknown profile {name_or_path!r}; known: {', '.join(profile_names())}")


def profile_names() -> list[str]:
    """Every profile name this installation knows (built-in and ``BATCHCAST_PROFILE_DIR``)."""
    names = {p.stem for d in _profile_dirs() for p in d.glob("*.toml")}
    return sorted(names)


def comma_list(text: str) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``: how settings and command options list several names."""
    return [item.strip() for item in text.split(",") if item.strip()]


def enabled_profiles() -> list[Profile]:
    """The profiles this deployment serves (``BATCHCAST_PROFILES``, default: all known)."""
    wanted = os.environ.get("BATCHCAST_PROFILES", "")
    names = comma_list(wanted) or profile_names()
    return [load_profile(name) for name in names]


def _profile_dirs() -> list[Path]:
    dirs = [Path(str(resources.files("batchcast") / "profiles"))]
    extra = os.environ.get("BATCHCAST_PROFILE_DIR")
    return ([Path(extra)] if extra else []) + dirs


# -- settings from the environment -----------------------------------------------------------------


class Settings(_Strict):
    """Deployment settings, read from ``BATCHCAST_*`` environment variables (never from the repo)."""

    backend: Literal["embedded", "gcp"] = "embedded"
    root: Path = Path("batchcast-data")  # embedded: the directory that plays the bucket
    bucket: str = "embedded"  # gcp: the bucket name
    project: str | None = None  # gcp: the project of the topics
    region: str | None = None  # gcp: where functions and jobs run
    # gcp: the Cloud Run job long trainings run in: its name (in BATCHCAST_PROJECT and _REGION) or
    # projects/P/locations/R/jobs/J. Unset: a local ``batchcast train`` process (the emulator stack).
    train_job: str | None = None
    # Events published longer ago than this are acknowledged without work, so a message that
    # somehow keeps coming back (Eventarc retries storage events for a day) stops costing runs.
    max_event_age_seconds: int = Field(default=86_400, ge=1)
    max_attempts: int = Field(default=5, ge=1)  # embedded bus: deliveries before dead-lettering
    # Partition rejects a larger upload whole, unread, asking for it to be split. Its memory stays
    # flat at any size; its time does not: a 2 GiB file of rows needs ~500 s of its 540 s (README).
    max_upload_bytes: int = Field(default=2**30, ge=1)
    # Partition validates an upload this many bytes at a time; its memory grows with it
    # (bench/partition_memory.py measures both).
    partition_chunk_bytes: int = Field(default=8 * 2**20, ge=1)
    now: AwareDatetime | None = None  # pin the clock (tests, demos, reruns); None: the real clock
    # The bearer-token map's JSON (see batchcast.tokens), injected from Secret Manager; when empty
    # the map is read from the bucket object config/api_tokens.json. It holds digests, never tokens.
    api_tokens: str = ""
    # Email (issue 5). No host: the embedded backend writes emails to its outbox instead.
    smtp_host: str = ""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str = ""
    smtp_password: SecretStr = SecretStr("")  # from Secret Manager; SecretStr keeps it out of reprs
    smtp_sender: str = "batchcast@localhost"
    public_url: str = "http://localhost:8080"  # base URL of the managers' page, for links in emails
    # A store stale for less than this after its forecast fell due is not alerted yet: forecasts of
    # other cities are still arriving (the schedule checks freshness 30 minutes after predicting).
    alert_grace_minutes: int = Field(default=20, ge=0)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Read each field from ``BATCHCAST_<FIELD>`` (e.g. ``BATCHCAST_ROOT``, ``BATCHCAST_NOW``)."""
        env = os.environ if environ is None else environ
        values = {
            field: env[f"BATCHCAST_{field.upper()}"]
            for field in cls.model_fields
            if f"BATCHCAST_{field.upper()}" in env
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(f"invalid BATCHCAST_* settings: {error}") from error
