# Log-based metrics from the functions' structured logs, and alerts on them (runbooks:
# docs/operations.md).
resource "google_logging_metric" "function_errors" {
  project = var.project_id
  name    = "jupiter-function-errors"
  # Every function of the manifests, each by its Cloud Run service name.
  filter = "resource.type=\"cloud_run_revision\" AND (${join(" OR ", [for f in module.functions : "resource.labels.service_name=\"${f.service_name}\""])}) AND severity>=ERROR"
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

# The log lines the manifests say alert ("alerts" in functions/<name>/function.json), by metric name,
# each with the function that writes it. A test matches each one against the line the code writes.
locals {
  log_alerts = {
    for alert in flatten([for name, f in local.functions : [for a in f.alerts : merge(a, { function = name })]]) :
    alert.metric => alert
  }
  message_match = { exact = "=", regex = "=~" }
}

resource "google_logging_metric" "alerts" {
  for_each = local.log_alerts
  project  = var.project_id
  name     = each.key
  filter   = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=\"${module.functions[each.value.function].service_name}\" AND jsonPayload.message${local.message_match[each.value.match]}\"${each.value.message}\""
  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key         = labels.value.name
        value_type  = "STRING"
        description = labels.value.description
      }
    }
  }
  label_extractors = { for label in each.value.labels : label.name => "EXTRACT(jsonPayload.${label.name})" }
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

resource "google_monitoring_alert_policy" "alerts" {
  for_each              = local.log_alerts
  project               = var.project_id
  display_name          = "jupiter-data: ${each.value.title} (${var.environment})"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels
  conditions {
    display_name = each.value.condition
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.alerts[each.key].name}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "${each.value.window_seconds}s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = length(each.value.labels) > 0 ? "REDUCE_SUM" : null
        group_by_fields      = [for label in each.value.labels : "metric.label.${label.name}"]
      }
    }
  }
  documentation {
    mime_type = "text/markdown"
    content   = "Runbook: docs/operations.md, \"jupiter-data: ${each.value.title}\". ${each.value.runbook}"
  }
}
