"""One upload validated from a stream: the summary, the spool of good rows, the rejected rows."""

from __future__ import annotations

import heapq
import io
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from batchcast.core import config
from batchcast.core.config import ColumnMapping, Profile
from batchcast.core.errors import ConfigError
from batchcast.core.schemas import GROUP_KEY
from batchcast.data.spool import Spool
from batchcast.data.validation.duplicates import (
    find_duplicates,
    identity_fields,
    kept_rows,
    raw_shown,
    repeat_reason,
)
from batchcast.data.validation.mapping import (
    check_columns,
    choose_mapping,
    closest_history_mapping,
    input_fields,
    source_of,
    with_broken,
)
from batchcast.data.validation.reasons import CONFLICT, DUPLICATE, FileRejected, Reasons, Unreadable
from batchcast.data.validation.rows import Context, is_blank, parse_field, periods_ahead, value_rules
from batchcast.data.validation.schema_rows import add_up_rows, add_up_station_periods, schema_rows
from batchcast.data.validation.sources import AvroSource, Chunk, CsvSource, open_source

ROW = "row"  # the column of the rejected frame that holds the data-row number
CHUNK_BYTES = 8 * 2**20  # the bytes of CSV (or their Avro equivalent) validated at once
MAX_LISTED_ROWS = 1_000  # rejected rows whose reasons a report lists; the rest are counted


_AVRO_EXPANSION = 8  # CSV bytes per byte of (deflated) Avro, roughly, to size the spool's partitions
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
        self._source: CsvSource | AvroSource | None = None
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
        self._ahead = 0  # future values: good rows for periods not yet ended
        self._latest: Any = None  # ... and the latest period among good rows

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
                rows = add_up_station_periods(frame, profile)
            else:
                # Duplicates were found before; finding them again costs less than keeping them.
                kept = np.ones(len(frame), bool)
                if part in self._with_duplicates:
                    kept = kept_rows(frame, find_duplicates(frame, self._keys, self._versions))
                if self._mapping is not None and self._mapping.aggregate:
                    frame = add_up_rows(frame, self._identity, self._mapping.aggregate)
                    kept = np.ones(len(frame), bool)
                rows = schema_rows(self._typed_context(frame), kept)
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
                raise Unreadable(_too_large(size, max_bytes))
            source = self._source = open_source(self._stream, ext, self._chunk_bytes)
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
                    profile, name, chosen = choose_mapping(source.header, enabled, dataset, mapping)
                except FileRejected as rejected:
                    raise FileRejected(with_broken(str(rejected.args[0]), broken)) from None
                result.profile, result.mapping, self._mapping = profile, name, chosen
                result.warnings = check_columns(source.header, profile, name, chosen)
            except FileRejected:
                result.rows_read = source.count_rows()
                raise
            self._check_chunks(source, profile, chosen, _partitions(size, ext, self._chunk_bytes))
            if result.rows_read == 0:
                raise FileRejected("no data rows: the file has a header only")
            if chosen.kind == "future" and self._bad.count < result.rows_read and not self._ahead:
                raise FileRejected(self._all_past(profile, name, chosen))
            self._find_duplicates(profile, chosen)
            result.rows_accepted = result.rows_read - self._bad.count
            result.reasons = dict(self._reasons)
            result.row_errors = self._row_errors(chosen)
        except FileRejected as rejected:
            if isinstance(rejected, Unreadable):
                result.rows_read = 0
            result.file_errors = [str(rejected.args[0])]
            result.rows_accepted = 0
            result.reasons, result.row_errors = {}, []
            self.close()

    def _check_chunks(
        self, source: CsvSource | AvroSource, profile: Profile, mapping: ColumnMapping, partitions: int
    ) -> None:
        """The checks that need one row at a time; rows that pass them go to the spool."""
        fields = [f for f in input_fields(profile, mapping) if source_of(f.name, mapping, source.header)]
        names = [f.name for f in fields]
        self._identity = identity_fields(profile, mapping, names)
        trips = mapping.kind == "trips"
        if trips:
            self._keys = ["_id1", "_id2"] if self._identity else []
            self._versions = [*self._keys, "_version"]
            self._typed = [n for n in names if n not in self._identity]
            self._trips = Spool(partitions)
        else:
            self._keys, self._versions, self._typed = self._identity, names, names
            if mapping.aggregate:
                self._keys = []  # rows sharing a period are added up, not duplicates
        self._candidates = Spool(partitions)
        for chunk in source.chunks(mapping):
            first_row = self.result.rows_read
            context = Context(
                profile,
                mapping,
                chunk.text,
                source.header,
                self._logical_time,
                Reasons(len(chunk.text), chunk.malformed),
                mapping_name=self.result.mapping or "",
            )
            for spec in fields:
                parse_field(context, spec)
            value_rules(context)
            if mapping.kind == "future":
                ahead, latest = periods_ahead(context)
                self._ahead += ahead
                self._latest = latest if self._latest is None or latest is None else max(latest, self._latest)
            self._note(chunk, context.reasons)
            self._park(context, first_row, ~context.reasons.bad, trips)

    def _note(self, chunk: Chunk, reasons: Reasons) -> None:
        """Count a chunk's rows and reasons; keep the reasons of the first rejected rows."""
        first_row = self.result.rows_read
        self.result.rows_read += len(chunk.text)
        self._chunks.append(chunk.where)
        self._bad.append(reasons.bad)
        self._reasons.update(reasons.counts())
        room = MAX_LISTED_ROWS - len(self._listed)
        if room > 0:
            self._listed += [{"row": first_row + p + 1, "reasons": r} for p, r in reasons.listed(room)]

    def _park(self, context: Context, first_row: int, good: np.ndarray, trips: bool) -> None:
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
            rows["_keyed"] = ~is_blank(context.raw[self._identity[0]][good])
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
            found = find_duplicates(frame, self._keys, self._versions)
            if not found.empty:
                self._with_duplicates.add(part)
                self._reject_duplicates(found)
            if self._trips is not None:
                self._candidates.drop(part)
                counts = schema_rows(self._typed_context(frame), kept_rows(frame, found))
                self._trips.add(self._trips.partition_of(counts, [GROUP_KEY, profile.entity_key]), counts)

    def _reject_duplicates(self, found: pd.DataFrame) -> None:
        """Mark rows :func:`find_duplicates` found; remember what the first of them repeat."""
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
                        raw_shown(chunk.text, mapping, self._header, n, int(row - start))
                        for n in self._identity
                    )
                    texts[int(row)] = repeat_reason(*repeats[int(row)], shown)
        return [{"row": row + 1, "reasons": [texts[row]] if row in texts else what} for row, what in listed]

    def _all_past(self, profile: Profile, name: str, mapping: ColumnMapping) -> str:
        """Why a future-values upload whose periods have all ended is refused."""
        latest = f"; the latest is {self._latest:%Y-%m-%d %H:%M}" if self._latest is not None else ""
        column = mapping.columns[profile.time_column]
        return (
            f"no future values: every {column} in the file has already ended at the upload's time"
            f"{latest}; mapping {name} of dataset {profile.name} takes values for coming periods. Is it "
            f"history? Then it needs {closest_history_mapping(self._header, profile)}"
        )

    def _typed_context(self, frame: pd.DataFrame) -> Context:
        """A context holding only parsed values (what :func:`schema_rows` reads), for spooled rows."""
        assert self.result.profile is not None and self._mapping is not None
        empty = pd.DataFrame(index=frame.index)
        context = Context(
            self.result.profile,
            self._mapping,
            empty,
            self._header,
            self._logical_time,
            Reasons(len(frame), {}),
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
