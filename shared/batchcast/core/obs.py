"""Observability: JSON log lines Cloud Logging understands, and one run record per invocation."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from datetime import datetime
from typing import Any

LABELS_KEY = "logging.googleapis.com/labels"
_SEVERITY = {
    logging.DEBUG: "DEBUG",
    logging.INFO: "INFO",
    logging.WARNING: "WARNING",
    logging.ERROR: "ERROR",
    logging.CRITICAL: "CRITICAL",
}


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line: ``severity``, ``message``, ``time`` and the run's labels.

    Cloud Logging lifts ``severity`` and the labels key out of a function's stdout lines, so the
    log-based metrics (failed runs, durations) can filter on them.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelno, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(),
            "logger": record.name,
        }
        labels = getattr(record, "labels", None)
        if labels:
            entry[LABELS_KEY] = {k: str(v) for k, v in labels.items() if v is not None}
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(stream: Any = None, level: int = logging.INFO) -> None:
    """Send batchcast's logs as JSON lines to ``stream`` (stdout by default), once."""
    logger = logging.getLogger("batchcast")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(CloudLoggingFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


MAX_KEPT_LINES = 500  # a run's log kept in the bucket: enough for any step, bounded for a runaway one


class RunLogger(logging.LoggerAdapter):
    """A logger that stamps every line with the run's labels and keeps the run's lines (``lines``),
    so the runtime can store them beside the run record."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any]) -> None:
        super().__init__(logger, extra)
        self.lines: list[dict[str, Any]] = []

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log as usual, and keep the line (its severity, time, text and any error) for the run."""
        if level >= logging.INFO and len(self.lines) < MAX_KEPT_LINES:
            line: dict[str, Any] = {
                "severity": _SEVERITY.get(level, "DEFAULT"),
                "time": datetime.now().astimezone().isoformat(),
                "message": str(msg) % args if args else str(msg),
            }
            error = kwargs.get("exc_info")
            error = sys.exc_info()[1] if error is True else error
            if isinstance(error, BaseException):
                line["error"] = f"{type(error).__name__}: {error}"
            self.lines.append(line)
        super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra["labels"] = self.extra
        if "fields" in kwargs:
            extra["fields"] = kwargs.pop("fields")
        return msg, kwargs


def run_logger(function: str, run_id: str, dataset: str | None, city: str | None) -> RunLogger:
    """A logger labelled for one invocation."""
    labels = {"run_id": run_id, "function": function, "dataset": dataset, "city": city}
    return RunLogger(logging.getLogger(f"batchcast.{function}"), labels)


def new_run_id(now: datetime) -> str:
    """A unique, time-sortable id for one invocation."""
    return f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"
