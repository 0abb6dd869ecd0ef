"""Cloud Scheduler's message on daily-runs → sync_amplitude (under functions-framework) → BigQuery."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.local.amplitude_data import ExportSpec
from jupiter_data.local.stack import AMPLITUDE_EVENTS_PER_HOUR, LocalStack

LEDGER = "SELECT status, events_rows FROM `ops.sync_runs` WHERE export_day = @day AND started_at >= @since"


def expected_events(day: date) -> int:
    first = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return (
        ExportSpec(events_per_hour=AMPLITUDE_EVENTS_PER_HOUR)
        .expected(first, first + timedelta(hours=23))
        .events
    )


def wait_for_runs(
    platform: LocalStack, day: date, since: datetime, timeout: float = 90
) -> list[dict[str, Any]]:
    warehouse = BigQueryWarehouse(bigquery_client(platform.settings()))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = list(warehouse.query(LEDGER, {"day": day, "since": since}))
        if runs:
            return runs
        time.sleep(0.5)
    return []


def test_the_scheduler_message_syncs_yesterday_and_a_backfill_syncs_each_day(platform: LocalStack) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    platform.trigger_amplitude_sync({"force": True})  # what Cloud Scheduler publishes: {}
    platform.trigger_amplitude_sync({"start": "2026-10-01", "end": "2026-10-02", "force": True})
    for day in (yesterday, date(2026, 10, 1), date(2026, 10, 2)):
        assert wait_for_runs(platform, day, since) == [
            {"status": "succeeded", "events_rows": expected_events(day)}
        ]


def test_a_request_that_can_never_be_served_is_dropped_without_a_run(platform: LocalStack) -> None:
    since = datetime.now(UTC) - timedelta(seconds=2)
    platform.trigger_amplitude_sync({"day": "2026-02-30"})
    platform.trigger_amplitude_sync({"day": "2026-09-09", "force": True})  # a valid one behind it
    assert wait_for_runs(platform, date(2026, 9, 9), since)[0]["status"] == "succeeded"
    warehouse = BigQueryWarehouse(bigquery_client(platform.settings()))
    (failed,) = warehouse.query(
        "SELECT COUNT(*) AS n FROM `ops.sync_runs` WHERE status = 'failed' AND started_at >= @since",
        {"since": since},
    )
    assert failed == {"n": 0}
