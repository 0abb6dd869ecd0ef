terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.20"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

# Only for what the GA provider lacks (the BigQuery per-user query quota).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}
