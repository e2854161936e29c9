"""Cloud Function notify: refresh status/freshness.json and tell people about stale forecasts.

Triggers: predictions-ready, schedule (Pub/Sub).
"""

from batchcast.entrypoints.function import cloud_event_function

notify = cloud_event_function("notify")
