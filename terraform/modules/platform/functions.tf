# Every function from its manifest (functions/<name>/function.json): settings, secrets, roles, size and
# who may call it. Setting defaults live in the code's settings declarations; Terraform sets only what
# differs per environment (the manifest's "environment"), the secrets and the mounted secret files.
locals {
  # Values of this environment that functions read, by setting (a manifest's "environment" names them).
  deployment_settings = {
    SNS_ALLOWED_TOPIC_ARNS = join(",", var.sns_allowed_topic_arns)
    AMPLITUDE_API_BASE_URL = var.amplitude_api_base_url
  }
  # A manifest's "invokers": anyone (the function checks each caller itself), the analysts, or the
  # identity Pub/Sub pushes with.
  invokers = {
    public        = toset(["allUsers"])
    analysts      = var.analyst_invokers
    "pubsub-push" = toset(["serviceAccount:${google_service_account.pubsub_push.email}"])
  }
  # A secret file is mounted at /secrets/<secret>/value; its setting holds that path.
  secret_mounts = "/secrets"
}

module "functions" {
  source   = "../function"
  for_each = local.functions

  project_id     = var.project_id
  region         = var.region
  name           = each.key
  description    = each.value.description
  source_bucket  = google_storage_bucket.sources.name
  archive_path   = "${var.dist_dir}/${local.manifest[each.key].archive}"
  archive_sha256 = local.manifest[each.key].sha256
  environment = merge(
    local.common_env,
    { for name in each.value.environment : name => local.deployment_settings[name] },
    { for name, secret in each.value.secret_files : name => "${local.secret_mounts}/${secret}/value" },
  )
  secret_environment = { for name, secret in each.value.secrets : name => google_secret_manager_secret.secrets[secret].secret_id }
  secret_volumes = {
    for secret in values(each.value.secret_files) : "${local.secret_mounts}/${secret}" => {
      secret = google_secret_manager_secret.secrets[secret].secret_id
      file   = "value"
    }
  }
  project_roles   = toset(each.value.project_roles)
  ingress         = each.value.ingress
  memory          = each.value.memory
  concurrency     = each.value.concurrency
  timeout_seconds = each.value.timeout_seconds
  max_instances   = each.value.max_instances
  labels          = local.labels
  invokers        = local.invokers[each.value.invokers]
}
