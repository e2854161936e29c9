"""Validate an upload: bytes in, typed good rows and every reason for the bad ones out.

Pure: no ports, no cloud. :func:`validate_upload` reads a CSV or Avro upload, picks the profile and
column mapping that fit its header, parses every mapped column vectorised (per-row Python runs only
for rows that are rejected), and returns the good rows in the profile's Avro schema.

Rules, each in one place:

* A file is rejected whole (``file_errors``) when it cannot be read as a table or no mapping fits it:
  empty, header only, not UTF-8, a corrupt Avro file, missing columns, an ambiguous header, extra
  columns under a mapping that rejects them.
* A row is rejected when it is malformed (wrong field count, broken quoting), a required value is
  missing, a value does not parse as its field's type, an id is not a safe path segment, its city is
  unknown, its period is not aligned to the profile's frequency or lies after the upload's logical
  time (in the city's wall clock), its target is negative where the profile forbids that, a trip
  ended before it started, or it duplicates another row (see :func:`_duplicates`).
* Every reason reads ``"<category>: <detail>"``; the categories are the constants below, and reports
  count reasons per category.

Rows are numbered 1-based over the data rows (the header and blank lines are not counted). A CSV
is read by pandas when a vectorised field count shows every record well formed; otherwise Python's
csv module finds exactly which records are not, and a bad record that spans lines (a stray quote)
costs only its first line. Avro records are turned into the text a CSV would hold, so both formats
share one parsing path. Timestamps without an offset are the city's wall clock; ones with an offset
are converted to it.

Mapping kinds: ``rows`` map onto the schema directly; ``counts`` (station-hour counts) and ``trips``
(one row per trip, aggregated to departures and arrivals per station and period) derive the target
as ``arrivals - departures``; ``future`` holds values of covariates known in advance for target
periods (its rows are in :func:`schemas.future`, an empty entity meaning the whole city, and their
periods may of course lie after the upload's time).

The fields a mapping reads come from the profile's schema (:func:`schemas.observation`), declared
covariates included, so a covariate's values are parsed by its type with the same reasons as any
other field.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import fastavro
import numpy as np
import pandas as pd

from batchcast import config, layout, schemas
from batchcast.config import ColumnMapping, Profile
from batchcast.schemas import GROUP_KEY

ROW = "row"  # the column of the rejected frame that holds the data-row number
DEPARTURES, ARRIVALS = config.COUNT_FIELDS  # what the counts and trips kinds count

# Reason categories.
MALFORMED = "malformed row"
MISSING = "missing value"
NOT_A_NUMBER = "not a number"
NOT_A_BOOLEAN = "not a boolean"
BAD_DATE = "bad date"
BAD_TIMESTAMP = "bad timestamp"
INVALID_ID = "invalid id"
UNKNOWN_CITY = "unknown city"
FUTURE = "future period"
NEGATIVE_TARGET = "negative target"
NEGATIVE_COUNT = "negative count"
ENDED_BEFORE_STARTED = "ended before started"
DUPLICATE = "duplicate row"
CONFLICT = "conflicting duplicate"

_BOM = b"\xef\xbb\xbf"
_QUOTE, _COMMA, _LF, _CR = (ord(c) for c in '",\n\r')
_OFFSET = r"(?:[zZ]|[+-]\d\d(?::?\d\d)?)$"  # a timestamp that names its UTC offset
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # a line and its end, as newline="" splits
_INT_BOUNDS = {"int": 2**31, "long": 2**63}
_CHUNK = 100_000  # records per DataFrame chunk on the slow CSV path, to bound Python objects


@dataclass
class ValidatedUpload:
    """What validation made of one upload."""

    profile: Profile | None
    mapping: str | None
    good: pd.DataFrame  # the profile's schema fields, typed, sorted by city, entity and period
    rejected: pd.DataFrame  # bad source rows in the user's columns, plus ``row`` (first)
    row_errors: list[dict[str, Any]]  # [{"row": n, "reasons": [...]}], by row
    file_errors: list[str]  # non-empty: the whole file is rejected
    warnings: list[str]
    rows_read: int
    rows_accepted: int = 0  # source rows that flowed (trips, for a trips mapping; not station-hours)

    @property
    def kind(self) -> str | None:
        """The chosen mapping's kind (``future``: ``good`` holds future values), None if none fit."""
        return self.profile.mappings[self.mapping].kind if self.profile and self.mapping else None

    @property
    def rows_rejected(self) -> int:
        """Source rows that did not flow (all of them when the file is rejected)."""
        return self.rows_read - self.rows_accepted

    def reason_counts(self) -> dict[str, int]:
        """How often each reason category occurs over all rejected rows."""
        counts = Counter(r.split(":", 1)[0] for e in self.row_errors for r in e["reasons"])
        return dict(sorted(counts.items()))


class _FileRejected(Exception):
    """The whole file is rejected; ``args[0]`` says why."""


@dataclass(frozen=True)
class _Field:
    """One pipeline field a mapping reads: what kind of value it holds and whether it may be empty."""

    name: str
    kind: str  # id, city, period, timestamp, integer, number, boolean, text
    nullable: bool
    avro: str = "string"  # the Avro type (its range bounds integers)
    logical: str | None = None


# A trips mapping reads these fields (its schema fields are derived from them).
TRIP_FIELDS = tuple(_Field(name, kind, nullable) for name, (kind, nullable) in config.TRIP_FIELDS.items())


def validate_upload(
    data: bytes,
    ext: str,
    *,
    logical_time: datetime,
    dataset: str | None = None,
    mapping: str | None = None,
    profiles: list[Profile] | None = None,
) -> ValidatedUpload:
    """Validate one upload (``ext`` is ``csv`` or ``avro``) against the enabled profiles.

    ``dataset`` and ``mapping`` (the object's metadata) pin the profile and mapping; otherwise they
    are detected from the header. ``logical_time`` (aware) is the upload's time: periods after it,
    in the city's wall clock, are rejected. Never raises for bad input.
    """
    upload = ValidatedUpload(None, None, pd.DataFrame(), pd.DataFrame(columns=[ROW]), [], [], [], 0)
    try:
        table = _read_table(data, ext.lower())
        upload.rows_read = table.rows
        profile, name, chosen = _choose_mapping(
            table.header, config.enabled_profiles() if profiles is None else profiles, dataset, mapping
        )
        upload.profile, upload.mapping = profile, name
        upload.warnings = _check_columns(table.header, profile, name, chosen)
        if table.rows == 0:
            raise _FileRejected("no data rows: the file has a header only")
        _validate_rows(upload, table, profile, chosen, logical_time)
    except _FileRejected as rejected:
        upload.file_errors = [str(rejected.args[0])]
        upload.rows_accepted = 0
    return upload


# -- reading the table ---------------------------------------------------------------------------


@dataclass
class _Table:
    """An upload as a table: its header, and its rows as text (Avro records are kept as read)."""

    header: list[str]
    frame: pd.DataFrame | None = None  # CSV: every row as strings, malformed ones padded
    records: list[dict[str, Any]] | None = None  # Avro: records until the mapping is known
    malformed: dict[int, str] = field(default_factory=dict)  # position -> reason

    @property
    def rows(self) -> int:
        return len(self.frame) if self.frame is not None else len(self.records or [])

    def text(self, mapping: ColumnMapping) -> pd.DataFrame:
        """Every row as strings in the user's columns ("" for a missing value)."""
        if self.frame is not None:
            return self.frame
        return pd.DataFrame(
            {c: [_avro_text(r.get(c), mapping) for r in self.records or []] for c in self.header},
            columns=self.header,
            dtype="str",
        )


def _read_table(data: bytes, ext: str) -> _Table:
    if not data:
        raise _FileRejected("empty file (0 bytes)")
    if ext == "csv":
        return _read_csv(data)
    if ext == "avro":
        return _read_avro(data)
    raise _FileRejected(f"unsupported file type .{ext} (expected .csv or .avro)")


def _read_csv(data: bytes) -> _Table:
    skipped = len(_BOM) if data.startswith(_BOM) else 0
    data = data[skipped:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        byte, offset = data[error.start], error.start + skipped
        raise _FileRejected(f"not UTF-8 text (byte 0x{byte:02x} at offset {offset})") from None
    first = next(_csv_records(text), None)
    header = first[0] if first else None
    if not header:
        raise _FileRejected("no header row: the file holds only blank lines")
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise _FileRejected(f"duplicate column names in the header: {', '.join(map(repr, duplicated))}")
    frame = _read_csv_fast(data, header)
    if frame is not None:
        return _Table(header, frame=frame)
    return _read_csv_slowly(text, header)


def _read_csv_fast(data: bytes, header: list[str]) -> pd.DataFrame | None:
    """Every data row as strings, or None when some record may be malformed (then the slow path
    finds out exactly which)."""
    rows = _rows_if_well_formed(data, len(header))
    if rows is None:
        return None
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, index_col=False)
    except (ValueError, csv.Error):  # pandas' ParserError is a ValueError
        return None
    if len(frame) != rows or frame.shape[1] != len(header):
        return None
    frame.columns = header
    return frame


def _rows_if_well_formed(data: bytes, width: int) -> int | None:
    """Count data rows if every non-blank record has ``width`` fields, by RFC 4180 quoting; None
    otherwise. Vectorised, so a good file never pays for Python's csv module."""
    buffer = np.frombuffer(data, np.uint8)
    quotes = np.flatnonzero(buffer == _QUOTE)
    newlines = np.flatnonzero(buffer == _LF)
    commas = np.flatnonzero(buffer == _COMMA)
    if quotes.size:
        if quotes.size % 2 or not _quotes_at_field_edges(buffer, quotes):
            return None
        # A comma or newline inside quotes (an odd number of quotes before it) is data.
        newlines = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
        commas = commas[np.searchsorted(quotes, commas) % 2 == 0]
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [buffer.size]))
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    length = ends - starts
    first = buffer[np.minimum(starts, max(buffer.size - 1, 0))] if buffer.size else np.zeros(0, np.uint8)
    blank = (length == 0) | ((length == 1) & (first == _CR))
    fields = fields[~blank]
    if fields.size == 0 or (fields != width).any():
        return None
    return int(fields.size) - 1


def _quotes_at_field_edges(buffer: np.ndarray, quotes: np.ndarray) -> bool:
    """Whether every quote opens or closes a field (or is a doubled quote inside one)."""
    opening, closing = quotes[0::2], quotes[1::2]
    before = np.where(opening > 0, buffer[np.maximum(opening - 1, 0)], _COMMA)
    after = np.where(closing + 1 < buffer.size, buffer[np.minimum(closing + 1, buffer.size - 1)], _LF)
    doubled = closing[:-1] + 1 == opening[1:]  # "" inside a quoted field closes and reopens
    open_ok = np.isin(before, (_COMMA, _LF)) | np.concatenate(([False], doubled))
    close_ok = np.isin(after, (_COMMA, _LF, _CR)) | np.concatenate((doubled, [False]))
    return bool(open_ok.all() and close_ok.all())


def _csv_records(text: str, width: int | None = None) -> Iterator[tuple[list[str], str | None]]:
    """Yield (fields, problem or None) for each non-blank record; once the header's ``width`` is
    known, another field count is a problem. A bad record spanning several lines (a stray quote
    opened a field) costs only its first line: reading resumes on the next one."""
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    while True:
        lines.taken.clear()
        start = lines.count + 1
        try:
            fields, problem = next(reader), None
        except StopIteration:
            return
        except csv.Error as error:
            fields, problem = _lenient_fields(lines.taken[0]), _quoting_problem(str(error), start)
        if not fields and problem is None:
            continue  # a blank line
        if problem is None and width is not None and len(fields) != width:
            problem = _width_problem(fields, width, start)
        if problem and len(lines.taken) > 1:
            problem += (
                f"; a quote opened on line {start} runs to line {lines.count}, so only line {start} is "
                f"rejected and reading resumes on line {start + 1}"
            )
            fields = _lenient_fields(lines.taken[0])
            lines.push_back(lines.taken[1:])
        yield fields, problem


class _Lines:
    """The lines of a text, remembering the ones the csv reader took for the current record."""

    def __init__(self, text: str) -> None:
        self._lines = (m.group() for m in _LINE.finditer(text))  # lazily: no copy of a big text
        self._returned: list[str] = []  # lines to read again, last first
        self.taken: list[str] = []
        self.count = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._returned.pop() if self._returned else next(self._lines)
        self.taken.append(line)
        self.count += 1
        return line

    def push_back(self, lines: list[str]) -> None:
        """Read ``lines`` again next."""
        self._returned.extend(reversed(lines))
        self.count -= len(lines)


def _quoting_problem(error: str, line: int) -> str:
    if "unexpected end of data" in error:
        return f"unterminated quote on line {line} (the quoted field never closes)"
    return f"broken quoting on line {line} ({error})"


def _lenient_fields(raw: str) -> list[str]:
    """Best-effort fields of a record with broken quoting, for the rejected file."""
    raw = raw.rstrip("\r\n")
    try:
        return next(csv.reader(io.StringIO(raw, newline="")), [raw])
    except csv.Error:
        return [raw]


def _read_csv_slowly(text: str, header: list[str]) -> _Table:
    """Parse record by record, noting every malformed one; the good and bad rows both stay."""
    width = len(header)
    chunks: list[pd.DataFrame] = []
    chunk: list[list[str]] = []
    malformed: dict[int, str] = {}
    records = _csv_records(text, width)
    next(records)  # the header
    for position, (fields, problem) in enumerate(records):
        if problem:
            malformed[position] = f"{MALFORMED}: {problem}"
            fields = (fields + [""] * width)[:width]
        chunk.append(fields)
        if len(chunk) == _CHUNK:
            chunks.append(pd.DataFrame(chunk, columns=header, dtype="str"))
            chunk = []
    chunks.append(pd.DataFrame(chunk, columns=header, dtype="str"))
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    return _Table(header, frame=frame, malformed=malformed)


def _width_problem(fields: list[str], width: int, line: int) -> str | None:
    if len(fields) == width:
        return None
    problem = f"{len(fields)} fields where the header has {width} (line {line})"
    if len(fields) > width:
        problem += f"; surplus: {', '.join(_show(v) for v in fields[width:])}"
    return problem


def _read_avro(data: bytes) -> _Table:
    try:
        reader = fastavro.reader(io.BytesIO(data))
        schema = reader.writer_schema
        header = [f["name"] for f in schema.get("fields", [])] if isinstance(schema, dict) else []
        records = [r if isinstance(r, dict) else {} for r in reader]
    except Exception as error:  # fastavro raises a zoo of types for corrupt bytes; all mean "unreadable"
        raise _FileRejected(f"not a readable Avro file ({type(error).__name__}: {error})") from None
    return _Table(header, records=records)


def _avro_text(value: Any, mapping: ColumnMapping) -> str:
    """An Avro value as the text a CSV would hold, so both formats share one parsing path."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return mapping.true_values[0] if value else mapping.false_values[0]
    if isinstance(value, datetime | date):
        naive = not isinstance(value, datetime) or value.tzinfo is None
        return value.strftime(mapping.date_format) if mapping.date_format and naive else value.isoformat()
    return str(value)


# -- choosing the profile and mapping ------------------------------------------------------------


def _choose_mapping(
    header: list[str], profiles: list[Profile], dataset: str | None, name: str | None
) -> tuple[Profile, str, ColumnMapping]:
    if dataset is not None:
        known = ", ".join(sorted(p.name for p in profiles))
        profiles = [p for p in profiles if p.name == dataset]
        if not profiles:
            raise _FileRejected(f"unknown dataset {dataset!r} (object metadata 'dataset'); known: {known}")
    if name is not None and not any(name in p.mappings for p in profiles):
        known = ", ".join(sorted({m for p in profiles for m in p.mappings}))
        raise _FileRejected(f"unknown mapping {name!r} (object metadata 'mapping'); known: {known}")
    fits = []
    for profile in profiles:
        if name is None:
            fit = profile.mapping_for(header)
        elif name in profile.mappings and profile.mappings[name].source_columns <= set(header):
            fit = (name, profile.mappings[name])
        else:
            fit = None
        if fit:
            fits.append((profile, *fit))
    if not fits:
        raise _FileRejected(_missing_columns(header, profiles, name))
    best = max(len(m.source_columns) for _, _, m in fits)
    tied = [(p, n, m) for p, n, m in fits if len(m.source_columns) == best]
    if len(tied) > 1:
        options = " and ".join(f"dataset {p.name} (mapping {n})" for p, n, _ in tied)
        raise _FileRejected(
            f"ambiguous header: it fits {options} equally; set the object metadata 'dataset' to choose"
        )
    return tied[0]


def _missing_columns(header: list[str], profiles: list[Profile], name: str | None) -> str:
    """Name the closest mapping and exactly which of its columns the header lacks.

    A future-values mapping needs few columns, so it would be the closest fit of any stray file: it
    is only suggested when the header has one of its covariates' columns (or it was named).
    """
    present = set(header)
    candidates = [
        (p, n, [c for f, c in m.columns.items() if f not in m.optional and c not in present])
        for p in profiles
        for n, m in p.mappings.items()
        if name in (None, n) and (m.kind != "future" or name or _reads_a_covariate(p, m, present))
    ]
    if not candidates:
        return "missing columns: no profile is enabled"
    profile, closest, missing = min(candidates, key=lambda c: len(c[2]))
    found = ", ".join(header) if header else "none"
    return (
        f"missing columns: {', '.join(missing)} (closest fit: dataset {profile.name}, mapping {closest}; "
        f"columns found: {found})"
    )


def _reads_a_covariate(profile: Profile, mapping: ColumnMapping, header: set[str]) -> bool:
    return any(mapping.columns.get(c) in header for c in profile.covariates)


def _check_columns(header: list[str], profile: Profile, name: str, mapping: ColumnMapping) -> list[str]:
    """File-level column rules; return the warnings they leave."""
    fields = _input_fields(profile, mapping)
    unfilled = [f.name for f in fields if not f.nullable and _source(f.name, mapping, header) is None]
    if unfilled:
        raise _FileRejected(
            f"mapping {name} of dataset {profile.name} provides no column or constant for the required "
            f"fields {', '.join(unfilled)}"
        )
    known = [c for c in profile.known_covariates if c in mapping.columns]
    if mapping.kind == "future" and not any(_source(c, mapping, header) for c in known):
        wanted = ", ".join(f"{c} (column {mapping.columns[c]!r})" for c in known)
        raise _FileRejected(
            f"no values: mapping {name} of dataset {profile.name} reads future values of {wanted}, "
            "and the file has none of those columns"
        )
    mapped = set(mapping.columns.values())
    extra = [c for c in header if c not in mapped]
    if not extra:
        return []
    listed = ", ".join(repr(c) for c in extra)
    if mapping.extra_columns == "reject":
        raise _FileRejected(
            f"unexpected columns {listed}: mapping {name} of dataset {profile.name} rejects "
            f"columns it does not map (it maps {', '.join(mapping.columns.values())})"
        )
    return [f"ignored columns that mapping {name} does not map: {listed}"]


def _input_fields(profile: Profile, mapping: ColumnMapping) -> list[_Field]:
    """The fields a mapping reads from the file, in the order they are checked (city first)."""
    if mapping.kind == "trips":
        fields = list(TRIP_FIELDS)
    else:
        schema = schemas.future(profile) if mapping.kind == "future" else schemas.observation(profile)
        readable = profile.mapping_fields(mapping.kind)
        fields = [
            _Field(n, _kind(n, info, profile), info["nullable"], info["type"], info["logical"])
            for n, info in schemas.fields(schema).items()
            if n in readable
        ]
    return sorted(fields, key=lambda f: f.kind != "city")


def _kind(name: str, info: dict[str, Any], profile: Profile) -> str:
    if name == profile.entity_key:
        return "id"
    if name == GROUP_KEY:
        return "city"
    if name == profile.time_column:
        return "period"
    if info["logical"] in ("date", "local-timestamp-millis", "timestamp-millis"):
        return "timestamp"
    return {
        "int": "integer",
        "long": "integer",
        "float": "number",
        "double": "number",
        "boolean": "boolean",
    }.get(info["type"], "text")


def _source(field_name: str, mapping: ColumnMapping, header: list[str]) -> str | None:
    """Where a field's values come from: its column if the file has it, else a constant, else None."""
    column = mapping.columns.get(field_name)
    if column is not None and column in header:
        return column
    return None if field_name not in mapping.constants else f"{field_name} (constant)"


# -- rows ----------------------------------------------------------------------------------------


class _Reasons:
    """Reasons per row position; malformed rows keep only their one reason."""

    def __init__(self, rows: int, malformed: dict[int, str]) -> None:
        self.by_row: dict[int, list[str]] = {p: [r] for p, r in malformed.items()}
        self.bad = np.zeros(rows, bool)
        self.bad[list(malformed)] = True
        self._skip = self.bad.copy()

    def add(self, mask: Any, category: str, detail: Callable[[int], str]) -> None:
        """Give every row in ``mask`` the reason ``"<category>: <detail(position)>"``."""
        hits = np.asarray(mask, bool) & ~self._skip
        for position in np.flatnonzero(hits):
            self.by_row.setdefault(int(position), []).append(f"{category}: {detail(int(position))}")
        self.bad |= hits


@dataclass
class _Context:
    """What the checks of one upload share."""

    profile: Profile
    mapping: ColumnMapping
    text: pd.DataFrame  # the user's columns, as strings
    header: list[str]
    logical_time: datetime
    reasons: _Reasons
    typed: dict[str, pd.Series] = field(default_factory=dict)
    raw: dict[str, pd.Series] = field(default_factory=dict)  # each field's text
    labels: dict[str, str] = field(default_factory=dict)  # each field's user column (for reasons)

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


def _validate_rows(
    upload: ValidatedUpload, table: _Table, profile: Profile, mapping: ColumnMapping, logical_time: datetime
) -> None:
    text = table.text(mapping)
    context = _Context(
        profile, mapping, text, table.header, logical_time, _Reasons(len(text), table.malformed)
    )
    fields = [f for f in _input_fields(profile, mapping) if _source(f.name, mapping, table.header)]
    for spec in fields:
        _parse_field(context, spec)
    _value_rules(context)
    keys, everything = _identity(context, fields)
    if keys:
        _duplicates(context, keys, everything)
    reasons = context.reasons
    good = ~reasons.bad
    upload.rows_accepted = int(good.sum())
    upload.good = _good_rows(context, good)
    upload.rejected = text[reasons.bad].copy()
    upload.rejected.insert(0, ROW if ROW not in text.columns else f"_{ROW}", np.flatnonzero(reasons.bad) + 1)
    upload.row_errors = [{"row": p + 1, "reasons": r} for p, r in sorted(reasons.by_row.items())]


def _parse_field(context: _Context, spec: _Field) -> None:
    """Parse one field's text into ``context.typed``, giving reasons to rows whose value is bad."""
    source = _source(spec.name, context.mapping, context.header)
    assert source is not None
    if source in context.text.columns:
        text = context.text[source]
    else:
        text = pd.Series(context.mapping.constants[spec.name], index=context.text.index, dtype="str")
    context.raw[spec.name] = text
    context.labels[spec.name] = source
    blank = _blank(text)
    if not spec.nullable:
        context.reasons.add(blank, MISSING, lambda p: f"{source} is empty")
    values, problems = _PARSERS[spec.kind](text, spec, context)
    for mask, category, detail in problems:
        context.reasons.add(np.asarray(mask, bool) & ~blank, category, detail)
    context.typed[spec.name] = values


Problem = tuple[Any, str, Callable[[int], str]]


def _shown(context: _Context, name: str) -> Callable[[int], str]:
    """``<user column> = '<value>'`` of one row, for reasons."""
    return lambda p: f"{context.labels[name]} = {_show(context.raw[name].iat[p])}"


def _parse_id(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
    label = context.labels[spec.name]
    errors = {}
    for value in text.unique():
        try:
            layout.check_id(str(value), label)
        except layout.LayoutError as error:
            errors[value] = str(error)
    bad = text.isin(list(errors)) if errors else np.zeros(len(text), bool)
    return text, [(bad, INVALID_ID, lambda p: errors[text.iat[p]])]


def _parse_city(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
    cities = context.profile.cities
    known = ", ".join(sorted(cities))
    bad = ~text.isin(list(cities))
    return text, [(bad, UNKNOWN_CITY, lambda p: f"{_show(text.iat[p])} (known: {known})")]


def _parse_number(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
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


def _parse_boolean(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
    mapping = context.mapping
    true, false = text.isin(mapping.true_values), text.isin(mapping.false_values)
    values = pd.Series(pd.NA, index=text.index, dtype="boolean")
    values[true.to_numpy()] = True
    values[false.to_numpy()] = False
    expected = f"expected one of {', '.join(mapping.true_values)} or {', '.join(mapping.false_values)}"
    show = _shown(context, spec.name)
    return values, [(~(true | false), NOT_A_BOOLEAN, lambda p: f"{show(p)} ({expected})")]


def _parse_time(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
    """Naive wall-clock times; a value with a UTC offset is converted to its city's wall clock."""
    date_format = context.mapping.date_format
    fmt = date_format or "ISO8601"
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
    category = BAD_DATE if spec.logical == "date" else BAD_TIMESTAMP
    expected = f"the form {date_format}" if date_format else "ISO 8601 (2024-05-01, 2024-05-01T08:15:00)"
    show = _shown(context, spec.name)
    problems: list[Problem] = [
        (values.isna(), category, lambda p: f"{show(p)} is not a date or time in {expected}")
    ]
    if spec.kind == "period":
        step = pd.Timedelta(context.profile.period)
        unit = "a day" if step == pd.Timedelta(days=1) else "an hour"
        problems.append(
            (
                values.notna() & (values.dt.floor(step) != values),
                category,
                lambda p: f"{show(p)} is not the start of {unit}",
            )
        )
    return values, problems


def _wall_clock(instants: pd.Series, zones: pd.Series) -> pd.Series:
    local = pd.Series(pd.NaT, index=instants.index, dtype="datetime64[us]")
    for zone in zones[instants.notna()].unique():
        rows = (zones == zone) & instants.notna()
        local[rows] = instants[rows].dt.tz_convert(zone).dt.tz_localize(None).astype("datetime64[us]")
    return local


def _parse_text(text: pd.Series, spec: _Field, context: _Context) -> tuple[pd.Series, list[Problem]]:
    return text, []


_PARSERS: dict[str, Callable[[pd.Series, _Field, _Context], tuple[pd.Series, list[Problem]]]] = {
    "id": _parse_id,
    "city": _parse_city,
    "period": _parse_time,
    "timestamp": _parse_time,
    "integer": _parse_number,
    "number": _parse_number,
    "boolean": _parse_boolean,
    "text": _parse_text,
}


def _value_rules(context: _Context) -> None:
    """Rules about parsed values: future periods (except in future values, which are about the
    future), negative targets and counts, trip order."""
    typed, reasons, profile = context.typed, context.reasons, context.profile
    times = [n for n, v in typed.items() if pd.api.types.is_datetime64_any_dtype(v)]
    if times and context.mapping.kind != "future":
        now = context.local_now()
        for name in times:
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


def _future(context: _Context, name: str, now: pd.Series) -> None:
    """A period (or trip time) after the upload's logical time, on the city's wall clock, is future."""
    show = _shown(context, name)
    cities = context.raw.get(GROUP_KEY)

    def detail(p: int) -> str:
        where = f" in {cities.iat[p]}" if cities is not None else ""
        return f"{show(p)} is after the upload's time ({now.iat[p]:%Y-%m-%d %H:%M}{where})"

    context.reasons.add(context.typed[name] > now, FUTURE, detail)


def _below_zero(show: Callable[[int], str]) -> Callable[[int], str]:
    return lambda p: f"{show(p)} is below zero"


def _identity(context: _Context, fields: list[_Field]) -> tuple[list[str], list[str]]:
    """The fields that identify a row (trips: their ride id; others: city, entity, period; future
    values without an entity column: city, period) and all the fields whose equality makes two
    rows exact duplicates."""
    everything = [f.name for f in fields]
    if context.mapping.kind == "trips":
        return (["ride_id"] if "ride_id" in everything else []), everything
    keys = [GROUP_KEY, context.profile.entity_key, context.profile.time_column]
    return [k for k in keys if k in everything], everything


def _duplicates(context: _Context, keys: list[str], everything: list[str]) -> None:
    """Among otherwise good rows that share an identity: if their values are all equal, the first
    stays and each repeat is rejected naming it; if they differ, all are rejected, since nothing
    says which is right. An empty identity (a trip without ride id) is never a duplicate; an empty
    entity of a future value is one (the whole city)."""
    frame = pd.DataFrame({n: context.typed[n] for n in everything})
    frame["_row"] = np.arange(len(frame))
    anonymous = keys if context.mapping.kind == "trips" else []
    has_key = ~np.logical_or.reduce([_blank(context.raw[k]) for k in anonymous], initial=False)
    frame = frame[~context.reasons.bad & has_key]
    frame = frame[frame.duplicated(keys, keep=False)]
    if frame.empty:
        return
    # pandas decides equality (NaN equals NaN); Python only walks the duplicated rows.
    key_ids = frame.groupby(keys, dropna=False, sort=False).ngroup()
    versions = frame.groupby(everything, dropna=False, sort=False).ngroup()
    groups: dict[int, list[tuple[int, int]]] = {}
    for row, key, version in zip(frame["_row"], key_ids, versions, strict=True):
        groups.setdefault(key, []).append((int(row), version))
    repeat_of: dict[int, int] = {}
    conflicts: dict[int, str] = {}
    for members in groups.values():
        if len({version for _, version in members}) > 1:
            listed = ", ".join(str(row + 1) for row, _ in members)
            conflicts.update((row, listed) for row, _ in members)
        else:
            repeat_of.update((row, members[0][0]) for row, _ in members[1:])
    identity = _identity_text(context, keys)
    rows = len(context.text)
    context.reasons.add(
        _mask(repeat_of, rows), DUPLICATE, lambda p: f"repeats row {repeat_of[p] + 1} ({identity(p)})"
    )
    context.reasons.add(
        _mask(conflicts, rows),
        CONFLICT,
        lambda p: f"rows {conflicts[p]} share {identity(p)} but differ in other values",
    )


def _mask(positions: dict[int, Any], rows: int) -> np.ndarray:
    mask = np.zeros(rows, bool)
    mask[list(positions)] = True
    return mask


def _blank(text: pd.Series) -> np.ndarray:
    """Where a text column holds no value."""
    return (text.isna() | (text == "")).to_numpy()


def _identity_text(context: _Context, keys: list[str]) -> Callable[[int], str]:
    shown = [_shown(context, k) for k in keys]
    return lambda p: ", ".join(s(p) for s in shown)


# -- good rows in the schema ---------------------------------------------------------------------


def _good_rows(context: _Context, good: np.ndarray) -> pd.DataFrame:
    """The accepted rows as the schema's fields (the future-values schema's for a future mapping),
    typed and sorted by city, entity and period."""
    profile = context.profile
    rows = pd.DataFrame({n: v[good] for n, v in context.typed.items()}).reset_index(drop=True)
    if context.mapping.kind == "trips":
        rows = _station_periods(rows, profile)
    if context.mapping.kind in ("trips", "counts"):
        rows[profile.target] = rows[ARRIVALS] - rows[DEPARTURES]
    future = context.mapping.kind == "future"
    spec = schemas.fields(schemas.future(profile) if future else schemas.observation(profile))
    out = pd.DataFrame(index=rows.index)
    for name, info in spec.items():
        out[name] = _schema_column(rows.get(name), info, len(rows))
    keys = [GROUP_KEY, profile.entity_key, profile.time_column]
    return out.sort_values(keys, kind="stable").reset_index(drop=True)


def _station_periods(trips: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """Departures at (start station, start period) and arrivals at (end station, end period)."""
    step = pd.Timedelta(profile.period)
    index = [GROUP_KEY, profile.entity_key, profile.time_column]
    ends = {DEPARTURES: ("start_station_id", "started_at"), ARRIVALS: ("end_station_id", "ended_at")}
    counts = [
        pd.DataFrame(
            {
                GROUP_KEY: trips[GROUP_KEY],
                profile.entity_key: trips[station],
                profile.time_column: trips[when].dt.floor(step),
            }
        )
        .groupby(index)
        .size()
        .rename(name)
        for name, (station, when) in ends.items()
    ]
    return pd.concat(counts, axis=1).fillna(0).astype("int64").reset_index()


def _schema_column(values: pd.Series | None, info: dict[str, Any], rows: int) -> pd.Series | Any:
    """A column in the dtype ``schemas.write_frame`` expects (all null when the file lacks it)."""
    base, logical = info["type"], info["logical"]
    if logical in ("date", "local-timestamp-millis", "timestamp-millis"):
        return values if values is not None else pd.Series(pd.NaT, index=range(rows), dtype="datetime64[us]")
    if base in ("int", "long"):
        dtype = "Int64" if info["nullable"] else "int64"
    elif base in ("float", "double"):
        dtype = "float64"
    elif base == "boolean":
        dtype = "boolean"
    else:
        dtype = "str"
    if values is None:
        return pd.Series(pd.NA if dtype != "float64" else np.nan, index=range(rows), dtype=dtype)
    if dtype == "str" and info["nullable"]:
        text = values.astype("str")
        return text.where(text != "", None)  # an empty id may mean something: a future value's whole city
    return values.astype(dtype)


def _show(value: Any, limit: int = 60) -> str:
    """A value quoted for a reason, shortened when long."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
