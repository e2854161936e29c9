# The five Cloud Functions (gen2). Sources: dist/functions/<name>.zip from scripts/build_functions.py
# (functions/<name>/main.py + the batchcast package + requirements.txt).
#
# Triggers: ingest is HTTP (stores POST their files with a bearer token). The other four are fed by
# the push subscriptions in pubsub.tf (raw/ finalize notifications for partition, pipeline messages
# for the rest); a non-2xx answer makes Pub/Sub retry with backoff and dead-letter after 5 attempts.
# Without an event_trigger the platform deploys them as HTTP functions; functions-framework still
# serves each one as a CloudEvent function, because main.py registers it with @cloud_event.
resource "google_service_account" "fn" {
  for_each     = local.functions
  account_id   = "${var.name_prefix}-fn-${replace(each.key, "_", "-")}"
  display_name = "batchcast function ${each.key}"
}

# Cloud Build runs the functions' builds (pip install of requirements.txt) as this account.
resource "google_service_account" "builder" {
  account_id   = "${var.name_prefix}-builder"
  display_name = "batchcast function builds"
}

# What a function build touches, each role held only on the resources it needs: logs, the
# gcf-artifacts repository the built images go to, and the gcf-v2-sources-* staging buckets.
locals {
  builder_roles = {
    "roles/logging.logWriter" = null
    "roles/artifactregistry.writer" = {
      title      = "gcf-artifacts only"
      expression = "resource.name.startsWith(\"projects/${var.project}/locations/${var.region}/repositories/gcf-artifacts\")"
    }
    "roles/storage.objectViewer" = {
      title      = "function source staging only"
      expression = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-\")"
    }
  }
}

resource "google_project_iam_member" "builder" {
  for_each = local.builder_roles
  project  = var.project
  role     = each.key
  member   = "serviceAccount:${google_service_account.builder.email}"

  dynamic "condition" {
    for_each = each.value == null ? [] : [each.value]
    content {
      title      = condition.value.title
      expression = condition.value.expression
    }
  }
}

resource "google_storage_bucket_iam_member" "builder_reads_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:only ingest allows all ingress: stores upload from the internet and ingest checks their bearer tokens; the others are ALLOW_INTERNAL_ONLY
  for_each    = local.functions
  name        = local.function_name[each.key]
  location    = var.region
  description = "batchcast ${each.key}"

  build_config {
    runtime         = "python311"
    entry_point     = each.key
    service_account = google_service_account.builder.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.function_source[each.key].name
      }
    }
  }

  service_config {
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout
    min_instance_count               = 0
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    service_account_email            = google_service_account.fn[each.key].email
    # Only ingest is reached from outside; Pub/Sub push counts as internal traffic.
    ingress_settings               = each.key == "ingest" ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    environment_variables          = merge(local.common_env, local.extra_env[each.key])

    dynamic "secret_environment_variables" {
      for_each = { for env, secret in local.secret_env[each.key] : env => secret if local.secret_enabled[secret] }
      content {
        key        = secret_environment_variables.key
        project_id = var.project
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    google_project_iam_member.builder,
    google_storage_bucket_iam_member.builder_reads_sources,
    google_secret_manager_secret_iam_member.reader,
    google_secret_manager_secret_version.secret,
  ]
}

# Stores' integrations call ingest with a bearer token that the function checks against the token
# map (role "uploader"); the platform in front of it lets every caller through to that check.
resource "google_cloud_run_service_iam_member" "ingest_public" {
  #checkov:skip=CKV_GCP_102:stores' integrations are outside the project; ingest authenticates every request by bearer token (role uploader)
  location = var.region
  service  = google_cloudfunctions2_function.fn["ingest"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
