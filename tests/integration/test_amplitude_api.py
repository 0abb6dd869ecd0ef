"""The Export API client with real HTTP against a scripted local server."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from jupiter_data.adapters.amplitude_api import AmplitudeAuthError, AmplitudeExportClient
from jupiter_data.ports import ExportTooLarge, TransientError

START, END = datetime(2026, 11, 22, 0), datetime(2026, 11, 22, 23)
BODY = b"PK\x03\x04" + b"zip bytes " * 50_000


class Script:
    """Answers requests with the scripted (status, headers) in turn, then 200 with BODY."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                script.requests.append((url.path, parse_qs(url.query), self.headers.get("Authorization", "")))
                status, headers = script.answers.pop(0) if script.answers else (200, {})
                payload = BODY if status == 200 else b"{}"
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(payload))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def script() -> Iterator[Script]:
    server = Script()
    yield server
    server.server.shutdown()
    server.server.server_close()


def client(script: Script, sleeps: list[float]) -> AmplitudeExportClient:
    return AmplitudeExportClient(script.url, "api-key", "s3cret", sleep=sleeps.append, max_attempts=4)


def test_a_window_streams_to_the_file_with_basic_auth_and_inclusive_hours(script: Script) -> None:
    dest, sleeps = io.BytesIO(b"stale bytes from an earlier attempt" * 100), []
    download = client(script, sleeps).download(START, END, dest)
    assert dest.getvalue() == BODY
    assert (download.has_data, download.size, download.sha256) == (
        True,
        len(BODY),
        hashlib.sha256(BODY).hexdigest(),
    )
    ((path, params, auth),) = script.requests
    assert path == "/api/2/export"
    assert params == {"start": ["20261122T00"], "end": ["20261122T23"]}
    assert auth == "Basic " + base64.b64encode(b"api-key:s3cret").decode()
    assert sleeps == []


def test_404_is_an_empty_window_not_an_error(script: Script) -> None:
    script.answers = [(404, {})]
    download = client(script, []).download(START, END, io.BytesIO())
    assert (download.has_data, download.size) == (False, 0)


@pytest.mark.parametrize("status", [400, 504])
def test_too_large_or_timed_out_asks_for_a_smaller_window_without_retrying(
    script: Script, status: int
) -> None:
    script.answers = [(status, {})]
    with pytest.raises(ExportTooLarge, match=str(status)):
        client(script, []).download(START, END, io.BytesIO())
    assert len(script.requests) == 1


def test_a_zip_growing_past_max_bytes_stops_the_download_without_retrying(script: Script) -> None:
    dest = io.BytesIO()
    with pytest.raises(ExportTooLarge, match="AMPLITUDE_MAX_WINDOW_BYTES"):
        client(script, []).download(START, END, dest, max_bytes=len(BODY) - 1)
    assert len(script.requests) == 1
    assert len(dest.getvalue()) < len(BODY), "a partial zip must not pass for the whole export"


def test_a_zip_of_exactly_max_bytes_is_accepted(script: Script) -> None:
    dest = io.BytesIO()
    download = client(script, []).download(START, END, dest, max_bytes=len(BODY))
    assert (download.size, dest.getvalue()) == (len(BODY), BODY)


@pytest.mark.parametrize("status", [401, 403])
def test_bad_credentials_name_the_settings_and_are_not_retried(script: Script, status: int) -> None:
    script.answers = [(status, {})]
    with pytest.raises(AmplitudeAuthError, match="AMPLITUDE_API_KEY and AMPLITUDE_SECRET_KEY") as err:
        client(script, []).download(START, END, io.BytesIO())
    assert "s3cret" not in str(err.value)
    assert len(script.requests) == 1


def test_429_honours_retry_after_and_5xx_backs_off_exponentially(script: Script) -> None:
    script.answers = [(429, {"Retry-After": "7"}), (503, {}), (502, {})]
    sleeps: list[float] = []
    dest = io.BytesIO()
    assert client(script, sleeps).download(START, END, dest).has_data
    assert dest.getvalue() == BODY
    assert sleeps[0] == 7.0
    assert 1.0 <= sleeps[1] <= 4.0 and 2.0 <= sleeps[2] <= 8.0  # 2 s, then 4 s, with jitter in [0.5, 1]


def test_persistent_failure_gives_up_as_transient_after_max_attempts(script: Script) -> None:
    script.answers = [(500, {})] * 10
    sleeps: list[float] = []
    with pytest.raises(TransientError, match="failed 4 times"):
        client(script, sleeps).download(START, END, io.BytesIO())
    assert len(script.requests) == 4 and len(sleeps) == 3


def test_an_unreachable_host_is_retried_then_transient() -> None:
    sleeps: list[float] = []
    unreachable = AmplitudeExportClient("http://127.0.0.1:9", "k", "s", sleep=sleeps.append, max_attempts=3)
    with pytest.raises(TransientError, match="ConnectionError"):
        unreachable.download(START, END, io.BytesIO())
    assert len(sleeps) == 2
