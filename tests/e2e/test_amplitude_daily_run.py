"""Cloud Scheduler's message on daily-runs → sync_amplitude (under functions-framework) → BigQuery."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.domain.amplitude_request import latest_complete_day
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
    now = datetime.now(UTC)
    since, yesterday = now - timedelta(seconds=2), (now - timedelta(days=1)).date()
    platform.trigger_amplitude_sync({"force": True})  # what Cloud Scheduler publishes: {}
    platform.trigger_amplitude_sync({"start": "2026-10-01", "end": "2026-10-02", "force": True})
    for day in (date(2026, 10, 1), date(2026, 10, 2)):
        assert wait_for_runs(platform, day, since) == [
            {"status": "succeeded", "events_rows": expected_events(day)}
        ]
    # {} means yesterday, complete from 02:00 UTC (the scheduler publishes at 03:00); before that hour
    # the function refuses it (tests/unit/test_amplitude_sync.py pins both sides with a fake clock).
    if latest_complete_day(now) == yesterday:
        assert wait_for_runs(platform, yesterday, since) == [
            {"status": "succeeded", "events_rows": expected_events(yesterday)}
        ]
    else:
        assert wait_for_runs(platform, yesterday, since, timeout=5) == []


def test_requests_reaching_a_day_that_is_not_over_are_refused_before_any_work(platform: LocalStack) -> None:
    since, today = datetime.now(UTC) - timedelta(seconds=2), datetime.now(UTC).date()
    refused = [today - timedelta(days=n) for n in (3, 2, 1, 0)] + [today + timedelta(days=1)]
    platform.trigger_amplitude_sync({"day": today.isoformat(), "force": True})
    platform.trigger_amplitude_sync(
        {"start": refused[0].isoformat(), "end": refused[-1].isoformat(), "force": True}
    )
    platform.trigger_amplitude_sync({"day": "2026-09-08", "force": True})  # a valid one behind them
    assert wait_for_runs(platform, date(2026, 9, 8), since)[0]["status"] == "succeeded"
    warehouse = BigQueryWarehouse(bigquery_client(platform.settings()))
    ledger = "SELECT export_day FROM `ops.sync_runs` WHERE started_at >= @since AND export_day >= @first"
    assert list(warehouse.query(ledger, {"since": since, "first": refused[0]})) == [], (
        "not even the complete days at the start of the range"
    )
    exports = requests.get(f"{platform.env()['AMPLITUDE_API_BASE_URL']}/admin/requests", timeout=10).json()
    asked = {(record["start"] or "")[:8] for record in exports if record["at"] >= since.timestamp()}
    assert asked.isdisjoint(f"{day:%Y%m%d}" for day in refused), "nothing was downloaded for them"


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
