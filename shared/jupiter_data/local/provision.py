"""Creates the emulators' topics, subscriptions, datasets and buckets from ``schemas/resources.json``, and
the functions' push subscriptions from their manifests: the definitions Terraform reads. Idempotent:
existing resources are left as they are. Dev only."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence

import google.cloud.pubsub_v1 as pubsub_v1  # untyped: plain import keeps mypy quiet
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.protobuf import duration_pb2

from jupiter_data.adapters.clients import bigquery_client, publisher_client, storage_client, subscriber_client
from jupiter_data.resources import FunctionDef, Resources
from jupiter_data.settings import Settings

log = logging.getLogger(__name__)

LOCATION = "US"  # staging's location; the emulators ignore it


def trigger_subscription_name(topic: str, function: str) -> str:
    return f"{topic}-to-{function}"


def provision(
    settings: Settings,
    resources: Resources,
    functions: Sequence[FunctionDef],
    function_urls: Mapping[str, str],
    retry_overrides: Mapping[str, int] | None = None,
) -> None:
    """Create every resource; wire each running Pub/Sub-triggered function to a push subscription."""
    retry = {**resources.trigger_retry, **(retry_overrides or {})}
    _pubsub(settings, resources, functions, function_urls, retry)
    bq = bigquery_client(settings)
    for dataset in resources.datasets:
        bq.create_dataset(bigquery.Dataset(f"{settings.project}.{dataset}"), exists_ok=True)
    for table_spec in resources.tables:
        table = bigquery.Table(
            f"{settings.project}.{table_spec.table_id}",
            schema=[bigquery.SchemaField.from_api_repr(field) for field in table_spec.schema],
        )
        table.time_partitioning = bigquery.TimePartitioning(field=table_spec.partition_field)
        table.clustering_fields = table_spec.clustering or None
        table.description = table_spec.description
        bq.create_table(table, exists_ok=True)
    for view_spec in resources.views:
        view = bigquery.Table(f"{settings.project}.{view_spec.table_id}")
        view.view_query = view_spec.query(settings.project)
        view.description = view_spec.description
        bq.create_table(view, exists_ok=True)
    gcs = storage_client(settings)
    for role in resources.buckets:
        # Versioning (resources.json) is Terraform's: fake-gcs-server's filesystem backend, which the
        # BigQuery emulator reads load-job files from, cannot version buckets.
        with contextlib.suppress(gexc.Conflict):
            gcs.create_bucket(resources.bucket_name(settings.project, role), location=LOCATION)
    log.info("provisioned local resources", extra={"fields": {"project": settings.project}})


def _pubsub(
    settings: Settings,
    resources: Resources,
    functions: Sequence[FunctionDef],
    function_urls: Mapping[str, str],
    retry: Mapping[str, int],
) -> None:
    publisher, subscriber = publisher_client(settings), subscriber_client(settings)
    for topic in resources.topics:
        with contextlib.suppress(gexc.AlreadyExists):
            publisher.create_topic(name=publisher.topic_path(settings.project, topic))
    for topic, spec in resources.topics.items():
        # A topic without subscribers drops messages, so each dead-letter topic gets one to hold them.
        if hold := spec.get("hold_subscription"):
            _subscribe(subscriber, settings.project, hold, topic, {})

    for function in functions:
        if function.is_http or function.name not in function_urls:
            continue
        topic = function.trigger
        request: dict[str, object] = {
            "push_config": {"push_endpoint": function_urls[function.name]},
            "ack_deadline_seconds": retry["ack_deadline_seconds"],
            "retry_policy": {
                "minimum_backoff": duration_pb2.Duration(seconds=retry["minimum_backoff_seconds"]),
                "maximum_backoff": duration_pb2.Duration(seconds=retry["maximum_backoff_seconds"]),
            },
        }
        if dead_letter := resources.topics[topic].get("dead_letter_topic"):
            request["dead_letter_policy"] = {
                "dead_letter_topic": publisher.topic_path(settings.project, dead_letter),
                "max_delivery_attempts": retry["max_delivery_attempts"],
            }
        _subscribe(
            subscriber, settings.project, trigger_subscription_name(topic, function.name), topic, request
        )


def _subscribe(
    subscriber: pubsub_v1.SubscriberClient, project: str, name: str, topic: str, extra: Mapping[str, object]
) -> None:
    with contextlib.suppress(gexc.AlreadyExists):
        subscriber.create_subscription(
            request={
                "name": subscriber.subscription_path(project, name),
                "topic": subscriber.topic_path(project, topic),
                **extra,
            }
        )
