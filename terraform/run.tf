# The results API (batchcast_api.app:app, image built from api/Dockerfile) and the training job,
# which reuses the API image with the command `python -m batchcast.entrypoints.job train`.
resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.name_prefix
  format        = "DOCKER"
  description   = "batchcast images (the API image also runs the training job)"
  kms_key_name  = var.kms_key_name
  depends_on    = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

# The results API and, when var.console_iap_members lists anyone, the operators' console: one app
# and image with two faces. The console is the same service deployed a second time as
# <prefix>-console behind Cloud Run's built-in IAP (see console.tf).
locals {
  app_faces = merge(
    { api = { name = "${var.name_prefix}-api", iap = false, launch_stage = "GA", concurrency = 40, max_instances = 5 } },
    local.console_enabled ? {
      console = { name = "${var.name_prefix}-console", iap = true, launch_stage = "BETA", concurrency = 20, max_instances = 2 }
    } : {},
  )
}

resource "google_cloud_run_v2_service" "app" {
  for_each            = local.app_faces
  provider            = google-beta # iap_enabled is a beta field
  name                = each.value.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  launch_stage        = each.value.launch_stage
  iap_enabled         = each.value.iap
  deletion_protection = false

  template {
    service_account                  = google_service_account.api.email
    timeout                          = "60s"
    max_instance_request_concurrency = each.value.concurrency

    scaling {
      min_instance_count = 0
      max_instance_count = each.value.max_instances
    }

    containers {
      image = local.api_image

      resources {
        limits = {
          cpu    = "1"
          memory = "1Gi"
        }
      }

      # common_env only: local.extra_env names this service's URL (notify's links), and reading it
      # here would make the service depend on itself (a cycle at plan time).
      dynamic "env" {
        for_each = local.common_env
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

# Deployments made before the two faces were one resource keep their services.
moved {
  from = google_cloud_run_v2_service.api
  to   = google_cloud_run_v2_service.app["api"]
}

moved {
  from = google_cloud_run_v2_service.console[0]
  to   = google_cloud_run_v2_service.app["console"]
}

# Store managers are outside the project: the platform lets every caller through to the API's own
# bearer-token check (token map from Secret Manager or config/api_tokens.json).
resource "google_cloud_run_v2_service_iam_member" "api_public" {
  location = var.region
  name     = google_cloud_run_v2_service.app["api"].name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Trainings that cannot finish inside a function's 540 s run here; train_trigger starts an execution
# (BATCHCAST_TRAIN_JOB names this job) with the dataset and city as argument overrides.
resource "google_cloud_run_v2_job" "train" {
  name                = local.train_job
  location            = var.region
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.train_job.email
      timeout         = var.train_job_timeout
      max_retries     = 1

      containers {
        image = local.api_image
        # The lean job module, not the `batchcast` CLI (Typer, rich, dev tools): the same code.
        command = ["python", "-m", "batchcast.entrypoints.job"]
        args    = ["train"]

        resources {
          limits = {
            cpu    = "4"
            memory = "16Gi"
          }
        }

        dynamic "env" {
          for_each = merge(local.common_env, local.extra_env.train_job)
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  depends_on = [google_project_service.api]
}
