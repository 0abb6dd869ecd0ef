"""The project's Pub/Sub emulator, driven by the real google-cloud-pubsub clients.

One emulator per module; every test makes its own topics and subscriptions (unique names), so tests
do not depend on each other's leftovers.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud import pubsub_v1
from werkzeug.serving import make_server

from jupiter_data.local.pubsub_emulator import PubSubEmulator

pytestmark = pytest.mark.timeout(30)
# What a test waits for at most when a barrier or gate should open at once: generous, so a loaded
# machine is only slower, and bounded, so a broken emulator fails the test instead of hanging it.
SLOW_MACHINE_TIMEOUT = 60.0

PROJECT = "jupiter-test"
Publisher = pubsub_v1.PublisherClient
Subscriber = pubsub_v1.SubscriberClient


def fast_retries(maximum_ms: int) -> dict[str, timedelta]:
    return {
        "minimum_backoff": timedelta(milliseconds=50),
        "maximum_backoff": timedelta(milliseconds=maximum_ms),
    }


@pytest.fixture(scope="module")
def emulator() -> Iterator[PubSubEmulator]:
    emu = PubSubEmulator()
    emu.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("PUBSUB_EMULATOR_HOST", emu.address)  # read when a client is constructed
            yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def publisher(emulator: PubSubEmulator) -> Iterator[Publisher]:
    client = pubsub_v1.PublisherClient()
    yield client
    client.stop()


@pytest.fixture(scope="module")
def subscriber(emulator: PubSubEmulator) -> Iterator[Subscriber]:
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


def unique(kind: str, project: str = PROJECT) -> str:
    return f"projects/{project}/{kind}/t-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pull(subscriber: Subscriber, subscription: str, want: int, timeout: float = 10.0) -> list[Any]:
    """Pull until `want` messages arrived (long-polls in the emulator, never a fixed sleep)."""
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(received)} of {want} messages within {timeout}s"
        response = subscriber.pull(
            subscription=subscription, max_messages=want - len(received), timeout=min(2, left)
        )
        received.extend(response.received_messages)
    return received


def pull_nothing(subscriber: Subscriber, subscription: str) -> bool:
    response = subscriber.pull(subscription=subscription, max_messages=10, return_immediately=True)
    return not response.received_messages


def make_topic_and_subscription(
    publisher: Publisher, subscriber: Subscriber, **subscription: Any
) -> tuple[str, str]:
    topic = publisher.create_topic(name=unique("topics")).name
    name = unique("subscriptions")
    subscriber.create_subscription(request={"name": name, "topic": topic, **subscription})
    return topic, name


class PushEndpoint:
    """An HTTP endpoint recording push requests; `status(n)` decides the answer to request n (1-based).

    ``together=N``: the first N requests each wait at a barrier that opens only once all N are in
    flight at once (a broken barrier answers 500 and is counted in ``apart``), which proves concurrent
    delivery by construction. ``gate``: every request waits for it before answering.
    """

    def __init__(
        self,
        status: Callable[[int], int] = lambda n: 204,
        port: int = 0,
        together: int = 0,
        gate: threading.Event | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.apart = 0
        self.gate = gate
        barrier = threading.Barrier(together, timeout=SLOW_MACHINE_TIMEOUT) if together else None
        lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    endpoint.requests.append({"body": body, "content_type": self.headers["Content-Type"]})
                    n = len(endpoint.requests)
                    code = status(n)
                if barrier is not None and n <= barrier.parties:
                    try:
                        barrier.wait()
                    except threading.BrokenBarrierError:
                        with lock:
                            endpoint.apart += 1
                        code = 500
                if gate is not None:
                    gate.wait(SLOW_MACHINE_TIMEOUT)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/push"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()  # no handler outlives its test
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoints() -> Iterator[list[PushEndpoint]]:
    started: list[PushEndpoint] = []
    yield started
    for endpoint in started:
        endpoint.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- administration ----------------------------------------------------------------------------------


def test_topic_lifecycle_and_errors(publisher: Publisher) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    names = sorted(unique("topics", project) for _ in range(5))
    for name in names:
        assert publisher.create_topic(name=name).name == name

    assert publisher.get_topic(topic=names[0]).name == names[0]
    # page_size 2 makes the client follow next_page_token across three pages
    assert [
        t.name for t in publisher.list_topics(request={"project": f"projects/{project}", "page_size": 2})
    ] == names

    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=names[0])
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"projects/{project}/topics/x")  # ids are 3..255 characters
    with pytest.raises(exceptions.InvalidArgument):
        publisher.create_topic(name=f"projects/{project}/subscriptions/not-a-topic")

    publisher.delete_topic(topic=names[0])
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=names[0])
    with pytest.raises(exceptions.NotFound):
        publisher.delete_topic(topic=names[0])
    with pytest.raises(exceptions.NotFound):
        publisher.publish(names[0], b"lost").result(timeout=10)


def test_subscription_lifecycle_and_errors(publisher: Publisher, subscriber: Subscriber) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    topic = publisher.create_topic(name=unique("topics", project)).name
    name = unique("subscriptions", project)

    with pytest.raises(exceptions.NotFound):
        subscriber.create_subscription(name=name, topic=unique("topics", project))
    created = subscriber.create_subscription(name=name, topic=topic)
    assert created.ack_deadline_seconds == 10  # the real default when none is given
    with pytest.raises(exceptions.AlreadyExists):
        subscriber.create_subscription(name=name, topic=topic)
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.create_subscription(name=f"projects/{project}/topics/wrong-kind", topic=topic)
    with pytest.raises(exceptions.MethodNotImplemented):  # refused loudly rather than ignored
        subscriber.create_subscription(
            request={"name": unique("subscriptions"), "topic": topic, "filter": "x"}
        )

    assert subscriber.get_subscription(subscription=name).topic == topic
    assert [s.name for s in subscriber.list_subscriptions(project=f"projects/{project}")] == [name]
    assert list(publisher.list_topic_subscriptions(topic=topic)) == [name]

    updated = subscriber.update_subscription(
        request={
            "subscription": {
                "name": name,
                "ack_deadline_seconds": 30,
                "push_config": {"push_endpoint": "http://127.0.0.1:9/push"},
                "labels": {"team": "data"},
            },
            "update_mask": {"paths": ["ack_deadline_seconds", "push_config"]},
        }
    )
    assert updated.ack_deadline_seconds == 30
    assert updated.push_config.push_endpoint == "http://127.0.0.1:9/push"
    assert not updated.labels  # not in the mask
    with pytest.raises(exceptions.InvalidArgument):
        subscriber.update_subscription(
            request={"subscription": {"name": name, "topic": topic}, "update_mask": {"paths": ["topic"]}}
        )
    subscriber.modify_push_config(subscription=name, push_config={})
    assert not subscriber.get_subscription(subscription=name).push_config.push_endpoint

    publisher.delete_topic(topic=topic)  # the subscription survives, detached from its topic
    assert subscriber.get_subscription(subscription=name).topic == "_deleted-topic_"
    subscriber.delete_subscription(subscription=name)
    with pytest.raises(exceptions.NotFound):
        subscriber.get_subscription(subscription=name)
    with pytest.raises(exceptions.NotFound):
        subscriber.delete_subscription(subscription=name)


def test_unimplemented_rpcs_answer_promptly(emulator: PubSubEmulator, subscriber: Subscriber) -> None:
    with grpc.insecure_channel(emulator.address) as channel:
        for method in (
            "/google.pubsub.v1.Subscriber/Seek",
            "/google.pubsub.v1.Publisher/DetachSubscription",
            "/google.iam.v1.IAMPolicy/GetIamPolicy",  # a service the emulator does not serve at all
        ):
            with pytest.raises(grpc.RpcError) as caught:
                channel.unary_unary(method)(b"", timeout=20)
            # UNIMPLEMENTED, not DEADLINE_EXCEEDED: the emulator answered instead of leaving it hanging.
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, method

    with pytest.raises(exceptions.MethodNotImplemented):
        subscriber.create_snapshot(name=unique("snapshots"), subscription=unique("subscriptions"), timeout=20)


# -- pull --------------------------------------------------------------------------------------------


def test_publish_pull_ack(emulator: PubSubEmulator, publisher: Publisher, subscriber: Subscriber) -> None:
    topic = publisher.create_topic(name=unique("topics")).name
    publisher.publish(topic, b"before any subscription").result(timeout=10)
    subscription = subscriber.create_subscription(name=unique("subscriptions"), topic=topic).name

    ids = [publisher.publish(topic, f"m{i}".encode(), n=str(i)).result(timeout=10) for i in range(3)]
    received = pull(subscriber, subscription, 3)

    assert sorted(r.message.message_id for r in received) == sorted(ids)
    attributes = {r.message.data: r.message.attributes["n"] for r in received}
    assert attributes == {b"m0": "0", b"m1": "1", b"m2": "2"}
    assert all(r.message.publish_time.timestamp() > time.time() - 60 for r in received)
    assert all(r.delivery_attempt == 0 for r in received)  # only reported with a dead-letter policy
    subscriber.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in received])

    assert emulator.unacked_count(subscription) == 0
    assert pull_nothing(subscriber, subscription)  # acked: gone; published earlier: never delivered


def test_streaming_pull_receives_and_acks(
    emulator: PubSubEmulator, publisher: Publisher, subscriber: Subscriber
) -> None:
    topic, subscription = make_topic_and_subscription(publisher, subscriber)
    received: list[bytes] = []

    def callback(message: Any) -> None:
        received.append(message.data)
        message.ack()

    future = subscriber.subscribe(subscription, callback)
    try:
        for f in [publisher.publish(topic, f"s{i}".encode()) for i in range(50)]:
            f.result(timeout=10)
        wait_for(lambda: len(received) >= 50, what="50 messages through streaming pull")
        wait_for(lambda: emulator.unacked_count(subscription) == 0, what="acks to arrive")
    finally:
        future.cancel()
        future.result(timeout=10)  # the stream ends cleanly on cancel
    assert sorted(received) == sorted(f"s{i}".encode() for i in range(50))


def test_streaming_pull_on_missing_subscription_fails(subscriber: Subscriber) -> None:
    future = subscriber.subscribe(unique("subscriptions"), lambda message: None)
    with pytest.raises(exceptions.NotFound):
        future.result(timeout=10)


def test_redelivery_after_ack_deadline(publisher: Publisher, subscriber: Subscriber) -> None:
    # 1 s is below the real 10 s minimum; the emulator allows it so this test is quick.
    topic, subscription = make_topic_and_subscription(publisher, subscriber, ack_deadline_seconds=1)
    message_id = publisher.publish(topic, b"unacked").result(timeout=10)

    started = time.monotonic()  # before the lease: however slow the machine, a lease lasts its 1 s
    first = pull(subscriber, subscription, 1)[0]
    second = pull(subscriber, subscription, 1)[0]  # not acked: comes back once the deadline passes

    assert time.monotonic() - started >= 0.99  # not before the deadline (float rounding aside)
    assert first.message.message_id == second.message.message_id == message_id
    assert first.ack_id != second.ack_id
    subscriber.acknowledge(subscription=subscription, ack_ids=[second.ack_id])
    subscriber.acknowledge(subscription=subscription, ack_ids=[first.ack_id])  # stale: ignored


def test_modify_ack_deadline_extends_and_nacks(publisher: Publisher, subscriber: Subscriber) -> None:
    topic, subscription = make_topic_and_subscription(publisher, subscriber, ack_deadline_seconds=60)
    publisher.publish(topic, b"nack me").result(timeout=10)

    first = pull(subscriber, subscription, 1)[0]
    subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=0)
    started = time.monotonic()
    second = pull(subscriber, subscription, 1)[0]
    assert time.monotonic() - started < 20.0  # a nack is redelivered at once, not after the 60 s deadline
    assert second.message.data == b"nack me"

    subscriber.modify_ack_deadline(subscription=subscription, ack_ids=[second.ack_id], ack_deadline_seconds=1)
    third = pull(subscriber, subscription, 1)[0]  # the shortened deadline expires
    assert third.message.message_id == second.message.message_id
    subscriber.acknowledge(subscription=subscription, ack_ids=[third.ack_id])
    assert pull_nothing(subscriber, subscription)


def test_pull_dead_letter_after_max_attempts(publisher: Publisher, subscriber: Subscriber) -> None:
    _, dead_subscription = dead = make_topic_and_subscription(publisher, subscriber)
    topic, subscription = make_topic_and_subscription(
        publisher,
        subscriber,
        dead_letter_policy={"dead_letter_topic": dead[0], "max_delivery_attempts": 2},  # real minimum is 5
    )
    publisher.publish(topic, b"poison", origin="test").result(timeout=10)

    for attempt in (1, 2):
        received = pull(subscriber, subscription, 1)[0]
        assert received.delivery_attempt == attempt
        subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[received.ack_id], ack_deadline_seconds=0
        )

    dead_lettered = pull(subscriber, dead_subscription, 1)[0].message
    assert dead_lettered.data == b"poison"
    assert dead_lettered.attributes["origin"] == "test"
    assert dead_lettered.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "2"
    assert dead_lettered.attributes["CloudPubSubDeadLetterSourceSubscription"] == subscription.split("/")[-1]
    assert pull_nothing(subscriber, subscription)


# -- push --------------------------------------------------------------------------------------------


def test_push_retries_with_backoff_until_acked(
    emulator: PubSubEmulator,
    publisher: Publisher,
    subscriber: Subscriber,
    endpoints: list[PushEndpoint],
) -> None:
    endpoint = PushEndpoint(status=lambda n: 500 if n == 1 else 503 if n == 2 else 204)
    endpoints.append(endpoint)
    topic, subscription = make_topic_and_subscription(
        publisher, subscriber, push_config={"push_endpoint": endpoint.url}
    )
    message_id = publisher.publish(topic, b'{"hello": 1}', source="sns").result(timeout=10)

    wait_for(
        lambda: emulator.unacked_count(subscription) == 0 and len(endpoint.requests) >= 3, what="push ack"
    )
    time.sleep(0.3)  # longer than the next backoff would be: no further delivery may follow the ack
    assert len(endpoint.requests) == 3
    for request in endpoint.requests:
        body = request["body"]
        assert request["content_type"] == "application/json"
        assert body["subscription"] == subscription
        assert body["message"]["messageId"] == body["message"]["message_id"] == message_id
        assert base64.b64decode(body["message"]["data"]) == b'{"hello": 1}'
        assert body["message"]["attributes"] == {"source": "sns"}
        assert body["message"]["publishTime"].endswith("Z")
        assert "deliveryAttempt" not in body  # only sent with a dead-letter policy


@pytest.mark.timeout(3 * SLOW_MACHINE_TIMEOUT)
def test_push_delivers_concurrently(
    emulator: PubSubEmulator,
    publisher: Publisher,
    subscriber: Subscriber,
    endpoints: list[PushEndpoint],
) -> None:
    endpoint = PushEndpoint(together=8)  # one delivery at a time would break the barrier
    endpoints.append(endpoint)
    topic, subscription = make_topic_and_subscription(
        publisher,
        subscriber,
        push_config={"push_endpoint": endpoint.url},
        ack_deadline_seconds=int(2 * SLOW_MACHINE_TIMEOUT),  # the push timeout outlasts the barrier
    )
    for f in [publisher.publish(topic, f"c{i}".encode()) for i in range(32)]:
        f.result(timeout=10)
    wait_for(
        lambda: emulator.unacked_count(subscription) == 0,
        timeout=2 * SLOW_MACHINE_TIMEOUT,
        what="32 pushes acked",
    )
    assert endpoint.apart == 0, "8 pushes were never in flight at once"
    assert len(endpoint.requests) == 32  # each delivered once: no retry was needed


def test_push_dead_letter_after_max_attempts(
    publisher: Publisher, subscriber: Subscriber, endpoints: list[PushEndpoint]
) -> None:
    endpoint = PushEndpoint(status=lambda n: 500)
    endpoints.append(endpoint)
    dead_topic, dead_subscription = make_topic_and_subscription(publisher, subscriber)
    topic, _ = make_topic_and_subscription(
        publisher,
        subscriber,
        push_config={"push_endpoint": endpoint.url},
        dead_letter_policy={"dead_letter_topic": dead_topic, "max_delivery_attempts": 3},
        retry_policy=fast_retries(100),
    )
    publisher.publish(topic, b"never accepted").result(timeout=10)

    dead_lettered = pull(subscriber, dead_subscription, 1)[0].message
    assert dead_lettered.data == b"never accepted"
    assert dead_lettered.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "3"
    assert [r["body"]["deliveryAttempt"] for r in endpoint.requests] == [1, 2, 3]


def failed_pushes(caplog: pytest.LogCaptureFixture) -> set[str]:
    """Ids of messages the emulator has tried and failed to push at least once (from its debug log)."""
    return {
        str(r.args[0])
        for r in caplog.records
        if isinstance(r.args, tuple) and r.msg == "push of message %s failed (attempt %d)"
    }


@pytest.fixture
def caplog_pushes(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="jupiter_data.local.pubsub_emulator")
    return caplog


def push_subscription_to(port: int, publisher: Publisher, subscriber: Subscriber) -> tuple[str, str]:
    """A topic and a push subscription to ``http://127.0.0.1:<port>/push`` retrying every 200 ms."""
    dead_topic = publisher.create_topic(name=unique("topics")).name
    return make_topic_and_subscription(
        publisher,
        subscriber,
        push_config={"push_endpoint": f"http://127.0.0.1:{port}/push"},
        # a generous dead-letter policy only so the envelope reports deliveryAttempt
        dead_letter_policy={"dead_letter_topic": dead_topic, "max_delivery_attempts": 100},
        retry_policy=fast_retries(200),
    )


def test_push_waits_for_endpoint_to_come_back(
    emulator: PubSubEmulator,
    publisher: Publisher,
    subscriber: Subscriber,
    endpoints: list[PushEndpoint],
    caplog_pushes: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens here yet: connection refused
    topic, subscription = push_subscription_to(port, publisher, subscriber)
    message_id = publisher.publish(topic, b"while down").result(timeout=10)
    wait_for(lambda: message_id in failed_pushes(caplog_pushes), what="a refused attempt")

    endpoint = PushEndpoint(port=port)
    endpoints.append(endpoint)
    wait_for(lambda: emulator.unacked_count(subscription) == 0, what="delivery after the endpoint came back")
    assert len(endpoint.requests) == 1
    body = endpoint.requests[0]["body"]
    assert base64.b64decode(body["message"]["data"]) == b"while down"
    assert body["deliveryAttempt"] > 1


FUNCTION_SOURCE = """
import json

import functions_framework


@functions_framework.cloud_event
def handle(event):
    record = {{"type": event["type"], "source": event["source"], "data": event.data}}
    with open({out!r}, "a") as out:
        out.write(json.dumps(record) + "\\n")
"""


def test_push_envelope_reaches_a_functions_framework_cloudevent_function(
    tmp_path: Path, emulator: PubSubEmulator, publisher: Publisher, subscriber: Subscriber
) -> None:
    import functions_framework

    events = tmp_path / "events.ndjson"
    source = tmp_path / "main.py"
    source.write_text(FUNCTION_SOURCE.format(out=str(events)))
    app = functions_framework.create_app(target="handle", source=str(source), signature_type="cloudevent")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        topic = publisher.create_topic(name=unique("topics")).name
        url = f"http://127.0.0.1:{server.server_port}/{topic}"  # the path gives the event its source
        subscription = subscriber.create_subscription(
            request={"name": unique("subscriptions"), "topic": topic, "push_config": {"push_endpoint": url}}
        ).name
        message_id = publisher.publish(topic, b'{"event": "signup"}', kind="user").result(timeout=10)

        wait_for(lambda: events.exists() and emulator.unacked_count(subscription) == 0, what="function call")
    finally:
        server.shutdown()

    [event] = [json.loads(line) for line in events.read_text().splitlines()]
    assert event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert event["source"] == f"//pubsub.googleapis.com/{topic}"
    message = event["data"]["message"]
    assert base64.b64decode(message["data"]) == b'{"event": "signup"}'
    assert message["attributes"] == {"kind": "user"}
    assert message["messageId"] == message_id


# -- command line ------------------------------------------------------------------------------------


def test_module_runs_in_foreground_and_exits_cleanly_on_sigterm() -> None:
    port = free_port()
    command = ["-m", "jupiter_data.local.pubsub_emulator", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [sys.executable, *command],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stderr is not None
        assert f"listening on 127.0.0.1:{port}" in process.stderr.readline()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


# -- persistence (--data-dir) --------------------------------------------------------------------------


class Restartable:
    """Emulators on one port and one data directory, stopped and started again like the stack does.

    The clients are made once and outlive every restart, as the functions' clients do.
    """

    def __init__(self, data_dir: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.emulator = self._start()
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", self.emulator.address)
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def _start(self) -> PubSubEmulator:
        emulator = PubSubEmulator(port=self.port, data_dir=self.data_dir)
        emulator.start()
        return emulator

    def restart(self) -> PubSubEmulator:
        self.emulator.stop()
        self.emulator = self._start()
        return self.emulator

    def close(self) -> None:
        self.publisher.stop()
        self.subscriber.close()
        self.emulator.stop()


@pytest.fixture
def restartable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Restartable]:
    stack = Restartable(tmp_path / "pubsub", monkeypatch)
    yield stack
    stack.close()


def saved_state(stack: Restartable) -> dict[str, Any]:
    assert stack.data_dir is not None
    state: dict[str, Any] = json.loads((stack.data_dir / "state.json").read_text())
    return state


def test_restart_keeps_topics_and_subscriptions_with_their_configs(
    restartable: Restartable, endpoints: list[PushEndpoint]
) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    endpoint = PushEndpoint()
    endpoints.append(endpoint)
    topic = publisher.create_topic(
        request={
            "name": unique("topics"),
            "labels": {"team": "data"},
            "message_retention_duration": timedelta(hours=2),
        }
    )
    dead_topic = publisher.create_topic(name=unique("topics"))
    pull_sub = subscriber.create_subscription(
        request={
            "name": unique("subscriptions"),
            "topic": topic.name,
            "ack_deadline_seconds": 42,
            "retry_policy": fast_retries(700),
            "dead_letter_policy": {"dead_letter_topic": dead_topic.name, "max_delivery_attempts": 7},
            "labels": {"kind": "pull"},
            "message_retention_duration": timedelta(hours=3),
            "retain_acked_messages": True,
            "enable_message_ordering": True,
        }
    )
    push_sub = subscriber.create_subscription(
        request={
            "name": unique("subscriptions"),
            "topic": topic.name,
            "push_config": {"push_endpoint": endpoint.url, "attributes": {"x-goog-version": "v1"}},
            "retry_policy": {},  # set but empty: the real defaults apply
        }
    )
    orphan_topic = publisher.create_topic(name=unique("topics")).name
    orphan = subscriber.create_subscription(name=unique("subscriptions"), topic=orphan_topic)
    publisher.delete_topic(topic=orphan_topic)

    restartable.restart()

    assert publisher.get_topic(topic=topic.name) == topic
    assert publisher.get_topic(topic=dead_topic.name) == dead_topic
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(topic=orphan_topic)
    restored_pull = subscriber.get_subscription(subscription=pull_sub.name)
    assert restored_pull == pull_sub
    assert restored_pull.ack_deadline_seconds == 42
    assert restored_pull.dead_letter_policy.max_delivery_attempts == 7
    assert restored_pull.retry_policy.maximum_backoff == timedelta(milliseconds=700)
    restored_push = subscriber.get_subscription(subscription=push_sub.name)
    assert restored_push == push_sub
    assert "retry_policy" in restored_push  # presence survives, not only values
    assert subscriber.get_subscription(subscription=orphan.name).topic == "_deleted-topic_"
    assert sorted(publisher.list_topic_subscriptions(topic=topic.name)) == sorted(
        [pull_sub.name, push_sub.name]
    )


def test_restart_redelivers_unacked_and_leased_messages_but_not_acked_ones(
    restartable: Restartable,
) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    dead_topic = publisher.create_topic(name=unique("topics")).name
    topic, subscription = make_topic_and_subscription(
        publisher,
        subscriber,
        ack_deadline_seconds=60,  # nothing expires during the test: leases stay leases
        # a generous dead-letter policy only so deliveries report delivery_attempt
        dead_letter_policy={"dead_letter_topic": dead_topic, "max_delivery_attempts": 100},
    )
    ids = {data: publisher.publish(topic, data).result(timeout=10) for data in (b"a", b"b", b"c", b"d")}
    first = {m.message.data: m for m in pull(subscriber, subscription, 2)}
    assert set(first) == {b"a", b"b"}
    subscriber.acknowledge(subscription=subscription, ack_ids=[first[b"a"].ack_id])  # b stays leased

    restartable.restart()

    again = {m.message.data: m for m in pull(subscriber, subscription, 3)}
    assert set(again) == {b"b", b"c", b"d"}
    assert pull_nothing(subscriber, subscription)  # a was acked before the stop
    assert {data: m.message.message_id for data, m in again.items()} == {d: ids[d] for d in again}
    assert again[b"b"].delivery_attempt == 2  # leased once before the stop
    assert again[b"c"].delivery_attempt == again[b"d"].delivery_attempt == 1
    assert again[b"b"].message.publish_time == first[b"b"].message.publish_time
    stale = first[b"b"].ack_id
    assert stale not in {m.ack_id for m in again.values()}  # old ack ids cannot ack new deliveries
    subscriber.acknowledge(subscription=subscription, ack_ids=[stale])
    assert restartable.emulator.unacked_count(subscription) == 3

    new_id = publisher.publish(topic, b"e").result(timeout=10)
    assert new_id not in ids.values()
    assert int(new_id) > max(int(i) for i in ids.values())


def test_restart_continues_counting_delivery_attempts_and_dead_letters_on_the_last_one(
    restartable: Restartable,
) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    dead_topic, dead_subscription = make_topic_and_subscription(publisher, subscriber)
    topic, subscription = make_topic_and_subscription(
        publisher,
        subscriber,
        ack_deadline_seconds=60,
        dead_letter_policy={"dead_letter_topic": dead_topic, "max_delivery_attempts": 4},
    )
    publisher.publish(topic, b"nacked").result(timeout=10)
    publisher.publish(topic, b"last try").result(timeout=10)
    for attempt in (1, 2):  # both delivered and nacked twice
        received = pull(subscriber, subscription, 2)
        assert [m.delivery_attempt for m in received] == [attempt, attempt]
        subscriber.modify_ack_deadline(
            subscription=subscription, ack_ids=[m.ack_id for m in received], ack_deadline_seconds=0
        )
    third = {m.message.data: m for m in pull(subscriber, subscription, 2)}
    assert third[b"nacked"].delivery_attempt == 3
    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[third[b"nacked"].ack_id], ack_deadline_seconds=0
    )
    [fourth] = pull(subscriber, subscription, 1)  # "nacked" on its last attempt, leased at the stop
    assert (fourth.message.data, fourth.delivery_attempt) == (b"nacked", 4)

    restartable.restart()

    # "last try" was leased on its 3rd attempt: one more is allowed, and the count goes on.
    [redelivered] = pull(subscriber, subscription, 1)
    assert (redelivered.message.data, redelivered.delivery_attempt) == (b"last try", 4)
    assert pull_nothing(subscriber, subscription)
    # "nacked" was leased on its 4th and last attempt: unanswered, so it is dead-lettered.
    [dead] = pull(subscriber, dead_subscription, 1)
    assert dead.message.data == b"nacked"
    assert dead.message.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "4"


def test_restart_resumes_pushing_what_was_published_before_the_stop(
    restartable: Restartable, endpoints: list[PushEndpoint], caplog_pushes: pytest.LogCaptureFixture
) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    port = free_port()  # nothing listens before the restart: every push is refused
    topic, subscription = push_subscription_to(port, publisher, subscriber)
    published = {publisher.publish(topic, f"m{i}".encode()).result(timeout=10): f"m{i}" for i in range(5)}
    wait_for(lambda: failed_pushes(caplog_pushes) >= published.keys(), what="a refused attempt of each")

    emulator = restartable.restart()
    assert emulator.unacked_count(subscription) == 5
    endpoint = PushEndpoint(port=port)
    endpoints.append(endpoint)
    wait_for(lambda: emulator.unacked_count(subscription) == 0, what="pushes after the restart")

    # At least once: a push still in flight when the stop's grace ran out is saved and pushed again, so a
    # stalled (loaded) machine may deliver a message twice; what must hold is that each arrived.
    delivered = {r["body"]["message"]["messageId"]: r["body"] for r in endpoint.requests}
    assert {i: base64.b64decode(b["message"]["data"]).decode() for i, b in delivered.items()} == published
    assert all(b["deliveryAttempt"] > 1 for b in delivered.values())  # counted across the restart
    assert all(b["subscription"] == subscription for b in delivered.values())


def test_push_in_flight_at_the_stop_is_pushed_again_after_the_restart(
    restartable: Restartable, endpoints: list[PushEndpoint]
) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    answer = threading.Event()  # the first POST stays unanswered until the restart is over
    endpoint = PushEndpoint(gate=answer)
    endpoints.append(endpoint)
    topic, subscription = make_topic_and_subscription(
        publisher, subscriber, push_config={"push_endpoint": endpoint.url}, ack_deadline_seconds=30
    )
    message_id = publisher.publish(topic, b"in flight").result(timeout=10)
    wait_for(lambda: endpoint.requests, what="the push to start")

    emulator = restartable.restart()  # the first POST is still unanswered when the state is saved
    [saved] = [
        s for s in saved_state(restartable)["subscriptions"] if s["subscription"]["name"] == subscription
    ]
    assert saved["in_flight"] == [{"message_id": message_id, "delivery_attempts": 1}]
    assert saved["undelivered"] == []

    answer.set()
    wait_for(lambda: emulator.unacked_count(subscription) == 0, what="the push after the restart")
    assert [r["body"]["message"]["messageId"] for r in endpoint.requests] == [message_id, message_id]
    assert base64.b64decode(endpoint.requests[1]["body"]["message"]["data"]) == b"in flight"


def test_state_file_is_legible_json(restartable: Restartable) -> None:
    publisher, subscriber = restartable.publisher, restartable.subscriber
    topic, subscription = make_topic_and_subscription(publisher, subscriber)
    message_id = publisher.publish(topic, b"\x00binary\xff", origin="test").result(timeout=10)
    restartable.emulator.stop()

    state = saved_state(restartable)
    assert state["version"] == 1
    assert [t["name"] for t in state["topics"]] == [topic]
    [saved] = state["subscriptions"]
    assert saved["subscription"]["name"] == subscription
    assert saved["subscription"]["topic"] == topic
    assert saved["undelivered"] == [{"message_id": message_id, "delivery_attempts": 0}]
    message = state["messages"][message_id]
    assert base64.b64decode(message["data"]) == b"\x00binary\xff"
    assert message["attributes"] == {"origin": "test"}
    assert int(state["next_message_id"]) > int(message_id)
    assert restartable.data_dir is not None
    assert [p.name for p in restartable.data_dir.iterdir()] == ["state.json"]  # no temp file left


def test_unreadable_state_file_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"format": "something else"}')
    emulator = PubSubEmulator(data_dir=tmp_path)
    with pytest.raises(RuntimeError, match="cannot load Pub/Sub emulator state"):
        emulator.start()
    assert (tmp_path / "state.json").read_text() == '{"format": "something else"}'  # left for a human


def test_without_data_dir_nothing_is_persisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stack = Restartable(None, monkeypatch)
    try:
        topic, subscription = make_topic_and_subscription(stack.publisher, stack.subscriber)
        stack.publisher.publish(topic, b"gone").result(timeout=10)
        stack.restart()
        assert list(tmp_path.iterdir()) == []
        assert list(stack.publisher.list_topics(project=f"projects/{PROJECT}")) == []
        with pytest.raises(exceptions.NotFound):
            stack.subscriber.get_subscription(subscription=subscription)
    finally:
        stack.close()


def test_module_keeps_messages_across_a_sigterm_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    data_dir = tmp_path / "pubsub"
    command = [sys.executable, "-m", "jupiter_data.local.pubsub_emulator", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]

    def run() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert process.stderr is not None
        for line in process.stderr:
            if "listening on" in line:
                return process
        raise AssertionError(f"the emulator exited with {process.wait()}")

    def sigterm(process: subprocess.Popen[str]) -> str:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        return process.stderr.read()

    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    process = run()
    try:
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic, subscription = make_topic_and_subscription(publisher, subscriber)
        ids = {publisher.publish(topic, data).result(timeout=10): data for data in (b"one", b"two")}
        assert "saved 1 topics, 1 subscriptions and 2 messages" in sigterm(process)
        assert (data_dir / "state.json").is_file()

        process = run()
        received = pull(subscriber, subscription, 2)
        assert {m.message.message_id: m.message.data for m in received} == ids
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in received])
        sigterm(process)

        process = run()
        assert pull_nothing(subscriber, subscription)  # the acks were saved too
        assert [t.name for t in publisher.list_topics(project=f"projects/{PROJECT}")] == [topic]
        sigterm(process)
        publisher.stop()
        subscriber.close()
    finally:
        process.kill()
        process.wait()
