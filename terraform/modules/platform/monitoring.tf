# Log-based metrics from the functions' structured logs, and alerts on them (runbooks:
# docs/operations.md).
resource "google_logging_metric" "function_errors" {
  project = var.project_id
  name    = "jupiter-function-errors"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^(sns-to-pubsub|pubsub-to-bigquery|sync-amplitude|fetch-from-bigquery)$\" AND severity>=ERROR"
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key        = "function"
      value_type = "STRING"
    }
  }
  label_extractors = {
    function = "EXTRACT(resource.labels.service_name)"
  }
}

resource "google_logging_metric" "failed_syncs" {
  project = var.project_id
  name    = "jupiter-amplitude-sync-failed"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"sync-amplitude\" AND jsonPayload.message=\"Amplitude sync failed\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

# Messages the loader could never load: each is a row in ops.all_user_events_dead_letter and one log
# line "dead-lettered message: <reason>" with the error_type field (services/loader.py; a test matches
# this filter against the line the code writes). Matched on the message, not the severity.
resource "google_logging_metric" "dead_lettered_messages" {
  project = var.project_id
  name    = "jupiter-loader-dead-lettered"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"pubsub-to-bigquery\" AND jsonPayload.message=~\"^dead-lettered message: \""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    labels {
      key         = "error_type"
      value_type  = "STRING"
      description = "Why the message can never load (invalid_json, schema_violation, too_old, ...)"
    }
  }
  label_extractors = {
    error_type = "EXTRACT(jsonPayload.error_type)"
  }
}

# The data API logs this line when it cannot re-read its key file and keeps the last good list
# (services/data_api.py; a test matches it): revocations are not applied until the secret is fixed.
resource "google_logging_metric" "stale_api_keys" {
  project = var.project_id
  name    = "jupiter-data-api-keys-stale"
  filter  = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"fetch-from-bigquery\" AND jsonPayload.message=\"API key list not re-read: keeping the last good one\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_monitoring_alert_policy" "function_errors" {
  project               = var.project_id
  display_name          = "jupiter-data: function errors (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "errors logged in 5 minutes"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.function_errors.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 5
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "dead_letters" {
  project               = var.project_id
  display_name          = "jupiter-data: dead letters waiting (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "undelivered messages on a dead-letter hold subscription"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.labels.subscription_id=monitoring.regex.full_match(\".*-dead-letter-hold\")"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "failed_syncs" {
  project               = var.project_id
  display_name          = "jupiter-data: Amplitude sync failed (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "a day failed to sync"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.failed_syncs.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "3600s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "dead_lettered_messages" {
  project               = var.project_id
  display_name          = "jupiter-data: messages dead-lettered by the loader (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "a message went to ops.all_user_events_dead_letter"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.dead_lettered_messages.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.error_type"]
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Runbook: docs/operations.md, \"jupiter-data: messages dead-lettered by the loader\". The rows are in ops.all_user_events_dead_letter, by error_type."
  }
}

resource "google_monitoring_alert_policy" "stale_api_keys" {
  project               = var.project_id
  display_name          = "jupiter-data: data API keys not re-read (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = "the key file could not be re-read"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.stale_api_keys.name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_SUM"
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Runbook: docs/operations.md, \"jupiter-data: data API keys not re-read\". Revoked keys keep working until the fetch-api-keys secret is fixed."
  }
}
