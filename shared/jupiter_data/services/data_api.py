"""``fetch_from_bigquery``: the analysts' data API, routed, authenticated and cost-capped.

Framework-free: ``DataApi.handle`` takes the method, path, query string, headers and body and returns
an ``ApiResponse`` whose body is an iterator of bytes (streamed by the function). Queries come only
from ``CATALOGUE`` below: fixed SQL text with ``@name`` parameters; nothing a caller sends is ever
part of SQL text (``tests/unit/test_data_api.py`` walks this module's syntax tree to prove it). Each
query carries ``maximum_bytes_billed``, a timeout and labels naming the endpoint and caller; a query
BigQuery refuses for the cap (unbilled) is dry-run and answers 400 with the estimate.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from jupiter_data.domain import data_api as api
from jupiter_data.domain.data_api import ApiKeys, ApiProblem, CursorKey, EventFilter, QueryArgs
from jupiter_data.ports import Clock, QueryRunner, QueryTimeout, QueryTooExpensive

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "schemas" / "fetch_api.openapi.json"
MAX_BODY_BYTES = 64 * 1024
RENDER_CHUNK_ROWS = 500

# ----------------------------------------------------------------------------------------- SQL catalogue
# Both sources as one relation. The SNS side reads the base table and keeps the first copy of each
# event_id itself rather than through the ops.user_events view: the view's window spans the whole
# table, so a date filter on it would not prune partitions. Copies of one event share its timestamp,
# so filtering first and deduplicating second gives the view's answer. Amplitude rows are partitioned
# by export day; an event is exported on or after the day it happened (a day of clock skew allowed).
_EVENTS_CTE = """
WITH sns_events AS (
  SELECT 'sns' AS source, event_id, user_id, event_type, event_timestamp AS event_time,
         context AS properties
  FROM `ops.all_user_events`
  WHERE @include_sns
    AND event_timestamp >= @start_time AND event_timestamp < @end_time
    AND (@user_id = '' OR user_id = @user_id)
    AND (ARRAY_LENGTH(@event_types) = 0 OR event_type IN UNNEST(@event_types))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY loaded_at) = 1
),
amplitude_events AS (
  SELECT 'amplitude' AS source, COALESCE(insert_id, uuid) AS event_id, resolved_user_id AS user_id,
         event_type, event_time, TO_JSON_STRING(event_properties) AS properties
  FROM `amplitude.events`
  WHERE @include_amplitude
    AND export_day >= DATE_SUB(DATE(@start_time), INTERVAL 1 DAY)
    AND event_time >= @start_time AND event_time < @end_time
    AND (@user_id = '' OR resolved_user_id = @user_id)
    AND (ARRAY_LENGTH(@event_types) = 0 OR event_type IN UNNEST(@event_types))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY insert_id, uuid ORDER BY export_day) = 1
),
events AS (
  SELECT * FROM sns_events
  UNION ALL
  SELECT * FROM amplitude_events
)
"""

_EVENT_COLUMNS = "SELECT source, event_id, user_id, event_type, event_time, properties FROM events\n"

CATALOGUE: dict[str, str] = {
    # Oldest first; the page starts strictly after the cursor's (event_time, source, event_id).
    "events": _EVENTS_CTE
    + _EVENT_COLUMNS
    + """WHERE NOT @has_cursor
   OR event_time > @after_time
   OR (event_time = @after_time AND (source > @after_source
       OR (source = @after_source AND event_id > @after_id)))
ORDER BY event_time, source, event_id
LIMIT @limit
""",
    # Newest first: the same key, the other way round.
    "user_events": _EVENTS_CTE
    + _EVENT_COLUMNS
    + """WHERE NOT @has_cursor
   OR event_time < @after_time
   OR (event_time = @after_time AND (source < @after_source
       OR (source = @after_source AND event_id < @after_id)))
ORDER BY event_time DESC, source DESC, event_id DESC
LIMIT @limit
""",
    "event_counts": _EVENTS_CTE
    + """SELECT DATE(event_time) AS day, source, event_type, COUNT(*) AS event_count
FROM events
GROUP BY day, source, event_type
ORDER BY day, source, event_type
""",
    # For each day: users active that day, in the 7 days and in the 30 days ending with it.
    "active_users": _EVENTS_CTE
    + """, activity AS (
  SELECT DISTINCT DATE(event_time) AS day, user_id FROM events
),
days AS (
  SELECT day FROM UNNEST(GENERATE_DATE_ARRAY(@first_day, @last_day)) AS day
)
SELECT days.day,
       COUNT(DISTINCT IF(activity.day = days.day, activity.user_id, NULL)) AS daily_active_users,
       COUNT(DISTINCT IF(activity.day > DATE_SUB(days.day, INTERVAL 7 DAY), activity.user_id, NULL))
         AS weekly_active_users,
       COUNT(DISTINCT activity.user_id) AS monthly_active_users
FROM days
LEFT JOIN activity
  ON activity.day > DATE_SUB(days.day, INTERVAL 30 DAY) AND activity.day <= days.day
GROUP BY days.day
ORDER BY days.day
""",
    # The replaced function's contract: Amplitude events per type over inclusive dates.
    "legacy_event_counts": _EVENTS_CTE
    + """SELECT event_type, COUNT(*) AS event_count
FROM events
GROUP BY event_type
ORDER BY event_type
""",
}


# ------------------------------------------------------------------------------------------------ config


class Authenticator(Protocol):
    def caller(self, authorization: str | None) -> str:
        """The caller's name for an ``Authorization`` header, or an ``ApiProblem`` (401/403)."""


# How long a revoked key keeps working at most: each instance re-reads the key file this often.
API_KEYS_TTL = timedelta(seconds=60)


class RefreshingKeys:
    """The key list of a file (Cloud Run's mount of a secret's latest version), re-read at most once per
    ``ttl`` so that a revoked key stops working within it, and Secret Manager sees one read a minute per
    instance, not one per request.

    A re-read that fails (unreadable mount, invalid version) keeps the last good list and logs an ERROR
    each time: neither letting everyone in nor locking every caller out. The first list is read at
    cold start, where a bad file stops the instance instead (``DataApiSettings``).
    """

    def __init__(
        self, keys: ApiKeys, load: Callable[[], ApiKeys], clock: Clock, ttl: timedelta = API_KEYS_TTL
    ) -> None:
        self._keys, self._load, self._clock, self._ttl = keys, load, clock, ttl
        self._read_at: datetime | None = None  # the cold-start list may be old: re-read on first use
        self._lock = threading.Lock()

    def caller(self, authorization: str | None) -> str:
        return self.current().caller(authorization)

    def current(self) -> ApiKeys:
        # One thread re-reads; the others go on with the current list meanwhile instead of queueing.
        if self._fresh(self._clock.now()) or not self._lock.acquire(blocking=False):
            return self._keys
        try:
            now = self._clock.now()
            if not self._fresh(now):
                self._read_at = now
                self._reload()
        finally:
            self._lock.release()
        return self._keys

    def _fresh(self, now: datetime) -> bool:
        return self._read_at is not None and self._read_at <= now < self._read_at + self._ttl

    def _reload(self) -> None:
        try:
            keys = self._load()
        except ValueError as exc:
            log.error(
                "API key list not re-read: keeping the last good one",
                extra={"fields": {"error": str(exc)[:300], "keys": len(self._keys.digests)}},
            )
            return
        if keys != self._keys:
            log.info("API key list changed", extra={"fields": {"keys": len(keys.digests)}})
            self._keys = keys


@dataclass(frozen=True)
class DataApiConfig:
    keys: Authenticator
    max_range_days: int = 92
    max_bytes_billed: int = 10 * 1024**3
    query_timeout_s: float = 30.0


@dataclass
class ApiResponse:
    status: int
    body: Iterable[bytes]
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def read(self) -> bytes:
        return b"".join(self.body)


# ---------------------------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    args: Mapping[str, Sequence[str]]
    headers: Mapping[str, str]
    body: bytes = b""


_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/openapi\.json"), "openapi"),
    ("POST", re.compile(r"/"), "legacy_counts"),
    ("GET", re.compile(r"/v1/events"), "events"),
    ("GET", re.compile(r"/v1/users/(?P<user_id>[^/]+)/events"), "user_events"),
    ("GET", re.compile(r"/v1/metrics/event-counts"), "event_counts"),
    ("GET", re.compile(r"/v1/metrics/active-users"), "active_users"),
]


class DataApi:
    def __init__(self, config: DataApiConfig, runner: QueryRunner, today: Callable[[], date]) -> None:
        self._config, self._runner, self._today = config, runner, today
        self._openapi_document = OPENAPI_PATH.read_bytes()
        self._handlers: dict[str, Callable[[Call, str, Mapping[str, str]], ApiResponse]] = {
            "openapi": self._openapi,
            "legacy_counts": self._legacy_counts,
            "events": self._events,
            "user_events": self._user_events,
            "event_counts": self._event_counts,
            "active_users": self._active_users,
        }

    def handle(self, call: Call) -> ApiResponse:
        started = time.perf_counter()
        endpoint, caller = "unrouted", "anonymous"
        try:
            endpoint, params = self._route(call)
            if endpoint != "openapi":
                caller = self._config.keys.caller(call.headers.get("Authorization"))
            response = self._handlers[endpoint](call, caller, params)
        except ApiProblem as problem:
            response = problem_response(problem)
        except Exception:  # BigQuery unreachable, a bug: logged in full here, never shown to the caller
            log.exception("data API call failed", extra={"fields": {"endpoint": endpoint, "caller": caller}})
            response = problem_response(
                ApiProblem(503, "Service unavailable", "the request could not be served; try again later")
            )
        log.info(
            "data API call",
            extra={"fields": {
                "endpoint": endpoint, "caller": caller, "status": response.status,
                "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
            }},
        )  # fmt: skip
        return response

    def _route(self, call: Call) -> tuple[str, dict[str, str]]:
        path = call.path.rstrip("/") or "/"
        allowed = []
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if method == call.method:
                return name, match.groupdict()
            allowed.append(method)
        if allowed:
            raise ApiProblem(
                405, "Method not allowed", f"{path} accepts {', '.join(allowed)}",
                headers=(("Allow", ", ".join(allowed)),),
            )  # fmt: skip
        raise ApiProblem(404, "Not found", "no such endpoint; the API is described at /openapi.json")

    # ------------------------------------------------------------------------------------- endpoints

    def _openapi(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        return ApiResponse(200, [self._openapi_document], "application/json")

    def _legacy_counts(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        if len(call.body) > MAX_BODY_BYTES:
            raise ApiProblem(413, "Payload too large", f"the body is over {MAX_BODY_BYTES} bytes")
        try:
            body = orjson.loads(call.body)
        except orjson.JSONDecodeError:
            raise api.invalid([("body", "valid JSON")]) from None
        request = api.legacy_counts_request(body, self._config.max_range_days)
        filters = EventFilter(request.start, request.end, request.event_types, None, "amplitude")
        rows = self._query("legacy_event_counts", filters.params(), caller)
        return json_response([{"event_type": r["event_type"], "event_count": r["event_count"]} for r in rows])

    def _events(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        return self._page(call, caller, "events", None)

    def _user_events(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        errors: list[tuple[str, str]] = []
        user_id = api.text_value("user_id", params["user_id"], errors)
        if errors:
            raise api.invalid(errors)
        return self._page(call, caller, "user_events", user_id)

    def _page(self, call: Call, caller: str, endpoint: str, user_id: str | None) -> ApiResponse:
        allowed = ["start", "end", "event_type", "source", "limit", "page_token", "format"]
        if user_id is None:
            allowed.append("user_id")
        given = call.args if user_id is None else self._timeline_range(call.args)
        args = QueryArgs(given, allowed)
        fmt = api.choose_format(args.one("format"), call.headers.get("Accept"))
        page = api.page_request(args, self._config.max_range_days, endpoint, user_id)
        after = page.after or CursorKey(datetime(1970, 1, 1, tzinfo=UTC), "", "")  # unused without a cursor
        params = {
            **page.filter.params(),
            "limit": page.limit + 1,  # one more row tells whether another page follows
            "has_cursor": page.after is not None,
            "after_time": after.event_time,
            "after_source": after.source,
            "after_id": after.event_id,
        }
        rows = list(self._query(endpoint, params, caller))
        token = None
        if len(rows) > page.limit:
            del rows[page.limit :]
            last = rows[-1]
            token = api.encode_cursor(
                CursorKey(last["event_time"], last["source"], last["event_id"]), page.fingerprint
            )
        return render(rows, EVENT_FIELDS, fmt, token)

    def _event_counts(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        args = QueryArgs(call.args, ["start", "end", "event_type", "source", "format"])
        fmt = api.choose_format(args.one("format"), call.headers.get("Accept"))
        filters = self._filter(args)
        rows = list(self._query("event_counts", filters.params(), caller))
        return render(rows, COUNT_FIELDS, fmt, None)

    def _active_users(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        args = QueryArgs(call.args, ["start", "end", "source", "format"])
        fmt = api.choose_format(args.one("format"), call.headers.get("Accept"))
        filters = self._filter(args)
        # Activity from 29 days before the first day, so its monthly figure is complete.
        activity = EventFilter(filters.start - timedelta(days=29), filters.end, (), None, filters.source)
        query = {**activity.params(), "first_day": filters.start, "last_day": filters.end}
        rows = list(self._query("active_users", query, caller))
        return render(rows, ACTIVE_USER_FIELDS, fmt, None)

    # --------------------------------------------------------------------------------------- helpers

    def _timeline_range(self, args: Mapping[str, Sequence[str]]) -> dict[str, Sequence[str]]:
        """A timeline without dates covers the longest range allowed, up to today (UTC)."""
        given = dict(args)
        given.setdefault("end", [self._today().isoformat()])
        if "start" not in given:
            with contextlib.suppress(ValueError, IndexError):  # a bad end is reported by validation
                end = date.fromisoformat(given["end"][0])
                given["start"] = [(end - timedelta(days=self._config.max_range_days - 1)).isoformat()]
        return given

    def _filter(self, args: QueryArgs) -> EventFilter:
        filters = api.event_filter(args, self._config.max_range_days)
        args.check()
        assert filters is not None
        return filters

    def _query(self, name: str, params: Mapping[str, Any], caller: str) -> Iterator[dict[str, Any]]:
        """Run a catalogue query under the byte cap, the timeout and cost-attribution labels.

        The cap is enforced by BigQuery itself (``maximum_bytes_billed``: a query over it fails before
        it runs, unbilled), so the common case costs one round trip; only a refused query is dry-run,
        to tell the caller how much it would have processed.
        """
        sql = CATALOGUE[name]
        cap = self._config.max_bytes_billed
        labels = {"endpoint": name.replace("_", "-"), "caller": caller}
        try:
            yield from self._runner.rows(
                sql, params, labels=labels, timeout_s=self._config.query_timeout_s, max_bytes_billed=cap
            )
        except QueryTooExpensive:
            estimate = self._runner.estimate_bytes(sql, params)
            raise ApiProblem(
                400, "Query too large",
                f"this request would process about {estimate:,} bytes, over the {cap:,}-byte limit; "
                "narrow the dates or filters",
            ) from None  # fmt: skip
        except QueryTimeout:
            raise ApiProblem(
                504, "Query timed out",
                f"the query took over {self._config.query_timeout_s:g} s; narrow the dates or filters",
            ) from None  # fmt: skip


# -------------------------------------------------------------------------------------------- rendering

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
    return ApiResponse(200, body, api.FORMATS[fmt], headers)


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
