"""Pub/Sub implementation of the ``Publisher`` port."""

from __future__ import annotations

from collections.abc import Mapping

import google.cloud.pubsub_v1 as pubsub_v1  # untyped: plain import keeps mypy quiet
from google.api_core import exceptions as gexc

from jupiter_data.ports import TransientError

# Callers answer someone who is waiting (SNS gives up after 15 s), so give up well before they do.
PUBLISH_TIMEOUT_SECONDS = 10.0


class PubSubPublisher:
    def __init__(
        self, client: pubsub_v1.PublisherClient, project: str, timeout: float = PUBLISH_TIMEOUT_SECONDS
    ) -> None:
        self._client = client
        self._project = project
        self._timeout = timeout

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        future = self._client.publish(
            self._client.topic_path(self._project, topic), data, **(attributes or {})
        )
        try:
            return str(future.result(timeout=self._timeout))
        except (gexc.GoogleAPICallError, TimeoutError) as exc:
            # Not-found topics are a deploy error, but the caller's answer is the same: not safely
            # published, so let the sender retry.
            raise TransientError(f"publish to {topic} failed: {exc}") from exc
