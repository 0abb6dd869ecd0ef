"""Throughput and latency of the SNS -> Pub/Sub bridge, served as in production, against a baseline.

    .venv/bin/python bench/bridge.py [--messages 3000] [--concurrency 32] [--rate 200] [--duration 10]

In one run, about 30 s here; every phase is capped in time (a capped phase is reported and misses its
target) and every wait is bounded but generous, so a slower machine yields MISSED rows, not a crash:
  * in-process: the project's Pub/Sub emulator (topic ``sns-events`` in project ``jupiter-bench`` with
    a pull subscription that retains every message) and a tiny HTTP server playing the SNS
    certificate host (``SNS_CERT_BASE_URL``), serving the test signer's certificate;
  * subprocesses, same server configuration: ``functions-framework --target sns_to_pubsub`` (gunicorn,
    THREADS as deployed, the bridge's concurrency in its function.json, unless WORKERS/THREADS are set in
    the environment; the same for both) and a
    trivial functions-framework HTTP function (``bench/trivial_function``) as the baseline;
  * N notifications signed before timing (fresh timestamps, SignatureVersion 2), sent with SNS's
    headers over keep-alive connections: (a) closed loop, ``--concurrency`` senders, for requests/s
    (the baseline's phase lasts ~1 s, so it runs three times and the median counts); (b) open loop
    at ``--rate``/s for ``--duration`` s, latency measured from each request's scheduled send time
    (so a stalled server cannot hide its queueing delay) for p50/p95/p99.

Exit 0: every bridge reply was 200 and the subscription holds exactly the messages sent (count, SNS
message ids and data), whether or not the performance targets were met (printed MET/MISSED).
Exit 1: a message was lost, duplicated or answered other than 200. Exit 2: the benchmark could not
run (a server did not start, a sender failed).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import google.cloud.pubsub_v1 as pubsub_v1
from functions_framework._http.gunicorn import GunicornApplication
from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import REPO_ROOT, percentile, record, verdict  # bench/report.py: bench/ is on sys.path
from support import BenchError, exit_status  # bench/support.py

from jupiter_data.local.pubsub_emulator import PubSubEmulator
from jupiter_data.local.supervisor import free_port
from jupiter_data.resources import load_functions

sys.path.insert(0, str(REPO_ROOT))  # tests/ is not an installed package
from tests.sns_signing import CERT_URL, TOPIC_ARN, Signer

PROJECT = "jupiter-bench"
TOPIC = "sns-events"
SUBSCRIPTION = "bench-retained"
BRIDGE_SOURCE = REPO_ROOT / "functions" / "sns_to_pubsub" / "main.py"
TRIVIAL_SOURCE = Path(__file__).resolve().parent / "trivial_function" / "main.py"
STARTUP_TIMEOUT = 120.0  # ~2 s here; generous so a loaded machine only starts slower
CLOSED_LOOP_CAP = 15.0  # a throughput phase stops sending after this long (reported, not a failure)
TRIVIAL_CAP = 5.0  # the baseline's 3000 requests take ~1-1.5 s; it runs 3 times, the median counts
VERIFY_SECONDS = 120.0  # reading the subscription back stops as soon as every message is in
REQUEST_TIMEOUT = 30.0  # a slow reply shows in the latency figures; only no reply at all is a failure
WARMUP = 50  # bridge: cold start (Pub/Sub client, certificate fetch) before any timing
WARMUP_CAP = 5.0
TARGET_RPS = 500.0
TARGET_FRACTION = 0.40
TARGET_P99_MS = 50.0


# -- servers -------------------------------------------------------------------------------------


class CertHost:
    """Plays the SNS certificate host: serves the signer's PEM at the CERT_URL path, 404 elsewhere."""

    def __init__(self, pem: bytes) -> None:
        path = urlsplit(CERT_URL).path
        host = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = self.path == path
                host.fetches += found
                body = pem if found else b"not found"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/x-pem-file" if found else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="cert-host", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class FunctionServer:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: IO[bytes]

    @classmethod
    def spawn(
        cls, name: str, target: str, source: Path, env: dict[str, str], log_dir: Path
    ) -> FunctionServer:
        port = free_port()
        log_path = log_dir / f"{name}.log"
        log_file = log_path.open("wb")
        argv = [
            str(Path(sys.executable).parent / "functions-framework"),
            *("--target", target, "--source", str(source), "--host", "127.0.0.1", "--port", str(port)),
        ]
        process = subprocess.Popen(
            argv,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            start_new_session=True,  # own process group: gunicorn master and worker stop together
        )
        return cls(name, process, port, log_path, log_file)

    def wait_ready(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                conn.getresponse().read()  # any answer (the bridge says 405 to GET) means it serves
                conn.close()
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not serving after {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        self.log_file.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def workers(self) -> list[int]:
        """Pids of the gunicorn master's children (its workers)."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                        found.append(int(entry.name))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.process.pid, *self.workers()]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log_file.close()


def gunicorn_config() -> str:
    """The configuration functions-framework gives gunicorn in this environment (its own code decides)."""
    cfg = GunicornApplication(None, "127.0.0.1", 0, False).cfg  # type: ignore[no-untyped-call]
    return (
        f"gunicorn {cfg.worker_class_str} worker class, workers={cfg.workers}, threads={cfg.threads} "
        f"(functions-framework defaults: WORKERS={os.environ.get('WORKERS', '1 (unset)')}, "
        f"THREADS={os.environ.get('THREADS', f'4 x cpu_count = {(os.cpu_count() or 1) * 4} (unset)')}), "
        f"keepalive={cfg.keepalive}s, timeout={cfg.timeout}, backlog={cfg.backlog}"
    )


# -- load ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    message_id: str
    message: str  # what the bridge must republish as the Pub/Sub message data


def sns_request(message: dict[str, Any]) -> Request:
    """What SNS sends over HTTP: JSON as text/plain, identifying headers."""
    headers = {
        "Content-Type": "text/plain; charset=UTF-8",
        "User-Agent": "Amazon Simple Notification Service Agent",
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
        "x-amz-sns-subscription-arn": f"{message['TopicArn']}:7c1b5d4e-bench",
    }
    return Request(json.dumps(message).encode(), headers, message["MessageId"], message["Message"])


def presign(signer: Signer, count: int) -> list[Request]:
    out = []
    for i in range(count):
        event = {
            "userId": f"user-{i % 997}",
            "eventType": "page_view",
            "timestamp": 1_700_000_000_000 + i,
            "insertId": f"bench-{i}",
            "properties": {"path": f"/articles/{i % 113}", "referrer": "https://example.com/", "ms": i % 500},
        }
        out.append(sns_request(signer.notification(json.dumps(event))))
    return out


@dataclass
class Phase:
    name: str
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status (-1: connection error) -> count
    latencies: list[float] = field(default_factory=list)  # seconds
    ok_ids: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    capped: bool = False
    server_cpu: float = 0.0  # seconds of server (gunicorn master + workers) CPU during the phase
    bench_cpu: float = 0.0  # seconds of this process's CPU (client + Pub/Sub emulator + cert host)

    @property
    def failed(self) -> int:
        return self.sent - self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.sent * 1000 if self.sent else math.nan

    def record(self, results: list[tuple[int, float, Request]]) -> None:
        for status, latency, request in results:
            self.sent += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.latencies.append(latency)
            if status == 200:
                self.ok_ids.append(request.message_id)

    def summary(self) -> str:
        codes = ", ".join(
            f"{code if code > 0 else 'conn error'}: {n}" for code, n in sorted(self.statuses.items())
        )
        return (
            f"{self.name:<26} sent {self.sent:>5} in {self.elapsed:5.2f} s = {self.rate:7.1f} req/s"
            f"{' (CAPPED)' if self.capped else ''}; p50 {self.ms(0.5):6.2f} p95 {self.ms(0.95):6.2f} "
            f"p99 {self.ms(0.99):6.2f} max {self.ms(1.0):6.2f} ms; server CPU "
            f"{self.cpu_ms_per_request():.2f} ms/req ({self.server_cpu / self.elapsed:.2f} cores), bench CPU "
            f"{self.bench_cpu / self.elapsed:.2f} cores; [{codes}]"
        )


class Connection:
    """One keep-alive HTTP/1.1 connection (SNS reuses connections too); errors count as failures.

    Opening sends one GET and reads the answer (the bridge says 405): gunicorn's gthread worker hands
    a new connection straight to a worker thread, which then blocks until the first request arrives.
    Idle fresh connections would hold all the threads and stall the others' requests (~100 ms at the
    start of an open-loop phase); once answered, a kept-alive connection waits in gunicorn's poller.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._conn = self._open()

    def _open(self) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=REQUEST_TIMEOUT)
        conn.request("GET", "/")
        conn.getresponse().read()
        return conn

    def post(self, request: Request) -> int:
        try:
            self._conn.request("POST", "/", request.body, request.headers)
            reply = self._conn.getresponse()
            reply.read()
            if reply.will_close:
                self._conn.close()
                self._conn = self._open()
            return reply.status
        except (OSError, http.client.HTTPException):
            self._conn.close()
            with contextlib.suppress(OSError, http.client.HTTPException):
                self._conn = self._open()
            return -1

    def close(self) -> None:
        self._conn.close()


def drive(
    name: str,
    server: FunctionServer,
    requests: Sequence[Request],
    concurrency: int,
    rate: float | None = None,
    cap: float = CLOSED_LOOP_CAP,
) -> Phase:
    """Send ``requests`` from ``concurrency`` threads, one keep-alive connection each.

    ``rate=None``: closed loop, each sender sends its next request once the previous one is answered.
    Otherwise open loop: request i is due at start + i/rate whatever happened before, and its latency
    is counted from that due time, so queueing behind a slow server is measured, not hidden.
    Sending stops ``cap`` seconds after the start (the phase is then reported as capped).
    """
    phase = Phase(name)
    cursor = itertools.count()  # next() on it is atomic under the GIL
    lock = threading.Lock()
    start: list[float] = []
    barrier = threading.Barrier(concurrency, action=lambda: start.append(time.perf_counter() + 0.01))
    errors: list[BaseException] = []

    def sender() -> None:
        results: list[tuple[int, float, Request]] = []
        conn: Connection | None = None
        try:
            conn = Connection(server.port)  # connected before the clock starts
            barrier.wait(timeout=60)  # every sender connected: generous, as a loaded machine connects late
            t0 = start[0]
            stop_at = t0 + cap
            while (i := next(cursor)) < len(requests):
                now = time.perf_counter()
                due = now if rate is None else t0 + i / rate
                if max(due, now) > stop_at:
                    phase.capped = True
                    break
                if due > now:
                    time.sleep(due - now)
                status = conn.post(requests[i])
                results.append((status, time.perf_counter() - due, requests[i]))
        except BaseException as exc:  # a dead sender would silently skew the figures: re-raised below
            errors.append(exc)
            barrier.abort()
        finally:
            if conn is not None:
                conn.close()
            with lock:
                phase.record(results)

    cpu_before, bench_before = server.cpu_seconds(), time.process_time()
    threads = [threading.Thread(target=sender, name=f"{name}-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=cap + 2 * REQUEST_TIMEOUT + 10)
    if errors:
        raise BenchError(f"{name}: a sender failed: {errors[0]!r}") from errors[0]
    if any(thread.is_alive() for thread in threads):
        raise BenchError(f"{name}: senders did not finish")
    phase.elapsed = time.perf_counter() - start[0]
    phase.server_cpu = server.cpu_seconds() - cpu_before
    phase.bench_cpu = time.process_time() - bench_before
    return phase


# -- verification --------------------------------------------------------------------------------


def pull_all(subscriber: Any, subscription: str, expected: int, deadline: float) -> dict[str, bytes]:
    """sns_message_id -> data of every message in the subscription (left unacknowledged)."""
    found: dict[str, bytes] = {}
    pulled = 0
    while pulled < expected and time.monotonic() < deadline:
        response = subscriber.pull(request={"subscription": subscription, "max_messages": 1000}, timeout=10)
        if not response.received_messages:
            break  # the emulator long-polled for 5 s and nothing more came
        for received in response.received_messages:
            pulled += 1
            found[received.message.attributes["sns_message_id"]] = bytes(received.message.data)
    return found


def verify(
    emulator: PubSubEmulator,
    subscriber: Any,
    subscription: str,
    bridge_phases: Sequence[Phase],
    by_id: dict[str, Request],
) -> list[str]:
    problems = []
    sent = sum(p.sent for p in bridge_phases)
    ok_ids = [i for p in bridge_phases for i in p.ok_ids]
    for phase in bridge_phases:
        if phase.failed:
            problems.append(
                f"{phase.name}: {phase.failed} of {phase.sent} replies were not 200 {phase.statuses}"
            )
    held = emulator.unacked_count(subscription)
    if held != sent:
        problems.append(f"subscription holds {held} messages, {sent} were sent ({len(ok_ids)} answered 200)")
    found = pull_all(subscriber, subscription, held, time.monotonic() + VERIFY_SECONDS)
    missing = set(ok_ids) - found.keys()
    unexpected = found.keys() - set(ok_ids)
    wrong = [i for i in found.keys() & set(ok_ids) if found[i] != by_id[i].message.encode()]
    if missing or unexpected or wrong:
        problems.append(
            f"pulled {len(found)} distinct messages: {len(missing)} answered-200 ids missing, "
            f"{len(unexpected)} unexpected ids, {len(wrong)} with wrong data"
        )
    print(
        f"verified: {sent} bridge requests, {len(ok_ids)} x 200; subscription holds {held}; pulled "
        f"{len(found)} distinct SNS message ids, data checked byte for byte"
    )
    return problems


# -- report --------------------------------------------------------------------------------------


def report(bridge_tp: Phase, trivial_tp: Phase, bridge_st: Phase, trivial_st: Phase, rate: float) -> None:
    fraction = bridge_tp.rate / trivial_tp.rate if trivial_tp.rate else 0.0
    tp_met = bridge_tp.rate >= TARGET_RPS and fraction >= TARGET_FRACTION and not bridge_tp.capped
    p99_met = bridge_st.ms(0.99) <= TARGET_P99_MS and not bridge_st.capped
    tp_target = f">= {TARGET_RPS:.0f}/s and >= {TARGET_FRACTION:.0%} of trivial"
    p99_target = f"<= {TARGET_P99_MS:.0f} ms"
    # figure, unit, bridge, trivial, ratio (None: computed), target, met, higher is better
    rows: list[tuple[str, str, float, float, str | None, str, bool | None, bool]] = [
        (
            f"throughput, {bridge_tp.sent} msgs" if not bridge_tp.capped else "throughput (CAPPED)",
            "req/s",
            bridge_tp.rate,
            trivial_tp.rate,
            f"{fraction:.0%}",
            tp_target,
            tp_met,
            True,
        ),
        (f"p50 at {rate:.0f}/s", "ms", bridge_st.ms(0.5), trivial_st.ms(0.5), None, "", None, False),
        (f"p95 at {rate:.0f}/s", "ms", bridge_st.ms(0.95), trivial_st.ms(0.95), None, "", None, False),
        (
            f"p99 at {rate:.0f}/s",
            "ms",
            bridge_st.ms(0.99),
            trivial_st.ms(0.99),
            None,
            p99_target,
            p99_met,
            False,
        ),
        (
            "server CPU/req, closed loop",
            "ms",
            bridge_tp.cpu_ms_per_request(),
            trivial_tp.cpu_ms_per_request(),
            None,
            "",
            None,
            False,
        ),
        (
            f"server CPU/req at {rate:.0f}/s",
            "ms",
            bridge_st.cpu_ms_per_request(),
            trivial_st.cpu_ms_per_request(),
            None,
            "",
            None,
            False,
        ),
    ]
    print()
    print(f"{'figure':<34} | {'bridge':>8} | {'trivial baseline':>16} | {'ratio':>6} | target")
    print(f"{'-' * 34}-+-{'-' * 8}-+-{'-' * 16}-+-{'-' * 6}-+-{'-' * 44}")
    for figure, unit, bridge, trivial, ratio, target, met, higher in rows:
        label = figure if figure == "throughput (CAPPED)" else f"{figure} ({unit})"
        shown = ratio if ratio is not None else (f"{bridge / trivial:.1f}x" if trivial else "-")
        printed_target = f"{target}: {verdict(bool(met))}" if target else ""
        print(f"{label:<34} | {bridge:>8.1f} | {trivial:>16.1f} | {shown:>6} | {printed_target}")
        record(
            bench="bridge",
            figure=figure,
            value=bridge,
            unit=unit,
            baseline=trivial,
            baseline_label="trivial functions-framework function",
            target=target,
            met=met,
            higher_is_better=higher,
        )


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    return exit_status(run)


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3_000, help="closed-loop phase size")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    args = parser.parse_args()
    # As deployed: THREADS = the bridge's concurrency in its function.json (Terraform sets both).
    concurrency = next(f.concurrency for f in load_functions() if f.name == "sns_to_pubsub")
    os.environ.setdefault("THREADS", str(concurrency))

    print(machine())
    print(f"server: {gunicorn_config()}; same for both endpoints")
    print("bridge env: JUPITER_ENV=local, LOG_LEVEL=WARNING (per-request INFO logs off, as a quiet prod)")

    log_dir = Path(tempfile.mkdtemp(prefix="bench-bridge-"))
    emulator = PubSubEmulator()
    servers: list[FunctionServer] = []
    cert_host: CertHost | None = None
    publisher: Any = None
    subscriber: Any = None
    try:
        emulator.start()
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.address  # read by the clients' constructors
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name=publisher.topic_path(PROJECT, TOPIC)).name
        subscription = subscriber.create_subscription(
            name=subscriber.subscription_path(PROJECT, SUBSCRIPTION), topic=topic
        ).name
        signer = Signer()
        cert_host = CertHost(signer.pem)
        env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "JUPITER_ENV": "local",
            "PUBSUB_EMULATOR_HOST": emulator.address,
            "SNS_ALLOWED_TOPIC_ARNS": TOPIC_ARN,
            "SNS_CERT_BASE_URL": f"http://127.0.0.1:{cert_host.port}",
            "LOG_LEVEL": "WARNING",
        }
        bridge = FunctionServer.spawn("bridge", "sns_to_pubsub", BRIDGE_SOURCE, env, log_dir)
        servers.append(bridge)
        trivial = FunctionServer.spawn("trivial", "trivial", TRIVIAL_SOURCE, env, log_dir)
        servers.append(trivial)

        n_steady = int(args.rate * args.duration)
        started = time.perf_counter()
        requests = presign(signer, WARMUP + args.messages + n_steady)  # while the servers boot
        signing = time.perf_counter() - started
        print(
            f"pre-signed {len(requests)} notifications (SignatureVersion 2, RSA-2048) in {signing:.2f} s "
            f"({signing / len(requests) * 1000:.2f} ms each); body {len(requests[0].body)} bytes"
        )
        for server in servers:
            server.wait_ready(time.monotonic() + STARTUP_TIMEOUT)
        by_id = {r.message_id: r for r in requests}
        warm, tp, steady = (
            requests[:WARMUP],
            requests[WARMUP : WARMUP + args.messages],
            requests[WARMUP + args.messages :],
        )
        phases = {
            "bridge warm-up": drive("bridge warm-up", bridge, warm, 4, cap=WARMUP_CAP),
            "trivial warm-up": drive("trivial warm-up", trivial, warm, 4, cap=WARMUP_CAP),
        }
        warm_fetches = cert_host.fetches
        print(
            f"warm-up: the bridge fetched the certificate {warm_fetches} time(s) for one URL "
            "(4 concurrent first requests race its per-URL cache)"
        )
        workers = {s.name: len(s.workers()) for s in servers}
        print(f"gunicorn worker processes observed: {workers}")
        open_cap = args.duration + 3.0
        trivial_runs = []
        for name, server, batch, rate, cap in (
            *((f"trivial closed loop #{i}", trivial, tp, None, TRIVIAL_CAP) for i in (1, 2, 3)),
            ("bridge closed loop", bridge, tp, None, CLOSED_LOOP_CAP),
            (f"trivial {args.rate:.0f}/s open loop", trivial, steady, args.rate, open_cap),
            (f"bridge {args.rate:.0f}/s open loop", bridge, steady, args.rate, open_cap),
        ):
            phases[name] = phase = drive(name, server, batch, args.concurrency, rate, cap)
            print(phase.summary())
            if name.startswith("trivial closed"):
                trivial_runs.append(phase)
        trivial_tp = sorted(trivial_runs, key=lambda p: p.rate)[len(trivial_runs) // 2]

        print(f"certificate fetches after warm-up: {cert_host.fetches - warm_fetches} (cache held)")
        bridge_phases = [p for name, p in phases.items() if name.startswith("bridge")]
        problems = verify(emulator, subscriber, subscription, bridge_phases, by_id)
        problems += [
            f"{p.name}: {p.failed} of {p.sent} baseline replies were not 200 {p.statuses}"
            for name, p in phases.items()
            if name.startswith("trivial") and p.failed
        ]
        report(
            phases["bridge closed loop"],
            trivial_tp,
            phases[f"bridge {args.rate:.0f}/s open loop"],
            phases[f"trivial {args.rate:.0f}/s open loop"],
            args.rate,
        )
        print(
            f"latency = scheduled send -> full reply (open loop, {args.concurrency} senders); throughput = "
            f"closed loop, {args.concurrency} keep-alive connections; client, Pub/Sub emulator and cert host "
            f"share this process and the same {os.cpu_count()} cpus as the server"
        )
        if problems:
            print("\nFAILED: messages lost or rejected:")
            for problem in problems:
                print(f"  - {problem}")
            print(f"bridge log tail:\n{bridge.log_tail()}")
            return 1
        print("\nOK: every bridge reply was 200 and every message is in the subscription, exactly once")
        return 0
    finally:
        for server in reversed(servers):
            server.stop()
        if cert_host is not None:
            cert_host.close()
        if publisher is not None:
            publisher.stop()
        if subscriber is not None:
            subscriber.close()
        emulator.stop()


if __name__ == "__main__":
    raise SystemExit(main())
