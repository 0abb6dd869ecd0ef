# Secret values are added out of band (gcloud secrets versions add ...), never through Terraform, so
# they stay out of variables, plans and state. Each function can read only its own secrets (function
# module: secret_environment, secret_volumes). The secrets are those the manifests name.
locals {
  secret_uses = flatten([
    for name, f in local.functions : [
      for setting, secret in merge(f.secrets, f.secret_files) : { secret = secret, use = "${name}: ${setting}" }
    ]
  ])
  secrets = { for s in local.secret_uses : s.secret => s.use... }
}

resource "google_secret_manager_secret" "secrets" {
  for_each  = local.secrets
  project   = var.project_id
  secret_id = each.key
  labels    = local.labels

  annotations = {
    description = "read by ${join(", ", each.value)}"
  }

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}
