"""``make load``: a steady stream of SNS messages through the whole local pipeline, then a reconciliation.

A private local stack on free ports (loopback only); Locust (``bench/locustfile.py``, headless, a fixed
run time) publishes with boto3 to moto's SNS at ``--rate`` messages/s for ``--duration`` seconds. SNS
pushes each message to ``sns_to_pubsub``, which republishes it to Pub/Sub ``sns-events``; the push
subscription delivers it to ``pubsub_to_bigquery``, which inserts it into ``ops.all_user_events``.

Afterwards, once the rows stop arriving (bounded by ``--drain-timeout``), it counts
published (SNS accepted) = acknowledged by the bridge (its "published SNS notification" log lines)
= rows in the dedup view ``ops.user_events``, with zero duplicates in the view and zero dead letters
(table and Pub/Sub dead-letter topic), and prints the achieved rate and latency percentiles.
Latency is the event's send time (set just before the publish) to its ``loaded_at`` (set by the loader
right before the insert that makes it visible). Exit status 0 only if every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from machine import machine
from report import percentile
from support import private_stack

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.local.stack import REPO_ROOT, SNS_TOPIC_ARN, LocalStack
from jupiter_data.local.tap import drain_dead_letters

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
VIEW_COUNTS = (
    "SELECT COUNT(*) AS rows_, COUNT(DISTINCT sns_message_id) AS distinct_ids "
    "FROM `ops.user_events` WHERE event_type = @run"
)
RAW_COUNTS = (
    "SELECT COUNT(*) AS rows_, COUNT(DISTINCT event_id) AS distinct_ids "
    "FROM `ops.all_user_events` WHERE event_type = @run"
)
LATENCIES = "SELECT sns_message_id, loaded_at FROM `ops.user_events` WHERE event_type = @run"


def run_locust(stack: LocalStack, run_id: str, options: argparse.Namespace, published_file: Path) -> int:
    env = {
        **os.environ,
        **stack.env(),
        "LOAD_RUN_ID": run_id,
        "LOAD_TOPIC_ARN": SNS_TOPIC_ARN,
        "LOAD_PUBLISHED_FILE": str(published_file),
        "LOAD_RATE_PER_USER": str(options.rate / options.users),
        "LOAD_BATCH": str(options.batch),
    }
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--users", str(options.users), "--spawn-rate", str(options.users),
        "--run-time", f"{options.duration}s", "--stop-timeout", "5", "--loglevel", "WARNING",
    ]  # fmt: skip
    # Locust stops itself after --run-time; the timeout only guards against a hung process.
    return subprocess.run(argv, env=env, timeout=options.duration + 60, check=False).returncode


def bridge_acks(stack: LocalStack, ids: set[str]) -> tuple[int, int]:
    """(distinct messages, replies) the bridge acknowledged with 200, from its structured log."""
    acked: list[str] = []
    with stack.supervisor.log_path("sns_to_pubsub").open(encoding="utf-8", errors="replace") as log:
        for line in log:
            if '"published SNS notification"' not in line:
                continue
            message_id = json.loads(line).get("sns_message_id")
            if message_id in ids:
                acked.append(message_id)
    return len(set(acked)), len(acked)


def dead_letters(stack: LocalStack, warehouse: BigQueryWarehouse) -> tuple[int, int]:
    """(rows in the dead-letter table, messages on the Pub/Sub dead-letter topic) of this private stack."""
    (table,) = warehouse.query("SELECT COUNT(*) AS n FROM `ops.all_user_events_dead_letter`")
    return int(table["n"]), len(drain_dead_letters(stack.settings(), "sns-events"))


def wait_for_drain(warehouse: BigQueryWarehouse, run_id: str, expected: int, timeout: float) -> float:
    """Seconds until the view holds ``expected`` rows, or until no new row came for 20 s or ``timeout``."""
    started = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - started < timeout:
        (counts,) = warehouse.query(VIEW_COUNTS, {"run": run_id})
        if counts["rows_"] >= expected:
            break
        if counts["rows_"] != seen:
            seen, last_change = counts["rows_"], time.monotonic()
        elif time.monotonic() - last_change > 20:
            break
        time.sleep(1)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=220.0, help="messages/s offered, all users together")
    parser.add_argument("--duration", type=int, default=60, help="seconds of publishing")
    parser.add_argument("--users", type=int, default=20, help="Locust users (each rate/users messages/s)")
    parser.add_argument(
        "--batch", type=int, default=10, choices=range(1, 11), help="messages per PublishBatch"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0, help="max seconds to wait for rows")
    options = parser.parse_args()
    run_id = f"load-{uuid.uuid4().hex[:8]}"
    print(machine())
    with tempfile.TemporaryDirectory(prefix="jupiter-load-") as tmp:
        stack = private_stack(Path(tmp))
        print("starting a private local stack on free ports …", flush=True)
        with stack:
            print(
                f"stack healthy in {stack.startup_seconds:.1f}s; run {run_id}: {options.rate:g} msg/s for "
                f"{options.duration}s, {options.users} Locust users, PublishBatch of {options.batch}\n",
                flush=True,
            )
            published_file = Path(tmp) / "published.jsonl"
            locust_status = run_locust(stack, run_id, options, published_file)
            published = [json.loads(line) for line in published_file.read_text().splitlines()]
            ids = {p["id"] for p in published}
            sent = sorted(p["sent_ms"] for p in published)
            warehouse = BigQueryWarehouse(bigquery_client(stack.settings()))
            drain = wait_for_drain(warehouse, run_id, len(ids), options.drain_timeout)
            (view,) = warehouse.query(VIEW_COUNTS, {"run": run_id})
            (raw,) = warehouse.query(RAW_COUNTS, {"run": run_id})
            acked, replies = bridge_acks(stack, ids)
            dead_table, dead_topic = dead_letters(stack, warehouse)
            sent_by_id = {p["id"]: p["sent_ms"] for p in published}
            latencies = sorted(
                row["loaded_at"].timestamp() * 1000 - sent_by_id[row["sns_message_id"]]
                for row in warehouse.query(LATENCIES, {"run": run_id})
                if row["sns_message_id"] in sent_by_id
            )
        # Every service's log and the published ids outlive the private stack, for diagnosis.
        kept = REPO_ROOT / ".local" / "load" / run_id
        shutil.copytree(Path(tmp) / "logs", kept / "logs")
        shutil.copy(published_file, kept)
    publish_seconds = (sent[-1] - sent[0]) / 1000 if len(sent) > 1 else float("nan")
    rate = len(published) / publish_seconds
    checks: list[tuple[str, bool]] = [
        (f"Locust exited {locust_status} (0 = no failed publish)", locust_status == 0),
        (f"achieved rate {rate:.1f} msg/s ≥ 200", rate >= 200),
        (f"published {len(ids)} = acknowledged by the bridge {acked}", acked == len(ids)),
        (f"acknowledged {acked} = rows in ops.user_events {view['rows_']}", view["rows_"] == acked),
        (
            f"duplicates in the view: {view['rows_'] - view['distinct_ids']}",
            view["rows_"] == view["distinct_ids"],
        ),
        (
            f"dead letters: table {dead_table}, Pub/Sub topic {dead_topic}",
            dead_table == 0 and dead_topic == 0,
        ),
    ]
    print(f"\nload drill {run_id}")
    print(f"  published      {len(published)} messages in {publish_seconds:.1f}s = {rate:.1f} msg/s")
    print(f"  bridge         {acked} messages acknowledged ({replies} 200 replies)")
    copies = raw["rows_"] - raw["distinct_ids"]
    print(f"  BigQuery       view {view['rows_']} rows ({view['distinct_ids']} distinct); raw table "
          f"{raw['rows_']} rows ({copies} redelivered copies, which the view hides)")  # fmt: skip
    print(f"  drained        {drain:.1f}s after the last publish")
    if latencies:
        figures = ", ".join(f"p{q:g} {percentile(latencies, q / 100):.0f} ms" for q in (50, 90, 95, 99))
        print(f"  latency        publish → loaded_at: {figures}, max {latencies[-1]:.0f} ms")
    print()
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    failed = [label for label, ok in checks if not ok]
    print(f"\n{'OK' if not failed else 'FAILED'}: {len(checks) - len(failed)} of {len(checks)} checks passed")
    print(f"logs of every service and the published ids: {kept.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
