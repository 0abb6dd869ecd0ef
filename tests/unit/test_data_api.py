"""The data API without BigQuery: validation, auth, routing, cursors, cost caps, rendering, SQL catalogue."""

from __future__ import annotations

import ast
import csv
import dataclasses
import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from jupiter_data.data_api import catalogue, routes
from jupiter_data.data_api.catalogue import CATALOGUE
from jupiter_data.data_api.cursors import CursorKey, decode_cursor, encode_cursor, request_fingerprint
from jupiter_data.data_api.keys import API_KEYS_TTL, ApiKeys, RefreshingKeys, read_api_keys_file
from jupiter_data.data_api.parsing import EventFilter
from jupiter_data.data_api.problems import ApiProblem
from jupiter_data.data_api.rendering import EVENT_FIELDS, render
from jupiter_data.data_api.routes import Call, DataApi, bootstrap
from jupiter_data.data_api.settings import DataApiSettings
from jupiter_data.ports import QueryTimeout, QueryTooExpensive
from jupiter_data.settings import Settings
from tests.fakes import FakeClock
from tests.support import all_log_text

KEY = "k" * 43
OTHER_KEY = "o" * 43
SETTINGS = DataApiSettings.from_env(
    {"FETCH_API_KEYS": f"analysts:{ApiKeys.digest(KEY)},billing-svc:{ApiKeys.digest(OTHER_KEY)}"}
)
AUTH = {"Authorization": f"Bearer {KEY}"}
NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


class RecordingRunner:
    """Answers each catalogue query with the given rows; refuses any SQL not in the catalogue."""

    def __init__(self, rows: Mapping[str, list[dict[str, Any]]] | None = None, estimate: int = 1_000) -> None:
        self.answers = dict(rows or {})
        self.estimate = estimate
        self.timeout = False
        self.calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = []

    def _name(self, sql: str) -> str:
        names = [name for name, text in CATALOGUE.items() if text is sql]
        assert names, "SQL text must be a catalogue constant, never built per request"
        return names[0]

    def estimate_bytes(self, sql: str, params: Mapping[str, Any]) -> int:
        self.calls.append(("dry_run", self._name(sql), dict(params), {}))
        return self.estimate

    def rows(
        self,
        sql: str,
        params: Mapping[str, Any],
        *,
        labels: Mapping[str, str],
        timeout_s: float,
        max_bytes_billed: int,
    ) -> Iterator[dict[str, Any]]:
        name = self._name(sql)
        self.calls.append(
            (
                "run",
                name,
                dict(params),
                {"labels": dict(labels), "timeout_s": timeout_s, "cap": max_bytes_billed},
            )
        )
        if self.timeout:
            raise QueryTimeout("too slow")
        if self.estimate > max_bytes_billed:  # as BigQuery does: refused before it runs
            raise QueryTooExpensive("bytesBilledLimitExceeded")
        yield from self.answers.get(name, [])

    def runs(self) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
        return [(name, params, options) for kind, name, params, options in self.calls if kind == "run"]


def make_api(runner: RecordingRunner | None = None, **settings: Any) -> tuple[DataApi, RecordingRunner]:
    """The API as bootstrap builds it, on these settings, with a recording runner at ``NOW``."""
    runner = runner or RecordingRunner()
    api_settings = dataclasses.replace(SETTINGS, **settings)
    return bootstrap(api_settings=api_settings, runner=runner, clock=FakeClock(NOW)), runner


def call(
    api: DataApi,
    path: str,
    args: Mapping[str, Sequence[str] | str] | None = None,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, dict[str, str], Any, str]:
    query = {name: [value] if isinstance(value, str) else list(value) for name, value in (args or {}).items()}
    response = api.handle(Call(method, path, query, AUTH if headers is None else headers, body))
    raw = b"".join(response.body)
    is_json = response.content_type in ("application/json", "application/problem+json")
    parsed = orjson.loads(raw) if is_json else raw.decode()
    return response.status, response.headers, parsed, response.content_type


def event(moment: str, source: str = "sns", event_id: str = "e1", **extra: Any) -> dict[str, Any]:
    return {
        "source": source,
        "event_id": event_id,
        "user_id": extra.get("user_id", "u1"),
        "event_type": extra.get("event_type", "app_opened"),
        "event_time": datetime.fromisoformat(moment).replace(tzinfo=UTC),
        "properties": extra.get("properties", '{"plan":"pro"}'),
    }


RANGE = {"start": "2026-11-01", "end": "2026-11-07"}


# ------------------------------------------------------------------------------------------- auth


def test_no_credentials_is_401_with_a_bearer_challenge_and_runs_nothing() -> None:
    api, runner = make_api()
    status, headers, body, content_type = call(api, "/v1/events", RANGE, headers={})
    assert status == 401 and content_type == "application/problem+json"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert body["status"] == 401 and "Bearer" in body["detail"]
    assert runner.calls == []


@pytest.mark.parametrize(
    "authorization", [f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", "Bearer " + "é" * 10, f"bearer {OTHER_KEY}0"]
)
def test_a_wrong_key_is_403_and_runs_nothing(authorization: str) -> None:
    api, runner = make_api()
    status, _, body, _ = call(api, "/v1/events", RANGE, headers={"Authorization": authorization})
    assert (status, body["title"]) == (403, "Forbidden")
    assert runner.calls == []


@pytest.mark.parametrize("authorization", [KEY, f"Basic {KEY}", "Bearer ", "Bearer"])
def test_a_malformed_authorization_header_is_401(authorization: str) -> None:
    api, _ = make_api()
    assert call(api, "/v1/events", RANGE, headers={"Authorization": authorization})[0] == 401


def test_each_key_names_its_caller_in_the_query_labels() -> None:
    api, runner = make_api()
    call(api, "/v1/metrics/event-counts", RANGE)
    call(api, "/v1/metrics/event-counts", RANGE, headers={"Authorization": f"Bearer {OTHER_KEY}"})
    assert [options["labels"] for _, _, options in runner.runs()] == [
        {"endpoint": "event-counts", "caller": "analysts"},
        {"endpoint": "event-counts", "caller": "billing-svc"},
    ]


def test_the_openapi_document_needs_no_key_and_is_the_committed_file() -> None:
    api, _ = make_api()
    status, _, body, content_type = call(api, "/openapi.json", headers={})
    assert status == 200 and content_type == "application/json"
    assert body == orjson.loads(routes.OPENAPI_PATH.read_bytes())
    assert body["openapi"].startswith("3.1")


@pytest.mark.parametrize("raw", ["", "analysts", "Analysts:" + "0" * 64, "a:" + "0" * 63, "a:" + "g" * 64])
def test_api_key_settings_refuse_malformed_entries(raw: str) -> None:
    with pytest.raises(ValueError):
        ApiKeys.parse(raw)


def test_a_key_list_may_put_one_entry_per_line() -> None:
    keys = ApiKeys.parse(f"analysts:{ApiKeys.digest(KEY)}\nbilling-svc:{ApiKeys.digest(OTHER_KEY)}\n")
    assert [name for name, _ in keys.digests] == ["analysts", "billing-svc"]


# ------------------------------------------------------------------------------------ key revocation


def write_keys(path: Path, **keys: str) -> None:
    path.write_text("".join(f"{name}:{ApiKeys.digest(key)}\n" for name, key in keys.items()))


def key_file_api(path: Path, clock: FakeClock) -> DataApi:
    api_settings = DataApiSettings.from_env({"FETCH_API_KEYS_FILE": str(path)})
    return bootstrap(api_settings=api_settings, runner=RecordingRunner(), clock=clock)


def status_for(api: DataApi, key: str) -> int:
    return call(api, "/v1/metrics/event-counts", RANGE, headers={"Authorization": f"Bearer {key}"})[0]


def test_a_key_removed_from_the_key_file_stops_working_within_the_ttl_without_a_restart(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "keys", FakeClock()
    write_keys(path, analysts=KEY, billing=OTHER_KEY)
    api = key_file_api(path, clock)
    assert status_for(api, OTHER_KEY) == 200
    new_key = "n" * 43
    write_keys(path, analysts=KEY, newcomer=new_key)  # a new secret version: billing revoked
    clock.advance(seconds=API_KEYS_TTL.total_seconds() - 1)
    assert (status_for(api, OTHER_KEY), status_for(api, new_key)) == (200, 403)  # within the TTL
    clock.advance(seconds=1)
    assert (status_for(api, OTHER_KEY), status_for(api, new_key), status_for(api, KEY)) == (403, 200, 200)
    write_keys(path, analysts=KEY)
    clock.advance(hours=-1)  # a clock stepped back does not freeze the list either
    assert status_for(api, new_key) == 403


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.unlink(),
        lambda path: path.write_text("analysts:not-a-digest\n"),
        lambda path: path.write_text(""),
        lambda path: path.write_bytes(b"\xff" * 10),
        lambda path: path.write_text(f"a:{'0' * 64}," * 1_000),  # over the size bound
    ],
    ids=["missing", "invalid", "empty", "binary", "oversized"],
)
def test_a_key_file_broken_after_start_keeps_the_last_good_list_and_logs_an_error_each_ttl(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path], None]
) -> None:
    path, clock = tmp_path / "keys", FakeClock()
    write_keys(path, analysts=KEY)
    api = key_file_api(path, clock)
    assert status_for(api, KEY) == 200
    damage(path)
    for _ in range(2):  # not silent: every re-read that fails is an ERROR
        clock.advance(seconds=API_KEYS_TTL.total_seconds())
        caplog.clear()
        assert (status_for(api, KEY), status_for(api, OTHER_KEY)) == (200, 403)  # nobody else gets in
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "keeping the last good" in errors[0].getMessage()
        assert "0" * 64 not in all_log_text(errors)  # the file's content is never logged
    write_keys(path, billing=OTHER_KEY)
    clock.advance(seconds=API_KEYS_TTL.total_seconds())
    assert (status_for(api, KEY), status_for(api, OTHER_KEY)) == (403, 200)


def test_the_function_as_deployed_re_reads_its_key_file(tmp_path: Path) -> None:
    """bootstrap wires the file setting to a re-reading key list on the instance's clock, with the real
    BigQuery runner (never reached here)."""
    clock = FakeClock()
    write_keys(tmp_path / "keys", analysts=KEY)
    env = {"GOOGLE_CLOUD_PROJECT": "jupiter-test", "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9",
           "FETCH_API_KEYS_FILE": str(tmp_path / "keys")}  # fmt: skip
    api = bootstrap(Settings.from_env(env), api_settings=DataApiSettings.from_env(env), clock=clock)
    # A request that fails validation after authentication runs no query: 400 means "let in".
    assert call(api, "/v1/events")[0] == 400
    write_keys(tmp_path / "keys", billing=OTHER_KEY)
    clock.advance(seconds=API_KEYS_TTL.total_seconds())
    assert call(api, "/v1/events")[0] == 403


def test_while_one_request_re_reads_the_key_file_the_others_go_on_with_the_current_list(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "keys", FakeClock()
    write_keys(path, analysts=KEY)
    reading, release = threading.Event(), threading.Event()
    loads: list[int] = []

    def slow_load() -> ApiKeys:
        loads.append(1)
        reading.set()
        release.wait()
        return read_api_keys_file(path)

    keys = RefreshingKeys(read_api_keys_file(path), slow_load, clock)
    first = threading.Thread(target=keys.current)
    first.start()
    assert reading.wait(timeout=60)  # a guard against hanging, not a speed bound
    assert keys.caller(f"Bearer {KEY}") == "analysts"  # answered while the re-read is still blocked
    release.set()
    first.join()
    assert len(loads) == 1


# ---------------------------------------------------------------------------------------- routing


def test_an_unknown_path_is_404_problem_details() -> None:
    api, _ = make_api()
    status, _, body, content_type = call(api, "/v2/everything")
    assert (status, content_type) == (404, "application/problem+json")
    assert body["type"] == "about:blank" and "/openapi.json" in body["detail"]


def test_a_known_path_with_another_method_is_405_with_allow() -> None:
    api, _ = make_api()
    status, headers, body, _ = call(api, "/v1/events", method="DELETE")
    assert status == 405 and headers["Allow"] == "GET" and body["status"] == 405
    assert call(api, "/", method="GET")[1]["Allow"] == "POST"


def test_errors_never_show_sql_or_tracebacks() -> None:
    api, _ = make_api(RecordingRunner(estimate=10**13))
    for args in ({"start": "x"}, RANGE, {**RANGE, "page_token": "AAAA"}):
        raw = orjson.dumps(call(api, "/v1/events", args)[2]).decode()
        assert "SELECT" not in raw and "Traceback" not in raw and "all_user_events" not in raw


# ------------------------------------------------------------------------------------- validation


def problem_parameters(body: dict[str, Any]) -> list[str]:
    return [error["parameter"] for error in body["errors"]]


@pytest.mark.parametrize(
    ("args", "parameters"),
    [
        ({}, ["start", "end"]),
        ({"start": "2026-11-01"}, ["end"]),
        ({"start": "2026-02-30", "end": "2026-03-01"}, ["start"]),
        ({"start": "26-11-01", "end": "2026-11-02"}, ["start"]),
        ({"start": "1999-12-31", "end": "2000-01-01"}, ["start"]),
        ({"start": "2026-11-01", "end": "10000-01-01"}, ["end"]),
        ({"start": "2026-11-02", "end": "2026-11-01"}, ["end"]),
        ({"start": "2026-01-01", "end": "2026-04-03"}, ["end"]),  # 92 days + 1
        ({**RANGE, "limit": "0"}, ["limit"]),
        ({**RANGE, "limit": "10001"}, ["limit"]),
        ({**RANGE, "limit": "1e3"}, ["limit"]),
        ({**RANGE, "limit": "٣"}, ["limit"]),  # a non-ASCII digit
        ({**RANGE, "source": "kafka"}, ["source"]),
        ({**RANGE, "format": "xml"}, ["format"]),
        ({**RANGE, "event_types": "typo"}, ["event_types"]),
        ({**RANGE, "user_id": "a\x00b"}, ["user_id"]),
        ({**RANGE, "user_id": "u" * 257}, ["user_id"]),
        ({**RANGE, "event_type": [f"t{n}" for n in range(101)]}, ["event_type"]),
        ({"start": ["2026-11-01", "2026-11-02"], "end": "2026-11-03"}, ["start"]),
    ],
)
def test_invalid_parameters_are_400_naming_each_and_run_nothing(
    args: dict[str, Any], parameters: list[str]
) -> None:
    api, runner = make_api()
    status, _, body, content_type = call(api, "/v1/events", args)
    assert (status, content_type) == (400, "application/problem+json")
    assert problem_parameters(body) == parameters
    assert runner.calls == []


def test_a_range_of_exactly_the_maximum_is_accepted_and_the_maximum_is_configurable() -> None:
    api, _ = make_api()
    assert call(api, "/v1/events", {"start": "2026-01-01", "end": "2026-04-03"})[0] == 400
    assert call(api, "/v1/events", {"start": "2026-01-01", "end": "2026-04-02"})[0] == 200
    short, _ = make_api(max_range_days=7)
    assert call(short, "/v1/events", {"start": "2026-11-01", "end": "2026-11-08"})[0] == 400


INJECTIONS = [
    "'; DROP TABLE ops.all_user_events; --",
    "`ops`.`all_user_events`",
    "x' OR '1'='1",
    "\\'; SELECT 1; --",
    "ünïcödé ☃ \U0001d518",
    "@start_time",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_hostile_values_travel_only_as_parameters(value: str) -> None:
    api, runner = make_api()
    for path, args in (
        ("/v1/events", {**RANGE, "user_id": value, "event_type": [value, "ok"]}),
        (f"/v1/users/{value}/events", {"event_type": value}),
        ("/v1/metrics/event-counts", {**RANGE, "event_type": value}),
    ):
        assert call(api, path, args)[0] == 200
    body = orjson.dumps({"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": [value]})
    assert call(api, "/", method="POST", body=body)[0] == 200
    runs = runner.runs()
    assert len(runs) == 4
    for _, params, _ in runs:
        assert value in params["event_types"] or params["user_id"] == value  # the value, unchanged
    # RecordingRunner has already refused any SQL text that is not a catalogue constant.


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"startDate": "2026-11-01", "endDate": "2026-11-02"}',
        b'{"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": []}',
        b'{"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": "app_opened"}',
        b'{"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": [1]}',
        b'{"startDate": 20261101, "endDate": "2026-11-02", "eventTypes": ["a"]}',
        b'{"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": ["a"], "extra": 1}',
        orjson.dumps({"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": ["a"] * 10_000}),
    ],
)
def test_a_bad_legacy_body_is_400_and_runs_nothing(body: bytes) -> None:
    api, runner = make_api()
    status, _, problem, _ = call(api, "/", method="POST", body=body)
    assert status == 400 and problem["errors"]
    assert runner.calls == []


def test_an_oversized_legacy_body_is_413() -> None:
    api, runner = make_api()
    status, _, problem, _ = call(api, "/", method="POST", body=b"[" + b" " * routes.MAX_BODY_BYTES + b"]")
    assert (status, problem["status"]) == (413, 413)
    assert runner.calls == []


def test_the_legacy_contract_counts_amplitude_events_of_the_inclusive_days() -> None:
    rows = [{"event_type": "app_opened", "event_count": 3}, {"event_type": "paid", "event_count": 1}]
    api, runner = make_api(RecordingRunner({"legacy_event_counts": rows}))
    body = orjson.dumps(
        {"startDate": "2026-11-01", "endDate": "2026-11-02", "eventTypes": ["app_opened", "paid"]}
    )
    status, _, answer, content_type = call(api, "/", method="POST", body=body)
    assert (status, content_type, answer) == (200, "application/json", rows)
    ((_, params, _),) = runner.runs()
    assert params["start_time"] == datetime(2026, 11, 1, tzinfo=UTC)
    assert params["end_time"] == datetime(2026, 11, 3, tzinfo=UTC)  # end day included
    assert (params["include_sns"], params["include_amplitude"]) == (False, True)


# ----------------------------------------------------------------------------------------- cost caps


def test_a_query_over_the_cap_is_refused_unbilled_and_answers_400_with_the_dry_run_estimate() -> None:
    api, runner = make_api(RecordingRunner(estimate=20 * 1024**3), max_bytes_billed=10 * 1024**3)
    status, _, body, _ = call(api, "/v1/metrics/event-counts", RANGE)
    assert status == 400 and "21,474,836,480 bytes" in body["detail"]
    assert [kind for kind, *_ in runner.calls] == ["run", "dry_run"]


def test_a_query_under_the_cap_costs_one_round_trip() -> None:
    api, runner = make_api(RecordingRunner(estimate=1_000))
    assert call(api, "/v1/metrics/event-counts", RANGE)[0] == 200
    assert [kind for kind, *_ in runner.calls] == ["run"]


def test_the_real_run_carries_the_byte_cap_and_the_timeout() -> None:
    api, runner = make_api(max_bytes_billed=123 * 1024**2, query_timeout=timedelta(seconds=7.5))
    call(api, "/v1/metrics/active-users", RANGE)
    ((_, _, options),) = runner.runs()
    assert (options["cap"], options["timeout_s"]) == (123 * 1024**2, 7.5)


def test_a_query_timeout_is_504_problem_details() -> None:
    runner = RecordingRunner()
    runner.timeout = True
    api, _ = make_api(runner, query_timeout=timedelta(seconds=3))
    status, _, body, content_type = call(api, "/v1/events", RANGE)
    assert (status, content_type) == (504, "application/problem+json")
    assert "3 s" in body["detail"]


# ------------------------------------------------------------------------------------------ paging


def test_a_full_page_gives_a_token_that_starts_the_next_page_after_its_last_row() -> None:
    rows = [event("2026-11-01 10:00:00", event_id=f"e{n}") for n in range(4)]
    api, runner = make_api(RecordingRunner({"events": rows}))
    status, headers, body, _ = call(api, "/v1/events", {**RANGE, "limit": "3"})
    assert status == 200 and len(body["data"]) == 3
    token = body["next_page_token"]
    assert headers["X-Next-Page-Token"] == token
    assert runner.runs()[0][1]["limit"] == 4, "one row more than the page tells whether there is another"
    call(api, "/v1/events", {**RANGE, "limit": "3", "page_token": token})
    params = runner.runs()[1][1]
    assert params["has_cursor"] is True
    assert (params["after_time"], params["after_source"], params["after_id"]) == (
        datetime(2026, 11, 1, 10, tzinfo=UTC),
        "sns",
        "e2",
    )


def test_the_last_page_has_no_token() -> None:
    api, _ = make_api(RecordingRunner({"events": [event("2026-11-01 10:00:00")]}))
    status, headers, body, _ = call(api, "/v1/events", {**RANGE, "limit": "3"})
    assert status == 200 and body["next_page_token"] is None and "X-Next-Page-Token" not in headers


@pytest.mark.parametrize(
    "changed", [{"start": "2026-11-02"}, {"event_type": "other"}, {"source": "sns"}, {"user_id": "u9"}]
)
def test_a_token_is_refused_with_other_filters(changed: dict[str, str]) -> None:
    fingerprint = request_fingerprint("events", EventFilter(date(2026, 11, 1), date(2026, 11, 7)))
    token = encode_cursor(CursorKey(datetime(2026, 11, 1, tzinfo=UTC), "sns", "e1"), fingerprint)
    api, runner = make_api()
    assert call(api, "/v1/events", {**RANGE, "page_token": token})[0] == 200
    status, _, body, _ = call(api, "/v1/events", {**RANGE, **changed, "page_token": token})
    assert status == 400 and problem_parameters(body) == ["page_token"]
    assert len(runner.runs()) == 1


def test_a_cursor_round_trips_to_the_microsecond() -> None:
    key = CursorKey(datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC), "amplitude", "id-ü/1")
    assert decode_cursor(encode_cursor(key, "f" * 16), "f" * 16) == key


@pytest.mark.parametrize(
    "token", ["", "!!!", "A" * 2000, "e30", "bm90IGpzb24", "eyJ2IjoxLCJmIjoiZmZmZmZmZmZmZmZmZmZmZiJ9"]
)
def test_a_malformed_or_tampered_token_is_400(token: str) -> None:
    with pytest.raises(ApiProblem) as problem:
        decode_cursor(token, "f" * 16)
    assert problem.value.status == 400


def test_a_timeline_without_dates_covers_the_longest_range_up_to_today() -> None:
    api, runner = make_api()
    assert call(api, "/v1/users/u1/events")[0] == 200
    params = runner.runs()[0][1]
    assert params["user_id"] == "u1"
    assert params["end_time"] == datetime(2026, 11, 24, tzinfo=UTC)
    assert params["start_time"] == datetime(2026, 8, 24, tzinfo=UTC)  # 92 days, both included


# ---------------------------------------------------------------------------------------- formats


ROWS = [
    event("2026-11-01 10:00:00.5", event_id="=HYPERLINK(1)", properties='{"a":{"b":[1,2]}}'),
    event("2026-11-01 11:00:00", source="amplitude", event_id="42", properties="null", user_id=None),
]


def test_json_rows_have_rfc3339_times_and_properties_as_json() -> None:
    api, _ = make_api(RecordingRunner({"events": ROWS}))
    body = call(api, "/v1/events", RANGE)[2]
    assert body["data"][0]["event_time"] == "2026-11-01T10:00:00.500000Z"
    assert body["data"][0]["properties"] == {"a": {"b": [1, 2]}}
    assert body["data"][1]["properties"] is None and body["data"][1]["user_id"] is None


@pytest.mark.parametrize(
    ("args", "accept", "expected"),
    [
        ({"format": "csv"}, None, "text/csv"),
        ({}, "text/csv", "text/csv"),
        ({}, "application/x-ndjson", "application/x-ndjson"),
        ({}, "application/ndjson;q=0.9, text/csv;q=0.1", "application/x-ndjson"),
        ({"format": "json"}, "text/csv", "application/json"),
        ({}, "text/html", "application/json"),
    ],
)
def test_the_format_follows_format_then_accept(
    args: dict[str, str], accept: str | None, expected: str
) -> None:
    api, _ = make_api(RecordingRunner({"events": ROWS}))
    headers = {**AUTH, **({"Accept": accept} if accept else {})}
    assert call(api, "/v1/events", {**RANGE, **args}, headers=headers)[3] == expected


def test_csv_has_a_header_row_and_neutralises_formula_cells() -> None:
    api, _ = make_api(RecordingRunner({"events": ROWS}))
    text = call(api, "/v1/events", {**RANGE, "format": "csv"})[2]
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == list(EVENT_FIELDS)
    assert table[1][1] == "'=HYPERLINK(1)"
    assert table[2][2] == "" and table[2][5] == "null"


def test_ndjson_is_one_json_object_per_line() -> None:
    api, _ = make_api(RecordingRunner({"events": ROWS * 600}))
    text = call(api, "/v1/events", {**RANGE, "format": "ndjson", "limit": "5000"})[2]
    lines = text.splitlines()
    assert len(lines) == 1200 and orjson.loads(lines[-1])["source"] == "amplitude"


BIG = "123456789012345678901234567890"  # past 64 bits, where orjson falls back to a float
EXACT = f'{{"big":{BIG},"negative":-{BIG},"past_2_53":9007199254740993,"nested":[{BIG},1.5]}}'


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_integers_of_any_size_in_properties_are_served_exactly(fmt: str) -> None:
    api, _ = make_api(RecordingRunner({"events": [event("2026-11-01 10:00:00", properties=EXACT)]}))
    query = {name: [value] for name, value in {**RANGE, "format": fmt}.items()}
    text = b"".join(api.handle(Call("GET", "/v1/events", query, AUTH)).body).decode()
    assert BIG in text and f"-{BIG}" in text
    if fmt == "csv":
        (served_row,) = csv.DictReader(io.StringIO(text))
        served = served_row["properties"]
    else:  # the stdlib parser keeps integers exact
        row = json.loads(text.splitlines()[0]) if fmt == "ndjson" else json.loads(text)["data"][0]
        served = json.dumps(row["properties"])
    assert json.loads(served) == json.loads(EXACT)
    assert json.loads(served)["big"] == int(BIG)


@pytest.mark.parametrize("stored", ['1},{"source":"forged"', '{"a":NaN}', '{"a":1'])
def test_stored_properties_that_are_not_json_are_never_spliced_into_a_response(stored: str) -> None:
    response = render([event("2026-11-01 10:00:00", properties=stored)], EVENT_FIELDS,
                               "json", None)  # fmt: skip
    with pytest.raises(ValueError, match="properties"):
        b"".join(response.body)


def test_rendering_streams_in_chunks() -> None:
    response = render([event("2026-11-01 10:00:00")] * 1_201, EVENT_FIELDS, "json", None)
    chunks = list(response.body)
    assert len(chunks) == 5  # opening, three chunks of at most 500 rows, closing
    assert len(orjson.loads(b"".join(chunks))["data"]) == 1_201


# ------------------------------------------------------------------------------------- SQL catalogue


def test_the_sql_catalogue_is_built_from_literals_only() -> None:
    """No f-string, %, .format or input anywhere in the SQL: CATALOGUE is literals joined by +."""
    tree = ast.parse(Path(catalogue.__file__).read_text())
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name) and node.value is not None:
                constants[target.id] = node.value

    def literal_only(expr: ast.expr) -> bool:
        if isinstance(expr, ast.Constant):
            return isinstance(expr.value, str)
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return literal_only(expr.left) and literal_only(expr.right)
        if isinstance(expr, ast.Name) and expr.id.startswith("_") and expr.id in constants:
            return literal_only(constants[expr.id])
        return False

    declared = constants["CATALOGUE"]
    assert isinstance(declared, ast.Dict)
    assert all(value is not None and literal_only(value) for value in declared.values)
    assert len(declared.values) == len(CATALOGUE)


def test_queries_reach_the_runner_only_as_catalogue_entries() -> None:
    """Every runner call in the package passes ``sql`` taken from ``CATALOGUE[...]`` and nothing else."""
    nodes = [
        node
        for module in sorted(Path(routes.__file__).parent.glob("*.py"))
        for node in ast.walk(ast.parse(module.read_text()))
    ]
    runner_calls = [
        node
        for node in nodes
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("estimate_bytes", "rows")
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_runner"
    ]
    assert len(runner_calls) == 2
    assert all(isinstance(c.args[0], ast.Name) and c.args[0].id == "sql" for c in runner_calls)
    sql_assignments = [
        node.value
        for node in nodes
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "sql" for t in node.targets)
    ]
    assert len(sql_assignments) == 1
    (source,) = sql_assignments
    assert isinstance(source, ast.Subscript) and isinstance(source.value, ast.Name)
    assert source.value.id == "CATALOGUE"


def test_every_catalogue_query_names_only_parameters_the_service_sends() -> None:
    api, runner = make_api()
    call(api, "/v1/events", RANGE)
    call(api, "/v1/users/u1/events")
    call(api, "/v1/metrics/event-counts", RANGE)
    call(api, "/v1/metrics/active-users", RANGE)
    call(
        api, "/", method="POST", body=b'{"startDate":"2026-11-01","endDate":"2026-11-01","eventTypes":["a"]}'
    )
    seen = {name for name, _, _ in runner.runs()}
    assert seen == set(CATALOGUE)
    for name, params, _ in runner.runs():
        used = set(re.findall(r"@(\w+)", CATALOGUE[name]))
        assert used == set(params), name


def test_bigquerys_refusal_for_the_byte_cap_is_recognised_and_nothing_else_is() -> None:
    from google.api_core import exceptions as gexc

    from jupiter_data.adapters.bigquery import is_bytes_billed_limit

    refused = gexc.BadRequest(
        "Query exceeded limit for bytes billed: 10485760. 20971520 or higher required.",
        errors=[{"reason": "bytesBilledLimitExceeded", "message": "..."}],
    )
    assert is_bytes_billed_limit(refused)
    assert not is_bytes_billed_limit(gexc.BadRequest("Syntax error", errors=[{"reason": "invalidQuery"}]))
    assert not is_bytes_billed_limit(gexc.BadRequest("no details"))


def test_an_unexpected_failure_is_a_503_problem_without_details() -> None:
    class BrokenRunner(RecordingRunner):
        def rows(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
            raise ConnectionError("bigquery.internal:443 refused; SELECT secret FROM x")

    api, _ = make_api(BrokenRunner())
    status, _, body, content_type = call(api, "/v1/events", RANGE)
    assert (status, content_type) == (503, "application/problem+json")
    assert "refused" not in body["detail"] and "SELECT" not in orjson.dumps(body).decode()
