"""Reading the table: a CSV or Avro upload, chunk by chunk, as the text a CSV would hold."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, BinaryIO

import fastavro
import numpy as np
import pandas as pd

from batchcast.core.config import ColumnMapping
from batchcast.data.validation.reasons import MALFORMED, Unreadable, listing, show

_BOM = b"\xef\xbb\xbf"
_QUOTE, _LF, _CR = (ord(c) for c in '"\n\r')
_DELIMITERS = ",;\t"  # a header without commas but with semicolons (or tabs) is read by those
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")  # a line and its end, as newline="" splits
_AVRO_RECORD_BYTES = 64  # a CSV record's bytes, roughly: Avro batches hold chunk_bytes / this records
_MIN_RECORD_LIMIT = 2**20  # a record (or chunk without a newline outside quotes) may grow to this


# -- reading the table ---------------------------------------------------------------------------


@dataclass
class Chunk:
    """Some consecutive rows of an upload as text, and where they lie, to read them again."""

    text: pd.DataFrame  # the user's columns, as strings; malformed rows padded
    malformed: dict[int, str]  # position -> reason
    where: Any


def open_source(stream: BinaryIO, ext: str, chunk_bytes: int) -> CsvSource | AvroSource:
    if ext == "csv":
        return CsvSource(stream, chunk_bytes)
    if ext == "avro":
        return AvroSource(stream, chunk_bytes)
    raise Unreadable(f"unsupported file type .{ext} (expected .csv or .avro)")


class CsvSource:
    """A CSV upload read chunk by chunk, each chunk ending at a newline outside quotes."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._limit = max(4 * chunk_bytes, _MIN_RECORD_LIMIT)
        head = stream.read(len(_BOM))
        if not head:
            raise Unreadable("empty file (0 bytes)")
        self._start = len(_BOM) if head == _BOM else 0
        self._spans = self._read_spans(head[self._start :])
        self.delimiter = ","
        line, first, offset, data, text = 1, None, 0, b"", ""
        for offset, data in self._spans:  # blank lines may come first; the header is the first record
            text = _decode(data, offset)
            self.delimiter = delimiter_of(text)
            first = next(_csv_records(text, delimiter=self.delimiter), None)
            if first is not None:
                break
            line += _line_count(data)
        if first is None or not first[0]:
            raise Unreadable("no header row: the file holds only blank lines")
        self.header: list[str] = first[0]
        repeated = sorted(c for c, n in Counter(self.header).items() if n > 1)
        if repeated:
            raise Unreadable(f"duplicate column names in the header: {listing(repeated)}")
        self._head: tuple[int, bytes, str, int] | None = (offset, data, text, line)

    def chunks(self, mapping: ColumnMapping | None = None) -> Iterator[Chunk]:
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
        rows = _rows_if_well_formed(data, len(self.header), header, self.delimiter)
        if rows is None:
            records = _csv_records(text, len(self.header), delimiter=self.delimiter)
            rows = sum(1 for _ in records) - int(header)
        return rows

    def chunks_at(self, places: list[Any], mapping: ColumnMapping | None = None) -> Iterator[Chunk]:
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
                    raise Unreadable(
                        f"no line break within {self._limit:,} bytes from offset {offset:,}: records must "
                        "be lines ending in \\n or \\r\\n"
                    )
            yield offset, pending[:cut]
            offset, pending, want = offset + cut, pending[cut:], self._chunk_bytes

    def _parse(self, offset: int, data: bytes, line: int, header: bool, text: str | None = None) -> Chunk:
        """One span's rows: by pandas when every record is well formed, else record by record."""
        if text is None:
            text = _decode(data, offset)
        where = (offset, len(data), line, header)
        rows = _rows_if_well_formed(data, len(self.header), header, self.delimiter)
        if rows == 0:
            return Chunk(pd.DataFrame(columns=self.header, dtype="str"), {}, where)
        frame = _read_csv_fast(data, self.header, header, rows, self.delimiter) if rows is not None else None
        if frame is not None:
            return Chunk(frame, {}, where)
        frame, malformed = _read_csv_slowly(text, self.header, header, line, self.delimiter)
        return Chunk(frame, malformed, where)


def delimiter_of(text: str) -> str:
    """The field delimiter, from the first non-blank line: a comma unless that line has none but
    has semicolons (spreadsheets in many locales export those) or tabs."""
    found = re.search(r"[^\r\n]*[^\s][^\r\n]*", text)  # without splitting a whole chunk into lines
    first = found.group() if found else ""
    return next((d for d in _DELIMITERS if d in first), ",")


def _decode(data: bytes, offset: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Unreadable(
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


def _read_csv_fast(
    data: bytes, header: list[str], has_header: bool, rows: int, delimiter: str = ","
) -> pd.DataFrame | None:
    """Every data row as strings, or None when pandas reads something else than the vectorised
    count saw (then the record-by-record path decides)."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            index_col=False,
            sep=delimiter,
            header=0 if has_header else None,
        )
    except (ValueError, csv.Error):  # pandas' ParserError is a ValueError
        return None
    if len(frame) != rows or frame.shape[1] != len(header):
        return None
    frame.columns = header
    return frame


def _rows_if_well_formed(
    data: bytes, width: int, has_header: bool = True, delimiter: str = ","
) -> int | None:
    """Count data rows if every non-blank record has ``width`` fields, by RFC 4180 quoting; None
    otherwise. Vectorised, so a good file never pays for Python's csv module."""
    buffer = np.frombuffer(data, np.uint8)
    quotes = np.flatnonzero(buffer == _QUOTE)
    newlines = np.flatnonzero(buffer == _LF)
    comma = ord(delimiter)
    commas = np.flatnonzero(buffer == comma)
    if quotes.size:
        if quotes.size % 2 or not _quotes_at_field_edges(buffer, quotes, comma):
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


def _quotes_at_field_edges(buffer: np.ndarray, quotes: np.ndarray, comma: int) -> bool:
    """Whether every quote opens or closes a field (or is a doubled quote inside one)."""
    opening, closing = quotes[0::2], quotes[1::2]
    before = np.where(opening > 0, buffer[np.maximum(opening - 1, 0)], comma)
    after = np.where(closing + 1 < buffer.size, buffer[np.minimum(closing + 1, buffer.size - 1)], _LF)
    doubled = closing[:-1] + 1 == opening[1:]  # "" inside a quoted field closes and reopens
    open_ok = np.isin(before, (comma, _LF)) | np.concatenate(([False], doubled))
    close_ok = np.isin(after, (comma, _LF, _CR)) | np.concatenate((doubled, [False]))
    return bool(open_ok.all() and close_ok.all())


def _csv_records(
    text: str, width: int | None = None, first_line: int = 1, delimiter: str = ","
) -> Iterator[tuple[list[str], str | None]]:
    """Yield (fields, problem or None) for each non-blank record; once the header's ``width`` is
    known, another field count is a problem. A bad record spanning several lines (a stray quote
    opened a field) costs only its first line: reading resumes on the next one. ``text`` starts on
    line ``first_line`` of the file."""
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True, delimiter=delimiter)
    while True:
        lines.taken.clear()
        start = lines.count + first_line
        try:
            fields, problem = next(reader), None
        except StopIteration:
            return
        except csv.Error as error:
            fields, problem = _lenient_fields(lines.taken[0], delimiter), _quoting_problem(str(error), start)
        if not fields and problem is None:
            continue  # a blank line
        if problem is None and width is not None and len(fields) != width:
            problem = _width_problem(fields, width, start)
        if problem and len(lines.taken) > 1:
            problem += (
                f"; a quote opened on line {start} runs to line {lines.count + first_line - 1}, so only "
                f"line {start} is rejected and reading resumes on line {start + 1}"
            )
            fields = _lenient_fields(lines.taken[0], delimiter)
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


def _lenient_fields(raw: str, delimiter: str = ",") -> list[str]:
    """Best-effort fields of a record with broken quoting, for the rejected file."""
    raw = raw.rstrip("\r\n")
    try:
        return next(csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter), [raw])
    except csv.Error:
        return [raw]


def _read_csv_slowly(
    text: str, header: list[str], has_header: bool, first_line: int, delimiter: str = ","
) -> tuple[pd.DataFrame, dict[int, str]]:
    """Parse record by record, noting every malformed one; the good and bad rows both stay."""
    width = len(header)
    rows: list[list[str]] = []
    malformed: dict[int, str] = {}
    records = _csv_records(text, width, first_line, delimiter)
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
        problem += f"; surplus: {', '.join(show(v) for v in fields[width:])}"
    return problem


class AvroSource:
    """An Avro upload read in batches of records, each turned into the text a CSV would hold."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int) -> None:
        self._stream = stream
        self._batch = max(1, chunk_bytes // _AVRO_RECORD_BYTES)
        if not stream.read(1):
            raise Unreadable("empty file (0 bytes)")
        stream.seek(0)
        self._reader = self._open()
        schema = self._reader.writer_schema
        self.header = [f["name"] for f in schema.get("fields", [])] if isinstance(schema, dict) else []

    def chunks(self, mapping: ColumnMapping) -> Iterator[Chunk]:
        """Every batch, once, in file order."""
        return self._batches(self._reader, mapping, None)

    def count_rows(self) -> int:
        """How many records the file holds."""
        return sum(len(chunk.text) for chunk in self._batches(self._reader, None, None))

    def chunks_at(self, places: list[Any], mapping: ColumnMapping) -> Iterator[Chunk]:
        """The batches at ``places`` (each batch's ``where``: its index), read again."""
        self._stream.seek(0)
        return self._batches(self._open(), mapping, set(places))

    def _open(self) -> Any:
        try:
            return fastavro.reader(self._stream)
        except Exception as error:  # fastavro raises a zoo of types for corrupt bytes
            raise Unreadable(f"not a readable Avro file ({type(error).__name__}: {error})") from None

    def _batches(
        self, reader: Any, mapping: ColumnMapping | None, wanted: set[int] | None
    ) -> Iterator[Chunk]:
        batch: list[dict[str, Any]] = []
        index = 0
        records = iter(reader)
        while True:
            try:
                record = next(records, None)
            except Exception as error:  # fastavro raises a zoo of types for corrupt bytes
                raise Unreadable(f"not a readable Avro file ({type(error).__name__}: {error})") from None
            if record is not None:
                batch.append(record if isinstance(record, dict) else {})
            if batch and (record is None or len(batch) == self._batch):
                if wanted is None or index in wanted:
                    yield Chunk(self._text(batch, mapping), {}, index)
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
