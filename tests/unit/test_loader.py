"""Loader on fakes: what is loaded, what is dead-lettered, what is retried, and what is logged.

A message is acknowledged when ``handle`` returns and redelivered when it raises, so every test pins
down which of the two happens and what the warehouse holds at that moment.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jupiter_data.domain.events import DEAD_LETTER_TABLE, EVENTS_TABLE, PubSubMessage
from jupiter_data.logs import JsonFormatter
from jupiter_data.ports import TransientError
from jupiter_data.services.batcher import InsertBatcher
from jupiter_data.services.loader import Loader, LoaderSettings, Outcome
from tests.fakes import FakeClock, FakeWarehouse
from tests.support import all_log_text

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SNS_ID = "0c1d2e3f-4a5b-5c6d-8e9f-a0b1c2d3e4f5"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:user-events"
VERSION = "pubsub-to-bigquery-00042-xyz"
SECRET = "card-4111111111111111-do-not-log"
SETTINGS = LoaderSettings(
    max_retry_age=timedelta(hours=24),
    threads=None,
    batch_max_rows=500,
    batch_max_wait_ms=0,
    function_version=VERSION,
)


def scripted(
    failures: Mapping[str, Sequence[BaseException]] | None = None, reject_user_ids: Sequence[str] = ()
) -> FakeWarehouse:
    """A warehouse whose tables' next calls raise ``failures[table]`` in turn, and that refuses a call
    holding a row of ``reject_user_ids`` as BigQuery refuses bad rows."""
    warehouse = FakeWarehouse(reject=lambda row: row.get("user_id") in reject_user_ids)
    for table, errors in (failures or {}).items():
        warehouse.fail_next(table, *errors)
    return warehouse


def sizes(warehouse: FakeWarehouse) -> list[tuple[str, int]]:
    """Each insert call's table and number of rows."""
    return [(table, len(ids)) for table, ids in warehouse.calls]


def event(**overrides: Any) -> dict[str, Any]:
    return {"userId": "user-1", "eventType": "login", "timestamp": 1767268800000, **overrides}


def message(
    data: Any = None,
    *,
    message_id: str = "1111",
    attributes: dict[str, str] | None = None,
    age: timedelta | None = timedelta(minutes=1),
) -> PubSubMessage:
    payload = data if isinstance(data, bytes) else json.dumps(event() if data is None else data).encode()
    return PubSubMessage(
        message_id=message_id,
        data=payload,
        attributes={"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN}
        if attributes is None
        else attributes,
        publish_time=None if age is None else NOW - age,
    )


def make_loader(
    warehouse: FakeWarehouse, clock: FakeClock | None = None, settings: LoaderSettings = SETTINGS
) -> Loader:
    return Loader(settings, warehouse, clock or FakeClock(NOW))


def the_dead_letter(warehouse: FakeWarehouse) -> dict[str, Any]:
    [row] = warehouse.rows(DEAD_LETTER_TABLE)
    return row


# --- loading ------------------------------------------------------------------------------------------


def test_a_valid_message_loads_its_events_and_nothing_is_dead_lettered() -> None:
    warehouse = scripted()
    msg = message([event(), event(eventType="logout", context={"ip": "10.0.0.1"}, hash="h")])

    outcome = make_loader(warehouse).handle(msg)

    assert outcome == Outcome("loaded", rows=2)
    assert [rid for rid, _ in warehouse.tables[EVENTS_TABLE]] == [f"{SNS_ID}:0", f"{SNS_ID}:1"]
    rows = warehouse.rows(EVENTS_TABLE)
    assert [r["event_type"] for r in rows] == ["login", "logout"]
    assert json.loads(rows[1]["context"]) == {"ip": "10.0.0.1"}
    assert json.loads(rows[1]["raw_event"])["hash"] == "h"
    assert all(datetime.fromisoformat(r["loaded_at"]) == NOW for r in rows)
    assert warehouse.rows(DEAD_LETTER_TABLE) == []
    assert sizes(warehouse) == [(EVENTS_TABLE, 2)]


def test_a_redelivered_message_is_inserted_under_the_same_insert_ids() -> None:
    warehouse = scripted()
    loader = make_loader(warehouse)
    loader.handle(message([event(), event()], message_id="1"))
    loader.handle(message([event(), event()], message_id="2"))  # SNS redelivery: new Pub/Sub message
    ids = [rid for rid, _ in warehouse.tables[EVENTS_TABLE]]
    assert ids == [f"{SNS_ID}:0", f"{SNS_ID}:1"] * 2  # the view (and insertId) keeps one of each


def test_the_default_batcher_follows_the_settings() -> None:
    warehouse = scripted()
    settings = LoaderSettings(
        timedelta(hours=24), threads=2, batch_max_rows=None, batch_max_wait_ms=1000, function_version="v"
    )
    loader = make_loader(warehouse, settings=settings)
    assert (loader.batcher.max_rows, loader.batcher.max_wait) == (2, 1.0)  # THREADS rows
    assert loader.handle(message([event(), event()])) == Outcome("loaded", rows=2)


def test_concurrent_messages_share_one_insert_and_a_rejected_one_is_dead_lettered_alone() -> None:
    warehouse = scripted(reject_user_ids=["poison"])
    loader = Loader(
        SETTINGS, warehouse, FakeClock(NOW), InsertBatcher(warehouse, max_rows=10, max_wait=3600.0)
    )
    messages = [
        message(event(userId="poison" if i == 4 else f"user-{i}"), message_id=str(i), attributes={})
        for i in range(10)
    ]
    outcomes: list[Outcome | BaseException | None] = [None] * len(messages)
    barrier = threading.Barrier(len(messages))

    def handle(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = loader.handle(messages[i])
        except BaseException as exc:  # recorded for the assertions below
            outcomes[i] = exc

    threads = [threading.Thread(target=handle, args=(i,), daemon=True) for i in range(len(messages))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)

    assert outcomes[4] == Outcome("dead_lettered", error_type="rejected_by_bigquery")
    assert all(outcomes[i] == Outcome("loaded", rows=1) for i in range(10) if i != 4)
    assert sorted(r["user_id"] for r in warehouse.rows(EVENTS_TABLE)) == sorted(
        f"user-{i}" for i in range(10) if i != 4
    )
    assert the_dead_letter(warehouse)["pubsub_message_id"] == "4"
    # One shared insert, refused; each message's rows again on their own; one dead letter.
    assert sizes(warehouse).count((EVENTS_TABLE, 10)) == 1
    assert sizes(warehouse).count((EVENTS_TABLE, 1)) == 10
    assert sizes(warehouse).count((DEAD_LETTER_TABLE, 1)) == 1


# --- dead letters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error_type", "reason"),
    [
        (b"print('x')", "invalid_json", "not JSON"),
        (b"\xff\xfe garbage", "invalid_json", "not JSON"),
        (b'{"userId": "u", "eventType": "e", "timestamp": NaN}', "invalid_json", "NaN is not valid JSON"),
        (b"[]", "invalid_shape", "empty list"),
        (b'["a"]', "invalid_shape", "$[0]"),
        (json.dumps(event(timestamp="yesterday")).encode(), "schema_violation", "$.timestamp"),
        (json.dumps([event(), event(userId=None)]).encode(), "schema_violation", "$[1].userId"),
    ],
)
def test_an_invalid_message_is_dead_lettered_with_its_reason_and_raw_payload(
    data: bytes, error_type: str, reason: str
) -> None:
    warehouse = scripted()
    attributes = {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN, "sns_timestamp": "2026-01-01T11:59Z"}
    msg = message(data, message_id="2222", attributes=attributes)

    outcome = make_loader(warehouse).handle(msg)

    assert outcome == Outcome("dead_lettered", error_type=error_type)
    assert warehouse.rows(EVENTS_TABLE) == []
    assert warehouse.tables[DEAD_LETTER_TABLE][0][0] == f"2222:{error_type}"
    row = the_dead_letter(warehouse)
    assert row["error_type"] == error_type
    assert reason in row["error_message"]
    assert base64.b64decode(row["payload"]) == data
    assert json.loads(row["attributes"]) == attributes
    assert row["function_version"] == VERSION
    assert row["pubsub_message_id"] == row["dead_letter_id"] == "2222"
    assert datetime.fromisoformat(row["received_at"]) == NOW
    assert datetime.fromisoformat(row["publish_time"]) == msg.publish_time


def test_a_garbage_push_envelope_is_dead_lettered_not_retried() -> None:
    warehouse = scripted()
    outcome = make_loader(warehouse).handle(PubSubMessage.from_push({"unexpected": "shape"}))
    assert outcome.status == "dead_lettered"
    assert json.loads(base64.b64decode(the_dead_letter(warehouse)["payload"])) == {"unexpected": "shape"}


def test_rows_bigquery_refuses_are_dead_lettered_as_rejected_by_bigquery() -> None:
    warehouse = scripted(reject_user_ids=["user-1"])
    outcome = make_loader(warehouse).handle(message([event(), event(userId="user-2")]))
    assert outcome == Outcome("dead_lettered", error_type="rejected_by_bigquery")
    assert warehouse.rows(EVENTS_TABLE) == []
    row = the_dead_letter(warehouse)
    assert f"rejected by {EVENTS_TABLE}" in row["error_message"]
    assert json.loads(base64.b64decode(row["payload"]))[1]["userId"] == "user-2"


def test_a_valid_json_message_that_cannot_be_mapped_to_rows_is_dead_lettered_not_raised() -> None:
    """Finding 6. json.loads accepts a nesting depth that mapping the event to rows (json.dumps of the raw
    event, a frame deeper) cannot reach: somewhere below the recursion limit a message parses and then
    raises RecursionError. Every depth must end as loaded or as a dead letter with its reason."""
    limit = sys.getrecursionlimit()
    unmappable = []
    for depth in range(limit - 300, limit + 10):
        warehouse = scripted()
        nested = "[" * depth + "]" * depth
        data = f'{{"userId":"u","eventType":"e","timestamp":1767268800000,"context":{{"a":{nested}}}}}'
        outcome = make_loader(warehouse).handle(message(data.encode(), message_id=str(depth)))
        if outcome.status == "dead_lettered":
            row = the_dead_letter(warehouse)
            assert row["error_type"] == outcome.error_type and row["error_message"]
            assert base64.b64decode(row["payload"]) == data.encode()
            if outcome.error_type == "unprocessable":
                unmappable.append(row["error_message"])
        else:
            assert outcome == Outcome("loaded", rows=1)
    assert unmappable, "no depth parsed but failed to map: the test no longer reaches the case it guards"
    assert all("RecursionError" in reason and "nested too deeply" in reason for reason in unmappable)


# --- transient failures and the age cutoff ------------------------------------------------------------


@pytest.mark.parametrize("age", [timedelta(minutes=1), timedelta(hours=24), None])
def test_a_transient_error_is_raised_for_redelivery_and_nothing_is_dead_lettered(
    age: timedelta | None,
) -> None:
    warehouse = scripted(failures={EVENTS_TABLE: [TransientError("503 backendError")]})
    with pytest.raises(TransientError, match="503"):
        make_loader(warehouse).handle(message(age=age))
    assert warehouse.rows(EVENTS_TABLE) == []
    assert warehouse.rows(DEAD_LETTER_TABLE) == []


def test_a_redelivery_after_the_warehouse_recovers_loads_the_message() -> None:
    warehouse = scripted(failures={EVENTS_TABLE: [TransientError("timeout")] * 2})
    clock = FakeClock(NOW)
    loader = make_loader(warehouse, clock)
    msg = message()
    for _ in range(2):
        with pytest.raises(TransientError):
            loader.handle(msg)
        clock.advance(minutes=10)
    assert loader.handle(msg) == Outcome("loaded", rows=1)
    assert len(warehouse.rows(EVENTS_TABLE)) == 1
    assert warehouse.rows(DEAD_LETTER_TABLE) == []


def test_a_message_still_failing_after_max_retry_age_is_dead_lettered_as_too_old() -> None:
    warehouse = scripted(failures={EVENTS_TABLE: [TransientError("503 backendError")] * 2})
    clock = FakeClock(NOW)
    loader = make_loader(warehouse, clock)
    msg = message(age=timedelta(0))  # published now

    with pytest.raises(TransientError):
        loader.handle(msg)
    clock.advance(hours=24, seconds=1)
    outcome = loader.handle(msg)

    assert outcome == Outcome("dead_lettered", error_type="too_old")
    assert warehouse.rows(EVENTS_TABLE) == []
    row = the_dead_letter(warehouse)
    assert row["error_type"] == "too_old"
    assert "503 backendError" in row["error_message"]
    assert base64.b64decode(row["payload"]) == msg.data
    assert datetime.fromisoformat(row["received_at"]) == clock.now()


def test_the_age_cutoff_follows_the_setting() -> None:
    settings = LoaderSettings(timedelta(minutes=30), None, 500, 0, VERSION)
    warehouse = scripted(failures={EVENTS_TABLE: [TransientError("quota")] * 2})
    loader = make_loader(warehouse, settings=settings)
    with pytest.raises(TransientError):
        loader.handle(message(age=timedelta(minutes=30)))
    assert loader.handle(message(age=timedelta(minutes=31))).error_type == "too_old"


def test_an_old_message_that_loads_is_loaded_not_dead_lettered() -> None:
    warehouse = scripted()
    assert make_loader(warehouse).handle(message(age=timedelta(days=6))) == Outcome("loaded", rows=1)
    assert warehouse.rows(DEAD_LETTER_TABLE) == []


def failing_case(
    case: str, dead_letter_failures: Sequence[BaseException], data: Any = None
) -> tuple[FakeWarehouse, PubSubMessage, str]:
    """A warehouse and a message that dead-letters for reason ``case``, with the dead-letter table's
    next inserts failing as given."""
    failures: dict[str, Sequence[BaseException]] = {DEAD_LETTER_TABLE: dead_letter_failures}
    msg, error_type = message(data), "rejected_by_bigquery"
    if case == "invalid":
        msg, error_type = message(b"not json " + b"x" * 100_000), "invalid_json"
    elif case == "too_old":
        failures[EVENTS_TABLE] = [TransientError("503")]
        msg, error_type = message(data, age=timedelta(days=2)), "too_old"
    warehouse = scripted(failures=failures, reject_user_ids=["user-1"] if case == "rejected" else ())
    return warehouse, msg, error_type


@pytest.mark.parametrize("case", ["invalid", "too_old", "rejected"])
def test_a_transient_failure_to_store_the_dead_letter_propagates_so_the_message_is_redelivered(
    case: str,
) -> None:
    error = TransientError("dead-letter table unavailable")
    warehouse, msg, _ = failing_case(case, [error])

    with pytest.raises(TransientError) as raised:
        make_loader(warehouse).handle(msg)

    assert raised.value is error
    assert warehouse.rows(EVENTS_TABLE) == []
    assert warehouse.rows(DEAD_LETTER_TABLE) == []
    assert sizes(warehouse).count((DEAD_LETTER_TABLE, 1)) == 1


@pytest.mark.parametrize("case", ["invalid", "too_old", "rejected"])
def test_a_refused_dead_letter_row_falls_back_to_a_minimal_one_with_ids_reason_and_truncated_payload(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 7: e.g. a 10 MB message's dead-letter row is over BigQuery's row limit. The minimal row is
    stored and the message acknowledged; never left to Pub/Sub's dead-letter topic without a reason."""
    caplog.set_level(logging.INFO)
    big = [event(note="n" * 100_000, context={"card": SECRET})]
    warehouse, msg, error_type = failing_case(case, [ValueError("row larger than the maximum allowed")], big)
    attributes = {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN, "odd": "v" * 5000}
    msg = PubSubMessage(msg.message_id, msg.data, attributes, msg.publish_time)

    outcome = make_loader(warehouse).handle(msg)

    assert outcome == Outcome("dead_lettered", error_type=error_type)
    assert sizes(warehouse).count((DEAD_LETTER_TABLE, 1)) == 2  # the full row (refused), the minimal one
    [(insert_id, row)] = warehouse.tables[DEAD_LETTER_TABLE]
    assert insert_id == f"{msg.message_id}:{error_type}:minimal"
    assert row["dead_letter_id"] == row["pubsub_message_id"] == msg.message_id
    assert row["error_type"] == error_type
    assert datetime.fromisoformat(row["publish_time"]) == msg.publish_time
    assert json.loads(row["attributes"]) == {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN}
    payload = base64.b64decode(row["payload"])
    assert len(msg.data) > len(payload) > 0 and msg.data.startswith(payload)
    assert "row larger than the maximum allowed" in row["error_message"]
    assert f"payload truncated to {len(payload)} of {len(msg.data)} bytes" in row["error_message"]
    assert row["function_version"] == VERSION
    assert len(json.dumps(row)) < 200_000
    # Still the one line the dead-letter metric counts, plus an ERROR for the refusal.
    [line] = [r for r in caplog.records if r.getMessage().startswith("dead-lettered message: ")]
    assert line.fields["error_type"] == error_type  # type: ignore[attr-defined]
    assert line.fields["dead_letter_row"] == "minimal"  # type: ignore[attr-defined]
    assert any(r.levelno == logging.ERROR for r in caplog.records)
    assert SECRET not in all_log_text(caplog.records)


def test_when_even_the_minimal_dead_letter_row_is_refused_the_message_is_not_acknowledged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    refusals = [ValueError("refused"), ValueError("refused again")]
    warehouse, msg, _ = failing_case("invalid", refusals)

    with pytest.raises(ValueError, match="refused again"):
        make_loader(warehouse).handle(msg)

    assert warehouse.rows(DEAD_LETTER_TABLE) == []
    assert sizes(warehouse).count((DEAD_LETTER_TABLE, 1)) == 2
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_an_unexpected_warehouse_error_propagates_and_is_not_dead_lettered() -> None:
    warehouse = scripted(failures={EVENTS_TABLE: [TypeError("client bug")]})
    with pytest.raises(TypeError):
        make_loader(warehouse).handle(message(age=timedelta(days=2)))
    assert warehouse.rows(DEAD_LETTER_TABLE) == []


# --- logs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "failures", "expected"),
    [
        (event(context={"card": SECRET}, hash=SECRET), {}, "loaded"),
        (f"{{not json {SECRET}".encode(), {}, "invalid_json"),
        (event(timestamp="x", context={"card": SECRET}), {}, "schema_violation"),
        ([event(note=SECRET), event(userId=None)], {}, "schema_violation"),
        (event(context={"card": SECRET}), {EVENTS_TABLE: [TransientError("503")]}, "transient"),
    ],
)
def test_logs_name_the_message_but_never_contain_the_payload(
    caplog: pytest.LogCaptureFixture, data: Any, failures: dict[str, list[BaseException]], expected: str
) -> None:
    caplog.set_level(logging.DEBUG)
    warehouse = scripted(failures=failures)
    try:
        outcome = make_loader(warehouse).handle(message(data, message_id="3333"))
    except TransientError:
        outcome = Outcome("transient")
    assert (outcome.error_type or outcome.status) == expected
    records = [r for r in caplog.records if r.name.startswith("jupiter_data")]
    assert records
    for record in records:
        fields = record.fields  # type: ignore[attr-defined]
        assert fields["pubsub_message_id"] == "3333"
        assert fields["sns_message_id"] == SNS_ID
        entry = json.loads(JsonFormatter().format(record))
        assert entry["pubsub_message_id"] == "3333"
    if expected not in {"loaded", "transient"}:
        assert [r.fields["error_type"] for r in records] == [expected]  # type: ignore[attr-defined]
        assert records[0].levelno == logging.WARNING
    assert SECRET not in all_log_text(caplog.records)


def test_a_too_old_dead_letter_log_never_contains_the_payload(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    warehouse = scripted(failures={EVENTS_TABLE: [TransientError("503")]})
    outcome = make_loader(warehouse).handle(message(event(context={"card": SECRET}), age=timedelta(days=3)))
    assert outcome.error_type == "too_old"
    assert SECRET not in all_log_text(caplog.records)


def test_a_schema_violation_never_echoes_the_offending_value_into_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    warehouse = scripted()
    outcome = make_loader(warehouse).handle(message(event(timestamp=SECRET)))
    assert outcome.error_type == "schema_violation"
    assert SECRET in the_dead_letter(warehouse)["error_message"]  # the dead-letter table may keep it
    assert SECRET not in all_log_text(caplog.records)
