"""The emulator's state under one lock: topics, subscriptions and their queues, timers and threads.

Every other module of the package works on a :class:`Broker`; functions and methods whose names end
in ``_locked`` expect the caller to hold ``broker.lock``.
"""

from __future__ import annotations

import heapq
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.pubsub_v1 import types

MAX_ACK_DEADLINE = 600

PROJECT_RE = re.compile(r"^projects/[^/]+$")
TOPIC_RE = re.compile(r"^projects/([^/]+)/topics/([A-Za-z][A-Za-z0-9_.~+%-]{2,254})$")
SUBSCRIPTION_RE = re.compile(r"^projects/([^/]+)/subscriptions/([A-Za-z][A-Za-z0-9_.~+%-]{2,254})$")

PubsubMessage = types.PubsubMessage.pb()  # raw protobuf: proto-plus wrappers are several times slower
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

Timer = Callable[[float], None]


@dataclass(eq=False)
class Pending:
    message: Any  # PubsubMessage pb, shared read-only by every subscription it was fanned out to
    attempts: int = 0


@dataclass(eq=False)
class Stream:
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
class Lease:
    pending: Pending
    deadline: float  # time.monotonic()
    stream: Stream | None


@dataclass(eq=False)
class TopicState:
    pb: Any
    subscriptions: set[str] = field(default_factory=set)


@dataclass(eq=False)
class SubState:
    pb: Any
    cond: threading.Condition
    available: deque[Pending] = field(default_factory=deque)
    leases: dict[str, Lease] = field(default_factory=dict)
    delayed: set[Pending] = field(default_factory=set)  # nacked messages waiting out their backoff
    pushing: set[Pending] = field(default_factory=set)  # messages in flight to the push endpoint
    push_workers: int = 0
    deleted: bool = False

    @property
    def is_push(self) -> bool:
        return bool(self.pb.push_config.push_endpoint)

    @property
    def has_dead_letter(self) -> bool:
        return bool(self.pb.dead_letter_policy.dead_letter_topic)


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def seconds(duration: Any) -> float:
    return float(duration.seconds + duration.nanos / 1e9)


def copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out


class Broker:
    """Topics and subscriptions with their messages, plus the timer and thread bookkeeping."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one lock for all state: simple, and fast enough here
        self.timer_cond = threading.Condition(self.lock)
        self.timers: list[tuple[float, int, Timer]] = []
        self.seq = itertools.count(1)  # ack ids, and the tie-breaker of timers
        self.message_ids = itertools.count(1)
        self.topics: dict[str, TopicState] = {}
        self.subs: dict[str, SubState] = {}
        self.threads: list[threading.Thread] = []
        self.stopping = False

    def new_subscription_locked(self, pb: Any) -> SubState:
        sub = self.subs[pb.name] = SubState(pb=pb, cond=threading.Condition(self.lock))
        return sub

    def unacked_count(self, subscription: str) -> int:
        with self.lock:
            sub = self.subs[subscription]
            return len(sub.available) + len(sub.leases) + len(sub.delayed) + len(sub.pushing)

    def spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        """Start a daemon thread that the emulator's stop() will join (caller holds the lock)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()]
        self.threads.append(thread)
        thread.start()

    def wake_all_locked(self) -> None:
        """Wake every waiting stream, pull, push worker and the ticker (they then see ``stopping``)."""
        for sub in self.subs.values():
            sub.cond.notify_all()
        self.timer_cond.notify_all()

    # -- timers ------------------------------------------------------------------------------------

    def schedule_locked(self, when: float, timer: Timer) -> None:
        heapq.heappush(self.timers, (when, next(self.seq), timer))
        if self.timers[0][2] is timer:
            self.timer_cond.notify()  # the ticker sleeps until the earliest timer

    def tick(self) -> None:
        with self.lock:
            while not self.stopping:
                now = time.monotonic()
                while self.timers and self.timers[0][0] <= now:
                    heapq.heappop(self.timers)[2](now)
                self.timer_cond.wait(self.timers[0][0] - now if self.timers else None)

    # -- lookups and publishing -------------------------------------------------------------------

    def topic_locked(self, name: str, context: grpc.ServicerContext) -> TopicState:
        if not TOPIC_RE.match(name):
            abort(context, INVALID, f"invalid topic name {name!r}")
        topic = self.topics.get(name)
        if topic is None:
            abort(context, NOT_FOUND, f"Topic not found: {name}")
        return topic

    def sub_locked(self, name: str, context: grpc.ServicerContext) -> SubState:
        if not SUBSCRIPTION_RE.match(name):
            abort(context, INVALID, f"invalid subscription name {name!r}")
        sub = self.subs.get(name)
        if sub is None:
            abort(context, NOT_FOUND, f"Subscription does not exist: {name}")
        return sub

    def publish_locked(self, topic: TopicState, messages: Any) -> list[str]:
        now_ns = time.time_ns()
        subs = [self.subs[name] for name in topic.subscriptions]
        ids = []
        for message in messages:
            message.message_id = str(next(self.message_ids))
            message.publish_time.FromNanoseconds(now_ns)
            ids.append(message.message_id)
            for sub in subs:
                sub.available.append(Pending(message))
        for sub in subs:
            sub.cond.notify_all()
        return ids
