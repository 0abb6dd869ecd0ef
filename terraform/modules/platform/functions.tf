# Per function: its settings (exactly what jupiter_data.settings reads for it; a test checks), secrets,
# roles and size. Names, entry points, triggers and concurrency come from resources.json and
# functions/<name>/.
locals {
  function_settings = {
    sns_to_pubsub = {
      env = {
        SNS_ALLOWED_TOPIC_ARNS = join(",", var.sns_allowed_topic_arns)
        SNS_MAX_MESSAGE_AGE    = "2h" # SNS retries for up to an hour; event ids are stable
        SNS_EVENTS_TOPIC       = "sns-events"
      }
      secrets = {}
      volumes = {}
      roles   = []
      ingress = "ALLOW_ALL" # AWS SNS calls from outside Google; every message is signature-checked
      memory  = "512Mi"
      timeout = 30
      max     = 20
    }
    pubsub_to_bigquery = {
      env = {
        LOADER_MAX_RETRY_AGE = "90m" # reachable before the subscription's last delivery attempt
        # the concurrency: a batch fills from the requests one instance serves together
        LOADER_BATCH_MAX_ROWS    = tostring(local.resources.functions.pubsub_to_bigquery.concurrency)
        LOADER_BATCH_MAX_WAIT_MS = "50"
      }
      secrets = {}
      volumes = {}
      roles   = ["roles/bigquery.jobUser"]
      ingress = "ALLOW_INTERNAL_ONLY"
      memory  = "512Mi"
      timeout = 60
      max     = 20
    }
    sync_amplitude = {
      env = {
        AMPLITUDE_API_BASE_URL     = var.amplitude_api_base_url
        AMPLITUDE_MAX_BAD_LINES    = "0.001"
        AMPLITUDE_MAX_WINDOW_BYTES = tostring(256 * 1024 * 1024)
      }
      secrets = {
        AMPLITUDE_API_KEY    = google_secret_manager_secret.secrets["amplitude-api-key"].secret_id
        AMPLITUDE_SECRET_KEY = google_secret_manager_secret.secrets["amplitude-secret-key"].secret_id
      }
      volumes = {}
      roles   = ["roles/bigquery.jobUser"]
      ingress = "ALLOW_INTERNAL_ONLY"
      memory  = "2Gi" # /tmp is memory: one window's zip and staged files, see README
      timeout = 540
      max     = 3
    }
    fetch_from_bigquery = {
      env = {
        FETCH_MAX_RANGE_DAYS   = "92"
        FETCH_MAX_BYTES_BILLED = tostring(10 * 1024 * 1024 * 1024)
        FETCH_QUERY_TIMEOUT    = "30s"
        FETCH_API_KEYS_FILE    = "/secrets/fetch-api-keys/keys"
      }
      secrets = {}
      # The key list is a mounted file, re-read by the code every 60 s: revoking a key needs no redeploy.
      volumes = {
        "/secrets/fetch-api-keys" = { secret = google_secret_manager_secret.secrets["fetch-api-keys"].secret_id, file = "keys" }
      }
      roles   = ["roles/bigquery.jobUser", "roles/bigquery.readSessionUser"]
      ingress = "ALLOW_ALL" # analysts call from their machines; IAM and an API key gate every call
      memory  = "1Gi"
      timeout = 120
      max     = 10
    }
  }
}

module "functions" {
  source   = "../function"
  for_each = local.functions

  project_id         = var.project_id
  region             = var.region
  name               = each.key
  source_bucket      = google_storage_bucket.sources.name
  archive_path       = "${var.dist_dir}/${local.manifest[each.key].archive}"
  archive_sha256     = local.manifest[each.key].sha256
  environment        = merge(local.common_env, local.function_settings[each.key].env)
  secret_environment = local.function_settings[each.key].secrets
  secret_volumes     = local.function_settings[each.key].volumes
  project_roles      = toset(local.function_settings[each.key].roles)
  ingress            = local.function_settings[each.key].ingress
  memory             = local.function_settings[each.key].memory
  concurrency        = local.resources.functions[each.key].concurrency
  timeout_seconds    = local.function_settings[each.key].timeout
  max_instances      = local.function_settings[each.key].max
  labels             = local.labels
  invokers = (
    each.key == "fetch_from_bigquery" ? var.analyst_invokers :
    each.key == "sns_to_pubsub" ? toset(["allUsers"]) :
    toset(["serviceAccount:${google_service_account.pubsub_push.email}"])
  )
}
