"""The emulator's process side: the gRPC server, its handler table, and start/stop."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import grpc
from google.pubsub_v1 import types

from jupiter_data.local.pubsub_emulator import persistence
from jupiter_data.local.pubsub_emulator.admin import AdminRpcs
from jupiter_data.local.pubsub_emulator.broker import Broker, abort
from jupiter_data.local.pubsub_emulator.messages import MessageRpcs
from jupiter_data.local.pubsub_emulator.push import PushDelivery

log = logging.getLogger(__name__)

_UNIMPLEMENTED = {
    "Publisher": ("ListTopicSnapshots", "DetachSubscription"),
    "Subscriber": (
        "GetSnapshot",
        "ListSnapshots",
        "CreateSnapshot",
        "UpdateSnapshot",
        "DeleteSnapshot",
        "Seek",
    ),
}


class PubSubEmulator:
    """In-memory Pub/Sub over gRPC; ``start()`` binds, ``stop()`` shuts everything down.

    ``port=0`` picks a free port (``start()`` returns it, ``address`` gives ``host:port``).
    ``max_workers`` sizes the gRPC thread pool: each open StreamingPull holds one thread for its
    lifetime, so it bounds concurrent subscribers. ``push_workers`` is the number of deliveries in
    flight per push subscription. With ``data_dir``, ``start()`` loads the state that the last
    ``stop()`` saved there (see :mod:`.persistence`), and ``stop()`` saves it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_workers: int = 32,
        push_workers: int = 16,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._max_workers = max_workers
        self._broker = Broker()
        self._push = PushDelivery(self._broker, push_workers)
        self._server: Any = None

    @property
    def address(self) -> str:
        """``host:port`` to put in PUBSUB_EMULATOR_HOST (the bound port once started)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> int:
        broker = self._broker
        if self._server is not None or broker.stopping:
            raise RuntimeError("PubSubEmulator can be started only once")
        if self.data_dir is not None:
            persistence.load(broker, self.data_dir)  # before binding: no client sees a half-loaded state
        executor = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="pubsub-emulator")
        server = grpc.server(
            executor,
            handlers=self._handlers(),
            options=[
                ("grpc.so_reuseport", 0),  # otherwise a second emulator could share a taken port
                ("grpc.max_receive_message_length", 32 * 1024 * 1024),
                ("grpc.max_send_message_length", 32 * 1024 * 1024),
            ],
        )
        self.port = server.add_insecure_port(self.address)
        server.start()
        with broker.lock:
            self._server = server
            broker.spawn(broker.tick, "pubsub-emulator-timer")
            for sub in broker.subs.values():  # restored push subscriptions resume pushing
                self._push.sync_workers_locked(sub)
        log.info("Pub/Sub emulator listening on %s", self.address)
        return int(self.port)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting RPCs, end open streams and background threads, save the state; idempotent.

        Deliveries still unanswered after ``grace`` (a pull nobody acked, a push whose POST has not
        returned) are saved as in flight: redelivered after a restart, never lost.
        """
        broker = self._broker
        with broker.lock:
            server, self._server = self._server, None
            broker.stopping = True
            broker.wake_all_locked()
            threads = list(broker.threads)
        if server is None:
            return
        server.stop(grace).wait()
        give_up = time.monotonic() + grace
        for thread in threads:  # push workers may sit in an HTTP call; they are daemons anyway
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
        if self.data_dir is not None:
            persistence.save(broker, self.data_dir)
        log.info("Pub/Sub emulator on %s stopped", self.address)

    def __enter__(self) -> PubSubEmulator:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def unacked_count(self, subscription: str) -> int:
        """Messages of a subscription not yet acknowledged (queued, leased, pushing or backing off)."""
        return self._broker.unacked_count(subscription)

    def _handlers(self) -> list[Any]:
        admin, messages = AdminRpcs(self._broker, self._push), MessageRpcs(self._broker)

        def unary(fn: Callable[[Any, Any], Any], request_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.pb().FromString, response_serializer=_serialize
            )

        def unimplemented(request: bytes, context: grpc.ServicerContext) -> NoReturn:
            abort(context, grpc.StatusCode.UNIMPLEMENTED, "not implemented by the jupiter-data emulator")

        stub = grpc.unary_unary_rpc_method_handler(unimplemented)
        publisher = {
            "CreateTopic": unary(admin.create_topic, types.Topic),
            "GetTopic": unary(admin.get_topic, types.GetTopicRequest),
            "UpdateTopic": unary(admin.update_topic, types.UpdateTopicRequest),
            "ListTopics": unary(admin.list_topics, types.ListTopicsRequest),
            "ListTopicSubscriptions": unary(
                admin.list_topic_subscriptions, types.ListTopicSubscriptionsRequest
            ),
            "DeleteTopic": unary(admin.delete_topic, types.DeleteTopicRequest),
            "Publish": unary(messages.publish, types.PublishRequest),
        }
        subscriber = {
            "CreateSubscription": unary(admin.create_subscription, types.Subscription),
            "GetSubscription": unary(admin.get_subscription, types.GetSubscriptionRequest),
            "UpdateSubscription": unary(admin.update_subscription, types.UpdateSubscriptionRequest),
            "ListSubscriptions": unary(admin.list_subscriptions, types.ListSubscriptionsRequest),
            "DeleteSubscription": unary(admin.delete_subscription, types.DeleteSubscriptionRequest),
            "ModifyPushConfig": unary(admin.modify_push_config, types.ModifyPushConfigRequest),
            "Pull": unary(messages.pull, types.PullRequest),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                messages.streaming_pull,
                request_deserializer=types.StreamingPullRequest.pb().FromString,
                response_serializer=_serialize,
            ),
            "Acknowledge": unary(messages.acknowledge, types.AcknowledgeRequest),
            "ModifyAckDeadline": unary(messages.modify_ack_deadline, types.ModifyAckDeadlineRequest),
        }
        services = {"Publisher": publisher, "Subscriber": subscriber}
        for service, names in _UNIMPLEMENTED.items():  # answer at once rather than leave clients waiting
            services[service].update(dict.fromkeys(names, stub))
        return [grpc.method_handlers_generic_handler(f"google.pubsub.v1.{k}", v) for k, v in services.items()]


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())
