"""AWS SNS HTTP(S) messages: parsing, the documented signature algorithm and the trust rules. No I/O.

References (AWS docs, "Verifying the signatures of Amazon SNS messages" and "Parsing message formats"):
the string to sign is ``name\\nvalue\\n`` for each signed field of the message type, in this order;
``Subject`` is signed only when present. SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA, both
PKCS#1 v1.5, verified with the public key of the X.509 certificate at ``SigningCertURL``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    UNSUBSCRIBE_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_OPTIONAL = {"Subject"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# The region of a topic ARN, as settings.py accepts them in SNS_ALLOWED_TOPIC_ARNS.
_TOPIC_REGION = re.compile(r"^arn:aws(?:-[a-z]+)*:sns:([a-z0-9-]+):")
# Values quoted back in error details (and so in logs) are cut to about this many characters.
ECHO_LIMIT = 100
# A clock skew tolerated for timestamps from the future (SNS hosts and ours both run NTP).
FUTURE_SKEW = timedelta(minutes=5)


def echo(value: str) -> str:
    """``value`` quoted for an error detail: escaped (``repr``) and cut to ~``ECHO_LIMIT`` characters."""
    if len(value) <= ECHO_LIMIT:
        return repr(value)
    return repr(value[:ECHO_LIMIT]) + "…"


class Rejected(Exception):
    """The request will never succeed: answer with ``status`` and never publish anything."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


@dataclass(frozen=True)
class SnsMessage:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: datetime
    signature_version: str
    signature: bytes
    signing_cert_url: str
    subject: str | None
    subscribe_url: str | None
    fields: dict[str, str]  # the raw signed fields, exactly as received

    def string_to_sign(self) -> bytes:
        return string_to_sign(self.fields)


def string_to_sign(fields: dict[str, str]) -> bytes:
    parts = []
    for name in SIGNED_FIELDS[fields["Type"]]:
        if name in fields:
            parts.append(f"{name}\n{fields[name]}\n")
    return "".join(parts).encode("utf-8")


def parse_message(body: bytes) -> SnsMessage:
    """The SNS JSON envelope, with every field this bridge relies on checked for presence and type."""
    try:
        document: Any = json.loads(body)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and integers too long to convert;
    # RecursionError, nesting deeper than the interpreter's stack (an envelope is one flat object).
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:ECHO_LIMIT]
        raise Rejected(400, "invalid_json", f"body is not JSON: {reason}") from None
    if not isinstance(document, dict):
        raise Rejected(400, "invalid_envelope", "body must be a JSON object (an SNS message)")
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_FIELDS:
        got = echo(kind) if isinstance(kind, str) else f"a {type(kind).__name__}"
        raise Rejected(400, "invalid_envelope", f"Type must be one of {', '.join(SIGNED_FIELDS)}, got {got}")
    required = [*SIGNED_FIELDS[kind], "SignatureVersion", "Signature", "SigningCertURL"]
    fields: dict[str, str] = {}
    for name in required:
        value = document.get(name)
        if value is None and name in _OPTIONAL:
            continue
        if not isinstance(value, str):
            problem = "is missing" if value is None else f"must be a string, not {type(value).__name__}"
            raise Rejected(400, "invalid_envelope", f"{name} {problem}")
        if not _is_unicode(value):
            raise Rejected(
                400, "invalid_envelope", f"{name} holds a lone surrogate, which is not Unicode text"
            )
        fields[name] = value
    if fields["SignatureVersion"] not in _HASHES:
        raise Rejected(
            400, "invalid_envelope", f"SignatureVersion {echo(fields['SignatureVersion'])} is not 1 or 2"
        )
    try:
        signature = base64.b64decode(fields["Signature"], validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise Rejected(400, "invalid_envelope", "Signature is not base64") from None
    return SnsMessage(
        type=kind,
        message_id=fields["MessageId"],
        topic_arn=fields["TopicArn"],
        message=fields["Message"],
        timestamp=_parse_timestamp(fields["Timestamp"]),
        signature_version=fields["SignatureVersion"],
        signature=signature,
        signing_cert_url=fields["SigningCertURL"],
        subject=fields.get("Subject"),
        subscribe_url=fields.get("SubscribeURL"),
        fields={name: fields[name] for name in SIGNED_FIELDS[kind] if name in fields},
    )


def _is_unicode(value: str) -> bool:
    """False for a string holding a lone surrogate (JSON allows ``\\ud800``): it has no UTF-8 form to sign."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_timestamp(raw: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise Rejected(400, "invalid_envelope", f"Timestamp {echo(raw)} has no time zone")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted out of range
        raise Rejected(400, "invalid_envelope", f"Timestamp {echo(raw)} is not an ISO 8601 time") from None


def sns_host(topic_arn: str) -> str:
    """The one host SNS serves a topic's certificates and confirmations from: its region's endpoint."""
    match = _TOPIC_REGION.match(topic_arn)
    if match is None:
        raise Rejected(400, "invalid_envelope", f"TopicArn {echo(topic_arn)} names no AWS region")
    region = match.group(1)
    return f"sns.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


def check_sns_url(url: str, field: str, topic_arn: str, path_suffix: str | None = None) -> str:
    """Only https URLs on the SNS host of the topic's region, with nothing that could redirect the
    request elsewhere (other hosts under amazonaws.com, such as S3 website endpoints, are not SNS)."""
    host = sns_host(topic_arn)
    # urlsplit silently drops tabs and newlines: validate the very string that will be fetched.
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise Rejected(400, "untrusted_url", f"{field} contains white space or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Rejected(400, "untrusted_url", f"{field} is not a valid URL") from None
    problems = [
        (parts.scheme != "https", "must use https"),
        (bool(parts.username or parts.password or "@" in parts.netloc), "must not carry user info"),
        (port is not None or parts.netloc.endswith(":"), "must not name a port"),
        (parts.hostname != host, f"must be on {host}, the SNS host of the topic's region"),
        (bool(parts.fragment), "must not carry a fragment"),
        (".." in parts.path or "\\" in parts.path, "must not contain '..' or backslashes"),
    ]
    if path_suffix is not None:
        problems += [
            (bool(parts.query), "must not carry a query"),
            (not parts.path.endswith(path_suffix), f"path must end in {path_suffix}"),
        ]
    for failed, why in problems:
        if failed:
            raise Rejected(400, "untrusted_url", f"{field} {why}")
    return url


def check_cert_url(url: str, topic_arn: str) -> str:
    return check_sns_url(url, "SigningCertURL", topic_arn, path_suffix=".pem")


def check_fresh(message: SnsMessage, now: datetime, max_age: timedelta) -> None:
    age = now - message.timestamp
    if age > max_age:
        raise Rejected(400, "stale_message", f"message is {int(age.total_seconds())} s old (max {max_age})")
    if -age > FUTURE_SKEW:
        raise Rejected(400, "future_message", "message Timestamp is in the future")


@dataclass(frozen=True)
class Certificate:
    """What is kept of a signing certificate: its RSA key and validity, never the bytes that were served."""

    key: rsa.RSAPublicKey
    not_before: datetime
    not_after: datetime

    def valid_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def key_at(self, now: datetime) -> rsa.RSAPublicKey:
        if not self.valid_at(now):
            raise Rejected(403, "invalid_certificate", "signing certificate is expired or not yet valid")
        return self.key


def parse_certificate(pem: bytes) -> Certificate:
    """The RSA key and validity of a PEM X.509 certificate."""
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Rejected(
            400, "invalid_certificate", "SigningCertURL did not serve a PEM X.509 certificate"
        ) from None
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Rejected(403, "invalid_certificate", "signing certificate does not hold an RSA key")
    return Certificate(key, certificate.not_valid_before_utc, certificate.not_valid_after_utc)


def load_certificate(pem: bytes, now: datetime) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM certificate that is valid at ``now``."""
    return parse_certificate(pem).key_at(now)


def verify_signature(message: SnsMessage, key: rsa.RSAPublicKey) -> None:
    algorithm = _HASHES[message.signature_version]()
    try:
        key.verify(message.signature, message.string_to_sign(), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise Rejected(403, "invalid_signature", "signature does not match the message") from None
