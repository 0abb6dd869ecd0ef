"""Throughput and insert calls of the Pub/Sub -> BigQuery loader on the emulators, against a baseline.

    .venv/bin/python bench/loader.py [--messages 3000] [--concurrency 80] [--rate 200] [--duration 10]

In one run, about 40 s here. Every phase is capped in time (a capped phase is reported and misses its
target); invocations still running at the cap get a drain time that scales with how long the phase
took (``DRAIN_SECONDS`` + ``DRAIN_FACTOR`` x its elapsed time), so a slower machine yields MISSED rows,
never a crash:
  * the local stack's emulators (``LocalStack``, free ports, a temporary state directory; bqemulator
    with the tables and the view provisioned from resources.json), stopped in ``finally``;
  * a real ``Loader`` (settings as deployed: ``THREADS`` = the instance's concurrency, which Terraform
    takes from its function.json, so a batch holds as many rows, and the default 50 ms) on the real
    ``BigQueryWarehouse`` and google-cloud-bigquery client; the warehouse is wrapped only to time each
    insert request. Each message is a push envelope with one event and a unique ``sns_message_id``,
    decoded with ``PubSubMessage.from_push`` and handled as ``functions/pubsub_to_bigquery`` does;
  * a thread pool plays the concurrent invocations of one instance: (a) closed loop, ``--concurrency``
    invocations at once, for messages/s; (b) open loop at ``--rate``/s for ``--duration`` s, each
    message handed to a pool thread at its scheduled time, latency measured from that time (queueing
    behind a slow loader is counted, not hidden);
  * baseline, same workloads and same run: the same Loader with ``InsertBatcher(max_rows=1)``, i.e.
    one streaming insert per message (batching off). Its closed loop uses ``--baseline-messages``;
    it cannot keep up with 200/s, so its open loop stops starting messages 2 s after ``--duration``;
  * where the time goes: sequential insert requests of 1-500 rows on an empty and a ~10,000-row table,
    CPU per message of this process and of bqemulator, and bqemulator's write-ahead-log checkpoints
    (sampled from its data directory) matched against slow insert requests.

bqemulator copies the whole table into a time-travel snapshot on every insertAll (see the diagnostics
it prints), so insert cost grows with the table: each phase therefore starts from an emptied
``ops.all_user_events`` (its rows are verified, then deleted), so no phase pays for an earlier one.

Exit 0: every message handled was loaded, its event is in ``ops.user_events`` exactly once (by a
run-unique event_type per phase, event ids compared) and no dead letter was written, whether or not
the targets were met (printed MET/MISSED). Exit 1: a message failed, was lost, duplicated in the view
or dead-lettered. Exit 2: the benchmark could not run (the stack did not start, invocations hung).
The emulators' data (~0.5 GB of snapshots) is deleted at the end; their logs are kept unless exit 0.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import percentile, record, verdict  # bench/report.py: scripts run with bench/ on sys.path
from support import BenchError, exit_status, private_stack  # bench/support.py

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.domain import events
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.local.stack import SNS_TOPIC_ARN
from jupiter_data.logs import configure_logging
from jupiter_data.ports import Row, SystemClock
from jupiter_data.services.batcher import InsertBatcher
from jupiter_data.services.loader import Loader, LoaderSettings

WARMUP = 40
CLOSED_LOOP_CAP = 20.0  # a closed-loop phase stops starting messages after this long (reported)
DRAIN_SECONDS = 30.0  # in-flight invocations must finish within this after a phase stops sending,
DRAIN_FACTOR = 5.0  # plus this many times the phase's own elapsed time: scales with the machine's speed
SLOW_CALL = 0.15  # seconds: an insert request this slow is reported (and matched to WAL checkpoints)
TARGET_RATE = 1_000.0  # messages/s per instance into the emulator
TARGET_REDUCTION = 5.0  # at the steady rate: messages per insert call
EVENTS_TABLE = events.EVENTS_TABLE
DEAD_LETTER_TABLE = events.DEAD_LETTER_TABLE


# -- the warehouse, timed --------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    rows: int
    table_rows: int  # rows in the table (since the last clear) when the call was made
    seconds: float
    started: float


class TimedWarehouse:
    """The real ``BigQueryWarehouse``, with each events-table insert request timed. Nothing else changes."""

    def __init__(self, inner: BigQueryWarehouse) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self.table_rows = 0

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if table != EVENTS_TABLE:
            self._inner.insert_rows(table, rows, row_ids)
            return
        before = self.table_rows
        started = time.perf_counter()
        self._inner.insert_rows(table, rows, row_ids)
        ended = time.perf_counter()
        with self._lock:
            self.calls.append(Call(len(rows), before, ended - started, started))
            self.table_rows += len(rows)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        return self._inner.query(sql, params)

    def clear_events(self) -> None:
        list(self._inner.query(f"DELETE FROM `{EVENTS_TABLE}` WHERE TRUE"))  # noqa: S608 - constant
        self.table_rows = 0


class WalWatch:
    """Samples the size of bqemulator's DuckDB write-ahead log (the stack runs it ``--persistent``): a
    drop in size is a checkpoint, which DuckDB runs when the log reaches its threshold (16 MiB)."""

    def __init__(self, directory: Path, interval: float = 0.01) -> None:
        self._directory = directory
        self._interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-watch", daemon=True)
        self._thread.start()

    def _size(self) -> int:
        total = 0
        for path in self._directory.glob("*.wal"):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._size()))
            self._stop.wait(self._interval)

    def window(self, start: float, end: float) -> tuple[int, list[float]]:
        """Bytes appended to the log and checkpoint times between ``start`` and ``end``."""
        written, checkpoints = 0, []
        pairs = zip(self.samples, self.samples[1:], strict=False)
        for (_, before), (at, after) in pairs:
            if start <= at <= end:
                if after < before:
                    checkpoints.append(at)
                    written += after
                else:
                    written += after - before
        return written, checkpoints

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


# -- workload --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    envelope: dict[str, Any]  # the push envelope functions-framework hands the function
    event_id: str  # what the loader must store for it


def build_messages(run: str, phase: str, count: int) -> tuple[str, list[Message]]:
    """``count`` push envelopes of one event each, all of ``phase``'s run-unique event type."""
    event_type = f"bench-{run}-{phase}"
    now = datetime.now(UTC)
    published = now.isoformat().replace("+00:00", "Z")
    base_ms = int(now.timestamp() * 1000)
    messages = []
    for i in range(count):
        sns_id = str(uuid.uuid4())
        event = {
            "userId": f"user-{i % 97}",
            "eventType": event_type,
            "timestamp": base_ms - i,
            "context": {"phase": phase, "n": i, "plan": "pro", "tags": ["a", "b"]},
        }
        envelope = {
            "message": {
                "data": base64.b64encode(json.dumps(event).encode()).decode("ascii"),
                "messageId": f"{run}-{phase}-{i}",
                "publishTime": published,
                "attributes": {
                    "sns_message_id": sns_id,
                    "sns_topic_arn": SNS_TOPIC_ARN,
                    "sns_timestamp": published,
                },
            },
            "subscription": "projects/jupiter-local/subscriptions/pubsub_to_bigquery",
        }
        messages.append(Message(envelope, f"{sns_id}:0"))
    return event_type, messages


# -- phases ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    loader: str  # "batched" or "baseline"
    concurrency: int
    rate: float | None
    event_type: str
    messages: int
    loaded: list[str] = field(default_factory=list)  # event ids of messages handled as "loaded"
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: int = 0  # not started: the phase hit its cap
    elapsed: float = 0.0
    insert_calls: int = 0
    calls: list[Call] = field(default_factory=list)
    bench_cpu: float = 0.0
    emulator_cpu: float = 0.0
    wal_written: int = 0
    checkpoints: list[float] = field(default_factory=list)

    @property
    def capped(self) -> bool:
        return self.skipped > 0

    @property
    def handled(self) -> int:
        return len(self.loaded) + len(self.failures)

    @property
    def rate_achieved(self) -> float:
        return len(self.loaded) / self.elapsed if self.elapsed else 0.0

    @property
    def per_call(self) -> float:
        return self.handled / self.insert_calls if self.insert_calls else 0.0

    @property
    def calls_per_message(self) -> float:
        return self.insert_calls / self.handled if self.handled else 0.0

    def ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000

    def call_ms(self, q: float) -> float:
        return percentile([c.seconds for c in self.calls], q) * 1000

    def rows_per_call(self) -> float:
        return sum(c.rows for c in self.calls) / len(self.calls) if self.calls else 0.0

    def slow_calls(self, threshold: float = SLOW_CALL) -> tuple[int, int]:
        """Insert requests slower than ``threshold``, and how many of them spanned a WAL checkpoint."""
        slow = [c for c in self.calls if c.seconds > threshold]
        spanning = [
            c for c in slow if any(c.started <= t <= c.started + c.seconds + 0.02 for t in self.checkpoints)
        ]
        return len(slow), len(spanning)

    def summary(self) -> str:
        mode = "closed loop" if self.rate is None else f"open loop at {self.rate:.0f}/s"
        capped = f", CAPPED: {self.skipped} not started" if self.capped else ""
        failed = f", {len(self.failures)} FAILED" if self.failures else ""
        n = max(self.handled, 1)
        return (
            f"{self.name}: {self.handled} msgs, {mode}, {self.concurrency} concurrent, {self.elapsed:.2f} s "
            f"-> {self.rate_achieved:,.0f} msg/s{capped}{failed}; {self.insert_calls} insert calls "
            f"({self.per_call:.1f} msgs/call); handle p50 {self.ms(0.5):.1f} ms, p99 {self.ms(0.99):.1f} ms; "
            f"insert request p50 {self.call_ms(0.5):.1f} ms, p99 {self.call_ms(0.99):.1f} ms, "
            f"{self.rows_per_call():.1f} rows; CPU/msg: loader process {self.bench_cpu / n * 1000:.2f} ms, "
            f"bqemulator {self.emulator_cpu / n * 1000:.2f} ms"
        )

    def wal_summary(self) -> str:
        slow, spanning = self.slow_calls()
        return (
            f"  bqemulator: {self.wal_written / 2**20:.0f} MiB appended to its write-ahead log, "
            f"{len(self.checkpoints)} checkpoint(s); {slow} of {len(self.calls)} insert requests took "
            f"> {SLOW_CALL * 1000:.0f} ms, {spanning} of them spanning a checkpoint"
        )


def drain_seconds(sending_seconds: float) -> float:
    """How long invocations still running may take once a phase stopped sending: a fixed floor plus a
    multiple of the time the phase took to send, so a machine N times slower gets N times longer."""
    return DRAIN_SECONDS + DRAIN_FACTOR * sending_seconds


def drive(
    name: str,
    kind: str,
    loader: Loader,
    batcher: InsertBatcher,
    warehouse: TimedWarehouse,
    emulator_cpu: Callable[[], float],
    wal: WalWatch,
    event_type: str,
    messages: Sequence[Message],
    concurrency: int,
    rate: float | None,
    cap: float,
) -> Phase:
    """Hand ``messages`` to ``loader`` from a pool of ``concurrency`` threads (one instance's invocations).

    ``rate=None``: closed loop, every message queued at once, each thread takes the next when done;
    latency is the handle time. Otherwise open loop: message i is handed over at start + i/rate
    whatever happened before, and its latency counts from that time. No message starts more than
    ``cap`` seconds after the start (the rest are reported as not started).
    """
    phase = Phase(name, kind, concurrency, rate, event_type, len(messages))
    lock = threading.Lock()

    def invoke(message: Message, due: float, stop_at: float) -> None:
        started = time.perf_counter()
        if started > stop_at:
            with lock:
                phase.skipped += 1
            return
        try:
            outcome = loader.handle(PubSubMessage.from_push(message.envelope))
            problem = None if outcome.status == "loaded" and outcome.rows == 1 else repr(outcome)
        except Exception as exc:  # a failed invocation: counted and reported, never hidden
            problem = f"{type(exc).__name__}: {exc}"
        ended = time.perf_counter()
        with lock:
            phase.latencies.append(ended - (started if rate is None else due))
            if problem is None:
                phase.loaded.append(message.event_id)
            else:
                phase.failures.append(f"{message.envelope['message']['messageId']}: {problem}")

    calls_before, timed_before = batcher.insert_calls, len(warehouse.calls)
    cpu_before, emulator_before = time.process_time(), emulator_cpu()
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix=name)
    try:
        t0 = time.perf_counter() + 0.01
        stop_at = t0 + cap
        futures = []
        for i, message in enumerate(messages):
            due = t0 if rate is None else t0 + i / rate
            if due > stop_at:
                phase.skipped += len(messages) - i
                break
            if (delay := due - time.perf_counter()) > 0:
                time.sleep(delay)
            futures.append(pool.submit(invoke, message, due, stop_at))
        drain_until = time.perf_counter() + drain_seconds(time.perf_counter() - t0)
        for future in futures:
            future.result(timeout=max(1.0, drain_until - time.perf_counter()))
        phase.elapsed = time.perf_counter() - t0
        phase.wal_written, phase.checkpoints = wal.window(t0, t0 + phase.elapsed)
    except TimeoutError:
        raise BenchError(f"{name}: invocations still running long after the phase stopped sending") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    phase.bench_cpu = time.process_time() - cpu_before
    phase.emulator_cpu = emulator_cpu() - emulator_before
    phase.insert_calls = batcher.insert_calls - calls_before
    phase.calls = warehouse.calls[timed_before:]
    return phase


# -- verification ----------------------------------------------------------------------------------


def verify_phase(warehouse: TimedWarehouse, phase: Phase) -> list[str]:
    """Every loaded message's event is in the view exactly once, and nothing else of this phase is."""
    problems = [f"{phase.name}: {f}" for f in phase.failures[:5]]
    if len(phase.failures) > 5:
        problems.append(f"{phase.name}: ... and {len(phase.failures) - 5} more failed messages")
    in_view = [
        r["event_id"]
        for r in warehouse.query(
            "SELECT event_id FROM `ops.user_events` WHERE event_type = @t",
            {"t": phase.event_type},
        )
    ]
    (copies,) = warehouse.query(
        f"SELECT COUNT(*) AS n FROM `{EVENTS_TABLE}` WHERE event_type = @t",  # noqa: S608 - constant
        {"t": phase.event_type},
    )
    expected, found = set(phase.loaded), set(in_view)
    if len(in_view) != len(found):
        problems.append(f"{phase.name}: {len(in_view) - len(found)} duplicate event ids in ops.user_events")
    if missing := expected - found:
        problems.append(f"{phase.name}: {len(missing)} loaded messages' events missing from ops.user_events")
    if unexpected := found - expected:
        problems.append(f"{phase.name}: {len(unexpected)} unexpected events in ops.user_events")
    print(
        f"  verified {phase.name}: {len(expected)} loaded -> {len(in_view)} rows in ops.user_events "
        f"({len(found)} distinct event ids, ids {'match' if expected == found else 'DIFFER'}), "
        f"{copies['n']} copies in {EVENTS_TABLE}"
    )
    return problems


def dead_letters(warehouse: TimedWarehouse, run: str) -> int:
    (row,) = warehouse.query(
        f"SELECT COUNT(*) AS n FROM `{DEAD_LETTER_TABLE}` WHERE STARTS_WITH(pubsub_message_id, @run)",  # noqa: S608
        {"run": f"{run}-"},
    )
    return int(row["n"])


# -- diagnostics -----------------------------------------------------------------------------------


def emulator_cpu_reader(rest_port: int) -> Callable[[], float]:
    """User + system CPU seconds of the bqemulator process this run started (found by its argv)."""
    ticks = os.sysconf("SC_CLK_TCK")
    pid = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            ours = ppid == os.getpid() and b"jupiter_data.local.bigquery_emulator" in argv
            if ours and str(rest_port).encode() in argv:
                pid = entry.name
    if pid is None:
        return lambda: math.nan

    def read() -> float:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (Path("/proc") / pid / "stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks
        return math.nan

    return read


def probe_inserts(warehouse: TimedWarehouse, run: str) -> tuple[list[str], float]:
    """Sequential insert requests of 1..500 rows, on an empty table and on a ~10,000-row one."""
    _, messages = build_messages(run, "probe", 500)
    now = datetime.now(UTC)
    rows = [
        row
        for m in messages
        for row in events.to_rows(
            PubSubMessage.from_push(m.envelope),
            events.parse_events(base64.b64decode(m.envelope["message"]["data"])),
            now,
        )
    ]
    lines = []

    def timed(size: int, repeat: int) -> float:
        first = len(warehouse.calls)
        for _ in range(repeat):
            chunk = rows[:size]
            warehouse.insert_rows(EVENTS_TABLE, [r for _, r in chunk], [i for i, _ in chunk])
        return statistics.median(c.seconds for c in warehouse.calls[first:]) * 1000

    warehouse.clear_events()
    timed(1, 3)  # settle
    empty = {size: timed(size, repeat) for size, repeat in ((1, 12), (10, 8), (100, 8), (500, 4))}
    while warehouse.table_rows < 10_000:
        warehouse.insert_rows(EVENTS_TABLE, [r for _, r in rows], [i for i, _ in rows])
    full_rows = warehouse.table_rows
    full = {size: timed(size, repeat) for size, repeat in ((1, 12), (100, 6), (500, 3))}
    lines.append(
        "insert request latency, sequential, median ms by rows per request: empty table "
        + ", ".join(f"{k} rows {v:.1f}" for k, v in empty.items())
        + f"; table of {full_rows:,} rows "
        + ", ".join(f"{k} rows {v:.1f}" for k, v in full.items())
    )
    per_row = (empty[500] - empty[1]) / 499 * 1000
    per_table_row = (full[1] - empty[1]) / full_rows * 1000
    lines.append(
        f"from these medians: ~{empty[1]:.1f} ms per request + ~{per_row:.0f} us per row sent "
        f"+ ~{per_table_row:.1f} us per row already in the table (bqemulator copies the whole table into "
        "a time-travel snapshot on every insertAll)"
    )
    warehouse.clear_events()
    return lines, empty[1]


def domain_cost(run: str, count: int = 1_000) -> float:
    """Microseconds per message of the loader's pure work: decode, JSON parse + schema check, rows."""
    _, messages = build_messages(run, "domain", count)
    now = datetime.now(UTC)
    started = time.process_time()
    for m in messages:
        message = PubSubMessage.from_push(m.envelope)
        events.to_rows(message, events.parse_events(message.data), now)
    return (time.process_time() - started) / count * 1e6


# -- report ----------------------------------------------------------------------------------------


def report(b_tp: Phase, o_tp: Phase, b_st: Phase, o_st: Phase, rate: float) -> tuple[bool, bool]:
    tp_met = b_tp.rate_achieved >= TARGET_RATE and not b_tp.capped
    calls_met = b_st.per_call >= TARGET_REDUCTION and not b_st.capped
    tp_target = f">= {TARGET_RATE:,.0f}/s"
    calls_target = f"<= {1 / TARGET_REDUCTION:.2f} (>= {TARGET_REDUCTION:.0f}x fewer)"
    # label, batched, baseline, ratio (None: computed, "-": none), target, met, higher is better, format
    rows: list[tuple[str, float, float, str | None, str, bool | None, bool | None, str]] = [
        (f"max throughput, {b_tp.concurrency} concurrent (msg/s)", b_tp.rate_achieved, o_tp.rate_achieved,
         None, tp_target, tp_met, True, ",.0f"),
        ("  messages handled", b_tp.handled, o_tp.handled, "-", "", None, None, ".0f"),
        ("  insert calls", b_tp.insert_calls, o_tp.insert_calls, "-", "", None, None, ".0f"),
        ("  messages per insert call", b_tp.per_call, o_tp.per_call, None, "", None, True, ".1f"),
        ("  handle p50 (ms)", b_tp.ms(0.5), o_tp.ms(0.5), None, "", None, False, ".1f"),
        (f"achieved at {rate:.0f}/s offered (msg/s)", b_st.rate_achieved, o_st.rate_achieved, None, "",
         None, True, ",.0f"),
        (f"insert calls per message at {rate:.0f}/s", b_st.calls_per_message, o_st.calls_per_message, None,
         calls_target, calls_met, False, ".3f"),
        (f"  messages per insert call at {rate:.0f}/s", b_st.per_call, o_st.per_call, None, "", None, True,
         ".1f"),
        (f"p50 handle latency at {rate:.0f}/s (ms)", b_st.ms(0.5), o_st.ms(0.5), None, "", None, False,
         ".1f"),
        (f"p99 handle latency at {rate:.0f}/s (ms)", b_st.ms(0.99), o_st.ms(0.99), None, "", None, False,
         ".1f"),
    ]  # fmt: skip
    print()
    print(f"{'figure':<42} | {'batched':>9} | {'baseline 1/msg':>14} | {'ratio':>7} | target")
    print(f"{'-' * 42}-+-{'-' * 9}-+-{'-' * 14}-+-{'-' * 7}-+-{'-' * 40}")
    for label, batched, baseline, ratio, target, met, higher, fmt in rows:
        shown = ratio if ratio is not None else (f"{batched / baseline:.2f}x" if baseline else "-")
        note = " (capped)" if label.startswith("max throughput") and b_tp.capped else ""
        printed_target = f"{target}: {verdict(bool(met))}{note}" if target else ""
        print(f"{label:<42} | {batched:>9{fmt}} | {baseline:>14{fmt}} | {shown:>7} | {printed_target}")
        record(
            bench="loader",
            figure=label.strip(),
            value=batched,
            baseline=baseline,
            baseline_label="same Loader, one insert per message",
            target=target + note,
            met=met,
            higher_is_better=higher,
            comparable=ratio is None,
        )
    for phase in (o_tp, o_st, b_st):
        if phase.capped:
            print(
                f"note: {phase.name} was CAPPED: {phase.skipped} of {phase.messages} messages never started"
            )
    return tp_met, calls_met


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    return exit_status(run)


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3_000, help="closed-loop phase size (batched)")
    parser.add_argument(
        "--baseline-messages", type=int, default=400, help="closed-loop phase size (baseline)"
    )
    parser.add_argument("--concurrency", type=int, default=80, help="concurrent invocations per instance")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop messages/s")
    parser.add_argument("--duration", type=float, default=10.0, help="open-loop seconds")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:10]

    # As a quiet production instance: the loader's per-message INFO lines off, JSON logs on stdout.
    configure_logging("WARNING")
    pool_full = _count_discarded_connections()
    # As deployed: a batch holds at most the requests one instance serves at once.
    settings = LoaderSettings.from_env({"THREADS": str(args.concurrency)})
    print(machine())
    print(
        f"loader: LoaderSettings as deployed (THREADS={settings.threads}: batches of "
        f"{settings.rows_per_batch} rows, batch_max_wait_ms={settings.batch_max_wait_ms}), "
        "LOG_LEVEL=WARNING; baseline: the same Loader "
        f"with InsertBatcher(max_rows=1), one insert per message; run id {run_id}"
    )
    print(
        f"concurrency: {args.concurrency} invocations at once on one instance (Cloud Run's default per-"
        "instance concurrency; Cloud Functions gen2 defaults to 1 and allows up to 1000 with >= 1 vCPU, "
        "and functions-framework's gunicorn serves THREADS, default 4 x cpus, requests at once)"
    )

    state_dir = Path(tempfile.mkdtemp(prefix="bench-loader-"))
    stack = private_stack(state_dir, functions=False)
    wal: WalWatch | None = None
    keep_logs = True  # until the run passed: the emulators' logs stay for a look, their data never does
    started = time.perf_counter()
    try:
        try:
            stack.start()
        except Exception as exc:
            raise BenchError(f"the local stack did not start: {exc}") from exc
        print(f"emulators up in {time.perf_counter() - started:.1f} s (state dir {state_dir})")
        wal = WalWatch(state_dir / "bigquery")
        warehouse = TimedWarehouse(BigQueryWarehouse(bigquery_client(stack.settings())))
        emulator_cpu = emulator_cpu_reader(stack.ports.bigquery)
        clock = SystemClock()
        wait = settings.batch_max_wait_ms / 1000
        batchers = {
            "batched": (settings, InsertBatcher(warehouse, settings.rows_per_batch, wait)),
            "baseline": (settings, InsertBatcher(warehouse, max_rows=1, max_wait=wait)),
        }
        loaders = {kind: (Loader(s, warehouse, clock, b), b) for kind, (s, b) in batchers.items()}
        n_steady = int(args.rate * args.duration)
        steady_cap = args.duration + 2
        plan = [  # name, loader, messages, concurrency, rate (None: closed loop), cap
            ("warm-up batched", "batched", WARMUP, 8, None, 10.0),
            ("warm-up baseline", "baseline", WARMUP, 8, None, 10.0),
            ("batched closed loop", "batched", args.messages, args.concurrency, None, CLOSED_LOOP_CAP),
            ("baseline closed loop", "baseline", args.baseline_messages, args.concurrency, None,
             CLOSED_LOOP_CAP),
            (f"batched {args.rate:.0f}/s", "batched", n_steady, args.concurrency, args.rate, steady_cap),
            (f"baseline {args.rate:.0f}/s", "baseline", n_steady, args.concurrency, args.rate, steady_cap),
        ]  # fmt: skip
        phases: dict[str, Phase] = {}
        problems: list[str] = []
        for index, (name, kind, count, concurrency, rate, cap) in enumerate(plan):
            event_type, messages = build_messages(run_id, f"p{index}", count)
            warehouse.clear_events()  # each phase starts from an empty table (see the module docstring)
            loader, phase_batcher = loaders[kind]
            phase = drive(
                name, kind, loader, phase_batcher, warehouse, emulator_cpu, wal,
                event_type, messages, concurrency, rate, cap,
            )  # fmt: skip
            phases[name] = phase
            print(phase.summary())
            if not name.startswith("warm-up"):
                print(phase.wal_summary())
            problems += verify_phase(warehouse, phase)
        warehouse.clear_events()

        dead = dead_letters(warehouse, run_id)
        if dead:
            problems.append(f"{dead} dead letters written for this run's messages")
        print(f"dead letters for this run's messages: {dead}")

        b_tp, o_tp = phases["batched closed loop"], phases["baseline closed loop"]
        b_st, o_st = phases[f"batched {args.rate:.0f}/s"], phases[f"baseline {args.rate:.0f}/s"]
        tp_met, calls_met = report(b_tp, o_tp, b_st, o_st, args.rate)
        print(machine())

        print("\nwhere the time goes:")
        lines, one_row_ms = probe_inserts(warehouse, run_id)
        for line in lines:
            print(f"  {line}")
        own = domain_cost(run_id)
        print(f"  loader's own work (decode, JSON parse, schema check, rows): {own:.0f} us/msg CPU")
        wait_ms = settings.batch_max_wait_ms
        cycle = wait_ms + b_tp.call_ms(0.5)
        print(
            f"  closed loop, batched: a batch closes when all {args.concurrency} invocations have joined, "
            f"or after {wait_ms} ms: bound ~ {args.concurrency} msgs / (up to {wait_ms} ms + "
            f"{b_tp.call_ms(0.5):.0f} ms insert p50) >= {args.concurrency / cycle * 1000:,.0f} msg/s; "
            f"measured {b_tp.rate_achieved:,.0f} msg/s at {b_tp.per_call:.1f} msgs/call"
        )
        print(
            f"  baseline: a 1-row request takes {one_row_ms:.1f} ms on an empty table, sent one at a "
            f"time (~{1000 / one_row_ms:.0f}/s); bqemulator runs inserts one at a time under a write "
            f"lock, so {o_tp.concurrency} concurrent invocations reach only "
            f"{o_tp.rate_achieved:,.0f} msg/s, their requests queueing "
            f"(insert request p50 {o_tp.call_ms(0.5):.0f} ms)"
        )
        cpu = b_tp.bench_cpu + b_tp.emulator_cpu
        print(
            f"  CPU, batched closed loop: {cpu:.2f} s in {b_tp.elapsed:.2f} s on {os.cpu_count()} cpus "
            f"(loader process {b_tp.bench_cpu:.2f} s, bqemulator {b_tp.emulator_cpu:.2f} s)"
        )
        slow, spanning = b_st.slow_calls()
        print(
            f"  p99 at {args.rate:.0f}/s: {slow} of {b_st.insert_calls} insert requests took "
            f"> {SLOW_CALL * 1000:.0f} ms, {spanning} of them spanning one of bqemulator's "
            f"{len(b_st.checkpoints)} WAL checkpoints (each insertAll appends a copy of the whole table to "
            "the log: the time-travel snapshot)"
        )
        print(f"  'connection pool is full' discards in the BigQuery client's HTTP pool: {pool_full()}")
        print(
            f"\nlatency = scheduled hand-over -> handle returned (open loop, {args.concurrency} threads); "
            "throughput = closed loop; the loader, its client threads and the emulators share this "
            f"machine's {os.cpu_count()} cpus; each phase starts from an empty ops.all_user_events"
        )
        print(
            f"result: {b_tp.rate_achieved:.0f} msg/s (target {TARGET_RATE:.0f}: {verdict(tp_met)}), "
            f"{b_st.per_call:.1f} msgs/insert call at {args.rate:.0f}/s (target {TARGET_REDUCTION:.0f}: "
            f"{verdict(calls_met)}); baseline {o_tp.rate_achieved:.0f} msg/s, 1.0 msgs/call"
        )
        if problems:
            print("\nFAILED: messages failed, were lost, duplicated or dead-lettered:")
            for problem in problems:
                print(f"  - {problem}")
            return 1
        total = sum(p.handled for p in phases.values())
        print(
            f"\nOK: all {total} messages handled were loaded, each event exactly once in ops.user_events, "
            "no dead letters"
        )
        keep_logs = False
        return 0
    finally:
        if wal is not None:
            wal.stop()
        stack.stop()
        # bqemulator's snapshots leave some 0.5 GB on disk per run
        shutil.rmtree(state_dir / "bigquery", ignore_errors=True)
        if keep_logs:
            print(f"emulator logs kept in {state_dir / 'logs'}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


def _count_discarded_connections() -> Callable[[], int]:
    """urllib3 warns when more threads than its pool size (10) use one client at once; count, don't print."""
    count = [0]

    class Counter(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Connection pool is full" in record.getMessage():
                count[0] += 1

    pool_logger = logging.getLogger("urllib3.connectionpool")
    pool_logger.addHandler(Counter())
    pool_logger.propagate = False
    return lambda: count[0]


if __name__ == "__main__":
    raise SystemExit(main())
