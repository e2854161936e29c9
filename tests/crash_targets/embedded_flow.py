"""Test-only: run a plan of uploads and schedule ticks on an embedded root; resume after a crash.

    python embedded_flow.py ROOT PLAN.json

``PLAN.json`` holds ``dataset``, ``managers`` (written to config/managers.json) and ``actions``, each
``{"at": <ISO time>, "upload": <csv path>, "id": <upload id>}`` or
``{"at": ..., "tick": [<actions>]}``; the clock is pinned to each action's time. ``ROOT/progress.json``
counts the actions finished. A restarted process first redelivers every logged message to every
subscription — what Pub/Sub does with the messages a killed process never acknowledged; finished
ones are acknowledged without work (their processed markers) — then goes on from that action.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from batchcast.core import layout
from batchcast.core.messages import ScheduleTick, Topic
from batchcast.data import uploads
from batchcast.entrypoints import runtime
from batchcast.entrypoints.wiring import ROUTES
from batchcast.ports import FixedClock


def main(root: Path, plan: dict) -> None:
    """Run ``plan`` from where ``root/progress.json`` says, redelivering first after a restart."""
    dataset, managers, plan = plan["dataset"], plan["managers"], plan["actions"]
    progress = root / "progress.json"
    done = json.loads(progress.read_text()) if progress.exists() else 0
    if done == len(plan):
        return
    clock = FixedClock(datetime.fromisoformat(plan[done]["at"]))
    deployment = runtime.embedded(root, clock=clock, backoff_seconds=0.001)
    if deployment.ports.blobs.stat(layout.MANAGERS) is None:
        deployment.ports.blobs.write(layout.MANAGERS, json.dumps(managers).encode())
    if (root / ".batchcast" / "bus" / "log.jsonl").exists():
        for entry in deployment.bus.log():
            for route in ROUTES:
                if route.topic.value == entry["topic"]:
                    deployment.bus.redeliver(route.subscription, entry)
        deployment.bus.drain()
    for index in range(done, len(plan)):
        action = plan[index]
        at = datetime.fromisoformat(action["at"])
        clock.set(at)
        if "upload" in action:
            data = Path(action["upload"]).read_bytes()
            blobs = deployment.ports.blobs
            uploads.store_upload(blobs, data, ext="csv", now=at, dataset=dataset, upload_id=action["id"])
        else:
            tick = ScheduleTick(dataset=dataset, actions=action["tick"], logical_time=at)
            deployment.ports.bus.publish(Topic.SCHEDULE, tick)
        deployment.bus.drain()
        progress.write_text(json.dumps(index + 1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()))
