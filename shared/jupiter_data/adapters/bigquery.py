"""BigQuery implementation of the ``Warehouse`` port."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from jupiter_data.ports import Row, TransientError

# Within an invocation, retry briefly and then let Pub/Sub redeliver with its backoff, rather than
# hold the request for the client's ten-minute default.
RETRY = bigquery.DEFAULT_RETRY.with_timeout(20.0)
REQUEST_TIMEOUT = 10.0
_TRANSIENT = (
    gexc.ServerError,
    gexc.TooManyRequests,
    gexc.DeadlineExceeded,
    gexc.RetryError,
    requests.ConnectionError,
    requests.Timeout,
)


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    # Quota and rate limits come as 403 with these reasons.
    return isinstance(exc, gexc.Forbidden) and any(
        error.get("reason") in ("quotaExceeded", "rateLimitExceeded") for error in exc.errors or []
    )


def _parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    """A typed query parameter; values never become SQL text."""
    if isinstance(value, list | tuple):
        item_type = _scalar_type(value[0]) if value else "STRING"
        return bigquery.ArrayQueryParameter(name, item_type, list(value))
    return bigquery.ScalarQueryParameter(name, _scalar_type(value), value)


def _scalar_type(value: Any) -> str:
    # bool before int: bool is a subclass of int.
    for python_type, bq_type in (
        (bool, "BOOL"),
        (int, "INT64"),
        (float, "FLOAT64"),
        (dt.datetime, "TIMESTAMP"),
        (dt.date, "DATE"),
        (str, "STRING"),
    ):
        if isinstance(value, python_type):
            return bq_type
    raise TypeError(f"no BigQuery parameter type for {type(value).__name__}")


class BigQueryWarehouse:
    def __init__(self, client: bigquery.Client) -> None:
        self._client = client

    def _table_id(self, table: str) -> str:
        return f"{self._client.project}.{table}"

    def insert_rows(self, table: str, rows: Sequence[Row], row_ids: Sequence[str]) -> None:
        if len(rows) != len(row_ids):
            raise ValueError("rows and row_ids differ in length")
        if not rows:
            return
        try:
            errors = self._client.insert_rows_json(
                self._table_id(table), list(rows), row_ids=list(row_ids), retry=RETRY, timeout=REQUEST_TIMEOUT
            )
        except Exception as exc:
            if _is_transient(exc):
                raise TransientError(f"streaming insert into {table} failed: {exc}") from exc
            raise ValueError(f"streaming insert into {table} refused: {exc}") from exc
        if errors:
            raise ValueError(f"{len(errors)} row(s) rejected by {table}: {errors[:3]}")

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        config = bigquery.QueryJobConfig(
            query_parameters=[_parameter(name, value) for name, value in (params or {}).items()]
        )
        try:
            rows = self._client.query(sql, job_config=config, retry=RETRY, timeout=REQUEST_TIMEOUT).result(
                retry=RETRY, timeout=REQUEST_TIMEOUT * 6
            )
        except Exception as exc:
            if _is_transient(exc):
                raise TransientError(f"query failed: {exc}") from exc
            raise
        for row in rows:
            yield dict(row.items())

    def load_ndjson(self, uris: list[str], table: str, schema: list[dict[str, Any]]) -> int:
        """A load job from gzip NDJSON objects in GCS, replacing ``table``; returns rows loaded."""
        config = bigquery.LoadJobConfig(
            schema=[bigquery.SchemaField.from_api_repr(field) for field in schema],
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        )
        job = self._client.load_table_from_uri(uris, self._table_id(table), job_config=config)
        job.result(timeout=540)
        return int(job.output_rows or 0)

    def execute(self, sql: str) -> None:
        """A statement or script whose identifiers are code constants and which takes no values."""
        self._client.query(sql).result(timeout=540)

    def drop_table(self, table: str) -> None:
        self._client.delete_table(self._table_id(table), not_found_ok=True)
