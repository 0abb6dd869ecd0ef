"""Responses: problem details, JSON, and pages of rows rendered as JSON, CSV or NDJSON, streamed.

A response body is an iterator of bytes, encoded a chunk of rows at a time so that the encoded result
is never held whole beside the rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from jupiter_data.data_api.parsing import FORMATS
from jupiter_data.data_api.problems import ApiProblem

RENDER_CHUNK_ROWS = 500


@dataclass
class ApiResponse:
    status: int
    body: Iterable[bytes]
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


EVENT_FIELDS = ("source", "event_id", "user_id", "event_type", "event_time", "properties")
COUNT_FIELDS = ("day", "source", "event_type", "event_count")
ACTIVE_USER_FIELDS = ("day", "daily_active_users", "weekly_active_users", "monthly_active_users")


def problem_response(problem: ApiProblem) -> ApiResponse:
    return ApiResponse(
        problem.status, [orjson.dumps(problem.body())], "application/problem+json", dict(problem.headers)
    )


def json_response(body: object) -> ApiResponse:
    return ApiResponse(200, [orjson.dumps(body, default=_json_default)], "application/json")


def _json_default(value: object) -> object:
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_row(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    out = {name: _plain(row[name]) for name in fields}
    if "properties" in out and isinstance(out["properties"], str):
        out["properties"] = _stored_json(out["properties"])  # JSON text in BigQuery; JSON for callers
    return out


def _stored_json(text: str) -> orjson.Fragment:
    """Stored JSON text, embedded as it is: orjson would turn integers past 64 bits into floats.

    It is checked first (the stdlib parser takes integers of any size), so text that is not one JSON
    value can never splice rows or fields into a response.
    """
    try:
        json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"stored properties are not JSON: {exc}") from None
    return orjson.Fragment(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def render(rows: list[dict[str, Any]], fields: Sequence[str], fmt: str, token: str | None) -> ApiResponse:
    """Encode ``rows`` a chunk at a time, so the encoded result is never held whole beside them."""
    headers = {}
    if token is not None:
        headers["X-Next-Page-Token"] = token
    chunks = [rows[i : i + RENDER_CHUNK_ROWS] for i in range(0, len(rows), RENDER_CHUNK_ROWS)]
    if fmt == "csv":
        body: Iterator[bytes] = _csv(chunks, fields)
    elif fmt == "ndjson":
        body = (b"".join(orjson.dumps(_json_row(r, fields)) + b"\n" for r in chunk) for chunk in chunks)
    else:
        body = _json(chunks, fields, token)
    return ApiResponse(200, body, FORMATS[fmt], headers)


def _json(chunks: list[list[dict[str, Any]]], fields: Sequence[str], token: str | None) -> Iterator[bytes]:
    yield b'{"data":['
    first = True
    for chunk in chunks:
        encoded = b",".join(orjson.dumps(_json_row(r, fields)) for r in chunk)
        yield encoded if first else b"," + encoded
        first = False
    yield b'],"next_page_token":' + orjson.dumps(token) + b"}"


def _csv(chunks: list[list[dict[str, Any]]], fields: Sequence[str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    yield buffer.getvalue().encode()
    for chunk in chunks:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_value(row[name]) for name in fields] for row in chunk)
        yield buffer.getvalue().encode()


def _csv_value(value: Any) -> Any:
    plain = _plain(value)
    # A cell starting with = + - @ would run as a formula in a spreadsheet: quote it as text.
    if isinstance(plain, str) and plain[:1] in ("=", "+", "-", "@"):
        return "'" + plain
    return "" if plain is None else plain
