"""The SNS → Pub/Sub use case on fakes: every answer, what is published, and what is fetched.

The fake gateway records every URL it is asked for, so each rejection can prove it made no network call.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupiter_data.domain import sns
from jupiter_data.logs import JsonFormatter
from jupiter_data.ports import PermanentError, TransientError
from jupiter_data.services.bridge import (
    RAW_DELIVERY_HINT,
    Bridge,
    BridgeSettings,
    CertificateCache,
    Reply,
    bootstrap,
)
from tests.fakes import FakeClock, FakePublisher
from tests.sns_signing import (
    CERT_URL,
    SUBSCRIBE_URL,
    TOPIC_ARN,
    Signer,
    body,
    cert_url_for,
    make_certificate,
)
from tests.support import all_log_text

NOW = datetime.now(UTC).replace(microsecond=0)  # certificates from make_certificate are valid around now
# In the region of TOPIC_ARN, so that moving a message between the two is caught by the signature alone.
OTHER_TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:savings-events"
EU_TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:savings-events"
EVENTS_TOPIC = "test-sns-events"
# Unicode, JSON, whitespace and characters JSON escapes: the bytes published must be exactly these.
PAYLOAD = '{"userId": "ü-42", "event": "login ☃", "nested": {"a": [1, 2.5, null]}, "q": "\\"x\\"\\n"}'
SIGNER = Signer()


@dataclass
class FakeGateway:
    """An SnsGateway that serves one PEM for every URL, records calls and can be told to fail."""

    pem: bytes = SIGNER.pem
    fetched: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)
    fetch_error: Exception | None = None
    confirm_error: Exception | None = None

    def fetch_certificate(self, url: str) -> bytes:
        self.fetched.append(url)
        if self.fetch_error is not None:
            raise self.fetch_error
        return self.pem

    def confirm_subscription(self, url: str) -> None:
        self.confirmed.append(url)
        if self.confirm_error is not None:
            raise self.confirm_error

    @property
    def calls(self) -> list[str]:
        return self.fetched + self.confirmed


class FailingPublisher(FakePublisher):
    """Raises ``TransientError`` for the first ``failures`` publishes, then behaves."""

    def __init__(self, failures: int = 1) -> None:
        super().__init__()
        self.failures = failures

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("pubsub unavailable")
        return super().publish(topic, data, attributes)


def bridge_settings(**overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "allowed_topic_arns": frozenset({TOPIC_ARN, OTHER_TOPIC_ARN, EU_TOPIC_ARN}),
        "max_message_age": timedelta(hours=1),
        "events_topic": EVENTS_TOPIC,
        "cert_base_url": None,
    }
    return BridgeSettings(**{**values, **overrides})


@dataclass
class World:
    gateway: FakeGateway
    publisher: FakePublisher
    clock: FakeClock
    bridge: Bridge

    def handle(self, message: dict[str, Any] | bytes, headers: Mapping[str, str] | None = None) -> Reply:
        payload = message if isinstance(message, bytes) else body(message)
        return self.bridge.handle(payload, headers or {})

    def assert_untouched(self) -> None:
        assert self.publisher.messages == []
        assert self.gateway.confirmed == []


def make_world(
    gateway: FakeGateway | None = None, publisher: FakePublisher | None = None, **overrides: Any
) -> World:
    gateway = gateway or FakeGateway()
    publisher = publisher or FakePublisher()
    clock = FakeClock(NOW)
    settings = bridge_settings(**overrides)
    bridge = bootstrap(bridge_settings=settings, gateway=gateway, publisher=publisher, clock=clock)
    return World(gateway, publisher, clock, bridge)


@pytest.fixture
def world() -> World:
    return make_world()


def sns_headers(message: dict[str, Any]) -> dict[str, str]:
    return {
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
        "Content-Type": "text/plain; charset=UTF-8",
    }


def notification(**kwargs: Any) -> dict[str, Any]:
    return SIGNER.notification(
        kwargs.pop("message", PAYLOAD), timestamp=kwargs.pop("timestamp", NOW), **kwargs
    )


def confirmation(kind: str = sns.SUBSCRIPTION_CONFIRMATION, **kwargs: Any) -> dict[str, Any]:
    return SIGNER.confirmation(kind, timestamp=kwargs.pop("timestamp", NOW), **kwargs)


# --- valid vectors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, 'Login ü: "quoted" & more'])
def test_a_signed_notification_is_published_unchanged_with_its_attributes(
    world: World, version: str, subject: str | None
) -> None:
    message = notification(version=version, subject=subject)
    reply = world.handle(message, sns_headers(message))
    assert reply == Reply(200, {"status": "published", "message_id": "1"})
    expected = {
        "sns_message_id": message["MessageId"],
        "sns_topic_arn": TOPIC_ARN,
        "sns_timestamp": message["Timestamp"],
    }
    if subject is not None:
        expected["sns_subject"] = subject
    assert world.publisher.messages == [(EVENTS_TOPIC, PAYLOAD.encode("utf-8"), expected)]
    assert world.gateway.fetched == [CERT_URL]
    assert world.gateway.confirmed == []


def test_the_raw_timestamp_string_is_forwarded_not_a_reformatted_one(world: World) -> None:
    raw_timestamp = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")  # no milliseconds: must stay that way
    unsigned = {k: v for k, v in notification().items() if k not in ("Signature", "SignatureVersion")}
    message = SIGNER.sign({**unsigned, "Timestamp": raw_timestamp})
    assert world.handle(message).status == 200
    assert world.publisher.messages[0][2]["sns_timestamp"] == raw_timestamp


@pytest.mark.parametrize("topic_arn", [OTHER_TOPIC_ARN, EU_TOPIC_ARN])
def test_a_notification_from_another_allowed_topic_is_published(world: World, topic_arn: str) -> None:
    message = notification(topic_arn=topic_arn)
    assert world.handle(message).status == 200
    assert world.publisher.messages[0][2]["sns_topic_arn"] == topic_arn
    assert world.gateway.fetched == [cert_url_for(topic_arn)]


def test_an_empty_message_is_published_as_empty_bytes(world: World) -> None:
    assert world.handle(notification(message="")).status == 200
    assert world.publisher.messages[0][1] == b""


def test_sns_header_names_are_matched_case_insensitively(world: World) -> None:
    message = notification()
    headers = {"X-Amz-Sns-Message-Type": "Notification", "X-AMZ-SNS-RAWDELIVERY": "false"}
    assert world.handle(message, headers).status == 200


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_subscription_confirmation_confirms_the_subscribe_url(world: World, version: str) -> None:
    message = confirmation(version=version)
    reply = world.handle(message, sns_headers(message))
    assert reply.status == 200
    assert reply.body["status"] == "subscribed"
    assert reply.body["topic_arn"] == TOPIC_ARN
    assert world.gateway.confirmed == [SUBSCRIBE_URL]
    assert world.gateway.fetched == [CERT_URL]
    assert world.publisher.messages == []


@pytest.mark.parametrize("version", ["1", "2"])
def test_an_unsubscribe_confirmation_is_acknowledged_and_nothing_else(world: World, version: str) -> None:
    message = confirmation(sns.UNSUBSCRIBE_CONFIRMATION, version=version)
    reply = world.handle(message, sns_headers(message))
    assert reply == Reply(200, {"status": "ignored"})
    world.assert_untouched()
    assert world.gateway.fetched == [CERT_URL]  # still verified before it is believed


# --- tampering -----------------------------------------------------------------------------------------


def _fresh_other_timestamp(raw: str) -> str:
    moment = datetime.fromisoformat(raw.replace("Z", "+00:00")) + timedelta(seconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


NOTIFICATION_TAMPERING = {
    "Message": lambda value: value.replace("login", "logout"),
    "MessageId": lambda value: value[:-1] + ("0" if value[-1] != "0" else "1"),
    "Subject": lambda value: value + " ",
    "Timestamp": _fresh_other_timestamp,  # still fresh: only the signature can catch it
    "TopicArn": lambda value: OTHER_TOPIC_ARN,  # still allowed: only the signature can catch it
}


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("name", NOTIFICATION_TAMPERING)
def test_each_signed_notification_field_tampered_is_refused(world: World, name: str, version: str) -> None:
    message = notification(subject="Login", version=version)
    tampered = {**message, name: NOTIFICATION_TAMPERING[name](message[name])}
    assert tampered[name] != message[name]
    reply = world.handle(tampered)
    assert reply.status == 403
    assert reply.body["error"] == "invalid_signature"
    world.assert_untouched()


@pytest.mark.parametrize(
    ("signed_subject", "sent_subject"),
    [(None, "added"), ("signed", None), ("signed", "")],
    ids=["subject-added", "subject-removed", "subject-emptied"],
)
def test_adding_removing_or_emptying_the_subject_is_refused(
    world: World, signed_subject: str | None, sent_subject: str | None
) -> None:
    message = notification(subject=signed_subject)
    tampered = {k: v for k, v in message.items() if k != "Subject"}
    if sent_subject is not None:
        tampered["Subject"] = sent_subject
    reply = world.handle(tampered)
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


@pytest.mark.parametrize("kind", [sns.SUBSCRIPTION_CONFIRMATION, sns.UNSUBSCRIBE_CONFIRMATION])
def test_changing_the_type_is_refused(world: World, kind: str) -> None:
    message = notification()
    bare = {**message, "Type": kind}
    assert world.handle(bare).status == 400  # a Notification has no SubscribeURL or Token
    completed = {**bare, "SubscribeURL": SUBSCRIBE_URL, "Token": "2336412f37"}
    reply = world.handle(completed)
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


def test_a_confirmation_relabelled_as_a_notification_is_refused(world: World) -> None:
    reply = world.handle({**confirmation(), "Type": sns.NOTIFICATION})
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


CONFIRMATION_TAMPERING = {
    "Message": lambda value: value + ".",
    "MessageId": lambda value: value[:-1] + ("0" if value[-1] != "0" else "1"),
    "SubscribeURL": lambda value: value.replace("Token=", "Token=9"),  # still a valid SNS URL
    "Timestamp": _fresh_other_timestamp,
    "Token": lambda value: value + "0",
    "TopicArn": lambda value: OTHER_TOPIC_ARN,
}


@pytest.mark.parametrize("kind", [sns.SUBSCRIPTION_CONFIRMATION, sns.UNSUBSCRIBE_CONFIRMATION])
@pytest.mark.parametrize("name", CONFIRMATION_TAMPERING)
def test_each_signed_confirmation_field_tampered_is_refused(world: World, name: str, kind: str) -> None:
    message = confirmation(kind)
    tampered = {**message, name: CONFIRMATION_TAMPERING[name](message[name])}
    reply = world.handle(tampered)
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


def test_a_signature_by_a_different_key_is_refused() -> None:
    world = make_world(FakeGateway(pem=Signer().pem))
    reply = world.handle(notification())
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


@pytest.mark.parametrize(("signed_as", "claimed"), [("2", "1"), ("1", "2")])
def test_switching_the_signature_version_is_refused(world: World, signed_as: str, claimed: str) -> None:
    reply = world.handle({**notification(version=signed_as), "SignatureVersion": claimed})
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


@pytest.mark.parametrize("signature", ["%%%not-base64%%%", "abc", "AAAA AAAA"])
def test_a_garbage_base64_signature_is_a_400_without_fetching(world: World, signature: str) -> None:
    reply = world.handle({**notification(), "Signature": signature})
    assert reply.status == 400
    assert "Signature" in reply.body["detail"]
    assert world.gateway.calls == []
    world.assert_untouched()


def test_a_truncated_signature_is_refused(world: World) -> None:
    message = notification()
    short = base64.b64encode(base64.b64decode(message["Signature"])[:-1]).decode()
    reply = world.handle({**message, "Signature": short})
    assert (reply.status, reply.body["error"]) == (403, "invalid_signature")
    world.assert_untouched()


# --- URL attacks: rejected before any network call ----------------------------------------------------

CERT_URL_ATTACKS = [
    "http://sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.evil.com/x.pem",
    "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
    "https://user@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com:443/x.pem",
    "https://sns.us-east-1.amazonaws.com/../x.pem",
    "https://sns.us-east-1.amazonaws.com/x.txt",
    "https://sns.us-east-1.amazonaws.com/x.pem?a=b",
    "https://sns.us-east-1.amazonaws.com/x.pem#f",
    "https://evil.com\\@sns.us-east-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com@evil.com/x.pem",
    "https://evil.com/x.pem",
    # Finding 4 of issue 13: SNS-looking hosts that are not the SNS host of the topic's region.
    "https://sns.s3-accelerate.amazonaws.com/x.pem",
    "https://sns.s3-website-us-east-1.amazonaws.com/x.pem",
    "https://sns.eu-west-1.amazonaws.com/x.pem",
    "https://sns.us-east-1.amazonaws.com.cn/x.pem",
]


@pytest.mark.parametrize("url", CERT_URL_ATTACKS)
def test_certificate_url_attacks_are_rejected_without_any_gateway_call(world: World, url: str) -> None:
    reply = world.handle(notification(cert_url=url))
    assert reply.status == 400
    assert reply.body["error"] == "untrusted_url"
    assert reply.body["detail"].startswith("SigningCertURL")
    assert world.gateway.calls == []
    world.assert_untouched()


SUBSCRIBE_URL_ATTACKS = [
    "http://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.evil.com/?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com.evil.com/?Action=ConfirmSubscription",
    "https://user@sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com:443/?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com/../?Action=ConfirmSubscription",
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription#f",
    "https://evil.com\\@sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://attacker.example/confirm",
    "https://sns.s3-website-us-east-1.amazonaws.com/?Action=ConfirmSubscription",
    "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription",
]


@pytest.mark.parametrize("kind", [sns.SUBSCRIPTION_CONFIRMATION, sns.UNSUBSCRIBE_CONFIRMATION])
@pytest.mark.parametrize("url", SUBSCRIBE_URL_ATTACKS)
def test_subscribe_url_attacks_are_rejected_without_any_gateway_call(
    world: World, url: str, kind: str
) -> None:
    # Validly signed by our key: even a "signed" message may not point us at a foreign host.
    reply = world.handle(confirmation(kind, subscribe_url=url))
    assert reply.status == 400
    assert reply.body["error"] == "untrusted_url"
    assert reply.body["detail"].startswith("SubscribeURL")
    assert world.gateway.calls == []
    world.assert_untouched()


def test_a_certificate_url_with_a_newline_never_reaches_the_gateway(world: World) -> None:
    world.handle(notification(cert_url=CERT_URL + "\n"))
    assert world.gateway.calls == []


def test_a_certificate_on_another_allowed_topics_region_is_refused(world: World) -> None:
    # Both topics are ours, but a us-east-1 message must be verified by the us-east-1 host.
    reply = world.handle(notification(cert_url=cert_url_for(EU_TOPIC_ARN)))
    assert (reply.status, reply.body["error"]) == (400, "untrusted_url")
    assert "sns.us-east-1.amazonaws.com" in reply.body["detail"]
    assert world.gateway.calls == []


# --- certificates and the gateway ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - timedelta(days=60), NOW - timedelta(days=1)),
        (NOW + timedelta(days=1), NOW + timedelta(days=60)),
    ],
    ids=["expired", "not-yet-valid"],
)
def test_certificates_outside_their_validity_are_a_403(not_before: datetime, not_after: datetime) -> None:
    pem = make_certificate(SIGNER.key, not_before=not_before, not_after=not_after)
    world = make_world(FakeGateway(pem=pem))
    reply = world.handle(notification())
    assert (reply.status, reply.body["error"]) == (403, "invalid_certificate")
    world.assert_untouched()


def test_validity_is_judged_by_the_injected_clock() -> None:
    world = make_world()
    world.clock.current = NOW + timedelta(days=400)  # far past the certificate's 30 days
    reply = world.handle(notification(timestamp=world.clock.current))
    assert (reply.status, reply.body["error"]) == (403, "invalid_certificate")
    world.assert_untouched()


@pytest.mark.parametrize("pem", [b"", b"garbage", b"<html>Access Denied</html>"])
def test_a_garbage_certificate_is_a_400(pem: bytes) -> None:
    world = make_world(FakeGateway(pem=pem))
    reply = world.handle(notification())
    assert (reply.status, reply.body["error"]) == (400, "invalid_certificate")
    world.assert_untouched()


# Finding 5 of issue 13: only parsed, valid certificates are kept; a bad fetch is fetched again.


def test_a_certificate_is_fetched_once_per_url_while_valid(world: World) -> None:
    for _ in range(3):
        assert world.handle(notification()).status == 200
    assert world.handle(notification(topic_arn=EU_TOPIC_ARN)).status == 200
    assert world.gateway.fetched == [CERT_URL, cert_url_for(EU_TOPIC_ARN)]


@pytest.mark.parametrize(
    "first",
    [
        b"<html>Access Denied</html>",
        b"",
        make_certificate(SIGNER.key, not_after=NOW - timedelta(seconds=1)),
        make_certificate(SIGNER.key, not_before=NOW + timedelta(seconds=1)),
    ],
    ids=["garbage", "empty", "expired", "not-yet-valid"],
)
def test_a_certificate_that_failed_is_not_kept_and_the_retry_fetches_again(
    world: World, first: bytes
) -> None:
    world.gateway.pem = first
    assert world.handle(notification()).status in (400, 403)
    world.gateway.pem = SIGNER.pem  # the host serves the real certificate again; SNS retries
    assert world.handle(notification()).status == 200
    assert world.gateway.fetched == [CERT_URL, CERT_URL]


@pytest.mark.parametrize(
    "error", [PermanentError("SNS host answered 404"), TransientError("SNS host unreachable: Timeout")]
)
def test_a_failed_fetch_is_not_kept_and_the_retry_fetches_again(world: World, error: Exception) -> None:
    world.gateway.fetch_error = error
    assert world.handle(notification()).status in (400, 503)
    world.gateway.fetch_error = None
    assert world.handle(notification()).status == 200
    assert world.gateway.fetched == [CERT_URL, CERT_URL]


def test_a_kept_certificate_that_expires_is_fetched_again() -> None:
    pem = make_certificate(SIGNER.key, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(hours=1))
    world = make_world(FakeGateway(pem=pem))
    assert world.handle(notification()).status == 200
    world.clock.advance(hours=1, seconds=1)
    world.gateway.pem = SIGNER.pem  # the renewed certificate
    assert world.handle(notification(timestamp=world.clock.current)).status == 200
    assert world.gateway.fetched == [CERT_URL, CERT_URL]


def test_the_certificate_cache_keeps_the_most_recently_used() -> None:
    cache = CertificateCache(size=2)
    certificate = sns.parse_certificate(SIGNER.pem)
    for url in ("a", "b"):
        cache.put(url, certificate, NOW)
    assert cache.get("a", NOW) is certificate  # "a" is now the most recently used
    cache.put("c", certificate, NOW)
    assert [url for url in "abc" if cache.get(url, NOW)] == ["a", "c"]


def test_the_certificate_cache_never_keeps_or_returns_an_invalid_certificate() -> None:
    cache = CertificateCache()
    certificate = sns.parse_certificate(SIGNER.pem)
    cache.put("late", certificate, certificate.not_after + timedelta(seconds=1))
    assert cache.get("late", NOW) is None
    cache.put("kept", certificate, NOW)
    assert cache.get("kept", certificate.not_after + timedelta(seconds=1)) is None
    assert cache.get("kept", NOW) is None  # dropped, not merely hidden


def test_a_permanent_gateway_failure_is_a_400() -> None:
    world = make_world(FakeGateway(fetch_error=PermanentError("SNS host answered 404")))
    reply = world.handle(notification())
    assert (reply.status, reply.body["error"]) == (400, "invalid_certificate")
    assert "404" in reply.body["detail"]
    world.assert_untouched()


def test_a_transient_gateway_failure_is_a_503_so_sns_retries() -> None:
    world = make_world(FakeGateway(fetch_error=TransientError("SNS host unreachable: Timeout")))
    reply = world.handle(notification())
    assert reply.status == 503
    assert reply.body == {"error": "temporarily_unavailable", "detail": "try again later"}
    world.assert_untouched()


def test_a_publish_failure_is_a_503_and_the_retry_publishes_once() -> None:
    world = make_world(publisher=FailingPublisher(failures=1))
    message = notification()
    first = world.handle(message)
    assert first.status == 503
    assert world.publisher.messages == []
    second = world.handle(message)  # SNS redelivers the same message
    assert second.status == 200
    assert [data for _, data, _ in world.publisher.messages] == [PAYLOAD.encode()]


def test_a_transient_confirmation_failure_is_a_503() -> None:
    world = make_world(FakeGateway(confirm_error=TransientError("SNS host answered 503")))
    reply = world.handle(confirmation())
    assert reply.status == 503
    assert world.gateway.confirmed == [SUBSCRIBE_URL]
    assert world.publisher.messages == []


def test_a_permanent_confirmation_failure_is_a_400() -> None:
    world = make_world(FakeGateway(confirm_error=PermanentError("SNS host answered 403")))
    reply = world.handle(confirmation())
    assert (reply.status, reply.body["error"]) == (400, "confirmation_failed")
    assert world.publisher.messages == []


# --- freshness (FakeClock) ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (-timedelta(hours=1, seconds=1), "stale_message"),
        (-timedelta(days=3), "stale_message"),
        (sns.FUTURE_SKEW + timedelta(seconds=1), "future_message"),
        (timedelta(days=1), "future_message"),
    ],
)
def test_stale_and_future_messages_are_a_400_without_fetching(
    world: World, offset: timedelta, code: str
) -> None:
    reply = world.handle(notification(timestamp=NOW + offset))
    assert (reply.status, reply.body["error"]) == (400, code)
    assert world.gateway.calls == []
    world.assert_untouched()


@pytest.mark.parametrize("offset", [-timedelta(hours=1), sns.FUTURE_SKEW, timedelta(0)])
def test_messages_just_inside_both_limits_pass(world: World, offset: timedelta) -> None:
    assert world.handle(notification(timestamp=NOW + offset)).status == 200
    assert len(world.publisher.messages) == 1


def test_the_age_limit_follows_the_clock(world: World) -> None:
    message = notification()
    world.clock.advance(minutes=59, seconds=59)
    assert world.handle(message).status == 200
    world.clock.advance(seconds=2)
    assert world.handle(message).body["error"] == "stale_message"


def test_the_age_limit_comes_from_the_settings() -> None:
    world = make_world(max_message_age=timedelta(minutes=90))
    assert world.handle(notification(timestamp=NOW - timedelta(minutes=80))).status == 200
    assert world.handle(notification(timestamp=NOW - timedelta(minutes=91))).status == 400


# --- trust ----------------------------------------------------------------------------------------------


def test_an_untrusted_topic_is_echoed_truncated() -> None:
    world = make_world(allowed_topic_arns=frozenset({OTHER_TOPIC_ARN}))
    reply = world.handle({**notification(), "TopicArn": "arn:aws:sns:us-east-1:123456789012:" + "t" * 10_000})
    assert (reply.status, reply.body["error"]) == (403, "untrusted_topic")
    assert len(reply.body["detail"]) <= 200


def test_a_validly_signed_message_from_an_untrusted_topic_is_a_403_without_fetching() -> None:
    world = make_world(allowed_topic_arns=frozenset({OTHER_TOPIC_ARN}))
    reply = world.handle(notification())
    assert (reply.status, reply.body["error"]) == (403, "untrusted_topic")
    assert TOPIC_ARN in reply.body["detail"]
    assert world.gateway.calls == []
    world.assert_untouched()


def test_a_subscription_to_an_untrusted_topic_is_never_confirmed() -> None:
    world = make_world(allowed_topic_arns=frozenset({OTHER_TOPIC_ARN}))
    reply = world.handle(confirmation())
    assert (reply.status, reply.body["error"]) == (403, "untrusted_topic")
    assert world.gateway.calls == []


# --- shape ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"hello", "not JSON"),
        (b"\x80\x81", "not JSON"),
        (b"[]", "JSON object"),
        (b'[{"Type": "Notification"}]', "JSON object"),
        (b'{"Type": "Spam"}', "Type"),
    ],
)
def test_bodies_that_are_not_envelopes_are_a_400(world: World, payload: bytes, detail: str) -> None:
    reply = world.handle(payload)
    assert reply.status == 400
    assert detail in reply.body["detail"]
    assert world.gateway.calls == []
    world.assert_untouched()


@pytest.mark.parametrize(
    "name",
    [
        "Message",
        "MessageId",
        "Timestamp",
        "TopicArn",
        "Type",
        "SignatureVersion",
        "Signature",
        "SigningCertURL",
    ],
)
def test_each_required_field_removed_is_a_400_naming_it(world: World, name: str) -> None:
    message = notification()
    del message[name]
    reply = world.handle(message)
    assert reply.status == 400
    assert name in reply.body["detail"]
    assert world.gateway.calls == []
    world.assert_untouched()


@pytest.mark.parametrize(
    "name",
    ["Message", "MessageId", "Timestamp", "TopicArn", "SignatureVersion", "Signature", "SigningCertURL"],
)
def test_each_required_field_as_a_number_is_a_400_naming_it(world: World, name: str) -> None:
    reply = world.handle({**notification(), name: 42})
    assert reply.status == 400
    assert reply.body["detail"] == f"{name} must be a string, not int"
    assert world.gateway.calls == []


def test_signature_version_3_is_a_400(world: World) -> None:
    reply = world.handle({**notification(), "SignatureVersion": "3"})
    assert reply.status == 400
    assert "SignatureVersion" in reply.body["detail"]
    assert world.gateway.calls == []


@pytest.mark.parametrize("declared", ["SubscriptionConfirmation", "UnsubscribeConfirmation", "notification"])
def test_a_message_type_header_disagreeing_with_the_body_is_a_400(world: World, declared: str) -> None:
    message = notification()
    reply = world.handle(message, {**sns_headers(message), "x-amz-sns-message-type": declared})
    assert reply.status == 400
    assert declared in reply.body["detail"]
    assert world.gateway.calls == []
    world.assert_untouched()


def test_a_long_message_type_header_is_echoed_truncated(world: World) -> None:
    message = notification()
    reply = world.handle(message, {"x-amz-sns-message-type": "N" * 10_000})
    assert (reply.status, reply.body["error"]) == (400, "invalid_envelope")
    assert len(reply.body["detail"]) <= 200


# Finding 3 of issue 13: each of these escaped from handle() as an exception (a 500 over HTTP).
HOSTILE_BODIES = {
    "deep-nesting": b"[" * 200_000,
    "deep-nesting-in-a-field": body({"Type": "Notification"}).replace(b'"Notification"', b"[" * 50_000),
    "huge-integer": b'{"Type": ' + b"9" * 10_000 + b"}",
    "lone-surrogate-in-message": body(notification(message="PLACEHOLDER")).replace(
        b"PLACEHOLDER", b"\\ud800"
    ),
    "lone-surrogate-in-subject": body(notification(subject="PLACEHOLDER")).replace(
        b"PLACEHOLDER", b"\\udfff"
    ),
    "utf8-encoded-surrogate": body(notification(message="PLACEHOLDER")).replace(
        b"PLACEHOLDER", b"\xed\xa0\x80"
    ),
}


@pytest.mark.parametrize("payload", HOSTILE_BODIES.values(), ids=HOSTILE_BODIES.keys())
def test_hostile_bodies_are_a_short_400_without_an_error_log(
    world: World, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    caplog.set_level(logging.DEBUG)
    reply = world.handle(payload, {})
    assert reply.status == 400
    assert reply.body["error"] in ("invalid_json", "invalid_envelope")
    assert len(reply.body["detail"]) <= 200
    assert world.gateway.calls == []
    world.assert_untouched()
    assert [r.levelname for r in caplog.records] == ["WARNING"]


@pytest.mark.parametrize("value", ["true", "True", "TRUE"])
@pytest.mark.parametrize("header", ["x-amz-sns-rawdelivery", "X-Amz-Sns-Rawdelivery"])
def test_raw_delivery_is_a_400_telling_the_operator_to_disable_it(
    world: World, header: str, value: str
) -> None:
    for payload in (PAYLOAD.encode(), body(notification())):  # a raw body, or even a signed envelope
        reply = world.handle(payload, {header: value})
        assert reply.status == 400
        assert reply.body["error"] == "raw_delivery"
        assert reply.body["detail"] == RAW_DELIVERY_HINT
    assert "disable RawMessageDelivery" in RAW_DELIVERY_HINT
    assert world.gateway.calls == []
    world.assert_untouched()


# --- logs ----------------------------------------------------------------------------------------------

SECRET = "card-4111111111111111-do-not-log"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: {**notification(message=SECRET), "MessageId": "tampered"}, "invalid_signature"),
        (lambda: notification(message=SECRET, cert_url="https://evil.com/x.pem"), "untrusted_url"),
        (lambda: notification(message=SECRET, timestamp=NOW - timedelta(days=1)), "stale_message"),
        (lambda: {**notification(message=SECRET), "Signature": "!"}, "invalid_envelope"),
        (lambda: {**notification(message=SECRET), "Timestamp": 5}, "invalid_envelope"),
    ],
)
def test_a_rejection_logs_a_warning_with_the_reason_but_never_the_payload(
    world: World, caplog: pytest.LogCaptureFixture, make: Any, reason: str
) -> None:
    message = make()
    caplog.set_level(logging.DEBUG)
    reply = world.handle(message, sns_headers(message))
    assert reply.body["error"] == reason
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    fields = warnings[0].fields  # type: ignore[attr-defined]
    assert fields["reason"] == reason
    assert fields["status"] == reply.status
    assert fields["sns_message_id"] == message["MessageId"]
    entry = json.loads(JsonFormatter().format(warnings[0]))
    assert entry["severity"] == "WARNING"
    assert entry["reason"] == reason
    assert SECRET not in all_log_text(caplog.records)


def test_rejecting_a_raw_delivery_never_logs_the_raw_payload(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world.handle(SECRET.encode(), {"x-amz-sns-rawdelivery": "true", "x-amz-sns-message-id": "m-1"})
    assert [r.fields["reason"] for r in caplog.records] == ["raw_delivery"]  # type: ignore[attr-defined]
    assert SECRET not in all_log_text(caplog.records)


def test_non_json_bodies_are_never_echoed_into_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world.handle(f"{{not json {SECRET}".encode(), {})
    assert caplog.records
    assert SECRET not in all_log_text(caplog.records)


def test_successes_and_retries_never_log_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    world = make_world(publisher=FailingPublisher(failures=1))
    message = notification(message=SECRET)
    assert world.handle(message, sns_headers(message)).status == 503
    assert world.handle(message, sns_headers(message)).status == 200
    levels = [r.levelname for r in caplog.records]
    assert levels == ["ERROR", "INFO"]
    assert SECRET not in all_log_text(caplog.records)


def test_logged_header_ids_are_truncated(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    world.handle(b"nope", {"x-amz-sns-message-id": "x" * 10_000})
    assert len(caplog.records[0].fields["sns_message_id"]) == 256  # type: ignore[attr-defined]


# --- properties -----------------------------------------------------------------------------------------

# No example database: every run is a fresh search, and the suite leaves no state behind between runs.
PROPERTY = settings(
    max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

header_values = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["true", "True", "false", "Notification", "SubscriptionConfirmation", ""]),
)
headers_strategy = st.dictionaries(
    st.one_of(
        st.sampled_from(
            [
                "x-amz-sns-message-type",
                "X-Amz-Sns-Message-Type",
                "x-amz-sns-rawdelivery",
                "x-amz-sns-message-id",
                "x-amz-sns-topic-arn",
                "Content-Type",
            ]
        ),
        st.text(max_size=20),
    ),
    header_values,
    max_size=6,
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
SNS_KEYS = [
    "Type",
    "MessageId",
    "TopicArn",
    "Message",
    "Subject",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "SubscribeURL",
    "Token",
    "UnsubscribeURL",
]
plausible_strings = st.sampled_from(
    [
        "Notification",
        "SubscriptionConfirmation",
        "UnsubscribeConfirmation",
        "1",
        "2",
        TOPIC_ARN,
        OTHER_TOPIC_ARN,
        CERT_URL,
        SUBSCRIBE_URL,
        "https://sns.evil.com/x.pem",
        "http://sns.us-east-1.amazonaws.com/x.pem",
        NOW.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        (NOW - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        base64.b64encode(b"\x01" * 256).decode(),
        "",
    ]
)


sns_like_documents = st.dictionaries(
    st.sampled_from(SNS_KEYS) | st.text(max_size=10),
    plausible_strings | json_values,
    max_size=len(SNS_KEYS) + 2,
)


def _assert_harmless(world: World, reply: Reply) -> None:
    """Nothing a forger can send gets a 5xx, a publish, a confirmation, or a fetch of an unchecked URL."""
    assert 200 <= reply.status < 500
    assert reply.status != 200
    assert set(reply.body) == {"error", "detail"}
    assert world.publisher.messages == []
    assert world.gateway.confirmed == []
    for url in world.gateway.fetched:
        assert sns.check_cert_url(url, TOPIC_ARN) == url


@PROPERTY
@given(payload=st.binary(max_size=2048), headers=headers_strategy)
def test_arbitrary_bytes_are_refused_harmlessly(payload: bytes, headers: dict[str, str]) -> None:
    world = make_world()
    _assert_harmless(world, world.handle(payload, headers))
    assert world.gateway.calls == []


@PROPERTY
@given(document=json_values, headers=headers_strategy)
def test_arbitrary_json_is_refused_harmlessly(document: Any, headers: dict[str, str]) -> None:
    world = make_world()
    _assert_harmless(world, world.handle(json.dumps(document).encode(), headers))
    assert world.gateway.calls == []


@PROPERTY
@given(document=sns_like_documents, headers=headers_strategy)
def test_sns_shaped_documents_are_refused_harmlessly(
    document: dict[str, Any], headers: dict[str, str]
) -> None:
    world = make_world()
    _assert_harmless(world, world.handle(json.dumps(document).encode(), headers))


@PROPERTY
@given(document=sns_like_documents, headers=headers_strategy)
@example(document={"Type": ["Notification"]}, headers={})
@example(document={**notification(), "Signature": "é"}, headers={})
@example(document={**notification(), "Timestamp": "0001-01-01T00:00:00+01:00"}, headers={})
def test_sns_shaped_documents_including_former_crashes_are_refused_harmlessly(
    document: dict[str, Any], headers: dict[str, str]
) -> None:
    world = make_world()
    _assert_harmless(world, world.handle(json.dumps(document).encode(), headers))


SIGNED = {
    "notification": notification(subject="Login"),
    "notification-v1": notification(version="1"),
    "subscription": confirmation(),
    "unsubscribe": confirmation(sns.UNSUBSCRIBE_CONFIRMATION),
}
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("delete"), st.sampled_from(SNS_KEYS)),
        st.tuples(st.just("set"), st.sampled_from(SNS_KEYS), plausible_strings | json_values),
        st.tuples(st.just("flip"), st.sampled_from(SNS_KEYS), st.integers(0, 400), st.characters()),
        st.tuples(st.just("add"), st.text(max_size=10), json_values),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(original: dict[str, Any], steps: list[tuple[Any, ...]]) -> dict[str, Any]:
    document = dict(original)
    for step in steps:
        if step[0] == "delete":
            document.pop(step[1], None)
        elif step[0] == "set":
            document[step[1]] = step[2]
        elif step[0] == "flip" and isinstance(document.get(step[1]), str) and document[step[1]]:
            value = document[step[1]]
            position = step[2] % len(value)
            document[step[1]] = value[:position] + step[3] + value[position + 1 :]
        elif step[0] == "add" and step[1] not in SNS_KEYS:
            document[step[1]] = step[2]
    return document


def _signed_content_intact(original: dict[str, Any], mutated: dict[str, Any]) -> bool:
    """Whether every field the signature covers (and the signature itself) survived the mutation."""
    names = [*sns.SIGNED_FIELDS[original["Type"]], "Type", "SignatureVersion"]
    if any(mutated.get(name) != original.get(name) for name in names):
        return False
    try:  # base64 has several spellings of the same bytes (the unused bits of the last character)
        return base64.b64decode(mutated.get("Signature", ""), validate=True) == base64.b64decode(
            original["Signature"]
        )
    except (ValueError, TypeError):
        return False


@PROPERTY
@given(kind=st.sampled_from(sorted(SIGNED)), steps=mutations, headers=headers_strategy)
def test_mutations_of_a_signed_message_are_accepted_only_if_the_signed_content_is_intact(
    kind: str, steps: list[tuple[Any, ...]], headers: dict[str, str]
) -> None:
    original = SIGNED[kind]
    mutated = _mutate(original, steps)
    world = make_world()
    reply = world.handle(json.dumps(mutated).encode(), headers)
    assert reply.status < 500
    for url in world.gateway.fetched:
        assert sns.check_cert_url(url, TOPIC_ARN) == url
    for url in world.gateway.confirmed:
        assert sns.check_sns_url(url, "SubscribeURL", TOPIC_ARN) == url
    if world.publisher.messages or world.gateway.confirmed or reply.status == 200:
        assert _signed_content_intact(original, mutated), reply
    if world.publisher.messages:
        assert world.publisher.messages == [
            (EVENTS_TOPIC, original["Message"].encode(), world.publisher.messages[0][2])
        ]
        assert world.publisher.messages[0][2]["sns_message_id"] == original["MessageId"]
    if not _signed_content_intact(original, mutated):
        assert 400 <= reply.status < 500
        assert world.publisher.messages == []
        assert world.gateway.confirmed == []
