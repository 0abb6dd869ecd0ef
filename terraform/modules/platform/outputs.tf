output "function_uris" {
  description = "HTTPS address of each function."
  value       = { for name, f in module.functions : name => f.uri }
}

output "sns_endpoint" {
  description = "Subscribe the SNS topics to this HTTPS endpoint."
  value       = module.functions["sns_to_pubsub"].uri
}
