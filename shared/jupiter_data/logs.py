"""Structured JSON logs that Cloud Logging parses from stdout.

One JSON object per line with ``severity`` and ``message``; extra fields passed as
``logger.info("...", extra={"fields": {...}})`` are merged in; when a request carried a trace header,
``logging.googleapis.com/trace`` (and ``spanId``) link the line to the request in Cloud Trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SOURCE_KEY = "logging.googleapis.com/sourceLocation"

# X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1   and W3C traceparent: 00-TRACE_ID-SPAN_ID-FLAGS
_CLOUD_TRACE = re.compile(r"^([0-9a-fA-F]{32})(?:/(\d+))?")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

_trace: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("trace", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            SOURCE_KEY: {"file": record.pathname, "line": record.lineno, "function": record.funcName},
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            entry.update(fields)
        entry.update(_trace.get() or {})
        if record.exc_info:
            # Error Reporting picks stack traces out of this field.
            entry["stack_trace"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    """Route the root logger to stdout as JSON. Idempotent, so every entry point may call it."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if isinstance(handler.formatter, JsonFormatter):
            return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]


def trace_fields(headers: Mapping[str, str], project: str) -> dict[str, str]:
    """Cloud Logging trace fields for a request's headers; empty when it carries no trace."""
    lowered = {key.lower(): value for key, value in headers.items()}
    trace_id = span_id = None
    if match := _CLOUD_TRACE.match(lowered.get("x-cloud-trace-context", "")):
        trace_id, span_id = match.group(1).lower(), match.group(2)
    elif match := _TRACEPARENT.match(lowered.get("traceparent", "")):
        trace_id, span_id = match.group(1), match.group(2)
    if trace_id is None:
        return {}
    fields = {TRACE_KEY: f"projects/{project}/traces/{trace_id}"}
    if span_id:
        fields[SPAN_KEY] = span_id
    return fields


@contextlib.contextmanager
def request_trace(headers: Mapping[str, str], project: str) -> Iterator[None]:
    """Attach the request's trace to every log line written inside the block."""
    token = _trace.set(trace_fields(headers, project) or None)
    try:
        yield
    finally:
        _trace.reset(token)
