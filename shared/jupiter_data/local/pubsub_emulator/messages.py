"""The RPCs that move messages: Publish, Pull, StreamingPull (with client flow control), Acknowledge
and ModifyAckDeadline (0 = nack). A subscription only sees messages published after it exists.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2
from google.pubsub_v1 import types

from jupiter_data.local.pubsub_emulator.broker import (
    INVALID,
    MAX_ACK_DEADLINE,
    NOT_FOUND,
    Broker,
    Stream,
    SubState,
    abort,
)
from jupiter_data.local.pubsub_emulator.leases import ack_locked, lease_locked, modack_locked

log = logging.getLogger(__name__)

PULL_MAX_WAIT = 5.0  # a Pull with nothing to return long-polls at most this long
_BATCH_MESSAGES = 1000  # at most this many messages per StreamingPull response


class MessageRpcs:
    """Publishing, pulling and acknowledging, on the broker's queues."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.messages:
            abort(context, INVALID, "no messages to publish")
        for message in request.messages:
            if not message.data and not message.attributes:
                abort(context, INVALID, "a message needs data or attributes")
        with self.broker.lock:
            topic = self.broker.topic_locked(request.topic, context)
            ids = self.broker.publish_locked(topic, request.messages)
        return types.PublishResponse.pb()(message_ids=ids)

    def pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.max_messages <= 0:
            abort(context, INVALID, "max_messages must be positive")
        wait = 0.0 if request.return_immediately else PULL_MAX_WAIT
        remaining = context.time_remaining()
        if remaining is not None:  # answer (empty) before the client's deadline rather than fail it
            wait = min(wait, remaining - 0.2)
        give_up = time.monotonic() + wait
        response = types.PullResponse.pb()()
        broker = self.broker
        with broker.lock:
            sub = broker.sub_locked(request.subscription, context)
            while not sub.available and not sub.deleted and not broker.stopping:
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                sub.cond.wait(left)
            if sub.deleted:
                abort(context, NOT_FOUND, f"Subscription does not exist: {sub.pb.name}")
            lease_locked(
                broker,
                sub,
                response.received_messages,
                request.max_messages,
                None,
                sub.pb.ack_deadline_seconds,
            )
        return response

    def streaming_pull(self, requests_in: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        first = next(requests_in, None)
        if first is None:
            return
        if not 1 <= first.stream_ack_deadline_seconds <= MAX_ACK_DEADLINE:
            abort(context, INVALID, "stream_ack_deadline_seconds must be 1..600")
        stream = Stream(
            first.max_outstanding_messages, first.max_outstanding_bytes, first.stream_ack_deadline_seconds
        )
        broker = self.broker
        with broker.lock:
            sub = broker.sub_locked(first.subscription, context)
            self._apply_stream_request_locked(sub, stream, first)
            broker.spawn(self._read_stream, "pubsub-emulator-stream-reader", sub, stream, requests_in)

        def close() -> None:
            with broker.lock:
                stream.closed = True
                sub.cond.notify_all()

        if not context.add_callback(close):  # fires when the client cancels: the wait below wakes up
            close()  # already terminated
        while True:
            with broker.lock:
                while not (stream.closed or sub.deleted or broker.stopping) and not (
                    sub.available and stream.has_room()
                ):
                    sub.cond.wait()
                if sub.deleted:
                    abort(context, NOT_FOUND, f"Subscription does not exist: {sub.pb.name}")
                if stream.closed or broker.stopping:
                    return
                response = types.StreamingPullResponse.pb()()
                lease_locked(
                    broker, sub, response.received_messages, _BATCH_MESSAGES, stream, stream.ack_deadline
                )
            yield response

    def _read_stream(self, sub: SubState, stream: Stream, requests_in: Iterator[Any]) -> None:
        try:
            for request in requests_in:  # acks, modacks and heartbeats (empty requests)
                with self.broker.lock:
                    if stream.closed or sub.deleted:
                        break
                    self._apply_stream_request_locked(sub, stream, request)
        except Exception as exc:  # the client went away; close() below is all that is needed
            log.debug("streaming pull reader ended: %s", exc)
        finally:
            with self.broker.lock:
                stream.closed = True
                sub.cond.notify_all()

    def _apply_stream_request_locked(self, sub: SubState, stream: Stream, request: Any) -> None:
        if request.stream_ack_deadline_seconds:
            stream.ack_deadline = min(max(request.stream_ack_deadline_seconds, 1), MAX_ACK_DEADLINE)
        ack_locked(sub, request.ack_ids)
        for ack_id, seconds in zip(
            request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False
        ):
            deadline = min(max(seconds, 0), MAX_ACK_DEADLINE)
            modack_locked(self.broker, sub, ack_id, deadline, time.monotonic())

    def acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.broker.lock:
            ack_locked(self.broker.sub_locked(request.subscription, context), request.ack_ids)
        return empty_pb2.Empty()

    def modify_ack_deadline(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not 0 <= request.ack_deadline_seconds <= MAX_ACK_DEADLINE:
            abort(context, INVALID, f"ack_deadline_seconds must be 0..{MAX_ACK_DEADLINE}")
        with self.broker.lock:
            sub = self.broker.sub_locked(request.subscription, context)
            now = time.monotonic()
            for ack_id in request.ack_ids:
                modack_locked(self.broker, sub, ack_id, request.ack_deadline_seconds, now)
        return empty_pb2.Empty()
