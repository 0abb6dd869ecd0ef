"""The bridge with its real adapters: the Pub/Sub client on the emulator, and real HTTP to a local
server playing the SNS host (certificates and SubscribeURL), reached through SNS_CERT_BASE_URL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from jupiter_data.adapters.clients import publisher_client
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.domain import sns
from jupiter_data.local.pubsub_emulator import PubSubEmulator
from jupiter_data.local.supervisor import free_port
from jupiter_data.local.tap import TopicTap
from jupiter_data.services.bridge import Bridge, BridgeSettings, bootstrap
from jupiter_data.settings import Settings
from tests.sns_signing import CERT_URL, TOPIC_ARN, Signer, body, make_certificate


@dataclass
class SnsHost:
    """A real HTTP server answering what SNS hosts answer; records every request path."""

    pem: bytes
    requests: list[str] = field(default_factory=list)
    status: int = 200

    def __post_init__(self) -> None:
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append(self.path)
                payload = host.pem if self.path.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"
                self.send_response(host.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer()


@pytest.fixture
def sns_host(signer: Signer) -> Iterator[SnsHost]:
    host = SnsHost(signer.pem)
    yield host
    host.server.shutdown()
    host.server.server_close()


def make_bridge(settings: Settings, base_url: str, timeout: float = 10.0) -> Bridge:
    bridge_settings = BridgeSettings(
        allowed_topic_arns=frozenset({TOPIC_ARN}),
        max_message_age=timedelta(hours=1),
        events_topic="sns-events",
        cert_base_url=base_url,
    )
    publisher = PubSubPublisher(publisher_client(settings), settings.project, timeout=timeout)
    return bootstrap(settings, bridge_settings=bridge_settings, publisher=publisher)


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_verified_notification_lands_on_the_topic_byte_for_byte(
    settings: Settings, sns_host: SnsHost, signer: Signer, version: str
) -> None:
    bridge = make_bridge(settings, sns_host.base_url)
    payload = '{"userId": "ü-1", "eventType": "savings.deposit", "timestamp": 1700000000000, "hash": "x"}'
    message = signer.notification(payload, subject="Deposit", version=version)
    with TopicTap(settings, "sns-events") as tap:
        reply = bridge.handle(body(message), {"x-amz-sns-message-type": "Notification"})
        (received,) = tap.collect(1, timeout=10)
    assert reply.status == 200
    assert reply.body["message_id"] == received.message_id
    assert received.data == payload.encode()
    assert dict(received.attributes) == {
        "sns_message_id": message["MessageId"],
        "sns_topic_arn": TOPIC_ARN,
        "sns_timestamp": message["Timestamp"],
        "sns_subject": "Deposit",
    }
    assert sns_host.requests == [urlsplit(CERT_URL).path]


def test_the_certificate_is_fetched_once_per_url(
    settings: Settings, sns_host: SnsHost, signer: Signer
) -> None:
    bridge = make_bridge(settings, sns_host.base_url)
    replies = [bridge.handle(body(signer.notification()), {}).status for _ in range(5)]
    assert replies == [200] * 5
    assert sns_host.requests == [urlsplit(CERT_URL).path]


@pytest.mark.parametrize("served_first", ["garbage", "expired"])
def test_a_bad_certificate_response_is_not_kept_and_the_retry_fetches_again(
    settings: Settings, sns_host: SnsHost, signer: Signer, served_first: str
) -> None:
    """Finding 5 of issue 13: the gateway kept the raw bytes of any 200, so one bad answer from the
    certificate host failed every later message signed with that certificate."""
    now = datetime.now(UTC)
    sns_host.pem = {
        "garbage": b"<html>Access Denied</html>",
        "expired": make_certificate(signer.key, now - timedelta(days=30), now - timedelta(days=1)),
    }[served_first]
    bridge = make_bridge(settings, sns_host.base_url)
    message = body(signer.confirmation(sns.UNSUBSCRIBE_CONFIRMATION))  # verified, then nothing to do
    assert bridge.handle(message, {}).body["error"] == "invalid_certificate"
    sns_host.pem = signer.pem
    assert bridge.handle(message, {}).status == 200
    assert bridge.handle(message, {}).status == 200
    assert sns_host.requests == [urlsplit(CERT_URL).path] * 2  # the good certificate is kept


def test_a_subscription_confirmation_gets_the_subscribe_url(
    settings: Settings, sns_host: SnsHost, signer: Signer
) -> None:
    bridge = make_bridge(settings, sns_host.base_url)
    confirmation = signer.confirmation()
    with TopicTap(settings, "sns-events") as tap:
        reply = bridge.handle(body(confirmation), {})
        published = tap.collect(1, timeout=1)
    assert reply.status == 200
    assert reply.body["status"] == "subscribed"
    confirm = urlsplit(confirmation["SubscribeURL"])
    assert sns_host.requests[-1] == f"{confirm.path}?{confirm.query}"
    assert published == [], "a confirmation is not an event"


def test_an_unreachable_certificate_host_is_retryable_and_a_missing_certificate_is_not(
    settings: Settings, sns_host: SnsHost, signer: Signer
) -> None:
    unreachable = make_bridge(settings, f"http://127.0.0.1:{free_port()}")
    assert unreachable.handle(body(signer.notification()), {}).status == 503
    sns_host.status = 404
    missing = make_bridge(settings, sns_host.base_url)
    reply = missing.handle(body(signer.notification()), {})
    assert (reply.status, reply.body["error"]) == (400, "invalid_certificate")


def test_with_pubsub_down_the_bridge_answers_5xx_and_the_sns_retry_is_delivered(
    sns_host: SnsHost, signer: Signer
) -> None:
    port = free_port()
    settings = Settings.from_env(
        {"GOOGLE_CLOUD_PROJECT": "jupiter-outage", "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}"}
    )
    emulator = PubSubEmulator(port=port)
    emulator.start()
    client = publisher_client(settings)
    client.create_topic(name=client.topic_path(settings.project, "sns-events"))
    emulator.stop()

    bridge = make_bridge(settings, sns_host.base_url, timeout=3)
    message = signer.notification('{"userId": "u-outage"}')
    reply = bridge.handle(body(message), {})
    assert reply.status == 503, "SNS must retry what was not safely published"
    assert reply.body == {"error": "temporarily_unavailable", "detail": "try again later"}

    # Pub/Sub comes back (fresh state, as after a restart), and SNS delivers the same message again.
    emulator = PubSubEmulator(port=port)
    emulator.start()
    try:
        client.create_topic(name=client.topic_path(settings.project, "sns-events"))
        with TopicTap(settings, "sns-events") as tap:
            assert bridge.handle(body(message), {}).status == 200
            received = tap.collect(1, timeout=20)
        # At least once: a copy the client still retried in the background may also arrive; each
        # carries the SNS message id the loader deduplicates on.
        assert {m.data for m in received} == {b'{"userId": "u-outage"}'}
        assert {m.attributes["sns_message_id"] for m in received} == {message["MessageId"]}
    finally:
        emulator.stop()
