variable "project_id" {
  type        = string
  description = "GCP project of the environment."
}

variable "environment" {
  type        = string
  description = "staging or production: JUPITER_ENV of every function."

  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "region" {
  type        = string
  description = "Region of the functions, the scheduler job and regional resources."
}

variable "location" {
  type        = string
  description = "Multi-region of the BigQuery datasets and buckets (US or EU)."
}

variable "dist_dir" {
  type        = string
  description = "Folder with the archives and manifest.json written by `make build`."
}

variable "sns_allowed_topic_arns" {
  type        = list(string)
  description = "SNS topics whose messages sns_to_pubsub accepts."
}

variable "amplitude_api_base_url" {
  type        = string
  description = "https://amplitude.com, or https://analytics.eu.amplitude.com for EU projects."
}

variable "analyst_invokers" {
  type        = set(string)
  description = "Members allowed to call fetch_from_bigquery, e.g. group:analysts@example.com, serviceAccount:..."
}

variable "analyst_readers" {
  type        = set(string)
  description = "Who may query BigQuery directly: the amplitude dataset and the ops.user_events view, never the dead-letter tables. group:, user: or serviceAccount: members."

  validation {
    condition     = alltrue([for m in var.analyst_readers : can(regex("^(group|user|serviceAccount):[^:@]+@[^:@]+$", m))])
    error_message = "analyst_readers: each member is group:<email>, user:<email> or serviceAccount:<email>."
  }
}

variable "dead_letter_retention_days" {
  type        = number
  description = "Days a dead-letter table partition (raw payloads) is kept before BigQuery deletes it."
  default     = 400

  validation {
    condition     = var.dead_letter_retention_days >= 30
    error_message = "dead_letter_retention_days: at least 30, to leave time to replay."
  }
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "Monitoring notification channel ids that receive the alerts."
}

variable "bigquery_query_gib_per_user_per_day" {
  type        = number
  description = "BigQuery bytes each principal (the data API's service account included) may scan per day, in GiB: the per-user custom query quota."

  validation {
    condition     = var.bigquery_query_gib_per_user_per_day >= 1 && floor(var.bigquery_query_gib_per_user_per_day) == var.bigquery_query_gib_per_user_per_day
    error_message = "bigquery_query_gib_per_user_per_day: a whole number of GiB, at least 1."
  }
}

variable "log_level" {
  type        = string
  description = "LOG_LEVEL of every function."
  default     = "INFO"
}
