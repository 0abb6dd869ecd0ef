locals {
  # One definition, two consumers: the local stack reads the same files (jupiter_data/resources.py).
  schemas   = "${path.module}/../../../shared/jupiter_data/schemas"
  resources = jsondecode(file("${local.schemas}/resources.json"))
  manifest  = jsondecode(file("${var.dist_dir}/manifest.json"))
  retry     = local.resources.pubsub.trigger_retry

  # Each function is declared in its own folder: functions/<name>/function.json.
  functions_dir = "${path.module}/../../../functions"
  functions = {
    for path in fileset(local.functions_dir, "*/function.json") :
    dirname(path) => jsondecode(file("${local.functions_dir}/${path}"))
  }
  pubsub_triggered = { for name, f in local.functions : name => f if f.trigger != "http" }
  hold_subscriptions = {
    for topic, t in local.resources.pubsub.topics : t.hold_subscription => topic if can(t.hold_subscription)
  }

  # Each function's grants on single resources (function.json "table_access", "bucket_access" and
  # "topic_access"), by kind, each keyed "<function>-<resource>".
  grants = {
    for kind in ["table", "bucket", "topic"] : kind => {
      for grant in flatten([
        for name, f in local.functions : [
          for target, role in f["${kind}_access"] : { function = name, target = target, role = role }
        ]
      ]) :
      "${grant.function}-${grant.target}" => grant
    }
  }

  tables = local.resources.bigquery.tables
  views  = local.resources.bigquery.views

  labels = {
    app         = "jupiter-data"
    environment = var.environment
  }

  # Settings every function reads (jupiter_data.settings.Settings, less the emulator hosts and what
  # Cloud Run sets itself).
  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    JUPITER_ENV          = var.environment
    LOG_LEVEL            = var.log_level
  }
}
