"""The results API and the managers' page: FastAPI over the bucket's results/ and status/.

``create_app(blobs=..., tokens=...)`` builds an app over given ports (tests, ``batchcast serve
--root``); the module-level ``app`` (what ``uvicorn batchcast_api.app:app`` and Cloud Run serve)
builds its ports from ``BATCHCAST_*`` on the first request, so importing it costs nothing.

Order of checks on a results request: authentication (401), then the ids' shape (422, before any
storage is touched), then authorization (403 for a store the caller may not see, whether or not
it exists), then existence (404).
"""

from __future__ import annotations

import csv
import io
import json
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from batchcast.core import layout
from batchcast.core.settings import Settings
from batchcast.entrypoints import runtime
from batchcast.ops.tokens import Principal, TokenMapError, TokenStore
from batchcast.ports import BlobStore
from batchcast_api.console import console_router
from batchcast_api.results import ResultsReader

STATIC = Path(__file__).parent / "static"
VERSION = version("batchcast")
# GET /results/{store_id} is the retail seed's contract; other datasets use /results/{dataset}/{id}.
STORE_DATASET = "retail"
CSV_COLUMNS = (
    "dataset",
    "entity_id",
    "city",
    "period_start",
    "period_end",
    "p10",
    "p50",
    "p90",
    "as_of",
    "model_version",
    "stale",
    "stale_reason",
    "stale_since",
)

# Answers depend on the caller's token and the Accept header: no shared cache may keep them.
PRIVATE = {"Cache-Control": "private, no-cache", "Vary": "Accept, Authorization"}
Id = Annotated[
    str,
    PathParam(
        pattern=f"^{layout.SAFE_ID.pattern}$", max_length=128, description="letters, digits, '_', '.', '-'"
    ),
]
Format = Annotated[Literal["json", "csv"] | None, Query(description="csv, or json (the default)")]


class Window(BaseModel):
    """A target period: local wall-clock start and end of the store's time zone."""

    start: str
    end: str


class ForecastRow(BaseModel):
    """One forecast period with its quantiles."""

    period_start: str
    period_end: str
    p10: float | None
    p50: float | None
    p90: float | None


class HistoryRow(BaseModel):
    """One past period's actual value (None: not reported)."""

    period_start: str
    actual: float | None


class TargetForecast(BaseModel):
    """The forecast of one target period that has not ended, with when it was made."""

    target: Window
    as_of: str
    as_of_local: str | None
    model_version: str
    forecast: list[ForecastRow]


class TrackRow(BaseModel):
    """A past period: the last forecast made at or before its start, and its actual (None: not in)."""

    period_start: str
    period_end: str
    p10: float | None
    p50: float | None
    p90: float | None
    as_of: str
    model_version: str
    actual: float | None


class Accuracy(BaseModel):
    """The track record summed up over the periods whose actual arrived."""

    periods: int
    mae: float | None
    coverage: float | None  # share of actuals inside the forecast's P10–P90 band


class Result(BaseModel):
    """An entity's forecasts (latest target at the top, every open target in ``forecasts``), recent
    actuals, track record and freshness."""

    dataset: str
    entity_key: str
    entity_id: str
    city: str | None
    timezone: str
    as_of: str | None
    as_of_local: str | None
    model_version: str | None
    target: Window | None
    forecast: list[ForecastRow]
    forecasts: list[TargetForecast]
    history: list[HistoryRow]
    track_record: list[TrackRow]
    accuracy: Accuracy
    stale: bool | None
    stale_reason: str | None
    stale_since: str | None
    expected: str | None


class Entity(BaseModel):
    """An entity the caller may see."""

    dataset: str
    entity_id: str
    entity_word: str  # what the dataset calls one entity: store, station
    city: str | None
    stale: bool | None


class Entities(BaseModel):
    """The entities the caller may see."""

    caller: str
    role: str
    stores: list[Entity]


class Error(BaseModel):
    """Why a request was refused."""

    detail: str


ERRORS = {
    401: {"model": Error, "description": "missing or invalid bearer token"},
    403: {"model": Error, "description": "the token may not see this entity"},
    404: {"model": Error, "description": "unknown dataset or entity"},
    503: {"model": Error, "description": "the token map cannot be read"},
}
RESULT_RESPONSES = ERRORS | {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON or CSV"}
}
AMBIGUOUS_RESPONSES = RESULT_RESPONSES | {
    409: {"model": Error, "description": "the id is in several datasets the caller may see"}
}


_bearer = HTTPBearer(auto_error=False, description="a token from the token map (see README)")


def _caller(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The token's holder; 401 (with WWW-Authenticate) when there is none, 503 without a token map."""
    try:
        principal = request.app.state.backend.tokens.find(credentials.credentials) if credentials else None
    except TokenMapError as error:
        raise HTTPException(503, "the token map cannot be read; try again later") from error
    if principal is None:
        raise HTTPException(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})
    return principal


Caller = Annotated[Principal, Depends(_caller)]


def _known_query_only(request: Request) -> None:
    """422 for a query parameter the route does not take (a typo like ``?dys=7`` would otherwise be
    ignored silently), in FastAPI's own validation-error shape, which the schema documents."""
    route = request.scope.get("route")
    taken = {param.alias for param in getattr(getattr(route, "dependant", None), "query_params", [])}
    if not taken:
        return  # routes without query parameters document no 422; nothing there reads the query
    unknown = sorted(set(request.query_params) - taken)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": f"unknown query parameter; this route takes: {', '.join(sorted(taken))}",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


class _Backend:
    """The ports an app reads, built on first use (from the environment unless given)."""

    def __init__(
        self, blobs: BlobStore | None, tokens: TokenStore | None, deployment: runtime.Runtime | None
    ) -> None:
        self._blobs = blobs if blobs is not None or deployment is None else deployment.ports.blobs
        self._tokens = tokens
        self._deployment = deployment

    @cached_property
    def blobs(self) -> BlobStore:
        return self._blobs if self._blobs is not None else runtime.from_env().ports.blobs

    @cached_property
    def deployment(self) -> runtime.Runtime:
        """The bus, clock and mailer the console's actions use (dead letters, reruns, audit times)."""
        return self._deployment if self._deployment is not None else runtime.from_env()

    @cached_property
    def tokens(self) -> TokenStore:
        if self._tokens is not None:
            return self._tokens
        settings = runtime.from_env().settings if self._blobs is None else Settings.from_env()
        return TokenStore(self.blobs, settings.api_tokens)

    @cached_property
    def results(self) -> ResultsReader:
        return ResultsReader(self.blobs)


def create_app(
    blobs: BlobStore | None = None,
    tokens: TokenStore | None = None,
    deployment: runtime.Runtime | None = None,
) -> FastAPI:
    """The API over ``blobs`` (default: ``deployment``'s bucket, else this deployment's) with
    ``tokens`` (default: the map from ``BATCHCAST_API_TOKENS`` or the bucket); the operators'
    console acts through ``deployment`` (default: the one ``BATCHCAST_*`` describes)."""
    backend = _Backend(blobs, tokens, deployment)
    app = FastAPI(
        dependencies=[Depends(_known_query_only)],
        title="batchcast results API",
        version=VERSION,
        description="Latest forecasts (P10/P50/P90), recent actuals and freshness per store or station.",
    )
    app.state.backend = backend

    def serve_result(
        request: Request, principal: Principal, dataset: str, entity_id: str, fmt: str | None
    ) -> Response:
        try:
            layout.check_id(dataset, "dataset")
            layout.check_id(entity_id, "entity id")
        except layout.LayoutError as error:
            raise HTTPException(422, str(error)) from error
        if not principal.can_read(dataset, entity_id):
            raise HTTPException(403, f"{principal.name} may not see {dataset}/{entity_id}")
        if dataset not in backend.results.profiles:
            raise HTTPException(404, f"unknown dataset {dataset!r}")
        result = backend.results.result(dataset, entity_id)
        if result is None:
            raise HTTPException(404, f"no results for {dataset}/{entity_id}")
        if _wants_csv(fmt, request.headers.get("accept", "")):
            return Response(_to_csv(result), media_type="text/csv; charset=utf-8", headers=PRIVATE)
        return JSONResponse(Result.model_validate(result).model_dump(mode="json"), headers=PRIVATE)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no storage access)."""
        return {"status": "ok", "version": VERSION}

    @app.get("/stores", response_model=Entities, responses=ERRORS, tags=["results"])
    def stores(principal: Caller) -> Entities:
        """Every entity of every dataset the caller may see."""
        return _entities(principal, list(backend.results.profiles))

    @app.get("/stores/{dataset}", response_model=Entities, responses=ERRORS, tags=["results"])
    def dataset_stores(principal: Caller, dataset: Id) -> Entities:
        """The entities of one dataset the caller may see."""
        if dataset not in backend.results.profiles:
            raise HTTPException(404, f"unknown dataset {dataset!r}")
        return _entities(principal, [dataset])

    def _entities(principal: Principal, datasets: list[str]) -> Entities:
        listed = []
        for dataset in datasets:
            allowed = principal.readable(dataset)
            for entity_id, info in backend.results.entities(dataset).items():
                if allowed is None or entity_id in allowed:
                    word = backend.results.profiles[dataset].entity_word
                    listed.append(Entity(dataset=dataset, entity_id=entity_id, entity_word=word, **info))
        return Entities(caller=principal.name, role=principal.role, stores=listed)

    @app.get("/results/{store_id}", response_model=Result, responses=AMBIGUOUS_RESPONSES, tags=["results"])
    def store_result(request: Request, principal: Caller, store_id: Id, format: Format = None) -> Response:
        """An entity's latest forecast, its dataset taken from the caller's grants (JSON, or CSV with
        ``?format=csv`` / ``Accept: text/csv``); an id in several datasets needs /results/{dataset}/{id}."""
        return serve_result(request, principal, _granted_dataset(principal, store_id), store_id, format)

    def _granted_dataset(principal: Principal, entity_id: str) -> str:
        """The one dataset the caller may see ``entity_id`` in (operators: that has it); else retail,
        whose answer then says what is wrong (403 or 404)."""
        try:
            layout.check_id(entity_id, "entity id")  # before anything is looked up in storage
        except layout.LayoutError as error:
            raise HTTPException(422, str(error)) from error
        datasets = [
            d
            for d in backend.results.profiles
            if principal.can_read(d, entity_id)
            and (principal.role != "operator" or entity_id in backend.results.entities(d))
        ]
        if len(datasets) > 1:
            raise HTTPException(
                409,
                f"{entity_id!r} is in datasets {', '.join(sorted(datasets))}: "
                f"ask /results/<dataset>/{entity_id}",
            )
        return datasets[0] if datasets else STORE_DATASET

    @app.get(
        "/results/{dataset}/{entity_id}",
        response_model=Result,
        responses=RESULT_RESPONSES,
        tags=["results"],
    )
    def entity_result(
        request: Request, principal: Caller, dataset: Id, entity_id: Id, format: Format = None
    ) -> Response:
        """Any dataset's entity (a store, a bike-share station): its latest forecast, JSON or CSV."""
        return serve_result(request, principal, dataset, entity_id, format)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.include_router(console_router(backend, _caller, ERRORS))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _wants_csv(fmt: str | None, accept: str) -> bool:
    # ?format= wins; otherwise CSV only when the client prefers text/csv over JSON.
    if fmt is not None:
        return fmt == "csv"
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = next((p.removeprefix("q=") for p in params if p.startswith("q=")), "1")
        try:
            weights[media.lower()] = float(quality)
        except ValueError:
            continue
    return weights.get("text/csv", 0) > weights.get("application/json", 0)


def _to_csv(result: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    # Every open target period, each row stamped with its own forecast's as-of and model.
    for entry in result["forecasts"]:
        for row in entry["forecast"]:
            writer.writerow(result | {"as_of": entry["as_of"], "model_version": entry["model_version"]} | row)
    return out.getvalue()


def openapi_json(application: FastAPI | None = None) -> str:
    """The OpenAPI document as committed in ``api/openapi.json``."""
    return json.dumps((application or app).openapi(), indent=2, sort_keys=True) + "\n"


app = create_app()

if __name__ == "__main__":  # python -m batchcast_api.app > api/openapi.json
    print(openapi_json(), end="")
