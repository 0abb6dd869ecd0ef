# Explicit, authoritative access: without it BigQuery grants the project's Viewers and Editors
# (projectReaders, projectWriters) every table, dead-letter payloads included. Project-level BigQuery
# roles (the deployer's bigquery.admin) still apply; table-level grants are below.
resource "google_bigquery_dataset" "datasets" {
  # checkov:skip=CKV_GCP_81:Google-managed encryption for now; CMEK needs a KMS key per location and service-agent grants (follow-up)
  for_each    = local.resources.bigquery.datasets
  project     = var.project_id
  dataset_id  = each.key
  location    = var.location
  description = each.value.description
  labels      = local.labels

  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }

  dynamic "access" {
    for_each = local.dataset_access[each.key]
    content {
      role          = access.value
      user_by_email = module.functions[access.key].service_account_email
    }
  }

  # Analysts read whole datasets only where nothing in them is raw or private (amplitude); in ops they
  # get the view (table-level grants below).
  dynamic "access" {
    for_each = each.key == "amplitude" ? local.analysts : {}
    content {
      role           = "READER"
      group_by_email = access.value.type == "group" ? access.value.email : null
      user_by_email  = access.value.type != "group" ? access.value.email : null
    }
  }
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
    # Dead letters hold raw payloads: kept long enough to replay, not forever (docs/operations.md).
    expiration_ms = strcontains(each.key, "_dead_letter") ? var.dead_letter_retention_days * 86400000 : null
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

# Who writes and reads each dataset: function => role, from the manifests' "dataset_access" (legacy role
# names: the API answers with them, so no diff).
locals {
  dataset_access = {
    for dataset in keys(local.resources.bigquery.datasets) : dataset => {
      for name, f in local.functions : name => f.dataset_access[dataset] if contains(keys(f.dataset_access), dataset)
    }
  }
  analysts = {
    for member in var.analyst_readers : member => {
      type  = split(":", member)[0]
      email = split(":", member)[1]
    }
  }
  # Table-level grants in ops: the manifests' "table_access", and the view analysts query. The view is
  # not an authorized view (that needs it in a dataset of its own), so its readers also read the table
  # it selects from; never the dead-letter tables.
  function_table_grants = {
    for key, grant in local.grants.table : key => {
      table  = grant.target
      role   = grant.role
      member = "serviceAccount:${module.functions[grant.function].service_account_email}"
    }
  }
  analyst_tables = { view = "ops.user_events", table = "ops.all_user_events" }
  analyst_table_grants = {
    for pair in setproduct(var.analyst_readers, keys(local.analyst_tables)) :
    "analyst-${pair[1]}-${pair[0]}" => {
      table  = local.analyst_tables[pair[1]]
      role   = "roles/bigquery.dataViewer"
      member = pair[0]
    }
  }
  table_grants = merge(local.function_table_grants, local.analyst_table_grants)
}

resource "google_bigquery_table_iam_member" "tables" {
  for_each   = local.table_grants
  project    = var.project_id
  dataset_id = split(".", each.value.table)[0]
  table_id   = split(".", each.value.table)[1]
  role       = each.value.role
  member     = each.value.member

  depends_on = [google_bigquery_table.tables, google_bigquery_table.views]
}
