# The data bucket holds the whole layout of the design brief (raw/, rejected/, batch_data/, future/, models/,
# predictions/, results/, metrics/, runs/, status/, config/): one bucket, because the layout is one
# contract that users, the API and BigQuery external tables read.
resource "google_storage_bucket" "data" {
  name                        = local.bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  # Raw uploads are the system's only copy of users' data: versioning keeps a deleted or
  # overwritten upload recoverable. Generations also back the pipeline's create-only writes.
  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  # Old run records and quarantined input age out; everything else is kept (results, models and
  # partitions are what the next run builds on).
  lifecycle_rule {
    condition {
      age            = var.runs_retention_days
      matches_prefix = ["runs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.rejected_retention_days
      matches_prefix = ["rejected/"]
    }
    action {
      type = "Delete"
    }
  }

  # results/, status/ and LATEST are rewritten on every run: their old versions are noise.
  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
      matches_prefix             = ["rejected/", "batch_data/", "future/", "models/", "predictions/", "results/", "metrics/", "runs/", "status/", "config/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.raw_noncurrent_retention_days
      matches_prefix             = ["raw/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

# Function source archives (dist/functions/<name>.zip), uploaded under their content hash so a
# changed archive redeploys the function and an unchanged one does not.
resource "google_storage_bucket" "sources" {
  name                        = "${local.bucket}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

# Usage logs of the two buckets above (who read or wrote which object, for audits).
resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:this is the access-log bucket itself; logging it into itself would loop
  name                        = "${local.bucket}-access-logs"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true

  versioning {
    enabled = true
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

# Cloud Storage writes usage logs as this group (the documented grantee for log buckets).
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}

resource "google_storage_bucket_object" "function_source" {
  for_each = local.functions
  bucket   = google_storage_bucket.sources.name
  name     = "functions/${each.key}-${filemd5("${local.dist_dir}/${each.key}.zip")}.zip"
  source   = "${local.dist_dir}/${each.key}.zip"
}

# raw/ finalize events go to the raw-objects topic, which partition is subscribed to. A storage
# notification filters by prefix (an Eventarc storage trigger cannot), so partition's own writes
# (batch_data/, future/, rejected/, runs/) can never trigger it again.
data "google_storage_project_service_account" "gcs" {
  project = var.project
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_raw_objects" {
  topic  = google_pubsub_topic.topic["raw-objects"].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "raw_objects" {
  bucket             = google_storage_bucket.data.name
  topic              = google_pubsub_topic.topic["raw-objects"].id
  payload_format     = "JSON_API_V1"
  event_types        = ["OBJECT_FINALIZE"]
  object_name_prefix = "raw/"
  depends_on         = [google_pubsub_topic_iam_member.gcs_publishes_raw_objects]
}
