"""The small interfaces the core needs from the outside world.

Services take these as arguments; ``adapters/`` implements them on the Google client libraries and the
tests implement them with in-memory fakes. Nothing here imports google.cloud.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, Protocol

Row = Mapping[str, Any]


class TransientError(Exception):
    """A failure worth retrying (5xx, timeout, quota): the caller should let the trigger redeliver."""


class PermanentError(Exception):
    """A failure that will not go away on retry (a 4xx from a remote, an oversized response)."""


class PreconditionFailed(Exception):
    """A conditional write lost a race (e.g. the object already exists at another generation)."""


class Warehouse(Protocol):
    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        """Stream rows into ``dataset.table``; ``row_ids`` are the best-effort dedup keys.

        Raises ``TransientError`` when the insert may succeed on retry and ``ValueError`` naming the
        rejected rows when it never will.
        """

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Run a parameterised query (``@name`` placeholders) and yield rows as dicts."""


class QueryTimeout(Exception):
    """A query ran past its time limit (and was cancelled)."""


class QueryTooExpensive(Exception):
    """BigQuery refused to run a query over its ``maximum_bytes_billed``: nothing was billed."""


class QueryRunner(Protocol):
    """The data API's read path: catalogue SQL only, with cost controls."""

    def estimate_bytes(self, sql: str, params: Mapping[str, Any]) -> int:
        """A dry run: the bytes the query would process (and so bill)."""

    def rows(
        self,
        sql: str,
        params: Mapping[str, Any],
        *,
        labels: Mapping[str, str],
        timeout_s: float,
        max_bytes_billed: int,
    ) -> Iterator[dict[str, Any]]:
        """Run the query and stream its rows; ``QueryTimeout`` past ``timeout_s``, ``QueryTooExpensive``
        when it would bill more than ``max_bytes_billed``."""


class ObjectStore(Protocol):
    def upload(
        self,
        bucket: str,
        name: str,
        data: bytes | BinaryIO,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> int:
        """Write an object and return its generation. ``if_generation_match=0`` means create-only
        and raises ``PreconditionFailed`` if the object exists."""

    def open_read(self, bucket: str, name: str) -> BinaryIO:
        """Open an object for streaming reads; raises ``FileNotFoundError`` if it is absent."""

    def list_names(self, bucket: str, prefix: str = "") -> Iterable[str]: ...


class ExportTooLarge(Exception):
    """The Export API cannot serve this window whole (400: over 4 GB; 504: timed out; or past the
    caller's byte cap): ask again for a smaller window."""


@dataclass(frozen=True)
class Download:
    """One window's export, written to the caller's file; ``has_data`` is False when Amplitude has
    nothing for the window (404)."""

    has_data: bool
    size: int
    sha256: str


class ExportApi(Protocol):
    """Amplitude's Export API."""

    def download(
        self, start: datetime, end: datetime, dest: BinaryIO, max_bytes: int | None = None
    ) -> Download:
        """Write the export zip of hours ``start``..``end`` (both inclusive) to ``dest`` (truncated
        first). Raises ``ExportTooLarge`` when the window must be split, also once the zip grows past
        ``max_bytes``."""


class BulkWarehouse(Protocol):
    """The Amplitude sync's warehouse: load jobs, an export day replaced atomically, the run ledger."""

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        """As ``Warehouse.insert_rows`` (the sync streams its ledger rows)."""

    def load_ndjson(self, uris: list[str], table: str, schema: list[dict[str, Any]]) -> int:
        """Load gzip NDJSON objects (``gs://`` URIs) into ``table``, created or replaced with
        ``schema``; returns the rows loaded."""

    def replace_day(self, day: date, sources: Mapping[str, str | None]) -> None:
        """One transaction: for each target table of ``sources``, delete its rows whose ``export_day``
        is ``day`` and copy in the rows of ``day`` from its source table (None: copy nothing). Readers
        see the old day in every target or the new day in every target, never a mix."""

    def count_rows(self, table: str, where: Mapping[str, Any]) -> int:
        """The rows of ``table`` whose columns equal the values of ``where``."""

    def drop_table(self, table: str) -> None:
        """Drop ``table``; a missing one is no error."""


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish and block until the bus acknowledged it; returns the message id."""


class SnsGateway(Protocol):
    """The two calls the bridge makes to SNS hosts (or, locally, to moto)."""

    def fetch_certificate(self, url: str) -> bytes:
        """The PEM at ``url`` (already validated as an SNS certificate URL), fetched each call: the bridge
        keeps only parsed, valid certificates."""

    def confirm_subscription(self, url: str) -> None:
        """GET the (validated) SubscribeURL of a SubscriptionConfirmation."""


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)
