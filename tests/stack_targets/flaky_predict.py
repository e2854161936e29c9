"""Test-only functions-framework target: the real ``predict``, except that it fails the first
delivery of every Pub/Sub message (a real exception, so the push gets a 500 and Pub/Sub
redelivers). ``BATCHCAST_TEST_FLAKY_DIR`` remembers which message ids already failed once.
A request for an entity named ``outage-...`` fails on every delivery: an outage that never ends.
"""

import base64
import importlib.util
import json
import os
from pathlib import Path

import functions_framework
from cloudevents.http import CloudEvent

_REAL = Path(__file__).resolve().parents[2] / "functions" / "predict" / "main.py"
_spec = importlib.util.spec_from_file_location("real_predict_main", _REAL)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)


@functions_framework.cloud_event
def predict(event: CloudEvent) -> None:
    """Fail once per message id, then run the real predict entry point."""
    body = json.loads(base64.b64decode(event.data["message"]["data"]))
    if any(entity.startswith("outage-") for entity in body.get("entities", [])):
        raise RuntimeError("injected failure: an outage that outlasts every retry")
    seen = Path(os.environ["BATCHCAST_TEST_FLAKY_DIR"]) / f"predict-{event['id']}"
    if not seen.exists():
        seen.touch()
        raise RuntimeError(f"injected failure: first delivery of message {event['id']}")
    _module.predict(event)
