"""Every object name of the bucket layout, built and parsed in one place.

The layout is a contract (users, the API and BigQuery external tables read it)::

    raw/dt=YYYY-MM-DD/<upload_id>.<csv|avro>
    rejected/dt=YYYY-MM-DD/<upload_id>.<ext>  and  <upload_id>.error.json
    batch_data/dataset=<profile>/city=<city>/<entity>=<id>/<upload_id>.avro
    batch_data/dataset=<profile>/city=<city>/<entity>=<id>/segment-<span>-<digest>.avro
    manifests/dataset=<profile>/city=<city>/part-<NN>.json
    future/dataset=<profile>/city=<city>/dt=YYYY-MM-DD/<upload_id>.avro
    models/dataset=<profile>/city=<city>/version=<version>/metadata.json, model-<sha>.skops,
        backtest-<sha>.avro
    models/dataset=<profile>/city=<city>/LATEST
    predictions/dataset=<profile>/dt=YYYY-MM-DD/city=<city>/part-<shard>-<key>.avro
    results/dataset=<profile>/<entity>=<id>.json
    metrics/dataset=<profile>/dt=YYYY-MM-DD/city=<city>.json
    runs/dt=YYYY-MM-DD/<run_id>.json
    logs/dt=YYYY-MM-DD/<run_id>.jsonl
    status/runs/dt=YYYY-MM-DD/<run_id>.json  and  .../_day.json
    status/freshness.json
    status/processed/<function>/<idempotency_key>.json
    status/outcomes/dataset=<profile>/city=<city>.json  and  .../_dataset.json
    status/alerts/dataset=<profile>.json
    config/api_tokens.json, config/managers.json
    audit/dt=YYYY-MM-DD/<HHMMSS>-<action_id>.json

``manifests/`` says which ``batch_data/`` files hold each entity's rows (partition adds each upload's
files, compaction swaps many small upload files for a few ``segment-`` files, one per calendar span),
so readers never list ``batch_data/``, whose size grows with every upload.

``status/outcomes/`` holds each (dataset, city)'s last success and failure per function (the run
records stay the full history; this is what freshness and ``batchcast status`` read without listing
every run). ``status/runs/`` is the run history's index: one small summary per run (function, dataset, city,
status, duration, error) under its UTC start date, its fields also in the object's metadata, so a
day's runs are one listing of that day whatever the bucket's age, and concurrent runs never write
the same object. Once a day is closed its summaries are rolled up into ``_day.json`` (one read).
``logs/`` keeps each run's log lines beside nothing else, read by a run's detail page.

``status/alerts/`` holds the email episodes of one dataset. ``config/`` is read-only
configuration: nothing triggers on it.

``future/`` holds future values (covariates known in advance: weather forecasts, planned promos and
closures) by the local date of the target periods they are for, one file per upload, so predict
lists one date and never the history.

``<shard>`` is ``NNN`` for daily targets and ``HHh-NNN`` (the target window's start hour) for
intraday targets, so the three bike-share windows of one day never share a file; ``<key>`` digests
the request and the data it read (see :func:`predictions_object`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime

from batchcast.core.errors import PermanentError

RAW = "raw/"
REJECTED = "rejected/"
BATCH_DATA = "batch_data/"
FUTURE = "future/"
MANIFESTS = "manifests/"
MODELS = "models/"
PREDICTIONS = "predictions/"
RESULTS = "results/"
METRICS = "metrics/"
RUNS = "runs/"
LOGS = "logs/"
RUN_INDEX = "status/runs/"
AUDIT = "audit/"  # one record per operator action (who, what, when, outcome), by UTC day
STATUS = "status/"
FRESHNESS = "status/freshness.json"
OUTCOMES = "status/outcomes/"
MANAGERS = "config/managers.json"
# One marker per (function, message) that finished, so a redelivered event is acked without work.
PROCESSED = "status/processed/"
API_TOKENS = "config/api_tokens.json"  # the bearer-token map (digests only) when not in the environment

RAW_EXTENSIONS = ("csv", "avro")

# Ids that become path segments: no slashes, no dots up front, nothing a URL or shell would mangle.
# Every pattern here ends in \Z, not $: $ also matches before a final newline ("7\n" is no id).
# SAFE_ID is matched whole (fullmatch); the API gives it to pydantic as ^...$, whose $ (Rust regex)
# means the end of the text.
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_DATE = r"\d{4}-\d{2}-\d{2}"
_RAW_NAME = re.compile(rf"^raw/dt=(?P<dt>{_DATE})/(?P<upload_id>[^/]+)\.(?P<ext>[A-Za-z0-9]+)\Z")
_BATCH_NAME = re.compile(
    r"^batch_data/dataset=(?P<dataset>[^/]+)/city=(?P<city>[^/]+)/"
    r"(?P<entity_key>[^/=]+)=(?P<entity_id>[^/]+)/(?P<upload_id>[^/]+)\.avro\Z"
)

_FUTURE_NAME = re.compile(
    rf"^future/dataset=(?P<dataset>[^/]+)/city=(?P<city>[^/]+)/dt=(?P<dt>{_DATE})/(?P<upload_id>[^/]+)\.avro$"
)


class LayoutError(PermanentError, ValueError):
    """An object name does not follow the bucket layout."""


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path segment, else raise :class:`LayoutError`."""
    if not SAFE_ID.fullmatch(value) or ".." in value:
        raise LayoutError(f"{what} {value!r} is not a valid id (letters, digits, '_', '.', '-')")
    return value


@dataclass(frozen=True)
class RawName:
    """The parts of a ``raw/`` object name."""

    dt: date
    upload_id: str
    ext: str


def raw_object(dt: date, upload_id: str, ext: str) -> str:
    """Where an upload is stored as it arrived."""
    return f"{RAW}dt={dt.isoformat()}/{check_id(upload_id, 'upload id')}.{ext}"


def parse_raw(name: str) -> RawName:
    """Parse ``raw/dt=YYYY-MM-DD/<upload_id>.<ext>``; raise :class:`LayoutError` naming the rule."""
    match = _RAW_NAME.match(name)
    if not match:
        raise LayoutError(f"object name {name!r} does not follow raw/dt=YYYY-MM-DD/<upload_id>.<csv|avro>")
    ext = match["ext"].lower()
    if ext not in RAW_EXTENSIONS:
        raise LayoutError(f"extension .{ext} is not one of {', '.join(RAW_EXTENSIONS)}")
    try:
        dt = date.fromisoformat(match["dt"])
    except ValueError as error:
        raise LayoutError(f"dt={match['dt']} in {name!r} is not a date") from error
    return RawName(dt=dt, upload_id=check_id(match["upload_id"], "upload id"), ext=ext)


def rejected_object(dt: date, upload_id: str, ext: str) -> str:
    """Where the rejected part of an upload goes (the whole file, or its bad rows)."""
    return f"{REJECTED}dt={dt.isoformat()}/{upload_id}.{ext}"


def rejected_report(dt: date, upload_id: str) -> str:
    """The error report that names every reason an upload (or some of its rows) was rejected."""
    return f"{REJECTED}dt={dt.isoformat()}/{upload_id}.error.json"


def batch_data_prefix(dataset: str, city: str | None = None) -> str:
    """The Hive-partitioned data of a dataset, or of one of its cities."""
    prefix = f"{BATCH_DATA}dataset={dataset}/"
    return prefix if city is None else f"{prefix}city={city}/"


def batch_data_entity_prefix(dataset: str, city: str, entity_key: str, entity_id: str) -> str:
    """All partition files of one entity."""
    return f"{batch_data_prefix(dataset, city)}{entity_key}={entity_id}/"


def batch_data_object(dataset: str, city: str, entity_key: str, entity_id: str, upload_id: str) -> str:
    """One upload's rows for one entity."""
    return f"{batch_data_entity_prefix(dataset, city, entity_key, entity_id)}{upload_id}.avro"


SEGMENT_PREFIX = "segment-"  # compacted files; upload ids never start with it


def segment_object(dataset: str, city: str, entity_key: str, entity_id: str, span: str, digest: str) -> str:
    """A compacted file: one entity's rows of one calendar span (``2025``, ``2025-03``)."""
    return batch_data_object(dataset, city, entity_key, entity_id, f"{SEGMENT_PREFIX}{span}-{digest}")


def manifest_object(dataset: str, city: str, part: int) -> str:
    """One part of a city's data manifest (entities are spread over parts by a hash of their id)."""
    return f"{MANIFESTS}dataset={dataset}/city={check_id(city, 'city')}/part-{part:02d}.json"


@dataclass(frozen=True)
class BatchDataName:
    """The parts of a ``batch_data/`` object name."""

    dataset: str
    city: str
    entity_key: str
    entity_id: str
    upload_id: str


def parse_batch_data(name: str) -> BatchDataName:
    """Parse a ``batch_data/`` object name."""
    match = _BATCH_NAME.match(name)
    if not match:
        raise LayoutError(f"{name!r} is not a batch_data partition file")
    return BatchDataName(**match.groupdict())


def future_prefix(dataset: str, city: str, dt: date) -> str:
    """Every upload's future values of one city for target periods on local date ``dt``."""
    return f"{FUTURE}dataset={dataset}/city={city}/dt={dt.isoformat()}/"


def future_object(dataset: str, city: str, dt: date, upload_id: str) -> str:
    """One upload's future values of one city for target periods on local date ``dt``."""
    return f"{future_prefix(dataset, city, dt)}{check_id(upload_id, 'upload id')}.avro"


@dataclass(frozen=True)
class FutureName:
    """The parts of a ``future/`` object name."""

    dataset: str
    city: str
    dt: date
    upload_id: str


def parse_future(name: str) -> FutureName:
    """Parse a ``future/`` object name; raise :class:`LayoutError` if it is not one."""
    match = _FUTURE_NAME.match(name)
    if not match:
        raise LayoutError(f"{name!r} is not a future-values file")
    try:
        dt = date.fromisoformat(match["dt"])
    except ValueError as error:
        raise LayoutError(f"dt={match['dt']} in {name!r} is not a date") from error
    return FutureName(match["dataset"], match["city"], dt, match["upload_id"])


def model_prefix(dataset: str, city: str) -> str:
    """All model versions of one (dataset, city)."""
    return f"{MODELS}dataset={dataset}/city={city}/"


def model_dir(dataset: str, city: str, version: str) -> str:
    """The folder of one model version (``metadata.json`` names its model and backtest files)."""
    return f"{model_prefix(dataset, city)}version={check_id(version, 'model version')}/"


def model_latest(dataset: str, city: str) -> str:
    """The pointer to the version predictions should use; moved by compare-and-swap."""
    return f"{model_prefix(dataset, city)}LATEST"


def shard_label(index: int, target_start: datetime, intraday: bool) -> str:
    """The ``<shard>`` of a predictions file name (see the module docstring)."""
    return f"{target_start:%H}h-{index:03d}" if intraday else f"{index:03d}"


def predictions_object(dataset: str, dt: date, city: str, shard: str, key: str) -> str:
    """One predict request's predictions for the target date ``dt``.

    ``key`` digests everything the file's content depends on (the request and the data it read),
    so a redelivery rewrites the same name and another request of the same day gets its own file.
    """
    return f"{PREDICTIONS}dataset={dataset}/dt={dt.isoformat()}/city={city}/part-{shard}-{key}.avro"


def results_prefix(dataset: str) -> str:
    """The latest forecast of every entity of a dataset."""
    return f"{RESULTS}dataset={dataset}/"


def results_object(dataset: str, entity_key: str, entity_id: str) -> str:
    """The latest forecast of one entity: what the API serves."""
    return f"{results_prefix(dataset)}{entity_key}={check_id(entity_id, entity_key)}.json"


def parse_results(name: str) -> tuple[str, str]:
    """Return (dataset, entity id) of a ``results/`` object name."""
    match = re.match(r"^results/dataset=([^/]+)/[^/=]+=([^/]+)\.json\Z", name)
    if not match:
        raise LayoutError(f"{name!r} is not a results object")
    return match[1], match[2]


def metrics_object(dataset: str, dt: date, city: str) -> str:
    """Backtest and run metrics of one city for one day."""
    return f"{METRICS}dataset={dataset}/dt={dt.isoformat()}/city={city}.json"


def run_record(dt: date, run_id: str) -> str:
    """The record of one invocation."""
    return f"{RUNS}dt={dt.isoformat()}/{check_id(run_id, 'run id')}.json"


def run_log(dt: date, run_id: str) -> str:
    """The log lines of one invocation (JSON lines, as they went to stdout)."""
    return f"{LOGS}dt={dt.isoformat()}/{check_id(run_id, 'run id')}.jsonl"


def run_index_prefix(dt: date) -> str:
    """The index entries of every run started on UTC date ``dt``."""
    return f"{RUN_INDEX}dt={dt.isoformat()}/"


def run_index_entry(dt: date, run_id: str) -> str:
    """One run's summary in the run-history index."""
    return f"{run_index_prefix(dt)}{check_id(run_id, 'run id')}.json"


def run_index_rollup(dt: date) -> str:
    """Every summary of a closed day in one object (``_`` sorts apart from run ids)."""
    return f"{run_index_prefix(dt)}_day.json"


def processed_marker(function: str, idempotency_key: str) -> str:
    """The marker saying ``function`` finished the message with this idempotency key."""
    return f"{PROCESSED}{check_id(function, 'function')}/{check_id(idempotency_key, 'idempotency key')}.json"


def outcome_object(dataset: str, city: str | None) -> str:
    """The last outcomes of one (dataset, city), or of the dataset-wide runs when ``city`` is None."""
    name = "_dataset" if city is None else f"city={check_id(city, 'city')}"
    return f"{OUTCOMES}dataset={dataset}/{name}.json"


def parse_outcome(name: str) -> tuple[str, str | None]:
    """Return (dataset, city or None) of a ``status/outcomes/`` object name."""
    match = re.match(r"^status/outcomes/dataset=([^/]+)/(?:city=([^/]+)|_dataset)\.json\Z", name)
    if not match:
        raise LayoutError(f"{name!r} is not an outcomes object")
    return match[1], match[2]


def alerts_object(dataset: str) -> str:
    """The email episodes (stale / recovered, pending or sent) and ops digests of one dataset."""
    return f"{STATUS}alerts/dataset={dataset}.json"


def alert_attempt(dataset: str, key: str, run_id: str) -> str:
    """Written by run ``run_id`` just before it hands email ``key`` to the SMTP server. A claim that
    expired with this in place may have been delivered (the run died after the server's ``250``),
    so the email is not sent a second time."""
    digest = hashlib.sha256(f"{key}\n{run_id}".encode()).hexdigest()[:32]
    return f"{STATUS}alerts/attempts/dataset={dataset}/{digest}.json"


def audit_prefix(dt: date) -> str:
    """The operator actions of one UTC day."""
    return f"{AUDIT}dt={dt.isoformat()}/"


def audit_record(moment: datetime, action_id: str) -> str:
    """One operator action's record; names sort by time within a day."""
    return f"{audit_prefix(moment.date())}{moment:%H%M%S}-{check_id(action_id, 'action id')}.json"
