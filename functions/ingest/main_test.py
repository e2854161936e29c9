"""ingest served by functions-framework: authentication, storage in raw/, the validation preview."""

import hashlib

import pytest

from batchcast import layout

TOKEN = "store-17-secret"
GOOD = b"store_id,city,date,sales\n17,berlin,2026-02-28,100\n"


@pytest.fixture
def client(deployment, serve, monkeypatch):
    monkeypatch.setenv("BATCHCAST_INGEST_TOKEN_SHA256", hashlib.sha256(TOKEN.encode()).hexdigest())
    from batchcast import runtime

    runtime.from_env.cache_clear()
    return serve("ingest", "http")


def _raw(deployment):
    from batchcast import runtime

    return [i.name for i in runtime.from_env().ports.blobs.list(layout.RAW)]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic " + TOKEN, "Bearer "])
def test_requests_without_a_valid_token_are_refused_and_store_nothing(client, deployment, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/?dataset=retail", headers=headers, data=GOOD)
    assert response.status_code == 401
    assert _raw(deployment) == []


def test_an_upload_lands_in_raw_and_gets_a_preview(client, deployment):
    response = client.post("/?dataset=retail", headers={"Authorization": f"Bearer {TOKEN}"}, data=GOOD)
    assert response.status_code == 202, response.json
    body = response.json
    assert body["rows_accepted"] == 1 and body["rows_rejected"] == 0
    assert _raw(deployment) == [body["object"]] and body["object"].startswith("raw/dt=2026-03-02/")


def test_a_broken_file_is_kept_and_answered_with_its_reasons(client, deployment):
    response = client.post("/", headers={"Authorization": f"Bearer {TOKEN}"}, data=b"\xff\xfe\x00garbage")
    assert response.status_code == 422
    assert response.json["file_errors"] and _raw(deployment) == [response.json["object"]]


@pytest.mark.parametrize(
    ("method", "query", "data", "status"),
    [("GET", "", b"", 405), ("POST", "", b"", 400), ("POST", "?format=xlsx", GOOD, 400)],
)
def test_misuse_is_answered_clearly(client, method, query, data, status):
    response = client.open(
        "/" + query, method=method, headers={"Authorization": f"Bearer {TOKEN}"}, data=data
    )
    assert response.status_code == status and "error" in response.json


def test_a_retried_upload_with_the_same_key_is_not_stored_twice(client, deployment):
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "store17-2026-02-28"}
    first = client.post("/?dataset=retail", headers=headers, data=GOOD)
    second = client.post("/?dataset=retail", headers=headers, data=GOOD)
    assert first.json["object"] == second.json["object"] and len(_raw(deployment)) == 1
    conflict = client.post("/?dataset=retail", headers=headers, data=GOOD + b"17,berlin,2026-03-01,5\n")
    assert conflict.status_code == 409
