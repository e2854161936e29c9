variable "project" {
  description = "The GCP project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the bucket, functions, Cloud Run, Artifact Registry and Cloud Scheduler."
  type        = string
  default     = "europe-west1"
}

variable "name_prefix" {
  description = "Prefix of every resource name, so two deployments can share a project."
  type        = string
  default     = "batchcast"
}

variable "bucket_name" {
  description = "Name of the data bucket (the bucket layout of the design brief). Default: <project>-<name_prefix>."
  type        = string
  default     = null
}

variable "kms_key_name" {
  description = "Optional CMEK (projects/.../cryptoKeys/...) for the buckets, topics, secrets and images; null: Google-managed keys."
  type        = string
  default     = null
}

variable "profiles" {
  description = "Profiles this deployment serves (BATCHCAST_PROFILES)."
  type        = list(string)
  default     = ["retail", "bikeshare"]
}

# One Cloud Scheduler job per entry. The defaults mirror shared/batchcast/core/profiles/*.toml
# (tests/test_terraform.py fails when they drift apart); add entries for your own profiles.
variable "schedules" {
  description = "Scheduler ticks: dataset, cron (in time_zone), the actions the tick asks for."
  type = list(object({
    dataset   = string
    cron      = string
    time_zone = string
    actions   = list(string)
  }))
  default = [
    { dataset = "retail", cron = "0 0 * * *", time_zone = "Europe/Berlin", actions = ["train", "predict"] },
    { dataset = "retail", cron = "30 0 * * *", time_zone = "Europe/Berlin", actions = ["notify"] },
    { dataset = "bikeshare", cron = "0 4,10,16 * * *", time_zone = "America/Vancouver", actions = ["train"] },
    { dataset = "bikeshare", cron = "0 6,12,18 * * *", time_zone = "America/Vancouver", actions = ["predict"] },
    { dataset = "bikeshare", cron = "30 6,12,18 * * *", time_zone = "America/Vancouver", actions = ["notify"] },
  ]
}

variable "functions_dist_dir" {
  description = "Where scripts/build_functions.py wrote the function archives (<name>.zip)."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Tag of the API image in Artifact Registry (the CD pipeline passes the commit SHA)."
  type        = string
  default     = "latest"
}

variable "api_image" {
  description = "Full image reference for the API and the training job; null: <region>-docker.pkg.dev/<project>/<prefix>/api:<image_tag>."
  type        = string
  default     = null
}

variable "predict_max_instances" {
  description = "Upper bound of the predict fan-out (one instance handles one shard at a time)."
  type        = number
  default     = 20
}

variable "train_job_timeout" {
  description = "Longest a training job may run (the job exists because trainings outlast 540 s)."
  type        = string
  default     = "7200s"
}

variable "message_retention" {
  description = "How long subscriptions keep messages, acknowledged ones included, for replay by seek."
  type        = string
  default     = "604800s"
}

variable "runs_retention_days" {
  description = "Days run records (runs/) are kept."
  type        = number
  default     = 90
}

variable "rejected_retention_days" {
  description = "Days quarantined input (rejected/) is kept."
  type        = number
  default     = 180
}

variable "noncurrent_retention_days" {
  description = "Days overwritten or deleted object versions are kept outside raw/."
  type        = number
  default     = 7
}

variable "raw_noncurrent_retention_days" {
  description = "Days a deleted or overwritten raw upload stays recoverable (raw/ is never changed by the pipeline)."
  type        = number
  default     = 365
}

variable "max_event_age_seconds" {
  description = "Events published longer ago are acknowledged without work (BATCHCAST_MAX_EVENT_AGE_SECONDS)."
  type        = number
  default     = 86400
}

variable "max_upload_bytes" {
  description = "Partition rejects a larger upload whole, asking for it to be split (BATCHCAST_MAX_UPLOAD_BYTES)."
  type        = number
  default     = 1073741824
}

variable "public_url" {
  description = "Base URL of the managers' page, for links in emails (BATCHCAST_PUBLIC_URL); null: the API's Cloud Run URL."
  type        = string
  default     = null
}

variable "smtp" {
  description = "SMTP server for alert emails; host null: no email is sent (the status file still says who is stale)."
  type = object({
    host     = optional(string)
    port     = optional(number, 587)
    starttls = optional(bool, true)
    username = optional(string, "")
    sender   = optional(string, "batchcast@example.com")
  })
  default = {}
}

# Not marked sensitive so that "is it set?" can decide which secret versions exist; the value only
# flows into google_secret_manager_secret_version.secret_data, which the provider keeps out of plans.
variable "smtp_password" {
  description = "SMTP password, stored as a Secret Manager version (null: none; add one with gcloud instead)."
  type        = string
  default     = null
}

variable "api_tokens_json" {
  description = "The token map JSON (digests only) as a Secret Manager version; null: the map is read from config/api_tokens.json."
  type        = string
  default     = null
}

variable "alert_grace_minutes" {
  description = "Minutes a store may be stale after its forecast fell due before it is alerted (BATCHCAST_ALERT_GRACE_MINUTES)."
  type        = number
  default     = 20
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel ids (projects/.../notificationChannels/...) for the alert policies."
  type        = list(string)
  default     = []
}

variable "run_duration_threshold_seconds" {
  description = "A run longer than this raises the long-run alert."
  type        = number
  default     = 600
}

variable "console_iap_members" {
  description = "Who may reach the operators' console through IAP (e.g. [\"group:ops@example.com\"]); empty: no console service (operators use /console on the API)."
  type        = list(string)
  default     = []
}
