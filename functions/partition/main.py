"""Cloud Function partition: validate a raw upload and Hive-partition its good rows.

Trigger: GCS object finalized in raw/ (an Eventarc storage event, or a GCS notification through
Pub/Sub). Publishes partitions-ready.
"""

from batchcast.entrypoints.function import cloud_event_function

partition = cloud_event_function("partition")
