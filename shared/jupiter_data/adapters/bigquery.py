"""BigQuery implementations of the ``Warehouse``, ``BulkWarehouse`` and ``QueryRunner`` ports."""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import bigquery

from jupiter_data.ports import QueryTimeout, QueryTooExpensive, Row, TransientError

log = logging.getLogger(__name__)

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


def _is_configuration_error(exc: Exception) -> bool:
    """Credentials, a missing grant (401/403) or dataset/table (404): the deployment's fault, not the
    rows'."""
    return isinstance(
        exc, gexc.Unauthorized | gexc.Forbidden | gexc.NotFound | auth_exceptions.GoogleAuthError
    )


def query_parameters(
    params: Mapping[str, Any] | None,
) -> list[bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter]:
    """``@name`` parameters for a query job; values never become SQL text."""
    return [_parameter(name, value) for name, value in (params or {}).items()]


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


_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _table_name(name: str) -> str:
    """``dataset.table``, refused unless it is plainly one (names are code constants, never input)."""
    if _TABLE_NAME.fullmatch(name) is None:
        raise ValueError(f"not a dataset.table name: {name!r}")
    return name


def _column_name(name: str) -> str:
    if _COLUMN_NAME.fullmatch(name) is None:
        raise ValueError(f"not a column name: {name!r}")
    return name


class BigQueryWarehouse:
    """The ``Warehouse`` port (streaming inserts, parameterised queries) and the ``BulkWarehouse`` port
    (load jobs, an export day replaced in one transaction) on BigQuery."""

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
            if _is_configuration_error(exc):
                # Retried like an outage (the rows are fine: dead-lettering them as bad data would be
                # wrong) and logged at ERROR, which the function-errors alert counts, until it is fixed.
                status = getattr(exc, "code", None)
                log.error(
                    "BigQuery refused the insert into %s with %s: permission or table missing; "
                    "Pub/Sub redelivers until it is fixed",
                    table,
                    status,
                    extra={
                        "fields": {"table": table, "http_status": status, "error_type": "bigquery_config"}
                    },
                )
                raise TransientError(f"streaming insert into {table} failed: {str(exc)[:1000]}") from exc
            raise ValueError(f"streaming insert into {table} refused: {exc}") from exc
        if errors:
            raise ValueError(f"{len(errors)} row(s) rejected by {table}: {errors[:3]}")

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        config = bigquery.QueryJobConfig(query_parameters=query_parameters(params))
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

    def replace_day(self, day: dt.date, sources: Mapping[str, str | None]) -> None:
        # One script in one transaction. The emulator takes no query parameters in a script, so the day
        # is a DATE literal formatted from a date (digits and dashes only); table names are checked.
        if not isinstance(day, dt.date):
            raise TypeError(f"day must be a date, got {type(day).__name__}")
        day_is = f"export_day = DATE '{day:%Y-%m-%d}'"
        statements = []
        for target, source in sources.items():
            statements.append(f"DELETE FROM `{_table_name(target)}` WHERE {day_is};")  # noqa: S608
            if source is not None:
                statements.append(
                    f"INSERT INTO `{_table_name(target)}` "  # noqa: S608 - see above
                    f"SELECT * FROM `{_table_name(source)}` WHERE {day_is};"
                )
        script = "BEGIN TRANSACTION;\n" + "\n".join(statements) + "\nCOMMIT TRANSACTION;"
        self._client.query(script).result(timeout=540)

    def count_rows(self, table: str, where: Mapping[str, Any]) -> int:
        condition = " AND ".join(f"{_column_name(column)} = @{column}" for column in where) or "TRUE"
        sql = f"SELECT COUNT(*) AS n FROM `{_table_name(table)}` WHERE {condition}"  # noqa: S608 - names checked
        (row,) = self.query(sql, where)
        return int(row["n"])

    def drop_table(self, table: str) -> None:
        self._client.delete_table(self._table_id(table), not_found_ok=True)


def is_bytes_billed_limit(exc: gexc.GoogleAPICallError) -> bool:
    """BigQuery's refusal of a query over ``maximum_bytes_billed`` (it runs nothing, bills nothing)."""
    return any(error.get("reason") == "bytesBilledLimitExceeded" for error in exc.errors or [])


# Results larger than this come through the BigQuery Storage Read API (Arrow streams over gRPC)
# instead of pages of the REST API.
STORAGE_API_MIN_ROWS = 5_000


class BigQueryQueryRunner:
    """Runs the data API's catalogue queries: dry-run estimates, byte caps, labels and timeouts."""

    def __init__(self, client: bigquery.Client, read_client: Callable[[], Any] | None = None) -> None:
        self._client = client
        self._read_client = read_client  # created on the first large result only

    def estimate_bytes(self, sql: str, params: Mapping[str, Any]) -> int:
        config = bigquery.QueryJobConfig(
            query_parameters=query_parameters(params), dry_run=True, use_query_cache=False
        )
        job = self._client.query(sql, job_config=config, retry=RETRY, timeout=REQUEST_TIMEOUT)
        return int(job.total_bytes_processed or 0)

    def rows(
        self,
        sql: str,
        params: Mapping[str, Any],
        *,
        labels: Mapping[str, str],
        timeout_s: float,
        max_bytes_billed: int,
    ) -> Iterator[dict[str, Any]]:
        config = bigquery.QueryJobConfig(
            query_parameters=query_parameters(params),
            labels=dict(labels),
            maximum_bytes_billed=max_bytes_billed,
            job_timeout_ms=int(timeout_s * 1000),
        )
        job = self._client.query(sql, job_config=config, retry=RETRY, timeout=REQUEST_TIMEOUT)
        try:
            result = job.result(timeout=timeout_s)
        except (concurrent.futures.TimeoutError, gexc.DeadlineExceeded) as exc:
            with contextlib.suppress(Exception):
                job.cancel()
            raise QueryTimeout(f"query {job.job_id} ran over {timeout_s} s") from exc
        except gexc.GoogleAPICallError as exc:
            if is_bytes_billed_limit(exc):
                raise QueryTooExpensive(str(exc)) from exc
            raise
        if self._read_client is not None and (result.total_rows or 0) >= STORAGE_API_MIN_ROWS:
            for batch in result.to_arrow_iterable(bqstorage_client=self._read_client()):
                yield from batch.to_pylist()
            return
        for row in result:
            yield dict(row.items())
