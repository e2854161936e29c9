"""The operators' console: ``/console`` (a page) and ``/api/ops/...`` (JSON and actions).

The same app as the managers' page, with a second face for the people who run batchcast. Every
route needs an operator's bearer token in the ``Authorization`` header (never a cookie, so no other
site can make a browser act with it); a manager's or uploader's token gets 403. Actions are POSTs
that must carry ``"confirm": true`` and each one, allowed or refused, leaves an audit record in the
bucket (``audit/dt=<day>/``).
"""

import dataclasses
import json
import re
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from batchcast.core import layout
from batchcast.core.config import Profile
from batchcast.core.errors import ConfigError
from batchcast.core.messages import Topic
from batchcast.data import storage
from batchcast.ops import alerts, audit, deadletters, reruns, runs, uploads_view, views
from batchcast.ops.tokens import Principal
from batchcast.ports import NotFound, Ports
from batchcast_api.results import Cached

STATIC = Path(__file__).parent / "static"
MAX_DAYS = 62  # days one grid or uploads request may span
VIEW_CACHE_SECONDS = 10.0


def console_router(backend: Any, caller: Callable[..., Principal], errors: dict[int, Any]) -> APIRouter:
    """The console's routes over the app's ``backend`` (blobs, deployment, profiles); ``errors``
    documents the refusals they share with the results API."""
    unconfirmed = {400: errors[404] | {"description": 'an action without "confirm": true'}}
    router = APIRouter(responses=errors | unconfirmed)
    # The grid and the uploads table read up to MAX_DAYS days of the run index: an operator who
    # reloads, or several looking at once, share one read per VIEW_CACHE_SECONDS.
    views_cache = Cached(VIEW_CACHE_SECONDS, time.monotonic)

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

    def acting_operator(request: Request, principal: Annotated[Principal, Depends(caller)]) -> Principal:
        # A refused action is audited too: someone with a valid token tried it.
        try:
            return operator(principal)
        except HTTPException as refusal:
            audit.record(
                backend.blobs,
                who=principal.name,
                action=request.url.path.rsplit("/", 1)[-1],
                target={"path": request.url.path},
                outcome="refused",
                at=ports().clock.now(),
                detail=str(refusal.detail),
            )
            raise

    Acting = Annotated[Principal, Depends(acting_operator)]

    def perform(
        principal: Principal, action: str, target: dict[str, Any], confirmed: bool, work: Callable[[], Any]
    ) -> dict[str, Any]:
        """Run one confirmed action and audit it (refused when unconfirmed, failed when it raised)."""
        at = ports().clock.now()

        def note(outcome: str, detail: str) -> dict[str, Any]:
            return audit.record(
                backend.blobs,
                who=principal.name,
                action=action,
                target=target,
                outcome=outcome,
                at=at,
                detail=detail,
            )

        if not confirmed:
            note("refused", "not confirmed")
            raise HTTPException(400, f'{action} needs "confirm": true in the request body')
        try:
            result = work()
        except (ConfigError, ValueError, LookupError) as error:
            note("failed", f"{type(error).__name__}: {error}")
            raise HTTPException(400, f"{action} failed: {type(error).__name__}: {error}") from error
        except Exception as error:
            note("failed", f"{type(error).__name__}: {error}")
            raise
        entry = note("ok", json.dumps(result, default=str)[:2000])
        return {"action": action, "audit_id": entry["id"], "result": result}

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
        """Per city: model versions with backtest scores, training time and rows; which is LATEST;
        and the live accuracy (MASE, coverage, drifting) the last scheduled check judged against it."""
        chosen = profile(dataset)  # versions change once per training: share one read for a while
        cities = views_cache.get(f"models/{dataset}", lambda: views.models(backend.blobs, chosen))
        return {"dataset": dataset, "cities": cities}

    @router.get("/api/ops/freshness/{dataset}", tags=["ops"])
    def freshness(principal: Operator, dataset: str) -> dict[str, Any]:
        """Per city: expected period, stale stores since when and why, and each one's alert state."""
        try:
            directory = alerts.load_directory(ports())
        except ConfigError:
            directory = None
        return views.freshness(backend.blobs, profile(dataset), directory)

    @router.get("/api/ops/audit", tags=["ops"])
    def audit_trail(principal: Operator, day: Day | None = None) -> dict[str, Any]:
        """The operator actions of one UTC day (default: today)."""
        day = day or ports().clock.now().date()
        return {"day": day.isoformat(), "actions": audit.read_day(backend.blobs, day)}

    @router.get("/api/ops/runs", tags=["ops"])
    def run_grid(principal: Operator, days: DaysQuery = 14, end: Day | None = None) -> dict[str, Any]:
        """Days × (dataset, function, city): each cell's worst outcome, run count, duration, error."""
        wanted = day_range(end or ports().clock.now().date(), days)
        return views_cache.get(f"runs/{wanted[0]}/{days}", lambda: _grid(wanted))

    def _grid(wanted: list[date]) -> dict[str, Any]:
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
        detail = runs.run_detail(backend.blobs, _safe(run_id, "run id"))
        if detail is None:
            raise HTTPException(404, f"no run {run_id}")
        return detail | {"log_url": _log_url(backend.deployment.settings, run_id)}

    @router.get("/api/ops/uploads/{dataset}", tags=["ops"])
    def uploads(principal: Operator, dataset: str, days: DaysQuery = 7) -> dict[str, Any]:
        """The dataset's latest uploads (accepted / rejected rows, report, rejected rows) and the
        stores expected to upload that have not."""
        chosen = profile(dataset)
        return views_cache.get(f"uploads/{dataset}/{days}", lambda: _uploads(chosen, days))

    def _uploads(chosen: Profile, days: int) -> dict[str, Any]:
        dataset = chosen.name
        now = ports().clock.now()
        found = uploads_view.latest_uploads(
            backend.blobs, day_range(now.date(), days), now=now, dataset=dataset
        )
        missing = uploads_view.missing_stores(backend.blobs, chosen, now)
        return {
            "dataset": dataset,
            "uploads": [_upload_row(upload) for upload in found],
            "missing": [
                {
                    "entity": m["entity"],
                    "city": city,
                    "last_data": m["last_data"],
                    "needed_from": m["needed_from"],
                }
                for city, late in sorted(missing.items())
                for m in late
            ],
        }

    @router.get("/api/ops/uploads/{dataset}/stores/{entity}", tags=["ops"])
    def store_uploads(principal: Operator, dataset: str, entity: str) -> dict[str, Any]:
        """One store's upload history: its data files, newest data first."""
        chosen = profile(dataset)
        known = backend.results.entities(dataset).get(_safe(entity, chosen.entity_key))
        if known is None or not known.get("city"):
            raise HTTPException(404, f"no store {dataset}/{entity}")
        history = uploads_view.store_history(backend.blobs, chosen, known["city"], entity)
        return {"dataset": dataset, "entity": entity, "city": known["city"], "files": history}

    @router.get("/api/ops/uploads/{day}/{upload_id}/report", tags=["ops"])
    def upload_report(principal: Operator, day: Day, upload_id: str) -> Response:
        """The error report of a rejected (or partly rejected) upload."""
        name = layout.rejected_report(day, _safe(upload_id, "upload id"))
        report = storage.read_json(backend.blobs, name)
        if report is None:
            raise HTTPException(404, f"no error report {name}")
        return Response(storage.dumps(report), media_type="application/json")

    @router.get("/api/ops/uploads/{day}/{upload_id}/rejected", tags=["ops"])
    def rejected_rows(principal: Operator, day: Day, upload_id: str, ext: str = "csv") -> Response:
        """The rejected rows (or the whole rejected file) of an upload, as a download."""
        if ext not in layout.RAW_EXTENSIONS:
            raise HTTPException(
                404, f"no rejected rows with extension {ext!r}: {', '.join(layout.RAW_EXTENSIONS)}"
            )
        name = layout.rejected_object(day, _safe(upload_id, "upload id"), ext)
        try:
            data = backend.blobs.read(name)
        except NotFound:
            raise HTTPException(404, f"no rejected rows {name}") from None
        disposition = f'attachment; filename="{upload_id}.rejected.{ext}"'
        media = "text/csv" if ext == "csv" else "application/octet-stream"
        return Response(data, media_type=media, headers={"Content-Disposition": disposition})

    @router.get("/api/ops/deadletters", tags=["ops"])
    def dead_letters(principal: Operator) -> dict[str, Any]:
        """Every dead letter of every topic: error, attempts, attributes and age."""
        letters = deadletters.list_letters(backend.deployment.ports.bus, backend.blobs, ports().clock.now())
        return {"letters": letters}

    @router.post("/api/ops/deadletters/{what}", tags=["ops"])
    def dead_letter_action(principal: Acting, what: LetterAction, body: LettersBody) -> dict[str, Any]:
        """Redrive (republish to the original topic) or discard the chosen dead letters, or all."""
        target = {"topic": body.topic or "all", "ids": body.ids if body.ids is not None else "all"}
        done = perform(
            principal,
            what,
            target,
            body.confirm,
            lambda: _act_on_letters(backend.deployment, what, body.topic, body.ids),
        )
        return done | {"done": done["result"]["done"]}

    @router.post("/api/ops/rerun", tags=["ops"])
    def rerun(principal: Acting, body: RerunBody) -> dict[str, Any]:
        """Republish the scheduled work (train, predict, notify) of a range of local days, for every
        city of a dataset or a few. A dry run lists the ticks and runs nothing (no confirmation)."""
        chosen = profile(body.dataset)
        last = body.last or body.first
        try:
            planned = reruns.plan(
                chosen, body.first, last, body.cities, reruns.new_rerun_id(ports().clock.now())
            )
        except reruns.RerunError as error:
            raise HTTPException(400, f"rerun of {chosen.name} refused: {error}") from error
        summary = {"rerun_id": planned.rerun_id, "ticks": planned.lines()}
        if body.dry_run:
            return {"action": "rerun", "dry_run": True, "result": summary}
        target = {"dataset": chosen.name, "from": body.first, "to": last, "cities": body.cities or "all"}
        work = lambda: summary | {"published": _publish_ticks(backend.deployment, planned)}  # noqa: E731
        return perform(principal, "rerun", target, body.confirm, work) | {"dry_run": False}

    return router


LetterAction = Literal["redrive", "discard"]


class LettersBody(BaseModel):
    """Which dead letters to act on (``topic``/``ids`` None: all) and the explicit confirmation."""

    model_config = ConfigDict(json_schema_extra={"required": ["confirm"]})

    topic: Topic | None = None
    ids: list[str] | None = None
    # The schema says what an action needs (true); a false one is still answered, with 400 and an
    # audit record of the refusal, rather than dropped by validation unrecorded.
    confirm: bool = Field(default=False, json_schema_extra={"const": True})


def _upload_row(upload: dict[str, Any]) -> dict[str, Any]:
    """A partition run as the uploads table shows it, with what the report and rows links need."""
    rejected = upload.get("rejected_rows")
    report = upload.get("report")
    day = (report or rejected or upload.get("raw_object") or "").split("dt=", 1)[-1][:10] or None
    return upload | {
        "day": day,
        "has_report": bool(report),
        "rejected_ext": rejected.rsplit(".", 1)[-1] if rejected else None,
    }


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
        raise HTTPException(404, f"no such {what}: {error}") from error  # no object can have this id


def day_range(end: date, days: int) -> list[date]:
    """``days`` dates ending with ``end``, newest first (the query bounds ``days``; the calendar's
    first day bounds the range)."""
    return [end - timedelta(days=n) for n in range(min(days, (end - date.min).days + 1))]


def iso_day(value: object) -> object:
    """Only ``YYYY-MM-DD`` is a day here: pydantic would also read ``0`` as 1970-01-01."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    if isinstance(value, date):
        return value
    raise ValueError("a day is written YYYY-MM-DD")


Day = Annotated[date, BeforeValidator(iso_day)]
DaysQuery = Annotated[int, Query(ge=1, le=MAX_DAYS, description=f"how many days back (1 to {MAX_DAYS})")]


class RerunBody(BaseModel):
    """A rerun or backfill: a dataset, local days ``first`` to ``last`` (default: ``first``), cities
    (none: all), and either ``dry_run`` or the explicit confirmation."""

    model_config = ConfigDict(json_schema_extra={"required": ["dataset", "first", "confirm"]})

    dataset: str
    first: Day
    last: Day | None = None
    cities: list[str] = []
    dry_run: bool = False
    confirm: bool = Field(default=False, json_schema_extra={"const": True})


def _publish_ticks(deployment: Any, planned: reruns.Plan) -> int:
    """Publish a rerun's ticks; on the embedded bus deliver each before the next, in time order, so
    a day's training runs before the predictions that use it (as ``batchcast rerun`` does)."""
    for tick in planned.ticks:
        reruns.publish(deployment.ports.bus, [tick])
        if hasattr(deployment.bus, "drain"):
            deployment.bus.drain()
    return len(planned.ticks)


# -- the dead-letters service (batchcast.ops.deadletters), in one place --------------------------


def _act_on_letters(deployment: Any, what: str, topic: str | None, ids: list[str] | None) -> dict[str, Any]:
    """Redrive or discard ``ids`` (None: all) of ``topic`` (None: every topic); the ids done."""
    act = deadletters.redrive if what == "redrive" else deadletters.discard
    done = [
        letter
        for chosen in deadletters.topics(topic)
        for letter in act(deployment.ports.bus, chosen.value, ids)
    ]
    if what == "redrive" and hasattr(deployment.bus, "drain"):
        deployment.bus.drain()  # the embedded bus delivers only when drained; Pub/Sub pushes by itself
    return {"done": len(done), "ids": done}
