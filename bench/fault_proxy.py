"""Start and stop a fault-injecting reverse proxy (mitmproxy's ``mitmdump`` with bench/fault_addon.py).

mitmproxy is a well-kept PyPI package; it pins its own dependencies, so it lives in a venv of its
own (``make .venv-mitmproxy/.installed``, as checkov does). One ``mitmdump`` process serves every
route: ``--mode reverse:<upstream>@<port>`` per route, the same fault mix on each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDON = Path(__file__).with_name("fault_addon.py")
MITMDUMP = REPO / ".venv-mitmproxy" / "bin" / "mitmdump"
HOST = "127.0.0.1"


@dataclass(frozen=True)
class FaultMix:
    """Shares of requests that get each fault (0.05 = 5 %), and the latency spike's length."""

    reset: float = 0.0
    unavailable: float = 0.0
    latency: float = 0.0
    latency_seconds: float = 1.0
    seed: int = 0


@dataclass
class FaultProxy:
    """A running ``mitmdump``: its process, the port of each route and the fault log."""

    process: subprocess.Popen
    ports: dict[str, int]
    log: Path

    def url(self, route: str) -> str:
        """``http://127.0.0.1:<port>`` of one route."""
        return f"http://{HOST}:{self.ports[route]}"

    def injected(self, route: str | None = None) -> Counter:
        """How many faults of each kind were injected so far (on one route, or on all)."""
        if not self.log.is_file():
            return Counter()
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line]
        return Counter(line["fault"] for line in lines if route is None or line["route"] == route)

    def stop(self) -> None:
        """Stop mitmdump (its own process group)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def mitmdump() -> str:
    """The mitmdump executable: the repo's .venv-mitmproxy first, then PATH; say how to get it."""
    found = str(MITMDUMP) if MITMDUMP.is_file() else shutil.which("mitmdump")
    if not found:
        raise SystemExit("the fault proxy needs mitmproxy: make .venv-mitmproxy/.installed")
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start(
    upstreams: dict[str, str],
    directory: Path,
    mix: FaultMix,
    *,
    rewrite: dict[str, str] | None = None,
    timeout: float = 60,
) -> FaultProxy:
    """Proxy each named upstream URL on a free port of its own, injecting ``mix``; wait until it listens.

    ``rewrite`` maps upstream URLs to route names whose proxy URL replaces them in answers.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ports = {name: free_port() for name in upstreams}
    log = directory / "faults.jsonl"
    log.unlink(missing_ok=True)
    replaced = ",".join(f"{old}=http://{HOST}:{ports[name]}" for old, name in (rewrite or {}).items())
    command = [mitmdump(), "--quiet", "--listen-host", HOST, "-s", str(ADDON)]
    routes = ",".join(f"{port}={name}" for name, port in ports.items())
    for name, upstream in upstreams.items():
        command += ["--mode", f"reverse:{upstream}@{ports[name]}"]
    settings = {
        "faults_reset": mix.reset,
        "faults_unavailable": mix.unavailable,
        "faults_latency": mix.latency,
        "faults_latency_seconds": mix.latency_seconds,
        "faults_seed": mix.seed,
        "faults_log": log,
        "faults_rewrite": replaced,
        "faults_routes": routes,
        # Bodies pass through whole; a connection to an emulator is kept open between requests.
        "connection_strategy": "lazy",
    }
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    out = (directory / "mitmdump.log").open("ab")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proxy = FaultProxy(process, ports, log)
    started = time.monotonic()
    deadline = started + timeout
    while not all(_listening(port) for port in ports.values()) or time.monotonic() < started + 1:
        # Listening is not enough: mitmdump exits after it when the addon fails to load.
        if process.poll() is not None or time.monotonic() > deadline:
            proxy.stop()
            tail = (directory / "mitmdump.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"mitmdump did not listen on {sorted(ports.values())}; log:\n{tail}")
        time.sleep(0.2)
    return proxy


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0
