"""The HTTP entry point of ``sns_to_pubsub`` as functions-framework serves it, on a bridge built from fakes.

``create_app`` executes ``main.py`` afresh on every call (a new module object), so each test gets a cold
start of its own; the fixture undoes what that cold start changes in the process (settings caches, the
root logger, ``sys.path`` and ``sys.modules['main']``) so the tests pass in any order.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import functions_framework
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jupiter_data.ports import TransientError
from jupiter_data.services import bridge
from jupiter_data.settings import SettingsError, clear_settings_cache
from tests.conftest import REPO_ROOT
from tests.fakes import FakeClock, FakePublisher
from tests.sns_signing import CERT_URL, SUBSCRIBE_URL, TOPIC_ARN, Signer, body

SOURCE = str(REPO_ROOT / "functions" / "sns_to_pubsub" / "main.py")
MAX_BODY = 300 * 1024
NOW = datetime.now(UTC).replace(microsecond=0)
PAYLOAD = '{"user": "ü-1", "event": "savings ☃", "amount": 12.5}'
SIGNER = Signer()
BRIDGE_ENV = ("SNS_ALLOWED_TOPIC_ARNS", "SNS_MAX_MESSAGE_AGE", "SNS_EVENTS_TOPIC", "SNS_CERT_BASE_URL")
BASE_ENV = (
    "JUPITER_ENV",
    "LOG_LEVEL",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_HOST",
)


@dataclass
class RecordingGateway:
    pem: bytes = SIGNER.pem
    fetched: list[str] = field(default_factory=list)
    confirmed: list[str] = field(default_factory=list)

    def fetch_certificate(self, url: str) -> bytes:
        self.fetched.append(url)
        return self.pem

    def confirm_subscription(self, url: str) -> None:
        self.confirmed.append(url)


class FlakyPublisher(FakePublisher):
    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        if self.down:
            raise TransientError("pubsub unavailable")
        return super().publish(topic, data, attributes)


@dataclass
class Served:
    client: Any
    gateway: RecordingGateway
    publisher: FlakyPublisher


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean environment for a cold start, and everything a cold start touches put back afterwards."""
    for name in (*BRIDGE_ENV, *BASE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "jupiter-test")
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends the function's folder
    monkeypatch.delitem(sys.modules, "main", raising=False)  # ... and registers the module as 'main'
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    clear_settings_cache()
    yield monkeypatch
    clear_settings_cache()
    root.handlers, root.level = handlers, level  # cold_start() installed its JSON handler


@pytest.fixture
def served(isolated: pytest.MonkeyPatch) -> Served:
    isolated.setenv("SNS_ALLOWED_TOPIC_ARNS", TOPIC_ARN)
    isolated.setenv("SNS_EVENTS_TOPIC", "http-test-events")
    gateway, publisher = RecordingGateway(), FlakyPublisher()
    app = functions_framework.create_app(target="sns_to_pubsub", source=SOURCE, signature_type="http")
    # The settings the cold start read from the environment, with fakes instead of SNS and Pub/Sub.
    main = sys.modules["main"]
    fake = bridge.bootstrap(
        main.settings,
        bridge_settings=main.bridge_settings,
        gateway=gateway,
        publisher=publisher,
        clock=FakeClock(NOW),
    )
    isolated.setattr(main, "bridge", lambda: fake)
    return Served(app.test_client(), gateway, publisher)


def notification(**kwargs: Any) -> dict[str, Any]:
    return SIGNER.notification(kwargs.pop("message", PAYLOAD), timestamp=NOW, **kwargs)


def post(served: Served, message: dict[str, Any] | bytes, **headers: str) -> Any:
    payload = message if isinstance(message, bytes) else body(message)
    sns_headers = {"Content-Type": "text/plain; charset=UTF-8"}
    if isinstance(message, dict):
        sns_headers |= {
            "x-amz-sns-message-type": message["Type"],
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": message["TopicArn"],
        }
    return served.client.post("/", data=payload, headers={**sns_headers, **headers})


def assert_json_error(response: Any, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert set(document) == {"error", "detail"}
    assert document["error"] == error
    assert isinstance(document["detail"], str) and document["detail"]
    return document


# --- happy paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", [None, "Savings ü"])
def test_a_signed_notification_sent_as_text_plain_is_published(served: Served, subject: str | None) -> None:
    message = notification(subject=subject)
    response = post(served, message)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {"status": "published", "message_id": "1"}
    ((topic, data, attributes),) = served.publisher.messages
    assert topic == "http-test-events"  # SNS_EVENTS_TOPIC, read at cold start
    assert data == PAYLOAD.encode("utf-8")
    assert attributes["sns_message_id"] == message["MessageId"]
    assert attributes["sns_timestamp"] == message["Timestamp"]
    assert attributes.get("sns_subject") == subject
    assert served.gateway.fetched == [CERT_URL]


def test_a_subscription_confirmation_is_confirmed(served: Served) -> None:
    message = SIGNER.confirmation(timestamp=NOW)
    response = post(served, message)
    assert response.status_code == 200
    assert response.get_json()["status"] == "subscribed"
    assert served.gateway.confirmed == [SUBSCRIBE_URL]
    assert served.publisher.messages == []


def test_an_unsubscribe_confirmation_is_acknowledged(served: Served) -> None:
    response = post(served, SIGNER.confirmation("UnsubscribeConfirmation", timestamp=NOW))
    assert response.status_code == 200
    assert response.get_json() == {"status": "ignored"}
    assert served.gateway.confirmed == []
    assert served.publisher.messages == []


def test_a_body_of_exactly_the_limit_reaches_the_bridge(served: Served) -> None:
    message = notification(message="")
    padded = body(message)
    padded = padded[:-1] + b" " * (MAX_BODY - len(padded)) + b"}"  # JSON whitespace up to the limit
    assert len(padded) == MAX_BODY
    assert post(served, padded).status_code == 200
    assert served.publisher.messages[0][1] == b""


# --- HTTP-level refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_post_are_a_405(served: Served, method: str) -> None:
    response = served.client.open("/", method=method, data=body(notification()))
    assert_json_error(response, 405, "method_not_allowed")
    assert served.publisher.messages == []
    assert served.gateway.fetched == []


def test_an_oversized_body_with_a_content_length_is_a_413(served: Served) -> None:
    response = post(served, b"x" * (MAX_BODY + 1))
    assert_json_error(response, 413, "too_large")
    assert served.gateway.fetched == []


def test_an_oversized_body_without_a_content_length_is_a_413(served: Served) -> None:
    # As gunicorn serves a chunked request: no Content-Length, and a terminated input stream.
    response = served.client.post(
        "/",
        input_stream=io.BytesIO(b"x" * (MAX_BODY + 1)),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.request.content_length is None  # chunked: the function sees no length to check
    assert_json_error(response, 413, "too_large")
    assert served.gateway.fetched == []


def test_a_signed_notification_without_a_content_length_is_still_published(served: Served) -> None:
    message = notification()
    response = served.client.post(
        "/",
        input_stream=io.BytesIO(body(message)),
        headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain; charset=UTF-8"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 200
    assert served.publisher.messages[0][1] == PAYLOAD.encode()


# --- bridge answers over HTTP -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "headers", "status", "error"),
    [
        (b"not json", {}, 400, "invalid_json"),
        (b"[1]", {}, 400, "invalid_envelope"),
        (b"{}", {}, 400, "invalid_envelope"),
        (PAYLOAD.encode(), {"x-amz-sns-rawdelivery": "true"}, 400, "raw_delivery"),
        (body(notification(cert_url="https://sns.evil.com/x.pem")), {}, 400, "untrusted_url"),
        (body({**notification(), "Message": "forged"}), {}, 403, "invalid_signature"),
        (
            body(notification(topic_arn="arn:aws:sns:us-east-1:123456789012:other")),
            {},
            403,
            "untrusted_topic",
        ),
    ],
)
def test_refusals_are_json_with_error_and_detail(
    served: Served, payload: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    assert_json_error(post(served, payload, **headers), status, error)
    assert served.publisher.messages == []
    assert served.gateway.confirmed == []


def test_raw_delivery_tells_the_operator_what_to_change(served: Served) -> None:
    response = post(served, PAYLOAD.encode(), **{"x-amz-sns-rawdelivery": "true"})
    detail = assert_json_error(response, 400, "raw_delivery")["detail"]
    assert "RawMessageDelivery" in detail
    assert "disable" in detail


def test_a_publish_failure_is_a_503_json_and_the_retry_succeeds(served: Served) -> None:
    message = notification()
    served.publisher.down = True
    assert_json_error(post(served, message), 503, "temporarily_unavailable")
    served.publisher.down = False
    assert post(served, message).status_code == 200
    assert len(served.publisher.messages) == 1


def test_a_rejection_is_logged_as_a_warning_without_the_payload(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "iban-DE89370400440532013000"
    caplog.set_level(logging.INFO)
    message = {**notification(message=secret), "MessageId": "forged-id"}
    assert post(served, message).status_code == 403
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.levelname == "WARNING"
    assert warning.fields["reason"] == "invalid_signature"  # type: ignore[attr-defined]
    assert warning.fields["sns_message_id"] == "forged-id"  # type: ignore[attr-defined]
    for record in caplog.records:
        assert secret not in record.getMessage()
        assert secret not in json.dumps(getattr(record, "fields", {}), default=str)


# --- hostile bodies (finding 3 of issue 13): a short 4xx, never a 5xx or an ERROR log ------------------

SIGNED = notification()


def with_field(name: str, value: str) -> bytes:
    """The signed notification with one field replaced, spelt as JSON allows (a lone surrogate too)."""
    return json.dumps({**SIGNED, name: value}, ensure_ascii=False).encode("utf-8", "surrogatepass")


FORMER_500S = {
    "deep-nesting": b"[" * 200_000,
    "lone-surrogate-escaped": body({**SIGNED, "Message": "\ud800"}),
    "lone-surrogate-utf8": with_field("Message", "\udfff"),
    "huge-integer": b'{"Type": ' + b"9" * 10_000 + b"}",
}


@pytest.mark.parametrize("payload", FORMER_500S.values(), ids=FORMER_500S.keys())
def test_bodies_that_were_500s_are_short_400s_without_an_error_log(
    served: Served, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    caplog.set_level(logging.INFO)
    response = post(served, payload)
    error = response.get_json()["error"]
    assert error in ("invalid_json", "invalid_envelope")
    assert len(assert_json_error(response, 400, error)["detail"]) <= 200
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert served.gateway.fetched == []
    assert served.publisher.messages == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates included
hostile_bodies = st.one_of(
    st.binary(max_size=2048),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda opener, depth: opener * depth,
        st.sampled_from([b"[", b'{"a":', b'[{"Type":', b'{"Type": "Notification", "Message": [']),
        st.integers(1, 100_000),
    ),
    st.builds(with_field, st.sampled_from(sorted(SIGNED)), any_text),
    st.builds(lambda digits: b'{"Type": ' + b"1" * digits + b"}", st.integers(1, 6_000)),
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=hostile_bodies,
    content_type=st.sampled_from(
        [
            "text/plain; charset=UTF-8",
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ]
    ),
)
@example(payload=FORMER_500S["deep-nesting"], content_type="text/plain; charset=UTF-8")
@example(payload=FORMER_500S["lone-surrogate-escaped"], content_type="text/plain; charset=UTF-8")
def test_no_body_gets_a_5xx_or_an_error_log(
    served: Served, caplog: pytest.LogCaptureFixture, payload: bytes, content_type: str
) -> None:
    caplog.clear()
    caplog.set_level(logging.INFO)
    response = post(served, payload, **{"Content-Type": content_type})
    assert response.status_code < 500
    assert response.mimetype == "application/json"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    if response.status_code >= 400:
        assert len(response.get_json()["detail"]) <= 200


# --- cold start -----------------------------------------------------------------------------------------


def _cold_start_error(isolated: pytest.MonkeyPatch) -> SettingsError:
    isolated.setattr(bridge, "bootstrap", lambda *_, **__: pytest.fail("a failed cold start built a bridge"))
    with pytest.raises(SettingsError) as err:
        functions_framework.create_app(target="sns_to_pubsub", source=SOURCE, signature_type="http")
    return err.value


def test_a_missing_topic_allow_list_fails_the_cold_start_naming_it(isolated: pytest.MonkeyPatch) -> None:
    error = _cold_start_error(isolated)
    assert error.problems == {"SNS_ALLOWED_TOPIC_ARNS": "is required but not set"}
    assert "SNS_ALLOWED_TOPIC_ARNS" in str(error)


def test_a_cold_start_reads_the_environment_not_a_previous_instance(isolated: pytest.MonkeyPatch) -> None:
    isolated.setenv("SNS_ALLOWED_TOPIC_ARNS", TOPIC_ARN)
    app = functions_framework.create_app(target="sns_to_pubsub", source=SOURCE, signature_type="http")
    assert isinstance(app, flask.Flask)
    clear_settings_cache()  # a new instance
    isolated.delenv("SNS_ALLOWED_TOPIC_ARNS")
    assert "SNS_ALLOWED_TOPIC_ARNS" in _cold_start_error(isolated).problems


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_a_deployed_function_cannot_start_with_a_certificate_base_url(
    isolated: pytest.MonkeyPatch, environment: str
) -> None:
    isolated.setenv("JUPITER_ENV", environment)
    isolated.setenv("SNS_ALLOWED_TOPIC_ARNS", TOPIC_ARN)
    isolated.setenv("SNS_CERT_BASE_URL", "http://127.0.0.1:5005")
    error = _cold_start_error(isolated)
    assert set(error.problems) == {"SNS_CERT_BASE_URL"}
    assert "local" in error.problems["SNS_CERT_BASE_URL"]


def test_the_default_age_limit_accepts_a_late_sns_retry_and_refuses_older(served: Served) -> None:
    # SNS retries for up to an hour; the default SNS_MAX_MESSAGE_AGE (2 h) leaves room for that.
    message = notification(subject=None)
    assert post(served, message).status_code == 200
    late_retry = SIGNER.notification(PAYLOAD, timestamp=NOW - timedelta(hours=1, minutes=30))
    assert post(served, late_retry).status_code == 200
    old = SIGNER.notification(PAYLOAD, timestamp=NOW - timedelta(hours=2, seconds=1))
    assert_json_error(post(served, old), 400, "stale_message")
