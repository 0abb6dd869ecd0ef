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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jupiter_data.amplitude_transform import transform_export
from jupiter_data.domain.amplitude import DEFAULT_MAX_BAD_FRACTION, EVENTS_TABLE, PROPERTIES_TABLE
from jupiter_data.domain.amplitude_request import SyncRequest, refuse_incomplete
from jupiter_data.ports import (
    BulkWarehouse,
    Clock,
    Download,
    ExportApi,
    ExportTooLarge,
    ObjectStore,
    SystemClock,
)
from jupiter_data.resources import load_resources
from jupiter_data.settings import FromEnv, Settings, base_url, fraction, int_between, load_settings, setting

log = logging.getLogger(__name__)

LEDGER_TABLE = "ops.sync_runs"


@dataclass(frozen=True)
class AmplitudeSettings(FromEnv):
    """What ``sync_amplitude`` reads on top of ``Settings``. The keys come from Secret Manager."""

    api_base_url: str = setting(
        "AMPLITUDE_API_BASE_URL",
        base_url,
        default="https://amplitude.com",
        doc="EU projects `https://analytics.eu.amplitude.com`; plain http only with `JUPITER_ENV=local`",
    )
    api_key: str = setting("AMPLITUDE_API_KEY", str, secret=True, doc="never in argv, logs or `repr`")
    secret_key: str = setting("AMPLITUDE_SECRET_KEY", str, secret=True, doc="never in argv, logs or `repr`")
    max_bad_fraction: float = setting(
        "AMPLITUDE_MAX_BAD_LINES",
        fraction,
        default="0.001",
        doc="fraction of malformed lines past which the day fails before anything is loaded",
    )
    # A window whose zip grows past this is fetched again as two halves, so /tmp (memory on Cloud
    # Functions) holds at most about 3.5x this at a time (the zip and its staged outputs).
    max_window_bytes: int = setting(
        "AMPLITUDE_MAX_WINDOW_BYTES",
        int_between(1 << 20, 4 << 30),
        default=str(256 << 20),
        doc="a window whose zip grows past it is fetched again as two halves (below)",
    )

    @classmethod
    def check(cls, values: Mapping[str, Any], environment: Callable[[], str]) -> dict[str, str]:
        if values["api_base_url"].startswith("http://") and environment() != "local":
            return {"AMPLITUDE_API_BASE_URL": f"{values['api_base_url']!r} must be an https base URL"}
        return {}


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


class SyncFailed(Exception):
    """A day failed; ``result`` is that day's (status failed, and why) once the failure ended the day."""

    def __init__(self, message: str, result: DayResult | None = None) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class SyncConfig:
    raw_bucket: str
    staged_bucket: str
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION
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

    def sync_request(
        self,
        request: SyncRequest,
        *,
        dry_run: bool = False,
        keep_going: bool = False,
        starting: Callable[[int, date], None] | None = None,
        finished: Callable[[DayResult], None] | None = None,
    ) -> list[DayResult]:
        """Sync the requested days in order, as ``sync_day`` does each.

        A request reaching a day that is not complete is refused whole, before any work
        (``DayNotComplete``). A failed day raises ``SyncFailed``; with ``keep_going`` the next days
        still run and the failed one is in the results. ``starting(number, day)`` (from 1) and
        ``finished(result)`` are called around each day.
        """
        refuse_incomplete(request.days, self.clock.now())
        results = []
        for number, day in enumerate(request.days, 1):
            if starting is not None:
                starting(number, day)
            try:
                result = self.sync_day(day, force=request.force, dry_run=dry_run)
            except SyncFailed as exc:
                if not keep_going or exc.result is None:
                    raise
                result = exc.result
            results.append(result)
            if finished is not None:
                finished(result)
        return results

    def already_synced(self, day: date) -> bool:
        return self._warehouse.count_rows(LEDGER_TABLE, {"export_day": day, "status": "succeeded"}) > 0

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
            raise SyncFailed(f"{day}: {result.error}", result) from exc
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
        tables = {"events": EVENTS_TABLE, "properties": PROPERTIES_TABLE}
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
            # in both tables whatever it staged (a table without rows this time loses its old ones too).
            self._warehouse.replace_day(
                day, {table: staging[name] if name in loaded else None for name, table in tables.items()}
            )
        finally:
            for table in staging.values():
                self._warehouse.drop_table(table)
        counts = {
            name: self._warehouse.count_rows(table, {"export_day": day}) for name, table in tables.items()
        }
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


def bootstrap(
    settings: Settings | None = None,
    *,
    export_api: ExportApi | None = None,
    store: ObjectStore | None = None,
    warehouse: BulkWarehouse | None = None,
    clock: Clock | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> AmplitudeSync:
    """The sync on the real adapters, but for those given. They are imported here, so a process that
    imports this module loads no Google client until it builds one."""
    settings = settings or load_settings(Settings)
    amplitude = load_settings(AmplitudeSettings)
    if export_api is None:
        from jupiter_data.adapters.amplitude_api import AmplitudeExportClient

        export_api = AmplitudeExportClient(amplitude.api_base_url, amplitude.api_key, amplitude.secret_key)
    if store is None:
        from jupiter_data.adapters.clients import storage_client
        from jupiter_data.adapters.gcs import GcsObjectStore

        store = GcsObjectStore(storage_client(settings))
    if warehouse is None:
        from jupiter_data.adapters.bigquery import BigQueryWarehouse
        from jupiter_data.adapters.clients import bigquery_client

        warehouse = BigQueryWarehouse(bigquery_client(settings))
    resources = load_resources()
    config = SyncConfig(
        raw_bucket=resources.bucket_name(settings.project, "amplitude-raw"),
        staged_bucket=resources.bucket_name(settings.project, "amplitude-staged"),
        max_bad_fraction=amplitude.max_bad_fraction,
        max_window_bytes=amplitude.max_window_bytes,
        workers=None,  # a process per CPU for large windows: the same rows, in member-finishing order
    )
    return AmplitudeSync(config, export_api, store, warehouse, clock or SystemClock(), progress=progress)
