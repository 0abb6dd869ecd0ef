# State in a GCS bucket created once by hand (docs/deploy.md: "From an empty GCP project to staging"); its name is given at
# init: terraform init -backend-config=bucket=$TF_STATE_BUCKET. One prefix per environment.
terraform {
  backend "gcs" {
    prefix = "jupiter-data/staging"
  }
}
