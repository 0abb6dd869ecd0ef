"""SNS (moto) → sns_to_pubsub → Pub/Sub push → pubsub_to_bigquery → BigQuery, on the local platform.

The same path under faults: ``test_fault_drills.py``."""

from __future__ import annotations

import uuid

from jupiter_data.local.stack import SNS_TOPIC_ARN, LocalStack
from tests.e2e.traffic import POISON, assert_exactly_once, publish


def test_n_published_to_sns_are_n_rows_in_the_view_and_poison_is_dead_lettered(platform: LocalStack) -> None:
    run = f"e2e-{uuid.uuid4().hex[:8]}"
    valid = publish(platform, run, 200)
    sns = platform.sns_client()
    poison = {sns.publish(TopicArn=SNS_TOPIC_ARN, Message=body)["MessageId"]: why for body, why in POISON}
    assert_exactly_once(platform, run, valid, poison, timeout=180)  # returns once settled
