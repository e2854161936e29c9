"""Cloud Function predict: forecast one shard of one city; write predictions, results and metrics.

Trigger: predict-requests (Pub/Sub). Publishes predictions-ready.
"""

from batchcast.entrypoints.function import cloud_event_function

predict = cloud_event_function("predict")
