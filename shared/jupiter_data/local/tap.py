"""Pulling what arrives on a topic: a temporary tap, or a dead-letter topic's hold subscription.
Dev and tests only."""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Any

from jupiter_data.adapters.clients import subscriber_client
from jupiter_data.resources import load_resources
from jupiter_data.settings import Settings


class TopicTap:
    """Subscribes on enter (so it sees only what is published afterwards), deletes on exit."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._subscriber = subscriber_client(settings)
        self.topic = self._subscriber.topic_path(settings.project, topic)
        self.subscription = self._subscriber.subscription_path(
            settings.project, f"tap-{uuid.uuid4().hex[:12]}"
        )

    def __enter__(self) -> TopicTap:
        self._subscriber.create_subscription(request={"name": self.subscription, "topic": self.topic})
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._subscriber.delete_subscription(request={"subscription": self.subscription})

    def collect(self, count: int, timeout: float = 30.0) -> list[Any]:
        """Pull and ack until ``count`` messages arrived or ``timeout`` passed; returns the messages."""
        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < count and time.monotonic() < deadline:
            response = self._subscriber.pull(
                request={"subscription": self.subscription, "max_messages": min(1000, count - len(received))},
                timeout=max(1.0, min(10.0, deadline - time.monotonic())),
            )
            if response.received_messages:
                self._subscriber.acknowledge(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    }
                )
            received.extend(m.message for m in response.received_messages)
        return received


def drain_dead_letters(settings: Settings, topic: str) -> list[Any]:
    """Pull and acknowledge (up to 1,000) what Pub/Sub gave up pushing for ``topic``: the messages held
    by its dead-letter topic's hold subscription (resources.json)."""
    dead_letter_topic = load_resources().topics[topic]["dead_letter_topic"]
    hold = load_resources().topics[dead_letter_topic]["hold_subscription"]
    subscriber = subscriber_client(settings)
    path = subscriber.subscription_path(settings.project, hold)
    response = subscriber.pull(request={"subscription": path, "max_messages": 1000}, timeout=10)
    if response.received_messages:
        subscriber.acknowledge(
            request={"subscription": path, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
    return [m.message for m in response.received_messages]
