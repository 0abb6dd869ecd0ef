# 03:00 UTC: Amplitude's data for an hour is complete about two hours after it.
resource "google_cloud_scheduler_job" "daily_amplitude_sync" {
  project     = var.project_id
  region      = var.region
  name        = "daily-amplitude-sync"
  description = "Publishes {} to daily-runs: sync_amplitude syncs yesterday (UTC)"
  schedule    = "0 3 * * *"
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.topics["daily-runs"].id
    data       = base64encode("{}")
  }
}
