"""Throughput of the project's Pub/Sub emulator through the real google-cloud-pubsub clients.

    python bench/pubsub_emulator.py [--messages 20000]

Starts the emulator in-process on a free port and measures, in one run:
  * publish: PublisherClient.publish (default batching) of N ~200-byte messages, all futures awaited;
  * streaming pull: SubscriberClient.subscribe() receiving and acking those N messages;
  * push: a push subscription delivering to a local HTTP endpoint;
  * baselines: raw gRPC Publish, one message per RPC (no client batching) and 100 per RPC.
Bounded: the 1/RPC baseline runs first, and every later phase gets a deadline scaled from its rate
(``SLACK`` times as long as that phase's messages would take at the baseline's rate, at least
``MIN_PHASE_SECONDS``), so a slower machine gets proportionally longer; the whole run takes well under a
minute here. A missed target is reported MISSED (exit 0); a phase past its deadline means messages
were lost or stuck (exit 1).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.cloud import pubsub_v1
from google.pubsub_v1 import types
from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import record  # bench/report.py: scripts run with bench/ on sys.path

from jupiter_data.local.pubsub_emulator import PubSubEmulator

PROJECT = "projects/bench"
PAYLOAD = b"x" * 200
TARGET_MSG_S = 2_000  # publish via the client
SLACK = 20.0  # a phase may take this many times as long as its messages would at the baseline rate
MIN_PHASE_SECONDS = 20.0


class PhaseTimeout:
    """Deadlines scaled from the machine's measured speed (the 1/RPC baseline), never fixed."""

    def __init__(self, baseline_rate: float) -> None:
        self.baseline_rate = baseline_rate

    def seconds(self, n: int) -> float:
        return max(MIN_PHASE_SECONDS, SLACK * n / self.baseline_rate)


def wait_until(done: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark phase '{what}' did not finish within {timeout:.0f}s")
        time.sleep(0.005)


def bench_client_publish(publisher: pubsub_v1.PublisherClient, topic: str, n: int, timeout: float) -> float:
    started = time.perf_counter()
    futures = [publisher.publish(topic, PAYLOAD, seq=str(i)) for i in range(n)]
    for future in futures:
        future.result(timeout=timeout)
    return n / (time.perf_counter() - started)


def bench_streaming_pull(
    emulator: PubSubEmulator,
    subscriber: pubsub_v1.SubscriberClient,
    subscription: str,
    n: int,
    timeout: float,
) -> float:
    received = 0
    lock = threading.Lock()

    def callback(message: Any) -> None:
        nonlocal received
        message.ack()
        with lock:
            received += 1

    started = time.perf_counter()
    future = subscriber.subscribe(subscription, callback)
    try:
        wait_until(
            lambda: received >= n and emulator.unacked_count(subscription) == 0, "streaming pull", timeout
        )
        elapsed = time.perf_counter() - started
    finally:
        future.cancel()
        future.result(timeout=10)
    return n / elapsed


def bench_raw_publish(address: str, topic: str, n: int, per_rpc: int) -> float:
    request_type = types.PublishRequest.pb()
    message = types.PubsubMessage.pb()(data=PAYLOAD)
    request = request_type(topic=topic, messages=[message] * per_rpc)
    with grpc.insecure_channel(address) as channel:
        publish = channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=lambda r: r.SerializeToString(),
            response_deserializer=types.PublishResponse.pb().FromString,
        )
        publish(request, timeout=10)  # connect before timing
        started = time.perf_counter()
        for _ in range(n // per_rpc):
            publish(request, timeout=10)
        return (n // per_rpc) * per_rpc / (time.perf_counter() - started)


def bench_push(
    emulator: PubSubEmulator,
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    n: int,
    timeout: float,
) -> float:
    count = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real function server would

        def do_POST(self) -> None:
            nonlocal count
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()
            with lock:
                count += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        topic = publisher.create_topic(name=f"{PROJECT}/topics/push-bench").name
        subscription = f"{PROJECT}/subscriptions/push-bench"
        subscriber.create_subscription(
            request={
                "name": subscription,
                "topic": topic,
                "push_config": {"push_endpoint": f"http://127.0.0.1:{server.server_port}/"},
            }
        )
        started = time.perf_counter()
        for future in [publisher.publish(topic, PAYLOAD) for _ in range(n)]:
            future.result(timeout=timeout)
        wait_until(lambda: emulator.unacked_count(subscription) == 0 and count >= n, "push", timeout)
        return n / (time.perf_counter() - started)
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--push-messages", type=int, default=2_000)
    parser.add_argument("--raw-messages", type=int, default=3_000)
    args = parser.parse_args()

    with PubSubEmulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address  # read by the clients' constructors
        publisher = pubsub_v1.PublisherClient()
        subscriber = pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name=f"{PROJECT}/topics/bench").name
        subscription = subscriber.create_subscription(name=f"{PROJECT}/subscriptions/bench", topic=topic).name
        raw_topic = publisher.create_topic(name=f"{PROJECT}/topics/raw").name  # no subscribers: no backlog

        n, n_push, n_raw, address = args.messages, args.push_messages, args.raw_messages, emulator.address
        raw_rate = bench_raw_publish(address, raw_topic, n_raw, 1)  # first: it sets the deadlines
        limit = PhaseTimeout(raw_rate)
        phases: list[tuple[str, int, Callable[[], float]]] = [
            ("publish, PublisherClient (batched)", n,
             lambda: bench_client_publish(publisher, topic, n, limit.seconds(n))),
            ("streaming pull + ack, subscribe()", n,
             lambda: bench_streaming_pull(emulator, subscriber, subscription, n, limit.seconds(n))),
            ("push to local HTTP endpoint", n_push,
             lambda: bench_push(emulator, publisher, subscriber, n_push, limit.seconds(n_push))),
            ("baseline: raw gRPC Publish, 1/RPC", n_raw, lambda: raw_rate),
            ("baseline: raw gRPC Publish, 100/RPC", n,
             lambda: bench_raw_publish(address, raw_topic, n, 100)),
        ]  # fmt: skip
        rows = [(name, count, run()) for name, count, run in phases]
        publisher.stop()
        subscriber.close()

    print(f"{'measurement':<38} {'messages':>9} {'msg/s':>9}")
    for name, n, rate in rows:
        print(f"{name:<38} {n:>9} {rate:>9,.0f}")
    client, baseline = rows[0][2], rows[3][2]
    target = f"client >= {TARGET_MSG_S:,} msg/s"
    print(f"publish via client vs raw 1/RPC: {client / baseline:.1f}x (target: {target})")
    for index, (name, count, rate) in enumerate(rows):
        if index == 3:
            continue  # the raw 1/RPC row is the publish row's baseline
        record(
            bench="pubsub_emulator",
            figure=f"{name}, {count} messages",
            value=rate,
            unit="msg/s",
            baseline=baseline if index == 0 else None,
            baseline_label=rows[3][0].removeprefix("baseline: "),
            target=target if index == 0 else "",
            met=client >= TARGET_MSG_S if index == 0 else None,
            higher_is_better=True,
        )
    print(f"{machine()}; grpcio {grpc.__version__}, {len(PAYLOAD)}-byte payloads")
    return 0  # a missed target is a MISSED row, not a failed bench


if __name__ == "__main__":
    raise SystemExit(main())
