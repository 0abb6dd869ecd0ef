"""The load drill's publisher (``make load`` starts it): Locust users publishing events to the local SNS.

Each user publishes at ``LOAD_RATE_PER_USER`` messages/s (Locust's ``constant_throughput``), through
boto3 to moto's SNS, exactly as a producer service publishes to the real topic. Every publish that SNS
accepted is written to ``LOAD_PUBLISHED_FILE`` as ``{"id": <SNS MessageId>, "sent_ms": <epoch ms>}``
when the run stops, for ``bench/load.py`` to reconcile. The event's ``timestamp`` is the send time,
so the row in BigQuery carries it (``time_transaction_occurred``) beside its ``loaded_at``.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from typing import Any

import boto3
from locust import User, constant_throughput, events, task

RUN_ID = os.environ["LOAD_RUN_ID"]
TOPIC_ARN = os.environ["LOAD_TOPIC_ARN"]
PUBLISHED_FILE = os.environ["LOAD_PUBLISHED_FILE"]
RATE_PER_USER = float(os.environ["LOAD_RATE_PER_USER"])

_published: list[tuple[str, int]] = []
_sequence = itertools.count()


class SnsPublisher(User):
    wait_time = constant_throughput(RATE_PER_USER)

    def on_start(self) -> None:
        # One client per user: boto3 clients are cheap to share but their creation is not thread-safe.
        self.sns: Any = boto3.session.Session().client(
            "sns",
            endpoint_url=os.environ["AWS_ENDPOINT_URL_SNS"],
            region_name=os.environ["AWS_DEFAULT_REGION"],
        )

    @task
    def publish(self) -> None:
        n = next(_sequence)
        sent_ms = time.time_ns() // 1_000_000
        event = {
            "userId": f"load-user-{n % 1000}",
            "eventType": RUN_ID,
            "timestamp": sent_ms,
            "hash": f"{n:x}",
        }
        started = time.perf_counter()
        error: Exception | None = None
        try:
            message_id = self.sns.publish(TopicArn=TOPIC_ARN, Message=json.dumps(event))["MessageId"]
        except Exception as exc:
            error = exc
        events.request.fire(
            request_type="SNS",
            name="Publish",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
        if error is None:
            _published.append((message_id, sent_ms))


@events.test_stop.add_listener
def write_published(**_: Any) -> None:
    with open(PUBLISHED_FILE, "w", encoding="utf-8") as out:
        for message_id, sent_ms in _published:
            out.write(json.dumps({"id": message_id, "sent_ms": sent_ms}) + "\n")
