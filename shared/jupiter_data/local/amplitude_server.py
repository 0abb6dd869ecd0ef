"""A local Amplitude Export API: ``GET /api/2/export`` from deterministic generated data. Dev only.

Answers like the real API: HTTP basic auth (API key : secret key) else 401; ``start``/``end`` as
``YYYYMMDDTHH`` (both hours inclusive) else 400; a window longer than ``max_window_hours`` → 400 as the
real "over 4 GB" answer (the caller must split it); a window whose hours are all empty → 404; otherwise
200 with the zip (see :mod:`jupiter_data.local.amplitude_data`). An hour has data only once it is over
by the server's clock (injectable), so today's later hours and any future day answer 404, as Amplitude
does; a window reaching past now holds only the hours that are over. The zip is generated once per window
into a temporary file and sent in chunks with a Content-Length, so memory stays flat at any size.

Faults on demand, for the next N export requests (after authentication): any status (429 carries
``Retry-After``), a 200 whose body is cut short with a matching Content-Length (a bad zip), a dropped
connection part-way through the advertised body, or a delay before answering. From Python with
``server.inject(...)``, from other processes with the admin endpoints (no auth; 127.0.0.1 only):

    POST   /admin/faults    {"status": 429, "count": 2, "retry_after": 1} | {"truncate": 0.5}
                            | {"disconnect": true} | {"delay": 2.5}
    DELETE /admin/faults
    GET    /admin/requests  (DELETE to reset)  every export request: window, status, fault, bytes
    GET    /admin/expected?start=…&end=…     the counts an export of that window holds
    POST   /admin/config    {"events_per_hour": …, "seed": …, "malformed_rate": …, "empty_days": […],
                             "empty_hours": ["YYYYMMDDTHH", …], "max_window_hours": …, "property_bags": …}
    GET    /healthz

    python -m jupiter_data.local.amplitude_server --port 8090 [--events-per-hour N] [--empty-day D]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from jupiter_data.local.amplitude_data import (
    HOUR,
    ExportSpec,
    ExportStats,
    as_hour,
    format_export_hour,
    parse_export_hour,
)
from jupiter_data.ports import Clock, SystemClock

log = logging.getLogger(__name__)

EXPORT_PATH = "/api/2/export"
DEFAULT_API_KEY = "local-api-key"
DEFAULT_SECRET_KEY = "local-secret-key"  # noqa: S105 - a dev-only placeholder, not a secret
TOO_LARGE_MESSAGE = "Raw data files were too large, please shorten the time range of the export (over 4GB)."
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Fault:
    """What to do to one export request instead of (or on top of) the normal answer.

    ``status``: answer with this status (429 adds ``Retry-After: retry_after``, default 1 s).
    ``truncate``: on a 200, send only this fraction of the zip, with a Content-Length that matches
    the cut (HTTP is fine; the zip is not). ``disconnect``: on a 200, advertise the whole zip, send
    ``truncate`` (default half) of it and close the connection (the client sees a broken transfer).
    ``delay``: seconds to wait before answering (to exercise client read timeouts).
    """

    status: int | None = None
    retry_after: int | None = None
    truncate: float | None = None
    disconnect: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.status is not None and not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.truncate is not None and not 0.0 <= self.truncate < 1.0:
            raise ValueError("truncate is the fraction of the body to send, within [0, 1)")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")

    @property
    def on_body(self) -> bool:
        """Applies only to a request that would be answered 200 with a zip."""
        return self.status is None and (self.truncate is not None or self.disconnect)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in asdict(self).items() if v not in (None, False, 0.0)]
        return ",".join(parts) or "none"


@dataclass(frozen=True)
class RequestRecord:
    """One request to the export endpoint, as the server answered it."""

    start: str | None
    end: str | None
    status: int
    fault: str | None
    bytes_sent: int  # the body the server sent (or began to send): the zip, or its cut
    at: float  # time.time()

    @property
    def window(self) -> tuple[str | None, str | None]:
        return self.start, self.end


class AmplitudeExportServer:
    """The fake Export API on a background thread; ``start()`` returns the port.

    Configuration (``spec``, ``max_window_hours``) may change while it runs; cached zips are keyed by
    the spec, so a change never serves stale content.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        events_per_hour: int = 1000,
        seed: int = 0,
        *,
        empty_days: Iterable[date] = (),
        empty_hours: Iterable[datetime] = (),
        malformed_rate: float = 0.0,
        max_window_hours: int = 24,
        spec: ExportSpec | None = None,
        cache_windows: int = 8,
        clock: Clock | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.api_key, self.secret_key = api_key, secret_key
        self.spec = spec or ExportSpec(
            events_per_hour=events_per_hour,
            seed=seed,
            malformed_rate=malformed_rate,
            empty_days=frozenset(empty_days),
            empty_hours=frozenset(empty_hours),
        )
        self.max_window_hours = max_window_hours
        self.cache_windows = cache_windows
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._faults: deque[list[Any]] = deque()  # [Fault, remaining]
        self._requests: list[RequestRecord] = []
        self._cache: OrderedDict[tuple[Any, ...], tuple[Path, ExportStats]] = OrderedDict()
        self._building: dict[tuple[Any, ...], threading.Lock] = {}
        self._cache_dir: Path | None = None
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------------- lifecycle

    def start(self) -> int:
        if self._httpd is not None:
            return self.port
        self._cache_dir = Path(tempfile.mkdtemp(prefix="amplitude-export-"))
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.amplitude = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="amplitude-export", daemon=True
        )
        self._thread.start()
        log.info("fake Amplitude Export API on %s", self.url)
        return self.port

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            self._cache.clear()
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def __enter__(self) -> AmplitudeExportServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, as ``AMPLITUDE_API_BASE_URL`` expects it."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------------------ test controls

    def inject(
        self,
        status: int | None = None,
        count: int = 1,
        *,
        retry_after: int | None = None,
        truncate: float | None = None,
        disconnect: bool = False,
        delay: float = 0.0,
    ) -> Fault:
        """Apply a fault to the next ``count`` export requests it fits (queued after earlier ones)."""
        if count < 1:
            raise ValueError("count must be >= 1")
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = Fault(
            status=status, retry_after=retry_after, truncate=truncate, disconnect=disconnect, delay=delay
        )
        if fault == Fault():
            raise ValueError("a fault needs a status, truncate, disconnect or delay")
        with self._lock:
            self._faults.append([fault, count])
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(remaining for _, remaining in self._faults)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every export request so far (including refused ones), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def windows(self) -> list[tuple[str | None, str | None]]:
        return [record.window for record in self.requests]

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def configure(self, **changes: Any) -> None:
        """Change ``max_window_hours`` and/or any ExportSpec field (events_per_hour, empty_days …)."""
        with self._lock:
            if "max_window_hours" in changes:
                self.max_window_hours = int(changes.pop("max_window_hours"))
            if changes:
                self.spec = self.spec.with_options(**changes)

    def available(self, start: datetime | date, end: datetime | date) -> tuple[datetime, datetime] | None:
        """The part of ``start``..``end`` whose hours are over by the clock (None: not one of them yet)."""
        first, last = as_hour(start), as_hour(end)
        newest = as_hour(self.clock.now()) - HOUR
        return (first, min(last, newest)) if first <= newest else None

    def expected(self, start: datetime | date, end: datetime | date) -> ExportStats:
        """The counts an export of ``start``..``end`` holds now, without generating it."""
        window = self.available(start, end)
        if window is None:
            return ExportStats(as_hour(start), as_hour(end))
        return self.spec.expected(*window)

    def prepare(self, start: datetime | date, end: datetime | date) -> ExportStats:
        """Generate (and cache) the zip of a window now, so a later request answers at once.

        A large uncached window takes a while before its first byte (about 20 s for 500k events),
        as the real API does; benchmarks call this first to time only the download.
        """
        window = self.available(start, end)
        if window is None:
            return ExportStats(as_hour(start), as_hour(end))
        with self._lock:
            spec = self.spec
        return self._export_file(spec, *window)[1]

    # ------------------------------------------------------------------------------------ internals

    def _take_fault(self, *, body: bool) -> Fault | None:
        """The front fault if it applies now (status/delay faults always, body faults only on a 200)."""
        with self._lock:
            if not self._faults:
                return None
            entry = self._faults[0]
            fault: Fault = entry[0]
            if fault.on_body and not body:
                return None
            entry[1] -= 1
            if entry[1] <= 0:
                self._faults.popleft()
            return fault

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.encode()
        wanted = f"{self.api_key}:{self.secret_key}".encode()
        return hmac.compare_digest(given, wanted)

    def _export_file(self, spec: ExportSpec, first: datetime, last: datetime) -> tuple[Path, ExportStats]:
        """The zip of a window, generated once (per spec) into the cache directory."""
        key = (spec, first, last)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0].exists():
                self._cache.move_to_end(key)
                return cached
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one generation per window, however many clients ask at once
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None and cached[0].exists():
                return cached
            if self._cache_dir is None:
                raise RuntimeError("the server is not running")
            fd, name = tempfile.mkstemp(
                dir=self._cache_dir, prefix=f"{format_export_hour(first)}-", suffix=".zip"
            )
            path = Path(name)
            try:
                with os.fdopen(fd, "wb") as handle:
                    stats = spec.write_zip(handle, first, last)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            finally:
                with self._lock:
                    self._building.pop(key, None)
            with self._lock:
                self._cache[key] = (path, stats)
                while len(self._cache) > max(self.cache_windows, 1):
                    # An open file survives unlinking, so a download in progress is unaffected.
                    _, (old, _) = self._cache.popitem(last=False)
                    old.unlink(missing_ok=True)
            log.info(
                "generated %s: %d events, %d members, %d bytes",
                path.name,
                stats.events,
                stats.members,
                stats.bytes,
            )
            return path, stats


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeAmplitude/1.0"

    @property
    def app(self) -> AmplitudeExportServer:
        return self.server.amplitude  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # ----------------------------------------------------------------------------------- routing

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == EXPORT_PATH:
            self._export(parse_qs(url.query))
        elif url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif url.path == "/admin/requests":
            self._json(200, [asdict(r) for r in self.app.requests])
        elif url.path == "/admin/expected":
            self._admin_expected(parse_qs(url.query))
        elif url.path == "/admin/faults":
            self._json(200, {"pending": self.app.pending_faults})
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        try:
            body = orjson.loads(self._read_body() or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if path == "/admin/faults":
                fields = {k: body[k] for k in ("retry_after", "truncate", "disconnect", "delay") if k in body}
                fault = self.app.inject(body.get("status"), int(body.get("count", 1)), **fields)
                self._json(200, {"fault": asdict(fault), "pending": self.app.pending_faults})
            elif path == "/admin/config":
                self.app.configure(**_config_changes(body))
                self._json(
                    200, {"spec": _spec_json(self.app.spec), "max_window_hours": self.app.max_window_hours}
                )
            else:
                self._send(404, b"not found\n", "text/plain")
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            self._json(400, {"error": str(exc)})

    def do_DELETE(self) -> None:
        path = urlsplit(self.path).path
        if path == "/admin/faults":
            self.app.clear_faults()
            self._json(200, {"pending": 0})
        elif path == "/admin/requests":
            self.app.reset_requests()
            self._json(200, {"requests": 0})
        else:
            self._send(404, b"not found\n", "text/plain")

    # ------------------------------------------------------------------------------------ export

    def _export(self, query: dict[str, list[str]]) -> None:
        app = self.app
        start_text, end_text = _one(query, "start"), _one(query, "end")

        def record(status: int, fault: Fault | None = None, sent: int = 0) -> None:
            desc = fault.describe() if fault else None
            app._record(RequestRecord(start_text, end_text, status, desc, sent, time.time()))

        if not app._authorised(self.headers.get("Authorization")):
            record(401)
            self._send(
                401,
                b"Invalid API key or secret key\n",
                "text/plain",
                {"WWW-Authenticate": 'Basic realm="Amplitude"'},
            )
            return
        fault = app._take_fault(body=False)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            message = {429: b"Too many requests\n", 504: b"Gateway Timeout\n"}.get(
                fault.status, b"Injected fault\n"
            )
            record(fault.status, fault)
            self._send(fault.status, message, "text/plain", headers)
            return
        try:
            if start_text is None or end_text is None:
                raise ValueError("both start and end are required, as YYYYMMDDTHH")
            first, last = parse_export_hour(start_text), parse_export_hour(end_text)
            if first > last:
                raise ValueError(f"start {start_text} is after end {end_text}")
        except ValueError as exc:
            record(400, fault)
            self._send(400, f"Invalid request: {exc}\n".encode(), "text/plain")
            return
        with app._lock:
            spec, max_hours = app.spec, app.max_window_hours
        if (last - first) // HOUR + 1 > max_hours:  # the real API's "over 4 GB": split the window
            record(400, fault)
            self._send(400, f"{TOO_LARGE_MESSAGE}\n".encode(), "text/plain")
            return
        window = app.available(first, last)
        if window is None or not spec.has_data(*window):
            record(404, fault)
            self._send(404, b"No data available for the requested time range\n", "text/plain")
            return
        try:
            path, _ = app._export_file(spec, *window)
        except Exception:
            log.exception("could not generate the export %s..%s", start_text, end_text)
            record(500, fault)
            self._send(500, b"Internal error while generating the export\n", "text/plain")
            return
        if fault is None:
            fault = app._take_fault(body=True)
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
        self._send_file(
            path, f"amplitude-{start_text}-{end_text}.zip", fault, lambda size: record(200, fault, size)
        )

    def _send_file(
        self, path: Path, filename: str, fault: Fault | None, record: Callable[[int], None]
    ) -> None:
        """Send the zip in chunks; ``record`` is told the body size before the client can see its end."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            limit = size
            advertised = size
            if fault is not None and fault.disconnect:
                limit = int(size * (fault.truncate if fault.truncate is not None else 0.5))
                self.close_connection = True
            elif fault is not None and fault.truncate is not None:
                limit = advertised = int(size * fault.truncate)
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(advertised))
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            record(limit)
            sent = 0
            try:
                while sent < limit:
                    chunk = handle.read(min(_CHUNK, limit - sent))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def _admin_expected(self, query: dict[str, list[str]]) -> None:
        try:
            start, end = _one(query, "start"), _one(query, "end")
            if start is None or end is None:
                raise ValueError("both start and end are required, as YYYYMMDDTHH")
            stats = self.app.expected(parse_export_hour(start), parse_export_hour(end))
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, stats.to_json())

    # ----------------------------------------------------------------------------------- helpers

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, orjson.dumps(payload) + b"\n", "application/json")

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _config_changes(body: dict[str, Any]) -> dict[str, Any]:
    allowed = {"events_per_hour", "seed", "malformed_rate", "late_fraction", "empty_days", "empty_hours"}
    allowed |= {"max_window_hours", "compresslevel", "app_id", "property_bags"}
    unknown = set(body) - allowed
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    changes = dict(body)
    if "empty_days" in changes:
        changes["empty_days"] = frozenset(date.fromisoformat(d) for d in changes["empty_days"])
    if "empty_hours" in changes:
        changes["empty_hours"] = frozenset(parse_export_hour(h) for h in changes["empty_hours"])
    return changes


def _spec_json(spec: ExportSpec) -> dict[str, Any]:
    return {
        "events_per_hour": spec.events_per_hour,
        "seed": spec.seed,
        "app_id": spec.app_id,
        "late_fraction": spec.late_fraction,
        "malformed_rate": spec.malformed_rate,
        "empty_days": sorted(d.isoformat() for d in spec.empty_days),
        "empty_hours": sorted(format_export_hour(h) for h in spec.empty_hours),
        "compresslevel": spec.compresslevel,
        "property_bags": spec.property_bags,
    }


def main(argv: list[str] | None = None) -> None:
    from jupiter_data.logs import configure_logging

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=8090)
    parser.add_argument("--api-key", default=os.environ.get("AMPLITUDE_API_KEY", DEFAULT_API_KEY))
    parser.add_argument(
        "--secret-key-env", default="AMPLITUDE_SECRET_KEY", help="variable holding the secret key"
    )
    parser.add_argument("--events-per-hour", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument(
        "--empty-day", action="append", default=[], type=date.fromisoformat, help="YYYY-MM-DD"
    )
    parser.add_argument(
        "--empty-hour", action="append", default=[], type=parse_export_hour, help="YYYYMMDDTHH"
    )
    parser.add_argument("--max-window-hours", type=int, default=24)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    server = AmplitudeExportServer(
        args.host,
        args.port,
        api_key=args.api_key,
        # The secret comes from the environment, never argv (argv is visible to every local user).
        secret_key=os.environ.get(args.secret_key_env, DEFAULT_SECRET_KEY),
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
        empty_days=args.empty_day,
        empty_hours=args.empty_hour,
        max_window_hours=args.max_window_hours,
    )
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    server.start()
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
