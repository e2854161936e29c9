"""Validate an upload: a stream in, typed good rows per (city, entity) and every reason for the bad ones out.

Pure: no ports, no cloud. :func:`read_upload` reads a CSV or Avro upload from a stream, picks the
profile and column mapping that fit its header, parses every mapped column vectorised (per-row
Python runs only for rows a report lists), and hands back the good rows in the profile's Avro
schema, one (city, entity) at a time. :func:`validate_upload` does the same for bytes held in
memory (the ingest preview, tests) and returns everything at once.

Rules, each in one place:

* A file is rejected whole (``file_errors``) when it is larger than the size limit, cannot be read
  as a table or no mapping fits it: empty, header only, not UTF-8, a corrupt Avro file, a line
  longer than the longest record a chunk may grow to, missing columns, an ambiguous header, extra
  columns under a mapping that rejects them.
* A row is rejected when it is malformed (wrong field count, broken quoting), a required value is
  missing, a value does not parse as its field's type, an id is not a safe path segment, its city is
  unknown, its period is not aligned to the profile's frequency or lies after the upload's logical
  time (in the city's wall clock), its target is negative where the profile forbids that, a trip
  ended before it started, or it duplicates another row (see :func:`_duplicates`).
* Every reason reads ``"<category>: <detail>"``; the categories are the constants below. Reports
  count rejected rows' reasons per category exactly, and list the reasons of the first
  :data:`MAX_LISTED_ROWS` rejected rows (the rejected rows themselves are all kept).

Bounded memory. The file is read in record-aligned chunks of about ``chunk_bytes`` (a newline ends
a chunk only outside quotes, so a quoted field may hold newlines). Each chunk is checked on its own:
pandas reads it when a vectorised field count shows every record well formed; otherwise Python's
csv module finds exactly which records are not, and a bad record that spans lines (a stray quote)
costs only its first line. A broken quote is looked for within its chunk only: when no newline
outside quotes comes within four chunks, the chunk ends at the last newline and the next one starts
afresh. Avro records are read in batches and turned into the text a CSV would hold, so both
formats share one parsing path. Timestamps without an offset are the city's wall clock; ones with
an offset are converted to it.

A chunk's good rows wait in a :class:`~batchcast.data.spool.Spool` on local disk, compact and hashed
into partitions by what identifies them, so that everything needing all of an entity's rows runs
one partition at a time: duplicates (whose identity is (city, entity, period), or a trip's ride id)
and, per (city, entity), the rows sorted by period. Trips are aggregated per partition and their
station-period counts added up across partitions. Only the rows a report lists and the rejected
rows are read from the file a second time (the chunks holding them).

Rows are numbered 1-based over the data rows (the header and blank lines are not counted), lines
1-based over the file, across chunks.

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
import heapq
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, BinaryIO

import fastavro
import numpy as np
import pandas as pd

from batchcast.core import config, layout, schemas
from batchcast.core.config import ColumnMapping, Profile
from batchcast.core.errors import ConfigError
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.spool import Spool

ROW = "row"  # the column of the rejected frame that holds the data-row number
DEPARTURES, ARRIVALS = config.COUNT_FIELDS  # what the counts and trips kinds count
CHUNK_BYTES = 8 * 2**20  # the bytes of CSV (or their Avro equivalent) validated at once
MAX_LISTED_ROWS = 1_000  # rejected rows whose reasons a report lists; the rest are counted
MAX_LISTED_NAMES = 20  # column names a message lists before it says how many more there are

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
_AVRO_RECORD_BYTES = 64  # a CSV record's bytes, roughly: Avro batches hold chunk_bytes / this records
_AVRO_EXPANSION = 8  # CSV bytes per byte of (deflated) Avro, roughly, to size the spool's partitions
_MIN_RECORD_LIMIT = 2**20  # a record (or chunk without a newline outside quotes) may grow to this
_MAX_PARTITIONS = 4096
_ID_KEYS = ("batchcast-ride-1", "batchcast-ride-2")  # two 64-bit hashes make a trip's 128-bit identity


@dataclass
class ValidatedUpload:
    """What validation made of one upload."""

    profile: Profile | None = None
    mapping: str | None = None
    # validate_upload only (read_upload hands them out chunk by chunk): the profile's schema fields,
    # typed, sorted by city, entity and period; bad source rows in the user's columns, plus ``row``.
    good: pd.DataFrame = field(default_factory=pd.DataFrame)
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=[ROW]))
    row_errors: list[dict[str, Any]] = field(
        default_factory=list
    )  # [{"row": n, "reasons": [...]}], first rows
    file_errors: list[str] = field(default_factory=list)  # non-empty: the whole file is rejected
    warnings: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_accepted: int = 0  # source rows that flowed (trips, for a trips mapping; not station-hours)
    reasons: dict[str, int] = field(default_factory=dict)  # reasons per category, over all rejected rows

    @property
    def kind(self) -> str | None:
        """The chosen mapping's kind (``future``: ``good`` holds future values), None if none fit."""
        return self.profile.mappings[self.mapping].kind if self.profile and self.mapping else None

    @property
    def rows_rejected(self) -> int:
        """Source rows that did not flow (all of them when the file is rejected)."""
        return self.rows_read - self.rows_accepted

    @property
    def rows_unlisted(self) -> int:
        """Rejected rows with reasons that ``row_errors`` leaves out (it lists the first ones)."""
        return 0 if self.file_errors else self.rows_rejected - len(self.row_errors)

    def reason_counts(self) -> dict[str, int]:
        """How often each reason category occurs over all rejected rows."""
        return dict(sorted(self.reasons.items()))


class _FileRejected(Exception):
    """The whole file is rejected; ``args[0]`` says why."""


class _Unreadable(_FileRejected):
    """The whole file is rejected before its rows could be read (so none are counted)."""


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
    chunk_bytes: int = CHUNK_BYTES,
) -> ValidatedUpload:
    """Validate one upload held in memory (``ext`` is ``csv`` or ``avro``); see :func:`read_upload`.

    The result also holds the good rows (``good``) and the rejected ones (``rejected``) whole, so
    this is for small uploads: the ingest preview and tests. Never raises for bad input.
    """
    with read_upload(
        io.BytesIO(data),
        ext,
        size=len(data),
        logical_time=logical_time,
        dataset=dataset,
        mapping=mapping,
        profiles=profiles,
        chunk_bytes=chunk_bytes,
    ) as upload:
        result = upload.result
        parts = list(upload.good_rows())
        if parts:
            keys = [GROUP_KEY, result.profile.entity_key, result.profile.time_column]  # type: ignore[union-attr]
            good = pd.concat(parts, ignore_index=True)
            result.good = good.sort_values(keys, kind="stable").reset_index(drop=True)
        rejected = list(upload.rejected_frames())
        if rejected:
            result.rejected = pd.concat(rejected, ignore_index=True)
    return result


def read_upload(
    stream: BinaryIO,
    ext: str,
    *,
    size: int,
    logical_time: datetime,
    dataset: str | None = None,
    mapping: str | None = None,
    profiles: list[Profile] | None = None,
    max_bytes: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Upload:
    """Validate the upload ``stream`` holds (``size`` bytes, seekable) against the enabled profiles.

    ``dataset`` and ``mapping`` (the object's metadata) pin the profile and mapping; otherwise they
    are detected from the header. ``logical_time`` (aware) is the upload's time: periods after it,
    in the city's wall clock, are rejected. A file over ``max_bytes`` is rejected unread. Memory
    stays bounded by ``chunk_bytes`` (see the module docstring), whatever the file's size.

    Returns the :class:`Upload` with its summary (``result``) final; use it as a context manager,
    then read its good rows with :meth:`Upload.groups` and its rejected rows with
    :meth:`Upload.rejected_frames`. Never raises for bad input.
    """
    upload = Upload(stream, logical_time, chunk_bytes)
    try:
        upload.validate(ext.lower(), size, dataset, mapping, profiles, max_bytes)
    except BaseException:
        upload.close()
        raise
    return upload


class Upload:
    """One upload validated from a stream: its summary, then its good rows and its rejected rows.

    The good rows wait in a spool on local disk until :meth:`close` (or the end of a ``with``);
    :meth:`groups` and :meth:`rejected_frames` each read the stream again where they must.
    """

    def __init__(self, stream: BinaryIO, logical_time: datetime, chunk_bytes: int) -> None:
        self.result = ValidatedUpload()
        self._stream = stream
        self._logical_time = logical_time
        self._chunk_bytes = max(1, chunk_bytes)
        self._source: _CsvSource | _AvroSource | None = None
        self._mapping: ColumnMapping | None = None
        self._header: list[str] = []
        self._chunks: list[Any] = []  # where each chunk lies, to read it again
        self._bad = _Bits()  # one bit per data row: rejected
        self._candidates: Spool | None = None  # rows good in their chunk, by what identifies them
        self._trips: Spool | None = None  # trips: station-period counts, by (city, entity)
        self._identity: list[str] = []  # the fields that identify a row (for reasons)
        self._keys: list[str] = []  # the candidates' columns that identify a row
        self._versions: list[str] = []  # ... and those whose equality makes two rows exact duplicates
        self._typed: list[str] = []  # the candidates' columns that are parsed fields
        self._listed: list[dict[str, Any]] = []  # reasons of the first rejected rows, by row
        self._repeats: list[tuple[int, str, Any]] = []  # (row, category, what it repeats): first ones
        self._reasons: Counter[str] = Counter()
        self._with_duplicates: set[int] = set()  # the candidates' partitions that hold some

    def __enter__(self) -> Upload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the spool's files."""
        for spool in (self._candidates, self._trips):
            if spool is not None:
                spool.close()

    # -- what the caller reads ---------------------------------------------------------------------

    def good_rows(self) -> Iterator[pd.DataFrame]:
        """Yield the good rows in the profile's schema (the future-values schema for a future
        mapping), once, a spool partition at a time, each sorted by city, entity and period; an
        entity's rows all come in one partition."""
        profile = self.result.profile
        if self.result.file_errors or profile is None or self._candidates is None:
            return
        keys = [GROUP_KEY, profile.entity_key, profile.time_column]
        spool = self._trips if self._trips is not None else self._candidates
        for part in range(spool.partitions):
            frame = spool.take(part)
            if frame is None:
                continue
            if self._trips is not None:
                rows = _add_up_station_periods(frame, profile)
            else:
                # Duplicates were found before; finding them again costs less than keeping them.
                kept = np.ones(len(frame), bool)
                if part in self._with_duplicates:
                    kept = _kept(frame, _duplicates(frame, self._keys, self._versions))
                rows = _good_rows(self._typed_context(frame), kept)
                del frame
            yield rows.sort_values(keys, kind="stable").reset_index(drop=True)

    def groups(self) -> Iterator[tuple[str, str, pd.DataFrame]]:
        """Yield ``(city, entity, rows)`` for each (city, entity) with good rows, once: the rows in
        the profile's schema, sorted by period. Groups come partition by partition, not sorted."""
        profile = self.result.profile
        for rows in self.good_rows():
            for (city, entity), group in rows.groupby([GROUP_KEY, profile.entity_key], sort=False):  # type: ignore[union-attr]
                yield str(city), str(entity), group.reset_index(drop=True)

    def rejected_frames(self) -> Iterator[pd.DataFrame]:
        """Yield the rejected rows in the user's columns (as text) plus ``row``, in row order, a
        chunk at a time; nothing when the file is rejected whole (the raw object is the record)."""
        if self.result.file_errors or self._source is None or self._mapping is None:
            return
        wanted = [i for i in range(len(self._chunks)) if self._bad.any(i)]
        chunks = self._source.chunks_at([self._chunks[i] for i in wanted], self._mapping)
        for index, chunk in zip(wanted, chunks, strict=True):
            bad = self._bad.mask(index)
            rows = chunk.text[bad].reset_index(drop=True)
            rows.insert(
                0,
                ROW if ROW not in rows.columns else f"_{ROW}",
                self._bad.start(index) + np.flatnonzero(bad) + 1,
            )
            yield rows

    def rejected_csv(self) -> Iterator[bytes]:
        """:meth:`rejected_frames` as one CSV file (header first), a piece at a time."""
        header = True
        for rows in self.rejected_frames():
            yield rows.to_csv(index=False, header=header, lineterminator="\n").encode()
            header = False

    # -- validation ------------------------------------------------------------------------------

    def validate(
        self,
        ext: str,
        size: int,
        dataset: str | None,
        mapping: str | None,
        profiles: list[Profile] | None,
        max_bytes: int | None,
    ) -> None:
        """Read the whole stream once; afterwards ``result`` is final (see :func:`read_upload`)."""
        result = self.result
        try:
            if max_bytes is not None and size > max_bytes:
                raise _Unreadable(_too_large(size, max_bytes))
            source = self._source = _open_source(self._stream, ext, self._chunk_bytes)
            self._header = source.header
            try:
                enabled, broken = (
                    (profiles, {})
                    if profiles is not None
                    else (config.enabled_profiles(), config.profile_problems())
                )
                if dataset in broken:  # an upload for a broken profile fails; the other datasets' go on
                    raise ConfigError(broken[dataset], dataset=dataset)
                try:
                    profile, name, chosen = _choose_mapping(source.header, enabled, dataset, mapping)
                except _FileRejected as rejected:
                    raise _FileRejected(_with_broken(str(rejected.args[0]), broken)) from None
                result.profile, result.mapping, self._mapping = profile, name, chosen
                result.warnings = _check_columns(source.header, profile, name, chosen)
            except _FileRejected:
                result.rows_read = source.count_rows()
                raise
            self._check_chunks(source, profile, chosen, _partitions(size, ext, self._chunk_bytes))
            if result.rows_read == 0:
                raise _FileRejected("no data rows: the file has a header only")
            self._find_duplicates(profile, chosen)
            result.rows_accepted = result.rows_read - self._bad.count
            result.reasons = dict(self._reasons)
            result.row_errors = self._row_errors(chosen)
        except _FileRejected as rejected:
            if isinstance(rejected, _Unreadable):
                result.rows_read = 0
            result.file_errors = [str(rejected.args[0])]
            result.rows_accepted = 0
            result.reasons, result.row_errors = {}, []
            self.close()

    def _check_chunks(
        self, source: _CsvSource | _AvroSource, profile: Profile, mapping: ColumnMapping, partitions: int
    ) -> None:
        """The checks that need one row at a time; rows that pass them go to the spool."""
        fields = [f for f in _input_fields(profile, mapping) if _source(f.name, mapping, source.header)]
        names = [f.name for f in fields]
        self._identity = _identity(profile, mapping, names)
        trips = mapping.kind == "trips"
        if trips:
            self._keys = ["_id1", "_id2"] if self._identity else []
            self._versions = [*self._keys, "_version"]
            self._typed = [n for n in names if n not in self._identity]
            self._trips = Spool(partitions)
        else:
            self._keys, self._versions, self._typed = self._identity, names, names
        self._candidates = Spool(partitions)
        for chunk in source.chunks(mapping):
            first_row = self.result.rows_read
            context = _Context(
                profile,
                mapping,
                chunk.text,
                source.header,
                self._logical_time,
                _Reasons(len(chunk.text), chunk.malformed),
            )
            for spec in fields:
                _parse_field(context, spec)
            _value_rules(context)
            self._note(chunk, context.reasons)
            self._park(context, first_row, ~context.reasons.bad, trips)

    def _note(self, chunk: _Chunk, reasons: _Reasons) -> None:
        """Count a chunk's rows and reasons; keep the reasons of the first rejected rows."""
        first_row = self.result.rows_read
        self.result.rows_read += len(chunk.text)
        self._chunks.append(chunk.where)
        self._bad.append(reasons.bad)
        self._reasons.update(reasons.counts())
        room = MAX_LISTED_ROWS - len(self._listed)
        if room > 0:
            self._listed += [{"row": first_row + p + 1, "reasons": r} for p, r in reasons.listed(room)]

    def _park(self, context: _Context, first_row: int, good: np.ndarray, trips: bool) -> None:
        """Put a chunk's good rows in the spool, by what identifies them."""
        assert self._candidates is not None
        rows = pd.DataFrame({n: context.typed[n][good] for n in self._typed}).reset_index(drop=True)
        rows["_row"] = first_row + np.flatnonzero(good)
        if not trips:
            # Every row has an identity: its fields are required, except a future value's entity,
            # whose empty value is an identity too (the whole city).
            rows["_keyed"] = True
            by = [k for k in (GROUP_KEY, context.profile.entity_key) if k in rows.columns]
            self._candidates.add(self._candidates.partition_of(rows, by), rows)
            return
        # A trip's identity is its ride id: kept as a 128-bit hash (ride ids are long and all
        # different), its other values as one 64-bit hash, enough to tell repeats from conflicts.
        rows["_keyed"] = False
        partition = rows["_row"].to_numpy() % self._candidates.partitions
        if self._identity:
            ids = context.raw[self._identity[0]][good].to_numpy(dtype=object)
            rows["_keyed"] = ~_blank(context.raw[self._identity[0]][good])
            rows["_id1"], rows["_id2"] = (pd.util.hash_array(ids, hash_key=key) for key in _ID_KEYS)
            everything = pd.DataFrame({n: context.typed[n][good] for n in [*self._identity, *self._typed]})
            rows["_version"] = pd.util.hash_pandas_object(everything, index=False).to_numpy()
            keyed = rows["_keyed"].to_numpy()
            partition[keyed] = (
                rows["_id1"].to_numpy()[keyed] % np.uint64(self._candidates.partitions)
            ).astype(np.int64)
        self._candidates.add(partition, rows)

    def _find_duplicates(self, profile: Profile, mapping: ColumnMapping) -> None:
        """Reject duplicates partition by partition; trips then become station-period counts."""
        assert self._candidates is not None
        for part in range(self._candidates.partitions):
            frame = self._candidates.read(part)
            if frame is None:
                continue
            found = _duplicates(frame, self._keys, self._versions)
            if not found.empty:
                self._with_duplicates.add(part)
                self._reject_duplicates(found)
            if self._trips is not None:
                self._candidates.drop(part)
                counts = _good_rows(self._typed_context(frame), _kept(frame, found))
                self._trips.add(self._trips.partition_of(counts, [GROUP_KEY, profile.entity_key]), counts)

    def _reject_duplicates(self, found: pd.DataFrame) -> None:
        """Mark rows :func:`_duplicates` found; remember what the first of them repeat."""
        rejected = found[found["_rejected"]]
        self._bad.set(rejected["_row"].to_numpy())
        conflicts = rejected["_conflict"].to_numpy()
        self._reasons.update(+Counter({CONFLICT: int(conflicts.sum()), DUPLICATE: int((~conflicts).sum())}))
        first = rejected.nsmallest(MAX_LISTED_ROWS, "_row")
        members = found[found["_identity"].isin(first["_identity"][first["_conflict"]])]
        together = members.groupby("_identity")["_row"].agg(lambda rows: (sorted(rows)[:10], len(rows)))
        for row, conflict, identity, repeats in first[
            ["_row", "_conflict", "_identity", "_first"]
        ].itertuples(index=False):
            what = (CONFLICT, together[identity]) if conflict else (DUPLICATE, int(repeats))
            self._repeats.append((int(row), *what))
        self._repeats = heapq.nsmallest(MAX_LISTED_ROWS, self._repeats)

    def _row_errors(self, mapping: ColumnMapping) -> list[dict[str, Any]]:
        """The first rejected rows with their reasons; duplicates' reasons show the rows' own text."""
        listed = heapq.nsmallest(
            MAX_LISTED_ROWS,
            [(e["row"] - 1, e["reasons"]) for e in self._listed] + [(r, (c, w)) for r, c, w in self._repeats],
            key=lambda entry: entry[0],
        )
        repeats = {row: what for row, what in listed if isinstance(what, tuple)}
        texts: dict[int, str] = {}
        if repeats and self._source is not None:
            rows = np.array(sorted(repeats))
            chunks = sorted(set(self._bad.chunk_of(rows).tolist()))
            for index, chunk in zip(
                chunks, self._source.chunks_at([self._chunks[i] for i in chunks], mapping), strict=True
            ):
                start = self._bad.start(index)
                for row in rows[(rows >= start) & (rows < start + len(chunk.text))]:
                    shown = ", ".join(
                        _raw_shown(chunk.text, mapping, self._header, n, int(row - start))
                        for n in self._identity
                    )
                    texts[int(row)] = _repeat_reason(*repeats[int(row)], shown)
        return [{"row": row + 1, "reasons": [texts[row]] if row in texts else what} for row, what in listed]

    def _typed_context(self, frame: pd.DataFrame) -> _Context:
        """A context holding only parsed values (what :func:`_good_rows` reads), for spooled rows."""
        assert self.result.profile is not None and self._mapping is not None
        empty = pd.DataFrame(index=frame.index)
        context = _Context(
            self.result.profile,
            self._mapping,
            empty,
            self._header,
            self._logical_time,
            _Reasons(len(frame), {}),
        )
        context.typed = {n: frame[n] for n in self._typed}
        return context


def _too_large(size: int, limit: int) -> str:
    return (
        f"the file is {_mib(size)} ({size:,} bytes), over the upload limit of {_mib(limit)} "
        f"({limit:,} bytes, BATCHCAST_MAX_UPLOAD_BYTES): split it into several files below the limit and "
        "upload each; rows of one entity may be spread over several uploads"
    )


def _mib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"


def _partitions(size: int, ext: str, chunk_bytes: int) -> int:
    """How many partitions the spool needs for each to hold about two chunks' rows."""
    expanded = size * (_AVRO_EXPANSION if ext == "avro" else 1)
    return min(_MAX_PARTITIONS, max(1, math.ceil(expanded / (2 * chunk_bytes))))


class _Bits:
    """One bit per data row, packed, kept per chunk (a rejected mask of 50 M rows is 6 MB)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._packed: list[np.ndarray] = []
        self.count = 0  # bits set

    def append(self, mask: np.ndarray) -> None:
        """Add the next chunk's bits."""
        self._starts.append(self._starts[-1] + self._sizes[-1] if self._starts else 0)
        self._sizes.append(len(mask))
        self._packed.append(np.packbits(mask))
        self.count += int(mask.sum())

    def start(self, index: int) -> int:
        """The first row of chunk ``index``."""
        return self._starts[index]

    def any(self, index: int) -> bool:
        """Whether chunk ``index`` has a bit set."""
        return bool(self._packed[index].any())

    def mask(self, index: int) -> np.ndarray:
        """Chunk ``index``'s bits."""
        return np.unpackbits(self._packed[index], count=self._sizes[index]).astype(bool)

    def chunk_of(self, rows: np.ndarray) -> np.ndarray:
        """The chunk holding each row."""
        return np.searchsorted(np.array(self._starts), rows, side="right") - 1

    def set(self, rows: np.ndarray) -> None:
        """Set the bits of ``rows`` (0-based over all chunks)."""
        chunks = self.chunk_of(rows)
        for index in np.unique(chunks):
            mask = self.mask(index)
            before = int(mask.sum())
            mask[rows[chunks == index] - self._starts[index]] = True
            self._packed[index] = np.packbits(mask)
            self.count += int(mask.sum()) - before


# -- reading the table ---------------------------------------------------------------------------


@dataclass
class _Chunk:
    """Some consecutive rows of an upload as text, and where they lie, to read them again."""

    text: pd.DataFrame  # the user's columns, as strings; malformed rows padded
    malformed: dict[int, str]  # position -> reason
    where: Any


def _open_source(stream: BinaryIO, ext: str, chunk_bytes: int) -> _CsvSource | _AvroSource:
    if ext == "csv":
        return _CsvSource(stream, chunk_bytes)
    if ext == "avro":
        return _AvroSource(stream, chunk_bytes)
    raise _Unreadable(f"unsupported file type .{ext} (expected .csv or .avro)")


class _CsvSource:
    """A CSV upload read chunk by chunk, each chunk ending at a newline outside quotes."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._limit = max(4 * chunk_bytes, _MIN_RECORD_LIMIT)
        head = stream.read(len(_BOM))
        if not head:
            raise _Unreadable("empty file (0 bytes)")
        self._start = len(_BOM) if head == _BOM else 0
        self._spans = self._read_spans(head[self._start :])
        line, first, offset, data, text = 1, None, 0, b"", ""
        for offset, data in self._spans:  # blank lines may come first; the header is the first record
            text = _decode(data, offset)
            first = next(_csv_records(text), None)
            if first is not None:
                break
            line += _line_count(data)
        if first is None or not first[0]:
            raise _Unreadable("no header row: the file holds only blank lines")
        self.header: list[str] = first[0]
        repeated = sorted(c for c, n in Counter(self.header).items() if n > 1)
        if repeated:
            raise _Unreadable(f"duplicate column names in the header: {_listing(repeated)}")
        self._head: tuple[int, bytes, str, int] | None = (offset, data, text, line)

    def chunks(self, mapping: ColumnMapping | None = None) -> Iterator[_Chunk]:
        """Every chunk, once, in file order (the first holds the header)."""
        assert self._head is not None, "a CSV source is read through once"
        offset, data, text, line = self._head
        self._head = None
        yield self._parse(offset, data, line, True, text)
        line += _line_count(data)
        for offset, data in self._spans:
            yield self._parse(offset, data, line, False)
            line += _line_count(data)

    def count_rows(self) -> int:
        """How many data rows the file holds, read through without parsing their values."""
        assert self._head is not None, "a CSV source is read through once"
        _, data, text, _ = self._head
        self._head = None
        total = self._count(data, text, True)
        for offset, data in self._spans:
            total += self._count(data, _decode(data, offset), False)
        return total

    def _count(self, data: bytes, text: str, header: bool) -> int:
        rows = _rows_if_well_formed(data, len(self.header), header)
        if rows is None:
            rows = sum(1 for _ in _csv_records(text, len(self.header))) - int(header)
        return rows

    def chunks_at(self, places: list[Any], mapping: ColumnMapping | None = None) -> Iterator[_Chunk]:
        """The chunks at ``places`` (each chunk's ``where``), read again."""
        for offset, length, line, header in places:
            self._stream.seek(offset)
            yield self._parse(offset, _read_exactly(self._stream, length), line, header)

    def _read_spans(self, pending: bytes) -> Iterator[tuple[int, bytes]]:
        """Yield (offset, bytes) of consecutive record-aligned spans of about ``chunk_bytes``."""
        offset, want, ended = self._start, self._chunk_bytes, False
        while True:
            while not ended and len(pending) < want:
                block = self._stream.read(want - len(pending))
                ended = not block
                pending += block
            if not pending:
                return
            cut = len(pending) if ended else _record_end(pending)
            if cut == 0 and len(pending) < self._limit:
                want = len(pending) + self._chunk_bytes  # a record longer than a chunk: read on
                continue
            if cut == 0:
                # No newline outside quotes within the limit: a stray quote, most likely. End the
                # chunk at its last newline; the per-record check finds the bad record.
                cut = pending.rfind(b"\n") + 1
                if cut == 0:
                    raise _Unreadable(
                        f"no line break within {self._limit:,} bytes from offset {offset:,}: records must "
                        "be lines ending in \\n or \\r\\n"
                    )
            yield offset, pending[:cut]
            offset, pending, want = offset + cut, pending[cut:], self._chunk_bytes

    def _parse(self, offset: int, data: bytes, line: int, header: bool, text: str | None = None) -> _Chunk:
        """One span's rows: by pandas when every record is well formed, else record by record."""
        if text is None:
            text = _decode(data, offset)
        where = (offset, len(data), line, header)
        rows = _rows_if_well_formed(data, len(self.header), header)
        if rows == 0:
            return _Chunk(pd.DataFrame(columns=self.header, dtype="str"), {}, where)
        frame = _read_csv_fast(data, self.header, header, rows) if rows is not None else None
        if frame is not None:
            return _Chunk(frame, {}, where)
        frame, malformed = _read_csv_slowly(text, self.header, header, line)
        return _Chunk(frame, malformed, where)


def _decode(data: bytes, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _Unreadable(
            f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {offset + error.start})"
        ) from None


def _line_count(data: bytes) -> int:
    """Lines ended in ``data`` (\\n, \\r\\n or a lone \\r, as the record-by-record reader splits)."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _record_end(data: bytes) -> int:
    """Where the last record of ``data`` ends (after its newline outside quotes); 0 when none does."""
    buffer = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buffer == _LF)
    quotes = np.flatnonzero(buffer == _QUOTE)
    if quotes.size and newlines.size:
        newlines = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    return int(newlines[-1]) + 1 if newlines.size else 0


def _read_exactly(stream: BinaryIO, length: int) -> bytes:
    parts, left = [], length
    while left:
        block = stream.read(left)
        if not block:
            raise EOFError(f"the upload ended {left} bytes early: was it replaced while being read?")
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _read_csv_fast(data: bytes, header: list[str], has_header: bool, rows: int) -> pd.DataFrame | None:
    """Every data row as strings, or None when pandas reads something else than the vectorised
    count saw (then the record-by-record path decides)."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            index_col=False,
            header=0 if has_header else None,
        )
    except (ValueError, csv.Error):  # pandas' ParserError is a ValueError
        return None
    if len(frame) != rows or frame.shape[1] != len(header):
        return None
    frame.columns = header
    return frame


def _rows_if_well_formed(data: bytes, width: int, has_header: bool = True) -> int | None:
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
    if (has_header and fields.size == 0) or (fields != width).any():
        return None
    return int(fields.size) - int(has_header)


def _quotes_at_field_edges(buffer: np.ndarray, quotes: np.ndarray) -> bool:
    """Whether every quote opens or closes a field (or is a doubled quote inside one)."""
    opening, closing = quotes[0::2], quotes[1::2]
    before = np.where(opening > 0, buffer[np.maximum(opening - 1, 0)], _COMMA)
    after = np.where(closing + 1 < buffer.size, buffer[np.minimum(closing + 1, buffer.size - 1)], _LF)
    doubled = closing[:-1] + 1 == opening[1:]  # "" inside a quoted field closes and reopens
    open_ok = np.isin(before, (_COMMA, _LF)) | np.concatenate(([False], doubled))
    close_ok = np.isin(after, (_COMMA, _LF, _CR)) | np.concatenate((doubled, [False]))
    return bool(open_ok.all() and close_ok.all())


def _csv_records(
    text: str, width: int | None = None, first_line: int = 1
) -> Iterator[tuple[list[str], str | None]]:
    """Yield (fields, problem or None) for each non-blank record; once the header's ``width`` is
    known, another field count is a problem. A bad record spanning several lines (a stray quote
    opened a field) costs only its first line: reading resumes on the next one. ``text`` starts on
    line ``first_line`` of the file."""
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    while True:
        lines.taken.clear()
        start = lines.count + first_line
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
                f"; a quote opened on line {start} runs to line {lines.count + first_line - 1}, so only "
                f"line {start} is rejected and reading resumes on line {start + 1}"
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


def _read_csv_slowly(
    text: str, header: list[str], has_header: bool, first_line: int
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Parse record by record, noting every malformed one; the good and bad rows both stay."""
    width = len(header)
    rows: list[list[str]] = []
    malformed: dict[int, str] = {}
    records = _csv_records(text, width, first_line)
    if has_header:
        next(records, None)
    for position, (fields, problem) in enumerate(records):
        if problem:
            malformed[position] = f"{MALFORMED}: {problem}"
            fields = (fields + [""] * width)[:width]
        rows.append(fields)
    return pd.DataFrame(rows, columns=header, dtype="str"), malformed


def _width_problem(fields: list[str], width: int, line: int) -> str | None:
    if len(fields) == width:
        return None
    problem = f"{len(fields)} fields where the header has {width} (line {line})"
    if len(fields) > width:
        problem += f"; surplus: {', '.join(_show(v) for v in fields[width:])}"
    return problem


class _AvroSource:
    """An Avro upload read in batches of records, each turned into the text a CSV would hold."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self._stream = stream
        self._batch = max(1, chunk_bytes // _AVRO_RECORD_BYTES)
        if not stream.read(1):
            raise _Unreadable("empty file (0 bytes)")
        stream.seek(0)
        self._reader = self._open()
        schema = self._reader.writer_schema
        self.header = [f["name"] for f in schema.get("fields", [])] if isinstance(schema, dict) else []

    def chunks(self, mapping: ColumnMapping) -> Iterator[_Chunk]:
        """Every batch, once, in file order."""
        return self._batches(self._reader, mapping, None)

    def count_rows(self) -> int:
        """How many records the file holds."""
        return sum(len(chunk.text) for chunk in self._batches(self._reader, None, None))

    def chunks_at(self, places: list[Any], mapping: ColumnMapping) -> Iterator[_Chunk]:
        """The batches at ``places`` (each batch's ``where``: its index), read again."""
        self._stream.seek(0)
        return self._batches(self._open(), mapping, set(places))

    def _open(self) -> Any:
        try:
            return fastavro.reader(self._stream)
        except Exception as error:  # fastavro raises a zoo of types for corrupt bytes
            raise _Unreadable(f"not a readable Avro file ({type(error).__name__}: {error})") from None

    def _batches(
        self, reader: Any, mapping: ColumnMapping | None, wanted: set[int] | None
    ) -> Iterator[_Chunk]:
        batch: list[dict[str, Any]] = []
        index = 0
        records = iter(reader)
        while True:
            try:
                record = next(records, None)
            except Exception as error:  # fastavro raises a zoo of types for corrupt bytes
                raise _Unreadable(f"not a readable Avro file ({type(error).__name__}: {error})") from None
            if record is not None:
                batch.append(record if isinstance(record, dict) else {})
            if batch and (record is None or len(batch) == self._batch):
                if wanted is None or index in wanted:
                    yield _Chunk(self._text(batch, mapping), {}, index)
                index, batch = index + 1, []
            if record is None:
                return

    def _text(self, records: list[dict[str, Any]], mapping: ColumnMapping | None) -> pd.DataFrame:
        """Every record as strings in the user's columns ("" for a missing value)."""
        if mapping is None:  # counting only
            return pd.DataFrame(index=range(len(records)))
        return pd.DataFrame(
            {c: [_avro_text(r.get(c), mapping) for r in records] for c in self.header},
            columns=self.header,
            dtype="str",
        )


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


def _with_broken(reason: str, broken: dict[str, str]) -> str:
    """A rejection's reason, plus the profiles that could not be loaded: the upload may be for one."""
    if not broken:
        return reason
    names = "; ".join(" ".join(why.split()) for why in broken.values())
    return f"{reason} (profiles that could not be loaded, so no upload fits them: {names})"


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
    found = _listing(header, quote=False) if header else "none"
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
    listed = _listing(extra)
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
    """Reasons per row position of one chunk; malformed rows keep only their one reason.

    Each check adds a mask; the detail texts are made only for the rows a report lists, so a file
    full of bad rows costs no Python string per row.
    """

    def __init__(self, rows: int, malformed: dict[int, str]) -> None:
        self.malformed = malformed
        self.bad = np.zeros(rows, bool)
        self.bad[list(malformed)] = True
        self._skip = self.bad.copy()
        self._checks: list[tuple[np.ndarray, str, Callable[[int], str]]] = []

    def add(self, mask: Any, category: str, detail: Callable[[int], str]) -> None:
        """Give every row in ``mask`` the reason ``"<category>: <detail(position)>"``."""
        hits = np.asarray(mask, bool) & ~self._skip
        if hits.any():
            self._checks.append((hits, category, detail))
            self.bad |= hits

    def counts(self) -> Counter[str]:
        """How many reasons of each category the chunk's rows got."""
        counts = Counter({MALFORMED: len(self.malformed)} if self.malformed else {})
        for hits, category, _ in self._checks:
            counts[category] += int(hits.sum())
        return counts

    def listed(self, limit: int) -> list[tuple[int, list[str]]]:
        """The first ``limit`` rejected positions with every reason, in the order they were found."""
        positions = np.flatnonzero(self.bad)[:limit]
        texts: dict[int, list[str]] = {int(p): [] for p in positions}
        for p, reason in self.malformed.items():
            if p in texts:
                texts[p].append(reason)
        for hits, category, detail in self._checks:
            for p in positions[hits[positions]]:
                texts[int(p)].append(f"{category}: {detail(int(p))}")
        return list(texts.items())


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


def _identity(profile: Profile, mapping: ColumnMapping, fields: list[str]) -> list[str]:
    """The fields that identify a row: a trip's ride id (none when unmapped); else city, entity
    and period (future values without an entity column: city and period)."""
    if mapping.kind == "trips":
        return ["ride_id"] if "ride_id" in fields else []
    return [k for k in (GROUP_KEY, profile.entity_key, profile.time_column) if k in fields]


def _duplicates(frame: pd.DataFrame, keys: list[str], versions: list[str]) -> pd.DataFrame:
    """Among rows (``_row``, good on their own) that share an identity (``keys``): if their values
    (``versions``) are all equal, the first stays and each repeat is rejected naming it; if they
    differ, all are rejected, since nothing says which is right. An empty identity (``_keyed``
    false: a trip without ride id) is never a duplicate.

    Returns every row of an identity held more than once: ``_row``, ``_identity`` (a number per
    identity), ``_first`` (its first row), ``_conflict`` and ``_rejected``.
    """
    columns = ["_row", "_identity", "_first", "_conflict", "_rejected"]
    if not keys:
        return pd.DataFrame(columns=columns)
    frame = frame[frame["_keyed"].to_numpy()]
    frame = frame[frame.duplicated(keys, keep=False)]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    # pandas decides equality (NaN equals NaN); nothing walks the rows in Python.
    identity = frame.groupby(keys, dropna=False, sort=False).ngroup().to_numpy()
    version = frame.groupby(versions, dropna=False, sort=False).ngroup().to_numpy()
    rows = frame["_row"].to_numpy()
    conflict = pd.Series(version).groupby(identity).transform("nunique").to_numpy() > 1
    first = pd.Series(rows).groupby(identity).transform("min").to_numpy()
    return pd.DataFrame(
        {
            "_row": rows,
            "_identity": identity,
            "_first": first,
            "_conflict": conflict,
            "_rejected": conflict | (rows != first),
        }
    )


def _kept(frame: pd.DataFrame, found: pd.DataFrame) -> np.ndarray:
    """Which rows of ``frame`` :func:`_duplicates` (its result ``found``) did not reject."""
    return ~frame["_row"].isin(found["_row"][found["_rejected"].astype(bool)]).to_numpy()


def _repeat_reason(category: str, what: Any, identity: str) -> str:
    """The reason of a duplicate (``what``: the row it repeats) or a conflict (``what``: the first
    rows sharing its identity, and how many there are)."""
    if category == DUPLICATE:
        return f"{DUPLICATE}: repeats row {what + 1} ({identity})"
    rows, count = what
    listed = ", ".join(str(row + 1) for row in rows) + (
        f" and {count - len(rows)} more" if count > len(rows) else ""
    )
    return f"{CONFLICT}: rows {listed} share {identity} but differ in other values"


def _raw_shown(
    text: pd.DataFrame, mapping: ColumnMapping, header: list[str], name: str, position: int
) -> str:
    """``<user column> = '<value>'`` of one field of one row, from the row's text."""
    source = _source(name, mapping, header)
    value = text[source].iat[position] if source in text.columns else mapping.constants.get(name, "")
    return f"{source} = {_show(value)}"


def _blank(text: pd.Series) -> np.ndarray:
    """Where a text column holds no value."""
    return (text.isna() | (text == "")).to_numpy()


def _add_up_station_periods(counts: pd.DataFrame, profile: Profile) -> pd.DataFrame:
    """Station-period counts of one (city, entity) made from several parts of a trips file: add up
    departures, arrivals and the net change per period (the other fields are null for trips)."""
    keys = [GROUP_KEY, profile.entity_key, profile.time_column]
    if not counts.duplicated(keys).any():
        return counts
    additive = [DEPARTURES, ARRIVALS, profile.target]
    summed = counts.groupby(keys, sort=False)[additive].sum()
    rest = counts.drop_duplicates(keys).set_index(keys).drop(columns=additive)
    return rest.join(summed).reset_index()[list(counts.columns)].astype(counts.dtypes.to_dict())


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


def _listing(names: list[str], quote: bool = True) -> str:
    """Names for a message; a long list (a header with thousands of columns) is cut short."""
    shown = [repr(n) if quote else n for n in names[:MAX_LISTED_NAMES]]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _show(value: Any, limit: int = 60) -> str:
    """A value quoted for a reason, shortened when long."""
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
