"""In-memory implementations of the ports, for unit tests of the core.

They keep the behaviour the core relies on (create-only preconditions, row ids, missing objects), and
the contract tests in tests/integration run the same assertions against them and the real adapters.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import zipfile
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from jupiter_data.local.amplitude_data import ExportSpec, hours_between
from jupiter_data.ports import Download, ExportTooLarge, ObjectStore, PreconditionFailed, Row


class FakeWarehouse:
    """Streaming inserts in memory, thread-safe as the client is (the loader's batcher calls it from
    concurrent requests), recording every call as (table, row ids).

    Scripted for the failure paths: ``fail_next(table, *errors)`` makes that table's next calls raise
    those errors in turn (``None`` lets a call through); a call holding a row ``reject`` matches raises
    ``ValueError`` naming the rows and inserts none, as BigQuery's insertAll without skipInvalidRows.
    """

    def __init__(self, reject: Callable[[Row], bool] = lambda row: False) -> None:
        self._lock = threading.Lock()
        self._reject = reject
        self._failures: dict[str, deque[BaseException | None]] = defaultdict(deque)
        self.tables: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        self.calls: list[tuple[str, list[str]]] = []

    def fail_next(self, table: str, *errors: BaseException | None) -> None:
        with self._lock:
            self._failures[table].extend(errors)

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if len(rows) != len(row_ids):
            raise ValueError("rows and row_ids differ in length")
        with self._lock:
            self.calls.append((table, list(row_ids)))
            pending = self._failures[table]
            failure = pending.popleft() if pending else None
        if failure is not None:
            raise failure
        if rejected := [row_id for row_id, row in zip(row_ids, rows, strict=True) if self._reject(row)]:
            raise ValueError(f"{len(rejected)} row(s) rejected by {table}: {rejected[:3]}")
        with self._lock:
            self.tables[table].extend((row_id, dict(row)) for row_id, row in zip(row_ids, rows, strict=True))

    def rows(self, table: str) -> list[dict[str, Any]]:
        with self._lock:
            return [row for _, row in self.tables[table]]

    def row_ids(self, table: str) -> list[str]:
        with self._lock:
            return [row_id for row_id, _ in self.tables[table]]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        raise NotImplementedError("FakeWarehouse does not run SQL; assert on .tables instead")


class FakeObjectStore:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, int, dict[str, str], str]] = {}
        self._generation = 0

    def upload(
        self,
        bucket: str,
        name: str,
        data: bytes | BinaryIO,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> int:
        current = self.objects.get((bucket, name))
        current_generation = current[1] if current else 0
        if if_generation_match is not None and if_generation_match != current_generation:
            raise PreconditionFailed(f"gs://{bucket}/{name} is at generation {current_generation}")
        self._generation += 1
        payload = data if isinstance(data, bytes) else data.read()
        self.objects[(bucket, name)] = (payload, self._generation, dict(metadata or {}), content_type)
        return self._generation

    def open_read(self, bucket: str, name: str) -> BinaryIO:
        if (bucket, name) not in self.objects:
            raise FileNotFoundError(f"gs://{bucket}/{name}")
        return io.BytesIO(self.objects[(bucket, name)][0])

    def list_names(self, bucket: str, prefix: str = "") -> Iterable[str]:
        return sorted(name for (b, name) in self.objects if b == bucket and name.startswith(prefix))


class FakePublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        self.messages.append((topic, data, dict(attributes or {})))
        return str(len(self.messages))


class FakeClock:
    def __init__(self, start: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


class FakeBulkWarehouse:
    """The ``BulkWarehouse`` port in memory: tables as lists of rows, values as NDJSON gives them (a
    DATE is its ISO text). Loads read the gzip NDJSON objects back from ``store``. ``tables``: the
    tables that exist to begin with (provisioned), empty.

    Faults for unit tests: ``drop_rows[table prefix]`` rows a load into a matching table silently
    loses; ``fail_load[table prefix]``, ``fail_replace`` and ``fail_insert`` are raised by those calls.
    ``calls`` records ``(call, table)`` in order; ``replaced`` each committed ``(day, sources)``.
    """

    def __init__(self, store: ObjectStore, tables: Iterable[str] = ()) -> None:
        self.store = store
        self.tables: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        self.calls: list[tuple[str, str]] = []
        self.replaced: list[tuple[date, dict[str, str | None]]] = []
        self.drop_rows: dict[str, int] = {}
        self.fail_load: dict[str, BaseException] = {}
        self.fail_replace: BaseException | None = None
        self.fail_insert: BaseException | None = None

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if len(rows) != len(row_ids):
            raise ValueError("rows and row_ids differ in length")
        self.calls.append(("insert", table))
        if self.fail_insert is not None:
            raise self.fail_insert
        self._table(table).extend(dict(row) for row in rows)

    def load_ndjson(self, uris: list[str], table: str, schema: list[dict[str, Any]]) -> int:
        self.calls.append(("load", table))
        for prefix, error in self.fail_load.items():
            if table.startswith(prefix):
                raise error
        columns = [column["name"] for column in schema]
        rows: list[dict[str, Any]] = []
        for uri in uris:
            bucket, _, name = uri.removeprefix("gs://").partition("/")
            with self.store.open_read(bucket, name) as handle:
                data = gzip.decompress(handle.read())
            for line in data.splitlines():
                row = json.loads(line)
                if unknown := set(row) - set(columns):
                    raise ValueError(f"{uri}: fields not in the schema of {table}: {sorted(unknown)}")
                rows.append({column: row.get(column) for column in columns})
        for prefix, lost in self.drop_rows.items():
            if table.startswith(prefix):
                rows = rows[lost:]
        self.tables[table] = rows  # created or replaced
        return len(rows)

    def replace_day(self, day: date, sources: Mapping[str, str | None]) -> None:
        self.calls.extend(("replace", target) for target in sources)
        for table in (*sources, *filter(None, sources.values())):
            self._table(table)  # a missing table fails the script before it changes anything
        if self.fail_replace is not None:
            raise self.fail_replace  # the transaction rolls back: nothing below happens
        text = day.isoformat()
        replaced = {}
        for target, source in sources.items():
            kept = [row for row in self.tables[target] if row["export_day"] != text]
            copied = [dict(row) for row in self.tables[source] if row["export_day"] == text] if source else []
            replaced[target] = kept + copied
        self.tables.update(replaced)  # all or nothing, like COMMIT
        self.replaced.append((day, dict(sources)))

    def count_rows(self, table: str, where: Mapping[str, Any]) -> int:
        wanted = {column: _as_json(value) for column, value in where.items()}
        return sum(all(row.get(c) == v for c, v in wanted.items()) for row in self._table(table))

    def drop_table(self, table: str) -> None:
        self.calls.append(("drop", table))
        self.tables.pop(table, None)

    def _table(self, table: str) -> list[dict[str, Any]]:
        if table not in self.tables:
            raise LookupError(f"no table {table}")
        return self.tables[table]


def _as_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


class FakeExportApi:
    """The ``ExportApi`` port on generated data: ``download`` writes the export zip of the window that
    ``ExportSpec`` writes (the local Export API serves the same bytes), or answers as scripted:

    * ``max_window_hours``: a longer window raises ``ExportTooLarge`` (the API's 400/504);
    * ``errors``: raised by the next calls, one each (auth errors, transient failures...);
    * ``too_large_hours``: a window holding one of these hours always raises ``ExportTooLarge``;
    * ``truncated_windows``: the zip of these windows is cut in half (a broken download);
    * ``specs_by_hour``: hours whose lines come from another spec (the default is ``spec``).

    A window whose hours hold no lines answers like a 404. ``requests``, ``caps`` and ``served``
    record each call; ``files_in_tmp`` what the folder of ``dest`` held at each call. Each call
    advances ``clock`` (if any) by a second, so durations are not zero.
    """

    def __init__(
        self,
        spec: ExportSpec,
        clock: FakeClock | None = None,
        *,
        max_window_hours: int = 24,
        too_large_hours: Sequence[datetime] = (),
        errors: Sequence[BaseException] = (),
        truncated_windows: Sequence[tuple[datetime, datetime]] = (),
        specs_by_hour: Mapping[datetime, ExportSpec] | None = None,
    ) -> None:
        self.spec, self.clock = spec, clock
        self.max_window_hours = max_window_hours
        self.too_large_hours = frozenset(too_large_hours)
        self.errors = deque(errors)
        self.truncated_windows = set(truncated_windows)
        self.specs_by_hour = dict(specs_by_hour or {})
        self.requests: list[tuple[datetime, datetime]] = []
        self.caps: list[int | None] = []
        self.files_in_tmp: list[list[str]] = []
        self.served: dict[tuple[datetime, datetime], bytes] = {}

    def _spec(self, at: datetime) -> ExportSpec:
        return self.specs_by_hour.get(at, self.spec)

    def expected_events(self, start: datetime, end: datetime) -> int:
        return sum(self._spec(h).expected(h, h).events for h in hours_between(start, end))

    def download(
        self, start: datetime, end: datetime, dest: BinaryIO, max_bytes: int | None = None
    ) -> Download:
        self.requests.append((start, end))
        self.caps.append(max_bytes)
        self.files_in_tmp.append(sorted(p.name for p in Path(str(dest.name)).parent.iterdir()))
        if self.clock is not None:
            self.clock.advance(seconds=1)
        if self.errors:
            raise self.errors.popleft()
        hours = hours_between(start, end)
        if len(hours) > self.max_window_hours or self.too_large_hours.intersection(hours):
            raise ExportTooLarge(f"Amplitude answered 400 for {start:%Y%m%dT%H}..{end:%Y%m%dT%H}")
        if not any(self._spec(h).has_data(h, h) for h in hours):
            return Download(has_data=False, size=0, sha256=hashlib.sha256().hexdigest())
        payload = self.zip(start, end)
        if (start, end) in self.truncated_windows:
            payload = payload[: len(payload) // 2]
        if max_bytes is not None and len(payload) > max_bytes:
            raise ExportTooLarge(f"the export grew past {max_bytes:,} bytes")
        self.served[(start, end)] = payload
        dest.seek(0)
        dest.truncate()
        dest.write(payload)
        dest.flush()
        return Download(has_data=True, size=len(payload), sha256=hashlib.sha256(payload).hexdigest())

    def zip(self, start: datetime, end: datetime) -> bytes:
        """The export zip of ``start``..``end``, as served."""
        buffer = io.BytesIO()
        hours = hours_between(start, end)
        if not any(h in self.specs_by_hour for h in hours):
            self.spec.write_zip(buffer, start, end)
            return buffer.getvalue()
        # Hours from different specs: each hour's own export zip, its members copied in order.
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as out:
            for at in hours:
                part = io.BytesIO()
                self._spec(at).write_zip(part, at, at)
                with zipfile.ZipFile(part) as source:
                    for info in source.infolist():
                        out.writestr(info, source.read(info))
        return buffer.getvalue()
