"""The administrative RPCs: create, read, update, list and delete topics and subscriptions.

Deleting a topic leaves its subscriptions attached to ``_deleted-topic_``, as the real service does.
Unlike the real API (5..100), ``max_delivery_attempts`` may be any value from 1 to 100 so tests stay
quick; 0 means the real default, 5. Ack deadlines may be 1..600 s (the real minimum is 10 s) for the
same reason.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import empty_pb2, field_mask_pb2
from google.pubsub_v1 import types

from jupiter_data.local.pubsub_emulator.broker import (
    INVALID,
    MAX_ACK_DEADLINE,
    PROJECT_RE,
    SUBSCRIPTION_RE,
    TOPIC_RE,
    Broker,
    TopicState,
    abort,
    copy,
    seconds,
)
from jupiter_data.local.pubsub_emulator.push import PushDelivery

DEFAULT_ACK_DEADLINE = 10
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
_DELETED_TOPIC = "_deleted-topic_"
_UNSUPPORTED_CONFIGS = ("bigquery_config", "cloud_storage_config", "bigtable_config")
_SUBSCRIPTION_UPDATABLE = frozenset({
    "push_config", "ack_deadline_seconds", "dead_letter_policy", "retry_policy", "labels",
    "expiration_policy", "message_retention_duration", "retain_acked_messages",
    "enable_exactly_once_delivery",
})  # fmt: skip
_TOPIC_UPDATABLE = frozenset({
    "labels", "message_retention_duration", "message_storage_policy", "kms_key_name", "schema_settings",
})  # fmt: skip


class AdminRpcs:
    """Topic and subscription administration of the Publisher and Subscriber services."""

    def __init__(self, broker: Broker, push: PushDelivery) -> None:
        self.broker = broker
        self.push = push

    # -- Publisher ---------------------------------------------------------------------------------

    def create_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not TOPIC_RE.match(request.name) or request.name.split("/")[-1].startswith("goog"):
            abort(context, INVALID, f"invalid topic name {request.name!r}")
        with self.broker.lock:
            if request.name in self.broker.topics:
                abort(context, grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {request.name}")
            self.broker.topics[request.name] = TopicState(pb=copy(request))
            return copy(request)

    def get_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.broker.lock:
            return copy(self.broker.topic_locked(request.topic, context).pb)

    def update_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        mask = _check_mask(request.update_mask, _TOPIC_UPDATABLE, context)
        with self.broker.lock:
            topic = self.broker.topic_locked(request.topic.name, context)
            mask.MergeMessage(
                request.topic, topic.pb, replace_message_field=True, replace_repeated_field=True
            )
            return copy(topic.pb)

    def list_topics(self, request: Any, context: grpc.ServicerContext) -> Any:
        topics = self._in_project(request.project, "topics", self.broker.topics, context)
        page, token = _page(topics, request.page_size, request.page_token, context)
        return types.ListTopicsResponse.pb()(topics=page, next_page_token=token)

    def list_topic_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.broker.lock:
            names = sorted(self.broker.topic_locked(request.topic, context).subscriptions)
        page, token = _page(names, request.page_size, request.page_token, context)
        return types.ListTopicSubscriptionsResponse.pb()(subscriptions=page, next_page_token=token)

    def delete_topic(self, request: Any, context: grpc.ServicerContext) -> Any:
        broker = self.broker
        with broker.lock:
            topic = broker.topic_locked(request.topic, context)
            del broker.topics[request.topic]
            for name in topic.subscriptions:
                broker.subs[name].pb.topic = _DELETED_TOPIC  # real semantics: subscriptions survive
        return empty_pb2.Empty()

    # -- Subscriber --------------------------------------------------------------------------------

    def create_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not SUBSCRIPTION_RE.match(request.name):
            abort(context, INVALID, f"invalid subscription name {request.name!r}")
        pb = copy(request)
        _validate_subscription(pb, context)
        pb.state = types.Subscription.State.ACTIVE
        with self.broker.lock:
            topic = self.broker.topic_locked(pb.topic, context)
            if pb.name in self.broker.subs:
                abort(context, grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {pb.name}")
            sub = self.broker.new_subscription_locked(pb)
            topic.subscriptions.add(pb.name)
            self.push.sync_workers_locked(sub)
            return copy(pb)

    def get_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.broker.lock:
            return copy(self.broker.sub_locked(request.subscription, context).pb)

    def update_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        mask = _check_mask(request.update_mask, _SUBSCRIPTION_UPDATABLE, context)
        with self.broker.lock:
            sub = self.broker.sub_locked(request.subscription.name, context)
            updated = copy(sub.pb)  # validate a copy so a refused update changes nothing
            mask.MergeMessage(
                request.subscription, updated, replace_message_field=True, replace_repeated_field=True
            )
            _validate_subscription(updated, context)
            sub.pb = updated
            self.push.sync_workers_locked(sub)
            return copy(updated)

    def modify_push_config(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.broker.lock:
            sub = self.broker.sub_locked(request.subscription, context)
            updated = copy(sub.pb)
            updated.push_config.CopyFrom(request.push_config)
            _validate_subscription(updated, context)
            sub.pb = updated
            self.push.sync_workers_locked(sub)
        return empty_pb2.Empty()

    def list_subscriptions(self, request: Any, context: grpc.ServicerContext) -> Any:
        subs = self._in_project(request.project, "subscriptions", self.broker.subs, context)
        page, token = _page(subs, request.page_size, request.page_token, context)
        return types.ListSubscriptionsResponse.pb()(subscriptions=page, next_page_token=token)

    def delete_subscription(self, request: Any, context: grpc.ServicerContext) -> Any:
        broker = self.broker
        with broker.lock:
            sub = broker.sub_locked(request.subscription, context)
            del broker.subs[request.subscription]
            sub.deleted = True
            if sub.pb.topic in broker.topics:
                broker.topics[sub.pb.topic].subscriptions.discard(request.subscription)
            sub.cond.notify_all()  # open streams end with NOT_FOUND, push workers exit
        return empty_pb2.Empty()

    def _in_project(
        self, project: str, kind: str, items: dict[str, Any], context: grpc.ServicerContext
    ) -> list[Any]:
        """Copies of the topics or subscriptions (``kind``) of one project, sorted by name."""
        if not PROJECT_RE.match(project):
            abort(context, INVALID, f"invalid project {project!r}")
        prefix = f"{project}/{kind}/"
        with self.broker.lock:
            return [copy(item.pb) for name, item in sorted(items.items()) if name.startswith(prefix)]


def _page(items: list[Any], size: int, token: str, context: grpc.ServicerContext) -> tuple[list[Any], str]:
    try:
        start = int(token or 0)
    except ValueError:
        abort(context, INVALID, f"bad page_token {token!r}")
    end = start + (min(size, 1000) if size > 0 else 100)
    return items[start:end], (str(end) if end < len(items) else "")


def _check_mask(mask: Any, allowed: frozenset[str], context: grpc.ServicerContext) -> Any:
    paths = list(mask.paths) or sorted(allowed)  # no mask: replace every updatable field
    bad = [p for p in paths if p.split(".")[0] not in allowed]
    if bad:
        abort(context, INVALID, f"cannot update {', '.join(bad)}")
    return field_mask_pb2.FieldMask(paths=paths)


def _validate_subscription(pb: Any, context: grpc.ServicerContext) -> None:
    """Refuse what the emulator does not support, fill in defaults, check ranges (``pb`` is changed)."""
    unsupported = [f for f in _UNSUPPORTED_CONFIGS if pb.HasField(f)] + (["filter"] if pb.filter else [])
    if pb.push_config.HasField("no_wrapper"):
        unsupported.append("push_config.no_wrapper")
    if unsupported:
        abort(context, grpc.StatusCode.UNIMPLEMENTED, f"not supported by this emulator: {unsupported}")
    endpoint = pb.push_config.push_endpoint
    if endpoint and not endpoint.startswith(("http://", "https://")):
        abort(context, INVALID, f"invalid push endpoint {endpoint!r}")
    if pb.ack_deadline_seconds == 0:
        pb.ack_deadline_seconds = DEFAULT_ACK_DEADLINE
    if not 1 <= pb.ack_deadline_seconds <= MAX_ACK_DEADLINE:
        abort(context, INVALID, f"ack_deadline_seconds must be 1..{MAX_ACK_DEADLINE}")
    policy = pb.dead_letter_policy
    if policy.dead_letter_topic:
        if not TOPIC_RE.match(policy.dead_letter_topic):
            abort(context, INVALID, f"invalid dead_letter_topic {policy.dead_letter_topic!r}")
        if policy.max_delivery_attempts == 0:
            policy.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
        if not 1 <= policy.max_delivery_attempts <= 100:
            abort(context, INVALID, "max_delivery_attempts must be 1..100 (5..100 on real Pub/Sub)")
    retry = pb.retry_policy
    both = retry.HasField("minimum_backoff") and retry.HasField("maximum_backoff")
    if both and seconds(retry.minimum_backoff) > seconds(retry.maximum_backoff):
        abort(context, INVALID, "minimum_backoff exceeds maximum_backoff")
