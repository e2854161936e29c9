# Least privilege, derived from the code: which bucket prefixes each process reads, creates
# (create-only writes, guarded by generation preconditions) or updates (compare-and-swap rewrites of
# results/, metrics/, status/, models/.../LATEST), and which topics it publishes to.
resource "google_service_account" "api" {
  account_id   = "${var.name_prefix}-api"
  display_name = "batchcast results API"
}

resource "google_service_account" "train_job" {
  account_id   = "${var.name_prefix}-train-job"
  display_name = "batchcast training job"
}

locals {
  service_accounts = merge(
    { for name, account in google_service_account.fn : name => account.email },
    { api = google_service_account.api.email, train_job = google_service_account.train_job.email },
  )

  # Every event-driven run writes its run record (runs/), marks the message done (status/processed/,
  # so a redelivery is acked without work) and folds its outcome into status/outcomes/. Trainings
  # record their backtest in metrics/. tests/test_terraform.py runs the pipeline on a recording
  # bucket and checks every object each process touches is granted here.
  bucket_access = {
    ingest        = { read = ["config/"], create = ["raw/"], update = [] }
    partition     = { read = ["raw/"], create = ["rejected/", "batch_data/", "future/", "runs/", "status/runs/", "logs/", "status/processed/"], update = ["manifests/", "status/outcomes/"] }
    train_trigger = { read = ["batch_data/", "manifests/"], create = ["runs/", "status/runs/", "logs/", "status/processed/"], update = ["models/", "metrics/", "status/outcomes/"] }
    predict       = { read = ["batch_data/", "future/", "manifests/", "models/"], create = ["predictions/", "runs/", "status/runs/", "logs/", "status/processed/"], update = ["results/", "metrics/", "status/outcomes/"] }
    notify        = { read = ["manifests/", "models/", "results/", "config/", "metrics/"], create = ["runs/", "logs/"], update = ["status/"] }
    api           = { read = ["results/", "status/", "config/", "models/", "manifests/", "rejected/", "runs/", "logs/", "audit/"], create = ["audit/"], update = [] }
    train_job     = { read = ["batch_data/", "manifests/"], create = ["runs/", "status/runs/", "logs/", "status/processed/"], update = ["models/", "metrics/", "status/outcomes/"] }
  }

  # Topics each process publishes to (what its step returns; nothing else).
  publishes = merge(
    { for name, fn in local.functions : name => fn.publishes },
    # The operators' console redrives a dead letter to the topic it came from: any topic.
    { api = local.topics, train_job = ["predict-requests"] },
  )

  # read: get and list; create: new objects only (a create-only writer also reads, to compare an
  # existing object's bytes); update: also overwrite and delete (needed by compare-and-swap).
  bucket_roles = {
    read   = "roles/storage.objectViewer"
    create = "roles/storage.objectCreator"
    update = "roles/storage.objectUser"
  }
  bucket_grants = flatten([
    for principal, access in local.bucket_access : [
      for level, prefixes in {
        read   = distinct(concat(access.read, access.create))
        create = access.create
        update = access.update
        } : {
        key       = "${principal}-${level}"
        principal = principal
        level     = level
        prefixes  = prefixes
      } if length(prefixes) > 0
    ]
  ])
}

# Object names are checked by resource.name; listings by the list request's prefix, so a process
# can only list below the prefixes it may read.
resource "google_storage_bucket_iam_member" "data" {
  for_each = { for grant in local.bucket_grants : grant.key => grant }
  bucket   = google_storage_bucket.data.name
  role     = local.bucket_roles[each.value.level]
  member   = "serviceAccount:${local.service_accounts[each.value.principal]}"

  condition {
    title       = "${each.value.principal}-${each.value.level}"
    description = "Only below ${join(", ", each.value.prefixes)}"
    expression = join(" || ", concat(
      [for prefix in each.value.prefixes : "resource.name.startsWith(\"projects/_/buckets/${local.bucket}/objects/${prefix}\")"],
      [for prefix in each.value.prefixes : "api.getAttribute(\"storage.googleapis.com/objectListPrefix\", \"\").startsWith(\"${prefix}\")"],
    ))
  }
}

locals {
  publisher_grants = flatten([
    for principal, topics in local.publishes : [
      for topic in topics : { key = "${principal}-${topic}", principal = principal, topic = topic }
    ]
  ])
}

resource "google_pubsub_topic_iam_member" "publisher" {
  for_each = { for grant in local.publisher_grants : grant.key => grant }
  topic    = google_pubsub_topic.topic[each.value.topic].id
  role     = "roles/pubsub.publisher"
  member   = "serviceAccount:${local.service_accounts[each.value.principal]}"
}

# train_trigger hands trainings that outlast a function to the Cloud Run job (with per-run overrides:
# which dataset and city to train).
resource "google_cloud_run_v2_job_iam_member" "train_trigger_runs_job" {
  location = var.region
  name     = google_cloud_run_v2_job.train.name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = "serviceAccount:${google_service_account.fn["train_trigger"].email}"
}
