"""Contract tests: the same assertions against the in-memory fakes and the real adapters on the
emulators, so what unit tests learn from the fakes holds for the real clients."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.api_core.exceptions import GoogleAPICallError
from google.cloud import bigquery

from jupiter_data.adapters.amplitude_api import AmplitudeExportClient
from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client, publisher_client, storage_client, subscriber_client
from jupiter_data.adapters.gcs import GcsObjectStore
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.local.amplitude_data import ExportSpec
from jupiter_data.local.amplitude_server import AmplitudeExportServer
from jupiter_data.ports import (
    BulkWarehouse,
    ExportApi,
    ExportTooLarge,
    ObjectStore,
    PreconditionFailed,
    Publisher,
    TransientError,
)
from jupiter_data.resources import load_resources
from jupiter_data.settings import Settings
from tests.fakes import FakeBulkWarehouse, FakeExportApi, FakeObjectStore, FakePublisher, FakeWarehouse


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


class _RefusingBigQuery(BaseHTTPRequestHandler):
    """Answers insertAll as BigQuery does when a row is invalid and skipInvalidRows is off: 200 with
    ``insertErrors``, and the whole request stored nowhere. (The emulator stores invalid rows instead.)"""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        errors = [{"index": 1, "errors": [{"reason": "invalid", "location": "n", "message": "not an INT64"}]}]
        body = json.dumps({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.mark.parametrize("kind", ["fake", "bigquery"])
def test_warehouse_refuses_a_call_holding_a_bad_row_with_a_value_error_naming_the_table(kind: str) -> None:
    """What the loader's batcher relies on: a call BigQuery refuses raises ValueError (never retried),
    storing none of its rows. The fake refuses the rows its ``reject`` matches."""
    rows, ids = [{"id": "a", "n": 1}, {"id": "b", "n": "not a number"}], ["a", "b"]
    if kind == "fake":
        fake = FakeWarehouse(reject=lambda row: not isinstance(row["n"], int))
        with pytest.raises(ValueError, match=r"rejected by ops\.t"):
            fake.insert_rows("ops.t", rows, ids)
        fake.insert_rows("ops.t", [{"id": "c", "n": 3}], ["c"])
        assert fake.row_ids("ops.t") == ["c"]
        return
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusingBigQuery)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = {"BIGQUERY_EMULATOR_HOST": f"http://127.0.0.1:{server.server_address[1]}"}
        settings = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "jupiter-local", **endpoint})
        with pytest.raises(ValueError, match=r"rejected by ops\.t"):
            BigQueryWarehouse(bigquery_client(settings)).insert_rows("ops.t", rows, ids)
    finally:
        server.shutdown()
        server.server_close()


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


# ------------------------------------------------------------------ the Amplitude sync's warehouse

DAY, OTHER_DAY = date(2026, 11, 20), date(2026, 11, 19)
BULK_SCHEMA = [
    {"name": "export_day", "type": "DATE", "mode": "NULLABLE"},
    {"name": "status", "type": "STRING", "mode": "NULLABLE"},
    {"name": "n", "type": "INTEGER", "mode": "NULLABLE"},
]


@pytest.fixture(params=["fake", "bigquery"])
def bulk(request: pytest.FixtureRequest) -> tuple[BulkWarehouse, ObjectStore, str]:
    """A bulk warehouse, the store its loads read from and a bucket there."""
    if request.param == "fake":
        store = FakeObjectStore()
        return FakeBulkWarehouse(store), store, "bucket"
    settings: Settings = request.getfixturevalue("settings")
    bucket = load_resources().bucket_name(settings.project, "amplitude-staged")
    return BigQueryWarehouse(bigquery_client(settings)), GcsObjectStore(storage_client(settings)), bucket


def _load(bulk: tuple[BulkWarehouse, ObjectStore, str], table: str, rows: list[dict[str, Any]]) -> int:
    warehouse, store, bucket = bulk
    name = f"contract/{uuid.uuid4().hex}.json.gz"
    data = gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for row in rows))
    store.upload(bucket, name, data, "application/gzip")
    return warehouse.load_ndjson([f"gs://{bucket}/{name}"], table, BULK_SCHEMA)


def _rows(day: date, status: str, count: int) -> list[dict[str, Any]]:
    return [{"export_day": day.isoformat(), "status": status, "n": n} for n in range(count)]


def _table() -> str:
    return f"ops.contract_{uuid.uuid4().hex[:10]}"


def test_bulk_load_creates_or_replaces_a_table_and_rows_are_counted_by_value(
    bulk: tuple[BulkWarehouse, ObjectStore, str],
) -> None:
    warehouse, table = bulk[0], _table()
    assert _load(bulk, table, _rows(DAY, "new", 2) + _rows(OTHER_DAY, "old", 1)) == 3
    assert warehouse.count_rows(table, {"export_day": DAY}) == 2
    assert warehouse.count_rows(table, {"export_day": OTHER_DAY, "status": "old"}) == 1
    assert warehouse.count_rows(table, {"export_day": OTHER_DAY, "status": "new"}) == 0
    assert _load(bulk, table, _rows(DAY, "again", 1)) == 1, "the table is replaced, not appended to"
    assert warehouse.count_rows(table, {"export_day": DAY}) == 1
    warehouse.drop_table(table)
    warehouse.drop_table(table)  # a missing table is no error


def test_bulk_replace_day_swaps_exactly_that_day_in_every_target(
    bulk: tuple[BulkWarehouse, ObjectStore, str],
) -> None:
    warehouse = bulk[0]
    first, second, staged = _table(), _table(), _table()
    for target in (first, second):
        _load(bulk, target, _rows(DAY, "old", 3) + _rows(OTHER_DAY, "old", 1))
    _load(bulk, staged, _rows(DAY, "new", 2) + _rows(OTHER_DAY, "new", 5))

    warehouse.replace_day(DAY, {first: staged, second: None})

    assert warehouse.count_rows(first, {"export_day": DAY, "status": "new"}) == 2
    assert warehouse.count_rows(first, {"export_day": DAY}) == 2, "the old rows of the day are gone"
    assert warehouse.count_rows(second, {"export_day": DAY}) == 0, "no source: the day is emptied"
    for target in (first, second):  # the other day is untouched, and none of it was copied in
        assert warehouse.count_rows(target, {"export_day": OTHER_DAY}) == 1
        assert warehouse.count_rows(target, {"export_day": OTHER_DAY, "status": "old"}) == 1


def test_bulk_replace_day_from_a_missing_table_fails_and_changes_nothing(
    bulk: tuple[BulkWarehouse, ObjectStore, str],
) -> None:
    warehouse = bulk[0]
    first, second, staged = _table(), _table(), _table()
    for target in (first, second):
        _load(bulk, target, _rows(DAY, "old", 3))
    _load(bulk, staged, _rows(DAY, "new", 2))
    with pytest.raises((LookupError, GoogleAPICallError)):
        warehouse.replace_day(DAY, {first: staged, second: _table()})
    assert warehouse.count_rows(first, {"export_day": DAY, "status": "old"}) == 3


# ------------------------------------------------------------------------- the Export API

EXPORT_SPEC = ExportSpec(events_per_hour=5, seed=3, empty_days=frozenset({OTHER_DAY}))
MIDNIGHT = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(params=["fake", "http"])
def export_api(request: pytest.FixtureRequest) -> Iterator[ExportApi]:
    """Windows of more than six hours are too large for either."""
    if request.param == "fake":
        yield FakeExportApi(EXPORT_SPEC, max_window_hours=6)
        return
    with AmplitudeExportServer(spec=EXPORT_SPEC, max_window_hours=6) as server:
        yield AmplitudeExportClient(server.url, server.api_key, server.secret_key, sleep=lambda _: None)


def _hours(first: int, last: int, day: datetime = MIDNIGHT) -> tuple[datetime, datetime]:
    return day.replace(hour=first), day.replace(hour=last)


def test_export_api_writes_the_window_s_zip_with_its_size_and_digest(
    export_api: ExportApi, tmp_path: Path
) -> None:
    expected = io.BytesIO()
    EXPORT_SPEC.write_zip(expected, *_hours(2, 5))
    with (tmp_path / "export.zip").open("w+b") as dest:
        dest.write(b"left over from an earlier attempt")
        download = export_api.download(*_hours(2, 5), dest)
    written = (tmp_path / "export.zip").read_bytes()
    assert written == expected.getvalue()
    assert download.has_data and download.size == len(written)
    assert download.sha256 == hashlib.sha256(written).hexdigest()


def test_export_api_answers_a_window_without_data_with_no_data(export_api: ExportApi, tmp_path: Path) -> None:
    empty = datetime(2026, 11, 19, tzinfo=UTC)
    with (tmp_path / "export.zip").open("w+b") as dest:
        download = export_api.download(*_hours(0, 5, empty), dest)
    assert (download.has_data, download.size) == (False, 0)
    assert download.sha256 == hashlib.sha256().hexdigest()


def test_export_api_refuses_a_window_too_large_to_split_it(export_api: ExportApi, tmp_path: Path) -> None:
    with (tmp_path / "export.zip").open("w+b") as dest, pytest.raises(ExportTooLarge):
        export_api.download(*_hours(0, 6), dest)


def test_export_api_stops_past_the_byte_cap_leaving_no_zip(export_api: ExportApi, tmp_path: Path) -> None:
    with (tmp_path / "export.zip").open("w+b") as dest, pytest.raises(ExportTooLarge):
        export_api.download(*_hours(0, 5), dest, max_bytes=1000)
    assert (tmp_path / "export.zip").read_bytes() == b""
