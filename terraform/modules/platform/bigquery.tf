resource "google_bigquery_dataset" "datasets" {
  # checkov:skip=CKV_GCP_81:Google-managed encryption for now; CMEK needs a KMS key per location and service-agent grants (follow-up)
  for_each    = local.resources.bigquery.datasets
  project     = var.project_id
  dataset_id  = each.key
  location    = var.location
  description = each.value.description
  labels      = local.labels

}

# Tables from the same schema files the code loads and validates with.
resource "google_bigquery_table" "tables" {
  # checkov:skip=CKV_GCP_80:Google-managed encryption for now; CMEK needs a KMS key per location and service-agent grants (follow-up)
  for_each            = local.tables
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.datasets[split(".", each.key)[0]].dataset_id
  table_id            = split(".", each.key)[1]
  description         = each.value.description
  schema              = file("${local.schemas}/${each.value.schema}")
  clustering          = length(each.value.clustering) > 0 ? each.value.clustering : null
  deletion_protection = true
  labels              = local.labels

  time_partitioning {
    type  = "DAY"
    field = each.value.partition_field
  }

}

resource "google_bigquery_table" "views" {
  # checkov:skip=CKV_GCP_80:a view stores no data to encrypt
  for_each            = local.views
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.datasets[split(".", each.key)[0]].dataset_id
  table_id            = split(".", each.key)[1]
  description         = each.value.description
  deletion_protection = true
  labels              = local.labels

  view {
    query          = templatefile("${local.schemas}/${each.value.query}", { project = var.project_id })
    use_legacy_sql = false
  }

  depends_on = [google_bigquery_table.tables]
}

# Writers and readers, per dataset: nothing project-wide beyond running jobs.
locals {
  dataset_grants = {
    "loader-ops"           = { dataset = "ops", role = "roles/bigquery.dataEditor", fn = "pubsub_to_bigquery" }
    "sync-amplitude"       = { dataset = "amplitude", role = "roles/bigquery.dataEditor", fn = "sync_amplitude" }
    "sync-ops-ledger"      = { dataset = "ops", role = "roles/bigquery.dataEditor", fn = "sync_amplitude" }
    "fetch-ops-read"       = { dataset = "ops", role = "roles/bigquery.dataViewer", fn = "fetch_from_bigquery" }
    "fetch-amplitude-read" = { dataset = "amplitude", role = "roles/bigquery.dataViewer", fn = "fetch_from_bigquery" }
  }
}

resource "google_bigquery_dataset_iam_member" "functions" {
  for_each   = local.dataset_grants
  project    = var.project_id
  dataset_id = google_bigquery_dataset.datasets[each.value.dataset].dataset_id
  role       = each.value.role
  member     = "serviceAccount:${module.functions[each.value.fn].service_account_email}"
}
