"""In-memory implementations of the ports, for unit tests of the core.

They keep the behaviour the core relies on (create-only preconditions, row ids, missing objects), and
the contract tests in tests/integration run the same assertions against them and the real adapters.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from jupiter_data.ports import PreconditionFailed, Row


class FakeWarehouse:
    def __init__(self) -> None:
        self.tables: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if len(rows) != len(row_ids):
            raise ValueError("rows and row_ids differ in length")
        self.tables[table].extend((row_id, dict(row)) for row_id, row in zip(row_ids, rows, strict=True))

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
