"""The token map: parsing, roles, the TTL cache, and keeping the last good map."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from batchcast.core import layout
from batchcast.entrypoints import runtime
from batchcast.ops.tokens import TokenMapError, TokenStore, bearer, hash_token, new_token, parse_token_map


def _entry(token: str, role: str, **limits) -> dict:
    return {"sha256": hash_token(token), "name": token, "role": role, **limits}


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_roles_limit_what_a_holder_may_read_and_upload():
    tokens = parse_token_map(
        json.dumps(
            {
                "tokens": [
                    _entry("m", "manager", entities={"retail": ["1"]}),
                    _entry("o", "operator"),
                    _entry("u", "uploader", datasets=["bikeshare"]),
                ]
            }
        )
    )
    manager, operator, uploader = (tokens.find(t) for t in "mou")
    assert manager.can_read("retail", "1") and not manager.can_read("retail", "2")
    assert not manager.can_read("bikeshare", "1") and not manager.can_upload("retail")
    assert manager.readable("retail") == {"1"} and manager.readable("bikeshare") == set()
    assert operator.can_read("bikeshare", "x") and operator.readable("retail") is None
    assert operator.can_upload("retail")
    assert uploader.can_upload("bikeshare") and not uploader.can_upload("retail")
    assert not uploader.can_read("bikeshare", "1") and uploader.readable("bikeshare") == set()
    assert tokens.find("nobody") is None


def test_digests_match_whatever_their_case():
    entry = _entry("t", "operator") | {"sha256": hash_token("t").upper()}
    assert parse_token_map(json.dumps({"tokens": [entry]})).find("t").name == "t"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"tokens": [{"sha256": "abc", "name": "x", "role": "manager"}]}',  # not a digest
        json.dumps({"tokens": [_entry("t", "admin")]}),  # unknown role
        json.dumps({"tokens": [_entry("t", "operator"), _entry("t", "manager")]}),  # same digest twice
        json.dumps({"tokens": [_entry("t", "operator") | {"token": "t"}]}),  # unknown field
        json.dumps({"users": []}),
    ],
)
def test_invalid_maps_are_refused_with_their_source(text):
    with pytest.raises(TokenMapError, match=r"config/api_tokens\.json"):
        parse_token_map(text, "config/api_tokens.json")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc ", "abc"),
        ("Bearer ", None),
        ("Basic abc", None),
        ("abc", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header, token):
    assert bearer(header) == token


def test_new_tokens_are_random_and_hashed():
    (first, digest), (second, _) = new_token(), new_token()
    assert first != second and len(first) >= 40 and digest == hash_token(first)


def test_the_bucket_map_is_reread_after_the_ttl_and_a_bad_edit_keeps_the_last_good_one(deployment):
    blobs, tick = deployment.ports.blobs, Ticker()
    store = TokenStore(blobs, ttl=30, monotonic=tick)
    assert store.authenticate("Bearer a") is None  # no map yet: nobody
    blobs.write(layout.API_TOKENS, json.dumps({"tokens": [_entry("a", "operator")]}).encode())
    tick.now = 29
    assert store.authenticate("Bearer a") is None  # still cached
    tick.now = 31
    assert store.authenticate("Bearer a").name == "a"
    blobs.write(layout.API_TOKENS, b"{broken")
    tick.now = 70
    assert store.authenticate("Bearer a").name == "a"  # the last good map stays in force
    blobs.write(layout.API_TOKENS, json.dumps({"tokens": [_entry("b", "operator")]}).encode())
    tick.now = 140
    assert store.authenticate("Bearer a") is None and store.authenticate("Bearer b").name == "b"


def test_the_environment_wins_over_the_bucket(deployment):
    blobs = deployment.ports.blobs
    blobs.write(layout.API_TOKENS, json.dumps({"tokens": [_entry("bucket", "operator")]}).encode())
    store = TokenStore(blobs, json.dumps({"tokens": [_entry("env", "operator")]}))
    assert store.authenticate("Bearer env") and store.authenticate("Bearer bucket") is None
    with pytest.raises(TokenMapError, match="BATCHCAST_API_TOKENS"):
        TokenStore(blobs, "[]").authenticate("Bearer env")


def test_the_module_app_builds_its_ports_from_the_environment_on_first_use(
    filled_bucket, token_map_json, monkeypatch, auth
):
    from batchcast_api.app import create_app

    monkeypatch.setenv("BATCHCAST_ROOT", str(filled_bucket))
    monkeypatch.setenv("BATCHCAST_API_TOKENS", token_map_json)
    runtime.from_env.cache_clear()
    try:
        with TestClient(create_app()) as client:
            assert client.get("/results/1", headers=auth("anna")).json()["stale"] is False
            assert client.get("/results/3", headers=auth("anna")).status_code == 403
    finally:
        runtime.from_env.cache_clear()
