# Secret values are added out of band (gcloud secrets versions add ...), never through Terraform, so
# they stay out of variables, plans and state. Each function can read only its own secrets (function
# module: secret_environment, secret_volumes).
locals {
  secrets = {
    "amplitude-api-key"    = "Amplitude project API key (sync_amplitude: AMPLITUDE_API_KEY)"
    "amplitude-secret-key" = "Amplitude project secret key (sync_amplitude: AMPLITUDE_SECRET_KEY)"
    "fetch-api-keys"       = "name:sha256 digests of the data API keys (fetch_from_bigquery: the file FETCH_API_KEYS_FILE)"
  }
}

resource "google_secret_manager_secret" "secrets" {
  for_each  = local.secrets
  project   = var.project_id
  secret_id = each.key
  labels    = local.labels

  annotations = {
    description = each.value
  }

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}
