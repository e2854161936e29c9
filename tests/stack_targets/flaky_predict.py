"""Test-only functions-framework target: the real ``predict``, except that it fails the first
delivery of every Pub/Sub message (a real exception, so the push gets a 500 and Pub/Sub
redelivers). ``BATCHCAST_TEST_FLAKY_DIR`` remembers which message ids already failed once.
"""

import importlib.util
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
    seen = Path(os.environ["BATCHCAST_TEST_FLAKY_DIR"]) / f"predict-{event['id']}"
    if not seen.exists():
        seen.touch()
        raise RuntimeError(f"injected failure: first delivery of message {event['id']}")
    _module.predict(event)
