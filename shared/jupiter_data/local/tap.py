"""A temporary pull subscription that collects what arrives on a topic. Dev and tests only."""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Any

from jupiter_data.adapters.clients import subscriber_client
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
