"""Latency of each fetch_from_bigquery endpoint against the same query sent straight to BigQuery.

Starts a private local platform (emulators and functions on free ports), seeds a month of SNS and
Amplitude events, then for each endpoint times N calls over HTTP to the running function and N runs
of the same catalogue SQL with the same parameters through the BigQuery client (``query().result()``
and every row read), interleaved so both see the same machine. Target: the API adds <= 20 ms at the
median. The API's extra work is the dry run (the cost cap), authentication, validation, HTTP and
rendering.

    .venv/bin/python bench/fetch_api.py [--calls 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import requests
from google.cloud import bigquery
from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import percentile, record, verdict  # bench/report.py: scripts run with bench/ on sys.path
from support import private_stack  # bench/support.py

from jupiter_data.adapters.bigquery import query_parameters
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.data_api.catalogue import CATALOGUE
from jupiter_data.data_api.parsing import EventFilter
from jupiter_data.local.stack import LocalStack

TARGET_MS = 20.0
START, END = date(2031, 5, 1), date(2031, 5, 31)


def seed(stack: LocalStack, events: int) -> None:
    client = bigquery_client(stack.settings())
    project = stack.settings().project
    base = datetime(2031, 5, 1, tzinfo=UTC)
    sns, amplitude = [], []
    for n in range(events):
        at = base + timedelta(minutes=37 * n)
        millis = int(at.timestamp() * 1000)
        sns.append(
            {
                "event_id": f"b{n}",
                "user_id": f"u{n % 97}",
                "event_type": f"type{n % 7}",
                "time_transaction_occurred": millis,
                "event_timestamp": at.isoformat(),
                "source_of_event": "bench",
                "context": "{}",
                "raw_event": "{}",
                "created_at": millis,
                "updated_at": millis,
                "pubsub_message_id": f"p{n}",
                "loaded_at": at.isoformat(),
            }
        )
        amplitude.append(
            {
                "insert_id": f"a{n}",
                "uuid": f"uu{n}",
                "export_day": at.date().isoformat(),
                "event_date": at.date().isoformat(),
                "event_time": at.isoformat(),
                "event_type": f"type{n % 5}",
                "user_id": f"u{n % 89}",
                "resolved_user_id": f"u{n % 89}",
                "event_properties": '{"k": 1}',
            }
        )
    for table, rows in (("ops.all_user_events", sns), ("amplitude.events", amplitude)):
        errors = client.insert_rows_json(f"{project}.{table}", rows)
        if errors:
            raise SystemExit(f"seeding {table} failed: {errors[:2]}")


def filters(**extra: Any) -> dict[str, Any]:
    return EventFilter(START, END, **extra).params()


def endpoints() -> list[tuple[str, str, str, dict[str, Any], dict[str, Any] | None, dict[str, Any]]]:
    """(label, method, path, query string, JSON body, catalogue name + params of the same query)."""
    days = {"start": START.isoformat(), "end": END.isoformat()}
    page = {"limit": 101, "has_cursor": False, "after_time": datetime(1970, 1, 1, tzinfo=UTC),
            "after_source": "", "after_id": ""}  # fmt: skip
    return [
        (
            "GET /v1/events",
            "GET",
            "/v1/events",
            {**days, "limit": "100"},
            None,
            {"query": "events", "params": {**filters(), **page}},
        ),
        (
            "GET /v1/users/{id}/events",
            "GET",
            "/v1/users/u5/events",
            {**days, "limit": "100"},
            None,
            {"query": "user_events", "params": {**filters(user_id="u5"), **page}},
        ),
        (
            "GET /v1/metrics/event-counts",
            "GET",
            "/v1/metrics/event-counts",
            days,
            None,
            {"query": "event_counts", "params": filters()},
        ),
        (
            "GET /v1/metrics/active-users",
            "GET",
            "/v1/metrics/active-users",
            days,
            None,
            {
                "query": "active_users",
                "params": {
                    **EventFilter(START - timedelta(days=29), END).params(),
                    "first_day": START,
                    "last_day": END,
                },
            },
        ),
        (
            "POST / (legacy counts)",
            "POST",
            "/",
            {},
            {"startDate": START.isoformat(), "endDate": END.isoformat(), "eventTypes": ["type1", "type2"]},
            {
                "query": "legacy_event_counts",
                "params": filters(event_types=("type1", "type2"), source="amplitude"),
            },
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--events", type=int, default=1000, help="events seeded per source")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        stack = private_stack(Path(tmp))
        with stack:
            seed(stack, options.events)
            url = stack.function_urls()["fetch_from_bigquery"]
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {stack.fetch_api_key}"
            client = bigquery_client(stack.settings())
            print(f"{options.events} events per source seeded; {options.calls} calls per endpoint and way\n")
            print(f"{'endpoint':<32}|{'API median':>11}|{'API p95':>9}|{'direct median':>14}|"
                  f"{'direct p95':>11}|{'added median':>13}| target")  # fmt: skip
            print(
                "-" * 32
                + "+"
                + "-" * 11
                + "+"
                + "-" * 9
                + "+"
                + "-" * 14
                + "+"
                + "-" * 11
                + "+"
                + "-" * 13
                + "+---"
            )
            for label, method, path, query, body, direct in endpoints():
                sql, params = CATALOGUE[direct["query"]], direct["params"]
                config = bigquery.QueryJobConfig(query_parameters=query_parameters(params))
                api_ms, direct_ms, api_rows, direct_rows = [], [], 0, 0
                for _ in range(options.calls + 2):  # two warm-up rounds, not counted
                    started = time.perf_counter()
                    reply = session.request(method, url + path, params=query, json=body, timeout=60)
                    reply.raise_for_status()
                    answer = reply.json()
                    api_ms.append((time.perf_counter() - started) * 1000)
                    api_rows = len(answer["data"] if isinstance(answer, dict) else answer)
                    started = time.perf_counter()
                    direct_rows = len(list(client.query(sql, job_config=config).result()))
                    direct_ms.append((time.perf_counter() - started) * 1000)
                api_ms, direct_ms = api_ms[2:], direct_ms[2:]
                if direct_rows not in (api_rows, api_rows + 1):  # a page asks for one row more
                    raise SystemExit(
                        f"{label}: the API returned {api_rows} rows, the direct query {direct_rows}"
                    )
                added = statistics.median(api_ms) - statistics.median(direct_ms)
                print(
                    f"{label:<32}|{statistics.median(api_ms):>9.1f}ms|{percentile(api_ms, 0.95):>7.1f}ms|"
                    f"{statistics.median(direct_ms):>12.1f}ms|{percentile(direct_ms, 0.95):>9.1f}ms|"
                    f"{added:>11.1f}ms| <= {TARGET_MS:.0f} ms: {verdict(added <= TARGET_MS)}"
                )
                for figure, value, baseline, target, met in (
                    ("median", statistics.median(api_ms), statistics.median(direct_ms), "", None),
                    ("p95", percentile(api_ms, 0.95), percentile(direct_ms, 0.95), "", None),
                    ("added at the median", added, None, f"<= {TARGET_MS:.0f} ms", added <= TARGET_MS),
                ):
                    record(
                        bench="fetch_api",
                        figure=f"{label}, {figure} of {options.calls} calls",
                        value=value,
                        unit="ms",
                        baseline=baseline,
                        baseline_label="same query straight to BigQuery",
                        target=target,
                        met=met,
                        higher_is_better=False,
                    )
    print()
    print(json.dumps({"calls": options.calls, "events_per_source": options.events}))
    print(machine())


if __name__ == "__main__":
    main()
