"""How a message becomes a run: build this deployment's ports, call the step, publish, record.

Entry points (``functions/<name>/main.py``) and the embedded bus both go through
:meth:`Runtime.handle`, so a run behaves the same whether functions-framework or the local
queue delivered it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from batchcast.backends.embedded import (
    STATE_DIR,
    EmbeddedBlobStore,
    EmbeddedBus,
    OutboxMailer,
    finalize_event,
)
from batchcast.backends.jobs import CloudRunJobLauncher, ProcessJobLauncher
from batchcast.backends.smtp import SmtpMailer
from batchcast.core import layout
from batchcast.core.crashpoints import BEFORE_PUBLISH, crash_point
from batchcast.core.errors import ConfigError, PermanentError
from batchcast.core.events import message_from_event, published_at
from batchcast.core.messages import (
    UNKNOWN_DATASET,
    InvalidMessage,
    Message,
    ObjectFinalized,
    Topic,
    with_lineage,
)
from batchcast.core.obs import RunLogger, configure_logging, new_run_id, run_logger
from batchcast.core.settings import Settings
from batchcast.data import storage
from batchcast.entrypoints.wiring import ROUTES, step_for
from batchcast.ops import outcomes, runs
from batchcast.ports import (
    Clock,
    FileClock,
    FixedClock,
    JobLauncher,
    Mailer,
    Ports,
    PreconditionFailed,
    SystemClock,
    TransientError,
)
from batchcast.steps import RunContext, StepResult


@dataclass
class Runtime:
    """The ports of one deployment plus the code that runs a step against them."""

    ports: Ports
    settings: Settings
    bus: Any = None  # the concrete bus, for drain/replay on the embedded backend
    results: list[tuple[str, StepResult]] = field(default_factory=list)

    def on_delivery(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(function)`` after each message the embedded bus hands to a function (a
        progress display); the embedded backend only, where this process runs the deliveries."""
        functions = {route.subscription: route.function for route in ROUTES}
        self.bus.listeners.append(lambda delivery, error, seconds: listener(functions[delivery.subscription]))

    def handle(self, function: str, message: Message, *, force: bool = False) -> StepResult:
        """Run ``function``'s step on ``message``: publish what it returns, write its run record.

        A message this function already finished (its idempotency key — for uploads the object's
        generation — has a marker, ``layout.processed_marker``) is acknowledged without work unless
        ``force``. The marker is written only after the step and its publishes succeeded.
        A message that breaks the contract is recorded as rejected and acknowledged; a
        :class:`~batchcast.core.errors.PermanentError` (an invalid profile, a corrupt model, ...) is
        recorded as failed and acknowledged too, as no redelivery could fix it (a replay after the
        fix runs it again: no marker is written). Any other exception is recorded and re-raised so
        the platform redelivers.
        """
        marker = layout.processed_marker(function, message.idempotency_key)
        if not force and self.ports.blobs.stat(marker) is not None:
            note = f"{message.kind} {message.idempotency_key} already processed by {function}"
            run_logger(function, "-", message.dataset, message.city).info(f"duplicate acknowledged: {note}")
            return StepResult(status="skipped", notes=[note])
        clock = self.ports.clock
        started_at = clock.now()
        run_id = new_run_id(started_at)
        log = run_logger(function, run_id, message.dataset, message.city)
        started = time.monotonic()
        result: StepResult | None = None
        error: BaseException | None = None
        try:
            result = step_for(function)(self.ports, message, RunContext(run_id, function, log, self.settings))
            crash_point(BEFORE_PUBLISH, function)
            for outgoing in result.messages:
                self.ports.bus.publish(outgoing.topic, with_lineage(outgoing, run_id, message))
            self._mark_processed(marker, run_id, message, result, log)
        except InvalidMessage as exc:
            result = StepResult(status="rejected", errors={"message": describe_error(exc)})
        except PermanentError as exc:
            error = exc
            where = exc.city or message.city or exc.dataset or message.dataset
            result = StepResult(
                status="failed", city=exc.city or message.city, errors={where: describe_error(exc)}
            )
        except Exception as exc:
            error = exc
            raise
        finally:
            seconds = time.monotonic() - started
            record = run_record(run_id, function, message, result, error, started_at, seconds)
            status = record["status"]
            level = "error" if status == "failed" else "warning" if status == "partial" else "info"
            getattr(log, level)(
                f"{function} {status} in {seconds:.2f}s",
                exc_info=error,
                # The line log-based metrics count (runs by status) and measure (duration).
                fields={
                    "metric": "batchcast_run",
                    "function": function,
                    "dataset": record["dataset"],
                    "city": record["city"],
                    "status": status,
                    "duration_seconds": round(seconds, 3),
                    "counts": record["counts"],
                },
            )
            self._write_run_record(started_at, run_id, record)
            self._write_history(started_at, record, log)
            self._record_outcome(record, message, result, log)
            if result is not None:
                self.results.append((function, result))
        return result

    def handle_event(
        self, function: str, event_type: str, data: Any, event_time: str | None = None
    ) -> StepResult | None:
        """Decode a CloudEvent and run the step; return None for an event acknowledged without work.

        Acknowledged without work: undecodable events, storage events for objects outside
        ``raw/`` (only uploads trigger anything), and events published more than
        ``max_event_age_seconds`` ago. Duplicates are caught by :meth:`handle`.
        """
        log = run_logger(function, "-", None, None)
        try:
            message = message_from_event(event_type, data, event_time)
        except InvalidMessage as exc:
            log.error(f"event ignored: {exc}")
            return None
        if isinstance(message, ObjectFinalized) and not message.name.startswith(layout.RAW):
            log.info(f"event ignored: {message.name} is not under {layout.RAW}")
            return None
        if isinstance(message, ObjectFinalized) and getattr(self.ports.clock, "pinned", False):
            # A pinned clock (BATCHCAST_NOW, BATCHCAST_CLOCK_FILE) says when the upload happened,
            # as the embedded store's update times do; the emulator's are always real.
            message = message.model_copy(update={"logical_time": self.ports.clock.now()})
        sent = published_at(event_type, data, event_time)
        limit = self.settings.max_event_age_seconds
        if sent is not None and (self.ports.clock.now() - sent).total_seconds() > limit:
            log.warning(f"event ignored: {message.kind} published {sent.isoformat()}, over {limit}s ago")
            return None
        return self.handle(function, message)

    def _record_outcome(
        self, record: dict, message: Message, result: StepResult | None, log: RunLogger
    ) -> None:
        # Status bookkeeping must never turn a finished run into a failed one: the run record
        # above is the source of truth, the outcome documents a cheap index of it.
        try:
            outcomes.record_run(self.ports.blobs, record, message, result)
        except Exception:
            log.exception("could not update status/outcomes")

    def _write_history(self, started_at: datetime, record: dict, log: RunLogger) -> None:
        # The run's index entry and log lines serve the operators' views; like the outcomes, they
        # must never turn a finished run into a failed one.
        try:
            runs.record(self.ports.blobs, started_at.astimezone(UTC).date(), record, log.lines)
        except Exception:
            log.exception("could not write the run's index entry or log")

    def _mark_processed(
        self, marker: str, run_id: str, message: Message, result: StepResult, log: RunLogger
    ) -> None:
        """Write the marker that lets a redelivery skip the work, once the work and its publishes are done.

        The marker only saves work: every step gives the same outputs when run again. So a marker
        that cannot be written after every retry leaves the run succeeded, with a note and a
        warning, rather than failed: failing it would ask for a redelivery that, when one of the
        attempts did reach the bucket, finds the marker and skips, leaving a failed run record for
        work that was done (seen once in 2,354 runs under bench/faults.py's injected faults).
        """
        record = {"run_id": run_id, "kind": message.kind, "idempotency_key": message.idempotency_key}
        try:
            self.ports.blobs.write(
                marker, storage.dumps(record), if_generation_match=0, content_type="application/json"
            )
        except PreconditionFailed:
            pass  # a concurrent delivery of the same message finished too; one marker is enough
        except TransientError as exc:
            note = (
                f"done, but its processed marker {marker} could not be written ({describe_error(exc)}); "
                "a redelivery of this message would run it again, with the same outputs"
            )
            log.warning(note)
            result.notes.append(note)

    def _write_run_record(self, started_at: datetime, run_id: str, record: dict) -> None:
        name = layout.run_record(started_at.astimezone(UTC).date(), run_id)
        self.ports.blobs.write(
            name,
            json.dumps(record, indent=2, sort_keys=True, default=str).encode(),
            if_generation_match=0,
            content_type="application/json",
        )


def state_dir(root: Path | str) -> Path:
    """The embedded backend's own folder in ``root`` (bus, logs, job logs): it marks a batchcast root."""
    return Path(root) / STATE_DIR


def run_record(
    run_id: str,
    function: str,
    message: Message,
    result: StepResult | None,
    error: BaseException | None,
    started_at: datetime,
    seconds: float,
) -> dict[str, Any]:
    """The record of one run (``runs/dt=<day>/<run_id>.json``): who ran on what, for whom (dataset
    and city, never anonymous when they can be known), how it ended and why."""
    status = "failed" if error is not None else result.status if result else "failed"
    return {
        "run_id": run_id,
        "function": function,
        "dataset": run_dataset(message, result, error),
        "city": (result.city if result and result.city else getattr(error, "city", None) or message.city),
        "status": status,
        "message": {
            "kind": message.kind,
            "idempotency_key": message.idempotency_key,
            "parent_run_id": message.run_id or None,
            "logical_time": message.logical_time.isoformat(),
        },
        "started_at": started_at.isoformat(),
        "duration_seconds": round(seconds, 3),
        "counts": result.counts if result else {},
        "errors": result.errors if result else {},
        "notes": result.notes if result else [],
        "published": len(result.messages) if result and error is None else 0,
        "details": result.details if result else {},
    } | _error_fields(status, error, result)


def describe_error(error: BaseException) -> str:
    """``Class: message``, never empty: an exception whose text is empty is named by its repr."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text or repr(error)}"


def run_dataset(message: Message, result: StepResult | None, error: BaseException | None) -> str:
    """The dataset a run concerns: what the step found (an upload's profile), what its error names,
    the message's, or an upload's object metadata; "unknown" only when none of them says."""
    for known in (
        result.dataset if result else None,
        getattr(error, "dataset", None),
        message.dataset if message.dataset != UNKNOWN_DATASET else None,
        message.metadata.get("dataset") if isinstance(message, ObjectFinalized) else None,
    ):
        if known:
            return known
    return UNKNOWN_DATASET


def _error_fields(status: str, error: BaseException | None, result: StepResult | None) -> dict[str, Any]:
    """``error`` and ``error_class`` of a run record: an exception's, else a failed or rejected
    step's errors joined (never empty); both None for a run that did not fail."""
    if error is not None:
        return {"error": describe_error(error), "error_class": type(error).__name__}
    if status not in ("failed", "rejected"):
        return {"error": None, "error_class": None}
    errors = result.errors if result else {}
    text = "; ".join(f"{where}: {what}" for where, what in errors.items()) or f"the step reported {status}"
    return {"error": text, "error_class": "Rejected" if status == "rejected" else "StepFailed"}


def embedded(
    root: Path | str,
    *,
    clock: Clock | None = None,
    deliver_twice: bool = False,
    max_attempts: int = 5,
    backoff_seconds: float = 0.05,
) -> Runtime:
    """An in-process deployment on a local directory, with every route subscribed."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    clock = clock or SystemClock()
    blobs = EmbeddedBlobStore(root, clock=clock)
    bus = EmbeddedBus(
        root, max_attempts=max_attempts, deliver_twice=deliver_twice, backoff_seconds=backoff_seconds
    )
    jobs = ProcessJobLauncher(root / STATE_DIR / "jobs", lambda: _job_environment(root, clock, max_attempts))
    settings = Settings.from_env().model_copy(update={"root": root})
    ports = Ports(blobs=blobs, bus=bus, mailer=mailer_for(settings), clock=clock, jobs=jobs)
    runtime = Runtime(ports=ports, settings=settings, bus=bus)
    for route in ROUTES:
        bus.subscribe(route.topic, route.subscription, _deliver_to(runtime, route.function))
    # The bucket notification: only raw/ triggers partition (anything else would loop forever).
    blobs.on_finalize(
        layout.RAW, lambda info: bus.publish(Topic.RAW_OBJECTS, finalize_event(blobs.bucket, info))
    )
    return runtime


def _gcp_jobs(settings: Settings) -> JobLauncher:
    if settings.train_job:
        return CloudRunJobLauncher(job_resource_name(settings))
    # The emulator stack: the job is a local process that inherits this function's environment.
    return ProcessJobLauncher(settings.root / STATE_DIR / "jobs", dict)


def job_resource_name(settings: Settings) -> str:
    """The Cloud Run job's full name; a short ``BATCHCAST_TRAIN_JOB`` is placed in project and region."""
    job = settings.train_job or ""
    if "/" in job:
        return job
    if not settings.project or not settings.region:
        raise ConfigError("a short BATCHCAST_TRAIN_JOB needs BATCHCAST_PROJECT and BATCHCAST_REGION")
    return f"projects/{settings.project}/locations/{settings.region}/jobs/{job}"


def _job_environment(root: Path, clock: Clock, max_attempts: int) -> dict[str, str]:
    # A ``batchcast train`` process works on the same root; a pinned clock stays pinned there.
    environment = {
        "BATCHCAST_BACKEND": "embedded",
        "BATCHCAST_ROOT": str(root.resolve()),
        "BATCHCAST_MAX_ATTEMPTS": str(max_attempts),
    }
    if isinstance(clock, FixedClock):
        environment["BATCHCAST_NOW"] = clock.now().isoformat()
    if isinstance(clock, FileClock):
        environment["BATCHCAST_CLOCK_FILE"] = str(clock.path)
    return environment


def clock_for(settings: Settings) -> Clock:
    """The clock ``BATCHCAST_CLOCK_FILE`` or ``BATCHCAST_NOW`` asks for; else the real one."""
    if settings.clock_file:
        return FileClock(settings.clock_file)
    return FixedClock(settings.now) if settings.now else SystemClock()


def mailer_for(settings: Settings) -> Mailer:
    """SMTP when ``BATCHCAST_SMTP_HOST`` is set; otherwise an outbox directory under the root."""
    if settings.smtp_host:
        return SmtpMailer.from_settings(settings)
    return OutboxMailer(settings.root)


def _deliver_to(runtime: Runtime, function: str):
    def deliver(message: Message) -> None:
        runtime.handle(function, message)

    return deliver


@cache
def from_env() -> Runtime:
    """The runtime a functions-framework process serves, from ``BATCHCAST_*`` settings."""
    settings = Settings.from_env()
    clock = clock_for(settings)
    if settings.backend == "embedded":
        runtime = embedded(settings.root, clock=clock, max_attempts=settings.max_attempts)
        runtime.settings = settings
        return runtime
    configure_logging()  # a function's stdout is what Cloud Logging (and the stack's logs) read
    return gcp(settings, clock=clock)


def gcp(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    """A deployment on GCS and Pub/Sub (or their emulators, through the standard env variables).

    Delivery is Pub/Sub's (push subscriptions to the functions), so nothing is subscribed here.
    Mail goes through SMTP when ``BATCHCAST_SMTP_HOST`` is set, else to a local outbox under
    ``settings.root`` (the emulator stack).
    """
    # Imported here so the embedded backend needs no cloud client installed.
    from batchcast.backends.gcp import GcsBlobStore, PubSubBus

    if not settings.project:
        raise ConfigError("BATCHCAST_BACKEND=gcp needs BATCHCAST_PROJECT")
    if settings.bucket == Settings.model_fields["bucket"].default:
        raise ConfigError("BATCHCAST_BACKEND=gcp needs BATCHCAST_BUCKET")
    bus = PubSubBus(settings.project)
    ports = Ports(
        blobs=GcsBlobStore(settings.bucket, settings.project),
        bus=bus,
        mailer=mailer_for(settings),
        clock=clock or SystemClock(),
        jobs=_gcp_jobs(settings),
    )
    return Runtime(ports=ports, settings=settings, bus=bus)
