resource "google_storage_bucket" "buckets" {
  # checkov:skip=CKV_GCP_78:versioning follows resources.json: on for the raw zips; staged files are run-private, re-creatable and deleted after 7 days
  for_each                    = local.resources.storage.buckets
  project                     = var.project_id
  name                        = "${var.project_id}-${each.key}"
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = each.value.versioning
  }


  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  dynamic "lifecycle_rule" {
    for_each = try([each.value.delete_after_days], [])
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  # Versioned buckets keep overwritten objects 30 days, then let them go.
  dynamic "lifecycle_rule" {
    for_each = each.value.versioning ? [30] : []
    content {
      condition {
        days_since_noncurrent_time = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }
}

# Function source archives, named by content hash.
resource "google_storage_bucket" "sources" {
  project                     = var.project_id
  name                        = "${var.project_id}-function-sources"
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }


  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  lifecycle_rule {
    condition {
      age = 90
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket" "access_logs" {
  # checkov:skip=CKV_GCP_62:this is the access-log bucket itself; logging it into itself would loop
  project                     = var.project_id
  name                        = "${var.project_id}-access-logs"
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = local.labels

  versioning {
    enabled = true
  }


  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }
}

resource "google_storage_bucket_iam_member" "amplitude_sync" {
  for_each = toset(["amplitude-raw", "amplitude-staged"])
  bucket   = google_storage_bucket.buckets[each.key].name
  role     = "roles/storage.objectAdmin"
  member   = "serviceAccount:${module.functions["sync_amplitude"].service_account_email}"
}

# BigQuery load jobs run as sync_amplitude and read the staged objects with its identity.
