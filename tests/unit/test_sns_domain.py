"""The pure SNS rules: envelope parsing, the string to sign, URL trust, freshness, certificates."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from jupiter_data.domain import sns
from tests.sns_signing import CERT_URL, SUBSCRIBE_URL, TOPIC_ARN, Signer, body, make_certificate

NOW = datetime.now(UTC).replace(microsecond=0)
SIGNER = Signer()
EU_TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:savings-events"
CN_TOPIC_ARN = "arn:aws-cn:sns:cn-north-1:123456789012:events"


def _rejected(call: Any, *args: Any) -> sns.Rejected:
    with pytest.raises(sns.Rejected) as err:
        call(*args)
    return err.value


# --- the string to sign -----------------------------------------------------------------------------


def test_notification_string_to_sign_follows_the_documented_order_and_format() -> None:
    fields = {
        "Type": "Notification",
        "TopicArn": TOPIC_ARN,
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "Subject": "hi",
        "MessageId": "m-1",
        "Message": "payload",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    assert sns.string_to_sign(fields) == (
        b"Message\npayload\nMessageId\nm-1\nSubject\nhi\nTimestamp\n2026-01-01T00:00:00.000Z\n"
        b"TopicArn\narn:aws:sns:us-east-1:123456789012:user-events\nType\nNotification\n"
    )


def test_subject_is_signed_only_when_present() -> None:
    fields = {"Type": "Notification", "Message": "m", "MessageId": "i", "Timestamp": "t", "TopicArn": "a"}
    assert sns.string_to_sign(fields) == (
        b"Message\nm\nMessageId\ni\nTimestamp\nt\nTopicArn\na\nType\nNotification\n"
    )


@pytest.mark.parametrize("kind", [sns.SUBSCRIPTION_CONFIRMATION, sns.UNSUBSCRIBE_CONFIRMATION])
def test_confirmation_string_to_sign_includes_subscribe_url_and_token(kind: str) -> None:
    fields = {
        "Type": kind,
        "Token": "tok",
        "TopicArn": "a",
        "Timestamp": "t",
        "SubscribeURL": "u",
        "MessageId": "i",
        "Message": "m",
        "Subject": "not signed for confirmations",
    }
    assert (
        sns.string_to_sign(fields)
        == (
            f"Message\nm\nMessageId\ni\nSubscribeURL\nu\nTimestamp\nt\nToken\ntok\nTopicArn\na\nType\n{kind}\n"
        ).encode()
    )


def test_non_ascii_values_are_signed_as_utf8() -> None:
    fields = {"Type": "Notification", "Message": "é☃", "MessageId": "i", "Timestamp": "t", "TopicArn": "a"}
    assert sns.string_to_sign(fields).startswith("Message\né☃\n".encode())


# --- parsing -----------------------------------------------------------------------------------------


def test_a_signed_notification_parses_with_its_raw_fields() -> None:
    raw = SIGNER.notification('{"a": "ü"}', subject="Subj", timestamp=NOW, version="1")
    message = sns.parse_message(body(raw))
    assert message.type == sns.NOTIFICATION
    assert message.message == '{"a": "ü"}'
    assert message.subject == "Subj"
    assert message.subscribe_url is None
    assert message.topic_arn == TOPIC_ARN
    assert message.message_id == raw["MessageId"]
    assert message.signature_version == "1"
    assert message.signature == base64.b64decode(raw["Signature"])
    assert message.signing_cert_url == CERT_URL
    assert message.timestamp == NOW
    assert message.timestamp.tzinfo is not None
    # Exactly the signed fields, exactly as received (UnsubscribeURL and signature fields are not signed).
    assert message.fields == {
        name: raw[name] for name in ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
    }
    assert message.fields["Timestamp"] == raw["Timestamp"]


def test_a_subscription_confirmation_parses_with_its_subscribe_url() -> None:
    raw = SIGNER.confirmation(timestamp=NOW)
    message = sns.parse_message(body(raw))
    assert message.type == sns.SUBSCRIPTION_CONFIRMATION
    assert message.subscribe_url == SUBSCRIBE_URL
    assert message.fields["Token"] == "2336412f37"
    assert message.subject is None


def test_a_null_subject_counts_as_absent() -> None:
    raw = {**SIGNER.notification(timestamp=NOW), "Subject": None}
    message = sns.parse_message(body(raw))
    assert message.subject is None
    assert "Subject" not in message.fields


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-01-01T10:00:00.123Z", datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2026-01-01T10:00:00Z", datetime(2026, 1, 1, 10, tzinfo=UTC)),
        ("2026-01-01T12:00:00+02:00", datetime(2026, 1, 1, 10, tzinfo=UTC)),
    ],
)
def test_timestamps_are_read_as_utc(raw: str, expected: datetime) -> None:
    signed = SIGNER.notification(timestamp=NOW)
    message = sns.parse_message(body({**signed, "Timestamp": raw}))
    assert message.timestamp == expected
    assert message.timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("payload", "code", "detail"),
    [
        (b"not json", "invalid_json", "not JSON"),
        (b"\xff\xfe\x00garbage", "invalid_json", "not JSON"),
        (b"", "invalid_json", "not JSON"),
        (b"[1, 2]", "invalid_envelope", "JSON object"),
        (b'"Notification"', "invalid_envelope", "JSON object"),
        (b"null", "invalid_envelope", "JSON object"),
        (b"{}", "invalid_envelope", "Type"),
        (b'{"Type": "Notify"}', "invalid_envelope", "Type"),
        (b'{"Type": 1}', "invalid_envelope", "Type"),
    ],
)
def test_non_envelopes_are_rejected_with_400(payload: bytes, code: str, detail: str) -> None:
    rejected = _rejected(sns.parse_message, payload)
    assert (rejected.status, rejected.code) == (400, code)
    assert detail in rejected.detail


def _required(kind: str) -> list[str]:
    names = [*sns.SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL"]
    return [name for name in names if name != "Subject"]


def _signed(kind: str) -> dict[str, Any]:
    if kind == sns.NOTIFICATION:
        return SIGNER.notification(subject="s", timestamp=NOW)
    return SIGNER.confirmation(kind, timestamp=NOW)


@pytest.mark.parametrize(
    ("kind", "field"),
    [(kind, field) for kind in sns.SIGNED_FIELDS for field in _required(kind) if field != "Type"],
)
def test_each_required_field_missing_is_named(kind: str, field: str) -> None:
    raw = _signed(kind)
    del raw[field]
    rejected = _rejected(sns.parse_message, body(raw))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert rejected.detail == f"{field} is missing"


@pytest.mark.parametrize(
    ("kind", "field"), [(kind, field) for kind in sns.SIGNED_FIELDS for field in _required(kind)]
)
def test_each_required_field_as_a_number_is_named(kind: str, field: str) -> None:
    raw = {**_signed(kind), field: 12}
    rejected = _rejected(sns.parse_message, body(raw))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert field in rejected.detail


@pytest.mark.parametrize("value", [12, True, ["x"], {"a": "b"}])
def test_a_subject_that_is_not_a_string_is_named(value: object) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Subject": value}))
    assert rejected.status == 400
    assert rejected.detail.startswith("Subject must be a string")


@pytest.mark.parametrize("version", ["3", "0", "", "2 ", "v2"])
def test_unknown_signature_versions_are_rejected(version: str) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "SignatureVersion": version}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert "SignatureVersion" in rejected.detail


@pytest.mark.parametrize("signature", ["not base64!", "abc", "====", "YWJj\nZA=="])
def test_garbage_base64_signatures_are_rejected(signature: str) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Signature": signature}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert "Signature" in rejected.detail


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-13-01T00:00:00Z", "", "1700000000"])
def test_unparseable_timestamps_are_named(timestamp: str) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Timestamp": timestamp}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert "Timestamp" in rejected.detail


def test_timestamps_without_a_zone_are_rejected() -> None:
    raw = {**_signed(sns.NOTIFICATION), "Timestamp": "2026-01-01T00:00:00"}
    rejected = _rejected(sns.parse_message, body(raw))
    assert rejected.status == 400
    assert "no time zone" in rejected.detail


# Former bugs, found by these tests: each body made parse_message raise something other than Rejected,
# which the HTTP function turned into a 500: a retryable answer for a body that can
# never succeed.
@pytest.mark.parametrize("kind", [[], ["Notification"], {"a": 1}])
def test_an_unhashable_type_is_rejected_not_crashed(kind: object) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Type": kind}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")


def test_a_non_ascii_signature_is_rejected_not_crashed() -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Signature": "é"}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_an_out_of_range_timestamp_is_rejected_not_crashed(timestamp: str) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Timestamp": timestamp}))
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")


# Finding 3 of issue 13: hostile bodies that escaped as something other than Rejected (a 500).
@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 200_000,  # RecursionError
        b'{"Type": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"Type": ' + b"1" * 5_000 + b"}",  # ValueError: int over sys.get_int_max_str_digits()
    ],
    ids=["unclosed-nesting", "closed-nesting", "huge-integer"],
)
def test_bodies_json_cannot_decode_safely_are_rejected_not_crashed(payload: bytes) -> None:
    rejected = _rejected(sns.parse_message, payload)
    assert (rejected.status, rejected.code) == (400, "invalid_json")
    assert len(rejected.detail) <= 200


@pytest.mark.parametrize("field", ["Message", "Subject", "MessageId", "Timestamp", "TopicArn"])
@pytest.mark.parametrize(
    "spelling", [b'"\\ud800"', b'"a\\udfffb"', b'"\xed\xa0\x80"'], ids=["escaped", "escaped-low", "raw-bytes"]
)
def test_a_lone_surrogate_in_a_signed_field_is_rejected_naming_the_field(field: str, spelling: bytes) -> None:
    raw = {**_signed(sns.NOTIFICATION), field: "PLACEHOLDER"}
    payload = body(raw).replace(b'"PLACEHOLDER"', spelling)
    rejected = _rejected(sns.parse_message, payload)
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert rejected.detail.startswith(f"{field} ")


LONG = "x" * 10_000


@pytest.mark.parametrize(
    "overrides",
    [
        {"Type": LONG},
        {"SignatureVersion": LONG},
        {"Timestamp": LONG},
        {"Timestamp": "2026-01-01T00:00:00" + " " * 10_000},
    ],
    ids=["Type", "SignatureVersion", "Timestamp", "Timestamp-padded"],
)
def test_values_echoed_in_details_are_truncated(overrides: dict[str, str]) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), **overrides}))
    assert rejected.status == 400
    assert len(rejected.detail) <= 200
    assert "…" in rejected.detail


@pytest.mark.parametrize("kind", [["x"] * 5_000, {"k" * 5_000: 1}])
def test_a_non_string_type_is_described_not_echoed(kind: object) -> None:
    rejected = _rejected(sns.parse_message, body({**_signed(sns.NOTIFICATION), "Type": kind}))
    assert rejected.code == "invalid_envelope"
    assert len(rejected.detail) <= 200


def test_echo_keeps_short_values_and_shortens_long_ones_to_about_100_characters() -> None:
    assert sns.echo("Notify") == "'Notify'"
    shortened = sns.echo("é" * 5_000)
    assert shortened.endswith("…")
    assert 100 <= len(shortened) <= 110
    assert sns.echo("\ud800") == "'\\ud800'"  # escaped: safe for a UTF-8 log line


# --- URL trust ---------------------------------------------------------------------------------------

GOOD_CERT_URLS = [
    (TOPIC_ARN, CERT_URL),
    (EU_TOPIC_ARN, "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"),
    (CN_TOPIC_ARN, "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem"),
    (
        "arn:aws-cn:sns:cn-northwest-1:123456789012:events",
        "https://sns.cn-northwest-1.amazonaws.com.cn/x.pem",
    ),
    (
        "arn:aws-us-gov:sns:us-gov-west-1:123456789012:events",
        "https://sns.us-gov-west-1.amazonaws.com/a/b/c.pem",
    ),
]


@pytest.mark.parametrize(("topic_arn", "url"), GOOD_CERT_URLS)
def test_sns_certificate_urls_on_the_topic_regions_host_are_accepted(topic_arn: str, url: str) -> None:
    assert sns.check_cert_url(url, topic_arn) == url


# Finding 4 of issue 13: each host matched the former pattern sns.<anything>.amazonaws.com(.cn).
WRONG_HOSTS = [
    (TOPIC_ARN, "sns.s3-accelerate.amazonaws.com"),
    (TOPIC_ARN, "sns.s3-website-us-east-1.amazonaws.com"),
    (TOPIC_ARN, "sns.eu-west-1.amazonaws.com"),
    (TOPIC_ARN, "sns.us-east-1.amazonaws.com.cn"),
    (TOPIC_ARN, "sns.us-east-2.amazonaws.com"),
    (EU_TOPIC_ARN, "sns.us-east-1.amazonaws.com"),
    (CN_TOPIC_ARN, "sns.cn-north-1.amazonaws.com"),
    (CN_TOPIC_ARN, "sns.cn-northwest-1.amazonaws.com.cn"),
]


@pytest.mark.parametrize(("topic_arn", "host"), WRONG_HOSTS)
def test_an_sns_like_host_other_than_the_topic_regions_is_refused(topic_arn: str, host: str) -> None:
    for check in (
        lambda: sns.check_cert_url(f"https://{host}/SimpleNotificationService-abc.pem", topic_arn),
        lambda: sns.check_sns_url(f"https://{host}/?Action=ConfirmSubscription", "SubscribeURL", topic_arn),
    ):
        rejected = _rejected(check)
        assert (rejected.status, rejected.code) == (400, "untrusted_url")
        assert "SNS host of the topic's region" in rejected.detail


@pytest.mark.parametrize(
    ("topic_arn", "host"),
    [
        (TOPIC_ARN, "sns.us-east-1.amazonaws.com"),
        (EU_TOPIC_ARN, "sns.eu-west-1.amazonaws.com"),
        (CN_TOPIC_ARN, "sns.cn-north-1.amazonaws.com.cn"),
        ("arn:aws-cn:sns:cn-northwest-1:123456789012:e", "sns.cn-northwest-1.amazonaws.com.cn"),
    ],
)
def test_the_sns_host_is_derived_from_the_topic_region(topic_arn: str, host: str) -> None:
    assert sns.sns_host(topic_arn) == host


@pytest.mark.parametrize(
    "topic_arn", ["", "user-events", "arn:aws:sqs:us-east-1:123456789012:q", "arn:aws:sns::123456789012:t"]
)
def test_a_topic_arn_without_a_region_is_refused(topic_arn: str) -> None:
    rejected = _rejected(sns.sns_host, topic_arn)
    assert (rejected.status, rejected.code) == (400, "invalid_envelope")
    assert "TopicArn" in rejected.detail


CERT_URL_ATTACKS = {
    "http://sns.us-east-1.amazonaws.com/x.pem": "must use https",
    "ftp://sns.us-east-1.amazonaws.com/x.pem": "must use https",
    "//sns.us-east-1.amazonaws.com/x.pem": "must use https",
    "https://sns.evil.com/x.pem": "SNS host of the topic's region",
    "https://sns.us-east-1.amazonaws.com.evil.com/x.pem": "SNS host of the topic's region",
    "https://evil.com/sns.us-east-1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://sns.us-east-1.amazonaws.com./x.pem": "SNS host of the topic's region",
    "https://sns.us.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://sns.us_east_1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://sqs.us-east-1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://sns.us-east-1.amazonaws.com.cn.evil.com/x.pem": "SNS host of the topic's region",
    "https:sns.us-east-1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https:///sns.us-east-1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://127.0.0.1/x.pem": "SNS host of the topic's region",
    "https://user@sns.us-east-1.amazonaws.com/x.pem": "user info",
    "https://user:pw@sns.us-east-1.amazonaws.com/x.pem": "user info",
    "https://@sns.us-east-1.amazonaws.com/x.pem": "user info",
    "https://sns.us-east-1.amazonaws.com@evil.com/x.pem": "user info",
    "https://evil.com\\@sns.us-east-1.amazonaws.com/x.pem": "user info",
    "https://evil.com%40sns.us-east-1.amazonaws.com/x.pem": "SNS host of the topic's region",
    "https://sns.us-east-1.amazonaws.com:443/x.pem": "port",
    "https://sns.us-east-1.amazonaws.com:8443/x.pem": "port",
    "https://sns.us-east-1.amazonaws.com:/x.pem": "port",
    "https://sns.us-east-1.amazonaws.com:99999/x.pem": "not a valid URL",
    "https://sns.us-east-1.amazonaws.com:abc/x.pem": "not a valid URL",
    "https://[sns.us-east-1.amazonaws.com]/x.pem": "not a valid URL",
    "https://sns.us-east-1.amazonaws.com/../x.pem": "'..'",
    "https://sns.us-east-1.amazonaws.com/a/../../x.pem": "'..'",
    "https://sns.us-east-1.amazonaws.com/a\\x.pem": "backslashes",
    "https://sns.us-east-1.amazonaws.com/x.pem#frag": "fragment",
    "https://sns.us-east-1.amazonaws.com/x.pem?a=b": "query",
    "https://sns.us-east-1.amazonaws.com/x.pem?a=.pem": "query",
    "https://sns.us-east-1.amazonaws.com/x.crt": "path must end in .pem",
    "https://sns.us-east-1.amazonaws.com/x.pem/": "path must end in .pem",
    "https://sns.us-east-1.amazonaws.com/": "path must end in .pem",
    "https://sns.us-east-1.amazonaws.com": "path must end in .pem",
    "": "must use https",
}


@pytest.mark.parametrize(("url", "why"), CERT_URL_ATTACKS.items())
def test_certificate_url_attacks_are_rejected(url: str, why: str) -> None:
    rejected = _rejected(sns.check_cert_url, url, TOPIC_ARN)
    assert (rejected.status, rejected.code) == (400, "untrusted_url")
    assert rejected.detail.startswith("SigningCertURL ")
    assert why in rejected.detail


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/x.pem\n",
        "ht\ttps://sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazon\raws.com/x.pem",
    ],
)
def test_urls_with_control_characters_are_rejected(url: str) -> None:
    rejected = _rejected(sns.check_cert_url, url, TOPIC_ARN)
    assert rejected.code == "untrusted_url"


SUBSCRIBE_URLS = [
    (TOPIC_ARN, SUBSCRIBE_URL),
    (EU_TOPIC_ARN, "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=abc"),
    (CN_TOPIC_ARN, "https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=abc"),
    (TOPIC_ARN, "https://sns.us-east-1.amazonaws.com/confirm"),  # no .pem required here
]


@pytest.mark.parametrize(("topic_arn", "url"), SUBSCRIBE_URLS)
def test_subscribe_urls_may_carry_a_query_and_any_path(topic_arn: str, url: str) -> None:
    assert sns.check_sns_url(url, "SubscribeURL", topic_arn) == url


SUBSCRIBE_URL_ATTACKS = {
    url.replace("/x.pem", "/?Action=ConfirmSubscription"): why
    for url, why in CERT_URL_ATTACKS.items()
    if why not in ("query", "path must end in .pem") and url
}


@pytest.mark.parametrize(("url", "why"), SUBSCRIBE_URL_ATTACKS.items())
def test_subscribe_url_attacks_are_rejected_like_certificate_urls(url: str, why: str) -> None:
    rejected = _rejected(sns.check_sns_url, url, "SubscribeURL", TOPIC_ARN)
    assert (rejected.status, rejected.code) == (400, "untrusted_url")
    assert rejected.detail.startswith("SubscribeURL ")
    assert why in rejected.detail


def test_the_subscribe_url_attack_list_still_covers_every_kind_of_attack() -> None:
    reasons = set(SUBSCRIBE_URL_ATTACKS.values())
    assert {"must use https", "user info", "port", "'..'", "fragment", "backslashes"} <= reasons
    assert "SNS host of the topic's region" in reasons


# --- freshness ---------------------------------------------------------------------------------------


def _at(timestamp: datetime) -> sns.SnsMessage:
    return sns.parse_message(body(SIGNER.notification(timestamp=timestamp)))


def test_a_message_exactly_max_age_old_or_exactly_the_skew_ahead_is_fresh() -> None:
    max_age = timedelta(hours=1)
    sns.check_fresh(_at(NOW - max_age), NOW, max_age)
    sns.check_fresh(_at(NOW + sns.FUTURE_SKEW), NOW, max_age)
    sns.check_fresh(_at(NOW), NOW, max_age)


def test_a_message_a_millisecond_past_max_age_is_stale() -> None:
    rejected = _rejected(
        sns.check_fresh, _at(NOW - timedelta(hours=1, milliseconds=1)), NOW, timedelta(hours=1)
    )
    assert (rejected.status, rejected.code) == (400, "stale_message")
    assert "3600 s old" in rejected.detail


def test_a_message_a_millisecond_beyond_the_skew_is_from_the_future() -> None:
    message = _at(NOW + sns.FUTURE_SKEW + timedelta(milliseconds=1))
    rejected = _rejected(sns.check_fresh, message, NOW, timedelta(hours=1))
    assert (rejected.status, rejected.code) == (400, "future_message")


def test_the_future_skew_is_small() -> None:
    assert timedelta(0) < sns.FUTURE_SKEW <= timedelta(minutes=15)


# --- certificates and signatures ---------------------------------------------------------------------


def test_a_valid_certificate_yields_its_rsa_key() -> None:
    key = sns.load_certificate(SIGNER.pem, NOW)
    assert key.public_numbers() == SIGNER.key.public_key().public_numbers()


def test_a_parsed_certificate_holds_its_rsa_key_and_validity() -> None:
    certificate = sns.parse_certificate(SIGNER.pem)
    assert certificate.key_at(NOW).public_numbers() == SIGNER.key.public_key().public_numbers()
    assert certificate.not_before < NOW < certificate.not_after
    assert certificate.valid_at(certificate.not_before)
    assert certificate.valid_at(certificate.not_after)


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW - timedelta(days=30), NOW - timedelta(seconds=1)),  # expired
        (NOW + timedelta(seconds=1), NOW + timedelta(days=30)),  # not yet valid
    ],
)
def test_certificates_outside_their_validity_are_refused(not_before: datetime, not_after: datetime) -> None:
    certificate = sns.parse_certificate(
        make_certificate(SIGNER.key, not_before=not_before, not_after=not_after)
    )
    assert not certificate.valid_at(NOW)
    rejected = _rejected(certificate.key_at, NOW)
    assert (rejected.status, rejected.code) == (403, "invalid_certificate")


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"<html>404</html>",
    ],
)
def test_garbage_certificates_are_refused_with_400(pem: bytes) -> None:
    rejected = _rejected(sns.parse_certificate, pem)
    assert (rejected.status, rejected.code) == (400, "invalid_certificate")


def test_a_certificate_without_an_rsa_key_is_refused() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    rejected = _rejected(sns.parse_certificate, certificate.public_bytes(serialization.Encoding.PEM))
    assert (rejected.status, rejected.code) == (403, "invalid_certificate")
    assert "RSA" in rejected.detail


@pytest.mark.parametrize("version", ["1", "2"])
def test_signatures_of_both_versions_verify(version: str) -> None:
    message = sns.parse_message(body(SIGNER.notification(timestamp=NOW, version=version, subject="s")))
    sns.verify_signature(message, SIGNER.key.public_key())


@pytest.mark.parametrize(("signed_as", "claimed"), [("2", "1"), ("1", "2")])
def test_a_signature_checked_under_the_other_version_fails(signed_as: str, claimed: str) -> None:
    raw = {**SIGNER.notification(timestamp=NOW, version=signed_as), "SignatureVersion": claimed}
    rejected = _rejected(sns.verify_signature, sns.parse_message(body(raw)), SIGNER.key.public_key())
    assert (rejected.status, rejected.code) == (403, "invalid_signature")


def test_a_signature_by_another_key_fails() -> None:
    message = sns.parse_message(body(SIGNER.notification(timestamp=NOW)))
    other: rsa.RSAPrivateKey = rsa.generate_private_key(65537, 2048)
    rejected = _rejected(sns.verify_signature, message, other.public_key())
    assert rejected.code == "invalid_signature"


@pytest.mark.parametrize("signature", ["", "AAAA", base64.b64encode(b"\0" * 256).decode()])
def test_empty_or_wrong_length_signatures_fail_verification(signature: str) -> None:
    raw = {**SIGNER.notification(timestamp=NOW), "Signature": signature}
    rejected = _rejected(sns.verify_signature, sns.parse_message(body(raw)), SIGNER.key.public_key())
    assert (rejected.status, rejected.code) == (403, "invalid_signature")


def test_the_signature_covers_fields_exactly_as_received_not_as_reserialised() -> None:
    # A JSON body with escapes must verify on the decoded strings, whatever the JSON spelling.
    raw = SIGNER.notification('{"k": "\\u00e9 ☃"}', subject="é", timestamp=NOW)
    spelled = json.dumps(raw, ensure_ascii=True).encode()
    message = sns.parse_message(spelled)
    sns.verify_signature(message, SIGNER.key.public_key())
    assert message.message == '{"k": "\\u00e9 ☃"}'
