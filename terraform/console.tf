# The operators' console behind Identity-Aware Proxy (optional): the same image and app as the
# results API, deployed a second time as <prefix>-console (google_cloud_run_v2_service.app["console"]
# in run.tf) with Cloud Run's built-in IAP, so only the members of var.console_iap_members reach it
# (no load balancer). The app still asks for an operator's bearer token behind IAP; managers keep
# using the public <prefix>-api service.
locals {
  console_enabled = length(var.console_iap_members) > 0
  iap_agent       = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-iap.iam.gserviceaccount.com"
}

# IAP calls the service as its service agent; people pass IAP only when listed.
resource "google_cloud_run_v2_service_iam_member" "console_iap_invokes" {
  count    = local.console_enabled ? 1 : 0
  location = var.region
  name     = google_cloud_run_v2_service.app["console"].name
  role     = "roles/run.invoker"
  member   = local.iap_agent
}

resource "google_iap_web_cloud_run_service_iam_member" "console_operators" {
  for_each               = toset(var.console_iap_members)
  provider               = google-beta
  location               = var.region
  cloud_run_service_name = google_cloud_run_v2_service.app["console"].name
  role                   = "roles/iap.httpsResourceAccessor"
  member                 = each.value
}
