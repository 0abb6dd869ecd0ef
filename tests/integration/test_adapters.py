"""Contract tests: the same assertions against the in-memory fakes and the real adapters on the
emulators, so what unit tests learn from the fakes holds for the real clients."""

from __future__ import annotations

import io
import uuid

import pytest
from google.cloud import bigquery

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client, publisher_client, storage_client, subscriber_client
from jupiter_data.adapters.gcs import GcsObjectStore
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.ports import ObjectStore, PreconditionFailed, Publisher, TransientError
from jupiter_data.resources import load_resources
from jupiter_data.settings import Settings
from tests.fakes import FakeObjectStore, FakePublisher, FakeWarehouse


@pytest.fixture(params=["fake", "gcs"])
def store(request: pytest.FixtureRequest) -> tuple[ObjectStore, str]:
    if request.param == "fake":
        return FakeObjectStore(), "bucket"
    settings: Settings = request.getfixturevalue("settings")
    bucket = load_resources().bucket_name(settings.project, "amplitude-raw")
    return GcsObjectStore(storage_client(settings)), bucket


def test_store_round_trips_bytes_streams_and_metadata(store: tuple[ObjectStore, str]) -> None:
    objects, bucket = store
    prefix = f"contract/{uuid.uuid4().hex}/"
    objects.upload(bucket, prefix + "a.bin", b"\x00\x01payload", metadata={"sha256": "abc"})
    objects.upload(bucket, prefix + "b.txt", io.BytesIO(b"streamed"), content_type="text/plain")
    with objects.open_read(bucket, prefix + "a.bin") as handle:
        assert handle.read() == b"\x00\x01payload"
    with objects.open_read(bucket, prefix + "b.txt") as handle:
        assert handle.read() == b"streamed"
    assert sorted(objects.list_names(bucket, prefix)) == [prefix + "a.bin", prefix + "b.txt"]


def test_store_create_only_refuses_an_existing_object(store: tuple[ObjectStore, str]) -> None:
    objects, bucket = store
    name = f"contract/{uuid.uuid4().hex}"
    generation = objects.upload(bucket, name, b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        objects.upload(bucket, name, b"second", if_generation_match=0)
    # Replacing exactly the generation we read is allowed, and yields a new one.
    assert objects.upload(bucket, name, b"second", if_generation_match=generation) != generation
    with objects.open_read(bucket, name) as handle:
        assert handle.read() == b"second"


def test_store_reports_a_missing_object_as_file_not_found(store: tuple[ObjectStore, str]) -> None:
    objects, bucket = store
    with pytest.raises(FileNotFoundError, match="missing"):
        objects.open_read(bucket, f"contract/{uuid.uuid4().hex}/missing")


def _scratch_table(settings: Settings) -> str:
    table = f"ops.contract_{uuid.uuid4().hex[:10]}"
    bigquery_client(settings).create_table(
        bigquery.Table(
            f"{settings.project}.{table}",
            schema=[bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("n", "INT64")],
        )
    )
    return table


def test_warehouse_insert_then_parameterised_query(settings: Settings) -> None:
    table = _scratch_table(settings)
    warehouse = BigQueryWarehouse(bigquery_client(settings))
    warehouse.insert_rows(table, [{"id": "a", "n": 1}, {"id": "b", "n": 2}], ["a", "b"])
    rows = list(
        warehouse.query(f"SELECT id FROM `{table}` WHERE id IN UNNEST(@ids) ORDER BY id", {"ids": ["b"]})
    )
    assert rows == [{"id": "b"}]
    # A value that looks like SQL stays a value.
    assert list(warehouse.query(f"SELECT id FROM `{table}` WHERE id = @id", {"id": "a' OR '1'='1"})) == []


@pytest.mark.parametrize("kind", ["fake", "bigquery"])
def test_warehouse_rejects_mismatched_row_ids(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "fake":
        warehouse, table = FakeWarehouse(), "ops.t"
    else:
        settings: Settings = request.getfixturevalue("settings")
        warehouse, table = BigQueryWarehouse(bigquery_client(settings)), _scratch_table(settings)
    with pytest.raises(ValueError, match="differ in length"):
        warehouse.insert_rows(table, [{"id": "a", "n": 1}], [])


@pytest.fixture(params=["fake", "pubsub"])
def publisher(request: pytest.FixtureRequest) -> Publisher:
    if request.param == "fake":
        return FakePublisher()
    settings: Settings = request.getfixturevalue("settings")
    return PubSubPublisher(publisher_client(settings), settings.project)


def test_publisher_returns_a_message_id_per_publish(publisher: Publisher) -> None:
    ids = {publisher.publish("sns-events", f"m{n}".encode(), {"k": "v"}) for n in range(3)}
    assert len(ids) == 3


def test_published_messages_arrive_with_their_attributes(settings: Settings) -> None:
    subscriber = subscriber_client(settings)
    subscription = subscriber.subscription_path(settings.project, f"contract-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        request={"name": subscription, "topic": subscriber.topic_path(settings.project, "sns-events")}
    )
    message_id = PubSubPublisher(publisher_client(settings), settings.project).publish(
        "sns-events", b'{"hello": 1}', {"sns_message_id": "abc"}
    )
    response = subscriber.pull(request={"subscription": subscription, "max_messages": 5}, timeout=10)
    (received,) = response.received_messages
    assert received.message.message_id == message_id
    assert received.message.data == b'{"hello": 1}'
    assert dict(received.message.attributes) == {"sns_message_id": "abc"}


def test_publishing_to_a_missing_topic_is_an_error_not_a_loss(settings: Settings) -> None:
    publisher = PubSubPublisher(publisher_client(settings), settings.project)
    with pytest.raises(TransientError, match="no-such-topic"):
        publisher.publish("no-such-topic", b"x")


def test_provisioning_created_everything_in_resources_json(settings: Settings) -> None:
    resources = load_resources()
    publisher = publisher_client(settings)
    topics = {
        t.name.rsplit("/", 1)[1]
        for t in publisher.list_topics(request={"project": f"projects/{settings.project}"})
    }
    assert set(resources.topics) <= topics
    datasets = {d.dataset_id for d in bigquery_client(settings).list_datasets()}
    assert set(resources.datasets) <= datasets
    buckets = {b.name for b in storage_client(settings).list_buckets()}
    assert {resources.bucket_name(settings.project, role) for role in resources.buckets} <= buckets
