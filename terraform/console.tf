# The operators' console behind Identity-Aware Proxy (optional): the same image and app as the
# results API, deployed a second time as <prefix>-console with Cloud Run's built-in IAP, so only the
# members of var.console_iap_members reach it (no load balancer). The app still asks for an
# operator's bearer token behind IAP; managers keep using the public <prefix>-api service.
locals {
  console_enabled = length(var.console_iap_members) > 0
  iap_agent       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-iap.iam.gserviceaccount.com"
}

resource "google_cloud_run_v2_service" "console" {
  count               = local.console_enabled ? 1 : 0
  provider            = google-beta
  name                = "${var.name_prefix}-console"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  launch_stage        = "BETA"
  iap_enabled         = true
  deletion_protection = false

  template {
    service_account                  = google_service_account.api.email
    timeout                          = "60s"
    max_instance_request_concurrency = 20

    scaling {
      min_instance_count = 0
      max_instance_count = 2
    }

    containers {
      image = local.api_image

      dynamic "env" {
        for_each = merge(local.common_env, local.extra_env.api)
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = { for name, secret in local.secret_env.api : name => secret if local.secret_enabled[secret] }
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.secret[env.value].secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.reader, google_secret_manager_secret_version.secret]
}

# IAP calls the service as its service agent; people pass IAP only when listed.
resource "google_cloud_run_v2_service_iam_member" "console_iap_invokes" {
  count    = local.console_enabled ? 1 : 0
  location = var.region
  name     = google_cloud_run_v2_service.console[0].name
  role     = "roles/run.invoker"
  member   = local.iap_agent
}

resource "google_iap_web_cloud_run_service_iam_member" "console_operators" {
  for_each               = toset(var.console_iap_members)
  provider               = google-beta
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.console[0].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.value
}
