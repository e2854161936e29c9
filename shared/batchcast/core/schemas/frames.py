"""DataFrames in and out of Avro with the schemas of :mod:`batchcast.core.schemas`.

Logical types (``date``, ``local-timestamp-millis``, ``timestamp-millis``) are converted
column-wise with pandas rather than per record, which keeps million-row partitions fast.
"""

from __future__ import annotations

from typing import Any, BinaryIO

import pandas as pd

from batchcast.core.schemas import SchemaMismatch, SchemaRef, fields, label, read_records, write_records

EPOCH = pd.Timestamp("1970-01-01")


def write_frame(name: SchemaRef, frame: pd.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise a DataFrame whose columns are the schema's fields (missing nullable ones: null)."""
    spec = fields(name)
    missing = [f for f, s in spec.items() if f not in frame.columns and not s["nullable"]]
    if missing:
        raise SchemaMismatch(f"frame lacks required fields of {label(name)}: {', '.join(missing)}")
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
    return write_records(name, records, metadata)


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


def read_frame(data: bytes | BinaryIO, name: SchemaRef) -> pd.DataFrame:
    """Read an Avro file written with (a compatible version of) schema ``name`` into a DataFrame."""
    records, _ = read_records(data, name)
    return records_to_frame(records, name)


def records_to_frame(records: list[dict[str, Any]], name: SchemaRef) -> pd.DataFrame:
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
    if info["nullable"]:  # null stays missing (pandas 2 would turn it into the text "None")
        return column.astype(str).where(column.notna(), None)
    return column.astype(str)
