"""Loads the events of each `sns-events` message into BigQuery `ops.all_user_events`."""

from __future__ import annotations

import functools

import functions_framework
from cloudevents.http import CloudEvent

from jupiter_data.bootstrap import cold_start
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.services.loader import Loader, LoaderSettings, bootstrap
from jupiter_data.settings import load_settings

settings = cold_start()
loader_settings = load_settings(LoaderSettings)  # fail at cold start, naming the variable


@functools.cache
def loader() -> Loader:
    # Built on the first message, which creates the BigQuery client: a cold start only reads settings.
    return bootstrap(settings, loader_settings=loader_settings)


@functions_framework.cloud_event
def pubsub_to_bigquery(cloud_event: CloudEvent) -> None:
    # Returning acknowledges the message (rows or dead letter stored); an exception (TransientError)
    # makes Pub/Sub redeliver it with backoff.
    loader().handle(PubSubMessage.from_push(cloud_event.data))
