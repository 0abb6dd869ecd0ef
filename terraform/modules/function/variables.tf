variable "project_id" {
  type        = string
  description = "GCP project the function is deployed in."
}

variable "region" {
  type        = string
  description = "Region of the function (e.g. us-central1)."
}

variable "name" {
  type        = string
  description = "Function name; also its entry point and its folder under functions/."
}

variable "description" {
  type        = string
  description = "What the function does (its manifest's description)."
}

variable "source_bucket" {
  type        = string
  description = "Bucket holding the function source archives."
}

variable "archive_path" {
  type        = string
  description = "Local path of the archive built by `make build` (dist/<name>-<hash>.zip)."
}

variable "archive_sha256" {
  type        = string
  description = "SHA-256 of the archive (dist/manifest.json): the object name, so only changed code redeploys."
}

variable "runtime" {
  type        = string
  description = "Cloud Functions runtime."
  default     = "python311"
}

variable "environment" {
  type        = map(string)
  description = "Plain environment variables (settings that are not secret)."
  default     = {}
}

variable "secret_environment" {
  type        = map(string)
  description = "Environment variable name => Secret Manager secret id; the latest version is mounted at start."
  default     = {}
}

variable "secret_volumes" {
  type = map(object({
    secret = string
    file   = string
  }))
  description = "Mount path => Secret Manager secret id and file name: its latest version is readable at <mount path>/<file>, re-read from Secret Manager on each read."
  default     = {}
}

variable "project_roles" {
  type        = set(string)
  description = "Project-level roles for the function's own service account (resource-level grants live with the resources)."
  default     = []
}

variable "ingress" {
  type        = string
  description = "ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_ALL", "ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.ingress)
    error_message = "ingress must be ALLOW_ALL, ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "min_instances" {
  type        = number
  description = "Instances kept warm."
  default     = 0
}

variable "max_instances" {
  type        = number
  description = "Upper bound on instances (a cost and a quota guard)."
  default     = 10
}

variable "memory" {
  type        = string
  description = "Memory per instance, e.g. 512Mi or 2Gi."
  default     = "512Mi"
}

variable "cpu" {
  type        = string
  description = "vCPUs per instance."
  default     = "1"
}

variable "concurrency" {
  type        = number
  description = "Requests one instance serves at once (THREADS is set to match)."
  default     = 1
}

variable "timeout_seconds" {
  type        = number
  description = "Request timeout: up to 3600 for HTTP, 540 for event-driven work."
  default     = 60
}

variable "invokers" {
  type        = set(string)
  description = "Members allowed to invoke the function (roles/run.invoker), e.g. group:analysts@example.com."
  default     = []
}

variable "labels" {
  type        = map(string)
  description = "Labels on the function and its service account's resources."
  default     = {}
}
