"""Push delivery: worker threads POST each message of a push subscription as the standard envelope.

102/200/201/202/204 ack; any other status, a connection error or a timeout (the ack deadline, as in
Pub/Sub: a 9-minute sync is not redelivered while it runs) nack, and the message is retried with the
backoff of :mod:`.leases`. No authentication header is sent.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any

import requests

from jupiter_data.local.pubsub_emulator.broker import Broker, Pending, SubState
from jupiter_data.local.pubsub_emulator.leases import retry_locked

log = logging.getLogger(__name__)

_ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
_CONNECT_TIMEOUT = 2.0


class PushDelivery:
    """Keeps ``workers`` threads per push subscription, each with one delivery in flight."""

    def __init__(self, broker: Broker, workers: int) -> None:
        self.broker = broker
        self.workers = workers

    def sync_workers_locked(self, sub: SubState) -> None:
        """Start the missing workers of a push subscription (a new one, or one that became push)."""
        if sub.is_push and not self.broker.stopping:
            for _ in range(self.workers - sub.push_workers):
                sub.push_workers += 1
                self.broker.spawn(self._worker, f"pubsub-emulator-push-{sub.pb.name}", sub)
        sub.cond.notify_all()  # workers of a subscription that became pull notice and exit

    def _worker(self, sub: SubState) -> None:
        broker = self.broker
        session = requests.Session()
        session.trust_env = False  # endpoints are local; a proxy from the environment must not intercept
        try:
            while True:
                with broker.lock:
                    while not sub.available and sub.is_push and not (sub.deleted or broker.stopping):
                        sub.cond.wait()
                    if not sub.is_push or sub.deleted or broker.stopping:
                        sub.push_workers -= 1
                        return
                    pending = sub.available.popleft()
                    pending.attempts += 1
                    sub.pushing.add(pending)
                    url = sub.pb.push_config.push_endpoint
                    timeout = float(sub.pb.ack_deadline_seconds)  # as Pub/Sub: up to 600 s
                    body = _envelope(sub, pending)
                delivered = _post(session, url, body, timeout)
                if not delivered:  # which message and attempt: tests wait on this, operators read it
                    log.debug(
                        "push of message %s failed (attempt %d)", pending.message.message_id, pending.attempts
                    )
                with broker.lock:
                    sub.pushing.discard(pending)
                    if not delivered:
                        retry_locked(broker, sub, pending, time.monotonic())
        finally:
            session.close()


def _envelope(sub: SubState, pending: Pending) -> bytes:
    """The push request body, which functions-framework turns into a messagePublished CloudEvent."""
    message = pending.message
    published = message.publish_time.ToJsonString()
    payload: dict[str, Any] = {
        "data": base64.b64encode(message.data).decode("ascii"),
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": published,
        "publish_time": published,
    }
    if message.ordering_key:
        payload["orderingKey"] = message.ordering_key
    envelope: dict[str, Any] = {"message": payload, "subscription": sub.pb.name}
    if sub.has_dead_letter:
        envelope["deliveryAttempt"] = pending.attempts
    return json.dumps(envelope).encode()


def _post(session: requests.Session, url: str, body: bytes, timeout: float) -> bool:
    try:
        response = session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=(_CONNECT_TIMEOUT, timeout),
        )
    except Exception as exc:  # connection refused, timeout, bad URL: all mean "retry later"
        log.debug("push to %s failed: %s", url, exc)
        return False
    response.close()
    return response.status_code in _ACK_STATUSES
