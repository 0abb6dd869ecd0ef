"""AmplitudeSync on fakes: the decisions of a day's sync, without network or emulators.

The fake Export API (tests/fakes.py) serves real zips written by ``ExportSpec`` (or scripted failures
per window) and records every window it was asked for. The fake warehouse (tests/fakes.py, contract-
tested against BigQuery) reads the staged gzip NDJSON back from the fake object store; here it also
asserts what the sync may do with it: load and drop run-private staging tables only, stream ledger rows
only, and publish a day by replacing it in both tables at once.
The end-to-end flows (exact counts, re-runs, late events, crash and re-run) live in
tests/integration/test_amplitude_sync.py; here each test pins down one decision.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import logging
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import functions_framework
import orjson
import pytest

from jupiter_data import cli
from jupiter_data.adapters.amplitude_api import AmplitudeAuthError
from jupiter_data.amplitude_transform import CorruptExport
from jupiter_data.domain import amplitude
from jupiter_data.domain.amplitude_request import (
    MAX_DAYS,
    DayNotComplete,
    SyncRequest,
    days_between,
    yesterday,
)
from jupiter_data.local.amplitude_data import ExportSpec
from jupiter_data.ports import Row, TransientError
from jupiter_data.resources import load_resources
from jupiter_data.services import amplitude_sync
from jupiter_data.services.amplitude_sync import (
    LEDGER_TABLE,
    AmplitudeSync,
    SyncConfig,
    SyncFailed,
    split,
)
from jupiter_data.settings import clear_settings_cache
from tests.conftest import REPO_ROOT
from tests.fakes import FakeBulkWarehouse, FakeClock, FakeExportApi, FakeObjectStore

DAY = date(2026, 11, 20)
MIDNIGHT = datetime(2026, 11, 20, tzinfo=UTC)
LAST_HOUR = MIDNIGHT + timedelta(hours=23)
NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)
PROJECT = "jupiter-test"
# The buckets bootstrap() names for PROJECT, so the CLI and the function tests share the harness.
RAW, STAGED = (load_resources().bucket_name(PROJECT, role) for role in ("amplitude-raw", "amplitude-staged"))
SPEC = ExportSpec(events_per_hour=10, seed=11)
EVENTS, PROPERTIES = amplitude.EVENTS_TABLE, amplitude.PROPERTIES_TABLE
STAGING_PREFIX = "amplitude._staging_"


def hour(h: int) -> datetime:
    return MIDNIGHT + timedelta(hours=h)


def window(first: int, last: int) -> tuple[datetime, datetime]:
    return hour(first), hour(last)


# ------------------------------------------------------------------------------------------- fakes


class SyncWarehouse(FakeBulkWarehouse):
    """The fake warehouse, asserting what the sync may do with it, with helpers for assertions."""

    def __init__(self, store: FakeObjectStore) -> None:
        super().__init__(store, tables=(EVENTS, PROPERTIES, LEDGER_TABLE))
        resources = load_resources()
        self.ledger_columns = {column["name"] for column in resources.table(LEDGER_TABLE).schema}

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        assert table == LEDGER_TABLE, "the sync streams rows into the ledger only"
        for row in rows:
            assert set(row) == self.ledger_columns, "a ledger row has exactly the ledger's columns"
        super().insert_rows(table, rows, row_ids)

    def load_ndjson(self, uris: list[str], table: str, schema: list[dict[str, Any]]) -> int:
        assert table.startswith(STAGING_PREFIX), "loads go to staging tables only, never to a live table"
        assert uris, "a load job needs at least one object"
        assert all(uri.startswith(f"gs://{STAGED}/") for uri in uris), uris
        return super().load_ndjson(uris, table, schema)

    def replace_day(self, day: date, sources: Mapping[str, str | None]) -> None:
        assert list(sources) == [EVENTS, PROPERTIES], "a day is replaced in both tables"
        for source in sources.values():
            assert source is None or source.startswith(STAGING_PREFIX), source
        super().replace_day(day, sources)

    def count_rows(self, table: str, where: Mapping[str, Any]) -> int:
        assert type(where["export_day"]) is date, where
        return super().count_rows(table, where)

    def drop_table(self, table: str) -> None:
        assert table.startswith(STAGING_PREFIX), f"only staging tables are dropped, not {table}"
        super().drop_table(table)

    # -- for assertions

    def staging_tables(self) -> list[str]:
        return [name for name in self.tables if name.startswith(STAGING_PREFIX)]

    def loads(self) -> list[str]:
        return [table for kind, table in self.calls if kind == "load"]

    def replace_attempts(self) -> int:
        return sum(1 for kind, table in self.calls if kind == "replace" and table == EVENTS)

    def drops(self) -> list[str]:
        return [table for kind, table in self.calls if kind == "drop"]

    def day_rows(self, table: str, day: date = DAY) -> list[dict[str, Any]]:
        return [row for row in self.tables[table] if row["export_day"] == day.isoformat()]

    def ledger(self) -> list[dict[str, Any]]:
        return list(self.tables[LEDGER_TABLE])


class Harness:
    def __init__(self, api: FakeExportApi | None = None, **config: Any) -> None:
        self.clock = FakeClock(NOW)
        self.api = api or FakeExportApi(SPEC)
        self.api.clock = self.clock
        self.store = FakeObjectStore()
        self.warehouse = SyncWarehouse(self.store)
        self.progress: list[tuple[str, int]] = []
        self.sync = AmplitudeSync(
            SyncConfig(raw_bucket=RAW, staged_bucket=STAGED, **config),
            self.api,
            self.store,
            self.warehouse,
            self.clock,
            progress=lambda what, amount: self.progress.append((what, amount)),
        )

    def names(self, bucket: str) -> list[str]:
        return list(self.store.list_names(bucket))

    def staged(self, kind: str) -> list[str]:
        return [name for name in self.names(STAGED) if name.endswith(f"/{kind}.json.gz")]

    def read_ndjson(self, bucket: str, name: str) -> list[dict[str, Any]]:
        with self.store.open_read(bucket, name) as handle:
            return [orjson.loads(line) for line in gzip.decompress(handle.read()).splitlines()]

    def failed(self, day: date = DAY, **kwargs: Any) -> SyncFailed:
        with pytest.raises(SyncFailed) as caught:
            self.sync.sync_day(day, **kwargs)
        return caught.value


def assert_nothing_published(h: Harness, *, attempted: bool = False) -> None:
    """No day rows and no staging tables left; unless ``attempted``, no transaction was even sent."""
    assert h.warehouse.replaced == [], "no transaction may commit for a failed day"
    if not attempted:
        assert h.warehouse.replace_attempts() == 0, "no transaction may be sent for a failed day"
    assert h.warehouse.day_rows(EVENTS) == [] and h.warehouse.day_rows(PROPERTIES) == []
    assert h.warehouse.staging_tables() == []


def only_ledger_row(h: Harness) -> dict[str, Any]:
    (row,) = h.warehouse.ledger()
    return row


# ------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize(
    ("first", "last", "halves"),
    [
        (0, 23, ((0, 11), (12, 23))),  # a day: 12 + 12
        (0, 2, ((0, 0), (1, 2))),  # odd: the smaller half first, 1 + 2
        (12, 16, ((12, 13), (14, 16))),  # odd: 2 + 3
        (6, 9, ((6, 7), (8, 9))),  # even: 2 + 2
        (12, 23, ((12, 17), (18, 23))),
        (4, 5, ((4, 4), (5, 5))),  # two hours: single hours
    ],
)
def test_split_halves_an_inclusive_hour_window(
    first: int, last: int, halves: tuple[tuple[int, int], tuple[int, int]]
) -> None:
    assert split(*window(first, last)) == tuple(window(*half) for half in halves)


def test_split_halves_cover_the_window_without_gap_or_overlap_for_every_length() -> None:
    start = datetime(2026, 11, 20, 20, tzinfo=UTC)  # windows crossing midnight too
    for hours in range(2, 49):
        end = start + timedelta(hours=hours - 1)
        (a_start, a_end), (b_start, b_end) = split(start, end)
        lengths = [int((e - s) / timedelta(hours=1)) + 1 for s, e in ((a_start, a_end), (b_start, b_end))]
        assert (a_start, b_end) == (start, end), hours
        assert b_start == a_end + timedelta(hours=1), hours
        assert lengths == [hours // 2, hours - hours // 2], hours


def test_split_refuses_a_single_hour() -> None:
    with pytest.raises(ValueError):
        split(hour(5), hour(5))


# --------------------------------------------------------------------------------- window splitting


def test_a_window_too_large_is_halved_depth_first_until_amplitude_answers() -> None:
    h = Harness(FakeExportApi(SPEC, max_window_hours=5))
    result = h.sync.sync_day(DAY)

    assert result.status == "succeeded"
    assert h.api.requests == [
        window(0, 23),
        window(0, 11),
        window(0, 5),
        window(0, 2),
        window(3, 5),
        window(6, 11),
        window(6, 8),
        window(9, 11),
        window(12, 23),
        window(12, 17),
        window(12, 14),
        window(15, 17),
        window(18, 23),
        window(18, 20),
        window(21, 23),
    ]
    three_hours = [window(n, n + 2) for n in range(0, 24, 3)]
    assert result.windows == three_hours
    assert result.events == h.api.expected_events(MIDNIGHT, LAST_HOUR)
    assert len(h.warehouse.day_rows(EVENTS)) == result.events
    assert h.names(RAW) == [f"raw/{DAY}/{s:%Y%m%dT%H}-{e:%Y%m%dT%H}.zip" for s, e in three_hours]
    assert len(h.staged("events")) == len(h.staged("properties")) == 8
    assert only_ledger_row(h)["windows"] == 8
    assert h.warehouse.replace_attempts() == 1, "all windows are published in one transaction"


def test_a_window_past_max_window_bytes_is_halved_and_a_single_hour_is_taken_whatever_its_size() -> None:
    api = FakeExportApi(SPEC)
    one_hour = len(api.zip(MIDNIGHT, MIDNIGHT))
    h = Harness(api, max_window_bytes=one_hour * 3 // 2)  # under two hours' zip: every window splits
    result = h.sync.sync_day(DAY)

    assert result.status == "succeeded"
    assert result.windows == [window(n, n) for n in range(24)]
    assert all(cap is None for (start, end), cap in zip(api.requests, api.caps, strict=True) if start == end)
    assert all(
        cap == one_hour * 3 // 2
        for (start, end), cap in zip(api.requests, api.caps, strict=True)
        if start != end
    )
    assert result.events == api.expected_events(MIDNIGHT, LAST_HOUR)
    assert len(h.warehouse.day_rows(EVENTS)) == result.events


def test_each_window_frees_its_temporary_files_before_the_next_download() -> None:
    h = Harness(FakeExportApi(SPEC, max_window_hours=5))
    h.sync.sync_day(DAY)

    # Only the download being written: the earlier windows' zips and outputs are gone from /tmp.
    assert len(h.api.files_in_tmp) == 15
    assert all(
        files == [f"export-{start:%Y%m%dT%H}.zip"]
        for files, (start, _) in zip(h.api.files_in_tmp, h.api.requests, strict=True)
    )


def test_a_single_hour_that_is_still_too_large_fails_the_day_naming_the_hour() -> None:
    h = Harness(FakeExportApi(SPEC, too_large_hours=[hour(13)]))
    error = h.failed()

    assert "single hour 2026-11-20 13:00" in str(error)
    assert h.api.requests == [
        window(0, 23),
        window(0, 11),  # served
        window(12, 23),
        window(12, 17),
        window(12, 14),
        window(12, 12),  # served
        window(13, 14),
        window(13, 13),  # still too large: give up
    ]
    assert_nothing_published(h)
    row = only_ledger_row(h)
    assert row["status"] == "failed" and "2026-11-20 13:00" in row["error"]


def test_a_window_without_data_among_split_windows_is_skipped_and_the_rest_load() -> None:
    empty = [hour(n) for n in range(12, 18)]
    h = Harness(FakeExportApi(SPEC.with_options(empty_hours=frozenset(empty)), max_window_hours=6))
    result = h.sync.sync_day(DAY)

    assert result.status == "succeeded"
    assert result.windows == [window(0, 5), window(6, 11), window(18, 23)]
    assert result.events == SPEC.events_per_hour * 18 == len(h.warehouse.day_rows(EVENTS))
    assert len(h.names(RAW)) == 3


# --------------------------------------------------------------------------------------- 404, empty


def test_a_day_without_data_succeeds_with_zero_rows_loads_nothing_and_is_recorded() -> None:
    h = Harness(FakeExportApi(SPEC.with_options(empty_days=frozenset({DAY}))))
    result = h.sync.sync_day(DAY)

    assert (result.status, result.events, result.property_rows, result.windows) == ("succeeded", 0, 0, [])
    assert h.api.requests == [window(0, 23)]
    assert h.names(RAW) == [] and h.names(STAGED) == []
    assert h.warehouse.loads() == [] and h.warehouse.staging_tables() == []
    assert h.warehouse.replaced == [(DAY, {EVENTS: None, PROPERTIES: None})], "the day is emptied in both"
    row = only_ledger_row(h)
    assert (row["status"], row["events_rows"], row["properties_rows"], row["windows"]) == (
        "succeeded",
        0,
        0,
        0,
    )
    assert row["error"] is None
    assert h.sync.sync_day(DAY).status == "skipped", "an empty day counts as synced"


# ------------------------------------------------------------------------------ errors from the API


def test_an_auth_error_fails_the_day_at_once_and_says_which_setting_to_check() -> None:
    refused = AmplitudeAuthError(
        "Amplitude refused the credentials (401): check AMPLITUDE_API_KEY and AMPLITUDE_SECRET_KEY"
    )
    h = Harness(FakeExportApi(SPEC, errors=[refused]))
    error = h.failed()

    assert isinstance(error.__cause__, AmplitudeAuthError)
    assert "AMPLITUDE_API_KEY" in str(error)
    assert h.api.requests == [window(0, 23)], "no retry, no split: the keys will not get better"
    assert h.names(RAW) == [] and h.names(STAGED) == []
    assert_nothing_published(h)
    row = only_ledger_row(h)
    assert row["status"] == "failed"
    assert row["error"].startswith("AmplitudeAuthError: ") and "AMPLITUDE_API_KEY" in row["error"]


def test_a_transient_error_fails_the_run_without_marking_the_day_so_a_redelivery_syncs_it() -> None:
    h = Harness(
        FakeExportApi(SPEC, errors=[TransientError("Amplitude export failed 6 times, last: HTTP 503")])
    )
    error = h.failed()

    assert isinstance(error.__cause__, TransientError)
    assert h.api.requests == [window(0, 23)], "the client retries; the service does not retry again"
    assert only_ledger_row(h)["status"] == "failed"
    assert_nothing_published(h)

    again = h.sync.sync_day(DAY)  # Pub/Sub redelivers: a failed run does not count as synced
    assert again.status == "succeeded" and again.events == SPEC.expected(MIDNIGHT, LAST_HOUR).events
    assert [row["status"] for row in h.warehouse.ledger()] == ["failed", "succeeded"]


def test_a_truncated_download_fails_the_day_and_publishes_nothing() -> None:
    h = Harness(FakeExportApi(SPEC, truncated_windows=[window(0, 23)]))
    error = h.failed()

    assert isinstance(error.__cause__, CorruptExport)
    assert h.names(RAW) == [f"raw/{DAY}/20261120T00-20261120T23.zip"], "the raw copy is kept for diagnosis"
    assert h.staged("events") == [] and h.staged("properties") == []
    assert_nothing_published(h)
    assert only_ledger_row(h)["error"].startswith("CorruptExport: ")


def test_a_failure_in_a_later_window_publishes_nothing_of_the_earlier_ones() -> None:
    h = Harness(FakeExportApi(SPEC, max_window_hours=12, truncated_windows=[window(12, 23)]))
    h.failed()

    assert h.api.requests == [window(0, 23), window(0, 11), window(12, 23)]
    # The first window was staged (to free /tmp) under the failed run's own prefix; nothing loaded it.
    assert [name.split("/")[3] for name in h.staged("events")] == ["20261120T00-20261120T11"]
    assert_nothing_published(h)  # and published whole or not at all


# ---------------------------------------------------------------------------------- malformed lines


def test_malformed_lines_over_the_limit_fail_the_day_and_nothing_is_loaded() -> None:
    dirty = SPEC.with_options(malformed_rate=0.1)  # 1 bad line per 10 events: 9 %
    h = Harness(FakeExportApi(dirty), max_bad_fraction=0.05)
    error = h.failed()

    assert "24 of 264 lines are malformed, over AMPLITUDE_MAX_BAD_LINES=0.05" in str(error)
    assert h.warehouse.loads() == [] and h.warehouse.drops() == []  # the staged files are never loaded
    assert_nothing_published(h)
    row = only_ledger_row(h)
    assert row["status"] == "failed" and row["error"].startswith("SyncFailed: 24 of 264 lines")


def test_malformed_lines_under_the_limit_load_the_day_and_are_dead_lettered() -> None:
    dirty = SPEC.with_options(malformed_rate=0.1)
    h = Harness(FakeExportApi(dirty), max_bad_fraction=0.1)
    result = h.sync.sync_day(DAY)

    expected = dirty.expected(MIDNIGHT, LAST_HOUR)
    assert (result.status, result.events, result.bad_lines) == ("succeeded", expected.events, 24)
    assert len(h.warehouse.day_rows(EVENTS)) == expected.events
    (dead,) = h.staged("bad_lines")
    assert re.fullmatch(rf"staged/{DAY}/[0-9a-f]{{12}}/20261120T00-20261120T23/bad_lines\.json\.gz", dead)
    letters = h.read_ndjson(STAGED, dead)
    assert len(letters) == 24
    assert {row["export_day"] for row in letters} == {DAY.isoformat()}
    assert all(row["member"].endswith(".json.gz") and row["line_number"] >= 1 for row in letters)
    assert all(set(row) == set(amplitude.BAD_LINE_FIELDS) for row in letters)
    assert only_ledger_row(h)["malformed_lines"] == 24


def test_a_clean_day_stages_no_dead_letter_object() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    assert h.staged("bad_lines") == []
    assert only_ledger_row(h)["malformed_lines"] == 0


def test_the_dead_letters_of_a_day_failed_for_malformed_lines_are_kept_for_diagnosis() -> None:
    h = Harness(FakeExportApi(SPEC.with_options(malformed_rate=0.1)), max_bad_fraction=0.05)
    h.failed()
    dead = h.staged("bad_lines")
    assert len(dead) == 1, "a dead-letter object for the failed day"
    assert len(h.read_ndjson(STAGED, dead[0])) == 24


def _half_dirty_api(max_window_hours: int) -> FakeExportApi:
    # Hours 0-11 clean, hours 12-23 with 2 bad lines per 20 events: 24 of 504 lines (4.8 %) for the day,
    # but 24 of 264 (9.1 %) in the afternoon alone.
    clean = ExportSpec(events_per_hour=20, seed=5)
    dirty = clean.with_options(malformed_rate=0.1)
    return FakeExportApi(
        clean, max_window_hours=max_window_hours, specs_by_hour={hour(n): dirty for n in range(12, 24)}
    )


def test_the_bad_line_limit_holds_for_a_day_exported_in_one_window() -> None:
    h = Harness(_half_dirty_api(max_window_hours=24), max_bad_fraction=0.05)
    result = h.sync.sync_day(DAY)
    assert (result.status, result.events, result.bad_lines) == ("succeeded", 480, 24)


def test_the_bad_line_limit_applies_to_the_day_whatever_the_window_split() -> None:
    h = Harness(_half_dirty_api(max_window_hours=12), max_bad_fraction=0.05)
    result = h.sync.sync_day(DAY)
    assert (result.status, result.events, result.bad_lines) == ("succeeded", 480, 24)


# ------------------------------------------------------------------------------- raw copy, staging


def test_the_raw_zip_is_kept_as_downloaded_with_its_window_digest_size_and_fetch_time() -> None:
    h = Harness()
    h.sync.sync_day(DAY)

    name = f"raw/{DAY}/20261120T00-20261120T23.zip"
    assert h.names(RAW) == [name]
    payload, _, metadata, content_type = h.store.objects[(RAW, name)]
    assert payload == h.api.served[window(0, 23)], "byte for byte what Amplitude sent"
    assert content_type == "application/zip"
    assert metadata == {
        "window": "20261120T00-20261120T23",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": str(len(payload)),
        "fetched_at": (NOW + timedelta(seconds=1)).isoformat(),  # the download took the fake second
    }


def test_staged_objects_are_run_scoped_and_the_loads_read_them() -> None:
    h = Harness()
    result = h.sync.sync_day(DAY)

    run_id = only_ledger_row(h)["run_id"]
    prefix = f"staged/{DAY}/{run_id}/20261120T00-20261120T23"
    assert h.names(STAGED) == [f"{prefix}/events.json.gz", f"{prefix}/properties.json.gz"]
    assert len(h.read_ndjson(STAGED, f"{prefix}/events.json.gz")) == result.events
    assert len(h.read_ndjson(STAGED, f"{prefix}/properties.json.gz")) == result.property_rows
    assert sorted(h.warehouse.loads()) == [
        f"amplitude._staging_events_{run_id}",
        f"amplitude._staging_properties_{run_id}",
    ]


# ------------------------------------------------------------------------ publishing and the ledger


def test_a_day_is_published_in_one_transaction_that_replaces_only_that_day() -> None:
    h = Harness()
    other_day = {"export_day": "2026-11-19", "insert_id": "kept"}
    stale = {"export_day": DAY.isoformat(), "insert_id": "stale"}
    h.warehouse.tables[EVENTS] = [dict(other_day), dict(stale)]
    h.warehouse.tables[PROPERTIES] = [dict(other_day), dict(stale)]

    # A stale day in the tables without a succeeded ledger row (say a lost ledger insert) is re-synced.
    result = h.sync.sync_day(DAY)

    assert result.status == "succeeded"
    ((day, sources),) = h.warehouse.replaced
    assert day == DAY and list(sources) == [EVENTS, PROPERTIES]
    for table, count in ((EVENTS, result.events), (PROPERTIES, result.property_rows)):
        assert other_day in h.warehouse.tables[table], "other export days are untouched"
        day_rows = h.warehouse.day_rows(table)
        assert len(day_rows) == count and stale not in day_rows, "the day is replaced, not appended to"


def test_a_forced_rerun_replaces_the_day_with_identical_rows() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    first = (h.warehouse.day_rows(EVENTS), h.warehouse.day_rows(PROPERTIES))
    h.sync.sync_day(DAY, force=True)
    assert (h.warehouse.day_rows(EVENTS), h.warehouse.day_rows(PROPERTIES)) == first
    assert len(h.warehouse.replaced) == 2


def test_a_successful_run_writes_a_complete_ledger_row() -> None:
    h = Harness()
    result = h.sync.sync_day(DAY)

    row = only_ledger_row(h)
    download = h.api.served[window(0, 23)]
    assert row == {
        "run_id": row["run_id"],
        "source": "amplitude",
        "export_day": DAY.isoformat(),
        "status": "succeeded",
        "windows": 1,
        "events_rows": result.events,
        "properties_rows": result.property_rows,
        "bytes_downloaded": len(download),
        "malformed_lines": 0,
        "started_at": NOW.isoformat(),
        "finished_at": (NOW + timedelta(seconds=1)).isoformat(),
        "duration_seconds": 1.0,
        "error": None,
    }
    assert re.fullmatch(r"[0-9a-f]{12}", row["run_id"])
    assert result.events == SPEC.expected(MIDNIGHT, LAST_HOUR).events and result.property_rows > 0


def test_a_ledger_that_cannot_be_written_does_not_hide_the_outcome() -> None:
    h = Harness()
    h.warehouse.fail_insert = TransientError("streaming insert into ops.sync_runs failed")
    assert h.sync.sync_day(DAY).status == "succeeded"

    h.warehouse.fail_load[STAGING_PREFIX] = RuntimeError("load job failed")
    error = h.failed(force=True)
    assert "load job failed" in str(error), "the run's own error, not the ledger's"


# ---------------------------------------------------------------------------------- dry run, resume


def test_a_dry_run_downloads_and_counts_but_writes_nothing() -> None:
    dirty = SPEC.with_options(malformed_rate=0.1)
    h = Harness(FakeExportApi(dirty, max_window_hours=12), max_bad_fraction=0.1)
    result = h.sync.sync_day(DAY, dry_run=True)

    expected = dirty.expected(MIDNIGHT, LAST_HOUR)
    assert result.status == "dry_run"
    assert (result.events, result.bad_lines) == (expected.events, expected.malformed)
    assert result.property_rows > 0
    assert result.windows == [window(0, 11), window(12, 23)]
    sizes = [len(h.api.served[w]) for w in result.windows]
    assert result.bytes_downloaded == sum(sizes)
    assert h.store.objects == {}, "no raw copy, no staged objects, no dead letters"
    assert h.warehouse.calls == [], "no load, no transaction, no ledger row"
    assert [amount for what, amount in h.progress if what == "bytes"] == sizes
    assert sum(amount for what, amount in h.progress if what == "events") == expected.events


def test_a_dry_run_reports_the_same_counts_as_the_real_run() -> None:
    h = Harness()
    dry = h.sync.sync_day(DAY, dry_run=True)
    real = h.sync.sync_day(DAY)  # not skipped: a dry run records nothing
    assert real.status == "succeeded"
    assert (dry.events, dry.property_rows, dry.bad_lines, dry.bytes_downloaded, dry.windows) == (
        real.events,
        real.property_rows,
        real.bad_lines,
        real.bytes_downloaded,
        real.windows,
    )


def test_a_day_with_a_succeeded_ledger_row_is_skipped_unless_forced() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    requests = len(h.api.requests)

    skipped = h.sync.sync_day(DAY)
    assert (skipped.status, skipped.events, skipped.windows) == ("skipped", 0, [])
    assert len(h.api.requests) == requests, "a skipped day is not fetched"
    assert len(h.warehouse.ledger()) == 1, "a skip writes no ledger row"

    forced = h.sync.sync_day(DAY, force=True)
    assert forced.status == "succeeded" and len(h.api.requests) == requests + 1
    assert [row["status"] for row in h.warehouse.ledger()] == ["succeeded", "succeeded"]


def test_only_a_succeeded_run_of_the_same_day_counts_as_synced() -> None:
    h = Harness()
    h.warehouse.tables[LEDGER_TABLE] = [
        {"export_day": DAY.isoformat(), "status": "failed"},
        {"export_day": (DAY - timedelta(days=1)).isoformat(), "status": "succeeded"},
    ]
    assert not h.sync.already_synced(DAY)
    assert h.sync.sync_day(DAY).status == "succeeded"
    assert h.sync.already_synced(DAY)


# ----------------------------------------------------------------------------------- reconciliation


def test_a_load_that_loses_rows_fails_reconciliation_and_the_run() -> None:
    h = Harness()
    h.warehouse.drop_rows[f"{STAGING_PREFIX}events_"] = 1
    error = h.failed()

    expected = SPEC.expected(MIDNIGHT, LAST_HOUR).events
    assert "reconciliation failed" in str(error)
    assert f"transformed {expected} events" in str(error)
    row = only_ledger_row(h)
    assert row["status"] == "failed" and "reconciliation failed" in row["error"]
    assert h.warehouse.staging_tables() == []


def test_a_load_that_fails_reconciliation_publishes_nothing() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    before = h.warehouse.day_rows(EVENTS)
    h.warehouse.drop_rows[f"{STAGING_PREFIX}events_"] = 1
    h.failed(force=True)
    assert h.warehouse.day_rows(EVENTS) == before


# ------------------------------------------------------------------------------------ staging tables


def test_staging_tables_are_dropped_after_a_successful_run() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    run_id = only_ledger_row(h)["run_id"]
    assert sorted(h.warehouse.drops()) == [
        f"amplitude._staging_events_{run_id}",
        f"amplitude._staging_properties_{run_id}",
    ]
    assert h.warehouse.staging_tables() == []


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(
            {"fail_load": {f"{STAGING_PREFIX}properties_": RuntimeError("load job failed")}}, id="load"
        ),
        pytest.param({"fail_replace": RuntimeError("transaction aborted")}, id="transaction"),
    ],
)
def test_staging_tables_are_dropped_when_loading_fails(fault: dict[str, Any]) -> None:
    h = Harness()
    for name, value in fault.items():
        setattr(h.warehouse, name, value)
    error = h.failed()

    assert isinstance(error.__cause__, RuntimeError)
    assert len(h.warehouse.drops()) == 2, "both staging tables, loaded or not"
    assert_nothing_published(h, attempted=True)
    assert only_ledger_row(h)["status"] == "failed"


# ----------------------------------------------------------------------------------- days and dates


def test_days_between_is_inclusive_and_crosses_months_years_and_leap_days() -> None:
    assert days_between(DAY, DAY) == [DAY]
    assert days_between(date(2028, 2, 27), date(2028, 3, 1)) == [
        date(2028, 2, 27),
        date(2028, 2, 28),
        date(2028, 2, 29),
        date(2028, 3, 1),
    ]
    assert days_between(date(2026, 12, 31), date(2027, 1, 1)) == [date(2026, 12, 31), date(2027, 1, 1)]
    assert len(days_between(date(2026, 1, 1), date(2026, 12, 31))) == 365


def test_days_between_rejects_an_end_before_the_start() -> None:
    with pytest.raises(ValueError, match="2026-11-19 is before start 2026-11-20"):
        days_between(DAY, DAY - timedelta(days=1))


def test_days_between_allows_a_leap_year_and_refuses_longer_ranges() -> None:
    assert len(days_between(date(2028, 1, 1), date(2028, 12, 31))) == MAX_DAYS == 366
    with pytest.raises(ValueError, match="more than 366 days"):
        days_between(date(2026, 1, 1), date(2027, 1, 2))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2026, 11, 21, 3, 0, tzinfo=UTC), date(2026, 11, 20)),  # the scheduled run
        (datetime(2026, 11, 21, 0, 0, tzinfo=UTC), date(2026, 11, 20)),  # just after midnight
        (datetime(2026, 11, 21, 23, 59, 59, tzinfo=UTC), date(2026, 11, 20)),
        (datetime(2026, 3, 1, 12, 0, tzinfo=UTC), date(2026, 2, 28)),
        (datetime(2028, 3, 1, 12, 0, tzinfo=UTC), date(2028, 2, 29)),
        (datetime(2027, 1, 1, 5, 0, tzinfo=UTC), date(2026, 12, 31)),
        # 01:30 in Kyiv is still the previous day in UTC (23:30 on the 20th): yesterday is the 19th.
        (datetime(2026, 11, 21, 1, 30, tzinfo=timezone(timedelta(hours=2))), date(2026, 11, 19)),
        # 20:00 in California is already the next day in UTC (04:00 on the 21st): yesterday is the 20th.
        (datetime(2026, 11, 20, 20, 0, tzinfo=timezone(timedelta(hours=-8))), date(2026, 11, 20)),
    ],
)
def test_yesterday_is_the_utc_day_before_now(now: datetime, expected: date) -> None:
    assert yesterday(now) == expected


# ----------------------------------------------------------------------- days that are not over yet


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(MIDNIGHT + timedelta(hours=12), id="today"),
        pytest.param(datetime(2026, 11, 21, 1, 59, 59, 999999, tzinfo=UTC), id="yesterday-before-0200"),
        pytest.param(MIDNIGHT - timedelta(days=3), id="a-future-day"),
    ],
)
@pytest.mark.parametrize(
    "kwargs", [{}, {"force": True}, {"dry_run": True}], ids=["plain", "force", "dry-run"]
)
def test_a_day_that_is_not_complete_is_refused_before_any_work_and_never_recorded(
    now: datetime, kwargs: dict[str, bool]
) -> None:
    h = Harness()
    h.clock.current = now
    with pytest.raises(DayNotComplete, match="2026-11-20 not complete yet"):
        h.sync.sync_day(DAY, **kwargs)
    assert h.api.requests == [] and h.store.objects == {} and h.warehouse.calls == []


def test_a_day_is_complete_from_0200_utc_the_next_day() -> None:
    h = Harness()
    h.clock.current = datetime(2026, 11, 21, 2, 0, tzinfo=UTC)
    assert h.sync.sync_day(DAY).status == "succeeded"


# ---------------------------------------------------- a re-run replaces exactly its day in both tables


def test_a_rerun_whose_export_has_events_but_no_properties_leaves_no_stale_property_rows() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    assert h.warehouse.day_rows(PROPERTIES), "the first export had property rows"
    other_day = {"export_day": "2026-11-19", "insert_id": "kept"}
    h.warehouse.tables[PROPERTIES].append(dict(other_day))

    h.api.spec = SPEC.with_options(property_bags=False)  # the same events, every property bag null
    result = h.sync.sync_day(DAY, force=True)

    assert (result.status, result.property_rows) == ("succeeded", 0)
    assert len(h.warehouse.day_rows(EVENTS)) == result.events > 0
    assert h.warehouse.day_rows(PROPERTIES) == [], "the day's old property rows are gone"
    assert other_day in h.warehouse.tables[PROPERTIES], "other export days are untouched"
    assert h.sync.sync_day(DAY, force=True).status == "succeeded", "and re-runs keep succeeding"


def test_a_rerun_of_a_day_that_now_has_no_data_empties_the_day_in_both_tables() -> None:
    h = Harness()
    h.sync.sync_day(DAY)
    h.api.spec = SPEC.with_options(empty_days=frozenset({DAY}))  # Amplitude answers 404 all day now
    result = h.sync.sync_day(DAY, force=True)

    assert (result.status, result.events, result.property_rows) == ("succeeded", 0, 0)
    assert h.warehouse.day_rows(EVENTS) == [] and h.warehouse.day_rows(PROPERTIES) == []
    assert h.warehouse.staging_tables() == []


# ------------------------------------------------------------------- the CLI and the function, on fakes


def wire(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI and the function build their sync with the real bootstrap(), on the harness's fakes."""
    for name, value in (
        ("GOOGLE_CLOUD_PROJECT", PROJECT),
        ("AMPLITUDE_API_KEY", "test-key"),
        ("AMPLITUDE_SECRET_KEY", "test-secret"),
    ):
        monkeypatch.setenv(name, value)
    fakes = {"export_api": h.api, "store": h.store, "warehouse": h.warehouse, "clock": h.clock}
    monkeypatch.setattr(amplitude_sync, "bootstrap", functools.partial(amplitude_sync.bootstrap, **fakes))


def run_cli(h: Harness, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    wire(h, monkeypatch)
    return cli.main(["sync-amplitude", *argv])


@pytest.mark.parametrize(
    ("now", "argv", "refused"),
    [
        (MIDNIGHT + timedelta(hours=12), ("--day", "2026-11-20", "--force"), "2026-11-20"),
        (datetime(2026, 11, 21, 1, 0, tzinfo=UTC), (), "2026-11-20"),  # the default: yesterday
        (NOW, ("--start", "2026-11-18", "--end", "2026-11-22"), "2026-11-21..2026-11-22 (2 days)"),
        (NOW, ("--day", "2026-11-21", "--dry-run"), "2026-11-21"),
    ],
)
def test_the_cli_refuses_a_request_reaching_a_day_that_is_not_complete_before_any_work(
    now: datetime,
    argv: tuple[str, ...],
    refused: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = Harness()
    h.clock.current = now
    assert run_cli(h, monkeypatch, *argv) == 2
    error = capsys.readouterr().err
    assert f"error: {refused} not complete yet" in error and "02:00 UTC" in error
    assert h.api.requests == [] and h.warehouse.calls == [], "not even the complete days of a range"


def test_the_cli_syncs_a_complete_day(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    assert run_cli(h, monkeypatch) == 0  # at NOW, 03:00 on the 21st: yesterday is complete
    assert [(row["export_day"], row["status"]) for row in h.warehouse.ledger()] == [
        (DAY.isoformat(), "succeeded")
    ]


def test_the_cli_reports_each_day_and_goes_on_after_a_failed_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = DAY - timedelta(days=2)
    broken = datetime(2026, 11, 19, tzinfo=UTC)
    h = Harness(FakeExportApi(SPEC, truncated_windows=[(broken, broken + timedelta(hours=23))]))
    argv = ("--start", first.isoformat(), "--end", DAY.isoformat())
    assert run_cli(h, monkeypatch, *argv) == 1
    err = capsys.readouterr().err
    assert "[1/3] 2026-11-18" in err and "[3/3] 2026-11-20" in err
    assert "FAILED: 2026-11-19: CorruptExport: " in err
    assert "2 of 3 day(s) done" in err
    assert [(row["export_day"], row["status"]) for row in h.warehouse.ledger()] == [
        ("2026-11-18", "succeeded"),
        ("2026-11-19", "failed"),
        ("2026-11-20", "succeeded"),
    ]


def test_a_request_stops_at_a_failed_day_so_a_redelivery_retries_it() -> None:
    broken = datetime(2026, 11, 19, tzinfo=UTC)
    h = Harness(FakeExportApi(SPEC, truncated_windows=[(broken, broken + timedelta(hours=23))]))
    request = SyncRequest(days_between(DAY - timedelta(days=2), DAY))
    with pytest.raises(SyncFailed, match="2026-11-19: CorruptExport"):
        h.sync.sync_request(request)
    assert [row["status"] for row in h.warehouse.ledger()] == ["succeeded", "failed"], "the 20th waits"

    h.api.truncated_windows.clear()  # the redelivery: the synced day is skipped, the others run
    results = h.sync.sync_request(request)
    assert [(r.day.isoformat(), r.status) for r in results] == [
        ("2026-11-18", "skipped"),
        ("2026-11-19", "succeeded"),
        ("2026-11-20", "succeeded"),
    ]


FUNCTION_SOURCE = str(REPO_ROOT / "functions" / "sync_amplitude" / "main.py")


@pytest.fixture
def function(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Harness]]:
    """sync_amplitude as functions-framework serves it (a cold start of its own), on a Harness."""
    h = Harness()
    wire(h, monkeypatch)
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends the function's folder
    monkeypatch.delitem(sys.modules, "main", raising=False)  # ... and registers the module as 'main'
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    clear_settings_cache()
    app = functions_framework.create_app(
        target="sync_amplitude", source=FUNCTION_SOURCE, signature_type="cloudevent"
    )
    yield app.test_client(), h
    clear_settings_cache()
    root.handlers, root.level = handlers, level  # cold_start() installed its JSON handler


def deliver(client: Any, document: dict[str, Any]) -> int:
    """A daily-runs message as Eventarc pushes it (binary-mode CloudEvent); the HTTP status."""
    data = {"message": {"data": base64.b64encode(orjson.dumps(document)).decode(), "messageId": "1"}}
    headers = {
        "ce-id": "1",
        "ce-source": "//pubsub.googleapis.com/projects/jupiter-test/topics/daily-runs",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
    }
    return int(client.post("/", json=data, headers=headers).status_code)


@pytest.mark.parametrize(
    ("now", "document"),
    [
        (datetime(2026, 11, 21, 1, 30, tzinfo=UTC), {}),  # the scheduler's {} before 02:00
        (NOW, {"day": "2026-11-21", "force": True}),  # today
        (NOW, {"start": "2026-11-19", "end": "2026-11-22"}),  # a backfill reaching today
    ],
)
def test_the_function_acknowledges_a_request_reaching_an_incomplete_day_and_logs_it_for_the_alert(
    function: tuple[Any, Harness],
    now: datetime,
    document: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, h = function
    h.clock.current = now
    assert deliver(client, document) == 200, "acknowledged: a redelivery could not make it complete"
    assert h.api.requests == [] and h.warehouse.calls == [], "no day of the request was synced"
    (error,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert error.getMessage() == "Amplitude sync failed", "the message the alert's log metric counts"
    fields = error.fields  # type: ignore[attr-defined]
    assert fields["reason"] == "day not complete" and "not complete yet" in fields["error"]


def test_the_function_syncs_yesterday_at_the_scheduled_hour(function: tuple[Any, Harness]) -> None:
    client, h = function
    assert deliver(client, {}) == 200  # NOW is 03:00 UTC on the 21st
    assert [(row["export_day"], row["status"]) for row in h.warehouse.ledger()] == [
        (DAY.isoformat(), "succeeded")
    ]
