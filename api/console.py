"""The operators' console: ``/console`` (a page) and ``/api/ops/...`` (JSON and actions).

The same app as the managers' page, with a second face for the people who run batchcast. Every
route needs an operator's bearer token in the ``Authorization`` header (never a cookie, so no other
site can make a browser act with it); a manager's or uploader's token gets 403. Actions are POSTs
that must carry ``"confirm": true`` and each one, allowed or refused, leaves an audit record in the
bucket (``audit/dt=<day>/``).
"""

import dataclasses
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import FileResponse, Response

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.errors import ConfigError
from batchcast.data import storage
from batchcast.ops import alerts, audit, views
from batchcast.ops.tokens import Principal
from batchcast.ports import NotFound, Ports

STATIC = Path(__file__).parent / "static"
MAX_DAYS = 62  # days one grid or uploads request may span


def console_router(backend: Any, caller: Callable[..., Principal]) -> APIRouter:
    """The console's routes over the app's ``backend`` (blobs, deployment, profiles)."""
    router = APIRouter()

    def operator(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if principal.role != "operator":
            raise HTTPException(403, f"{principal.name} is a {principal.role}: the console is for operators")
        return principal

    Operator = Annotated[Principal, Depends(operator)]

    def ports() -> Ports:
        # The deployment's bus, clock and mailer over the app's bucket (tests wrap it to count reads).
        return dataclasses.replace(backend.deployment.ports, blobs=backend.blobs)

    def profile(dataset: str) -> Profile:
        found = backend.results.profiles.get(dataset)
        if found is None:
            raise HTTPException(404, f"unknown dataset {dataset!r}")
        return found

    @router.get("/console", include_in_schema=False)
    def page() -> FileResponse:
        # The page holds no data: its script fetches /api/ops/* with the token in a header.
        return FileResponse(STATIC / "console.html")

    @router.get("/api/ops/whoami", tags=["ops"])
    def whoami(principal: Operator) -> dict[str, Any]:
        """The operator's name and the datasets (with cities) this deployment serves."""
        datasets = {name: list(p.cities) for name, p in backend.results.profiles.items()}
        return {"name": principal.name, "role": principal.role, "datasets": datasets}

    @router.get("/api/ops/models/{dataset}", tags=["ops"])
    def models(principal: Operator, dataset: str) -> dict[str, Any]:
        """Per city: model versions with backtest scores, training time and rows; which is LATEST."""
        return {"dataset": dataset, "cities": views.models(backend.blobs, profile(dataset))}

    @router.get("/api/ops/freshness/{dataset}", tags=["ops"])
    def freshness(principal: Operator, dataset: str) -> dict[str, Any]:
        """Per city: expected period, stale stores since when and why, and each one's alert state."""
        try:
            directory = alerts.load_directory(ports())
        except ConfigError:
            directory = None
        return views.freshness(backend.blobs, profile(dataset), directory)

    @router.get("/api/ops/audit", tags=["ops"])
    def audit_trail(principal: Operator, day: date | None = None) -> dict[str, Any]:
        """The operator actions of one UTC day (default: today)."""
        day = day or ports().clock.now().date()
        return {"day": day.isoformat(), "actions": audit.read_day(backend.blobs, day)}

    @router.get("/api/ops/runs", tags=["ops"])
    def run_grid(principal: Operator, days: DaysQuery = 14, end: date | None = None) -> dict[str, Any]:
        """Days × (dataset, function, city): each cell's worst outcome, run count, duration, error."""
        from batchcast.ops import runs  # the run index (written with every run)

        wanted = day_range(end or ports().clock.now().date(), days)
        cells = runs.grid(runs.runs_for_days(backend.blobs, wanted, now=ports().clock.now()))
        keys = sorted({key for row in cells.values() for key in row})
        return {
            "days": [day.isoformat() for day in wanted],
            "columns": [
                dict(zip(("dataset", "function", "city"), k.split("/"), strict=True)) | {"key": k}
                for k in keys
            ],
            "cells": {
                f"{day}|{key}": {
                    "outcome": cell["status"],
                    "runs": cell["runs"],
                    "by_status": cell["by_status"],
                    "seconds": cell["seconds"],
                    "run_id": cell.get("last_run_id"),
                    "error": cell.get("error"),
                }
                for day, row in cells.items()
                for key, cell in row.items()
            },
        }

    @router.get("/api/ops/runs/{run_id}", tags=["ops"])
    def run_page(principal: Operator, run_id: str) -> dict[str, Any]:
        """One run: its record (message, outputs, error) and its log lines."""
        from batchcast.ops import runs

        detail = runs.run_detail(backend.blobs, _safe(run_id, "run id"))
        if detail is None:
            raise HTTPException(404, f"no run {run_id}")
        return detail | {"log_url": _log_url(backend.deployment.settings, run_id)}

    @router.get("/api/ops/uploads/{day}/{upload_id}/report", tags=["ops"])
    def upload_report(principal: Operator, day: date, upload_id: str) -> Response:
        """The error report of a rejected (or partly rejected) upload."""
        name = layout.rejected_report(day, _safe(upload_id, "upload id"))
        report = storage.read_json(backend.blobs, name)
        if report is None:
            raise HTTPException(404, f"no error report {name}")
        return Response(storage.dumps(report), media_type="application/json")

    @router.get("/api/ops/uploads/{day}/{upload_id}/rejected", tags=["ops"])
    def rejected_rows(principal: Operator, day: date, upload_id: str, ext: str = "csv") -> Response:
        """The rejected rows (or the whole rejected file) of an upload, as a download."""
        if ext not in layout.RAW_EXTENSIONS:
            raise HTTPException(422, f"ext must be one of {', '.join(layout.RAW_EXTENSIONS)}")
        name = layout.rejected_object(day, _safe(upload_id, "upload id"), ext)
        try:
            data = backend.blobs.read(name)
        except NotFound:
            raise HTTPException(404, f"no rejected rows {name}") from None
        disposition = f'attachment; filename="{upload_id}.rejected.{ext}"'
        media = "text/csv" if ext == "csv" else "application/octet-stream"
        return Response(data, media_type=media, headers={"Content-Disposition": disposition})

    return router


def _log_url(settings: Any, run_id: str) -> str | None:
    """Cloud Logging's page for one run's lines (on GCP; the bucket keeps them elsewhere)."""
    if settings.backend != "gcp" or not settings.project:
        return None
    query = quote(f'jsonPayload.run_id="{run_id}"')
    return f"https://console.cloud.google.com/logs/query;query={query}?project={settings.project}"


def _safe(value: str, what: str) -> str:
    try:
        return layout.check_id(value, what)
    except layout.LayoutError as error:
        raise HTTPException(422, str(error)) from error


def day_range(end: date, days: int) -> list[date]:
    """``days`` dates ending with ``end``, newest first (422 beyond :data:`MAX_DAYS`)."""
    if not 1 <= days <= MAX_DAYS:
        raise HTTPException(422, f"days must be between 1 and {MAX_DAYS}")
    return [end - timedelta(days=n) for n in range(days)]


DaysQuery = Annotated[int, Query(description=f"how many days back (1 to {MAX_DAYS})")]
