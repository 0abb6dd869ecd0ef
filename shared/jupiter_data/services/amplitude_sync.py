"""Sync one day of Amplitude: Export API → raw zip in GCS → staged gzip NDJSON in GCS → BigQuery.

Idempotent and atomic per day. Both tables are partitioned by ``export_day``, the day of the export
window (Amplitude selects by upload time), so a run owns exactly its day's partitions: the staged files
are loaded into run-private staging tables, then one transaction deletes the day from
``amplitude.events`` and ``amplitude.events_properties`` and inserts the staged rows. Readers see the
old day or the new day, never half of one, and a re-run replaces exactly what an earlier run wrote, in
both tables, even when the new export has no rows for one of them (or none at all). A day is synced
only once it is complete (02:00 UTC the next day, by the injected clock): earlier, Amplitude holds part
of it, and a partial day recorded as ``succeeded`` would be skipped ever after. A
late event (happened yesterday, uploaded today) is in today's export only, so it is loaded once, under
today's ``export_day``. Memory stays flat: downloads stream to temporary files, the transform streams
member by member.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from jupiter_data.adapters.amplitude_api import Download, ExportTooLarge
from jupiter_data.amplitude_transform import transform_export
from jupiter_data.domain import amplitude
from jupiter_data.domain.amplitude_request import refuse_incomplete
from jupiter_data.ports import Clock, ObjectStore, Warehouse
from jupiter_data.resources import load_resources

log = logging.getLogger(__name__)

LEDGER_TABLE = "ops.sync_runs"


class ExportApi(Protocol):
    def download(
        self, start: datetime, end: datetime, dest: Any, max_bytes: int | None = None
    ) -> Download: ...


class BulkWarehouse(Warehouse, Protocol):
    def load_ndjson(self, uris: list[str], table: str, schema: list[dict[str, Any]]) -> int: ...
    def execute(self, sql: str) -> None: ...
    def drop_table(self, table: str) -> None: ...


class SyncFailed(Exception):
    pass


@dataclass
class DayResult:
    day: date
    status: str  # succeeded, skipped, failed, dry_run
    windows: list[tuple[datetime, datetime]] = field(default_factory=list)
    events: int = 0
    property_rows: int = 0
    bad_lines: int = 0
    bytes_downloaded: int = 0
    error: str | None = None


@dataclass(frozen=True)
class SyncConfig:
    raw_bucket: str
    staged_bucket: str
    max_bad_fraction: float = amplitude.DEFAULT_MAX_BAD_FRACTION
    max_window_bytes: int | None = None  # None: take each window whole
    workers: int | None = 1  # transform processes; None: one per CPU for large windows


def window_label(window: tuple[datetime, datetime]) -> str:
    """``20261120T00-20261120T11``: names the window in object paths and logs."""
    return f"{window[0]:%Y%m%dT%H}-{window[1]:%Y%m%dT%H}"


def split(start: datetime, end: datetime) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """Halves of an inclusive hour window of at least two hours."""
    hours = int((end - start) / timedelta(hours=1)) + 1
    if hours < 2:
        raise ValueError(f"a window of {hours} hour(s) cannot be split")
    middle = start + timedelta(hours=hours // 2 - 1)
    return (start, middle), (middle + timedelta(hours=1), end)


class AmplitudeSync:
    def __init__(
        self,
        config: SyncConfig,
        api: ExportApi,
        store: ObjectStore,
        warehouse: BulkWarehouse,
        clock: Clock,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self._config, self._api, self._store, self._warehouse = config, api, store, warehouse
        self.clock = clock  # public: callers decide "yesterday" and completeness by the same clock
        self._progress = progress or (lambda what, amount: None)

    def already_synced(self, day: date) -> bool:
        sql = f"SELECT COUNT(*) AS n FROM `{LEDGER_TABLE}` WHERE export_day = @day AND status = 'succeeded'"  # noqa: S608
        (row,) = self._warehouse.query(sql, {"day": day})
        return int(row["n"]) > 0

    def sync_day(self, day: date, force: bool = False, dry_run: bool = False) -> DayResult:
        """Raises ``DayNotComplete`` (before any work, whatever ``force``) for a day not complete yet."""
        refuse_incomplete([day], self.clock.now())
        if not force and self.already_synced(day):
            log.info("day already synced; skipping", extra={"fields": {"export_day": day.isoformat()}})
            return DayResult(day, "skipped")
        started, run_id = self.clock.now(), uuid.uuid4().hex[:12]
        result = DayResult(day, "dry_run" if dry_run else "running")
        try:
            with tempfile.TemporaryDirectory(prefix="amplitude-") as tmp:
                self._run(day, run_id, Path(tmp), result, dry_run)
            if not dry_run:
                result.status = "succeeded"
        except Exception as exc:
            result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error(
                "Amplitude sync failed",
                extra={"fields": {"export_day": day.isoformat(), "error": result.error}},
            )
            raise SyncFailed(f"{day}: {result.error}") from exc
        finally:
            if not dry_run:
                self._record(run_id, result, started)
        return result

    def _run(self, day: date, run_id: str, tmp: Path, result: DayResult, dry_run: bool) -> None:
        """Window by window: keep the raw zip, transform it, stage the outputs, free /tmp; then load."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        uris: dict[str, list[str]] = {"events": [], "properties": []}
        for window, zip_path, download in self._download(start, start + timedelta(hours=23), tmp):
            result.windows.append(window)
            result.bytes_downloaded += download.size
            label = window_label(window)
            if not dry_run:
                with zip_path.open("rb") as raw:
                    self._store.upload(
                        self._config.raw_bucket, f"raw/{day}/{label}.zip", raw, "application/zip",
                        {"window": label, "sha256": download.sha256, "size": str(download.size),
                         "fetched_at": self.clock.now().isoformat()},
                    )  # fmt: skip
            outputs = {name: tmp / f"{label}-{name}.json.gz" for name in ("events", "properties", "bad")}
            with (
                outputs["events"].open("wb") as ev,
                outputs["properties"].open("wb") as pr,
                outputs["bad"].open("wb") as bad,
            ):
                # The malformed-line limit is the day's (checked below), whatever the window split.
                stats = transform_export(
                    zip_path, ev, pr, bad, day, max_bad_fraction=1.0, workers=self._config.workers
                )
            result.events += stats.events
            result.property_rows += stats.property_rows
            result.bad_lines += stats.bad_lines
            self._progress("events", stats.events)
            log.info(
                "Amplitude window transformed",
                extra={"fields": {"export_day": day.isoformat(), "window": label, **stats.to_dict()}},
            )
            if not dry_run:
                # Staged now, under this run's own prefix: nothing is loaded unless the whole day passes.
                prefix = f"staged/{day}/{run_id}/{label}"
                if stats.bad_lines:  # kept for diagnosis even if the day fails below
                    self._stage(f"{prefix}/bad_lines.json.gz", outputs["bad"])
                for name in uris:
                    uris[name].append(self._stage(f"{prefix}/{name}.json.gz", outputs[name]))
            for path in (zip_path, *outputs.values()):
                path.unlink()
        lines = result.events + result.bad_lines
        if lines and result.bad_lines > self._config.max_bad_fraction * lines:
            raise SyncFailed(
                f"{result.bad_lines} of {lines} lines are malformed, over AMPLITUDE_MAX_BAD_LINES="
                f"{self._config.max_bad_fraction}; see staged/{day}/{run_id}/*/bad_lines.json.gz"
            )
        if not dry_run:
            self._load(day, run_id, uris, result)

    def _stage(self, name: str, path: Path) -> str:
        with path.open("rb") as handle:
            self._store.upload(self._config.staged_bucket, name, handle, "application/gzip")
        return f"gs://{self._config.staged_bucket}/{name}"

    def _download(
        self, start: datetime, end: datetime, tmp: Path
    ) -> Iterator[tuple[tuple[datetime, datetime], Path, Download]]:
        """Each window with data, splitting on 400/504 or past max_window_bytes, down to single hours."""
        pending = [(start, end)]
        while pending:
            window = pending.pop(0)
            single_hour = window[0] == window[1]
            path = tmp / f"export-{window[0]:%Y%m%dT%H}.zip"
            try:
                with path.open("w+b") as dest:
                    # A single hour is taken whatever its size: it cannot be split.
                    cap = None if single_hour else self._config.max_window_bytes
                    download = self._api.download(window[0], window[1], dest, max_bytes=cap)
            except ExportTooLarge as exc:
                if single_hour:
                    raise SyncFailed(
                        f"the export of the single hour {window[0]:%Y-%m-%d %H}:00 failed: {exc}"
                    ) from exc
                log.warning(
                    "export window too large; splitting",
                    extra={
                        "fields": {
                            "window": window_label(window),
                            "reason": str(exc),
                        }
                    },
                )
                pending[:0] = list(split(*window))
                continue
            self._progress("bytes", download.size)
            if download.has_data:
                yield window, path, download
            else:
                path.unlink()

    def _load(self, day: date, run_id: str, staged: dict[str, list[str]], result: DayResult) -> None:
        resources = load_resources()
        tables = {"events": amplitude.EVENTS_TABLE, "properties": amplitude.PROPERTIES_TABLE}
        staging = {name: f"amplitude._staging_{name}_{run_id}" for name in tables}
        try:
            loaded = {
                name: self._warehouse.load_ndjson(uris, staging[name], resources.table(tables[name]).schema)
                for name, uris in staged.items()
                if uris
            }
            expected = {"events": result.events, "properties": result.property_rows}
            if any(loaded.get(name, 0) != count for name, count in expected.items()):
                raise SyncFailed(
                    f"reconciliation failed for {day}: transformed {result.events} events and "
                    f"{result.property_rows} property rows, load jobs loaded {loaded}; nothing published"
                )
            # One transaction: readers see the old day or the new one, never a mix. The run owns its day
            # in both tables whatever it staged (a table without rows this time loses its old ones too),
            # and writes nothing outside it. Table names are code constants and run ids; the day is a
            # DATE literal formatted from a date (digits and dashes only), as the emulator takes no
            # parameters in a script.
            day_is = f"export_day = DATE '{day:%Y-%m-%d}'"
            statements = []
            for name, table in tables.items():
                statements.append(f"DELETE FROM `{table}` WHERE {day_is};")  # noqa: S608 - see above
                if name in loaded:
                    statements.append(
                        f"INSERT INTO `{table}` SELECT * FROM `{staging[name]}` WHERE {day_is};"  # noqa: S608
                    )
            self._warehouse.execute("BEGIN TRANSACTION;\n" + "\n".join(statements) + "\nCOMMIT TRANSACTION;")
        finally:
            for table in staging.values():
                self._warehouse.drop_table(table)
        counts = {
            name: int(next(iter(self._warehouse.query(
                f"SELECT COUNT(*) AS n FROM `{table}` WHERE export_day = @day", {"day": day}  # noqa: S608
            )))["n"])
            for name, table in tables.items()
        }  # fmt: skip
        if counts != {"events": result.events, "properties": result.property_rows}:
            raise SyncFailed(
                f"reconciliation failed for {day}: transformed {result.events} events and "
                f"{result.property_rows} property rows, tables hold {counts}"
            )

    def _record(self, run_id: str, result: DayResult, started: datetime) -> None:
        finished = self.clock.now()
        row = {
            "run_id": run_id,
            "source": "amplitude",
            "export_day": result.day.isoformat(),
            "status": result.status,
            "windows": len(result.windows),
            "events_rows": result.events,
            "properties_rows": result.property_rows,
            "bytes_downloaded": result.bytes_downloaded,
            "malformed_lines": result.bad_lines,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "duration_seconds": (finished - started).total_seconds(),
            "error": result.error,
        }
        try:
            self._warehouse.insert_rows(LEDGER_TABLE, [row], [run_id])
        except Exception:  # the ledger must not hide the run's own outcome
            log.exception("could not record the sync run", extra={"fields": {"run_id": run_id}})
