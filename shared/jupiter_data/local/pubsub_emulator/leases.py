"""Leases, ack deadlines, redelivery with backoff and dead-lettering (the caller holds the lock).

A pulled message is leased under an ack id until its deadline; an ack ends the lease, a nack
(deadline 0), an expired lease or a failed push count as a failed delivery: the message is
redelivered after the subscription's backoff, or dead-lettered once the dead-letter policy's
``max_delivery_attempts`` is reached.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any

from jupiter_data.local.pubsub_emulator.broker import (
    Broker,
    Lease,
    Pending,
    PubsubMessage,
    Stream,
    SubState,
    TopicState,
    seconds,
)

log = logging.getLogger(__name__)

PUSH_MIN_BACKOFF = 0.1  # seconds; used for push subscriptions without a retry_policy
PUSH_MAX_BACKOFF = 10.0
RETRY_POLICY_MIN_BACKOFF = 10.0  # real defaults for a retry_policy whose fields are unset
RETRY_POLICY_MAX_BACKOFF = 600.0
BATCH_BYTES = 4 * 1024 * 1024  # at most this much message data per pull response


def lease_locked(
    broker: Broker, sub: SubState, out: Any, limit: int, stream: Stream | None, deadline_s: int
) -> None:
    """Move available messages into ``out`` (received messages of a response), each under a lease."""
    deadline = time.monotonic() + deadline_s
    expire = functools.partial(expire_locked, broker, sub)
    size = 0
    while sub.available and len(out) < limit and size < BATCH_BYTES and (stream is None or stream.has_room()):
        pending = sub.available.popleft()
        pending.attempts += 1
        ack_id = str(next(broker.seq))
        sub.leases[ack_id] = Lease(pending, deadline, stream)
        if stream is not None:
            stream.outstanding += 1
            stream.outstanding_bytes += len(pending.message.data)
        size += len(pending.message.data)
        received = out.add(ack_id=ack_id)
        received.message.CopyFrom(pending.message)
        if sub.has_dead_letter:
            received.delivery_attempt = pending.attempts
        broker.schedule_locked(deadline, functools.partial(expire, ack_id))


def _drop_lease_locked(sub: SubState, ack_id: str) -> Lease | None:
    lease = sub.leases.pop(ack_id, None)
    if lease is not None and lease.stream is not None:
        lease.stream.outstanding -= 1
        lease.stream.outstanding_bytes -= len(lease.pending.message.data)
        sub.cond.notify_all()  # the stream may have room again
    return lease


def ack_locked(sub: SubState, ack_ids: Any) -> None:
    for ack_id in ack_ids:  # unknown or stale ack ids are ignored, as on the real service
        _drop_lease_locked(sub, ack_id)


def modack_locked(broker: Broker, sub: SubState, ack_id: str, deadline_s: int, now: float) -> None:
    """Extend a lease to ``deadline_s`` from now, or end it as a failed delivery when that is 0."""
    if deadline_s == 0:
        lease = _drop_lease_locked(sub, ack_id)
        if lease is not None:
            retry_locked(broker, sub, lease.pending, now)
    elif (lease := sub.leases.get(ack_id)) is not None:
        lease.deadline = now + deadline_s
        broker.schedule_locked(lease.deadline, functools.partial(expire_locked, broker, sub, ack_id))


def expire_locked(broker: Broker, sub: SubState, ack_id: str, now: float) -> None:
    lease = sub.leases.get(ack_id)
    if lease is None or lease.deadline > now or sub.deleted:
        return  # acked, or extended (a later timer owns it)
    _drop_lease_locked(sub, ack_id)
    retry_locked(broker, sub, lease.pending, now)


def retry_locked(
    broker: Broker, sub: SubState, pending: Pending, now: float, *, backoff: bool = True
) -> None:
    """A delivery failed (nack, expiry, push error): dead-letter it or redeliver after a backoff."""
    if sub.deleted:
        return
    policy = sub.pb.dead_letter_policy
    if sub.has_dead_letter and pending.attempts >= policy.max_delivery_attempts:
        topic = broker.topics.get(policy.dead_letter_topic)
        if topic is not None:
            _dead_letter_locked(broker, sub, topic, pending)
            return
        log.warning("dead-letter topic %s of %s does not exist", policy.dead_letter_topic, sub.pb.name)
    delay = _backoff(sub, pending.attempts) if backoff else 0.0
    if delay <= 0:
        sub.available.appendleft(pending)
        sub.cond.notify_all()
    else:
        sub.delayed.add(pending)
        broker.schedule_locked(now + delay, functools.partial(_release_locked, sub, pending))


def _release_locked(sub: SubState, pending: Pending, now: float) -> None:
    sub.delayed.discard(pending)
    if not sub.deleted:
        sub.available.appendleft(pending)
        sub.cond.notify_all()


def _backoff(sub: SubState, attempts: int) -> float:
    if sub.pb.HasField("retry_policy"):
        retry = sub.pb.retry_policy
        has = retry.HasField
        low = seconds(retry.minimum_backoff) if has("minimum_backoff") else RETRY_POLICY_MIN_BACKOFF
        high = seconds(retry.maximum_backoff) if has("maximum_backoff") else RETRY_POLICY_MAX_BACKOFF
    elif sub.is_push:
        low, high = PUSH_MIN_BACKOFF, PUSH_MAX_BACKOFF
    else:
        return 0.0  # real pull subscriptions without a retry policy redeliver at once
    jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreads retries, not a secret
    return float(min(high, low * 2 ** max(attempts - 1, 0) * jitter))


def _dead_letter_locked(broker: Broker, sub: SubState, topic: TopicState, pending: Pending) -> None:
    message = PubsubMessage()
    message.data = pending.message.data
    message.ordering_key = pending.message.ordering_key
    message.attributes.update(pending.message.attributes)
    project, name = sub.pb.name.split("/")[1::2]
    message.attributes.update(
        {
            "CloudPubSubDeadLetterSourceDeliveryCount": str(pending.attempts),
            "CloudPubSubDeadLetterSourceSubscription": name,
            "CloudPubSubDeadLetterSourceSubscriptionProject": project,
            "CloudPubSubDeadLetterSourceTopicPublishTime": pending.message.publish_time.ToJsonString(),
        }
    )
    broker.publish_locked(topic, [message])
