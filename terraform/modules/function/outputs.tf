output "uri" {
  description = "HTTPS address of the function."
  value       = google_cloudfunctions2_function.function.service_config[0].uri
}

output "service_account_email" {
  description = "The function's own service account, for resource-level grants."
  value       = google_service_account.function.email
}

output "service" {
  description = "The Cloud Run service behind the function."
  value       = google_cloudfunctions2_function.function.service_config[0].service
}

output "service_name" {
  description = "The function's name on Cloud Run: what its log entries carry as resource.labels.service_name."
  value       = google_cloudfunctions2_function.function.name
}
