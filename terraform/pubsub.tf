# Topics of batchcast.core.messages.Topic, each with its dead-letter topic "<topic>-dlq".
resource "google_pubsub_topic" "topic" {
  for_each     = toset(local.topics)
  name         = each.key
  kms_key_name = var.kms_key_name
  depends_on   = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

resource "google_pubsub_topic" "dead_letter" {
  for_each     = toset(local.topics)
  name         = "${each.key}-dlq"
  kms_key_name = var.kms_key_name
  depends_on   = [google_project_service.api, google_kms_crypto_key_iam_member.cmek]
}

# A topic without a subscription drops what is published to it: each dead-letter topic keeps its
# messages in a pull subscription, where an operator inspects them and republishes after a fix.
# Named as batchcast.core.messages.Topic.dead_letter_subscription: `batchcast status` reads it.
resource "google_pubsub_subscription" "dead_letter" {
  for_each                   = toset(local.topics)
  name                       = "${each.key}-dlq--hold"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  message_retention_duration = var.message_retention
  retain_acked_messages      = true
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

# The operators' console lists dead letters (pull without ack), and acks what it redrives or discards.
resource "google_pubsub_subscription_iam_member" "api_dead_letters" {
  for_each     = google_pubsub_subscription.dead_letter
  subscription = each.value.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.api.email}"
}

# One push subscription per route of batchcast.entrypoints.wiring.ROUTES, named as wiring.Route.subscription.
# Terraform owns them (rather than Eventarc-managed ones) because only then can they carry the
# dead-letter policy, retry backoff and retention for replay below. Pub/Sub pushes the same
# envelope Eventarc would deliver; functions-framework turns it into a
# google.cloud.pubsub.topic.v1.messagePublished CloudEvent (the topic comes from the URL path).
resource "google_pubsub_subscription" "route" {
  for_each = local.routes
  name     = each.key
  topic    = google_pubsub_topic.topic[each.value.topic].id

  # A push request must finish within the ack deadline; every function times out before 600 s.
  ack_deadline_seconds = 600

  # Kept, acknowledged messages included, so `gcloud pubsub subscriptions seek` replays a day.
  retain_acked_messages      = true
  message_retention_duration = var.message_retention

  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.value.topic].id
    max_delivery_attempts = 5
  }

  # service_config.uri is the run.app URL: the one internal ingress admits Pub/Sub pushes on.
  push_config {
    push_endpoint = "${google_cloudfunctions2_function.fn[each.value.function].service_config[0].uri}/projects/${var.project}/topics/${each.value.topic}"
    oidc_token {
      service_account_email = google_service_account.pusher.email
      audience              = google_cloudfunctions2_function.fn[each.value.function].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_service_iam_member.pusher_invokes]
}

# The Pub/Sub service agent moves undeliverable messages: it publishes to the dead-letter topics
# and must be a subscriber of the source subscriptions to acknowledge them there.
resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  for_each = toset(local.topics)
  topic    = google_pubsub_topic.dead_letter[each.key].id
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_subscribes" {
  for_each     = local.routes
  subscription = google_pubsub_subscription.route[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The identity in the push requests' OIDC tokens: it may invoke the event-driven functions, nothing else.
resource "google_service_account" "pusher" {
  account_id   = "${var.name_prefix}-pusher"
  display_name = "batchcast Pub/Sub push identity"
}

# The Pub/Sub service agent mints the push requests' OIDC tokens for the pusher.
resource "google_service_account_iam_member" "agent_mints_pusher_tokens" {
  service_account_id = google_service_account.pusher.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

resource "google_cloud_run_service_iam_member" "pusher_invokes" {
  for_each = toset(distinct([for route in values(local.routes) : route.function]))
  location = var.region
  service  = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pusher.email}"
}
