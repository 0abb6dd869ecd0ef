"""A day of Amplitude end to end on the emulators: fake Export API → fake-gcs-server → bqemulator."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client, storage_client
from jupiter_data.adapters.gcs import GcsObjectStore
from jupiter_data.local.amplitude_server import AmplitudeExportServer
from jupiter_data.resources import load_resources
from jupiter_data.services import amplitude_sync
from jupiter_data.services.amplitude_sync import AmplitudeSync, SyncFailed
from jupiter_data.settings import Settings

DAY, NEXT_DAY = date(2026, 11, 20), date(2026, 11, 21)


@pytest.fixture(scope="module")
def amplitude() -> Iterator[AmplitudeExportServer]:
    with AmplitudeExportServer(events_per_hour=40, seed=7) as server:
        yield server


def make_sync(
    settings: Settings, server: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> AmplitudeSync:
    """The sync as the function builds it (bootstrap() and every real adapter), on the emulators."""
    monkeypatch.setenv("AMPLITUDE_API_BASE_URL", server.url)
    monkeypatch.setenv("AMPLITUDE_API_KEY", server.api_key)
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", server.secret_key)
    return amplitude_sync.bootstrap(settings)


def table_rows(settings: Settings, table: str, day: date) -> list[tuple[Any, ...]]:
    sql = f"SELECT * FROM `{table}` WHERE export_day = @day"
    rows = BigQueryWarehouse(bigquery_client(settings)).query(sql, {"day": day})
    return sorted(tuple(str(value) for value in row.values()) for row in rows)


def test_a_day_lands_with_exact_counts_and_a_rerun_changes_nothing(
    settings: Settings, amplitude: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = amplitude.expected(
        datetime(2026, 11, 20, 0, tzinfo=UTC), datetime(2026, 11, 20, 23, tzinfo=UTC)
    )
    sync = make_sync(settings, amplitude, monkeypatch)
    first = sync.sync_day(DAY)
    assert (first.status, first.events, first.bad_lines) == ("succeeded", expected.events, 0)
    events, properties = (
        table_rows(settings, "amplitude.events", DAY),
        table_rows(settings, "amplitude.events_properties", DAY),
    )
    assert len(events) == expected.events and len(properties) == first.property_rows > 0

    assert sync.sync_day(DAY).status == "skipped", "a succeeded day is not fetched again"
    again = sync.sync_day(DAY, force=True)
    assert again.status == "succeeded"
    assert table_rows(settings, "amplitude.events", DAY) == events, "re-running a day gives the same rows"
    assert table_rows(settings, "amplitude.events_properties", DAY) == properties

    raw = list(GcsObjectStore(storage_client(settings)).list_names(first_raw_bucket(settings), f"raw/{DAY}/"))
    assert raw == [f"raw/{DAY}/20261120T00-20261120T23.zip"]


def first_raw_bucket(settings: Settings) -> str:
    return load_resources().bucket_name(settings.project, "amplitude-raw")


def test_late_events_load_once_under_the_day_they_were_exported(
    settings: Settings, amplitude: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = make_sync(settings, amplitude, monkeypatch)
    sync.sync_day(NEXT_DAY, force=True)
    sql = (
        "SELECT COUNT(*) AS n, COUNTIF(event_date < export_day) AS late, COUNT(DISTINCT insert_id) AS ids "
        "FROM `amplitude.events` WHERE export_day = @day"
    )
    (row,) = BigQueryWarehouse(bigquery_client(settings)).query(sql, {"day": NEXT_DAY})
    expected = amplitude.expected(
        datetime(2026, 11, 21, 0, tzinfo=UTC), datetime(2026, 11, 21, 23, tzinfo=UTC)
    )
    assert row == {"n": expected.events, "late": expected.late, "ids": expected.events}
    assert expected.late > 0


def test_a_crash_after_staging_then_a_rerun_completes_without_duplicates(
    settings: Settings, amplitude: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = date(2026, 11, 19)
    sync = make_sync(settings, amplitude, monkeypatch)

    def crash(*args: object) -> None:
        raise RuntimeError("instance killed between staging and loading")

    with monkeypatch.context() as patch:
        patch.setattr(sync, "_load", crash)
        with pytest.raises(SyncFailed, match="killed"):
            sync.sync_day(day)
    assert table_rows(settings, "amplitude.events", day) == []
    result = sync.sync_day(day)  # the failed run did not count as done
    assert result.status == "succeeded"
    assert len(table_rows(settings, "amplitude.events", day)) == result.events
    ids_sql = (
        "SELECT COUNT(*) - COUNT(DISTINCT insert_id) AS dupes FROM `amplitude.events` WHERE export_day = @day"
    )
    assert list(BigQueryWarehouse(bigquery_client(settings)).query(ids_sql, {"day": day})) == [{"dupes": 0}]


def test_a_window_too_large_is_split_down_to_hours(
    settings: Settings, amplitude: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    day = date(2026, 11, 18)
    amplitude.configure(max_window_hours=6)
    try:
        result = make_sync(settings, amplitude, monkeypatch).sync_day(day)
    finally:
        amplitude.configure(max_window_hours=24)
    assert result.status == "succeeded"
    assert [(w[0].hour, w[1].hour) for w in result.windows] == [(0, 5), (6, 11), (12, 17), (18, 23)]
    assert len(table_rows(settings, "amplitude.events", day)) == result.events


def test_a_rerun_replaces_exactly_its_day_in_both_tables(
    settings: Settings, amplitude: AmplitudeExportServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    day, neighbour = date(2026, 11, 17), date(2026, 11, 16)
    sync = make_sync(settings, amplitude, monkeypatch)
    sync.sync_day(neighbour, force=True)
    kept = (
        table_rows(settings, "amplitude.events", neighbour),
        table_rows(settings, "amplitude.events_properties", neighbour),
    )
    assert sync.sync_day(day, force=True).property_rows > 0

    amplitude.configure(property_bags=False)  # the same events, every property bag null
    try:
        no_properties = sync.sync_day(day, force=True)
    finally:
        amplitude.configure(property_bags=True)
    assert (no_properties.status, no_properties.property_rows) == ("succeeded", 0)
    assert len(table_rows(settings, "amplitude.events", day)) == no_properties.events > 0
    assert table_rows(settings, "amplitude.events_properties", day) == [], "no stale property rows"

    amplitude.configure(empty_days=frozenset({day}))  # Amplitude now answers 404 for the whole day
    try:
        empty = sync.sync_day(day, force=True)
    finally:
        amplitude.configure(empty_days=frozenset())
    assert (empty.status, empty.events, empty.property_rows) == ("succeeded", 0, 0)
    assert table_rows(settings, "amplitude.events", day) == []
    assert table_rows(settings, "amplitude.events_properties", day) == []

    assert (
        table_rows(settings, "amplitude.events", neighbour),
        table_rows(settings, "amplitude.events_properties", neighbour),
    ) == kept, "the day next to it is untouched"
