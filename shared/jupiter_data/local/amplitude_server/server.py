"""The fake Export API as an object: lifecycle, test controls (faults, request records,
configuration), and what the HTTP handler asks of it."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
from collections import deque
from collections.abc import Iterable
from datetime import date, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from jupiter_data.local.amplitude_data import HOUR, ExportSpec, ExportStats, as_hour
from jupiter_data.local.amplitude_server.export_cache import ExportCache
from jupiter_data.local.amplitude_server.faults import Fault, RequestRecord
from jupiter_data.local.amplitude_server.handler import Handler
from jupiter_data.ports import Clock, SystemClock

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "local-api-key"
DEFAULT_SECRET_KEY = "local-secret-key"  # noqa: S105 - a dev-only placeholder, not a secret


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
        self.clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._faults: deque[list[Any]] = deque()  # [Fault, remaining]
        self._requests: list[RequestRecord] = []
        self._cache = ExportCache(cache_windows)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------------- lifecycle

    def start(self) -> int:
        if self._httpd is not None:
            return self.port
        self._cache.open()
        httpd = ThreadingHTTPServer((self.host, self.port), Handler)
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
        self._cache.close()

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

    # ------------------------------------------------------------------------ for the HTTP handler

    def settings(self) -> tuple[ExportSpec, int]:
        """The spec and ``max_window_hours`` now, read together (configure() may change both)."""
        with self._lock:
            return self.spec, self.max_window_hours

    def export_file(self, spec: ExportSpec, first: datetime, last: datetime) -> tuple[Path, ExportStats]:
        """The zip of a window, generated once (per spec)."""
        return self._cache.get(spec, first, last)

    def take_fault(self, *, body: bool) -> Fault | None:
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

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def authorised(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        given = decoded.encode()
        wanted = f"{self.api_key}:{self.secret_key}".encode()
        return hmac.compare_digest(given, wanted)
