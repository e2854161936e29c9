"""The managers' page in headless Chromium, served by ``batchcast serve`` over the stale bucket.

Chromium comes from Debian (``apt-get install -y chromium``; ``.ci/run`` installs it). Without it
the tests skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import socket
import subprocess
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import pytest
from factories import daily_result

from batchcast.core import layout
from batchcast.ops import results

from .browser import FLAGS, chromium_path
from .conftest import serving


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_path()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _raw_status(base: str, path: str) -> int:
    """Send ``path`` exactly as written (clients normalize ``../``; attackers do not)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        headers = "Host: x\r\nAuthorization: Bearer ops-token\r\nConnection: close"
        connection.sendall(f"GET {path} HTTP/1.1\r\n{headers}\r\n\r\n".encode())
        return int(connection.recv(64).split()[1])


def test_batchcast_serve_answers_over_a_local_bucket(server):
    assert _get(f"{server}/healthz")[0] == 200
    status, body = _get(f"{server}/results/1", "anna-token")
    assert status == 200 and json.loads(body)["stale"] is True
    assert _get(f"{server}/results/3", "anna-token")[0] == 403
    assert _get(f"{server}/results/1")[0] == 401


@pytest.mark.parametrize(
    "path",
    [
        "/results/../config/api_tokens.json",
        "/results/retail/../../status/freshness.json",
        "/results/..",
        "/static/../app.py",
    ],
)
def test_raw_traversal_paths_are_refused(server, path):
    assert _raw_status(server, path) in (404, 422)


def _browse(chromium: str, tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"  # a fresh profile per run
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_the_page_shows_the_stale_banner_chart_and_local_as_of(chromium, server, tmp_path, stale_bucket):
    url = f"{server}/?dataset=retail&entity=1#token=anna-token"  # the alert emails' deep link
    dom = _browse(chromium, tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    freshness = json.loads((stale_bucket / "status/freshness.json").read_text())
    status = freshness["datasets"]["retail"]["entities"]["1"]
    html = dom.stdout
    assert 'id="stale-banner"' in html and "This forecast is stale:" in html
    assert status["reason"] in html  # the reason, as notify wrote it
    assert f"Stale since {status['since'][:16].replace('T', ' ')}" in html
    assert "As of 2026-03-02 01:00 GMT+1 (Europe/Berlin local time)" in html
    assert 'class="band"' in html and 'class="median"' in html and 'class="actual"' in html
    assert "1 · berlin (retail)" in html  # the deep-linked store is selected and titled
    # The words come from the dataset (retail's entity key store_id: "store"), not the page's text.
    assert 'id="entity-label">Store</label>' in html and "forecasts for your stores" in html
    assert "token=" not in html.split("<body")[0]

    shot = tmp_path / "page.png"
    result = _browse(chromium, tmp_path, url, f"--screenshot={shot}", "--window-size=1100,1000")
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_a_store_the_token_may_not_see_says_so(chromium, server, tmp_path):
    dom = _browse(chromium, tmp_path, f"{server}/?dataset=retail&entity=3#token=anna-token", "--dump-dom")
    assert "Your token does not give access to this store." in dom.stdout
    assert "This forecast is stale" not in dom.stdout


def test_the_page_lists_todays_and_tomorrows_forecast_and_draws_the_track_record(
    chromium, stale_bucket, token_map_json, tmp_path
):
    ticks = [date(2026, 1, 20) + timedelta(days=i) for i in range(42)]  # the last one: 2026-03-02
    actual = {day: 100.0 + (i * 7) % 25 for i, day in enumerate(ticks)}
    forecast = {day: 110.0 + (i % 4) * 3 for i, day in enumerate(ticks)}
    documents = [  # each midnight's forecast of the day, with the actuals that had arrived
        daily_result(day, f"{day}T00:00:00", forecast[day], {d: actual[d] for d in ticks if d < day}, "2")
        for day in ticks
    ]
    today, tomorrow = ticks[-1], ticks[-1] + timedelta(days=1)
    morning = daily_result(tomorrow, f"{today}T06:00:00", 130.0, {d: actual[d] for d in ticks[:-1]}, "2")
    documents.append(morning)
    root = tmp_path / "bucket"
    shutil.copytree(stale_bucket, root)
    document = functools.reduce(results.merge, documents, None)
    (root / layout.results_object("retail", "store_id", "2")).write_text(json.dumps(document))

    errors = [abs(forecast[day] - actual[day]) for day in ticks[:-1]]  # today's actual is not in yet
    covered = sum(error <= 10 for error in errors)  # the band is P50 ± 10
    mae = f"{sum(errors) / len(errors):,.1f}".removesuffix(".0")
    expected = (
        f"Over the last {len(errors)} days with actuals, this store's forecasts were off by {mae} on average"
        f" (MAE), and the actual fell inside the P10–P90 band {covered} of {len(errors)} times"
        f" ({math.floor(100 * covered / len(errors) + 0.5)}% coverage)."
    )
    with serving(root, token_map_json) as server:
        url = f"{server}/?dataset=retail&entity=2#token=anna-token"
        dom = _browse(chromium, tmp_path, url, "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        assert f"Forecast for {today}</h3>" in html and f"Forecast for {tomorrow}</h3>" in html
        assert f"as of {today} 00:00 GMT+1 · model v1" in html  # today's, made at midnight
        assert f"as of {today} 06:00 GMT+1 · model v1" in html  # tomorrow's, from the morning upload
        track = html.split('id="track-chart"')[1]
        assert track.count('class="actual-dot"') == len(errors)
        assert 'class="band"' in track and 'class="median"' in track and 'class="actual"' in track
        assert expected in html

        shot = tmp_path / "track.png"
        result = _browse(chromium, tmp_path, url, f"--screenshot={shot}", "--window-size=1100,1900")
        assert result.returncode == 0, result.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
