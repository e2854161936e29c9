locals {
  bucket        = coalesce(var.bucket_name, "${var.project}-${var.name_prefix}")
  dist_dir      = coalesce(var.functions_dist_dir, "${path.module}/../dist/functions")
  api_image     = coalesce(var.api_image, "${var.region}-docker.pkg.dev/${var.project}/${google_artifact_registry_repository.images.repository_id}/api:${var.image_tag}")
  train_job     = "${var.name_prefix}-train"
  pubsub_agent  = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  scheduler_sa  = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-cloudscheduler.iam.gserviceaccount.com"
  function_name = { for name, _ in local.functions : name => "${var.name_prefix}-${replace(name, "_", "-")}" }

  # Every topic of batchcast.core.messages.Topic; each has a dead-letter twin "<topic>-dlq".
  topics = ["raw-objects", "partitions-ready", "schedule", "predict-requests", "predictions-ready"]

  # batchcast.entrypoints.wiring.ROUTES: subscription id ("<function>--<topic>", underscores as dashes) -> route.
  routes = {
    "partition--raw-objects"          = { topic = "raw-objects", function = "partition" }
    "train-trigger--partitions-ready" = { topic = "partitions-ready", function = "train_trigger" }
    "train-trigger--schedule"         = { topic = "schedule", function = "train_trigger" }
    "predict--predict-requests"       = { topic = "predict-requests", function = "predict" }
    "notify--predictions-ready"       = { topic = "predictions-ready", function = "notify" }
    "notify--schedule"                = { topic = "schedule", function = "notify" }
  }

  # The five Cloud Functions (functions/<name>/main.py defines <name>). Event-driven functions stop
  # at 540 s; a push delivery waits at most the ack deadline (600 s), so every timeout stays below.
  # predict handles one shard per instance (CPU-bound), and max_instances bounds the fan-out.
  functions = {
    ingest        = { memory = "1Gi", cpu = "1", timeout = 120, max_instances = 10, concurrency = 4, publishes = [] }
    partition     = { memory = "2Gi", cpu = "1", timeout = 540, max_instances = 10, concurrency = 1, publishes = ["partitions-ready"] }
    train_trigger = { memory = "4Gi", cpu = "2", timeout = 540, max_instances = 4, concurrency = 1, publishes = ["predict-requests", "schedule"] }
    predict       = { memory = "2Gi", cpu = "1", timeout = 540, max_instances = var.predict_max_instances, concurrency = 1, publishes = ["predictions-ready"] }
    notify        = { memory = "1Gi", cpu = "1", timeout = 300, max_instances = 1, concurrency = 1, publishes = [] }
  }

  # BATCHCAST_* settings every process on GCP reads (batchcast.core.settings.Settings).
  common_env = {
    BATCHCAST_BACKEND               = "gcp"
    BATCHCAST_BUCKET                = google_storage_bucket.data.name
    BATCHCAST_PROJECT               = var.project
    BATCHCAST_REGION                = var.region
    BATCHCAST_PROFILES              = join(",", var.profiles)
    BATCHCAST_MAX_EVENT_AGE_SECONDS = tostring(var.max_event_age_seconds)
  }

  # What each process adds to common_env.
  extra_env = {
    ingest        = {}
    partition     = { BATCHCAST_MAX_UPLOAD_BYTES = tostring(var.max_upload_bytes) }
    train_trigger = { BATCHCAST_TRAIN_JOB = local.train_job }
    predict       = {}
    notify = {
      BATCHCAST_SMTP_HOST           = coalesce(var.smtp.host, "")
      BATCHCAST_SMTP_PORT           = tostring(var.smtp.port)
      BATCHCAST_SMTP_STARTTLS       = tostring(var.smtp.starttls)
      BATCHCAST_SMTP_USERNAME       = var.smtp.username
      BATCHCAST_SMTP_SENDER         = var.smtp.sender
      BATCHCAST_PUBLIC_URL          = coalesce(var.public_url, google_cloud_run_v2_service.app["api"].uri)
      BATCHCAST_ALERT_GRACE_MINUTES = tostring(var.alert_grace_minutes)
    }
    train_job = {}
  }

  # Secrets injected as environment variables: variable -> Secret Manager secret key.
  secret_env = {
    ingest        = { BATCHCAST_API_TOKENS = "api_tokens" }
    partition     = {}
    train_trigger = {}
    predict       = {}
    notify        = { BATCHCAST_SMTP_PASSWORD = "smtp_password" }
    api           = { BATCHCAST_API_TOKENS = "api_tokens" }
    train_job     = {}
  }

  # Settings that are deliberately not set on GCP, and why (the consistency test requires every
  # setting the code reads to be either set above or listed here).
  settings_not_deployed = {
    BATCHCAST_ROOT         = "embedded backend only: the directory that plays the bucket"
    BATCHCAST_MAX_ATTEMPTS = "embedded bus only: on GCP the dead-letter policies below count deliveries"
    BATCHCAST_NOW          = "pins the clock for tests and reruns; production runs on the real clock"
    BATCHCAST_PROFILE_DIR  = "own profiles ship inside the function archives (shared/batchcast/core/profiles)"
    # The default keeps partition's peak memory well inside its 2Gi (bench/partition_memory.py).
    BATCHCAST_PARTITION_CHUNK_BYTES = "a tuning knob for tests and benchmarks; the default suits partition's memory"
    BATCHCAST_CLOCK_FILE            = "the emulator stack's scenario clock; production runs on the real clock"
    BATCHCAST_CRASH_AT              = "crash tests only: the point where a process kills itself"
    BATCHCAST_CRASH_DIR             = "crash tests only: where fired crash points are remembered"
  }
}
