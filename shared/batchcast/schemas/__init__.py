"""The Avro schemas (``*.avsc`` beside this file) and the one place that reads and writes them.

Writes are checked against the named schema; reads resolve the file's writer schema against it, so
a file written by an older, compatible version reads fine and an incompatible one fails loudly.
Logical types (``date``, ``local-timestamp-millis``, ``timestamp-millis``) are converted column-wise
with pandas rather than per record, which keeps million-row partitions fast.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, BinaryIO

import fastavro
import pandas as pd
from fastavro.read import SchemaResolutionError

from batchcast.errors import PermanentError

EPOCH = pd.Timestamp("1970-01-01")
# Avro files end blocks with a sync marker that writers usually draw at random; a fixed one makes
# equal records give equal bytes, which create-only writes and byte-identical replays rely on.
SYNC_MARKER = b"batchcast-sync01"
MS_PER_DAY = 86_400_000
# Fields of the observation schemas that the pipeline fills, never a user's column: which upload
# carried a row and when it arrived, so readers can let the latest upload win per entity and period.
BOOKKEEPING = ("ingested_at", "upload_id")


class SchemaMismatch(PermanentError, ValueError):
    """Data does not fit the schema it is written or read with."""


@cache
def schema(name: str) -> dict[str, Any]:
    """The raw JSON of ``<name>.avsc``."""
    text = (resources.files("batchcast.schemas") / f"{name}.avsc").read_text()
    return json.loads(text)


def version(name: str) -> int:
    """The ``batchcast_version`` a schema declares."""
    return int(schema(name)["batchcast_version"])


def fields(name: str) -> dict[str, dict[str, Any]]:
    """Field name -> {"type": base Avro type, "logical": logical type or None, "nullable": bool}."""
    out = {}
    for field in schema(name)["fields"]:
        kind = field["type"]
        nullable = isinstance(kind, list) and "null" in kind
        if isinstance(kind, list):
            kind = next(k for k in kind if k != "null")
        logical = kind.get("logicalType") if isinstance(kind, dict) else None
        base = kind["type"] if isinstance(kind, dict) else kind
        out[field["name"]] = {"type": base, "logical": logical, "nullable": nullable}
    return out


@cache
def _parsed(name: str, raw_logical: bool) -> dict[str, Any]:
    raw = copy.deepcopy(schema(name))
    if raw_logical:
        for field in raw["fields"]:
            if isinstance(field["type"], dict):
                field["type"] = field["type"]["type"]
    # fastavro builds the parsed schema by iterating a set, so its key order (and so the
    # ``avro.schema`` header it writes) would change with the process's hash seed.
    return _sorted_keys(fastavro.parse_schema(raw))


def _sorted_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def write_records(
    name: str, records: Iterable[dict[str, Any]], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise records (Python values, logical types as Python objects) with schema ``name``."""
    return _write(name, False, records, metadata)


def write_frame(name: str, frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise a DataFrame whose columns are the schema's fields (missing nullable ones: null)."""
    spec = fields(name)
    missing = [f for f, s in spec.items() if f not in frame.columns and not s["nullable"]]
    if missing:
        raise SchemaMismatch(f"frame lacks required fields of {name}: {', '.join(missing)}")
    columns: dict[str, list[Any]] = {}
    for field, info in spec.items():
        if field not in frame.columns:
            columns[field] = [None] * len(frame)
            continue
        columns[field] = _to_avro_values(frame[field], info)
    names = list(columns)
    records = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    # Values of logical types are already numbers (converted column-wise above, which is far faster
    # than per record); fastavro passes numbers through, and the header keeps the logical types that
    # readers such as BigQuery rely on.
    return _write(name, False, records, metadata)


def _write(
    name: str, raw_logical: bool, records: Iterable[dict[str, Any]], metadata: dict[str, str] | None
) -> bytes:
    buffer = io.BytesIO()
    try:
        fastavro.writer(
            buffer,
            _parsed(name, raw_logical),
            records,
            codec="deflate",
            metadata=metadata or {},
            sync_marker=SYNC_MARKER,
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise SchemaMismatch(f"data does not fit schema {name}: {error}") from error
    return buffer.getvalue()


def _to_avro_values(column: pd.Series, info: dict[str, Any]) -> list[Any]:
    logical = info["logical"]
    if logical == "date":
        values = (pd.to_datetime(column) - EPOCH).dt.days
    elif logical in ("local-timestamp-millis", "timestamp-millis"):
        stamps = pd.to_datetime(column)
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
        values = (stamps - EPOCH) // pd.Timedelta(milliseconds=1)
        if stamps.hasnans:  # NaT makes the division float; Avro wants whole milliseconds or null
            values = values.astype("Int64")
    elif info["type"] in ("int", "long"):
        values = column.astype("Int64") if info["nullable"] else column.astype("int64")
    elif info["type"] in ("float", "double"):
        values = column.astype("float64")
    elif info["type"] == "boolean":
        values = column.astype("boolean") if info["nullable"] else column.astype(bool)
    else:
        values = column.astype(object)
    if not values.hasnans:
        return values.tolist()
    return values.to_numpy(dtype=object, na_value=None).tolist()


def read_records(data: bytes | BinaryIO, name: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Read every record and the file's metadata, resolved to schema ``name``.

    Logical types come back as raw numbers, or as Python dates/datetimes when the file was written
    with exactly this schema version: resolving each record against a reader schema costs twice the
    time, so it is only done when the writer's fields differ (an older or newer compatible version).
    :func:`records_to_frame` accepts both.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        reader = fastavro.reader(stream)
        if _field_types(reader.writer_schema) != _field_types(_parsed(name, False)):
            stream.seek(0)
            reader = fastavro.reader(stream, reader_schema=_parsed(name, True))
        records = list(reader)
    except SchemaResolutionError as error:
        raise SchemaMismatch(f"file's schema is incompatible with {name}: {error}") from error
    except (ValueError, EOFError, StopIteration) as error:
        raise SchemaMismatch(f"not a readable Avro file: {error}") from error
    metadata = {k: v for k, v in reader.metadata.items() if not k.startswith("avro.")}
    return records, metadata


def _field_types(parsed: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["name"], json.dumps(f["type"], sort_keys=True)) for f in parsed.get("fields", [])]


def read_frame(data: bytes | BinaryIO, name: str) -> pd.DataFrame:
    """Read an Avro file written with (a compatible version of) schema ``name`` into a DataFrame."""
    records, _ = read_records(data, name)
    return records_to_frame(records, name)


def records_to_frame(records: list[dict[str, Any]], name: str) -> pd.DataFrame:
    """Turn raw records of schema ``name`` into a typed DataFrame (logical types as datetimes)."""
    spec = fields(name)
    frame = pd.DataFrame.from_records(records, columns=list(spec))
    for field, info in spec.items():
        frame[field] = _from_avro_column(frame[field], info)
    return frame


def _from_avro_column(column: pd.Series, info: dict[str, Any]) -> pd.Series:
    logical = info["logical"]
    raw = pd.api.types.is_integer_dtype(column) or column.empty
    if logical == "date":
        return EPOCH + pd.to_timedelta(column.astype("int64"), unit="D") if raw else pd.to_datetime(column)
    if logical == "local-timestamp-millis":
        return EPOCH + pd.to_timedelta(column.astype("int64"), unit="ms") if raw else pd.to_datetime(column)
    if logical == "timestamp-millis":
        if raw:
            return (EPOCH + pd.to_timedelta(column.astype("int64"), unit="ms")).dt.tz_localize("UTC")
        return pd.to_datetime(column, utc=True)
    if info["type"] in ("int", "long"):
        return column.astype("Int64" if info["nullable"] else "int64")
    if info["type"] in ("float", "double"):
        return column.astype("float64")
    if info["type"] == "boolean":
        return column.astype("boolean")
    return column.astype(str)


def reader_fields(data: bytes | BinaryIO) -> list[str]:
    """The field names an arbitrary Avro file declares (for uploads in the user's own schema)."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    reader = fastavro.reader(stream)
    return [f["name"] for f in reader.writer_schema.get("fields", [])]
