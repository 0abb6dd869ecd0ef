project_id                  = "jupiter-data-staging"
region                      = "us-central1"
location                    = "US"
sns_allowed_topic_arns      = ["arn:aws:sns:us-east-1:123456789012:user-events-staging"]
amplitude_api_base_url      = "https://amplitude.com"
analyst_invokers            = ["group:data-analysts@example.com"]
analyst_readers             = ["group:data-analysts@example.com"]
alert_notification_channels = []
