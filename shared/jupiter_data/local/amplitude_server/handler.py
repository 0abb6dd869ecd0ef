"""The HTTP side: routes the export endpoint and the admin endpoints to an AmplitudeExportServer."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import orjson

from jupiter_data.local.amplitude_data import HOUR, ExportSpec, format_export_hour, parse_export_hour
from jupiter_data.local.amplitude_server.faults import Fault, RequestRecord

if TYPE_CHECKING:
    from jupiter_data.local.amplitude_server.server import AmplitudeExportServer

log = logging.getLogger(__name__)

EXPORT_PATH = "/api/2/export"
TOO_LARGE_MESSAGE = "Raw data files were too large, please shorten the time range of the export (over 4GB)."
_CHUNK = 256 * 1024


class Handler(BaseHTTPRequestHandler):
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
            app.record(RequestRecord(start_text, end_text, status, desc, sent, time.time()))

        if not app.authorised(self.headers.get("Authorization")):
            record(401)
            self._send(
                401,
                b"Invalid API key or secret key\n",
                "text/plain",
                {"WWW-Authenticate": 'Basic realm="Amplitude"'},
            )
            return
        fault = app.take_fault(body=False)
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
        spec, max_hours = app.settings()
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
            path, _ = app.export_file(spec, *window)
        except Exception:
            log.exception("could not generate the export %s..%s", start_text, end_text)
            record(500, fault)
            self._send(500, b"Internal error while generating the export\n", "text/plain")
            return
        if fault is None:
            fault = app.take_fault(body=True)
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
