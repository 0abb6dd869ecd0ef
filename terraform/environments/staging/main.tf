module "platform" {
  source = "../../modules/platform"

  project_id                  = var.project_id
  environment                 = "staging"
  region                      = var.region
  location                    = var.location
  dist_dir                    = var.dist_dir
  sns_allowed_topic_arns      = var.sns_allowed_topic_arns
  amplitude_api_base_url      = var.amplitude_api_base_url
  analyst_invokers            = var.analyst_invokers
  analyst_readers             = var.analyst_readers
  alert_notification_channels = var.alert_notification_channels

  bigquery_query_gib_per_user_per_day = var.bigquery_query_gib_per_user_per_day
}

output "function_uris" {
  description = "HTTPS address of each function."
  value       = module.platform.function_uris
}
