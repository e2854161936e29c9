"""The managers' page in headless Chromium, served by ``batchcast serve`` over the stale bucket.

Chromium comes from Debian (``apt-get install -y chromium``; ``.ci/run`` installs it). Without it
the tests skip on a developer's machine and fail under CI=true.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .browser import FLAGS, chromium_path


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
