# Secrets never live in the repository (nor in terraform.tfvars under version control: pass them
# as TF_VAR_smtp_password / TF_VAR_api_tokens_json). Terraform creates the secrets; a version is added from the
# sensitive variables when they are set (or by `gcloud secrets versions add` when they are not, in
# which case the environment variable is not injected until you set the variable).
locals {
  secret_values = {
    smtp_password = var.smtp_password
    api_tokens    = var.api_tokens_json
  }
  secret_enabled = { for name, value in local.secret_values : name => value != null }
}

resource "google_secret_manager_secret" "secret" {
  for_each  = toset(keys(local.secret_values))
  secret_id = "${var.name_prefix}-${replace(each.key, "_", "-")}"

  replication {
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

resource "google_secret_manager_secret_version" "secret" {
  for_each    = { for name, enabled in local.secret_enabled : name => name if enabled }
  secret      = google_secret_manager_secret.secret[each.key].id
  secret_data = local.secret_values[each.key]
}

# Only the processes that read a secret may access it.
locals {
  secret_readers = flatten([
    for principal, secrets in local.secret_env : [
      for env, secret in secrets : { key = "${principal}-${secret}", principal = principal, secret = secret }
    ]
  ])
}

resource "google_secret_manager_secret_iam_member" "reader" {
  for_each  = { for grant in local.secret_readers : grant.key => grant }
  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${local.service_accounts[each.value.principal]}"
}
