"""The Avro schemas (``*.avsc`` beside this file, or derived from a profile) and the one place that
reads and writes them.

Every function takes a schema by name (a shipped ``.avsc``: ``"prediction"``, ``"backtest"``) or as
a :class:`Schema`: what :func:`observation` and :func:`future` derive from a profile. A profile's
observation schema is its ``base_schema`` plus its declared covariates as optional fields, or,
without a base, generated from its entity key, time column, target and covariates; either way the
bookkeeping fields (:data:`BOOKKEEPING_FIELDS`) come last.

Writes are checked against the schema; reads resolve the file's writer schema against it, so a file
written before a covariate was declared reads with nulls in it, a covariate no longer declared is
ignored, and an incompatible change (a field's type) fails loudly. DataFrames are read and written
by :mod:`batchcast.core.schemas.frames`; this module does not import pandas, so what only needs
the schemas (the profiles, notify) starts without it.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, BinaryIO, Protocol

import fastavro
from fastavro.read import SchemaResolutionError

from batchcast.core.errors import PermanentError

# Avro files end blocks with a sync marker that writers usually draw at random; a fixed one makes
# equal records give equal bytes, which create-only writes and byte-identical replays rely on.
SYNC_MARKER = b"batchcast-sync01"
# Fields of the observation schemas that the pipeline fills, never a user's column: which upload
# carried a row and when it arrived, so readers can let the latest upload win per entity and period.
BOOKKEEPING_FIELDS = ("ingested_at", "upload_id")
_BOOKKEEPING_AVRO_FIELDS = [
    {
        "name": "ingested_at",
        "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}],
        "default": None,
        "doc": "bookkeeping: when the upload that carried this row arrived (its logical time, UTC); "
        "the latest wins per entity and period",
    },
    {
        "name": "upload_id",
        "type": ["null", "string"],
        "default": None,
        "doc": "bookkeeping: the upload that carried this row; breaks ties of ingested_at",
    },
]
GROUP_KEY = "city"  # the field that names the group (batch_data/.../city=<city>/)
# A declared covariate's type -> its Avro type (always a union with null: any row may lack it).
COVARIATE_TYPES = {"number": "double", "integer": "long", "boolean": "boolean"}
# The time column of a generated schema, by the profile's frequency: wall-clock periods.
_TIME_TYPES = {
    "daily": {"type": "int", "logicalType": "date"},
    "hourly": {"type": "long", "logicalType": "local-timestamp-millis"},
}
NAMESPACE = "batchcast.v1"
GENERATED_VERSION = 1  # batchcast_version of schemas generated from a profile


class SchemaMismatch(PermanentError, ValueError):
    """Data does not fit the schema it is written or read with."""


@dataclass(frozen=True)
class Schema:
    """A schema to write and read with: its name (for messages) and its JSON text.

    Equal texts are equal schemas, so parsed forms are cached per schema, not per profile object.
    """

    name: str
    text: str

    @property
    def raw(self) -> dict[str, Any]:
        """The schema's JSON."""
        return json.loads(self.text)


SchemaRef = str | Schema  # a shipped schema's name, or a derived one


@cache
def schema(name: str) -> dict[str, Any]:
    """The raw JSON of ``<name>.avsc``."""
    text = (resources.files("batchcast.core.schemas") / f"{name}.avsc").read_text()
    return json.loads(text)


def shipped(name: str) -> bool:
    """Whether ``<name>.avsc`` ships with batchcast."""
    return name.isidentifier() and (resources.files("batchcast.core.schemas") / f"{name}.avsc").is_file()


@cache
def _shipped_schema(name: str) -> Schema:
    return Schema(name, json.dumps(schema(name), sort_keys=True))


def version(ref: SchemaRef) -> int:
    """The ``batchcast_version`` a schema declares."""
    return int(_raw(ref)["batchcast_version"])


def _raw(ref: SchemaRef) -> dict[str, Any]:
    return schema(ref) if isinstance(ref, str) else _raw_of(ref)


@cache
def _raw_of(derived: Schema) -> dict[str, Any]:
    return derived.raw


def fields(ref: SchemaRef) -> dict[str, dict[str, Any]]:
    """Field name -> {"type": base Avro type, "logical": logical type or None, "nullable": bool}."""
    out = {}
    for field in _raw(ref)["fields"]:
        kind = field["type"]
        nullable = isinstance(kind, list) and "null" in kind
        if isinstance(kind, list):
            kind = next(k for k in kind if k != "null")
        logical = kind.get("logicalType") if isinstance(kind, dict) else None
        base = kind["type"] if isinstance(kind, dict) else kind
        out[field["name"]] = {"type": base, "logical": logical, "nullable": nullable}
    return out


# -- schemas derived from a profile ---------------------------------------------------------------


class CovariateDeclaration(Protocol):
    """What a schema needs of a declared covariate (a profile's ``[covariates.<name>]``)."""

    type: str
    timing: str
    description: str


class Declarations(Protocol):
    """What the derived schemas are made of: a profile's declarations. A
    :class:`batchcast.core.config.Profile` is one; this module never imports the profile model,
    which itself uses schemas to check its declarations."""

    entity_key: str
    time_column: str
    target: str
    frequency: str
    base_schema: str | None
    covariates: Mapping[str, CovariateDeclaration]


def observation(profile: Declarations) -> Schema:
    """The schema of ``profile``'s partitioned rows (``batch_data/``); every reader and writer of
    them uses this, never the base ``.avsc`` alone.

    With ``base_schema``: that shipped schema, plus each declared covariate it lacks as an optional
    field (before the bookkeeping fields), under the base's record name so files written with the
    base read back. Without: ``<entity_key>`` (string), ``city`` (string), ``<time_column>`` (a date,
    or a wall-clock hour), ``<target>`` (double), the covariates, the bookkeeping fields.
    """
    covariates = tuple((name, spec.type, spec.description) for name, spec in profile.covariates.items())
    keys = (profile.entity_key, profile.time_column, profile.target, profile.frequency)
    return _observation(profile.base_schema, keys, covariates)


@cache
def _observation(
    base: str | None, keys: tuple[str, str, str, str], covariates: tuple[tuple[str, str, str], ...]
) -> Schema:
    entity, time_column, target, frequency = keys
    if base is not None:
        raw = copy.deepcopy(schema(base))
        own = [f for f in raw["fields"] if f["name"] not in BOOKKEEPING_FIELDS]
        present = {f["name"] for f in own}
        own += [_covariate_field(*c) for c in covariates if c[0] not in present]
        return _derived(base, raw | {"fields": own + _BOOKKEEPING_AVRO_FIELDS})
    own = [
        {"name": entity, "type": "string"},
        {"name": GROUP_KEY, "type": "string"},
        {"name": time_column, "type": _TIME_TYPES[frequency]},
        {"name": target, "type": "double"},
        *(_covariate_field(*c) for c in covariates),
    ]
    raw = {
        "type": "record",
        "name": "Observation",
        "namespace": NAMESPACE,
        "doc": "One entity-period of a profile generated from its declarations.",
        "batchcast_version": GENERATED_VERSION,
        "fields": own + _BOOKKEEPING_AVRO_FIELDS,
    }
    return _derived("observation", raw)


def future(profile: Declarations) -> Schema:
    """The schema of ``profile``'s future values (``future/``): per entity, or per city when the
    entity is null, the values of its ``known`` covariates for one target period."""
    known = tuple(
        (name, spec.type, spec.description)
        for name, spec in profile.covariates.items()
        if spec.timing == "known"
    )
    observed = _raw(observation(profile))["fields"]
    time_type = next(f["type"] for f in observed if f["name"] == profile.time_column)
    return _future(profile.entity_key, profile.time_column, json.dumps(time_type, sort_keys=True), known)


@cache
def _future(entity: str, time_column: str, time_type: str, known: tuple[tuple[str, str, str], ...]) -> Schema:
    own = [
        {"name": entity, "type": ["null", "string"], "default": None, "doc": "null: the whole city"},
        {"name": GROUP_KEY, "type": "string"},
        {"name": time_column, "type": json.loads(time_type), "doc": "the target period"},
        *(_covariate_field(*c) for c in known),
    ]
    raw = {
        "type": "record",
        "name": "FutureValues",
        "namespace": NAMESPACE,
        "doc": "Values of covariates known in advance, for one target period.",
        "batchcast_version": GENERATED_VERSION,
        "fields": own + _BOOKKEEPING_AVRO_FIELDS,
    }
    return _derived("future", raw)


def _covariate_field(name: str, kind: str, description: str) -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": ["null", COVARIATE_TYPES[kind]], "default": None}
    return field | {"doc": description} if description else field


def _derived(name: str, raw: dict[str, Any]) -> Schema:
    try:
        fastavro.parse_schema(copy.deepcopy(raw))
    except Exception as error:  # fastavro's SchemaParseException and friends: a name Avro refuses
        raise SchemaMismatch(f"the schema derived for {name} is not valid Avro: {error}") from error
    return Schema(name, json.dumps(raw, sort_keys=True))


# -- writing and reading --------------------------------------------------------------------------


@cache
def _parsed(ref: SchemaRef, raw_logical: bool) -> dict[str, Any]:
    raw = copy.deepcopy(_raw(ref))
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
    name: SchemaRef, records: Iterable[dict[str, Any]], metadata: dict[str, str] | None = None
) -> bytes:
    """Serialise records with schema ``name``; values of logical types may be their raw numbers
    (what :func:`batchcast.core.schemas.frames.write_frame` passes, converted column-wise)."""
    buffer = io.BytesIO()
    try:
        fastavro.writer(
            buffer,
            _parsed(name, False),
            records,
            codec="deflate",
            metadata=metadata or {},
            sync_marker=SYNC_MARKER,
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise SchemaMismatch(f"data does not fit schema {label(name)}: {error}") from error
    return buffer.getvalue()


def label(ref: SchemaRef) -> str:
    """The schema's name, for messages."""
    return ref if isinstance(ref, str) else ref.name


def read_records(data: bytes | BinaryIO, name: SchemaRef) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Read every record and the file's metadata, resolved to schema ``name``.

    Logical types come back as raw numbers, or as Python dates/datetimes when the file was written
    with exactly this schema version: resolving each record against a reader schema costs twice the
    time, so it is only done when the writer's fields differ (an older or newer compatible version).
    :func:`batchcast.core.schemas.frames.records_to_frame` accepts both.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        reader = fastavro.reader(stream)
        if _field_types(reader.writer_schema) != _field_types(_parsed(name, False)):
            stream.seek(0)
            reader = fastavro.reader(stream, reader_schema=_parsed(name, True))
        records = list(reader)
    except SchemaResolutionError as error:
        raise SchemaMismatch(f"file's schema is incompatible with {label(name)}: {error}") from error
    except (ValueError, EOFError, StopIteration) as error:
        raise SchemaMismatch(f"not a readable Avro file: {error}") from error
    metadata = {k: v for k, v in reader.metadata.items() if not k.startswith("avro.")}
    return records, metadata


def _field_types(parsed: dict[str, Any]) -> list[tuple[str, str]]:
    return [(f["name"], json.dumps(f["type"], sort_keys=True)) for f in parsed.get("fields", [])]
