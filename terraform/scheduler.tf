# One Cloud Scheduler job per schedule entry of each profile, in the profile's time zone. Each
# publishes a ScheduleTick body (batchcast.core.messages) to the schedule topic; the tick's logical time
# is the message's publish time, to the minute (a Scheduler body is fixed, so it cannot carry it).
locals {
  schedule_jobs = {
    for entry in var.schedules :
    "${entry.dataset}-${join("-", entry.actions)}" => entry
  }
}

resource "google_cloud_scheduler_job" "tick" {
  for_each    = local.schedule_jobs
  name        = "${var.name_prefix}-${each.key}"
  description = "${each.value.dataset}: ${join(", ", each.value.actions)} at ${each.value.cron} (${each.value.time_zone})"
  region      = var.region
  schedule    = each.value.cron
  time_zone   = each.value.time_zone

  retry_config {
    retry_count = 3
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["schedule"].id
    data = base64encode(jsonencode({
      schema_version = 1
      kind           = "schedule"
      dataset        = each.value.dataset
      actions        = each.value.actions
    }))
    attributes = {
      kind    = "schedule"
      dataset = each.value.dataset
    }
  }

  depends_on = [google_pubsub_topic_iam_member.scheduler_publishes]
}

resource "google_pubsub_topic_iam_member" "scheduler_publishes" {
  topic  = google_pubsub_topic.topic["schedule"].id
  role   = "roles/pubsub.publisher"
  member = local.scheduler_sa
}
