"""The load drill's publisher (``make load`` starts it): Locust users publishing events to the local SNS.

Each user publishes ``LOAD_RATE_PER_USER`` messages/s (Locust's ``constant_throughput``) in SNS
PublishBatch calls of ``LOAD_BATCH`` messages, through boto3 to moto's SNS, as a producer service
publishes to the real topic; SNS still delivers every message to the bridge on its own. Batches keep
the publisher's and moto's per-request CPU off the 2 CPUs the whole pipeline shares here.

Every message SNS accepted is written to ``LOAD_PUBLISHED_FILE`` when the run stops, one JSON line
``{"id": <SNS MessageId>, "sent_ms": <epoch ms>}``, for ``bench/load.py`` to reconcile. The event's
``timestamp`` is its send time too, so its row in BigQuery carries it beside ``loaded_at``.
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
BATCH = int(os.environ["LOAD_BATCH"])  # messages per PublishBatch call, 1..10 as SNS allows
BATCHES_PER_USER_PER_SECOND = float(os.environ["LOAD_RATE_PER_USER"]) / BATCH

_published: list[tuple[str, int]] = []
_sequence = itertools.count()


class SnsPublisher(User):
    wait_time = constant_throughput(BATCHES_PER_USER_PER_SECOND)

    def on_start(self) -> None:
        # One client per user: boto3 clients are cheap to share but their creation is not thread-safe.
        self.sns: Any = boto3.session.Session().client(
            "sns",
            endpoint_url=os.environ["AWS_ENDPOINT_URL_SNS"],
            region_name=os.environ["AWS_DEFAULT_REGION"],
        )

    @task
    def publish(self) -> None:
        sent_ms = time.time_ns() // 1_000_000
        entries = []
        for _ in range(BATCH):
            n = next(_sequence)
            event = {
                "userId": f"load-user-{n % 1000}",
                "eventType": RUN_ID,
                "timestamp": sent_ms,
                "hash": f"{n:x}",
            }
            entries.append({"Id": str(n), "Message": json.dumps(event)})
        started = time.perf_counter()
        error: Exception | None = None
        try:
            reply = self.sns.publish_batch(TopicArn=TOPIC_ARN, PublishBatchRequestEntries=entries)
            if reply.get("Failed"):
                error = RuntimeError(f"{len(reply['Failed'])} entries failed: {reply['Failed'][0]}")
        except Exception as exc:
            error = exc
        events.request.fire(
            request_type="SNS",
            name=f"PublishBatch of {BATCH}",
            response_time=(time.perf_counter() - started) * 1000,
            response_length=0,
            exception=error,
            context={},
        )
        if error is None:
            _published.extend((entry["MessageId"], sent_ms) for entry in reply["Successful"])


@events.test_stop.add_listener
def write_published(**_: Any) -> None:
    with open(PUBLISHED_FILE, "w", encoding="utf-8") as out:
        for message_id, sent_ms in _published:
            out.write(json.dumps({"id": message_id, "sent_ms": sent_ms}) + "\n")
