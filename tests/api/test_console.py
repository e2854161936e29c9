"""The operators' console's JSON face: who may use it, and what its models and freshness views say.

Runs over the API fixtures' stale bucket (four retail stores, trained, predicted, then three days
without a run), with a deployment so actions have a bus and a clock.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from factories import live_score
from fastapi.testclient import TestClient

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.entrypoints import runtime
from batchcast.ops import audit, metrics, models, views
from batchcast.ops.tokens import TokenStore
from batchcast.ports import FixedClock
from batchcast_api.app import create_app

from .conftest import LATER, TOKEN_MAP


@pytest.fixture
def bucket(stale_bucket: Path, tmp_path: Path) -> Path:
    root = tmp_path / "bucket"
    shutil.copytree(stale_bucket, root)
    return root


@pytest.fixture
def deployment(bucket: Path) -> runtime.Runtime:
    return runtime.embedded(bucket, clock=FixedClock(LATER), backoff_seconds=0.001)


@pytest.fixture
def console(deployment: runtime.Runtime):
    blobs = deployment.ports.blobs
    app = create_app(tokens=TokenStore(blobs, json.dumps(TOKEN_MAP)), deployment=deployment)
    with TestClient(app) as test_client:
        yield test_client


def operator_routes(app) -> list[tuple[str, str]]:
    """(method, path with sample ids) of every console route."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/api/ops/"):
            continue
        sample = path.replace("{dataset}", "retail").replace("{day}", "2026-03-02")
        sample = sample.replace("{upload_id}", "u1").replace("{run_id}", "r1").replace("{entity}", "1")
        found += [(method.upper(), sample) for method in operations]
    return sorted(found)


def test_every_operator_route_refuses_managers_and_uploaders_and_needs_a_token(console, auth):
    routes = operator_routes(console.app)
    assert ("GET", "/api/ops/models/retail") in routes and len(routes) >= 5
    for method, path in routes:
        for holder in ("anna", "feed"):
            response = console.request(method, path, headers=auth(holder), json={"confirm": True})
            assert response.status_code == 403, (holder, method, path, response.text)
            assert "the console is for operators" in response.json()["detail"]
        assert console.request(method, path).status_code == 401, (method, path)
    assert console.get("/api/ops/whoami", headers=auth("ops")).json()["datasets"]["retail"]


def test_a_token_in_a_cookie_is_not_accepted(console):
    console.cookies.set("Authorization", "Bearer ops-token")
    assert console.get("/api/ops/whoami").status_code == 401


def test_the_console_page_is_served_and_holds_no_data(console):
    page = console.get("/console")
    assert page.status_code == 200 and 'src="/static/console.js"' in page.text
    assert "retail" not in page.text  # everything comes from /api/ops with the header


def test_models_show_every_version_with_backtest_and_which_is_latest(console, auth, bucket):
    cities = console.get("/api/ops/models/retail", headers=auth("ops")).json()["cities"]
    trained = [c for c in cities if c["versions"]]
    assert trained, cities
    for city in trained:
        pointer = json.loads((bucket / layout.model_latest("retail", city["city"])).read_text())
        assert city["latest"] == pointer["version"]
        assert [v["version"] for v in city["versions"] if v["latest"]] == [pointer["version"]]
        folder = bucket / layout.model_dir("retail", city["city"], pointer["version"])
        metadata = json.loads((folder / "metadata.json").read_text())
        row = city["versions"][0]
        assert row["rows"] == metadata["rows"] > 0
        assert row["mase"] == metadata["metrics"]["overall"]["mase"]
        assert row["coverage_raw"] == metadata["metrics"]["overall"]["coverage_raw"]
        assert row["coverage_calibrated"] == metadata["metrics"]["overall"]["coverage"]
        assert row["train_seconds"] == metadata["train_seconds"]
    assert console.get("/api/ops/models/nope", headers=auth("ops")).status_code == 404


def test_models_show_live_accuracy_beside_the_latest_backtest(console, auth, deployment):
    blobs, profile = deployment.ports.blobs, load_profile("retail")
    trained = [c for c in profile.cities if models.latest(blobs, profile, c)]
    drifting, *others = trained
    metrics.record_live(blobs, "retail", LATER.date(), drifting, "shard-0-of-1", live_score(50.0), "v")
    check = LATER + timedelta(minutes=30)  # the bucket's own check at LATER already ran
    deployment.ports.bus.publish(
        Topic.SCHEDULE, ScheduleTick(dataset="retail", actions=["notify"], logical_time=check)
    )
    deployment.bus.drain()

    cities = {
        c["city"]: c for c in console.get("/api/ops/models/retail", headers=auth("ops")).json()["cities"]
    }
    latest = cities[drifting]["versions"][0]
    assert latest["latest"] and cities[drifting]["live"] == {
        "live_mase": 50.0,
        "live_coverage": 0.8,
        "live_mae": 2.0,
        "points": 100,
        "backtest_mase": round(latest["mase"], 4),
        "model_version": latest["version"],
        "drifting": True,
        "note": None,
    }
    for city in others:  # forecasts not scored yet: shown as not judged, with why
        assert (
            not cities[city]["live"]["drifting"]
            and cities[city]["live"]["note"] == "0 of 50 scored points in 28 days"
        )


def test_freshness_lists_stale_stores_with_reason_since_and_alert_state(console, auth, bucket):
    document = console.get("/api/ops/freshness/retail", headers=auth("ops")).json()
    freshness = json.loads((bucket / layout.FRESHNESS).read_text())["datasets"]["retail"]
    stale = {s["entity"]: s for c in document["cities"] for s in c["stale"]}
    assert set(stale) == {e for e, s in freshness["entities"].items() if s["stale"]} != set()
    assert document["checked_at"] == freshness["checked_at"]
    for entity, shown in stale.items():
        assert shown["reason"] == freshness["entities"][entity]["reason"]
        assert shown["since"] == freshness["entities"][entity]["since"]
        assert shown["alert"]["state"] in ("emailed", "pending", "grace", "no manager")


def test_an_invalid_manager_directory_shows_as_unknown_not_as_an_error(console, auth, bucket):
    (bucket / "config").mkdir(exist_ok=True)
    (bucket / layout.MANAGERS).write_text('{"datasets": 7}')
    document = console.get("/api/ops/freshness/retail", headers=auth("ops")).json()
    alerts = [s["alert"] for c in document["cities"] for s in c["stale"]]
    assert alerts and {a["state"] for a in alerts} == {"unknown"}
    assert all("config/managers.json" in a["last_error"] for a in alerts)


@pytest.mark.parametrize(
    ("episode", "managers", "state"),
    [
        (None, ["anna@example.com"], "grace"),
        (None, [], "no manager"),
        ({"id": "1@x", "stale": {"state": "sent", "sent_at": "t"}}, ["a@x"], "emailed"),
        ({"id": "1@x", "stale": {"state": "pending", "last_error": "SMTP down"}}, ["a@x"], "pending"),
        ({"id": "1@x", "stale": {"state": "sending"}}, ["a@x"], "pending"),
        ({"id": "1@x", "stale": {"state": "skipped"}}, [], "no manager"),
    ],
)
def test_alert_state_of_a_stale_store(episode, managers, state):
    assert views.alert_state(episode, managers)["state"] == state


def test_audit_records_are_read_back_by_day(console, auth, deployment):
    blobs = deployment.ports.blobs
    audit.record(blobs, who="ops", action="discard", target={"ids": ["a"]}, outcome="ok", at=LATER)
    actions = console.get(f"/api/ops/audit?day={LATER.date()}", headers=auth("ops")).json()["actions"]
    assert [(a["who"], a["action"], a["outcome"]) for a in actions] == [("ops", "discard", "ok")]
    assert console.get("/api/ops/audit?day=2020-01-01", headers=auth("ops")).json()["actions"] == []


def _dead_letter(root: Path, message_id: str) -> None:
    """One dead-lettered predict request, as the embedded bus writes it."""
    entry = {
        "message_id": message_id,
        "subscription": "predict--predict-requests",
        "attempts": 5,
        "error": "OSError: model storage for berlin unreachable",
        "dead_lettered_at": LATER.isoformat(),
        "attributes": {"dataset": "retail", "city": "berlin", "kind": "predict-request"},
        "data": "{}",
    }
    with (root / ".batchcast" / "bus" / "predict-requests-dlq.jsonl").open("a") as out:
        out.write(json.dumps(entry) + "\n")


def test_dead_letter_actions_need_confirmation_and_every_attempt_is_audited(
    console, auth, bucket, deployment
):
    _dead_letter(bucket, "m1")
    _dead_letter(bucket, "m2")
    letters = console.get("/api/ops/deadletters", headers=auth("ops")).json()["letters"]
    assert [(x["attempts"], x["city"], x["error"]) for x in letters] == [
        (5, "berlin", "OSError: model storage for berlin unreachable")
    ] * 2
    first = letters[0]
    body = {"topic": first["topic"], "ids": [first["id"]]}
    assert console.post("/api/ops/deadletters/discard", headers=auth("ops"), json=body).status_code == 400
    assert (
        console.post(
            "/api/ops/deadletters/discard", headers=auth("anna"), json=body | {"confirm": True}
        ).status_code
        == 403
    )
    done = console.post("/api/ops/deadletters/discard", headers=auth("ops"), json=body | {"confirm": True})
    assert done.status_code == 200 and done.json()["done"] == 1
    left = console.get("/api/ops/deadletters", headers=auth("ops")).json()["letters"]
    assert [x["id"] for x in left] == [letters[1]["id"]]
    trail = audit.read_day(deployment.ports.blobs, LATER.date())
    assert [(a["who"], a["action"], a["outcome"]) for a in trail] == [
        ("ops", "discard", "refused"),
        ("anna", "discard", "refused"),
        ("ops", "discard", "ok"),
    ]
    assert trail[0]["detail"] == "not confirmed" and "the console is for operators" in trail[1]["detail"]
    assert trail[2]["target"] == {"topic": first["topic"], "ids": [first["id"]]}


def test_a_rerun_is_planned_dry_then_confirmed_and_an_unchanged_day_writes_no_second_version(
    console, auth, deployment
):
    body = {"dataset": "retail", "first": "2026-03-04", "cities": ["berlin"]}
    dry = console.post("/api/ops/rerun", headers=auth("ops"), json=body | {"dry_run": True})
    assert dry.status_code == 200 and dry.json()["dry_run"] is True
    ticks = dry.json()["result"]["ticks"]
    assert ticks and all(t.startswith("2026-03-0") and t.endswith("(berlin)") for t in ticks), ticks
    assert not list(deployment.ports.blobs.list("predictions/dataset=retail/dt=2026-03-04/"))  # ran nothing

    refused = console.post("/api/ops/rerun", headers=auth("ops"), json=body | {"cities": ["oslo"]})
    assert refused.status_code == 400 and "no city oslo; known: berlin" in refused.json()["detail"]
    assert console.post("/api/ops/rerun", headers=auth("ops"), json=body).status_code == 400  # unconfirmed
    assert (
        console.post("/api/ops/rerun", headers=auth("anna"), json=body | {"confirm": True}).status_code == 403
    )

    def predictions() -> list[str]:
        return sorted(i.name for i in deployment.ports.blobs.list("predictions/dataset=retail/"))

    done = console.post("/api/ops/rerun", headers=auth("ops"), json=body | {"confirm": True})
    assert done.status_code == 200, done.text
    assert done.json()["result"]["published"] == len(ticks)
    written = predictions()
    assert any("city=berlin" in name for name in written)
    again = console.post("/api/ops/rerun", headers=auth("ops"), json=body | {"confirm": True})
    assert (
        again.status_code == 200 and again.json()["result"]["rerun_id"] != done.json()["result"]["rerun_id"]
    )
    assert predictions() == written  # the same inputs: the same files, no second version
    trail = [(a["action"], a["outcome"]) for a in audit.read_day(deployment.ports.blobs, LATER.date())]
    assert trail == [("rerun", "refused"), ("rerun", "refused"), ("rerun", "ok"), ("rerun", "ok")]


def test_an_unknown_query_parameter_is_refused_not_ignored(console, auth):
    typo = console.get("/api/ops/runs?dys=3", headers=auth("ops"))
    assert typo.status_code == 422
    [error] = typo.json()["detail"]
    assert error["loc"] == ["query", "dys"] and "this route takes: days, end" in error["msg"]
    assert console.get("/api/ops/runs?days=3", headers=auth("ops")).status_code == 200
