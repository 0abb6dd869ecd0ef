"""The local Amplitude Export API, spoken to over real HTTP with ``requests``."""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
import requests

from jupiter_data.local.amplitude_data import ALWAYS_PRESENT, ExportSpec, parse_export_hour
from jupiter_data.local.amplitude_server import AmplitudeExportServer
from jupiter_data.local.supervisor import free_port
from tests.fakes import FakeClock

AUTH = ("test-api-key", "test-secret-key")
EVENTS_PER_HOUR = 40
DAY = date(2024, 3, 1)
EMPTY_DAY = date(2024, 3, 3)
# <app>/<app>_<YYYY-MM-DD>_<H>#<n>.json.gz, the hour not zero-padded
MEMBER = re.compile(
    r"^(?P<app>\d+)/(?P=app)_(?P<day>\d{4}-\d{2}-\d{2})_(?P<hour>[0-9]|1[0-9]|2[0-3])#(?P<part>\d+)\.json\.gz$"
)
WITH_FRACTION = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
WITHOUT_FRACTION = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
FIELDS = {
    "$insert_id",
    "uuid",
    "event_id",
    "amplitude_id",
    "app",
    "user_id",
    "device_id",
    "session_id",
    "event_type",
    "event_time",
    "client_event_time",
    "client_upload_time",
    "server_received_time",
    "server_upload_time",
    "processed_time",
    "user_creation_time",
    "event_properties",
    "user_properties",
    "group_properties",
    "groups",
    "data",
    "country",
    "city",
    "region",
    "dma",
    "language",
    "platform",
    "os_name",
    "os_version",
    "device_brand",
    "device_manufacturer",
    "device_model",
    "device_family",
    "device_type",
    "device_carrier",
    "ip_address",
    "library",
    "location_lat",
    "location_lng",
    "paying",
    "sample_rate",
    "start_version",
    "version_name",
    "is_attribution_event",
    "amplitude_event_type",
    "adid",
    "idfa",
    "partner_id",
    "plan",
    "source_id",
    "data_type",
}


@pytest.fixture(scope="module")
def server() -> Iterator[AmplitudeExportServer]:
    with AmplitudeExportServer(
        api_key=AUTH[0],
        secret_key=AUTH[1],
        events_per_hour=EVENTS_PER_HOUR,
        seed=123,
        empty_days=[EMPTY_DAY],
        max_window_hours=24,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "server" in request.fixturenames:
        running: AmplitudeExportServer = request.getfixturevalue("server")
        running.clear_faults()
        running.reset_requests()


def export(server: AmplitudeExportServer, start: str, end: str, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("auth", AUTH)
    return requests.get(
        f"{server.url}/api/2/export", params={"start": start, "end": end}, timeout=30, **kwargs
    )


def members(body: bytes) -> dict[str, list[bytes]]:
    """Member name → its lines, read the way a loader would (zip → gzip → lines)."""
    out = {}
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            with archive.open(name) as raw, gzip.open(raw) as lines:
                out[name] = [line.rstrip(b"\n") for line in lines]
    return out


def good(line: bytes) -> dict[str, Any] | None:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or not event.get("$insert_id") or not event.get("uuid"):
        return None
    return event


def walk(value: Any, depth: int = 0) -> Iterator[tuple[Any, int]]:
    yield value, depth
    if isinstance(value, dict):
        for item in value.values():
            yield from walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item, depth + 1)


@pytest.fixture(scope="module")
def day_export(server: AmplitudeExportServer) -> dict[str, list[bytes]]:
    response = export(server, "20240301T00", "20240301T23")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    assert int(response.headers["Content-Length"]) == len(response.content)
    return members(response.content)


def test_wrong_or_missing_credentials_are_refused(server: AmplitudeExportServer) -> None:
    assert export(server, "20240301T00", "20240301T00", auth=None).status_code == 401
    wrong = export(server, "20240301T00", "20240301T00", auth=(AUTH[0], "not-the-secret"))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert [r.status for r in server.requests] == [401, 401]


def test_a_day_is_a_zip_of_hourly_gzip_ndjson_members(
    server: AmplitudeExportServer, day_export: dict[str, list[bytes]]
) -> None:
    per_hour: Counter[int] = Counter()
    parts: Counter[int] = Counter()
    for name, lines in day_export.items():
        match = MEMBER.match(name)
        assert match, name
        assert match["app"] == "187520" and match["day"] == "2024-03-01"
        hour = int(match["hour"])
        parts[hour] += 1
        for line in lines:
            event = good(line)
            assert event is not None, line
            assert set(event) <= FIELDS, set(event) - FIELDS
            assert all(event.get(key) is not None for key in ALWAYS_PRESENT)
            # Selected by upload time: every event of member H was uploaded within hour H.
            assert event["server_upload_time"].startswith(f"2024-03-01 {hour:02d}:")
            per_hour[hour] += 1
    assert per_hour == dict.fromkeys(range(24), EVENTS_PER_HOUR)
    assert max(parts.values()) > 1, "some hours come in several members"
    assert "187520/187520_2024-03-01_5#0.json.gz" in day_export  # unpadded hour, parts from 0
    expected = server.expected(datetime(2024, 3, 1, 0), datetime(2024, 3, 1, 23))
    assert expected.events == sum(per_hour.values()) and expected.malformed == 0
    assert expected.members == len(day_export) and sorted(expected.member_names) == sorted(day_export)
    assert expected.events_per_hour == {
        datetime(2024, 3, 1, h, tzinfo=UTC): EVENTS_PER_HOUR for h in range(24)
    }


def test_lines_vary_like_real_exports(day_export: dict[str, list[bytes]]) -> None:
    events = [e for lines in day_export.values() for e in map(good, lines) if e is not None]
    stamps = [e[k] for e in events for k in ("event_time", "server_upload_time") if k in e]
    assert any(WITH_FRACTION.match(s) for s in stamps) and any(WITHOUT_FRACTION.match(s) for s in stamps)
    assert all(WITH_FRACTION.match(s) or WITHOUT_FRACTION.match(s) for s in stamps)
    null_users = sum(1 for e in events if e.get("user_id") is None)
    assert 0.04 < null_users / len(events) < 0.2
    late = [e for e in events if e["event_time"][:10] < e["server_upload_time"][:10]]
    assert late and all(e["event_time"].startswith("2024-02-29") for e in late)
    assert len(late) == 24 * round(EVENTS_PER_HOUR * 0.05)
    assert any(len(e) < len(FIELDS) for e in events), "some keys are missing"
    assert any(e.get("event_properties") is None for e in events)
    assert any(e.get("event_properties") == {} for e in events)
    values = [v for e in events for v, _ in walk(e.get("event_properties"))]
    assert any(isinstance(v, list) and v for v in values)
    assert max(d for e in events for _, d in walk(e.get("event_properties"))) >= 3
    texts = [v for e in events for v, _ in walk(e) if isinstance(v, str)]
    assert any(re.search(r"[\u0400-\u04ff]", t) for t in texts)  # Cyrillic
    assert any(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", t) for t in texts)  # Japanese / Chinese
    assert any(re.search(r"[\U0001f300-\U0001faff]", t) for t in texts)  # emoji


def test_an_hour_is_the_same_whichever_window_it_is_exported_in(
    server: AmplitudeExportServer, day_export: dict[str, list[bytes]]
) -> None:
    again = export(server, "20240301T00", "20240301T23")
    assert members(again.content) == day_export
    alone = members(export(server, "20240301T05", "20240301T05").content)
    assert alone and all(MEMBER.match(n)["hour"] == "5" for n in alone)  # type: ignore[index]
    assert alone == {name: lines for name, lines in day_export.items() if "_5#" in name}
    # Generated independently of the server and its cache: the same bytes.
    spec = ExportSpec(events_per_hour=EVENTS_PER_HOUR, seed=123)
    assert {name: list(lines) for name, lines in spec.iter_hour(datetime(2024, 3, 1, 5))} == alone


def test_a_window_without_data_is_404_and_partly_empty_windows_serve_what_exists(
    server: AmplitudeExportServer,
) -> None:
    assert export(server, "20240303T00", "20240303T23").status_code == 404
    straddling = export(server, "20240302T20", "20240303T03")
    assert straddling.status_code == 200
    names = members(straddling.content)
    assert {MEMBER.match(n)["day"] for n in names} == {"2024-03-02"}  # type: ignore[index]
    assert sum(len(lines) for lines in names.values()) == 4 * EVENTS_PER_HOUR


def test_a_window_longer_than_the_limit_is_400_and_its_halves_are_served(
    server: AmplitudeExportServer,
) -> None:
    too_long = export(server, "20240301T00", "20240302T00")  # 25 hours
    assert too_long.status_code == 400
    assert "too large" in too_long.text
    assert export(server, "20240301T00", "20240301T11").status_code == 200
    assert export(server, "20240301T12", "20240302T00").status_code == 200
    assert [(r.start, r.end) for r in server.requests] == [
        ("20240301T00", "20240302T00"),
        ("20240301T00", "20240301T11"),
        ("20240301T12", "20240302T00"),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"start": "20240301T00"},
        {"start": "2024-03-01", "end": "20240301T23"},
        {"start": "20240301T24", "end": "20240301T23"},
        {"start": "20240230T00", "end": "20240301T23"},
        {"start": "20240301T05", "end": "20240301T04"},
    ],
)
def test_bad_parameters_are_400_with_a_message(server: AmplitudeExportServer, params: dict[str, str]) -> None:
    response = requests.get(f"{server.url}/api/2/export", params=params, auth=AUTH, timeout=10)
    assert response.status_code == 400
    assert response.text.strip()


def test_injected_429_carries_retry_after_then_recovers(server: AmplitudeExportServer) -> None:
    server.inject(status=429, count=2, retry_after=1)
    for _ in range(2):
        limited = export(server, "20240301T00", "20240301T01")
        assert limited.status_code == 429
        assert limited.headers["Retry-After"] == "1"
    assert export(server, "20240301T00", "20240301T01").status_code == 200
    assert [r.status for r in server.requests] == [429, 429, 200]
    assert server.pending_faults == 0


def test_injected_504_through_the_admin_endpoint(server: AmplitudeExportServer) -> None:
    admin = requests.post(f"{server.url}/admin/faults", json={"status": 504, "count": 1}, timeout=10)
    assert admin.status_code == 200 and admin.json()["pending"] == 1
    assert export(server, "20240301T00", "20240301T01").status_code == 504
    assert export(server, "20240301T00", "20240301T01").status_code == 200
    log = requests.get(f"{server.url}/admin/requests", timeout=10).json()
    assert [(r["start"], r["end"], r["status"]) for r in log] == [
        ("20240301T00", "20240301T01", 504),
        ("20240301T00", "20240301T01", 200),
    ]
    assert log[0]["fault"] == "status=504"


def test_a_truncated_body_is_a_bad_zip(server: AmplitudeExportServer) -> None:
    server.inject(truncate=0.6)
    cut = export(server, "20240301T00", "20240301T03")
    assert cut.status_code == 200
    whole = export(server, "20240301T00", "20240301T03")
    assert len(cut.content) == int(len(whole.content) * 0.6)
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(cut.content))
    members(whole.content)  # the next answer is whole again


def test_a_dropped_connection_breaks_the_download(server: AmplitudeExportServer) -> None:
    server.inject(disconnect=True)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        export(server, "20240301T00", "20240301T03")
    assert export(server, "20240301T00", "20240301T03").status_code == 200


def test_body_faults_wait_for_a_request_that_has_a_body(server: AmplitudeExportServer) -> None:
    server.inject(truncate=0.5)
    assert export(server, "20240303T00", "20240303T01").status_code == 404  # nothing to cut
    assert server.pending_faults == 1
    assert export(server, "20240301T00", "20240301T00").status_code == 200
    assert server.pending_faults == 0
    assert server.requests[-1].fault == "truncate=0.5"


def test_malformed_lines_are_injected_at_the_stated_rate() -> None:
    rate, hours = 0.05, 3
    with AmplitudeExportServer(events_per_hour=EVENTS_PER_HOUR, seed=9, malformed_rate=rate) as running:
        response = requests.get(
            f"{running.url}/api/2/export",
            params={"start": "20240310T22", "end": "20240311T00"},
            auth=(running.api_key, running.secret_key),
            timeout=30,
        )
        expected = requests.get(
            f"{running.url}/admin/expected", params={"start": "20240310T22", "end": "20240311T00"}, timeout=10
        ).json()
    assert response.status_code == 200
    lines = [line for body in members(response.content).values() for line in body]
    bad = [line for line in lines if good(line) is None]
    assert len(bad) == hours * round(EVENTS_PER_HOUR * rate) == expected["malformed"]
    assert len(lines) - len(bad) == hours * EVENTS_PER_HOUR == expected["events"]
    assert expected["events_per_day"] == {"2024-03-10": 2 * EVENTS_PER_HOUR, "2024-03-11": EVENTS_PER_HOUR}


def test_hours_that_are_not_over_yet_have_no_data() -> None:
    clock = FakeClock(datetime(2024, 3, 1, 12, 30, tzinfo=UTC))  # 12:00-12:59 is the hour in progress
    with AmplitudeExportServer(
        api_key=AUTH[0], secret_key=AUTH[1], events_per_hour=EVENTS_PER_HOUR, seed=123, clock=clock
    ) as running:
        morning = ExportSpec(events_per_hour=EVENTS_PER_HOUR, seed=123).expected(
            datetime(2024, 3, 1, 0, tzinfo=UTC), datetime(2024, 3, 1, 11, tzinfo=UTC)
        )
        day = export(running, "20240301T00", "20240301T23")
        assert day.status_code == 200, day.text
        assert sorted(members(day.content)) == sorted(morning.member_names), "hours 0-11 only"
        assert running.expected(DAY, datetime(2024, 3, 1, 23, tzinfo=UTC)).events == morning.events
        admin = requests.get(
            f"{running.url}/admin/expected", params={"start": "20240301T00", "end": "20240301T23"}, timeout=10
        ).json()
        assert admin["events"] == morning.events
        for start, end in (("20240301T12", "20240301T23"), ("20240302T00", "20240302T05")):
            assert export(running, start, end).status_code == 404, (start, end)
            assert running.expected(*map(parse_export_hour, (start, end))).events == 0

        clock.advance(minutes=30)  # 13:00: the twelfth hour is over
        noon = export(running, "20240301T12", "20240301T23")
        assert noon.status_code == 200
        hours = {MEMBER.match(name)["hour"] for name in members(noon.content)}  # type: ignore[index]
        assert hours == {"12"}


def test_admin_config_changes_what_is_served(server: AmplitudeExportServer) -> None:
    before = server.spec, server.max_window_hours
    try:
        changed = requests.post(
            f"{server.url}/admin/config",
            json={"empty_days": ["2024-03-01"], "max_window_hours": 2},
            timeout=10,
        )
        assert changed.status_code == 200, changed.text
        assert export(server, "20240301T00", "20240301T01").status_code == 404
        assert export(server, "20240302T00", "20240302T02").status_code == 400
        refused = requests.post(f"{server.url}/admin/config", json={"no_such_setting": 1}, timeout=10)
        assert refused.status_code == 400
    finally:
        server.spec, server.max_window_hours = before
    assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_command_runs_in_the_foreground_and_exits_cleanly_on_a_signal(signum: signal.Signals) -> None:
    port = free_port()
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": "from-the-environment"}
    argv = [sys.executable, "-m", "jupiter_data.local.amplitude_server", "-p", str(port), "--api-key", "k"]
    with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as process:
        try:
            deadline = time.monotonic() + 60  # generous: a loaded machine starts slower
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.05)
            day = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d")
            params = {"start": f"{day}T00", "end": f"{day}T00"}
            url = f"http://127.0.0.1:{port}/api/2/export"
            # The secret key comes from the environment, not from argv.
            answer = requests.get(url, params=params, auth=("k", "from-the-environment"), timeout=30)
            assert answer.status_code == 200
            process.send_signal(signum)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
