"""Cloud Functions entry points: the glue each ``functions/<name>/main.py`` is made of.

``cloud_event_function("predict")`` returns a functions-framework CloudEvent handler named
``predict`` that decodes the event and runs the ``predict`` step through the deployment's runtime.
Binary and structured CloudEvents both arrive here as the same ``CloudEvent`` object.
"""

from __future__ import annotations

from collections.abc import Callable

import functions_framework
from cloudevents.http import CloudEvent

from batchcast.entrypoints import runtime


def cloud_event_function(function: str) -> Callable[[CloudEvent], None]:
    """A functions-framework handler, registered under ``function``, that runs that step.

    Bad events are logged and acknowledged; transient and unexpected errors propagate, so the
    platform answers non-2xx and Pub/Sub redelivers.
    """

    def handler(event: CloudEvent) -> None:
        runtime.from_env().handle_event(function, event["type"], event.data, event.get("time"))

    handler.__name__ = handler.__qualname__ = function
    handler.__doc__ = f"Run the {function} step on one CloudEvent."
    return functions_framework.cloud_event(handler)
