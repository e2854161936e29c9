"""``batchcast init``: inspect a user's CSV file and write a commented profile that reads it.

What the file tells (:func:`inspect_file`): its delimiter, each column's type (date and datetime
formats included), the time column (and an hour column beside a date), the entity column (none: a
single series), a city column, the target, the time step, and how many rows each entity has per
period (more than one: the mapping adds them up). What it cannot tell (the city's name and country,
the time zone, a choice between look-alike columns) comes from :class:`Answers`: flags, or prompts
when a person is at the terminal. :func:`profile_text` writes the profile as TOML with a comment on
every choice; the CLI then validates it and runs a dry partition of the file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from batchcast.core.config import Profile
from batchcast.core.schemas import BOOKKEEPING_FIELDS, GROUP_KEY
from batchcast.data.validation import read_upload
from batchcast.data.validation.sources import delimiter_of

_UNIT = {"daily": "day", "hourly": "hour"}
SAMPLE_ROWS = 200_000  # rows inspected: enough to see every shape, bounded for a large file
TRUE = {"1", "true", "True", "TRUE", "yes", "y"}
FALSE = {"0", "false", "False", "FALSE", "no", "n"}
# Tried in order; the first that reads every value wins (month-first before day-first: a file
# whose days never exceed 12 is ambiguous, and init says so).
DATE_FORMATS = ("%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%Y%m%d")
TIME_SUFFIXES = ("", " %H:%M", " %H:%M:%S")
_ENTITY_HINT = re.compile(
    r"(^|_)(id|store|station|shop|site|location|sensor|branch|sku|product|meter)s?($|_)"
)
_TARGET_HINT = re.compile(
    r"(^|_)(sales|cnt|count|demand|target|rentals?|trips|qty|quantity|units|volume|load|revenue|y)($|_)"
)
_HOUR_HINT = re.compile(r"(^|_)(hr|hour|hour_of_day|time)($|_)")


class InitError(Exception):
    """The file cannot be turned into a profile; the message says why and what to pass."""


@dataclass
class Column:
    """What one of the file's columns holds."""

    name: str
    kind: str  # date, datetime, hour, clock (08:15), integer, number, boolean, text
    date_format: str | None = None  # date and datetime: None means ISO 8601
    blanks: int = 0
    distinct: int = 0

    @property
    def numeric(self) -> bool:
        return self.kind in ("integer", "number")


@dataclass
class Answers:
    """What the user decided (flags or prompts); None: infer it."""

    name: str | None = None
    entity: str | None = None
    time: str | None = None
    target: str | None = None
    frequency: str | None = None
    city: str | None = None
    country: str | None = None
    timezone: str | None = None


@dataclass
class Inspection:
    """What :func:`inspect_file` found, and the choices made from it."""

    path: Path
    delimiter: str
    rows: int
    columns: dict[str, Column]
    time: str
    time_of_day: str | None
    entity: str | None
    city_column: str | None
    cities: list[str]  # the city column's values (each becomes a [cities.<name>] section)
    target: str | None  # None: each row is one event, counted
    step: timedelta | None  # the most common gap between an entity's consecutive times
    frequency: str
    rows_per_period: int  # the most rows one entity has in one period
    covariates: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def aggregate(self) -> bool:
        """Whether the mapping must add rows up into periods."""
        return self.rows_per_period > 1 or self.target is None


def read_sample(path: Path) -> tuple[pd.DataFrame, str]:
    """The file's first :data:`SAMPLE_ROWS` rows as text, and its delimiter."""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        head = handle.read(64 * 1024)
    delimiter = delimiter_of(head)
    frame = pd.read_csv(
        path, sep=delimiter, dtype=str, keep_default_na=False, nrows=SAMPLE_ROWS, encoding="utf-8-sig"
    )
    if frame.empty:
        raise InitError(f"{path} has a header but no rows to learn from")
    return frame, delimiter


def describe_column(name: str, values: pd.Series) -> Column:
    """The kind of value a column holds, from its non-blank values."""
    present = values[values.str.strip() != ""].str.strip()
    column = Column(name, "text", blanks=len(values) - len(present), distinct=present.nunique())
    if present.empty:
        return column
    unique = pd.Series(present.unique())
    if unique.isin(TRUE | FALSE).all():
        column.kind = "boolean"
        return column
    numbers = pd.to_numeric(unique, errors="coerce")
    if numbers.notna().all():
        whole = bool((numbers == numbers.round()).all())
        column.kind = "integer" if whole else "number"
        if whole and numbers.between(0, 23).all() and _HOUR_HINT.search(name.lower()):
            column.kind = "hour"
        if whole and unique.str.fullmatch(r"\d{8}").all() and re.search("date|day", name.lower()):
            column.kind, column.date_format = "date", "%Y%m%d"
        return column
    if unique.str.fullmatch(r"\d{1,2}:\d\d(:\d\d)?").all():
        column.kind = "clock"
        return column
    found = _date_format(unique)
    if found is not None:
        column.date_format, has_time = found
        column.kind = "datetime" if has_time else "date"
    return column


def _date_format(values: pd.Series) -> tuple[str | None, bool] | None:
    """``(format, has a time of day)`` that reads every value (None format: ISO 8601), or None."""
    candidates: list[str | None] = [None]
    candidates += [f"{date}{time}" for date in DATE_FORMATS for time in TIME_SUFFIXES]
    for fmt in candidates:
        try:
            parsed = pd.to_datetime(values, format=fmt or "ISO8601", errors="coerce")
        except (ValueError, TypeError):  # mixed offsets: not a plain column of local times
            continue
        if parsed.notna().all():
            return fmt, bool((parsed != parsed.dt.normalize()).any()) or "%H" in (fmt or "")
    return None


def inspect_file(path: Path, answers: Answers) -> Inspection:
    """Inspect the file at ``path``; ``answers`` override what would be inferred."""
    frame, delimiter = read_sample(path)
    columns = {name: describe_column(name, frame[name]) for name in frame.columns}
    notes: list[str] = []
    time = _choose_time(columns, answers)
    time_of_day = None
    if columns[time].kind == "date":
        time_of_day = next((c.name for c in columns.values() if c.kind in ("hour", "clock")), None)
    entity = _choose_entity(columns, answers, time, notes)
    city_column = next((c for c in columns if c.lower() == GROUP_KEY and c != entity), None)
    keys = {time, time_of_day, entity, city_column}
    times = _times(frame, columns[time], time_of_day)
    step = _step(times, [frame[entity]] if entity else [])
    events = step is not None and step < timedelta(hours=1)
    target = _choose_target(columns, answers, keys, events, notes)
    frequency = answers.frequency or _frequency(step, time_of_day, columns[time])
    period = pd.Timedelta(days=1) if frequency == "daily" else pd.Timedelta(hours=1)
    per_period = times.dt.floor(period).to_frame("t")
    if entity:
        per_period["e"] = frame[entity].to_numpy()
    rows_per_period = int(per_period.groupby(list(per_period.columns)).size().max())
    if rows_per_period > 1:
        notes.append(
            f"up to {rows_per_period} rows per {'entity and ' if entity else ''}{_UNIT[frequency]}: "
            "the mapping adds them up (aggregate)"
        )
    if columns[time].date_format and columns[time].date_format.startswith(("%m/%d", "%d/%m")):
        notes.append(
            f"{time} reads as {columns[time].date_format}; if your days and months are the other way "
            "round, swap them in date_format"
        )
    covariates = [
        c.name
        for c in columns.values()
        if c.name not in keys | {target}
        and (c.numeric or c.kind == "boolean")
        and not (c.kind == "integer" and c.distinct >= len(frame) * 0.99)  # a row number, not an input
    ]
    return Inspection(
        path=path,
        delimiter=delimiter,
        rows=len(frame),
        columns=columns,
        time=time,
        time_of_day=time_of_day,
        entity=entity,
        city_column=city_column,
        cities=sorted(map(str, frame[city_column].dropna().unique())) if city_column else [],
        target=target,
        step=step,
        frequency=frequency,
        rows_per_period=rows_per_period,
        covariates=covariates,
        notes=notes,
    )


def _choose_time(columns: dict[str, Column], answers: Answers) -> str:
    if answers.time:
        if answers.time not in columns:
            raise InitError(f"--time {answers.time!r} is not a column (columns: {', '.join(columns)})")
        return answers.time
    timed = [c.name for c in columns.values() if c.kind in ("date", "datetime")]
    if not timed:
        raise InitError(
            "no column holds dates or times in a form init knows (ISO 8601, "
            f"{', '.join(DATE_FORMATS)}); pass --time COLUMN and set date_format in the profile"
        )
    return max(
        timed, key=lambda n: (columns[n].kind == "datetime", bool(re.search("date|time|day", n.lower())))
    )


def _choose_entity(columns: dict[str, Column], answers: Answers, time: str, notes: list[str]) -> str | None:
    if answers.entity:
        if answers.entity not in columns:
            raise InitError(f"--entity {answers.entity!r} is not a column (columns: {', '.join(columns)})")
        return answers.entity
    hinted = [
        c.name
        for c in columns.values()
        if c.name != time and c.kind in ("text", "integer") and _ENTITY_HINT.search(c.name.lower())
    ]
    if not hinted:
        notes.append(
            "no entity column (store, station, ...id): the file is one series; pass --entity to choose one"
        )
        return None
    if len(hinted) > 1:
        notes.append(
            f"entity column {hinted[0]!r} chosen among {', '.join(hinted)}; pass --entity to choose another"
        )
    return hinted[0]


def _choose_target(
    columns: dict[str, Column], answers: Answers, keys: set[str | None], events: bool, notes: list[str]
) -> str | None:
    if answers.target:
        if answers.target not in columns:
            raise InitError(f"--target {answers.target!r} is not a column (columns: {', '.join(columns)})")
        return answers.target
    numeric = [c.name for c in columns.values() if c.numeric and c.name not in keys]
    hinted = [n for n in numeric if _TARGET_HINT.search(n.lower())]
    if hinted:
        return hinted[-1]
    if numeric and not events:
        notes.append(f"target {numeric[-1]!r} is the last numeric column; pass --target to choose another")
        return numeric[-1]
    notes.append(
        "each row is one event: the target counts them per period"
        + (f" (pass --target to add up {numeric[-1]!r} instead)" if numeric else "")
    )
    return None


def _times(frame: pd.DataFrame, time: Column, time_of_day: str | None) -> pd.Series:
    values = pd.to_datetime(
        frame[time.name].str.strip(), format=time.date_format or "ISO8601", errors="coerce"
    )
    if values.dt.tz is not None:
        values = values.dt.tz_localize(None)
    if time_of_day:
        text = frame[time_of_day].str.strip()
        clock = text.where(text.str.contains(":"))
        offsets = pd.to_timedelta(pd.to_numeric(text, errors="coerce"), unit="h").fillna(
            pd.to_timedelta(clock.where(clock.str.count(":") != 1, clock + ":00"), errors="coerce")
        )
        values = values + offsets
    return values


def _step(times: pd.Series, series: list[pd.Series]) -> timedelta | None:
    frame = pd.DataFrame({"t": times.to_numpy()})
    if series:
        frame["e"] = series[0].to_numpy()
    frame = frame.dropna().drop_duplicates().sort_values([*frame.columns[1:], "t"])
    gaps = frame.groupby("e")["t"].diff() if series else frame["t"].diff()
    gaps = gaps[gaps > pd.Timedelta(0)]
    return None if gaps.empty else gaps.mode().iloc[0].to_pytimedelta()


def _frequency(step: timedelta | None, time_of_day: str | None, time: Column) -> str:
    if step is None:
        return "hourly" if time_of_day or time.kind == "datetime" else "daily"
    return "daily" if step >= timedelta(days=1) else "hourly"


# -- writing the profile ---------------------------------------------------------------------------


def field_name(column: str) -> str:
    """A pipeline field name (letters, digits, ``_``) for a user's column."""
    name = re.sub(r"[^a-z0-9_]+", "_", column.strip().lower()).strip("_") or "value"
    return f"c_{name}" if name[0].isdigit() else name


def profile_text(found: Inspection, answers: Answers) -> str:
    """The profile as commented TOML."""
    name = answers.name or field_name(found.path.stem).replace("_", "-")[:60] or "mydata"
    name = name if re.match(r"^[a-z]", name) else f"p-{name}"
    if unanswered(answers, found):
        raise InitError(f"the profile needs {', '.join(unanswered(answers, found))}")
    city = answers.city or found.cities[0]
    entity_key = field_name(found.entity) if found.entity else "series"
    time_column = "hour" if found.frequency == "hourly" else "date"
    target = field_name(found.target) if found.target else "events"
    taken = {entity_key, time_column, target, GROUP_KEY, *BOOKKEEPING_FIELDS}
    covariates = {}
    for column in found.covariates:
        field_ = field_name(column)
        while field_ in taken:
            field_ += "_x"
        taken.add(field_)
        covariates[field_] = column
    hourly = found.frequency == "hourly"
    lines = [
        f"# Written by `batchcast init {found.path.name}`: every choice below says why; edit freely.",
        "# Reference for every field: docs/profile-reference.md.",
        f'name = "{name}"',
        f'description = "Forecasts of {target} per {entity_key}, from {found.path.name}"',
        f'entity_key = "{entity_key}"  # from column {found.entity!r}'
        if found.entity
        else f'entity_key = "{entity_key}"  # the file has no entity column: one series, named by a constant',
        f'time_column = "{time_column}"  # from column {found.time!r}'
        + (f" plus the hour in {found.time_of_day!r}" if found.time_of_day else ""),
        f'target = "{target}"'
        + (f"  # from column {found.target!r}" if found.target else "  # rows counted"),
        f'frequency = "{found.frequency}"  # the file steps by {_shown_step(found.step)}',
        f'timezone = "{answers.timezone}"  # the wall clock of the file\'s times',
        "",
    ]
    for city_name in found.cities or [city]:
        lines += [
            f"[cities.{json.dumps(city_name)}]",
            f'country = "{answers.country.upper()}"  # public holidays come from here',
            "",
        ]
    if hourly:
        lines += [
            "# The intraday target periods (local hours); each scheduled predict forecasts the next one.",
            "[horizon]",
            "windows = [[0, 6], [6, 12], [12, 18], [18, 24]]",
            "",
            "[[schedule]]",
            'cron = "0 23,5,11,17 * * *"',
            'actions = ["train", "predict"]',
        ]
    else:
        lines += [
            "# At midnight: train, then forecast the day that just began; check freshness after.",
            "[[schedule]]",
            'cron = "0 0 * * *"',
            'actions = ["train", "predict"]',
        ]
    lines += [
        "",
        "[[schedule]]",
        f'cron = "30 {"0,6,12,18" if hourly else "0"} * * *"',
        'actions = ["notify"]',
        "",
    ]
    lines += _model_lines(hourly, counted=found.target is None)
    for field_, column in covariates.items():
        kind = found.columns[column].kind
        lines += [
            f"[covariates.{field_}]  # column {column!r}",
            f'type = "{"boolean" if kind == "boolean" else "integer" if kind == "integer" else "number"}"',
            'timing = "past"  # known up to the forecast; "known" if you can upload its future values',
            "",
        ]
    lines += _mapping_lines(found, entity_key, time_column, target, city, covariates)
    return "\n".join(lines) + "\n"


def _model_lines(hourly: bool, counted: bool) -> list[str]:
    """Features, training and backtest: defaults that suit the frequency."""
    calendar = '["hour", "dayofweek", "is_weekend"]' if hourly else '["dayofweek", "month"]'
    fill = (
        '"zero"  # a period without rows had no events'
        if counted
        else '"nan"  # a period without a row is unknown'
    )
    return [
        "[features]",
        "lags = [6, 12, 24, 168]  # every lag must be >= the longest window"
        if hourly
        else "lags = [1, 2, 7, 14]",
        f'rolling = [{{ window = {24 if hourly else 7}, stats = ["mean"] }}]',
        f"calendar = {calendar}",
        f"fill_missing = {fill}",
        "",
        "[training]",
        f"window = {24 * 56 if hourly else 365}  # periods of history each model learns from",
        "",
        "[backtest]",
        f"window = {24 if hourly else 7}",
        f"season = {168 if hourly else 7}",
        "",
    ]


def _mapping_lines(
    found: Inspection, entity_key: str, time_column: str, target: str, city: str, covariates: dict[str, str]
) -> list[str]:
    columns = {time_column: found.time}
    constants = {}
    if found.entity:
        columns[entity_key] = found.entity
    else:
        constants[entity_key] = "all"
    if found.city_column:
        columns[GROUP_KEY] = found.city_column
    else:
        constants[GROUP_KEY] = city
    if found.target:
        columns[target] = found.target
    else:
        constants[target] = "1"
    columns.update(covariates)
    optional = [f for f, c in covariates.items() if found.columns[c].blanks]
    lines = [
        f"# How {found.path.name} maps onto the fields above (field = your column).",
        "[mappings.file]",
        'kind = "rows"',
        "columns = { " + ", ".join(f'{f} = "{c}"' for f, c in columns.items()) + " }",
    ]
    if optional:
        lines.append(f"optional = {optional}".replace("'", '"') + "  # columns with blanks")
    if constants:
        lines.append("constants = { " + ", ".join(f'{f} = "{v}"' for f, v in constants.items()) + " }")
    fmt = found.columns[found.time].date_format
    if fmt:
        lines.append(f'date_format = "{fmt}"')
    if found.time_of_day:
        lines.append(f'time_of_day = "{found.time_of_day}"  # the hour beside the date')
    if found.aggregate:
        reducers = {target: "sum"}
        for field_, column in covariates.items():
            reducers[field_] = "mean" if found.columns[column].kind == "number" else "max"
        lines.append(
            "aggregate = { " + ", ".join(f'{f} = "{r}"' for f, r in reducers.items()) + " }"
            f"  # up to {found.rows_per_period} rows per period are added up"
        )
    return lines


def _shown_step(step: timedelta | None) -> str:
    if step is None:
        return "an unknown step (one time per entity)"
    if step >= timedelta(days=1):
        return f"{step.days} day(s)"
    if step >= timedelta(hours=1):
        return f"{step.seconds // 3600} hour(s)"
    return f"{int(step.total_seconds() // 60)} minute(s): events, added up into hours"


# -- the dry run -----------------------------------------------------------------------------------


@dataclass
class DryRun:
    """What a partition of the file would accept under the new profile."""

    rows_read: int
    rows_accepted: int
    file_errors: list[str]
    reasons: dict[str, int]
    first_errors: list[dict]
    entities: int
    periods: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None


def dry_partition(path: Path, profile: Profile, now: datetime) -> DryRun:
    """Validate the whole file as an upload with ``profile``'s mapping, writing nothing."""
    entities: set[tuple[str, str]] = set()
    periods, first, last = 0, None, None
    size = path.stat().st_size
    with (
        path.open("rb") as stream,
        read_upload(stream, "csv", size=size, logical_time=now, profiles=[profile], mapping="file") as upload,
    ):
        for city, entity, rows in upload.groups():
            entities.add((city, entity))
            times = rows[profile.time_column]
            periods += len(rows)
            first = times.min() if first is None else min(first, times.min())
            last = times.max() if last is None else max(last, times.max())
        result = upload.result
    return DryRun(
        rows_read=result.rows_read,
        rows_accepted=result.rows_accepted,
        file_errors=result.file_errors,
        reasons=result.reason_counts(),
        first_errors=result.row_errors[:5],
        entities=len(entities),
        periods=periods,
        first=first,
        last=last,
    )


def summary(found: Inspection, written: Path, dry: DryRun) -> list[str]:
    """What init found, wrote and what a partition would accept, as lines for the terminal."""
    delimiter = {",": "comma", ";": "semicolon", "\t": "tab"}[found.delimiter]
    lines = [
        f"inspected {found.rows:,} rows of {found.path} ({delimiter}-separated)",
        "  columns    "
        + ", ".join(
            f"{c.name} ({c.kind}{' ' + c.date_format if c.date_format else ''})"
            for c in found.columns.values()
        ),
        f"  time       {found.time}"
        + (f" + hour {found.time_of_day}" if found.time_of_day else "")
        + f", {found.frequency} (step {_shown_step(found.step)})",
        f"  entity     {found.entity or '(none: one series)'}",
        f"  target     {found.target or '(rows counted)'}",
        f"  covariates {', '.join(found.covariates) or 'none'}",
        *(f"  note: {note}" for note in found.notes),
        f"wrote {written}",
        "dry partition (nothing written):",
    ]
    if dry.file_errors:
        return [*lines, *(f"  file rejected: {error}" for error in dry.file_errors)]
    lines += [
        f"  rows read {dry.rows_read:,}, accepted {dry.rows_accepted:,}, "
        f"rejected {dry.rows_read - dry.rows_accepted:,}",
        f"  {dry.entities} entities, {dry.periods:,} periods from {dry.first} to {dry.last}",
        *(f"  rejected: {reason} x{count}" for reason, count in dry.reasons.items()),
        *(f"  row {e['row']}: {'; '.join(e['reasons'])}" for e in dry.first_errors),
    ]
    return lines


def unanswered(answers: Answers, found: Inspection) -> list[str]:
    """The options a script must pass because the file does not tell them (a terminal is asked):
    holidays and wall clocks are never guessed, a wrong guess would shift every forecast quietly."""
    city = answers.city or (found.cities[0] if found.cities else None)
    needed = {"--city": city, "--country": answers.country, "--timezone": answers.timezone}
    return [option for option, value in needed.items() if value is None]


def ask(answers: Answers, found: Inspection) -> Answers:
    """Prompt a person at the terminal for what the file cannot tell (and options left open)."""
    import typer  # only the interactive path needs it

    frequency = answers.frequency
    if frequency is None and found.frequency == "hourly":
        frequency = typer.prompt("Forecast per hour or per day (rows are added up)?", default="hourly")
    city = answers.city
    if city is None and found.city_column is None:
        city = typer.prompt("City of the file's rows (a short name, e.g. dc)", default="main")
    return Answers(
        name=answers.name,
        entity=answers.entity,
        time=answers.time,
        target=answers.target,
        frequency=frequency,
        city=city,
        country=answers.country or typer.prompt("The city's country, for public holidays", default="US"),
        timezone=answers.timezone or typer.prompt("Time zone of the file's times", default="UTC"),
    )
