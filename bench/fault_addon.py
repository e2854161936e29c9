"""mitmproxy addon: inject faults into the requests it forwards (a reverse proxy in front of the emulators).

Loaded by ``mitmdump -s bench/fault_addon.py`` (see ``bench/fault_proxy.py``); it runs inside
mitmproxy's own interpreter, so it imports nothing from batchcast. Per request, one draw decides:

* ``faults_reset`` — the connection is dropped with no answer. Half of these happen before the
  request reaches the server, half after the server acted on it (the answer is lost: a write or a
  compare-and-swap that did happen, as a reset on the way back does to a real client);
* ``faults_unavailable`` — the proxy answers 503 itself, the server never sees the request;
* ``faults_latency`` — the request waits ``faults_latency_seconds`` before it is forwarded.

Each injected fault is one JSON line in ``faults_log``, naming its route (``faults_routes``).
``faults_rewrite`` ("from=to,...") replaces the server's own address by the proxy's in answers
(fake-gcs-server puts its external URL into ``mediaLink`` and resumable-upload ``Location``
headers; without it, reads would bypass the proxy).
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from mitmproxy import ctx, http

RESET, RESET_AFTER = "reset", "reset-after-server"


class Faults:
    """The fault injector; its options are mitmproxy options (``--set faults_reset=0.05``)."""

    def __init__(self) -> None:
        self.rng = random.Random(0)
        self.shares: dict[str, float] = {}
        self.routes: dict[int, str] = {}
        self.rewrites: list[tuple[bytes, bytes]] = []

    def load(self, loader) -> None:
        loader.add_option("faults_reset", str, "0", "share of requests whose connection is dropped")
        loader.add_option("faults_unavailable", str, "0", "share of requests answered 503")
        loader.add_option("faults_latency", str, "0", "share of requests delayed")
        loader.add_option("faults_latency_seconds", str, "1", "how long a delayed request waits")
        loader.add_option("faults_seed", int, 0, "seed of the draws")
        loader.add_option("faults_log", str, "", "JSON-lines file: one line per injected fault")
        loader.add_option("faults_rewrite", str, "", "from=to,...: addresses replaced in answers")
        loader.add_option("faults_routes", str, "", "port=name,...: each listening port's route name")

    def configure(self, updated) -> None:
        # mitmproxy options have no float type: shares and seconds arrive as text.
        self.shares = {
            name: float(getattr(ctx.options, f"faults_{name}"))
            for name in ("reset", "unavailable", "latency", "latency_seconds")
        }
        self.rng = random.Random(ctx.options.faults_seed)
        pairs = [p.split("=", 1) for p in ctx.options.faults_rewrite.split(",") if "=" in p]
        self.rewrites = [(old.encode(), new.encode()) for old, new in pairs]
        routes = [p.split("=", 1) for p in ctx.options.faults_routes.split(",") if "=" in p]
        self.routes = {int(port): name for port, name in routes}

    async def request(self, flow: http.HTTPFlow) -> None:
        draw = self.rng.random()
        reset = self.shares["reset"]
        unavailable = reset + self.shares["unavailable"]
        delayed = unavailable + self.shares["latency"]
        if draw < reset / 2:
            self._record(flow, RESET)
            flow.kill()
        elif draw < reset:
            flow.metadata["reset_after_server"] = True  # acted on in response()
        elif draw < unavailable:
            self._record(flow, "503")
            flow.response = http.Response.make(
                503,
                b'{"error": {"code": 503, "message": "injected by the fault proxy"}}',
                {"Content-Type": "application/json"},
            )
        elif draw < delayed:
            self._record(flow, "latency")
            await asyncio.sleep(self.shares["latency_seconds"])

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get("reset_after_server"):
            self._record(flow, RESET_AFTER)
            flow.kill()
            return
        for old, new in self.rewrites:
            if "location" in flow.response.headers:
                location = flow.response.headers["location"].encode()
                flow.response.headers["location"] = location.replace(old, new).decode()
            if flow.response.raw_content and old in flow.response.content:
                flow.response.content = flow.response.content.replace(old, new)

    def _record(self, flow: http.HTTPFlow, fault: str) -> None:
        if not ctx.options.faults_log:
            return
        line = {
            "at": time.time(),
            "fault": fault,
            "route": self.routes.get(flow.client_conn.sockname[1], "?"),
            "upstream": f"{flow.request.host}:{flow.request.port}",
            "method": flow.request.method,
            "path": flow.request.path.split("?")[0],
        }
        with open(ctx.options.faults_log, "a") as log:
            log.write(json.dumps(line) + "\n")


addons = [Faults()]
