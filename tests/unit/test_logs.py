from __future__ import annotations

import io
import json
import logging

import pytest

from jupiter_data.logs import JsonFormatter, configure_logging, request_trace, trace_fields


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("jupiter_test")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_severity_message_and_fields(captured: io.StringIO) -> None:
    logging.getLogger("jupiter_test").warning("loaded %d rows", 3, extra={"fields": {"table": "ops.x"}})
    (entry,) = lines(captured)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "loaded 3 rows"
    assert entry["table"] == "ops.x"
    assert entry["logging.googleapis.com/sourceLocation"]["function"] == (  # type: ignore[index]
        "test_a_line_is_one_json_object_with_severity_message_and_fields"
    )
    assert "logging.googleapis.com/trace" not in entry


def test_exceptions_carry_a_stack_trace(captured: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("jupiter_test").exception("load failed")
    (entry,) = lines(captured)
    assert entry["severity"] == "ERROR"
    assert "RuntimeError: boom" in str(entry["stack_trace"])


def test_trace_header_links_lines_inside_the_request_only(captured: io.StringIO) -> None:
    log = logging.getLogger("jupiter_test")
    headers = {"X-Cloud-Trace-Context": "105445aa7843bc8bf206b12000100000/1;o=1"}
    with request_trace(headers, "jupiter-staging"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(captured)
    assert inside["logging.googleapis.com/trace"] == (
        "projects/jupiter-staging/traces/105445aa7843bc8bf206b12000100000"
    )
    assert inside["logging.googleapis.com/spanId"] == "1"
    assert "logging.googleapis.com/trace" not in outside


def test_w3c_traceparent_is_understood_and_garbage_is_ignored() -> None:
    fields = trace_fields(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "p-roject"
    )
    assert (
        fields["logging.googleapis.com/trace"] == "projects/p-roject/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert fields["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert trace_fields({"X-Cloud-Trace-Context": "not-a-trace"}, "p-roject") == {}
    assert trace_fields({}, "p-roject") == {}


def test_configure_logging_is_idempotent() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        configure_logging("DEBUG")
        configure_logging("INFO")
        json_handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(json_handlers) == 1
        assert root.level == logging.INFO
    finally:
        root.handlers = saved
