"""``fetch_from_bigquery``: the analysts' data API, routed, authenticated and cost-capped.

Framework-free: ``DataApi.handle`` takes the method, path, query string, headers and body and returns
an ``ApiResponse`` whose body is an iterator of bytes (streamed by the function). Queries come only
from ``CATALOGUE`` (``catalogue.py``) and reach the runner only from ``DataApi._query``
(``tests/unit/test_data_api.py`` walks this module's syntax tree to prove it). Each query carries
``maximum_bytes_billed``, a timeout and labels naming the endpoint and caller; a query BigQuery
refuses for the cap (unbilled) is dry-run and answers 400 with the estimate.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from jupiter_data.data_api.catalogue import CATALOGUE
from jupiter_data.data_api.cursors import CursorKey, encode_cursor, page_request
from jupiter_data.data_api.keys import Authenticator, RefreshingKeys, read_api_keys_file
from jupiter_data.data_api.parsing import (
    EventFilter,
    QueryArgs,
    choose_format,
    event_filter,
    legacy_counts_request,
    text_value,
)
from jupiter_data.data_api.problems import ApiProblem, invalid
from jupiter_data.data_api.rendering import (
    ACTIVE_USER_FIELDS,
    COUNT_FIELDS,
    EVENT_FIELDS,
    ApiResponse,
    json_response,
    problem_response,
    render,
)
from jupiter_data.data_api.settings import DataApiSettings
from jupiter_data.ports import Clock, QueryRunner, QueryTimeout, QueryTooExpensive, SystemClock
from jupiter_data.settings import Settings, load_settings

log = logging.getLogger(__name__)

OPENAPI_PATH = Path(__file__).resolve().parent.parent / "schemas" / "fetch_api.openapi.json"
MAX_BODY_BYTES = 64 * 1024


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
    def __init__(
        self, settings: DataApiSettings, keys: Authenticator, runner: QueryRunner, clock: Clock
    ) -> None:
        self._settings, self._keys, self._runner, self._clock = settings, keys, runner, clock
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
                caller = self._keys.caller(call.headers.get("Authorization"))
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
            raise invalid([("body", "valid JSON")]) from None
        request = legacy_counts_request(body, self._settings.max_range_days)
        filters = EventFilter(request.start, request.end, request.event_types, None, "amplitude")
        rows = self._query("legacy_event_counts", filters.params(), caller)
        return json_response([{"event_type": r["event_type"], "event_count": r["event_count"]} for r in rows])

    def _events(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        return self._page(call, caller, "events", None)

    def _user_events(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        errors: list[tuple[str, str]] = []
        user_id = text_value("user_id", params["user_id"], errors)
        if errors:
            raise invalid(errors)
        return self._page(call, caller, "user_events", user_id)

    def _page(self, call: Call, caller: str, endpoint: str, user_id: str | None) -> ApiResponse:
        allowed = ["start", "end", "event_type", "source", "limit", "page_token", "format"]
        if user_id is None:
            allowed.append("user_id")
        given = call.args if user_id is None else self._timeline_range(call.args)
        args = QueryArgs(given, allowed)
        fmt = choose_format(args.one("format"), call.headers.get("Accept"))
        page = page_request(args, self._settings.max_range_days, endpoint, user_id)
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
            token = encode_cursor(
                CursorKey(last["event_time"], last["source"], last["event_id"]), page.fingerprint
            )
        return render(rows, EVENT_FIELDS, fmt, token)

    def _event_counts(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        args = QueryArgs(call.args, ["start", "end", "event_type", "source", "format"])
        fmt = choose_format(args.one("format"), call.headers.get("Accept"))
        filters = self._filter(args)
        rows = list(self._query("event_counts", filters.params(), caller))
        return render(rows, COUNT_FIELDS, fmt, None)

    def _active_users(self, call: Call, caller: str, params: Mapping[str, str]) -> ApiResponse:
        args = QueryArgs(call.args, ["start", "end", "source", "format"])
        fmt = choose_format(args.one("format"), call.headers.get("Accept"))
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
        given.setdefault("end", [self._clock.now().date().isoformat()])
        if "start" not in given:
            with contextlib.suppress(ValueError, IndexError):  # a bad end is reported by validation
                end = date.fromisoformat(given["end"][0])
                given["start"] = [(end - timedelta(days=self._settings.max_range_days - 1)).isoformat()]
        return given

    def _filter(self, args: QueryArgs) -> EventFilter:
        filters = event_filter(args, self._settings.max_range_days)
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
        cap, timeout_s = self._settings.max_bytes_billed, self._settings.query_timeout.total_seconds()
        labels = {"endpoint": name.replace("_", "-"), "caller": caller}
        try:
            yield from self._runner.rows(
                sql, params, labels=labels, timeout_s=timeout_s, max_bytes_billed=cap
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
                504, "Query timed out", f"the query took over {timeout_s:g} s; narrow the dates or filters"
            ) from None


def bootstrap(
    settings: Settings | None = None,
    *,
    api_settings: DataApiSettings | None = None,
    runner: QueryRunner | None = None,
    clock: Clock | None = None,
) -> DataApi:
    """The data API with real adapters unless given: BigQuery (with its Storage Read API for large
    results) and the system clock. A key file is re-read on ``clock``, so a key is revoked without a
    redeploy."""
    api_settings = api_settings or load_settings(DataApiSettings)
    clock = clock or SystemClock()
    keys: Authenticator = api_settings.api_keys
    if (path := api_settings.api_keys_file) is not None:
        keys = RefreshingKeys(api_settings.api_keys, lambda: read_api_keys_file(path), clock)
    if runner is None:
        from jupiter_data.adapters.bigquery import BigQueryQueryRunner
        from jupiter_data.adapters.clients import bigquery_client, bigquery_read_client

        google = settings or load_settings(Settings)
        runner = BigQueryQueryRunner(
            bigquery_client(google),
            # The emulator serves the Storage Read API for tables but not for query results.
            None if google.bigquery_emulator_host else (lambda: bigquery_read_client(google)),
        )
    return DataApi(api_settings, keys, runner, clock)
