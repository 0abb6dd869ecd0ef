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

# The manifests' "bucket_access": function => role on a bucket of resources.json. BigQuery load jobs
# run as the function and read its staged objects with its identity.
resource "google_storage_bucket_iam_member" "functions" {
  for_each = local.grants.bucket
  bucket   = google_storage_bucket.buckets[each.value.target].name
  role     = each.value.role
  member   = "serviceAccount:${module.functions[each.value.function].service_account_email}"
}
