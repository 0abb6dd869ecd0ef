"""``make demo``: start a private copy of the local stack, drive sample traffic through it, check the
outcome end to end and print a summary. Exit status 0 only if every check passed. Dev only.

Each check exercises one platform component through the same adapter or client the product uses.
Function checks join this list as the functions are built.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from google.cloud import bigquery

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client, publisher_client, storage_client
from jupiter_data.adapters.gcs import GcsObjectStore
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.local.amplitude_data import ExportSpec
from jupiter_data.local.stack import AMPLITUDE_EVENTS_PER_HOUR, SNS_TOPIC_ARN, LocalStack, StackPorts
from jupiter_data.local.tap import TopicTap
from jupiter_data.ports import PreconditionFailed
from jupiter_data.resources import load_resources

Check = Callable[[LocalStack], str]


def check_pubsub(stack: LocalStack) -> str:
    settings = stack.settings()
    publisher = PubSubPublisher(publisher_client(settings), settings.project)
    with TopicTap(settings, "sns-events") as tap:
        sent = {publisher.publish("sns-events", json.dumps({"n": n}).encode()) for n in range(10)}
        received = {message.message_id for message in tap.collect(len(sent), timeout=10)}
    if received != sent:
        raise AssertionError(f"published {len(sent)} to sns-events, pulled {len(received & sent)}")
    return f"published and pulled {len(sent)} messages on sns-events"


def check_storage(stack: LocalStack) -> str:
    settings = stack.settings()
    store = GcsObjectStore(storage_client(settings))
    bucket = load_resources().bucket_name(settings.project, "amplitude-raw")
    name = f"demo/{uuid.uuid4().hex}.txt"
    store.upload(bucket, name, b"hello jupiter", content_type="text/plain", if_generation_match=0)
    with store.open_read(bucket, name) as handle:
        if handle.read() != b"hello jupiter":
            raise AssertionError("object read back differs from what was written")
    try:
        store.upload(bucket, name, b"overwrite", if_generation_match=0)
    except PreconditionFailed:
        return f"wrote, read back and refused to overwrite gs://{bucket}/{name}"
    raise AssertionError("create-only upload overwrote an existing object")


def check_bigquery(stack: LocalStack) -> str:
    settings = stack.settings()
    client = bigquery_client(settings)
    table = f"ops.demo_{uuid.uuid4().hex[:8]}"
    client.create_table(
        bigquery.Table(
            f"{settings.project}.{table}",
            schema=[bigquery.SchemaField("id", "STRING"), bigquery.SchemaField("n", "INT64")],
        )
    )
    warehouse = BigQueryWarehouse(client)
    warehouse.insert_rows(table, [{"id": f"r{n}", "n": n} for n in range(5)], [f"r{n}" for n in range(5)])
    sql = f"SELECT COUNT(*) AS c FROM `{table}` WHERE n >= @low"  # noqa: S608 - generated table name
    rows = list(warehouse.query(sql, {"low": 2}))
    client.delete_table(f"{settings.project}.{table}")
    if rows != [{"c": 3}]:
        raise AssertionError(f"expected 3 rows with n >= 2, got {rows}")
    return f"inserted 5 rows into {table} and counted 3 with a parameterised query"


def check_sns_to_pubsub(stack: LocalStack) -> str:
    """moto signs and POSTs each publish to the bridge, which verifies it and republishes it."""
    sns = stack.sns_client()
    events = [
        {"userId": f"demo-{n}", "eventType": "login", "timestamp": 1_700_000_000_000 + n} for n in range(20)
    ]
    with TopicTap(stack.settings(), "sns-events") as tap:
        sent = {
            sns.publish(TopicArn=SNS_TOPIC_ARN, Message=json.dumps(event))["MessageId"]: json.dumps(event)
            for event in events
        }
        received = {
            m.attributes["sns_message_id"]: m.data.decode() for m in tap.collect(len(sent), timeout=20)
        }
    if received != sent:
        raise AssertionError(
            f"published {len(sent)} to SNS, {len(received.keys() & sent.keys())} reached Pub/Sub"
        )
    return f"{len(sent)} SNS messages verified by sns_to_pubsub and republished byte for byte to sns-events"


def check_sns_to_bigquery(stack: LocalStack) -> str:
    """The whole SNS path: moto → bridge → Pub/Sub push → loader → the dedup view; poison dead-lettered."""
    sns, run = stack.sns_client(), f"demo-{uuid.uuid4().hex[:8]}"
    for n in range(50):
        event = {"userId": f"user-{n % 7}", "eventType": run, "timestamp": 1_700_000_000_000 + n, "hash": "h"}
        sns.publish(TopicArn=SNS_TOPIC_ARN, Message=json.dumps(event))
    poison_id = sns.publish(TopicArn=SNS_TOPIC_ARN, Message=json.dumps({"eventType": run}))["MessageId"]
    warehouse = BigQueryWarehouse(bigquery_client(stack.settings()))
    rows_sql = "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE event_type = @run"
    dead_sql = (
        "SELECT error_type, error_message FROM `ops.all_user_events_dead_letter` "
        "WHERE JSON_VALUE(attributes, '$.sns_message_id') = @id"
    )
    deadline, rows = time.monotonic() + 30, 0
    dead: list[dict[str, Any]] = []
    while (rows < 50 or not dead) and time.monotonic() < deadline:
        time.sleep(0.5)
        (count,) = warehouse.query(rows_sql, {"run": run})
        rows, dead = count["n"], list(warehouse.query(dead_sql, {"id": poison_id}))
    if rows != 50 or len(dead) != 1:
        raise AssertionError(
            f"50 events and 1 poison published; {rows} rows in the view, {len(dead)} dead letters"
        )
    return (
        f"50 events in ops.user_events; the poison one in the dead-letter table as "
        f"{dead[0]['error_type']}: {dead[0]['error_message']}"
    )


def check_amplitude_sync(stack: LocalStack) -> str:
    """daily-runs → sync_amplitude → local Export API → GCS → both Amplitude tables, reconciled."""
    day = date(2026, 11, 20)
    first_hour = datetime(day.year, day.month, day.day, tzinfo=UTC)
    expected = ExportSpec(events_per_hour=AMPLITUDE_EVENTS_PER_HOUR).expected(
        first_hour, first_hour + timedelta(hours=23)
    )
    stack.trigger_amplitude_sync({"day": day.isoformat(), "force": True})
    warehouse = BigQueryWarehouse(bigquery_client(stack.settings()))
    ledger = (
        "SELECT status, events_rows, properties_rows, windows FROM `ops.sync_runs` "
        "WHERE export_day = @day AND started_at >= @since ORDER BY finished_at DESC LIMIT 1"
    )
    since, deadline = datetime.now(UTC) - timedelta(seconds=5), time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while not runs and time.monotonic() < deadline:
        time.sleep(0.5)
        runs = list(warehouse.query(ledger, {"day": day, "since": since}))
    if not runs or runs[0]["status"] != "succeeded" or runs[0]["events_rows"] != expected.events:
        raise AssertionError(
            f"expected a succeeded run of {expected.events} events for {day}, ledger says {runs}"
        )
    (loaded,) = warehouse.query(
        "SELECT COUNT(*) AS n FROM `amplitude.events` WHERE export_day = @day", {"day": day}
    )
    if loaded["n"] != expected.events:
        raise AssertionError(
            f"amplitude.events holds {loaded['n']} rows for {day}, expected {expected.events}"
        )
    return (
        f"{day}: {expected.events} events ({expected.late} late) and "
        f"{runs[0]['properties_rows']} property rows loaded and reconciled"
    )


def check_data_api(stack: LocalStack) -> str:
    """Every fetch_from_bigquery endpoint with the development key; one figure checked against SQL."""
    url = stack.function_urls()["fetch_from_bigquery"]
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.fetch_api_key}"
    days = {"start": "2026-11-01", "end": "2026-11-30"}
    calls = [
        ("GET", "/openapi.json", {}, None),
        ("GET", "/v1/events", {**days, "limit": "5"}, None),
        ("GET", "/v1/events", {**days, "limit": "5", "format": "csv"}, None),
        ("GET", "/v1/metrics/event-counts", days, None),
        ("GET", "/v1/metrics/active-users", {"start": "2026-11-18", "end": "2026-11-24"}, None),
    ]
    answers = {}
    for method, path, params, body in calls:
        reply = session.request(method, url + path, params=params, json=body, timeout=30)
        if reply.status_code != 200:
            raise AssertionError(f"{method} {path} answered {reply.status_code}: {reply.text[:300]}")
        answers[(path, params.get("format"))] = reply
    first = answers[("/v1/events", None)].json()["data"][0]
    timeline = session.get(f"{url}/v1/users/{first['user_id']}/events", timeout=30)
    if timeline.status_code != 200 or not timeline.json()["data"]:
        raise AssertionError(f"the timeline of {first['user_id']} answered {timeline.status_code}")
    counts = answers[("/v1/metrics/event-counts", None)].json()["data"]
    types = sorted(
        {row["event_type"] for row in counts if row["source"] == "amplitude" and row["event_type"]}
    )
    legacy = session.post(url, json={"startDate": "2026-11-01", "endDate": "2026-11-30", "eventTypes": types},
                          timeout=30)  # fmt: skip
    if legacy.status_code != 200:
        raise AssertionError(f"POST / answered {legacy.status_code}: {legacy.text[:300]}")
    legacy_total = sum(row["event_count"] for row in legacy.json())
    (direct,) = BigQueryWarehouse(bigquery_client(stack.settings())).query(
        "SELECT COUNT(DISTINCT CONCAT(IFNULL(insert_id, ''), '/', IFNULL(uuid, ''))) AS n "
        "FROM `amplitude.events` WHERE event_time >= @start AND event_time < @end "
        "AND event_type IN UNNEST(@types)",
        {
            "start": datetime(2026, 11, 1, tzinfo=UTC),
            "end": datetime(2026, 12, 1, tzinfo=UTC),
            "types": types,
        },
    )
    if legacy_total != direct["n"]:
        raise AssertionError(f"POST / counted {legacy_total} Amplitude events, BigQuery holds {direct['n']}")
    unauthenticated = requests.get(f"{url}/v1/events", params=days, timeout=30)
    if unauthenticated.status_code != 401:
        raise AssertionError(f"a call without a key answered {unauthenticated.status_code}")
    return (
        f"6 endpoints answered with the development key; POST / counted {legacy_total} Amplitude events "
        f"as BigQuery does; no key: 401"
    )


CHECKS: list[tuple[str, Check]] = [
    ("Pub/Sub emulator", check_pubsub),
    ("Cloud Storage emulator", check_storage),
    ("BigQuery emulator", check_bigquery),
    ("SNS → sns_to_pubsub", check_sns_to_pubsub),
    ("SNS → BigQuery", check_sns_to_bigquery),
    ("Amplitude → BigQuery", check_amplitude_sync),
    ("fetch_from_bigquery API", check_data_api),
]


def run_demo(state_dir: Path | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="jupiter-demo-") as tmp:
        stack = LocalStack(Path(state_dir or tmp), StackPorts.free(), free_function_ports=True)
        print("starting a private local stack on free ports …", flush=True)
        with stack:
            print(f"stack healthy in {stack.startup_seconds:.1f}s; functions: "
                  f"{', '.join(f.name for f in stack.functions) or 'none built yet'}\n")  # fmt: skip
            failures = 0
            for name, check in CHECKS:
                try:
                    outcome, ok = check(stack), True
                except Exception as exc:  # a demo reports every failure, then exits non-zero
                    outcome, ok = f"{type(exc).__name__}: {exc}", False
                failures += not ok
                print(f"  {'PASS' if ok else 'FAIL'}  {name:<24} {outcome}", flush=True)
        print(f"\ndemo summary: {len(CHECKS) - failures} of {len(CHECKS)} checks passed")
        return 1 if failures else 0
