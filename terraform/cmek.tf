# With a customer-managed key (var.kms_key_name), the service agents that encrypt on batchcast's
# behalf must be allowed to use it before the bucket, topics, images and secrets are created. Some
# agents only exist after first use: service identities create them up front.
resource "google_project_service_identity" "agent" {
  provider   = google-beta
  for_each   = var.kms_key_name == null ? toset([]) : toset(["artifactregistry.googleapis.com", "secretmanager.googleapis.com"])
  project    = var.project
  service    = each.key
  depends_on = [google_project_service.api]
}

locals {
  cmek_agents = var.kms_key_name == null ? {} : {
    storage          = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    pubsub           = local.pubsub_agent
    artifactregistry = "serviceAccount:${google_project_service_identity.agent["artifactregistry.googleapis.com"].email}"
    secretmanager    = "serviceAccount:${google_project_service_identity.agent["secretmanager.googleapis.com"].email}"
  }
}

resource "google_kms_crypto_key_iam_member" "cmek" {
  for_each      = local.cmek_agents
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value
}
