# Log-based metrics over the runtime's JSON log lines (Cloud Logging lifts them into jsonPayload):
# one line per run, {"metric": "batchcast_run", "status": ..., "duration_seconds": ...} labelled
# function/dataset/city, and one line per freshness check, {"metric": "batchcast_freshness",
# "stale": <stale entities>}. tests/test_terraform.py checks these names against the code.
locals {
  run_line       = "jsonPayload.metric=\"batchcast_run\""
  freshness_line = "jsonPayload.metric=\"batchcast_freshness\""
  label_extractors = {
    function = "EXTRACT(labels.function)"
    dataset  = "EXTRACT(labels.dataset)"
  }
}

resource "google_logging_metric" "failed_runs" {
  name        = "${var.name_prefix}/failed_runs"
  description = "Runs that ended with status failed (the platform redelivers them)."
  filter      = "${local.run_line} AND jsonPayload.status=\"failed\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    unit        = "1"
    labels {
      key = "function"
    }
    labels {
      key = "dataset"
    }
  }
  label_extractors = local.label_extractors
  depends_on       = [google_project_service.api]
}

resource "google_logging_metric" "run_duration" {
  name            = "${var.name_prefix}/run_duration"
  description     = "Wall time of every run, in seconds."
  filter          = local.run_line
  value_extractor = "EXTRACT(jsonPayload.duration_seconds)"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "s"
    labels {
      key = "function"
    }
    labels {
      key = "dataset"
    }
  }
  label_extractors = local.label_extractors

  # A bound at 600 s, the long-run threshold, so the distribution tells long runs apart exactly.
  bucket_options {
    explicit_buckets {
      bounds = [1, 5, 15, 30, 60, 120, 300, 540, 600, 900, 1800, 3600, 7200]
    }
  }
  depends_on = [google_project_service.api]
}

resource "google_logging_metric" "stale_stores" {
  name            = "${var.name_prefix}/stale_stores"
  description     = "Entities whose forecast is stale, as counted by each freshness check."
  filter          = local.freshness_line
  value_extractor = "EXTRACT(jsonPayload.stale)"

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    labels {
      key = "dataset"
    }
  }
  label_extractors = { dataset = "EXTRACT(labels.dataset)" }

  bucket_options {
    explicit_buckets {
      bounds = [0.5, 1.5, 10.5, 100.5, 1000.5]
    }
  }
  depends_on = [google_project_service.api]
}

resource "google_monitoring_alert_policy" "failed_run" {
  display_name          = "batchcast: a run failed"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "failed runs > 0"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed_runs.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function", "metric.label.dataset"]
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    content   = "A batchcast run failed and Pub/Sub will redeliver it (after 5 attempts it is dead-lettered to <topic>-dlq--hold). The run record is under runs/dt=.../<run_id>.json; `batchcast status` summarises."
    mime_type = "text/markdown"
  }
}

# Exact per run, so a log-match condition rather than a percentile of the duration distribution.
resource "google_monitoring_alert_policy" "long_run" {
  display_name          = "batchcast: a run took longer than ${var.run_duration_threshold_seconds} s"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "run duration > ${var.run_duration_threshold_seconds} s"
    condition_matched_log {
      filter = "${local.run_line} AND jsonPayload.duration_seconds > ${var.run_duration_threshold_seconds}"
      label_extractors = {
        function = "EXTRACT(labels.function)"
        run_id   = "EXTRACT(labels.run_id)"
      }
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "300s"
    }
    auto_close = "1800s"
  }

  documentation {
    content   = "A run outlasted the push ack deadline (600 s) and may be redelivered while it runs. Long trainings belong in the Cloud Run job (training.mode = \"job\" in the profile)."
    mime_type = "text/markdown"
  }
}

resource "google_monitoring_alert_policy" "stale_stores" {
  display_name          = "batchcast: stale forecasts"
  combiner              = "OR"
  notification_channels = var.notification_channels

  conditions {
    display_name = "stale stores > 0"
    condition_matched_log {
      filter = "${local.freshness_line} AND jsonPayload.stale > 0"
      label_extractors = {
        dataset = "EXTRACT(labels.dataset)"
      }
    }
  }

  alert_strategy {
    notification_rate_limit {
      period = "3600s"
    }
    auto_close = "86400s"
  }

  documentation {
    content   = "At least one entity's forecast is stale: status/freshness.json says which, since when and why."
    mime_type = "text/markdown"
  }
}
