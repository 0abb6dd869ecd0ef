"""Loads the events of each `sns-events` message into BigQuery `ops.all_user_events`."""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from jupiter_data import bootstrap
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.settings import LoaderSettings, load_settings

bootstrap.cold_start()
load_settings(LoaderSettings)  # fail at cold start, naming the variable, rather than on the first message


@functions_framework.cloud_event
def pubsub_to_bigquery(cloud_event: CloudEvent) -> None:
    # Returning acknowledges the message (rows or dead letter stored); an exception (TransientError)
    # makes Pub/Sub redeliver it with backoff.
    bootstrap.loader().handle(PubSubMessage.from_push(cloud_event.data))
