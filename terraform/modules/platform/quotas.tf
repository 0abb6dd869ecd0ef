# A daily cost ceiling per caller: BigQuery's custom quota "query usage per day per user" caps the bytes
# each principal's queries may scan in a day (reset at midnight Pacific time; a query over it fails
# before it runs). Google applies it to every user and service account of the project alike and
# cannot single one out: it caps the data API's service account, through which all API callers query
# (each call is further capped by FETCH_MAX_BYTES_BILLED), and also sync_amplitude and analysts.
resource "google_service_usage_consumer_quota_override" "bigquery_query_per_user_per_day" {
  provider       = google-beta
  project        = var.project_id
  service        = "bigquery.googleapis.com"
  metric         = urlencode("bigquery.googleapis.com/quota/query/usage")
  limit          = urlencode("/d/project/user")
  override_value = tostring(var.bigquery_query_gib_per_user_per_day * 1024) # the quota counts MiB
  # The override lowers the default (unlimited) by more than 10%, which the API refuses unless forced.
  force = true
}
