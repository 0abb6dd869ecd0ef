"""Test vectors for SNS: a throwaway RSA key and self-signed certificate, and messages signed with it
exactly as AWS documents (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from jupiter_data.domain.sns import string_to_sign

TOPIC_ARN = "arn:aws:sns:us-east-1:123456789012:user-events"
CERT_NAME = "SimpleNotificationService-0000000000000000000000.pem"
CERT_URL = f"https://sns.us-east-1.amazonaws.com/{CERT_NAME}"
SUBSCRIBE_URL = (
    "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn="
    "arn:aws:sns:us-east-1:123456789012:user-events&Token=2336412f37"
)


def cert_url_for(topic_arn: str) -> str:
    """The SigningCertURL SNS uses for a topic: on the SNS host of the topic's region."""
    region = topic_arn.split(":")[3]
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"https://sns.{region}.amazonaws.com{suffix}/{CERT_NAME}"


def make_certificate(
    key: rsa.RSAPrivateKey, not_before: datetime | None = None, not_after: datetime | None = None
) -> bytes:
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


@dataclass
class Signer:
    key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    pem: bytes = b""

    def __post_init__(self) -> None:
        self.pem = self.pem or make_certificate(self.key)

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1 is SHA1
        signature = self.key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
        return {**message, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}

    def notification(
        self,
        message: str = '{"userId": "u1", "eventType": "login", "timestamp": 1700000000000}',
        *,
        subject: str | None = None,
        topic_arn: str = TOPIC_ARN,
        timestamp: datetime | None = None,
        version: str = "2",
        cert_url: str | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic_arn,
            "Message": message,
            "Timestamp": _iso(timestamp),
            "SigningCertURL": cert_url or cert_url_for(topic_arn),
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        }
        if subject is not None:
            fields["Subject"] = subject
        return self.sign(fields, version)

    def confirmation(
        self,
        kind: str = "SubscriptionConfirmation",
        *,
        subscribe_url: str = SUBSCRIBE_URL,
        topic_arn: str = TOPIC_ARN,
        timestamp: datetime | None = None,
        version: str = "2",
    ) -> dict[str, Any]:
        fields = {
            "Type": kind,
            "MessageId": str(uuid.uuid4()),
            "Token": "2336412f37",
            "TopicArn": topic_arn,
            "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
            "SubscribeURL": subscribe_url,
            "Timestamp": _iso(timestamp),
            "SigningCertURL": cert_url_for(topic_arn),
        }
        return self.sign(fields, version)


def _iso(timestamp: datetime | None) -> str:
    moment = timestamp or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()
