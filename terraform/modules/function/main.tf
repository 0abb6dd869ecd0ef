# One Cloud Function (2nd gen): its own service account, its source archive under its content hash,
# settings as environment variables, secrets from Secret Manager (environment variables or mounted
# files), and who may invoke it.
# Pub/Sub-triggered functions are reached by a push subscription the caller creates (dead-letter policy
# and retry policy included), exactly as the local stack wires them.

resource "google_service_account" "function" {
  project      = var.project_id
  account_id   = substr(replace("fn-${var.name}", "_", "-"), 0, 30)
  display_name = "Cloud Function ${var.name}"
}

resource "google_project_iam_member" "function" {
  for_each = var.project_roles
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.function.email}"
}

resource "google_secret_manager_secret_iam_member" "function" {
  for_each  = toset(concat(values(var.secret_environment), [for volume in var.secret_volumes : volume.secret]))
  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.function.email}"
}

resource "google_storage_bucket_object" "source" {
  name   = "${var.name}/${var.archive_sha256}.zip"
  bucket = var.source_bucket
  source = var.archive_path
}

resource "google_cloudfunctions2_function" "function" {
  project     = var.project_id
  location    = var.region
  name        = replace(var.name, "_", "-")
  description = "jupiter-data ${var.name}: ${var.description}"
  labels      = var.labels

  build_config {
    runtime     = var.runtime
    entry_point = var.name
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.function.email
    ingress_settings                 = var.ingress
    min_instance_count               = var.min_instances
    max_instance_count               = var.max_instances
    available_memory                 = var.memory
    available_cpu                    = var.cpu
    max_instance_request_concurrency = var.concurrency
    timeout_seconds                  = var.timeout_seconds
    all_traffic_on_latest_revision   = true
    environment_variables            = merge(var.environment, { THREADS = tostring(var.concurrency) })

    dynamic "secret_environment_variables" {
      for_each = var.secret_environment
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value
        version    = "latest"
      }
    }

    # A mounted secret is read from Secret Manager on every file read, so a new version takes effect
    # without a redeploy (an environment variable is resolved once, at instance start).
    dynamic "secret_volumes" {
      for_each = var.secret_volumes
      content {
        mount_path = secret_volumes.key
        project_id = var.project_id
        secret     = secret_volumes.value.secret
        versions {
          version = "latest"
          path    = secret_volumes.value.file
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.function]
}

resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = var.invokers
  project  = var.project_id
  location = var.region
  service  = google_cloudfunctions2_function.function.service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}
