"""The operators' console in headless Chromium, served by ``batchcast serve`` over a bucket where things
went wrong: predict failed for berlin (an outage) until its message was dead-lettered, and one
upload was rejected outright.

Each test writes a screenshot of the view it checks to ``$BATCHCAST_SCREENSHOTS`` (default: the
``batchcast-console`` folder in the system temp dir; never committed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from factories import live_score

from batchcast.core import layout
from batchcast.core.config import load_profile
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.ops import metrics
from batchcast.ports import FixedClock
from batchcast.tools import synth

from .browser import Browser, chromium_path
from .conftest import NOW, serving

NEXT = NOW + timedelta(days=2)  # past the target the fixtures' forecasts were made for
FAILING_CITY = "berlin"  # store 1's city in the fixtures' synthetic data
OUTAGE = f"model storage for {FAILING_CITY} unreachable"


@pytest.fixture(scope="module")
def troubled_bucket(filled_bucket: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fresh bucket two days later: a rejected upload, then a predict tick during a berlin outage
    and a freshness check. (The tests run in file order: the redrive comes last.)"""
    from batchcast.steps import predict

    root = tmp_path_factory.mktemp("console") / "bucket"
    shutil.copytree(filled_bucket, root)
    deployment = runtime.embedded(root, clock=FixedClock(NEXT), max_attempts=2, backoff_seconds=0.001)
    frame = synth.generate(load_profile("retail"), 4, 1, seed=3, end=NOW.date())
    frame["sales"] = "n/a"  # every row invalid: the whole upload is rejected, nothing flows on
    uploads.store_upload(
        deployment.ports.blobs,
        frame.to_csv(index=False).encode(),
        ext="csv",
        now=NEXT,
        dataset="retail",
        upload_id="bad-sales",
    )
    deployment.bus.drain()
    original = predict.training.load_model

    def broken(blobs, profile, city, version):
        if city == FAILING_CITY:
            raise OSError(OUTAGE)
        return original(blobs, profile, city, version)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(predict.training, "load_model", broken)
        deployment.ports.bus.publish(
            Topic.SCHEDULE, ScheduleTick(dataset="retail", actions=["predict"], logical_time=NEXT)
        )
        deployment.bus.drain()
    # Paris's forecasts did far worse live than its backtest: the models view flags the drift.
    metrics.record_live(
        deployment.ports.blobs, "retail", NEXT.date(), "paris", "shard-0-of-1", live_score(50.0), "v"
    )
    tick = ScheduleTick(dataset="retail", actions=["notify"], logical_time=NEXT)
    deployment.ports.bus.publish(Topic.SCHEDULE, tick)
    deployment.bus.drain()
    assert sum(len(deployment.bus.dead_letters(t.value)) for t in Topic) == 1
    return root


@pytest.fixture(scope="module")
def console_server(troubled_bucket: Path, token_map_json: str) -> Iterator[str]:
    with serving(troubled_bucket, token_map_json, now=NEXT) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    opened = Browser(chromium_path(), tmp_path_factory.mktemp("chromium-profile"))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    """Where the screenshots go: ``$BATCHCAST_SCREENSHOTS``, else a folder in the system temp dir
    (outside pytest's rotating temp dirs, so they survive the run to be looked at)."""
    folder = Path(
        os.environ.get("BATCHCAST_SCREENSHOTS") or Path(tempfile.gettempdir()) / "batchcast-console"
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {folder}")
    return folder


def shoot(browser: Browser, shots: Path, name: str) -> None:
    data = browser.screenshot(shots / f"{name}.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def sign_in(browser: Browser, base: str, query: str, holder: str = "ops") -> str:
    """Open ``/console?<query>`` with ``holder``'s token in the fragment; return the ready view."""
    browser.open(f"{base}/console?{query}#token={holder}-token".replace("/console?#", "/console#"))
    return browser.evaluate("document.body.dataset.ready")


def test_a_manager_token_is_refused(browser, console_server, shots):
    assert sign_in(browser, console_server, "view=runs", holder="anna") == "error"
    text = browser.text()
    assert "Refused: this console is for operators only" in text and "anna is a manager" in text
    assert browser.evaluate("document.getElementById('tabs').hidden") is True
    assert browser.evaluate("location.hash") == ""  # the token left the address bar
    shoot(browser, shots, "refused")


def test_a_failing_predict_shows_in_the_grid_with_its_reason(browser, console_server, shots):
    assert sign_in(browser, console_server, f"view=runs&end={NEXT.date()}&days=3") == "runs"
    failed = browser.evaluate(
        "[...document.querySelectorAll('#run-grid td.cell.failed')].map(td => td.innerText)"
    )
    assert any(OUTAGE in cell for cell in failed), (failed, browser.text()[:3000])
    header = browser.evaluate("document.querySelector('#run-grid thead').innerText")
    assert f"retail predict · {FAILING_CITY}" in header
    shoot(browser, shots, "runs")
    browser.click("#run-grid td.cell.failed a")
    browser.wait_for("document.body.dataset.ready === 'run'")
    assert OUTAGE in browser.evaluate("document.getElementById('run-error').innerText")
    assert OUTAGE in browser.evaluate("document.getElementById('run-log').innerText")
    shoot(browser, shots, "run")


def test_a_rejected_uploads_report_opens(browser, console_server, shots):
    assert sign_in(browser, console_server, "view=uploads&dataset=retail&days=7") == "uploads"
    row = browser.evaluate(
        "[...document.querySelectorAll('#uploads tbody tr')].map(r => r.innerText)"
        ".find(t => t.includes('bad-sales'))"
    )
    assert row and "rejected" in row, browser.text()[:3000]
    shoot(browser, shots, "uploads")
    browser.click("#uploads a[href*='view=report']")
    browser.wait_for("document.body.dataset.ready === 'report'")
    report = json.loads(browser.evaluate("document.getElementById('report').innerText"))
    assert report and "sales" in json.dumps(report)
    shoot(browser, shots, "report")


def test_models_and_freshness_views(browser, console_server, shots, troubled_bucket):
    assert sign_in(browser, console_server, "view=models&dataset=retail") == "models"
    latest = json.loads((troubled_bucket / layout.model_latest("retail", "paris")).read_text())
    assert f"paris: LATEST {latest['version']}" in browser.text()
    assert browser.evaluate("document.querySelectorAll('table.models tbody tr').length") >= 4
    # Live accuracy beside the LATEST backtest: Paris drifts, the others have no scored forecasts yet.
    heading, latest_row = browser.evaluate(
        "(() => { const h = [...document.querySelectorAll('h2')].find(e => e.innerText.startsWith('paris'));"
        " return [h.innerText, h.nextElementSibling.querySelector('tbody tr').innerText]; })()"
    )
    assert "live accuracy drifting" in heading and "(LATEST)" in latest_row
    assert latest_row.split("\t")[-3:] == ["50.000", "0.800", "100"], latest_row
    assert browser.text().count("not judged: 0 of 50 scored points in 28 days") == 3
    shoot(browser, shots, "models")
    assert sign_in(browser, console_server, "view=freshness&dataset=retail") == "freshness"
    assert browser.evaluate("document.querySelectorAll('#freshness-cities tbody tr').length") == 4
    stale = browser.evaluate("document.getElementById('stale-stores').innerText")
    freshness = json.loads((troubled_bucket / layout.FRESHNESS).read_text())["datasets"]["retail"]
    assert f"1\t{FAILING_CITY}" in stale and freshness["entities"]["1"]["reason"] in stale, stale
    assert "no manager" in stale  # the fixtures' bucket has no manager directory
    shoot(browser, shots, "freshness")


def test_a_backfill_is_listed_dry_then_run_after_confirmation(browser, console_server, shots):
    assert sign_in(browser, console_server, "view=rerun&dataset=retail") == "rerun"
    first = (NEXT - timedelta(days=2)).date()
    browser.evaluate(
        f"document.getElementById('rerun-first').value = '{first}';"
        f"document.getElementById('rerun-last').value = '{NEXT.date() - timedelta(days=1)}';"
        "document.querySelector('input[name=city][value=paris]').checked = true;"
        "document.querySelector('#rerun-form button[type=submit]').click()"
    )
    ticks = browser.wait_for("document.getElementById('rerun-ticks')?.innerText")
    lines = ticks.splitlines()
    assert len(lines) >= 2 and all("(paris)" in line for line in lines), ticks
    assert str(first) in lines[0] and "berlin" not in ticks
    shoot(browser, shots, "rerun")
    browser.click("#rerun-run")
    assert "Republish" in browser.wait_for("document.getElementById('confirm-box')?.innerText")
    browser.click("#confirm-action")
    said = browser.wait_for(
        "document.getElementById('message').innerText.includes('republished') && "
        "document.getElementById('message').innerText",
        timeout=180,
    )
    assert f"{len(lines)} tick(s) republished" in said, said


def _result(base: str, entity: str) -> dict:
    request = urllib.request.Request(
        f"{base}/results/{entity}", headers={"Authorization": "Bearer ops-token"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def test_a_dead_letter_is_redriven_from_the_page_and_its_stores_results_appear(
    browser, console_server, shots, troubled_bucket
):
    before = _result(console_server, "1")
    assert sign_in(browser, console_server, "view=deadletters") == "deadletters"
    letters = browser.evaluate("document.querySelectorAll('#dead-letters tbody tr').length")
    assert letters == 1 and OUTAGE in browser.text()
    shoot(browser, shots, "deadletters")
    browser.click("#dead-letters button.redrive")
    assert "Republish to the original topic: 1 dead letter(s)?" in browser.wait_for(
        "document.getElementById('confirm-box')?.innerText"
    )
    browser.click("#confirm-action")
    browser.wait_for("document.body.innerText.includes('No dead letters.')", timeout=120)
    after = _result(console_server, "1")
    assert after["target"]["start"] > before["target"]["start"], (before["target"], after["target"])
    sign_in(browser, console_server, f"view=audit&day={NEXT.date()}")
    assert "redrive" in browser.evaluate("document.getElementById('audit').innerText")
