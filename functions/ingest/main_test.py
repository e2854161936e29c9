"""ingest served by functions-framework: authentication, storage in raw/, the validation preview."""

import json

import pytest

from batchcast.core import layout
from batchcast.ops.tokens import hash_token

TOKEN = "store-17-secret"  # an uploader for retail
OPERATOR = "ops-secret"
MANAGER = "anna-secret"
MULTI = "feed-of-both-secret"  # an uploader for retail and bikeshare
GOOD = b"store_id,city,date,sales\n17,berlin,2026-02-28,100\n"
TOKEN_MAP = {
    "tokens": [
        {"sha256": hash_token(TOKEN), "name": "store-17", "role": "uploader", "datasets": ["retail"]},
        {"sha256": hash_token(OPERATOR), "name": "ops", "role": "operator"},
        {"sha256": hash_token(MANAGER), "name": "anna", "role": "manager", "entities": {"retail": ["17"]}},
        {
            "sha256": hash_token(MULTI),
            "name": "feed",
            "role": "uploader",
            "datasets": ["retail", "bikeshare"],
        },
    ]
}


def _use_map_from(where, deployment, monkeypatch):
    from batchcast.entrypoints import runtime

    if where == "env":
        monkeypatch.setenv("BATCHCAST_API_TOKENS", json.dumps(TOKEN_MAP))
    else:
        deployment.ports.blobs.write(layout.API_TOKENS, json.dumps(TOKEN_MAP).encode())
    runtime.from_env.cache_clear()


@pytest.fixture(params=["env", "bucket"])
def client(request, deployment, serve, monkeypatch):
    _use_map_from(request.param, deployment, monkeypatch)
    return serve("ingest", "http")


def _raw(deployment):
    from batchcast.entrypoints import runtime

    return [i.name for i in runtime.from_env().ports.blobs.list(layout.RAW)]


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic " + TOKEN, "Bearer "])
def test_requests_without_a_valid_token_are_refused_and_store_nothing(client, deployment, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/?dataset=retail", headers=headers, data=GOOD)
    assert response.status_code == 401
    assert _raw(deployment) == []


@pytest.mark.parametrize(
    ("token", "query", "status"),
    [
        (MANAGER, "?dataset=retail", 403),  # managers read results, they do not upload
        (TOKEN, "?dataset=bikeshare", 403),  # an uploader outside its datasets
        (MULTI, "", 403),  # two datasets: it must say which
        (MULTI, "?dataset=retail", 202),
        (OPERATOR, "", 202),  # operators may leave the dataset to detection
        (OPERATOR, "?dataset=retail", 202),
    ],
)
def test_roles_decide_who_may_upload_where(client, deployment, token, query, status):
    response = client.post("/" + query, headers={"Authorization": f"Bearer {token}"}, data=GOOD)
    assert response.status_code == status, response.json
    assert len(_raw(deployment)) == (1 if status == 202 else 0)


def test_an_uploader_with_one_dataset_uploads_there_without_naming_it(client, deployment):
    response = client.post("/", headers={"Authorization": f"Bearer {TOKEN}"}, data=GOOD)
    assert response.status_code == 202 and response.json["dataset"] == "retail"
    [info] = deployment.ports.blobs.list(layout.RAW)
    assert info.metadata["dataset"] == "retail"


def test_without_any_token_map_everyone_is_refused(deployment, serve):
    client = serve("ingest", "http")
    response = client.post("/?dataset=retail", headers={"Authorization": f"Bearer {TOKEN}"}, data=GOOD)
    assert response.status_code == 401 and _raw(deployment) == []


def test_a_broken_token_map_answers_503_and_stores_nothing(deployment, serve):
    deployment.ports.blobs.write(layout.API_TOKENS, b"{not json")
    client = serve("ingest", "http")
    response = client.post("/?dataset=retail", headers={"Authorization": f"Bearer {TOKEN}"}, data=GOOD)
    assert response.status_code == 503 and "token map" in response.json["error"]
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
