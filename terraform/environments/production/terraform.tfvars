# alert_notification_channels: the on-call channel (gcloud beta monitoring channels list); production
# refuses an empty list.
project_id                          = "jupiter-data-production"
region                              = "europe-west1"
location                            = "EU"
sns_allowed_topic_arns              = ["arn:aws:sns:eu-west-1:123456789012:user-events"]
amplitude_api_base_url              = "https://analytics.eu.amplitude.com"
analyst_invokers                    = ["group:data-analysts@example.com"]
analyst_readers                     = ["group:data-analysts@example.com"]
alert_notification_channels         = ["projects/jupiter-data-production/notificationChannels/1234567890123456789"]
bigquery_query_gib_per_user_per_day = 4096
