"""SNS (moto) → sns_to_pubsub → Pub/Sub push → pubsub_to_bigquery → BigQuery, on the local platform."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.local.stack import SNS_TOPIC_ARN, LocalStack

DEAD_LETTERS_OF = (
    "SELECT COUNT(*) AS n FROM `ops.all_user_events_dead_letter` "
    "WHERE JSON_VALUE(attributes, '$.sns_message_id') IN UNNEST(@ids)"
)


def count(platform: LocalStack, sql: str, **params: Any) -> int:
    (row,) = BigQueryWarehouse(bigquery_client(platform.settings())).query(sql, params)
    return int(row["n"])


def wait_for_rows(platform: LocalStack, run: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < deadline:
        seen = count(platform, "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE event_type = @run", run=run)
        if seen >= expected:
            return seen
        time.sleep(0.5)
    return seen


def publish(platform: LocalStack, run: str, n: int, offset: int = 0) -> list[str]:
    sns = platform.sns_client()
    ids = []
    for i in range(offset, offset + n):
        event = {
            "userId": f"user-{i % 17}",
            "eventType": run,
            "timestamp": 1_700_000_000_000 + i,
            "hash": "abc",
        }
        ids.append(sns.publish(TopicArn=SNS_TOPIC_ARN, Message=json.dumps(event))["MessageId"])
    return ids


def test_n_published_to_sns_are_n_rows_in_the_view_and_poison_is_dead_lettered(platform: LocalStack) -> None:
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    ids = publish(platform, run, 200)
    poison = platform.sns_client().publish(TopicArn=SNS_TOPIC_ARN, Message=json.dumps({"eventType": run}))
    assert wait_for_rows(platform, run, 200, timeout=60) == 200
    assert (
        count(
            platform,
            "SELECT COUNT(DISTINCT sns_message_id) AS n FROM `ops.user_events` WHERE event_type = @run",
            run=run,
        )
        == 200
    )
    assert (
        count(
            platform,
            "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE sns_message_id IN UNNEST(@ids)",
            ids=ids,
        )
        == 200
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        dead = count(platform, DEAD_LETTERS_OF, ids=[poison["MessageId"]])
        if dead:
            break
        time.sleep(0.5)
    assert dead == 1


def test_bigquery_down_for_30_seconds_under_load_loses_and_duplicates_nothing(platform: LocalStack) -> None:
    run = f"outage-{uuid.uuid4().hex[:8]}"
    published: list[str] = []
    stop = threading.Event()

    def steady_load() -> None:  # ~20 messages/s for as long as the outage lasts
        batch = 0
        while not stop.is_set():
            published.extend(publish(platform, run, 10, offset=batch * 10))
            batch += 1
            time.sleep(0.5)

    loader = threading.Thread(target=steady_load)
    loader.start()
    try:
        time.sleep(2)
        platform.supervisor.restart_service("bigquery", down_for=30)
    finally:
        stop.set()
        loader.join()
    assert len(published) >= 300
    assert wait_for_rows(platform, run, len(published), timeout=120) == len(published)
    view = "SELECT COUNT(*) AS n FROM `ops.user_events` WHERE sns_message_id IN UNNEST(@ids)"
    assert count(platform, view, ids=published) == len(published), "every message exactly once"
    assert count(platform, DEAD_LETTERS_OF, ids=published) == 0, "valid events are never dead-lettered"
