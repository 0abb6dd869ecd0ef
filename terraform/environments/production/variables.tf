variable "project_id" {
  type        = string
  description = "GCP project of this environment."
}

variable "region" {
  type        = string
  description = "Region of the functions and the scheduler job."
}

variable "location" {
  type        = string
  description = "Multi-region of datasets and buckets."
}

variable "dist_dir" {
  type        = string
  description = "Folder with `make build`'s archives and manifest.json."
  default     = "../../../dist"
}

variable "sns_allowed_topic_arns" {
  type        = list(string)
  description = "SNS topics whose messages sns_to_pubsub accepts."
}

variable "amplitude_api_base_url" {
  type        = string
  description = "Amplitude Export API host of the project's region."
}

variable "analyst_invokers" {
  type        = set(string)
  description = "Who may call fetch_from_bigquery (groups and service accounts)."
}

variable "analyst_readers" {
  type        = set(string)
  description = "Who may query BigQuery directly (the amplitude dataset and the ops.user_events view)."
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "Monitoring notification channels for the alerts: at least one in production."

  validation {
    condition     = length(var.alert_notification_channels) > 0
    error_message = "production needs at least one alert notification channel (projects/<project>/notificationChannels/<id>): an alert nobody receives is no alert."
  }
}

variable "bigquery_query_gib_per_user_per_day" {
  type        = number
  description = "BigQuery GiB each principal (the data API's service account included) may scan per day."
}
