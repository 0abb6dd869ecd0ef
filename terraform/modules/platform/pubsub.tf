resource "google_pubsub_topic" "topics" {
  # checkov:skip=CKV_GCP_83:Google-managed encryption for now; CMEK needs a KMS key and the Pub/Sub agent's grant (follow-up)
  for_each                   = local.resources.pubsub.topics
  project                    = var.project_id
  name                       = each.key
  labels                     = local.labels
  message_retention_duration = "604800s" # a week: a bad deploy can be replayed with seek
}

# What a dead-letter topic receives is held for an operator (replay-dead-letters), never dropped.
resource "google_pubsub_subscription" "holds" {
  for_each                   = local.hold_subscriptions
  project                    = var.project_id
  name                       = each.key
  topic                      = google_pubsub_topic.topics[each.value].id
  labels                     = local.labels
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = "" # never expires
  }
}

# The identity Pub/Sub pushes with (an OIDC token the functions' Cloud Run services check).
resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "pubsub-push"
  display_name = "Pub/Sub push to jupiter-data functions"
}

data "google_project" "project" {
  project_id = var.project_id
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.project.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

# Each Pub/Sub-triggered function gets the push subscription the local stack creates too: ack deadline
# as long as the function's timeout, exponential retry, and a dead-letter topic after N attempts.
resource "google_pubsub_subscription" "triggers" {
  for_each             = local.pubsub_triggered
  project              = var.project_id
  name                 = "${each.value.trigger}-${replace(each.key, "_", "-")}"
  topic                = google_pubsub_topic.topics[each.value.trigger].id
  labels               = local.labels
  ack_deadline_seconds = local.retry.ack_deadline_seconds

  push_config {
    push_endpoint = module.functions[each.key].uri
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = module.functions[each.key].uri
    }
  }

  retry_policy {
    minimum_backoff = "${local.retry.minimum_backoff_seconds}s"
    maximum_backoff = "${local.retry.maximum_backoff_seconds}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.topics[local.resources.pubsub.topics[each.value.trigger].dead_letter_topic].id
    max_delivery_attempts = local.retry.max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub forwards dead letters itself: it must publish to the dead-letter topic and ack the source.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = local.pubsub_triggered
  project  = var.project_id
  topic    = google_pubsub_topic.topics[local.resources.pubsub.topics[each.value.trigger].dead_letter_topic].name
  role     = "roles/pubsub.publisher"
  member   = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  for_each     = local.pubsub_triggered
  project      = var.project_id
  subscription = google_pubsub_subscription.triggers[each.key].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# The manifests' "topic_access": function => role on a topic of resources.json.
resource "google_pubsub_topic_iam_member" "functions" {
  for_each = local.grants.topic
  project  = var.project_id
  topic    = google_pubsub_topic.topics[each.value.target].name
  role     = each.value.role
  member   = "serviceAccount:${module.functions[each.value.function].service_account_email}"
}
