"""moto's SNS in server mode, delivering HTTP notifications as AWS SNS does. Dev only.

**HTTP/HTTPS notifications.** moto POSTs a notification to an ``http``/``https`` subscriber inside
the Publish call, ignores the reply and never retries, so a subscriber that answers 5xx (our bridge
while Pub/Sub is briefly down) loses the message locally where AWS would retry it. Here a Notification
to an http/https subscription is instead handed to :class:`HttpDelivery`, which behaves like SNS's
default HTTP delivery policy:

* asynchronous: Publish returns once the message is signed and queued; a bounded pool of worker
  threads (``--delivery-workers``) POSTs it (the queue itself is unbounded, as SNS accepts a Publish
  whatever the subscriber's state);
* each attempt has a timeout (``--timeout-seconds``, SNS's 15 s); an answer in 200-499 is delivered
  (4xx included: SNS does not retry it; a 3xx too, and is not followed); 5xx, another status, a timeout or
  a connection error is retried, ``--delivery-retries`` times (SNS's default 3) ``--retry-delay-seconds``
  apart (SNS's 20 s); a retry waits in a timer heap, not in a worker, so waiting retries do not hold
  up other messages;
* the POST carries the Notification envelope signed as SNS signs it (:class:`Signer`: one certificate per
  subscription, where moto makes one per message), with moto's ``Content-Type: text/plain;
  charset=UTF-8``, plus the headers AWS adds
  (``x-amz-sns-message-type``/``-message-id``/``-topic-arn``/``-subscription-arn``, its User-Agent);
* one JSON line on stdout per final outcome (``delivered``, ``gave_up``, ``abandoned``) with the message
  id, topic, subscription, endpoint, last status or error, attempts and each attempt's result; under the
  local stack this is the sns service's log file (werkzeug's request lines go to stderr).

Everything else is moto's own: other protocols (sqs, lambda, …), filter policies, and subscription
confirmation. moto does not send an http SubscriptionConfirmation at all: ``Subscribe`` records the
subscription as already confirmed and notifications flow at once; ``ConfirmSubscription`` is accepted
(see below) and changes nothing.

**On SIGTERM/SIGINT** the server stops accepting requests; attempts already in flight get up to
``--shutdown-grace-seconds`` (2 s) to finish and their outcome is logged; queued deliveries and waiting
retries are dropped, each logged as ``abandoned``. (moto keeps its state in memory, so there is
nothing to resume after a restart; AWS would keep retrying.)

**Routing.** An SNS subscriber makes two unsigned calls to the SNS host named in a message: it
downloads the signing certificate (``/SimpleNotificationService-<id>.pem``) and, for a
SubscriptionConfirmation, GETs the ``SubscribeURL`` (``/?Action=ConfirmSubscription&…``). moto's
server routes a request by the AWS host it was signed for, which these lack, so unsigned requests (and,
for speed, those signed for SNS) go to the SNS backend here; moto routes the rest.

    python -m jupiter_data.local.sns_emulator -H 127.0.0.1 -p 5005 \\
        [--delivery-retries 3] [--retry-delay-seconds 20] [--timeout-seconds 15]
"""

from __future__ import annotations

import argparse
import base64
import heapq
import itertools
import json
import queue
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509 import Name, NameAttribute
from cryptography.x509.oid import NameOID
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sns.models import Subscription, sns_backends
from werkzeug.serving import run_simple

# SNS's defaults for HTTP/S subscriptions.
DEFAULT_RETRIES = 3
DEFAULT_RETRY_DELAY_SECONDS = 20.0
DEFAULT_TIMEOUT_SECONDS = 15.0
DEFAULT_WORKERS = 32
DEFAULT_SHUTDOWN_GRACE_SECONDS = 2.0
USER_AGENT = "Amazon Simple Notification Service Agent"


class _SnsHostDispatcher(DomainDispatcherApplication):
    """Unsigned requests and requests signed for SNS go straight to the SNS backend; moto routes the rest.

    moto routes by the AWS host a request was signed for, which unsigned subscriber calls (certificate
    download, ConfirmSubscription) do not have; and its routing stats ~180 module folders per request,
    a third of the emulator's CPU under load."""

    def get_application(self, environ: dict[str, Any]) -> Any:
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        path = environ.get("PATH_INFO", "")
        if path.startswith("/moto-api") or (authorization and "/sns/aws4_request" not in authorization):
            return super().get_application(environ)
        with self.lock:
            if "sns" not in self.app_instances:
                self.app_instances["sns"] = self.create_app("sns")
            return self.app_instances["sns"]


@dataclass
class Notification:
    """One notification to one http/https subscription, with what its attempts gave."""

    endpoint: str
    post_data: dict[str, Any]  # the signed JSON envelope (Signer.post_data)
    headers: dict[str, str]
    message_id: str
    topic_arn: str
    subscription_arn: str
    queued_at: float = field(default_factory=time.monotonic)
    attempts: int = 0
    results: list[str] = field(default_factory=list)  # per attempt: a status ("503") or an error name
    status: int | None = None  # of the last attempt that got an answer
    error: str | None = None  # of the last attempt, if it got no answer
    finished: bool = False


class HttpDelivery:
    """SNS-like delivery of notifications to HTTP/S endpoints: see the module docstring."""

    def __init__(
        self,
        *,
        retries: int = DEFAULT_RETRIES,
        retry_delay: float = DEFAULT_RETRY_DELAY_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        workers: int = DEFAULT_WORKERS,
        out: TextIO | None = None,
    ) -> None:
        self.retries, self.retry_delay, self.timeout = retries, retry_delay, timeout
        self._out = out or sys.stdout
        self._out_lock = threading.Lock()
        self._ready: queue.SimpleQueue[Notification] = queue.SimpleQueue()
        self._waiting: list[tuple[float, int, Notification]] = []  # heap of retries: (due, seq, …)
        self._seq = itertools.count()
        self._in_flight: dict[int, Notification] = {}  # by id(): attempts under way
        self._cond = threading.Condition()
        self._stopping = False
        # Daemon threads: at exit nothing waits for them beyond shutdown()'s grace.
        self._threads = [
            threading.Thread(target=self._work, name=f"sns-http-{n}", daemon=True) for n in range(workers)
        ]
        self._threads.append(threading.Thread(target=self._release_due, name="sns-http-timer", daemon=True))
        for thread in self._threads:
            thread.start()

    def submit(self, notification: Notification) -> None:
        with self._cond:
            if self._stopping:
                self._finish(notification, "abandoned")
                return
        self._ready.put(notification)

    def shutdown(self, grace: float = DEFAULT_SHUTDOWN_GRACE_SECONDS) -> None:
        """Drop queued and waiting deliveries (logged ``abandoned``); give in-flight attempts ``grace``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            dropped = [notification for _, _, notification in self._waiting]
            self._waiting.clear()
        while True:
            try:
                dropped.append(self._ready.get_nowait())
            except queue.Empty:
                break
        deadline = time.monotonic() + grace
        with self._cond:
            for notification in dropped:
                self._finish(notification, "abandoned")
            while self._in_flight and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            for notification in self._in_flight.values():
                notification.error = notification.error or "in flight at shutdown"
                self._finish(notification, "abandoned")

    def _work(self) -> None:
        # One session per worker: deliveries reuse their keep-alive connection to the endpoint, as SNS
        # does; a new connection per message cost the emulator a third of its CPU under load.
        session = requests.Session()
        while True:
            notification = self._ready.get()
            key = id(notification)
            with self._cond:
                if self._stopping:
                    self._finish(notification, "abandoned")
                    continue
                self._in_flight[key] = notification
            try:
                self._attempt(session, notification)
            finally:
                with self._cond:
                    del self._in_flight[key]
                    self._cond.notify_all()

    def _attempt(self, session: requests.Session, notification: Notification) -> None:
        notification.attempts += 1
        status: int | None = None
        try:
            # As moto posts it (requests serialises json= and keeps the Content-Type given), plus a
            # timeout; a 3xx is in SNS's 200-499 "delivered" range, so it is not followed.
            with session.post(
                notification.endpoint,
                json=notification.post_data,
                headers=notification.headers,
                timeout=self.timeout,
                allow_redirects=False,
            ) as reply:
                status = reply.status_code
            notification.status, notification.error = status, None
            notification.results.append(str(status))
        except requests.Timeout:
            notification.error = "timeout"
            notification.results.append("timeout")
        except requests.RequestException as exc:
            notification.error = type(exc).__name__
            notification.results.append(notification.error)
        with self._cond:
            if status is not None and 200 <= status < 500:
                self._finish(notification, "delivered")
            elif self._stopping:
                self._finish(notification, "abandoned")
            elif notification.attempts <= self.retries:
                due = time.monotonic() + self.retry_delay
                heapq.heappush(self._waiting, (due, next(self._seq), notification))
                self._cond.notify_all()
            else:
                self._finish(notification, "gave_up")

    def _release_due(self) -> None:
        with self._cond:
            while not self._stopping:
                if not self._waiting:
                    self._cond.wait()
                    continue
                wait = self._waiting[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                self._ready.put(heapq.heappop(self._waiting)[2])

    def _finish(self, notification: Notification, outcome: str) -> None:
        """Log the final outcome, once. Called with ``self._cond`` held."""
        if notification.finished:
            return
        notification.finished = True
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "event": "sns_http_delivery",
            "outcome": outcome,
            "message_id": notification.message_id,
            "topic_arn": notification.topic_arn,
            "subscription_arn": notification.subscription_arn,
            "endpoint": notification.endpoint,
            "status": notification.status,
            "error": notification.error,
            "attempts": notification.attempts,
            "results": notification.results,
            "seconds": round(time.monotonic() - notification.queued_at, 3),
        }
        with self._out_lock:
            self._out.write(json.dumps(line) + "\n")
            self._out.flush()


class Signer:
    """Signs notifications as SNS does (SignatureVersion 2, SHA256withRSA) with one certificate per
    subscription, made on first use and served at its SigningCertURL by moto's SNS backend.

    moto's own ``get_post_data`` makes a new certificate and URL for every message, so a subscriber's
    certificate cache never hits: our bridge fetched a certificate per notification, which doubled the
    emulator's requests under load. Real SNS signs with one certificate for months."""

    def __init__(self) -> None:
        # subscription ARN → its key and its certificate's file name, made once under the lock (two
        # first messages racing must not sign with two keys).
        self._keys: dict[str, tuple[rsa.RSAPrivateKey, str]] = {}
        self._lock = threading.Lock()

    def _key(self, subscription: Subscription) -> tuple[rsa.RSAPrivateKey, str]:
        with self._lock:
            if subscription.arn not in self._keys:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                amazon = [
                    NameAttribute(NameOID.COUNTRY_NAME, "US"),
                    NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon"),
                ]
                now = datetime.now(UTC)
                cert = (
                    x509.CertificateBuilder()
                    .subject_name(Name([NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")]))
                    .issuer_name(Name([*amazon, NameAttribute(NameOID.COMMON_NAME, "Amazon RSA 2048 M01")]))
                    .public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - timedelta(minutes=5))
                    .not_valid_after(now + timedelta(days=365))
                    .sign(key, hashes.SHA256())
                )
                name = f"SimpleNotificationService-{uuid.uuid4().hex}.pem"
                # moto serves /<name> from the default account's backend of the region (its own rule).
                backend = sns_backends[DEFAULT_ACCOUNT_ID][subscription.topic.sns_backend.region_name]
                backend._message_public_keys[name] = cert.public_bytes(serialization.Encoding.PEM)
                self._keys[subscription.arn] = (key, name)
            return self._keys[subscription.arn]

    def post_data(
        self, subscription: Subscription, message: str, message_id: str, subject: str | None
    ) -> dict[str, Any]:
        """The Notification envelope, fields and signed string as DESIGN.md states them for SNS."""
        topic = subscription.topic
        fields = {
            "Message": message,
            "MessageId": message_id,
            **({"Subject": subject} if subject else {}),
            "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "TopicArn": topic.arn,
            "Type": "Notification",
        }
        string_to_sign = "".join(f"{name}\n{value}\n" for name, value in fields.items())
        key, cert_name = self._key(subscription)
        signature = key.sign(string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
        region = topic.sns_backend.region_name
        return {
            **fields,
            "SignatureVersion": "2",
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": f"https://sns.{region}.amazonaws.com/{cert_name}",
            "UnsubscribeURL": f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription.arn}",
        }


def install(delivery: HttpDelivery) -> None:
    """Route moto's http/https Notification deliveries through ``delivery``; the rest stays moto's.

    moto builds and sends every message to a subscriber in ``Subscription.publish`` (one branch per
    protocol), called from Topic.publish for each subscription. Wrapping that one method is the
    narrowest place to change delivery: for protocols other than http/https the original runs
    unchanged. For http/https this repeats the two steps moto takes before its POST (the filter policy,
    a ``MessageStructure=json`` message), then signs with :class:`Signer` instead of moto's
    ``get_post_data``.
    """
    original = Subscription.publish
    signer = Signer()

    def publish(
        self: Subscription,
        message: str,
        message_id: str,
        subject: str | None = None,
        message_attributes: dict[str, Any] | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        message_structure: str | None = None,
    ) -> None:
        if self.protocol not in ("http", "https"):
            original(
                self,
                message,
                message_id,
                subject=subject,
                message_attributes=message_attributes,
                group_id=group_id,
                deduplication_id=deduplication_id,
                message_structure=message_structure,
            )
            return
        matcher = self._filter_policy_matcher
        if matcher is not None and not matcher.matches(message_attributes, message):
            return
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        post_data = signer.post_data(self, message, message_id, subject)
        delivery.submit(
            Notification(
                endpoint=self.endpoint,
                post_data=post_data,
                headers={
                    "Content-Type": "text/plain; charset=UTF-8",  # moto's
                    "x-amz-sns-message-type": post_data["Type"],
                    "x-amz-sns-message-id": message_id,
                    "x-amz-sns-topic-arn": self.topic.arn,
                    "x-amz-sns-subscription-arn": self.arn,
                    "User-Agent": USER_AGENT,
                },
                message_id=message_id,
                topic_arn=self.topic.arn,
                subscription_arn=self.arn,
            )
        )

    Subscription.publish = publish  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5005)
    parser.add_argument("--delivery-retries", type=int, default=DEFAULT_RETRIES)
    parser.add_argument("--retry-delay-seconds", type=float, default=DEFAULT_RETRY_DELAY_SECONDS)
    parser.add_argument("--timeout-seconds", type=float, default=DEFAULT_TIMEOUT_SECONDS)
    parser.add_argument("--delivery-workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--shutdown-grace-seconds", type=float, default=DEFAULT_SHUTDOWN_GRACE_SECONDS)
    args = parser.parse_args(argv)
    if args.delivery_retries < 0 or args.retry_delay_seconds < 0 or args.delivery_workers < 1:
        parser.error("retries and delay must be >= 0, workers >= 1")
    if args.timeout_seconds <= 0:
        parser.error("--timeout-seconds must be > 0")
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: sys.exit(0))
    delivery = HttpDelivery(
        retries=args.delivery_retries,
        retry_delay=args.retry_delay_seconds,
        timeout=args.timeout_seconds,
        workers=args.delivery_workers,
    )
    install(delivery)
    app = _SnsHostDispatcher(create_backend_app)
    try:
        run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the grace short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        delivery.shutdown(args.shutdown_grace_seconds)


if __name__ == "__main__":
    main()
