"""The local SNS (moto in server mode) delivers HTTP notifications as AWS SNS does.

The emulator runs as the stack runs it (``python -m jupiter_data.local.sns_emulator``) with short retry
delay and timeout; a local HTTP endpoint answers each message as a per-test plan says.
"""

from __future__ import annotations

import functools
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from jupiter_data.domain import sns
from jupiter_data.local.supervisor import free_port, http_ok

RETRY_DELAY = 0.5
TIMEOUT = 5.0  # per attempt: long enough that a loaded machine's local endpoint never times out by accident
RETRIES = 3  # the emulator's default, SNS's


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    received: float
    answered: float | None = None

    @property
    def envelope(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


# An answer: a status, or (seconds to wait first, status).
Answer = int | tuple[float, int]


@dataclass
class Endpoint:
    """An HTTP subscriber: answers the n-th POST to a path with plans[path][n] (then 200), records all."""

    url: str
    plans: dict[str, list[Answer]] = field(default_factory=dict)
    posts: list[Post] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def path(self, answers: list[Answer]) -> str:
        path = f"/{uuid.uuid4().hex}"
        self.plans[path] = list(answers)
        return path

    def posts_to(self, path: str) -> list[Post]:
        with self.lock:
            return [post for post in self.posts if post.path == path]


@dataclass
class Emulator:
    url: str
    process: subprocess.Popen[bytes]
    stdout: Path

    @functools.cached_property
    def sns(self) -> Any:
        return boto3.client(
            "sns",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def outcomes(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.read_text().splitlines() if line.startswith("{")]

    def outcome(self, message_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The one final-outcome line logged for ``message_id``."""

        def lines() -> list[dict[str, Any]]:
            return [o for o in self.outcomes() if o["message_id"] == message_id]

        wait_until(lambda: bool(lines()), timeout)
        (line,) = lines()
        return line


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.02)


def start_emulator(directory: Path, *options: str) -> Emulator:
    port = free_port()
    stdout = directory / f"sns-{port}.out"
    with stdout.open("wb") as out, (directory / f"sns-{port}.err").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupiter_data.local.sns_emulator", "-H", "127.0.0.1", "-p", str(port),
             "--retry-delay-seconds", str(RETRY_DELAY), "--timeout-seconds", str(TIMEOUT), *options],
            stdout=out,
            stderr=err,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    healthy = http_ok(f"{url}/moto-api/")
    try:
        wait_until(lambda: healthy() or process.poll() is not None, 30)
        assert process.poll() is None, (directory / f"sns-{port}.err").read_text()
    except BaseException:
        process.kill()
        raise
    return Emulator(url, process, stdout)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    running = start_emulator(tmp_path_factory.mktemp("sns"))
    try:
        yield running
    finally:
        stop(running.process)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    recorder: Endpoint

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            post = Post(
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(int(self.headers["Content-Length"])),
                time.monotonic(),
            )
            with recorder.lock:
                nth = len([p for p in recorder.posts if p.path == self.path])
                recorder.posts.append(post)
                plan = recorder.plans.get(self.path, [])
            answer = plan[nth] if nth < len(plan) else 200
            delay, status = answer if isinstance(answer, tuple) else (0.0, answer)
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the emulator gave up waiting (a timeout) and closed the connection
            post.answered = time.monotonic()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    recorder = Endpoint(f"http://127.0.0.1:{server.server_address[1]}")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def subscribe(emulator: Emulator, url: str) -> tuple[str, str]:
    """A topic of its own with ``url`` subscribed over http: (topic ARN, subscription ARN)."""
    sns = emulator.sns
    topic_arn = sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    subscription_arn = sns.subscribe(TopicArn=topic_arn, Protocol="http", Endpoint=url)["SubscriptionArn"]
    return topic_arn, subscription_arn


def publish(emulator: Emulator, topic_arn: str, message: str = '{"userId": "u-1"}') -> str:
    return str(emulator.sns.publish(TopicArn=topic_arn, Message=message)["MessageId"])


def test_publish_returns_before_delivery_and_the_post_is_a_signed_envelope_with_sns_headers(
    emulator: Emulator, endpoint: Endpoint
) -> None:
    path = endpoint.path([(0.8, 200)])
    topic_arn, subscription_arn = subscribe(emulator, endpoint.url + path)
    assert endpoint.posts_to(path) == [], "moto confirms http subscriptions itself: nothing is POSTed"

    started = time.monotonic()
    message_id = publish(emulator, topic_arn, '{"userId": "slow"}')
    returned = time.monotonic()
    assert returned - started < 0.8
    assert all(post.answered is None for post in endpoint.posts_to(path)), "returned before the reply"

    outcome = emulator.outcome(message_id)
    assert outcome["outcome"] == "delivered"
    assert (outcome["status"], outcome["attempts"], outcome["results"]) == (200, 1, ["200"])
    assert (outcome["topic_arn"], outcome["subscription_arn"]) == (topic_arn, subscription_arn)
    assert outcome["endpoint"] == endpoint.url + path
    (post,) = endpoint.posts_to(path)
    assert post.answered is not None and post.answered > returned
    assert post.headers["content-type"] == "text/plain; charset=UTF-8"
    assert post.headers["x-amz-sns-message-type"] == "Notification"
    assert post.headers["x-amz-sns-message-id"] == message_id
    assert post.headers["x-amz-sns-topic-arn"] == topic_arn
    assert post.headers["x-amz-sns-subscription-arn"] == subscription_arn
    envelope = post.envelope
    assert envelope["Type"] == "Notification"
    assert (envelope["MessageId"], envelope["TopicArn"]) == (message_id, topic_arn)
    assert envelope["Message"] == '{"userId": "slow"}'
    assert envelope["SignatureVersion"] == "2" and envelope["Signature"]
    # The signing certificate is served unsigned, where the bridge fetches it.
    cert_path = envelope["SigningCertURL"].split("amazonaws.com", 1)[1]
    pem = requests.get(emulator.url + cert_path, timeout=5)
    assert pem.status_code == 200 and pem.text.startswith("-----BEGIN CERTIFICATE-----")


def test_one_certificate_per_subscription_signs_every_message_as_aws_does(
    emulator: Emulator, endpoint: Endpoint
) -> None:
    """The bridge's own verifier accepts each envelope, Subject included; the certificate URL is stable,
    so a subscriber fetches it once (moto's signer made a certificate per message)."""
    path = endpoint.path([])
    topic_arn, _ = subscribe(emulator, endpoint.url + path)
    ids = [publish(emulator, topic_arn, f'{{"n": {n}}}') for n in range(3)]
    ids.append(str(emulator.sns.publish(TopicArn=topic_arn, Message="{}", Subject="Deposit")["MessageId"]))
    for message_id in ids:
        assert emulator.outcome(message_id)["outcome"] == "delivered"
    envelopes = [post.envelope for post in endpoint.posts_to(path)]
    assert sorted(e["MessageId"] for e in envelopes) == sorted(ids)
    (cert_url,) = {e["SigningCertURL"] for e in envelopes}
    pem = requests.get(emulator.url + cert_url.split("amazonaws.com", 1)[1], timeout=5).content
    key = sns.load_certificate(pem, datetime.now(UTC))
    for envelope in envelopes:
        sns.verify_signature(sns.parse_message(json.dumps(envelope).encode()), key)
    (with_subject,) = [e for e in envelopes if "Subject" in e]
    forged = sns.parse_message(json.dumps({**with_subject, "Subject": "Withdrawal"}).encode())
    with pytest.raises(sns.Rejected, match="signature does not match"):
        sns.verify_signature(forged, key)


def test_a_5xx_is_retried_after_the_delay_until_delivered_then_never_again(
    emulator: Emulator, endpoint: Endpoint
) -> None:
    path = endpoint.path([500, 503])
    topic_arn, _ = subscribe(emulator, endpoint.url + path)
    message_id = publish(emulator, topic_arn)

    outcome = emulator.outcome(message_id)
    assert (outcome["outcome"], outcome["status"], outcome["error"]) == ("delivered", 200, None)
    assert (outcome["attempts"], outcome["results"]) == (3, ["500", "503", "200"])
    time.sleep(RETRY_DELAY + 0.5)
    posts = endpoint.posts_to(path)
    assert len(posts) == 3, "delivered once, after two failures; nothing after the 200"
    assert len({post.body for post in posts}) == 1, "each retry is the same signed message"
    assert {post.headers["x-amz-sns-message-id"] for post in posts} == {message_id}
    gaps = [later.received - earlier.received for earlier, later in itertools.pairwise(posts)]
    assert all(gap >= RETRY_DELAY * 0.9 for gap in gaps), gaps


def test_a_4xx_counts_as_delivered_and_is_not_retried(emulator: Emulator, endpoint: Endpoint) -> None:
    path = endpoint.path([403])
    topic_arn, _ = subscribe(emulator, endpoint.url + path)
    message_id = publish(emulator, topic_arn)

    outcome = emulator.outcome(message_id)
    assert (outcome["outcome"], outcome["status"], outcome["attempts"]) == ("delivered", 403, 1)
    time.sleep(RETRY_DELAY + 0.5)
    assert len(endpoint.posts_to(path)) == 1


def test_after_one_attempt_and_three_retries_it_gives_up(emulator: Emulator, endpoint: Endpoint) -> None:
    path = endpoint.path([500] * 10)
    topic_arn, _ = subscribe(emulator, endpoint.url + path)
    message_id = publish(emulator, topic_arn)

    outcome = emulator.outcome(message_id)
    assert (outcome["outcome"], outcome["status"]) == ("gave_up", 500)
    assert (outcome["attempts"], outcome["results"]) == (1 + RETRIES, ["500"] * (1 + RETRIES))
    time.sleep(RETRY_DELAY + 0.5)
    assert len(endpoint.posts_to(path)) == 1 + RETRIES


def test_a_timeout_is_a_failed_attempt_and_is_retried(emulator: Emulator, endpoint: Endpoint) -> None:
    path = endpoint.path([(TIMEOUT + 0.5, 200)])
    topic_arn, _ = subscribe(emulator, endpoint.url + path)
    message_id = publish(emulator, topic_arn)

    outcome = emulator.outcome(message_id)
    assert (outcome["outcome"], outcome["status"], outcome["error"]) == ("delivered", 200, None)
    assert (outcome["attempts"], outcome["results"]) == (2, ["timeout", "200"])
    assert len(endpoint.posts_to(path)) == 2


def test_an_unreachable_endpoint_is_retried_then_given_up(emulator: Emulator) -> None:
    topic_arn, _ = subscribe(emulator, f"http://127.0.0.1:{free_port()}/")
    message_id = publish(emulator, topic_arn)

    outcome = emulator.outcome(message_id)
    assert (outcome["outcome"], outcome["status"], outcome["error"]) == ("gave_up", None, "ConnectionError")
    assert outcome["attempts"] == 1 + RETRIES
    assert outcome["seconds"] >= RETRIES * RETRY_DELAY * 0.9


def test_subscriptions_are_confirmed_by_moto_and_confirm_subscription_is_answered_unsigned(
    emulator: Emulator, endpoint: Endpoint
) -> None:
    topic_arn, subscription_arn = subscribe(emulator, endpoint.url + endpoint.path([]))
    attributes = emulator.sns.get_subscription_attributes(SubscriptionArn=subscription_arn)["Attributes"]
    assert attributes["PendingConfirmation"] == "false"
    # What the bridge GETs for a SubscriptionConfirmation's SubscribeURL, sent to 127.0.0.1 unsigned.
    reply = requests.get(
        emulator.url, params={"Action": "ConfirmSubscription", "TopicArn": topic_arn, "Token": "t"}, timeout=5
    )
    assert reply.status_code == 200
    assert f"{topic_arn}:" in reply.text


def test_other_protocols_are_still_delivered_by_moto(emulator: Emulator) -> None:
    credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sqs = boto3.client("sqs", endpoint_url=emulator.url, region_name="us-east-1", **credentials)
    queue_url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns = emulator.sns
    topic_arn = sns.create_topic(Name=f"t-{uuid.uuid4().hex[:12]}")["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    message_id = publish(emulator, topic_arn, "to a queue")

    (received,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert (json.loads(received["Body"])["MessageId"], json.loads(received["Body"])["Message"]) == (
        message_id,
        "to a queue",
    )
    assert [o for o in emulator.outcomes() if o["message_id"] == message_id] == []


def test_on_sigterm_attempts_in_flight_finish_and_waiting_retries_are_abandoned(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    # A long retry delay, so the failed message's retry is still waiting when the signal comes.
    # A generous grace: the slow attempt finishes within it however loaded the machine is (the emulator
    # exits as soon as nothing is in flight, so the grace costs nothing).
    emulator = start_emulator(tmp_path, "--retry-delay-seconds", "30", "--shutdown-grace-seconds", "60")
    try:
        failing, slow = endpoint.path([500]), endpoint.path([(0.6, 200)])
        failed_id = publish(emulator, subscribe(emulator, endpoint.url + failing)[0])
        wait_until(lambda: len(endpoint.posts_to(failing)) == 1, 30)
        slow_id = publish(emulator, subscribe(emulator, endpoint.url + slow)[0])
        wait_until(lambda: len(endpoint.posts_to(slow)) == 1, 30)

        emulator.process.send_signal(signal.SIGTERM)
        assert emulator.process.wait(90) == 0
    finally:
        stop(emulator.process)
    abandoned = emulator.outcome(failed_id, timeout=0)
    assert (abandoned["outcome"], abandoned["attempts"], abandoned["status"]) == ("abandoned", 1, 500)
    finished = emulator.outcome(slow_id, timeout=0)
    assert (finished["outcome"], finished["attempts"], finished["status"]) == ("delivered", 1, 200)
    assert len(endpoint.posts_to(failing)) == 1
