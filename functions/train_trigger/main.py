"""Cloud Function train_trigger: retrain a city's model when its data is new or the schedule says so, then
fan out one predict request per (city, shard).

Triggers: partitions-ready, schedule (Pub/Sub). Publishes predict-requests.
"""

from batchcast.entrypoints.function import cloud_event_function

train_trigger = cloud_event_function("train_trigger")
