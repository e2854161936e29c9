"""The results API: the auth matrix, invalid ids, JSON and CSV, the store list, the committed schema."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import batchcast_api
from batchcast.core import layout
from batchcast.ops.tokens import TokenStore
from batchcast_api.app import create_app, openapi_json

REPO = Path(__file__).resolve().parents[2]


# -- authentication and authorization --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic ops-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "ops-token"},
    ],
)
@pytest.mark.parametrize("path", ["/results/1", "/results/retail/1", "/stores", "/stores/retail"])
def test_without_a_valid_token_every_data_route_answers_401(client, path, headers):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "stale" not in response.text


@pytest.mark.parametrize(
    ("token", "path", "status"),
    [
        ("anna", "/results/1", 200),  # her store
        ("anna", "/results/retail/2", 200),  # her other store, the long form
        ("anna", "/results/3", 403),  # bob's store
        ("anna", "/results/999", 403),  # not hers: refused without saying whether it exists
        ("anna", "/results/ghost", 404),  # hers, but nothing is known about it
        ("anna", "/results/bikeshare/st-1", 403),  # another dataset
        ("bob", "/results/3", 200),
        ("bob", "/results/1", 403),
        ("bob", "/results/bikeshare/st-1", 200),
        ("bob", "/results/st-1", 200),  # the short form finds the dataset in the token's grants
        ("ops", "/results/st-1", 200),  # ... or, for operators, where the id has a forecast
        ("anna", "/results/st-1", 403),  # no grant anywhere: refused, as before
        ("feed", "/results/1", 403),  # uploaders send files; they read nothing
        ("ops", "/results/1", 200),
        ("ops", "/results/4", 200),
        ("ops", "/results/bikeshare/st-1", 200),
        ("ops", "/results/999", 404),
        ("ops", "/results/bikeshare/999", 404),
        ("ops", "/results/weather/1", 404),  # unknown dataset
        ("ops", "/stores/weather", 404),
    ],
)
def test_the_auth_matrix(client, auth, token, path, status):
    response = client.get(path, headers=auth(token))
    assert response.status_code == status, response.text
    if status == 200:
        assert response.json()["entity_id"] == path.rsplit("/", 1)[1]
    else:
        assert response.json()["detail"]


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("ops", {("retail", s) for s in "1234"} | {("bikeshare", "st-1")}),
        ("anna", {("retail", "1"), ("retail", "2")}),  # "ghost" is hers but unknown: not listed
        ("bob", {("retail", "3"), ("bikeshare", "st-1")}),
        ("feed", set()),
    ],
)
def test_stores_lists_what_the_caller_may_see(client, auth, token, expected):
    body = client.get("/stores", headers=auth(token)).json()
    assert {(s["dataset"], s["entity_id"]) for s in body["stores"]} == expected
    retail = client.get("/stores/retail", headers=auth(token)).json()["stores"]
    assert {("retail", s["entity_id"]) for s in retail} == {e for e in expected if e[0] == "retail"}


def test_stores_and_results_use_each_datasets_word_for_an_entity(client, auth):
    stores = client.get("/stores", headers=auth("bob")).json()["stores"]
    assert {(s["entity_id"], s["entity_word"]) for s in stores} == {("3", "store"), ("st-1", "station")}
    assert client.get("/results/st-1", headers=auth("bob")).json()["dataset"] == "bikeshare"


def test_stores_carry_city_and_staleness(client, auth):
    stores = client.get("/stores/retail", headers=auth("ops")).json()["stores"]
    assert {s["city"] for s in stores} == {"berlin", "paris", "cologne", "munich"}
    assert all(s["stale"] is True for s in stores)


# Literal "../" never leaves an HTTP client (it normalizes the path); test_serve.py sends it raw.
INVALID_IDS = [
    "%2e%2e",
    "%2E%2E%2Fconfig",
    "..%2F..%2Fconfig%2Fapi_tokens",
    "a..b",
    ".hidden",
    "x" * 129,
    "x" * 5000,
    "a%00b",
    "a%0Ab",
    "%1b",
    "a%20b",
    "caf%C3%A9",
    "a%2Fb",
    "%5C..%5Cwin",
]


@pytest.mark.parametrize("bad", INVALID_IDS)
@pytest.mark.parametrize("template", ["/results/{}", "/results/retail/{}", "/results/{}/1", "/stores/{}"])
def test_invalid_ids_are_refused_without_touching_storage(client, auth, blobs, template, bad):
    response = client.get(template.format(bad), headers=auth("ops"))
    assert response.status_code in (404, 422), response.text
    assert blobs.touched == set()


def test_invalid_ids_are_refused_before_authorization_says_anything(client, auth, blobs):
    assert client.get("/results/%2e%2e", headers=auth("anna")).status_code == 422
    assert client.get("/results/%2e%2e").status_code == 401
    assert blobs.touched == set()


def test_healthz_needs_no_token_and_no_storage(client, blobs):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert blobs.touched == set()


def test_tokens_from_the_bucket_object(blobs, auth, token_map_json):
    blobs.write(layout.API_TOKENS, token_map_json.encode())
    with TestClient(create_app(blobs=blobs, tokens=TokenStore(blobs))) as client:
        assert client.get("/results/1", headers=auth("anna")).status_code == 200
        assert client.get("/results/3", headers=auth("anna")).status_code == 403


def test_no_token_map_refuses_everyone_and_a_broken_one_answers_503(blobs, auth):
    with TestClient(create_app(blobs=blobs, tokens=TokenStore(blobs))) as client:
        assert client.get("/results/1", headers=auth("ops")).status_code == 401
    blobs.write(layout.API_TOKENS, b'{"tokens": [{"sha256": "short"}]}')
    with TestClient(create_app(blobs=blobs, tokens=TokenStore(blobs))) as client:
        response = client.get("/results/1", headers=auth("ops"))
        assert response.status_code == 503 and "token map" in response.json()["detail"]


# -- what a result says ----------------------------------------------------------------------------


def test_a_result_has_forecast_history_freshness_and_local_as_of(client, auth, stale_bucket):
    body = client.get("/results/1", headers=auth("anna")).json()
    document = json.loads((stale_bucket / layout.results_object("retail", "store_id", "1")).read_text())
    freshness = json.loads((stale_bucket / layout.FRESHNESS).read_text())
    status = freshness["datasets"]["retail"]["entities"]["1"]
    assert body["forecast"] == document["forecast"] and len(body["forecast"]) == 1
    assert set(body["forecast"][0]) == {"period_start", "period_end", "p10", "p50", "p90"}
    assert body["history"] == document["history"] and len(body["history"]) > 30
    assert body["model_version"] == document["model_version"] and body["as_of"] == document["as_of"]
    assert body["stale"] is True and body["stale_reason"] == status["reason"] and status["reason"]
    assert body["stale_since"] == status["since"] and body["expected"] == status["expected"]
    assert body["timezone"] == "Europe/Berlin" and body["city"] == "berlin"
    assert body["as_of"] == "2026-03-02T00:00:00+00:00"
    assert body["as_of_local"] == "2026-03-02T01:00:00+01:00"  # Berlin wall clock in winter


def test_answers_are_private_to_the_caller(client, auth):
    for query in ("", "?format=csv"):
        response = client.get(f"/results/1{query}", headers=auth("anna"))
        assert response.headers["Cache-Control"] == "private, no-cache"
        assert response.headers["Vary"] == "Accept, Authorization"


def test_a_fresh_store_says_so(filled_bucket, recording, auth, token_map_json):
    app = create_app(blobs=recording(filled_bucket), tokens=TokenStore(None, token_map_json))
    with TestClient(app) as client:
        body = client.get("/results/2", headers=auth("ops")).json()
    assert body["stale"] is False and body["stale_reason"] is None and body["forecast"]


def test_a_result_without_freshness_has_unknown_staleness(client, auth, blobs):
    body = client.get("/results/bikeshare/st-1", headers=auth("bob")).json()
    document = json.loads(blobs.read(layout.results_object("bikeshare", "station_id", "st-1")))
    assert body["stale"] is None and body["forecast"] == document["forecast"] and len(body["forecast"]) == 6
    assert body["as_of_local"] == "2026-03-02T06:00:00-08:00"


def test_a_tracked_store_without_results_is_served_as_stale_and_empty(blobs, auth, token_map_json):
    freshness = json.loads(blobs.read(layout.FRESHNESS))
    freshness["datasets"]["retail"]["entities"]["ghost"] = {
        "city": "berlin",
        "stale": True,
        "since": "2026-03-02T00:00:00",
        "reason": "no forecast produced yet",
        "as_of": None,
        "expected": "2026-03-02T00:00:00",
        "forecast_for": None,
    }
    blobs.write(layout.FRESHNESS, json.dumps(freshness).encode())
    with TestClient(create_app(blobs=blobs, tokens=TokenStore(None, token_map_json))) as fresh_app:
        body = fresh_app.get("/results/ghost", headers=auth("anna")).json()
    assert (
        body["forecast"] == []
        and body["stale"] is True
        and body["stale_reason"] == "no forecast produced yet"
    )
    assert body["timezone"] == "Europe/Berlin"


# -- CSV -------------------------------------------------------------------------------------------


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/results/1?format=csv", {}),
        ("/results/1", {"Accept": "text/csv"}),
        ("/results/retail/1", {"Accept": "text/csv, application/json;q=0.5"}),
        ("/results/bikeshare/st-1?format=csv", {"Accept": "application/json"}),
    ],
)
def test_csv_and_json_agree(client, auth, path, headers):
    response = client.get(path, headers=auth("ops") | headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = _csv(response.text)
    body = client.get(path.replace("format=csv", "format=json"), headers=auth("ops")).json()
    forecast = [(entry, row) for entry in body["forecasts"] for row in entry["forecast"]]
    assert len(rows) == len(forecast) >= 1
    for row, (entry, expected) in zip(rows, forecast, strict=True):
        assert row["period_start"] == expected["period_start"] and row["period_end"] == expected["period_end"]
        for q in ("p10", "p50", "p90"):
            assert float(row[q]) == pytest.approx(expected[q])
        assert row["as_of"] == entry["as_of"] and row["model_version"] == entry["model_version"]
        assert row["entity_id"] == body["entity_id"] and row["stale"] == str(body["stale"] or "")


@pytest.mark.parametrize(
    "accept", ["application/json", "*/*", "text/csv;q=0.1, application/json", "text/html"]
)
def test_json_unless_csv_is_preferred(client, auth, accept):
    response = client.get("/results/1", headers=auth("ops") | {"Accept": accept})
    assert response.headers["content-type"] == "application/json" and response.json()["entity_id"] == "1"


def test_csv_errors_are_still_refused(client, auth):
    assert client.get("/results/3?format=csv", headers=auth("anna")).status_code == 403
    assert client.get("/results/1?format=xml", headers=auth("anna")).status_code == 422


# -- schema, page, packaging -----------------------------------------------------------------------


def test_the_committed_openapi_is_the_apps():
    committed = (REPO / "api" / "openapi.json").read_text()
    assert json.loads(committed) == json.loads(openapi_json(create_app())), (
        "api/openapi.json is out of date: .venv/bin/python -m batchcast_api.app > api/openapi.json"
    )


def test_the_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("app.js", "style.css"):
        assert f"/static/{asset}" in page.text
        assert client.get(f"/static/{asset}").status_code == 200


def test_every_package_folder_is_packaged_with_the_page():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {  # code and data folders alike (setuptools warns about an unlisted data folder)
        ".".join(p.parent.relative_to(REPO / "shared").parts)
        for p in (REPO / "shared" / "batchcast").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert folders | {"batchcast_api", "batchcast_api.static"} == set(config["packages"])
    assert config["package-dir"]["batchcast_api"] == "api"
    assert Path(batchcast_api.__file__).parent == REPO / "api"
    assert "static/*" in config["package-data"]["batchcast_api"]
    assert {p.name for p in (REPO / "api" / "static").iterdir()} >= {"index.html", "app.js", "style.css"}
