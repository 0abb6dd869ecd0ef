# Where resources now declared from the function manifests were before them (issue 14), so applying
# renames them in the state instead of replacing them. Remove once applied to every environment.

moved {
  from = google_logging_metric.failed_syncs
  to   = google_logging_metric.alerts["jupiter-amplitude-sync-failed"]
}

moved {
  from = google_monitoring_alert_policy.failed_syncs
  to   = google_monitoring_alert_policy.alerts["jupiter-amplitude-sync-failed"]
}

moved {
  from = google_logging_metric.dead_lettered_messages
  to   = google_logging_metric.alerts["jupiter-loader-dead-lettered"]
}

moved {
  from = google_monitoring_alert_policy.dead_lettered_messages
  to   = google_monitoring_alert_policy.alerts["jupiter-loader-dead-lettered"]
}

moved {
  from = google_logging_metric.stale_api_keys
  to   = google_logging_metric.alerts["jupiter-data-api-keys-stale"]
}

moved {
  from = google_monitoring_alert_policy.stale_api_keys
  to   = google_monitoring_alert_policy.alerts["jupiter-data-api-keys-stale"]
}

moved {
  from = google_bigquery_table_iam_member.tables["sync-runs-ledger"]
  to   = google_bigquery_table_iam_member.tables["sync_amplitude-ops.sync_runs"]
}

moved {
  from = google_storage_bucket_iam_member.amplitude_sync["amplitude-raw"]
  to   = google_storage_bucket_iam_member.functions["sync_amplitude-amplitude-raw"]
}

moved {
  from = google_storage_bucket_iam_member.amplitude_sync["amplitude-staged"]
  to   = google_storage_bucket_iam_member.functions["sync_amplitude-amplitude-staged"]
}

moved {
  from = google_pubsub_topic_iam_member.bridge_publishes_sns_events
  to   = google_pubsub_topic_iam_member.functions["sns_to_pubsub-sns-events"]
}
