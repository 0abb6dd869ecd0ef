"""A small, real Pub/Sub emulator speaking the ``google.pubsub.v1`` gRPC API.

The official client (``google-cloud-pubsub``) talks to it unchanged: set
``PUBSUB_EMULATOR_HOST=127.0.0.1:8085`` before constructing a client. Because clients only see
that variable, the official emulator (``gcloud beta emulators pubsub start``) is a drop-in
replacement wherever it is installed.

Supported:

* Publisher: CreateTopic, GetTopic, UpdateTopic, ListTopics, ListTopicSubscriptions, DeleteTopic,
  Publish (message ids and publish_time assigned). Deleting a topic leaves its subscriptions
  attached to ``_deleted-topic_``, as the real service does.
* Subscriber: CreateSubscription, GetSubscription, UpdateSubscription, ListSubscriptions,
  DeleteSubscription, ModifyPushConfig, Pull, StreamingPull (with client flow control),
  Acknowledge, ModifyAckDeadline (0 = nack, redelivered at once unless a retry policy delays it).
* Ack deadlines and redelivery; a subscription only sees messages published after it exists;
  ``delivery_attempt`` counted per message and subscription, reported when a dead-letter policy
  is set.
* Dead-letter policies. Unlike the real API (5..100), ``max_delivery_attempts`` may be any value
  from 1 to 100 so tests stay quick; 0 means the real default, 5. Ack deadlines may be 1..600 s
  (the real minimum is 10 s) for the same reason.
* Push subscriptions: each message is POSTed as the standard push envelope (which
  functions-framework turns into a ``google.cloud.pubsub.topic.v1.messagePublished`` CloudEvent)
  by a pool of ``push_workers`` threads per subscription. 102/200/201/202/204 acks; anything else,
  a connection error or a timeout (the ack deadline, as in Pub/Sub: a 9-minute sync is not
  redelivered while it runs) nacks. Nacked messages are
  retried with exponential backoff: the subscription's retry_policy when set, otherwise
  0.1 s doubling to 10 s, with +-10 % jitter. No authentication header is sent.

Not supported (the RPC or field is refused with UNIMPLEMENTED rather than silently ignored):
snapshots, Seek, DetachSubscription, ListTopicSnapshots, IAM, filters, BigQuery/Cloud Storage/
Bigtable subscriptions and unwrapped push. Message ordering and exactly-once delivery are
stored but not enforced, and retention is unlimited (nothing expires).

State lives in memory; with ``--data-dir DIR`` (``data_dir=``) it also survives a graceful restart,
as real Pub/Sub is durable:

* ``stop()``, which SIGTERM and SIGINT reach when run as a module, writes ``DIR/state.json``
  atomically (temp file, fsync, rename), and ``start()`` loads it if present (an unreadable file
  is an error, never silently dropped). The file is JSON: topics and subscriptions as their
  protobuf JSON (``json_format``, field names as in the proto: every field they hold, push config,
  ack deadline, retry and dead-letter policies, retention, labels...), every unacknowledged message
  once (data in base64, attributes, id, publish time), and per subscription the ids and delivery
  counts of its ``undelivered`` and ``in_flight`` messages, plus the next message id and ack id so
  neither repeats after a restart.
* Undelivered messages (queued, or nacked and backing off: the rest of the backoff is forgotten)
  come back deliverable. In-flight ones (leased to a puller, or being pushed when ``stop()``'s grace
  ran out, so the outcome is unknown) count as a failed delivery, as an expired lease does: they are
  redelivered at once with their delivery count carried on, or dead-lettered if that was the last
  attempt the dead-letter policy allows. A redelivery can duplicate a message; none is lost. An
  ack that arrives once ``stop()`` has begun may not be recorded: that message is redelivered too.
* Push subscriptions resume pushing once started. Messages keep their ids and publish times.
* Only ``stop()`` saves: a SIGKILL (or a crash) loses whatever changed since the start, and the next
  start loads the previous save again (acked messages come back, later topics are missing).
  The stack's supervisor sends SIGTERM and waits 10 s before SIGKILL; ``stop()`` waits at most
  ``2 * grace`` (2 s) for RPCs and pushes in flight before it saves.

Run in the foreground with ``python -m jupiter_data.local.pubsub_emulator --port 8085
[--data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import heapq
import itertools
import json
import logging
import os
import random
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import grpc
import requests
from google.protobuf import empty_pb2, field_mask_pb2, json_format
from google.pubsub_v1 import types

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # not "__main__" under python -m

DEFAULT_ACK_DEADLINE = 10
MAX_ACK_DEADLINE = 600
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
PUSH_MIN_BACKOFF = 0.1  # seconds; used for push subscriptions without a retry_policy
PUSH_MAX_BACKOFF = 10.0
RETRY_POLICY_MIN_BACKOFF = 10.0  # real defaults for a retry_policy whose fields are unset
RETRY_POLICY_MAX_BACKOFF = 600.0
PULL_MAX_WAIT = 5.0  # a Pull with nothing to return long-polls at most this long
_PUSH_ACK_STATUSES = frozenset({102, 200, 201, 202, 204})
_PUSH_CONNECT_TIMEOUT = 2.0
_BATCH_MESSAGES = 1000
_BATCH_BYTES = 4 * 1024 * 1024
_DELETED_TOPIC = "_deleted-topic_"
STATE_FILE = "state.json"  # in the data directory
_STATE_FORMAT = "jupiter-data pubsub emulator state"
_STATE_VERSION = 1

_PROJECT_RE = re.compile(r"^projects/[^/]+$")
_TOPIC_RE = re.compile(r"^projects/([^/]+)/topics/([A-Za-z][A-Za-z0-9_.~+%-]{2,254})$")
_SUBSCRIPTION_RE = re.compile(r"^projects/([^/]+)/subscriptions/([A-Za-z][A-Za-z0-9_.~+%-]{2,254})$")

_PubsubMessage = types.PubsubMessage.pb()  # raw protobuf: proto-plus wrappers are several times slower
_Topic = types.Topic.pb()
_Subscription = types.Subscription.pb()
_UNSUPPORTED_CONFIGS = ("bigquery_config", "cloud_storage_config", "bigtable_config")
_SUBSCRIPTION_UPDATABLE = frozenset({
    "push_config", "ack_deadline_seconds", "dead_letter_policy", "retry_policy", "labels",
    "expiration_policy", "message_retention_duration", "retain_acked_messages",
    "enable_exactly_once_delivery",
})  # fmt: skip
_TOPIC_UPDATABLE = frozenset({
    "labels", "message_retention_duration", "message_storage_policy", "kms_key_name", "schema_settings",
})  # fmt: skip
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
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_NOT_FOUND = grpc.StatusCode.NOT_FOUND

_Timer = Callable[[float], None]


@dataclass(eq=False)
class _Pending:
    message: Any  # PubsubMessage pb, shared read-only by every subscription it was fanned out to
    attempts: int = 0


@dataclass(eq=False)
class _Stream:
    max_messages: int
    max_bytes: int
    ack_deadline: int
    outstanding: int = 0
    outstanding_bytes: int = 0
    closed: bool = False

    def has_room(self) -> bool:
        # One message always fits, so a message larger than max_bytes still flows.
        if self.outstanding == 0:
            return True
        if self.max_messages and self.outstanding >= self.max_messages:
            return False
        return not (self.max_bytes and self.outstanding_bytes >= self.max_bytes)


@dataclass(eq=False)
class _Lease:
    pending: _Pending
    deadline: float  # time.monotonic()
    stream: _Stream | None


@dataclass(eq=False)
class _TopicState:
    pb: Any
    subscriptions: set[str] = field(default_factory=set)


@dataclass(eq=False)
class _SubState:
    pb: Any
    cond: threading.Condition
    available: deque[_Pending] = field(default_factory=deque)
    leases: dict[str, _Lease] = field(default_factory=dict)
    delayed: set[_Pending] = field(default_factory=set)  # nacked messages waiting out their backoff
    pushing: set[_Pending] = field(default_factory=set)  # messages in flight to the push endpoint
    push_workers: int = 0
    deleted: bool = False

    @property
    def is_push(self) -> bool:
        return bool(self.pb.push_config.push_endpoint)

    @property
    def has_dead_letter(self) -> bool:
        return bool(self.pb.dead_letter_policy.dead_letter_topic)


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _seconds(duration: Any) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def _copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


def _page(items: list[Any], size: int, token: str, context: grpc.ServicerContext) -> tuple[list[Any], str]:
    try:
        start = int(token or 0)
    except ValueError:
        _abort(context, _INVALID, f"bad page_token {token!r}")
    end = start + (min(size, 1000) if size > 0 else 100)
    return items[start:end], (str(end) if end < len(items) else "")


def _check_mask(mask: Any, allowed: frozenset[str], context: grpc.ServicerContext) -> Any:
    paths = list(mask.paths) or sorted(allowed)  # no mask: replace every updatable field
    bad = [p for p in paths if p.split(".")[0] not in allowed]
    if bad:
        _abort(context, _INVALID, f"cannot update {', '.join(bad)}")
    return field_mask_pb2.FieldMask(paths=paths)


class PubSubEmulator:
    """In-memory Pub/Sub over gRPC; ``start()`` binds, ``stop()`` shuts everything down.

    ``port=0`` picks a free port (``start()`` returns it, ``address`` gives ``host:port``).
    ``max_workers`` sizes the gRPC thread pool: each open StreamingPull holds one thread for its
    lifetime, so it bounds concurrent subscribers. ``push_workers`` is the number of deliveries in
    flight per push subscription. With ``data_dir``, ``start()`` loads the state that the last
    ``stop()`` saved there (see the module docstring), and ``stop()`` saves it.
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
        self._push_workers = push_workers
        self._lock = threading.Lock()  # one lock for all state: simple, and fast enough here
        self._timer_cond = threading.Condition(self._lock)
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._topics: dict[str, _TopicState] = {}
        self._subs: dict[str, _SubState] = {}
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` to put in PUBSUB_EMULATOR_HOST (the bound port once started)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> int:
        if self._server is not None or self._stopping:
            raise RuntimeError("PubSubEmulator can be started only once")
        if self.data_dir is not None:
            self._load()  # before binding: no client ever sees a half-loaded state
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
        with self._lock:
            self._server = server
            self._spawn(self._tick, "pubsub-emulator-timer")
            for sub in self._subs.values():  # restored push subscriptions resume pushing
                self._sync_push_workers_locked(sub)
        log.info("Pub/Sub emulator listening on %s", self.address)
        return int(self.port)

    def stop(self, grace: float = 1.0) -> None:
        """Stop accepting RPCs, end open streams and background threads, save the state; idempotent.

        Deliveries still unanswered after ``grace`` (a pull nobody acked, a push whose POST has not
        returned) are saved as in flight: redelivered after a restart, never lost.
        """
        with self._lock:
            server, self._server = self._server, None
            self._stopping = True
            for sub in self._subs.values():
                sub.cond.notify_all()
            self._timer_cond.notify_all()
            threads = list(self._threads)
        if server is None:
            return
        server.stop(grace).wait()
        give_up = time.monotonic() + grace
        for thread in threads:  # push workers may sit in an HTTP call; they are daemons anyway
            thread.join(timeout=max(0.0, give_up - time.monotonic()))
        if self.data_dir is not None:
            self._save()
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
        with self._lock:
            sub = self._subs[subscription]
            return len(sub.available) + len(sub.leases) + len(sub.delayed) + len(sub.pushing)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        """Start a daemon thread that stop() will join (caller holds the lock)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    # -- persistence (--data-dir) -------------------------------------------------------------------

    @property
    def state_file(self) -> Path | None:
        return self.data_dir / STATE_FILE if self.data_dir is not None else None

    def _save(self) -> None:
        """Write the whole state to ``data_dir/state.json`` atomically (temp file, fsync, rename)."""
        assert self.data_dir is not None
        with self._lock:
            state = self._snapshot_locked()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        path = self.data_dir / STATE_FILE
        temp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        with temp.open("w", encoding="utf-8") as out:
            json.dump(state, out, indent=1)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        directory = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash of the machine
        finally:
            os.close(directory)
        log.info(
            "saved %d topics, %d subscriptions and %d messages to %s",
            len(state["topics"]),
            len(state["subscriptions"]),
            len(state["messages"]),
            path,
        )

    def _snapshot_locked(self) -> dict[str, Any]:
        def as_dict(pb: Any) -> dict[str, Any]:
            return dict(json_format.MessageToDict(pb, preserving_proto_field_name=True))

        def by_id(pendings: Any) -> list[_Pending]:
            return sorted(pendings, key=lambda p: int(p.message.message_id))

        messages: dict[str, Any] = {}

        def refs(pendings: list[_Pending]) -> list[dict[str, Any]]:
            for pending in pendings:
                if pending.message.message_id not in messages:
                    messages[pending.message.message_id] = as_dict(pending.message)
            return [{"message_id": p.message.message_id, "delivery_attempts": p.attempts} for p in pendings]

        subscriptions = []
        for name in sorted(self._subs):
            sub = self._subs[name]
            subscriptions.append(
                {
                    "subscription": as_dict(sub.pb),
                    # waiting for a delivery; a backoff still to wait out is forgotten
                    "undelivered": refs([*sub.available, *by_id(sub.delayed)]),
                    # delivered, outcome unknown: redelivered after a restart
                    "in_flight": refs([lease.pending for lease in sub.leases.values()] + by_id(sub.pushing)),
                }
            )
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            # the emulator is stopping, so consuming one value of each counter costs nothing
            "next_message_id": next(self._message_ids),
            "next_ack_id": next(self._seq),  # ack ids of the last run must not ack new deliveries
            "topics": [as_dict(topic.pb) for _, topic in sorted(self._topics.items())],
            "subscriptions": subscriptions,
            "messages": dict(sorted(messages.items(), key=lambda item: int(item[0]))),
        }

    def _load(self) -> None:
        """Restore what the last ``stop()`` saved, if anything; an unreadable file is an error."""
        path = self.state_file
        assert path is not None
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.info("no saved state in %s: starting empty", path)
            return
        try:
            state = json.loads(text)
            if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
                raise ValueError(f"not a version {_STATE_VERSION} {_STATE_FORMAT!r} file")
            with self._lock:
                self._restore_locked(state)
        except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
            raise RuntimeError(f"cannot load Pub/Sub emulator state from {path}: {exc}") from exc
        log.info(
            "loaded %d topics, %d subscriptions and %d messages from %s",
            len(self._topics),
            len(self._subs),
            len(state["messages"]),
            path,
        )

    def _restore_locked(self, state: dict[str, Any]) -> None:
        self._message_ids = itertools.count(int(state["next_message_id"]))
        self._seq = itertools.count(int(state["next_ack_id"]))
        for topic in state["topics"]:
            pb = json_format.ParseDict(topic, _Topic())
            self._topics[pb.name] = _TopicState(pb=pb)
        messages = {
            message_id: json_format.ParseDict(message, _PubsubMessage())
            for message_id, message in state["messages"].items()
        }
        restored = []
        for saved in state["subscriptions"]:
            pb = json_format.ParseDict(saved["subscription"], _Subscription())
            sub = self._subs[pb.name] = _SubState(pb=pb, cond=threading.Condition(self._lock))
            if pb.topic in self._topics:
                self._topics[pb.topic].subscriptions.add(pb.name)
            restored.append((sub, saved))
        # Queues last: dead-lettering below publishes, which needs every subscription in place.
        now = time.monotonic()
        for sub, saved in restored:
            for ref in saved["undelivered"]:
                sub.available.append(_Pending(messages[ref["message_id"]], int(ref["delivery_attempts"])))
            for ref in reversed(saved["in_flight"]):  # each goes to the front: their order is kept
                # An unanswered delivery counts as a failed one, as when a lease expires: redelivered
                # at once, or dead-lettered if that was the last attempt the policy allows.
                pending = _Pending(messages[ref["message_id"]], int(ref["delivery_attempts"]))
                self._retry_locked(sub, pending, now, backoff=False)

    def _handlers(self) -> list[Any]:
        def unary(fn: Callable[[Any, Any], Any], request_type: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.pb().FromString, response_serializer=_serialize
            )

        def unimplemented(request: bytes, context: grpc.ServicerContext) -> NoReturn:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "not implemented by the jupiter-data emulator")

        stub = grpc.unary_unary_rpc_method_handler(unimplemented)
        publisher = {
            "CreateTopic": unary(self._create_topic, types.Topic),
            "GetTopic": unary(self._get_topic, types.GetTopicRequest),
            "UpdateTopic": unary(self._update_topic, types.UpdateTopicRequest),
            "ListTopics": unary(self._list_topics, types.ListTopicsRequest),
            "ListTopicSubscriptions": unary(
                self._list_topic_subscriptions, types.ListTopicSubscriptionsRequest
            ),
            "DeleteTopic": unary(self._delete_topic, types.DeleteTopicRequest),
            "Publish": unary(self._publish, types.PublishRequest),
        }
        subscriber = {
            "CreateSubscription": unary(self._create_subscription, types.Subscription),
            "GetSubscription": unary(self._get_subscription, types.GetSubscriptionRequest),
            "UpdateSubscription": unary(self._update_subscription, types.UpdateSubscriptionRequest),
            "ListSubscriptions": unary(self._list_subscriptions, types.ListSubscriptionsRequest),
            "DeleteSubscription": unary(self._delete_subscription, types.DeleteSubscriptionRequest),
            "ModifyPushConfig": unary(self._modify_push_config, types.ModifyPushConfigRequest),
            "Pull": unary(self._pull, types.PullRequest),
            "StreamingPull": grpc.stream_stream_rpc_method_handler(
                self._streaming_pull,
                request_deserializer=types.StreamingPullRequest.pb().FromString,
                response_serializer=_serialize,
            ),
            "Acknowledge": unary(self._acknowledge, types.AcknowledgeRequest),
            "ModifyAckDeadline": unary(self._modify_ack_deadline, types.ModifyAckDeadlineRequest),
        }
        services = {"Publisher": publisher, "Subscriber": subscriber}
        for service, names in _UNIMPLEMENTED.items():  # answer at once rather than leave clients waiting
            services[service].update(dict.fromkeys(names, stub))
        return [grpc.method_handlers_generic_handler(f"google.pubsub.v1.{k}", v) for k, v in services.items()]

    # -- lookups and validation (caller holds the lock) -------------------------------------------

    def _topic_locked(self, name: str, context: grpc.ServicerContext) -> _TopicState:
        if not _TOPIC_RE.match(name):
            _abort(context, _INVALID, f"invalid topic name {name!r}")
        topic = self._topics.get(name)
        if topic is None:
            _abort(context, _NOT_FOUND, f"Topic not found: {name}")
        return topic

    def _sub_locked(self, name: str, context: grpc.ServicerContext) -> _SubState:
        if not _SUBSCRIPTION_RE.match(name):
            _abort(context, _INVALID, f"invalid subscription name {name!r}")
        sub = self._subs.get(name)
        if sub is None:
            _abort(context, _NOT_FOUND, f"Subscription does not exist: {name}")
        return sub

    @staticmethod
    def _validate_subscription(pb: Any, context: grpc.ServicerContext) -> None:
        unsupported = [f for f in _UNSUPPORTED_CONFIGS if pb.HasField(f)] + (["filter"] if pb.filter else [])
        if pb.push_config.HasField("no_wrapper"):
            unsupported.append("push_config.no_wrapper")
        if unsupported:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, f"not supported by this emulator: {unsupported}")
        endpoint = pb.push_config.push_endpoint
        if endpoint and not endpoint.startswith(("http://", "https://")):
            _abort(context, _INVALID, f"invalid push endpoint {endpoint!r}")
        if pb.ack_deadline_seconds == 0:
            pb.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
        if not 1 <= pb.ack_deadline_seconds <= MAX_ACK_DEADLINE:
            _abort(context, _INVALID, f"ack_deadline_seconds must be 1..{MAX_ACK_DEADLINE}")
        policy = pb.dead_letter_policy
        if policy.dead_letter_topic:
            if not _TOPIC_RE.match(policy.dead_letter_topic):
                _abort(context, _INVALID, f"invalid dead_letter_topic {policy.dead_letter_topic!r}")
            if policy.max_delivery_attempts == 0:
                policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
            if not 1 <= policy.max_delivery_attempts <= 100:
                _abort(context, _INVALID, "max_delivery_attempts must be 1..100 (5..100 on real Pub/Sub)")
        retry = pb.retry_policy
        both = retry.HasField("minimum_backoff") and retry.HasField("maximum_backoff")
        if both and _seconds(retry.minimum_backoff) > _seconds(retry.maximum_backoff):
            _abort(context, _INVALID, "minimum_backoff exceeds maximum_backoff")

    # -- Publisher ---------------------------------------------------------------------------------

    def _create_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not _TOPIC_RE.match(request.name) or request.name.split("/")[-1].startswith("goog"):
            _abort(context, _INVALID, f"invalid topic name {request.name!r}")
        with self._lock:
            if request.name in self._topics:
                _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {request.name}")
            self._topics[request.name] = _TopicState(pb=_copy(request))
            return _copy(request)

    def _get_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            return _copy(self._topic_locked(request.topic, context).pb)

    def _update_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        mask = _check_mask(request.update_mask, _TOPIC_UPDATABLE, context)
        with self._lock:
            topic = self._topic_locked(request.topic.name, context)
            mask.MergeMessage(
                request.topic, topic.pb, replace_message_field=True, replace_repeated_field=True
            )
            return _copy(topic.pb)

    def _in_project(
        self, project: str, kind: str, items: dict[str, Any], context: grpc.ServicerContext
    ) -> list[Any]:
        """Copies of the topics or subscriptions (``kind``) of one project, sorted by name."""
        if not _PROJECT_RE.match(project):
            _abort(context, _INVALID, f"invalid project {project!r}")
        prefix = f"{project}/{kind}/"
        with self._lock:
            return [_copy(item.pb) for name, item in sorted(items.items()) if name.startswith(prefix)]

    def _list_topics(self, request: Any, context: grpc.ServicerContext) -> Any:
        topics = self._in_project(request.project, "topics", self._topics, context)
        page, token = _page(topics, request.page_size, request.page_token, context)
        return types.ListTopicsResponse.pb()(topics=page, next_page_token=token)

    def _list_topic_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            names = sorted(self._topic_locked(request.topic, context).subscriptions)
        page, token = _page(names, request.page_size, request.page_token, context)
        return types.ListTopicSubscriptionsResponse.pb()(subscriptions=page, next_page_token=token)

    def _delete_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            topic = self._topic_locked(request.topic, context)
            del self._topics[request.topic]
            for name in topic.subscriptions:
                self._subs[name].pb.topic = _DELETED_TOPIC  # real semantics: subscriptions survive
        return empty_pb2.Empty()

    def _publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.messages:
            _abort(context, _INVALID, "no messages to publish")
        for message in request.messages:
            if not message.data and not message.attributes:
                _abort(context, _INVALID, "a message needs data or attributes")
        with self._lock:
            ids = self._publish_locked(self._topic_locked(request.topic, context), request.messages)
        return types.PublishResponse.pb()(message_ids=ids)

    def _publish_locked(self, topic: _TopicState, messages: Any) -> list[str]:
        now_ns = time.time_ns()
        subs = [self._subs[name] for name in topic.subscriptions]
        ids = []
        for message in messages:
            message.message_id = str(next(self._message_ids))
            message.publish_time.FromNanoseconds(now_ns)
            ids.append(message.message_id)
            for sub in subs:
                sub.available.append(_Pending(message))
        for sub in subs:
            sub.cond.notify_all()
        return ids

    # -- Subscriber: administration ------------------------------------------------------------------

    def _create_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not _SUBSCRIPTION_RE.match(request.name):
            _abort(context, _INVALID, f"invalid subscription name {request.name!r}")
        pb = _copy(request)
        self._validate_subscription(pb, context)
        pb.state = types.Subscription.State.ACTIVE
        with self._lock:
            topic = self._topic_locked(pb.topic, context)
            if pb.name in self._subs:
                _abort(context, grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {pb.name}")
            sub = self._subs[pb.name] = _SubState(pb=pb, cond=threading.Condition(self._lock))
            topic.subscriptions.add(pb.name)
            self._sync_push_workers_locked(sub)
            return _copy(pb)

    def _get_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            return _copy(self._sub_locked(request.subscription, context).pb)

    def _update_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        mask = _check_mask(request.update_mask, _SUBSCRIPTION_UPDATABLE, context)
        with self._lock:
            sub = self._sub_locked(request.subscription.name, context)
            updated = _copy(sub.pb)  # validate a copy so a refused update changes nothing
            mask.MergeMessage(
                request.subscription, updated, replace_message_field=True, replace_repeated_field=True
            )
            self._validate_subscription(updated, context)
            sub.pb = updated
            self._sync_push_workers_locked(sub)
            return _copy(updated)

    def _modify_push_config(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            sub = self._sub_locked(request.subscription, context)
            updated = _copy(sub.pb)
            updated.push_config.CopyFrom(request.push_config)
            self._validate_subscription(updated, context)
            sub.pb = updated
            self._sync_push_workers_locked(sub)
        return empty_pb2.Empty()

    def _list_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        subs = self._in_project(request.project, "subscriptions", self._subs, context)
        page, token = _page(subs, request.page_size, request.page_token, context)
        return types.ListSubscriptionsResponse.pb()(subscriptions=page, next_page_token=token)

    def _delete_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            sub = self._sub_locked(request.subscription, context)
            del self._subs[request.subscription]
            sub.deleted = True
            if sub.pb.topic in self._topics:
                self._topics[sub.pb.topic].subscriptions.discard(request.subscription)
            sub.cond.notify_all()  # open streams end with NOT_FOUND, push workers exit
        return empty_pb2.Empty()

    # -- Subscriber: delivery ----------------------------------------------------------------------

    def _pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.max_messages <= 0:
            _abort(context, _INVALID, "max_messages must be positive")
        wait = 0.0 if request.return_immediately else PULL_MAX_WAIT
        remaining = context.time_remaining()
        if remaining is not None:  # answer (empty) before the client's deadline rather than fail it
            wait = min(wait, remaining - 0.2)
        give_up = time.monotonic() + wait
        response = types.PullResponse.pb()()
        with self._lock:
            sub = self._sub_locked(request.subscription, context)
            while not sub.available and not sub.deleted and not self._stopping:
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                sub.cond.wait(left)
            if sub.deleted:
                _abort(context, _NOT_FOUND, f"Subscription does not exist: {sub.pb.name}")
            self._lease_locked(
                sub, response.received_messages, request.max_messages, None, sub.pb.ack_deadline_seconds
            )
        return response

    def _streaming_pull(self, requests_in: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
        first = next(requests_in, None)
        if first is None:
            return
        if not 1 <= first.stream_ack_deadline_seconds <= MAX_ACK_DEADLINE:
            _abort(context, _INVALID, "stream_ack_deadline_seconds must be 1..600")
        stream = _Stream(
            first.max_outstanding_messages, first.max_outstanding_bytes, first.stream_ack_deadline_seconds
        )
        with self._lock:
            sub = self._sub_locked(first.subscription, context)
            self._apply_stream_request_locked(sub, stream, first)
            self._spawn(self._read_stream, "pubsub-emulator-stream-reader", sub, stream, requests_in)

        def close() -> None:
            with self._lock:
                stream.closed = True
                sub.cond.notify_all()

        if not context.add_callback(close):  # fires when the client cancels: the wait below wakes up
            close()  # already terminated
        while True:
            with self._lock:
                while not (stream.closed or sub.deleted or self._stopping) and not (
                    sub.available and stream.has_room()
                ):
                    sub.cond.wait()
                if sub.deleted:
                    _abort(context, _NOT_FOUND, f"Subscription does not exist: {sub.pb.name}")
                if stream.closed or self._stopping:
                    return
                response = types.StreamingPullResponse.pb()()
                self._lease_locked(
                    sub, response.received_messages, _BATCH_MESSAGES, stream, stream.ack_deadline
                )
            yield response

    def _read_stream(self, sub: _SubState, stream: _Stream, requests_in: Iterator[Any]) -> None:
        try:
            for request in requests_in:  # acks, modacks and heartbeats (empty requests)
                with self._lock:
                    if stream.closed or sub.deleted:
                        break
                    self._apply_stream_request_locked(sub, stream, request)
        except Exception as exc:  # the client went away; close() below is all that is needed
            log.debug("streaming pull reader ended: %s", exc)
        finally:
            with self._lock:
                stream.closed = True
                sub.cond.notify_all()

    def _apply_stream_request_locked(self, sub: _SubState, stream: _Stream, request: Any) -> None:
        if request.stream_ack_deadline_seconds:
            stream.ack_deadline = min(max(request.stream_ack_deadline_seconds, 1), MAX_ACK_DEADLINE)
        self._ack_locked(sub, request.ack_ids)
        for ack_id, seconds in zip(
            request.modify_deadline_ack_ids, request.modify_deadline_seconds, strict=False
        ):
            self._modack_locked(sub, ack_id, min(max(seconds, 0), MAX_ACK_DEADLINE), time.monotonic())

    def _acknowledge(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._lock:
            self._ack_locked(self._sub_locked(request.subscription, context), request.ack_ids)
        return empty_pb2.Empty()

    def _modify_ack_deadline(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not 0 <= request.ack_deadline_seconds <= MAX_ACK_DEADLINE:
            _abort(
                context,
                _INVALID,
                f"ack_deadline_seconds must be 0..{MAX_ACK_DEADLINE}",
            )
        with self._lock:
            sub = self._sub_locked(request.subscription, context)
            now = time.monotonic()
            for ack_id in request.ack_ids:
                self._modack_locked(sub, ack_id, request.ack_deadline_seconds, now)
        return empty_pb2.Empty()

    # -- leases, redelivery and dead-lettering (caller holds the lock) -------------------------------

    def _lease_locked(
        self, sub: _SubState, out: Any, limit: int, stream: _Stream | None, deadline_s: int
    ) -> None:
        deadline = time.monotonic() + deadline_s
        expire = functools.partial(self._expire_locked, sub)
        size = 0
        while (
            sub.available
            and len(out) < limit
            and size < _BATCH_BYTES
            and (stream is None or stream.has_room())
        ):
            pending = sub.available.popleft()
            pending.attempts += 1
            ack_id = str(next(self._seq))
            sub.leases[ack_id] = _Lease(pending, deadline, stream)
            if stream is not None:
                stream.outstanding += 1
                stream.outstanding_bytes += len(pending.message.data)
            size += len(pending.message.data)
            received = out.add(ack_id=ack_id)
            received.message.CopyFrom(pending.message)
            if sub.has_dead_letter:
                received.delivery_attempt = pending.attempts
            self._schedule_locked(deadline, functools.partial(expire, ack_id))

    def _drop_lease_locked(self, sub: _SubState, ack_id: str) -> _Lease | None:
        lease = sub.leases.pop(ack_id, None)
        if lease is not None and lease.stream is not None:
            lease.stream.outstanding -= 1
            lease.stream.outstanding_bytes -= len(lease.pending.message.data)
            sub.cond.notify_all()  # the stream may have room again
        return lease

    def _ack_locked(self, sub: _SubState, ack_ids: Any) -> None:
        for ack_id in ack_ids:  # unknown or stale ack ids are ignored, as on the real service
            self._drop_lease_locked(sub, ack_id)

    def _modack_locked(self, sub: _SubState, ack_id: str, seconds: int, now: float) -> None:
        if seconds == 0:
            lease = self._drop_lease_locked(sub, ack_id)
            if lease is not None:
                self._retry_locked(sub, lease.pending, now)
        elif (lease := sub.leases.get(ack_id)) is not None:
            lease.deadline = now + seconds
            self._schedule_locked(lease.deadline, functools.partial(self._expire_locked, sub, ack_id))

    def _expire_locked(self, sub: _SubState, ack_id: str, now: float) -> None:
        lease = sub.leases.get(ack_id)
        if lease is None or lease.deadline > now or sub.deleted:
            return  # acked, or extended (a later timer owns it)
        self._drop_lease_locked(sub, ack_id)
        self._retry_locked(sub, lease.pending, now)

    def _retry_locked(self, sub: _SubState, pending: _Pending, now: float, *, backoff: bool = True) -> None:
        """A delivery failed (nack, expiry, push error): dead-letter it or redeliver after a backoff."""
        if sub.deleted:
            return
        policy = sub.pb.dead_letter_policy
        if sub.has_dead_letter and pending.attempts >= policy.max_delivery_attempts:
            topic = self._topics.get(policy.dead_letter_topic)
            if topic is not None:
                self._dead_letter_locked(sub, topic, pending)
                return
            log.warning("dead-letter topic %s of %s does not exist", policy.dead_letter_topic, sub.pb.name)
        delay = self._backoff(sub, pending.attempts) if backoff else 0.0
        if delay <= 0:
            sub.available.appendleft(pending)
            sub.cond.notify_all()
        else:
            sub.delayed.add(pending)
            self._schedule_locked(now + delay, functools.partial(self._release_locked, sub, pending))

    def _release_locked(self, sub: _SubState, pending: _Pending, now: float) -> None:
        sub.delayed.discard(pending)
        if not sub.deleted:
            sub.available.appendleft(pending)
            sub.cond.notify_all()

    @staticmethod
    def _backoff(sub: _SubState, attempts: int) -> float:
        if sub.pb.HasField("retry_policy"):
            retry = sub.pb.retry_policy
            has = retry.HasField
            low = _seconds(retry.minimum_backoff) if has("minimum_backoff") else RETRY_POLICY_MIN_BACKOFF
            high = _seconds(retry.maximum_backoff) if has("maximum_backoff") else RETRY_POLICY_MAX_BACKOFF
        elif sub.is_push:
            low, high = PUSH_MIN_BACKOFF, PUSH_MAX_BACKOFF
        else:
            return 0.0  # real pull subscriptions without a retry policy redeliver at once
        jitter = random.uniform(0.9, 1.1)  # noqa: S311 - spreads retries, not a secret
        return float(min(high, low * 2 ** max(attempts - 1, 0) * jitter))

    def _dead_letter_locked(self, sub: _SubState, topic: _TopicState, pending: _Pending) -> None:
        message = _PubsubMessage()
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
        self._publish_locked(topic, [message])

    def _schedule_locked(self, when: float, timer: _Timer) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        if self._timers[0][2] is timer:
            self._timer_cond.notify()  # the ticker sleeps until the earliest timer

    def _tick(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    heapq.heappop(self._timers)[2](now)
                self._timer_cond.wait(self._timers[0][0] - now if self._timers else None)

    # -- push delivery -----------------------------------------------------------------------------

    def _sync_push_workers_locked(self, sub: _SubState) -> None:
        if sub.is_push and not self._stopping:
            for _ in range(self._push_workers - sub.push_workers):
                sub.push_workers += 1
                self._spawn(self._push_worker, f"pubsub-emulator-push-{sub.pb.name}", sub)
        sub.cond.notify_all()  # workers of a subscription that became pull notice and exit

    def _push_worker(self, sub: _SubState) -> None:
        session = requests.Session()
        session.trust_env = False  # endpoints are local; a proxy from the environment must not intercept
        try:
            while True:
                with self._lock:
                    while not sub.available and sub.is_push and not (sub.deleted or self._stopping):
                        sub.cond.wait()
                    if not sub.is_push or sub.deleted or self._stopping:
                        sub.push_workers -= 1
                        return
                    pending = sub.available.popleft()
                    pending.attempts += 1
                    sub.pushing.add(pending)
                    url = sub.pb.push_config.push_endpoint
                    timeout = float(sub.pb.ack_deadline_seconds)  # as Pub/Sub: up to 600 s
                    body = self._envelope(sub, pending)
                delivered = self._post(session, url, body, timeout)
                if not delivered:  # which message and attempt: tests wait on this, operators read it
                    log.debug(
                        "push of message %s failed (attempt %d)", pending.message.message_id, pending.attempts
                    )
                with self._lock:
                    sub.pushing.discard(pending)
                    if not delivered:
                        self._retry_locked(sub, pending, time.monotonic())
        finally:
            session.close()

    @staticmethod
    def _envelope(sub: _SubState, pending: _Pending) -> bytes:
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

    @staticmethod
    def _post(session: requests.Session, url: str, body: bytes, timeout: float) -> bool:
        try:
            response = session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=(_PUSH_CONNECT_TIMEOUT, timeout),
            )
        except Exception as exc:  # connection refused, timeout, bad URL: all mean "retry later"
            log.debug("push to %s failed: %s", url, exc)
            return False
        response.close()
        return response.status_code in _PUSH_ACK_STATUSES


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the jupiter-data Pub/Sub emulator (gRPC).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8085)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="load the state saved here at start, save it here on SIGTERM/SIGINT (default: memory only)",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    with PubSubEmulator(args.host, args.port, data_dir=args.data_dir):
        while not stop.wait(1.0):  # a timed wait lets the signal handler run promptly
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
