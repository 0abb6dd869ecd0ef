"""SNS → Pub/Sub: accept exactly what SNS sent for the topics we trust, republish it, reject the rest.

The HTTP status is the retry contract with SNS, which treats 200-499 as delivered and retries 5xx:
2xx only once Pub/Sub acknowledged the message, 5xx when a retry may succeed, 4xx when none will.
Cheap checks (shape, topic, URLs, age) run before the only network call, the certificate fetch; the
certificates fetched are kept parsed (key and validity) per URL, so a busy topic costs one fetch.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jupiter_data.domain import sns
from jupiter_data.ports import Clock, PermanentError, Publisher, SnsGateway, SystemClock, TransientError
from jupiter_data.settings import (
    FromEnv,
    Settings,
    duration,
    load_settings,
    loopback_url,
    setting,
    topic_arns,
    topic_name,
)

log = logging.getLogger(__name__)

RAW_DELIVERY_HINT = (
    "raw message delivery carries no SNS signature and cannot be verified: disable RawMessageDelivery "
    "on this subscription (aws sns set-subscription-attributes --attribute-name RawMessageDelivery "
    "--attribute-value false)"
)
CERTIFICATE_CACHE_SIZE = 64  # SNS signs with one certificate per region at a time


@dataclass(frozen=True)
class BridgeSettings(FromEnv):
    """What ``sns_to_pubsub`` reads on top of ``Settings``."""

    allowed_topic_arns: frozenset[str] = setting(
        "SNS_ALLOWED_TOPIC_ARNS",
        topic_arns,
        doc="comma-separated SNS topic ARNs whose messages are accepted; any other topic gets 403",
    )
    # SNS retries for up to an hour and event ids are stable: a late retry is safe to accept.
    max_message_age: timedelta = setting(
        "SNS_MAX_MESSAGE_AGE",
        duration,
        default="2h",
        doc=(
            "older messages are refused; SNS retries for up to an hour and event ids are stable, so a"
            " late retry is accepted; seconds or `90m`/`2h`"
        ),
    )
    events_topic: str = setting(
        "SNS_EVENTS_TOPIC",
        topic_name,
        default="sns-events",
        doc="Pub/Sub topic the notifications are republished to",
    )
    # Fetch SNS certificates (and confirm subscriptions) from this base URL instead of the SNS host the
    # message names: the local SNS emulator.
    cert_base_url: str | None = setting(
        "SNS_CERT_BASE_URL",
        loopback_url,
        local_only=True,
        doc=(
            "fetch certificates and confirm subscriptions at `http://127.0.0.1:PORT` + the original "
            "path instead of the SNS host; refused unless `JUPITER_ENV=local`"
        ),
    )


class CertificateCache:
    """Parsed certificates by URL, least recently used first out. Only a certificate that parsed and
    was valid when fetched goes in, and one no longer valid is dropped: a bad fetch is retried."""

    def __init__(self, size: int = CERTIFICATE_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[str, sns.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, url: str, now: datetime) -> sns.Certificate | None:
        with self._lock:
            certificate = self._entries.pop(url, None)
            if certificate is None or not certificate.valid_at(now):
                return None
            self._entries[url] = certificate  # now the most recently used
            return certificate

    def put(self, url: str, certificate: sns.Certificate, now: datetime) -> None:
        if not certificate.valid_at(now):
            return
        with self._lock:
            self._entries.pop(url, None)
            self._entries[url] = certificate
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


class Bridge:
    def __init__(
        self, settings: BridgeSettings, gateway: SnsGateway, publisher: Publisher, clock: Clock
    ) -> None:
        self._settings, self._gateway, self._publisher, self._clock = settings, gateway, publisher, clock
        self._certificates = CertificateCache()

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Reply:
        try:
            message = self._verified(body, headers)
            return self._dispatch(message)
        except sns.Rejected as rejected:
            log.warning(
                "rejected SNS request: %s",
                rejected.detail,
                extra={"fields": {"reason": rejected.code, "status": rejected.status, **_ids(headers)}},
            )
            return Reply(rejected.status, {"error": rejected.code, "detail": rejected.detail})
        except TransientError as exc:
            log.error("SNS request failed, SNS will retry: %s", exc, extra={"fields": _ids(headers)})
            return Reply(503, {"error": "temporarily_unavailable", "detail": "try again later"})

    def _verified(self, body: bytes, headers: Mapping[str, str]) -> sns.SnsMessage:
        lowered = {key.lower(): value for key, value in headers.items()}
        if lowered.get("x-amz-sns-rawdelivery", "").lower() == "true":
            raise sns.Rejected(400, "raw_delivery", RAW_DELIVERY_HINT)
        message = sns.parse_message(body)
        declared = lowered.get("x-amz-sns-message-type")
        if declared is not None and declared != message.type:
            raise sns.Rejected(
                400, "invalid_envelope", f"header says {sns.echo(declared)}, body says {message.type}"
            )
        if message.topic_arn not in self._settings.allowed_topic_arns:
            raise sns.Rejected(403, "untrusted_topic", f"topic {sns.echo(message.topic_arn)} is not allowed")
        # The topic is one of ours: its region names the only SNS host to fetch from.
        sns.check_cert_url(message.signing_cert_url, message.topic_arn)
        if message.subscribe_url is not None:
            sns.check_sns_url(message.subscribe_url, "SubscribeURL", message.topic_arn)
        now = self._clock.now()
        sns.check_fresh(message, now, self._settings.max_message_age)
        sns.verify_signature(message, self._certificate(message.signing_cert_url, now).key_at(now))
        return message

    def _certificate(self, url: str, now: datetime) -> sns.Certificate:
        cached = self._certificates.get(url, now)
        if cached is not None:
            return cached
        try:
            pem = self._gateway.fetch_certificate(url)
        except PermanentError as exc:
            raise sns.Rejected(
                400, "invalid_certificate", f"signing certificate unavailable: {exc}"
            ) from None
        certificate = sns.parse_certificate(pem)  # garbage raises Rejected before anything is kept
        self._certificates.put(url, certificate, now)
        return certificate

    def _dispatch(self, message: sns.SnsMessage) -> Reply:
        ids = {"sns_message_id": message.message_id, "sns_topic_arn": message.topic_arn}
        if message.type == sns.SUBSCRIPTION_CONFIRMATION:
            assert message.subscribe_url is not None  # parse_message requires it for this type
            try:
                self._gateway.confirm_subscription(message.subscribe_url)
            except PermanentError as exc:
                raise sns.Rejected(400, "confirmation_failed", str(exc)) from None
            log.info("confirmed SNS subscription", extra={"fields": ids})
            return Reply(200, {"status": "subscribed", "topic_arn": message.topic_arn})
        if message.type == sns.UNSUBSCRIBE_CONFIRMATION:
            log.info("SNS unsubscribed this endpoint; nothing to do", extra={"fields": ids})
            return Reply(200, {"status": "ignored"})
        attributes = {
            "sns_message_id": message.message_id,
            "sns_topic_arn": message.topic_arn,
            "sns_timestamp": message.fields["Timestamp"],
        }
        if message.subject is not None:
            attributes["sns_subject"] = message.subject
        pubsub_id = self._publisher.publish(
            self._settings.events_topic, message.message.encode("utf-8"), attributes
        )
        log.info("published SNS notification", extra={"fields": {**ids, "pubsub_message_id": pubsub_id}})
        return Reply(200, {"status": "published", "message_id": pubsub_id})


def _ids(headers: Mapping[str, str]) -> dict[str, str]:
    """Identifiers safe to log (never the payload): SNS sends them as headers."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return {
        name: lowered[header][:256]
        for name, header in (
            ("sns_message_id", "x-amz-sns-message-id"),
            ("sns_topic_arn", "x-amz-sns-topic-arn"),
        )
        if header in lowered
    }


def bootstrap(
    settings: Settings | None = None,
    *,
    bridge_settings: BridgeSettings | None = None,
    gateway: SnsGateway | None = None,
    publisher: Publisher | None = None,
    clock: Clock | None = None,
) -> Bridge:
    """The bridge on the real adapters, but for those given. They are imported here, so a process that
    imports this module loads no Google client until it builds one."""
    bridge_settings = bridge_settings or load_settings(BridgeSettings)
    if gateway is None:
        from jupiter_data.adapters.sns_http import SnsHttpGateway

        gateway = SnsHttpGateway(base_url=bridge_settings.cert_base_url)
    if publisher is None:
        from jupiter_data.adapters.clients import publisher_client
        from jupiter_data.adapters.pubsub import PubSubPublisher

        settings = settings or load_settings(Settings)
        publisher = PubSubPublisher(publisher_client(settings), settings.project)
    return Bridge(bridge_settings, gateway, publisher, clock or SystemClock())
