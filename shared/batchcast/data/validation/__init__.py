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

The package follows those steps, one module each: :mod:`.upload` (the entry points and the
:class:`Upload`), :mod:`.sources` (reading CSV and Avro chunks), :mod:`.mapping` (choosing the
profile and mapping), :mod:`.rows` (parsing fields and value rules), :mod:`.duplicates`,
:mod:`.schema_rows` (good rows in the schema) and :mod:`.reasons` (reason categories and messages).
"""

from batchcast.data.validation.mapping import ARRIVALS, DEPARTURES, TRIP_FIELDS
from batchcast.data.validation.reasons import (
    BAD_DATE,
    BAD_TIMESTAMP,
    CONFLICT,
    DUPLICATE,
    ENDED_BEFORE_STARTED,
    FUTURE,
    IMPLAUSIBLE_DATE,
    INVALID_ID,
    MALFORMED,
    MAX_LISTED_NAMES,
    MISSING,
    NEGATIVE_COUNT,
    NEGATIVE_TARGET,
    NOT_A_BOOLEAN,
    NOT_A_NUMBER,
    UNKNOWN_CITY,
)
from batchcast.data.validation.upload import (
    CHUNK_BYTES,
    MAX_LISTED_ROWS,
    ROW,
    Upload,
    ValidatedUpload,
    read_upload,
    validate_upload,
)

__all__ = [
    "ARRIVALS",
    "BAD_DATE",
    "BAD_TIMESTAMP",
    "CHUNK_BYTES",
    "CONFLICT",
    "DEPARTURES",
    "DUPLICATE",
    "ENDED_BEFORE_STARTED",
    "FUTURE",
    "IMPLAUSIBLE_DATE",
    "INVALID_ID",
    "MALFORMED",
    "MAX_LISTED_NAMES",
    "MAX_LISTED_ROWS",
    "MISSING",
    "NEGATIVE_COUNT",
    "NEGATIVE_TARGET",
    "NOT_A_BOOLEAN",
    "NOT_A_NUMBER",
    "ROW",
    "TRIP_FIELDS",
    "UNKNOWN_CITY",
    "Upload",
    "ValidatedUpload",
    "read_upload",
    "validate_upload",
]
