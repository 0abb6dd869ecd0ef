"""The loader with the real BigQuery client on the emulator: tables and view from resources.json."""

from __future__ import annotations

import base64
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.domain.events import DEAD_LETTER_TABLE, EVENTS_TABLE, PubSubMessage
from jupiter_data.ports import Row, SystemClock, TransientError
from jupiter_data.services import loader as loader_service
from jupiter_data.services import replay
from jupiter_data.services.loader import Loader, LoaderSettings
from jupiter_data.settings import Settings

LOADER_SETTINGS = LoaderSettings(
    max_retry_age=timedelta(hours=24),
    threads=None,
    batch_max_rows=500,
    batch_max_wait_ms=20,
    function_version="test",
)


def message(events: Any, sns_id: str | None = None, raw: bytes | None = None) -> PubSubMessage:
    attributes = {"sns_message_id": sns_id or str(uuid.uuid4()), "sns_topic_arn": "arn:aws:sns:us-east-1:1:t"}
    data = raw if raw is not None else json.dumps(events).encode()
    return PubSubMessage(uuid.uuid4().hex, data, attributes, datetime.now(UTC))


def event(user: str, n: int = 0) -> dict[str, Any]:
    return {"userId": user, "eventType": "login", "timestamp": 1_700_000_000_000 + n, "context": {"n": n}}


def query(settings: Settings, sql: str, **params: Any) -> list[dict[str, Any]]:
    return list(BigQueryWarehouse(bigquery_client(settings)).query(sql, params))


@pytest.fixture
def loader(settings: Settings) -> Loader:
    return loader_service.bootstrap(settings, loader_settings=LOADER_SETTINGS)  # on the emulator


def test_the_same_sns_message_delivered_three_times_is_one_row_per_event_in_the_view(
    settings: Settings, loader: Loader
) -> None:
    user = f"user-{uuid.uuid4().hex}"
    sns_id = str(uuid.uuid4())
    for _ in range(3):  # SNS retried and Pub/Sub redelivered: three Pub/Sub messages, one SNS id
        assert loader.handle(message([event(user, 1), event(user, 2)], sns_id=sns_id)).status == "loaded"
    copies = query(settings, "SELECT COUNT(*) AS n FROM `ops.all_user_events` WHERE user_id = @u", u=user)
    rows = query(
        settings, "SELECT event_id FROM `ops.user_events` WHERE user_id = @u ORDER BY event_id", u=user
    )
    assert copies == [{"n": 6}], "the emulator keeps every copy (it ignores insert ids)"
    assert rows == [{"event_id": f"{sns_id}:0"}, {"event_id": f"{sns_id}:1"}]


def test_poison_messages_are_dead_lettered_and_good_ones_loaded(settings: Settings, loader: Loader) -> None:
    user = f"user-{uuid.uuid4().hex}"
    good = [message(event(user, n)) for n in range(20)]
    poison = [
        message(None, raw=b'eval(\'__import__("os").system("id")\')'),
        message({"userId": user, "eventType": "login"}),  # no timestamp
        message([event(user, 99), {"userId": 7}]),
    ]
    with ThreadPoolExecutor(8) as pool:  # concurrent invocations, coalesced by the batcher
        outcomes = list(pool.map(loader.handle, good + poison))
    assert [o.status for o in outcomes] == ["loaded"] * 20 + ["dead_lettered"] * 3
    loaded = query(settings, "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE user_id = @u", u=user)
    assert loaded == [{"n": 20}], "a bad event in a list holds back its whole message, nothing else"
    ids = [m.message_id for m in poison]
    dead = query(
        settings,
        "SELECT pubsub_message_id, error_type, error_message, payload, attributes, function_version "
        "FROM `ops.all_user_events_dead_letter` WHERE pubsub_message_id IN UNNEST(@ids)",
        ids=ids,
    )
    by_id = {row["pubsub_message_id"]: row for row in dead}
    assert [by_id[i]["error_type"] for i in ids] == ["invalid_json", "schema_violation", "schema_violation"]
    assert "'timestamp' is a required property" in by_id[ids[1]]["error_message"]
    assert "$[1].userId" in by_id[ids[2]]["error_message"]
    assert base64.b64decode(by_id[ids[0]]["payload"]) == poison[0].data
    assert json.loads(by_id[ids[0]]["attributes"]) == poison[0].attributes
    assert {row["function_version"] for row in dead} == {"test"}


def test_replay_loads_what_passes_now_and_only_once(settings: Settings, loader: Loader) -> None:
    user = f"user-{uuid.uuid4().hex}"
    replays = replay.bootstrap(settings)  # on the emulator, as the CLI builds it
    replays.run()  # other tests' dead letters: out of this test's window
    since = datetime.now(UTC)
    # Dead letters as a loader that was failing (too_old) left them, plus one that is still invalid.
    fixable = message([event(user, 1), event(user, 2)])
    broken = message(None, raw=b"not json")
    for msg, reason in ((fixable, "too_old"), (broken, "invalid_json")):
        loader._dead_letter(msg, reason, "simulated", {})

    dry = replays.run(since=since, dry_run=True)
    assert (dry.pending, dry.loaded, dry.rows, dry.still_invalid) == (2, 1, 2, {"invalid_json": 1})
    assert query(settings, "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE user_id = @u", u=user) == [
        {"n": 0}
    ]

    first = replays.run(since=since)
    second = replays.run(since=since)
    assert (first.loaded, first.rows) == (1, 2)
    assert (second.pending, second.loaded) == (1, 0), "only the still-invalid one is left"
    rows = query(
        settings, "SELECT event_id FROM `ops.all_user_events` WHERE user_id = @u ORDER BY event_id", u=user
    )
    sns_id = fixable.attributes["sns_message_id"]
    assert rows == [{"event_id": f"{sns_id}:0"}, {"event_id": f"{sns_id}:1"}]


# --- configuration errors (finding 8) ------------------------------------------------------------------


def test_an_insert_into_a_missing_table_is_a_transient_configuration_error_logged_at_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    warehouse = BigQueryWarehouse(bigquery_client(settings))
    table = f"ops.missing_{uuid.uuid4().hex[:10]}"
    with pytest.raises(TransientError, match="404"):
        warehouse.insert_rows(table, [{"id": "a"}], ["a"])
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.fields["table"] == table  # type: ignore[attr-defined]
    assert record.fields["http_status"] == 404  # type: ignore[attr-defined]


class Rerouted:
    """The real adapter, with the loader's events table swapped for another name (one that is missing)."""

    def __init__(self, warehouse: BigQueryWarehouse, routes: Mapping[str, str]) -> None:
        self._warehouse, self._routes = warehouse, routes

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        self._warehouse.insert_rows(self._routes.get(table, table), rows, row_ids)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        return self._warehouse.query(sql, params)


def test_a_missing_events_table_is_retried_and_alerting_never_dead_lettered_as_bad_data(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    real = BigQueryWarehouse(bigquery_client(settings))
    missing = f"ops.missing_{uuid.uuid4().hex[:10]}"
    loader = Loader(LOADER_SETTINGS, Rerouted(real, {EVENTS_TABLE: missing}), SystemClock())
    msg = message([event(f"user-{uuid.uuid4().hex}")])

    with pytest.raises(TransientError):
        loader.handle(msg)

    dead = query(
        settings,
        f"SELECT error_type FROM `{DEAD_LETTER_TABLE}` WHERE pubsub_message_id = @id",
        id=msg.message_id,
    )
    assert dead == [], "a deployment error is not bad data"
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "the function-errors alert counts ERROR"
    assert not any(r.getMessage().startswith("dead-lettered message: ") for r in caplog.records)


class _BigQueryRefusing(BaseHTTPRequestHandler):
    """Answers every request as BigQuery does when it refuses one: status and error reason."""

    status = 403
    reason = "accessDenied"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {
                "error": {
                    "code": self.status,
                    "message": f"refused: {self.reason}",
                    "errors": [{"reason": self.reason, "message": f"refused: {self.reason}"}],
                    "status": "PERMISSION_DENIED",
                }
            }
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_bigquery() -> Iterator[tuple[BigQueryWarehouse, type[_BigQueryRefusing]]]:
    handler = type("Handler", (_BigQueryRefusing,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = bigquery.Client(
        project="jupiter-test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{server.server_address[1]}"),
    )
    try:
        yield BigQueryWarehouse(client), handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("status", "reason", "expected", "alerts"),
    [
        (403, "accessDenied", TransientError, True),  # the function's service account lacks a grant
        (401, "authError", TransientError, True),  # credentials refused (here: cannot be refreshed)
        (404, "notFound", TransientError, True),
        (403, "quotaExceeded", TransientError, False),  # a quota: transient, not a deployment error
        (400, "invalid", ValueError, False),  # the request itself: never retryable
    ],
)
def test_the_real_client_s_refusals_are_classified_by_status_and_reason(
    refusing_bigquery: tuple[BigQueryWarehouse, type[_BigQueryRefusing]],
    caplog: pytest.LogCaptureFixture,
    status: int,
    reason: str,
    expected: type[Exception],
    alerts: bool,
) -> None:
    caplog.set_level(logging.INFO)
    warehouse, handler = refusing_bigquery
    handler.status, handler.reason = status, reason
    with pytest.raises(expected, match=None if status == 401 else str(status)):
        warehouse.insert_rows("ops.all_user_events", [{"event_id": "a"}], ["a"])
    assert any(r.levelno >= logging.ERROR for r in caplog.records) == alerts


# --- a refused dead-letter row (finding 7) --------------------------------------------------------------

# BigQuery refuses a streaming insert request over 10 MB; the emulator has no such limit, so a proxy in
# front of it answers as BigQuery does. Scaled down to 1 MB to keep the test light.
REQUEST_LIMIT = 1_000_000


class _SizeLimitingProxy(BaseHTTPRequestHandler):
    emulator = ""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if len(body) > REQUEST_LIMIT:
            message = f"Request payload size exceeds the limit: {REQUEST_LIMIT} bytes."
            error = {
                "code": 400,
                "message": message,
                "errors": [{"reason": "badRequest", "message": message}],
            }
            self._answer(400, json.dumps({"error": error}).encode(), "application/json")
            return
        upstream = requests.post(
            self.emulator + self.path,
            data=body,
            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
            timeout=30,
        )
        self._answer(upstream.status_code, upstream.content, upstream.headers.get("Content-Type", ""))

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_message_too_large_for_a_dead_letter_row_leaves_a_minimal_dead_letter_with_its_reason(
    settings: Settings,
) -> None:
    host = settings.bigquery_emulator_host
    assert host
    emulator = host if host.startswith("http") else f"http://{host}"
    handler = type("Proxy", (_SizeLimitingProxy,), {"emulator": emulator})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        client = bigquery.Client(
            project=settings.project,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options=ClientOptions(api_endpoint=f"http://127.0.0.1:{proxy.server_address[1]}"),
        )
        loader = Loader(LOADER_SETTINGS, BigQueryWarehouse(client), SystemClock())
        user = f"user-{uuid.uuid4().hex}"
        huge = message([{**event(user), "note": "n" * REQUEST_LIMIT}])  # valid, but over the limit

        outcome = loader.handle(huge)
    finally:
        proxy.shutdown()
        proxy.server_close()

    assert outcome.status == "dead_lettered" and outcome.error_type == "rejected_by_bigquery"
    [row] = query(
        settings,
        "SELECT dead_letter_id, error_type, error_message, payload, attributes "
        f"FROM `{DEAD_LETTER_TABLE}` WHERE pubsub_message_id = @id",
        id=huge.message_id,
    )
    assert row["error_type"] == "rejected_by_bigquery"
    assert "Request payload size exceeds the limit" in row["error_message"]
    assert "full dead-letter row refused" in row["error_message"]
    payload = base64.b64decode(row["payload"])
    assert 0 < len(payload) < len(huge.data) and huge.data.startswith(payload)
    assert json.loads(row["attributes"])["sns_message_id"] == huge.attributes["sns_message_id"]
    assert query(settings, "SELECT COUNT(*) AS n FROM `ops.all_user_events` WHERE user_id = @u", u=user) == [
        {"n": 0}
    ]
