"""User events domain: push decoding, validation messages, row mapping and dead-letter rows. No I/O.

Row shapes are checked against the BigQuery schema files Terraform uses, so a column added to one side
and not the other fails here first.
"""

from __future__ import annotations

import base64
import builtins
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from jupiter_data.domain import events
from jupiter_data.domain.events import InvalidMessage, PubSubMessage
from jupiter_data.resources import SCHEMAS

SNS_ID = "5f2b1a8e-0c3d-5e8f-9a1b-2c3d4e5f6a7b"
TOPIC_ARN = "arn:aws:sns:eu-west-1:123456789012:user-events"
LOADED_AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
LOADED_MS = 1767323045678
EVENT_MS = 1700000000123  # 2023-11-14T22:13:20.123Z
MIN_MS = 946684800000  # 2000-01-01
MAX_MS = 4102444800000  # 2100-01-01


def _schema(name: str) -> list[dict[str, Any]]:
    return json.loads((SCHEMAS / "bigquery" / name).read_text())


EVENTS_SCHEMA = _schema("ops.all_user_events.json")
DEAD_LETTER_SCHEMA = _schema("ops.all_user_events_dead_letter.json")
EVENT_VALIDATOR = Draft202012Validator(
    json.loads((SCHEMAS / "events" / "user_event.schema.json").read_text())
)
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|\+00:00)$")


_MISSING = object()


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event; ``field=_MISSING`` leaves the field out."""
    base: dict[str, Any] = {"userId": "user-1", "eventType": "login", "timestamp": EVENT_MS}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _MISSING}


def message(
    data: bytes | Any = None,
    *,
    message_id: str = "1234567890",
    attributes: dict[str, str] | None = None,
    publish_time: datetime | None = datetime(2026, 1, 2, 3, 0, tzinfo=UTC),
) -> PubSubMessage:
    if data is None:
        data = event()
    if not isinstance(data, bytes):
        data = json.dumps(data).encode()
    if attributes is None:
        attributes = {
            "sns_message_id": SNS_ID,
            "sns_topic_arn": TOPIC_ARN,
            "sns_timestamp": "2026-01-02T03:00Z",
        }
    return PubSubMessage(message_id, data, attributes, publish_time)


def envelope(
    data: bytes,
    *,
    message_id: str = "1234567890",
    attributes: dict[str, Any] | None = None,
    publish_time: str = "2026-01-02T03:00:00.123Z",
) -> dict[str, Any]:
    """The ``data`` of the CloudEvent that functions-framework builds from a Pub/Sub push."""
    return {
        "message": {
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN}
            if attributes is None
            else attributes,
            "messageId": message_id,
            "publishTime": publish_time,
        },
        "subscription": "projects/jupiter-local/subscriptions/sns-events-pubsub-to-bigquery",
    }


def rows_of(msg: PubSubMessage, loaded_at: datetime = LOADED_AT) -> list[tuple[str, dict[str, Any]]]:
    return events.to_rows(msg, events.parse_events(msg.data), loaded_at)


def assert_matches_bigquery_schema(row: dict[str, Any], schema: list[dict[str, Any]]) -> None:
    """Exactly the schema's columns; REQUIRED ones non-null; values of the column's type."""
    assert sorted(row) == sorted(field["name"] for field in schema)
    for field in schema:
        value = row[field["name"]]
        if value is None:
            assert field["mode"] != "REQUIRED", f"{field['name']} is REQUIRED but null"
            continue
        if field["type"] == "INTEGER":
            assert type(value) is int, f"{field['name']}: {value!r} is not an int"
        elif field["type"] == "STRING":
            assert isinstance(value, str), f"{field['name']}: {value!r} is not a str"
        elif field["type"] == "TIMESTAMP":
            assert isinstance(value, str) and RFC3339_UTC.match(value), f"{field['name']}: {value!r}"
        else:  # pragma: no cover - a new column type needs a check here
            pytest.fail(f"no check for BigQuery type {field['type']}")


def _ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


# --- from_push -----------------------------------------------------------------------------------------


def test_from_push_decodes_the_cloud_event_data_of_a_push() -> None:
    payload = json.dumps(event()).encode()
    msg = PubSubMessage.from_push(
        envelope(payload, attributes={"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN, "n": 7})
    )
    assert msg.message_id == "1234567890"
    assert msg.data == payload
    assert msg.attributes == {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN, "n": "7"}
    assert msg.publish_time == datetime(2026, 1, 2, 3, 0, 0, 123000, tzinfo=UTC)


def test_a_real_push_through_functions_framework_keeps_the_publish_time_the_age_is_measured_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loader's too_old cutoff is the age since publishTime, which survives functions-framework's
    conversion of a push into a CloudEvent; deliveryAttempt does not, so the cutoff cannot count attempts
    and LOADER_MAX_RETRY_AGE is held under the retry policy instead (test_loader_settings)."""
    seen = tmp_path / "data.json"
    source = tmp_path / "push_probe.py"
    # functions-framework registers the source as a module and its folder on sys.path: undone afterwards.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setitem(sys.modules, "push_probe", None)
    source.write_text(
        "import json, pathlib\n"
        "import functions_framework\n"
        "@functions_framework.cloud_event\n"
        "def target(cloud_event):\n"
        f"    pathlib.Path({str(seen)!r}).write_text(json.dumps(cloud_event.data))\n"
    )
    app = functions_framework.create_app("target", str(source), "cloudevent")
    push = {**envelope(json.dumps(event()).encode()), "deliveryAttempt": 7}

    response = app.test_client().post("/", json=push)

    assert response.status_code == 200
    data = json.loads(seen.read_text())
    msg = PubSubMessage.from_push(data)
    assert msg.publish_time == datetime(2026, 1, 2, 3, 0, 0, 123000, tzinfo=UTC)
    assert msg.message_id == "1234567890"
    assert "deliveryAttempt" not in json.dumps(data)


def test_from_push_accepts_snake_case_keys_and_nanosecond_publish_times() -> None:
    msg = PubSubMessage.from_push(
        {
            "message": {
                "data": base64.b64encode(b"{}").decode(),
                "message_id": "42",
                "publish_time": "2014-10-02T15:01:23.045123456Z",
            }
        }
    )
    assert msg.message_id == "42"
    assert msg.data == b"{}"
    assert msg.attributes == {}
    assert msg.publish_time == datetime(2014, 10, 2, 15, 1, 23, 45123, tzinfo=UTC)


def test_from_push_reads_a_publish_time_without_zone_as_utc() -> None:
    msg = PubSubMessage.from_push(envelope(b"{}", publish_time="2026-01-02T03:00:00"))
    assert msg.publish_time == datetime(2026, 1, 2, 3, tzinfo=UTC)


GARBAGE_ENVELOPES: list[Any] = [
    None,
    5,
    "text",
    [1, 2],
    {},
    {"message": None},
    {"message": "not an object"},
    {"message": [1]},
    {"subscription": "projects/p/subscriptions/s"},
]


@pytest.mark.parametrize("garbage", GARBAGE_ENVELOPES)
def test_from_push_never_raises_on_a_garbage_envelope_and_keeps_its_json_as_data(garbage: Any) -> None:
    msg = PubSubMessage.from_push(garbage)
    assert msg.message_id.startswith("no-id-")  # derived from the content, never shared by two envelopes
    assert json.loads(msg.data) == garbage
    assert msg.attributes == {}
    assert msg.publish_time is None
    with pytest.raises(InvalidMessage):  # so the loader dead-letters it rather than retrying it forever
        events.parse_events(msg.data)


@pytest.mark.parametrize(
    "bad_message",
    [
        {"data": "!!! not base64 !!!", "messageId": "7"},
        {"data": "eyJ4IjoxfQ", "messageId": "7"},  # missing padding
        {"data": "ünïcode", "messageId": "7"},
        {"data": 12345, "messageId": "7"},
        {"data": ["a"], "messageId": "7"},
        {"data": {"nested": True}, "messageId": "7"},
    ],
)
def test_from_push_keeps_a_message_with_undecodable_data_as_json(bad_message: dict[str, Any]) -> None:
    msg = PubSubMessage.from_push({"message": bad_message})
    assert msg.message_id == "7"
    assert json.loads(msg.data) == bad_message
    with pytest.raises(InvalidMessage):
        events.parse_events(msg.data)


@pytest.mark.parametrize(
    "odd_message",
    [
        {"attributes": [1, 2]},
        {"attributes": "a=b"},
        {"attributes": None, "publishTime": 17},
        {"publishTime": "yesterday"},
        {"messageId": None, "data": None},
    ],
)
def test_from_push_tolerates_odd_fields_of_a_message(odd_message: dict[str, Any]) -> None:
    msg = PubSubMessage.from_push({"message": odd_message})
    assert msg.attributes == {}
    assert msg.publish_time is None
    assert isinstance(msg.data, bytes)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=12,
    )
)
def test_from_push_never_raises_on_any_json_value(garbage: Any) -> None:
    msg = PubSubMessage.from_push(garbage)
    assert isinstance(msg.data, bytes)
    assert isinstance(msg.message_id, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in msg.attributes.items())


# --- parse_events: valid input --------------------------------------------------------------------------


def test_a_single_object_is_one_event() -> None:
    assert events.parse_events(json.dumps(event()).encode()) == [event()]


def test_a_list_is_its_events_in_order() -> None:
    batch = [event(userId=f"user-{i}") for i in range(3)]
    assert events.parse_events(json.dumps(batch).encode()) == batch


def test_extra_fields_are_kept_and_never_a_rejection() -> None:
    legacy = event(hash="9f86d081884c7d659a2feaa0c55ad015", schemaVersion=1, extra={"x": [1, None]})
    assert events.parse_events(json.dumps(legacy).encode()) == [legacy]


@pytest.mark.parametrize("timestamp", [MIN_MS, MAX_MS, EVENT_MS, float(EVENT_MS)])
def test_timestamps_from_2000_to_2100_inclusive_are_accepted(timestamp: float) -> None:
    assert events.parse_events(json.dumps(event(timestamp=timestamp)).encode())[0]["timestamp"] == timestamp


@pytest.mark.parametrize("context", [None, {}, {"device": {"os": "ios"}}])
def test_context_may_be_an_object_or_null(context: Any) -> None:
    assert events.parse_events(json.dumps(event(context=context)).encode()) == [event(context=context)]


# --- parse_events: rejections --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b'{"userId": "u"',
        b"{'userId': 'u'}",  # Python, not JSON
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b'{"userId": "u", "eventType": "e", "timestamp": NaN}',
        b'{"userId": "u", "eventType": "e", "timestamp": 1700000000000, "context": {"x": Infinity}}',
        b"\xff\xfe\xfd",
        b'{"userId": "\xff\xfe", "eventType": "e", "timestamp": 1700000000000}',
        b"\xc3\x28",  # an invalid two-byte UTF-8 sequence
        b"print('x')",
        b"__import__('os').system('true')",
        b'{"userId": "u"} trailing',
    ],
)
def test_anything_but_json_is_invalid_json(data: bytes) -> None:
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(data)
    assert err.value.error_type == "invalid_json"
    assert str(err.value).startswith("message data is not JSON")


def test_message_bytes_are_never_executed(capsys: pytest.CaptureFixture[str]) -> None:
    for code in (
        b"print('x')",
        b"setattr(__import__('builtins'), 'JUPITER_EVAL_RAN', True)",
        b"exec(\"setattr(__import__('builtins'), 'JUPITER_EVAL_RAN', True)\")",
    ):
        with pytest.raises(InvalidMessage, match="not JSON"):
            events.parse_events(code)
    assert capsys.readouterr() == ("", "")
    assert not hasattr(builtins, "JUPITER_EVAL_RAN")


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (b"[]", "empty list"),
        (b"5", "$: 5 is not of type 'object'"),
        (b'"text"', "$: 'text' is not of type 'object'"),
        (b"null", "$: None is not of type 'object'"),
        (b"true", "$: True is not of type 'object'"),
        (b"[[]]", "$[0]: [] is not of type 'object'"),
        (b'[{"userId": "u", "eventType": "e", "timestamp": 1700000000000}, 7]', "$[1]: 7 is not of type"),
    ],
)
def test_empty_lists_and_items_that_are_not_objects_are_invalid_shape(data: bytes, where: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(data)
    assert err.value.error_type == "invalid_shape"
    assert where in str(err.value)


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (event(timestamp="1700000000000"), "$.timestamp: '1700000000000' is not of type 'integer'"),
        (event(timestamp=True), "$.timestamp: True is not of type 'integer'"),
        (event(timestamp=1700000000000.5), "$.timestamp: 1700000000000.5 is not of type 'integer'"),
        (event(timestamp=MIN_MS - 1), "$.timestamp: 946684799999 is less than the minimum"),
        (event(timestamp=MAX_MS + 1), "$.timestamp: 4102444800001 is greater than the maximum"),
        (event(timestamp=1700000000), "$.timestamp: 1700000000 is less than the minimum"),  # seconds, not ms
        (event(timestamp=None), "$.timestamp: None is not of type 'integer'"),
        (event(userId=""), "$.userId: '' should be non-empty"),
        (event(userId=42), "$.userId: 42 is not of type 'string'"),
        (event(userId="u" * 257), "$.userId: "),
        (event(eventType=["login"]), "$.eventType: ['login'] is not of type 'string'"),
        (event(context=["a"]), "$.context: ['a'] is not of type 'object', 'null'"),
        (event(context="{}"), "$.context: '{}' is not of type 'object', 'null'"),
        (event(userId=_MISSING), "$: 'userId' is a required property"),
        (event(eventType=_MISSING), "$: 'eventType' is a required property"),
        (event(timestamp=_MISSING), "$: 'timestamp' is a required property"),
    ],
)
def test_schema_violations_name_the_field_and_the_problem(bad: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(json.dumps(bad).encode())
    assert err.value.error_type == "schema_violation"
    assert expected in str(err.value)


def test_violations_in_a_list_name_the_item_and_every_problem_is_reported() -> None:
    batch = [event(), event(userId=_MISSING), event(userId=7, timestamp=True)]
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(json.dumps(batch).encode())
    text = str(err.value)
    assert err.value.error_type == "schema_violation"
    assert "$[1]: 'userId' is a required property" in text
    assert "$[2].timestamp: True is not of type 'integer'" in text
    assert "$[2].userId: 7 is not of type 'string'" in text
    assert "$[0]" not in text


def test_a_mix_of_objects_and_non_objects_is_invalid_shape() -> None:
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(json.dumps([event(userId=5), "not an event"]).encode())
    assert err.value.error_type == "invalid_shape"
    assert "$[0].userId" in str(err.value)
    assert "$[1]: 'not an event' is not of type 'object'" in str(err.value)


def test_at_most_ten_problems_are_listed() -> None:
    with pytest.raises(InvalidMessage) as err:
        events.parse_events(json.dumps([{"x": i} for i in range(50)]).encode())
    assert str(err.value).count("is a required property") == 10


def test_deeply_nested_json_is_an_invalid_message_not_a_crash() -> None:
    with pytest.raises(InvalidMessage):
        events.parse_events(b"[" * 100_000)


def test_an_overflowing_number_never_becomes_infinity_in_the_json_columns() -> None:
    data = json.dumps(event(context={"score": 1})).replace('"score": 1', '"score": 1e400').encode()
    msg = message(data)
    try:
        rows = rows_of(msg)
    except InvalidMessage as invalid:
        assert invalid.error_type == "invalid_json"
        return
    _strict_json(rows[0][1]["context"])
    _strict_json(rows[0][1]["raw_event"])


def _json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=10,
    )


VALID_EVENTS = st.fixed_dictionaries(
    {
        "userId": st.text(min_size=1, max_size=20),
        "eventType": st.text(min_size=1, max_size=20),
        "timestamp": st.integers(MIN_MS, MAX_MS),
    },
    optional={
        "context": st.none() | st.dictionaries(st.text(max_size=6), _json_values(), max_size=3),
        "hash": st.text(max_size=16),
    },
)


def _mutated_json(draw: st.DrawFn) -> bytes:
    """Valid events with a few bytes cut out and something JSON-ish (or not UTF-8) put in."""
    doc = draw(st.one_of(VALID_EVENTS, st.lists(VALID_EVENTS, min_size=1, max_size=3)))
    data = json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()
    at = draw(st.integers(0, len(data)))
    cut = draw(st.integers(0, 3))
    insert = draw(
        st.sampled_from(
            [b"", b"{", b"}", b"[", b"]", b'"', b",", b"NaN", b"1e400", b"true", b"\\ud800", b"\xff"]
        )
    )
    return data[:at] + insert + data[at + cut :]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=300),
        _json_values().map(lambda v: json.dumps(v).encode()),
        st.composite(_mutated_json)(),
    )
)
@example(b"print('x')")
@example(b'{"userId": "u", "eventType": "e", "timestamp": 1e400}')
@example(b"\xef\xbb\xbf{}")
def test_arbitrary_bytes_are_valid_events_or_an_invalid_message_never_anything_else(data: bytes) -> None:
    try:
        parsed = events.parse_events(data)
    except InvalidMessage as invalid:
        assert invalid.error_type in {"invalid_json", "invalid_shape", "schema_violation"}
        assert str(invalid)
        return
    assert isinstance(parsed, list)
    assert parsed
    for item in parsed:
        assert isinstance(item, dict)
        assert EVENT_VALIDATOR.is_valid(item)


# --- to_rows ------------------------------------------------------------------------------------------


def test_a_row_maps_every_column() -> None:
    msg = message(event(context={"device": "ios", "app": {"v": "1.2"}}, hash="abc"))
    [(row_id, row)] = rows_of(msg)
    assert row_id == f"{SNS_ID}:0"
    assert row == {
        "event_id": f"{SNS_ID}:0",
        "user_id": "user-1",
        "event_type": "login",
        "time_transaction_occurred": EVENT_MS,
        "event_timestamp": row["event_timestamp"],
        "source_of_event": "INTERNAL_SERVICES",
        "context": row["context"],
        "raw_event": row["raw_event"],
        "created_at": LOADED_MS,
        "updated_at": LOADED_MS,
        "pubsub_message_id": "1234567890",
        "sns_message_id": SNS_ID,
        "sns_topic_arn": TOPIC_ARN,
        "loaded_at": row["loaded_at"],
    }
    assert datetime.fromisoformat(row["event_timestamp"]) == datetime(
        2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC
    )
    assert datetime.fromisoformat(row["loaded_at"]) == LOADED_AT
    assert json.loads(row["context"]) == {"device": "ios", "app": {"v": "1.2"}}
    assert json.loads(row["raw_event"]) == event(context={"device": "ios", "app": {"v": "1.2"}}, hash="abc")


def test_every_row_has_exactly_the_table_columns_and_no_null_required_column() -> None:
    for msg in (
        message([event(), event(context=None), event(context={"a": 1}, hash="h")]),
        message(attributes={}),  # published straight to Pub/Sub: no SNS attributes
    ):
        for _, row in rows_of(msg):
            assert_matches_bigquery_schema(row, EVENTS_SCHEMA)


def test_event_ids_are_the_sns_message_id_and_the_index() -> None:
    rows = rows_of(message([event(userId="a"), event(userId="b"), event(userId="c")]))
    assert [row_id for row_id, _ in rows] == [f"{SNS_ID}:0", f"{SNS_ID}:1", f"{SNS_ID}:2"]
    assert [row["event_id"] for _, row in rows] == [row_id for row_id, _ in rows]
    assert [row["user_id"] for _, row in rows] == ["a", "b", "c"]


@pytest.mark.parametrize("attributes", [{}, {"sns_message_id": ""}, {"sns_topic_arn": TOPIC_ARN}])
def test_without_an_sns_message_id_event_ids_fall_back_to_the_pubsub_message_id(
    attributes: dict[str, str],
) -> None:
    msg = message([event(), event()], message_id="998877", attributes=attributes)
    assert events.event_id_base(msg) == "pubsub-998877"
    assert [row_id for row_id, _ in rows_of(msg)] == ["pubsub-998877:0", "pubsub-998877:1"]


def test_a_redelivered_message_gets_the_same_event_ids() -> None:
    payload = json.dumps([event(), event(eventType="logout")]).encode()
    first = rows_of(PubSubMessage.from_push(envelope(payload, message_id="1")), LOADED_AT)
    # SNS redelivers: a new Pub/Sub message with the same SNS message id, loaded later.
    again = rows_of(
        PubSubMessage.from_push(envelope(payload, message_id="2")), LOADED_AT + timedelta(minutes=5)
    )
    assert [i for i, _ in first] == [i for i, _ in again] == [f"{SNS_ID}:0", f"{SNS_ID}:1"]
    assert first[0][1]["loaded_at"] != again[0][1]["loaded_at"]


def test_the_same_pubsub_message_decoded_twice_gets_the_same_ids_without_sns() -> None:
    push = envelope(json.dumps(event()).encode(), attributes={})
    assert rows_of(PubSubMessage.from_push(push))[0][0] == rows_of(PubSubMessage.from_push(push))[0][0]


@pytest.mark.parametrize(
    ("context", "expected"),
    [({"b": [1, 2], "a": {"c": None}}, {"b": [1, 2], "a": {"c": None}}), ({}, {}), ({"ü": "☃"}, {"ü": "☃"})],
)
def test_context_is_compact_json_text(context: dict[str, Any], expected: dict[str, Any]) -> None:
    [(_, row)] = rows_of(message(event(context=context)))
    assert isinstance(row["context"], str)
    assert json.loads(row["context"]) == expected
    assert ", " not in row["context"] and ": " not in row["context"]


@pytest.mark.parametrize("data", [event(context=None), event()])
def test_null_or_missing_context_is_null(data: dict[str, Any]) -> None:
    [(_, row)] = rows_of(message(data))
    assert row["context"] is None
    assert json.loads(row["raw_event"]) == data


def test_a_whole_number_float_timestamp_becomes_an_integer_column() -> None:
    [(_, row)] = rows_of(message(event(timestamp=float(EVENT_MS))))
    assert type(row["time_transaction_occurred"]) is int
    assert row["time_transaction_occurred"] == EVENT_MS


@pytest.mark.parametrize("loaded_at", [LOADED_AT, datetime(2026, 1, 2, 4, 4, 5, 678000, tzinfo=UTC)])
def test_created_and_updated_at_are_the_load_time_in_ms(loaded_at: datetime) -> None:
    [(_, row)] = rows_of(message(), loaded_at)
    assert row["created_at"] == row["updated_at"] == _ms(loaded_at)


@settings(max_examples=200)
@given(
    st.lists(VALID_EVENTS, min_size=1, max_size=4),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
    st.sampled_from([{}, {"sns_message_id": SNS_ID, "sns_topic_arn": TOPIC_ARN}]),
)
def test_any_valid_events_map_to_rows_of_the_table_schema(
    batch: list[dict[str, Any]], loaded_at: datetime, attributes: dict[str, str]
) -> None:
    msg = message(batch, attributes=attributes)
    rows = rows_of(msg, loaded_at)
    assert len(rows) == len(batch)
    for index, ((row_id, row), source) in enumerate(zip(rows, batch, strict=True)):
        assert_matches_bigquery_schema(row, EVENTS_SCHEMA)
        assert row_id == row["event_id"] == f"{events.event_id_base(msg)}:{index}"
        assert row["time_transaction_occurred"] == source["timestamp"]
        assert _ms(datetime.fromisoformat(row["event_timestamp"])) == source["timestamp"]
        assert row["created_at"] == row["updated_at"] == _ms(loaded_at)
        assert datetime.fromisoformat(row["loaded_at"]) == loaded_at
        assert _strict_json(row["raw_event"]) == source
        if source.get("context") is None:
            assert row["context"] is None
        else:
            assert _strict_json(row["context"]) == source["context"]


# --- dead letters --------------------------------------------------------------------------------------


def test_a_dead_letter_row_has_exactly_the_dead_letter_columns() -> None:
    msg = message(b"\xff not json", attributes={"sns_message_id": SNS_ID, "k": "v"})
    received = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    row_id, row = events.dead_letter_row(msg, "invalid_json", "message data is not JSON", received, "rev-7")
    assert_matches_bigquery_schema(row, DEAD_LETTER_SCHEMA)
    assert row_id == "1234567890:invalid_json"
    assert row["dead_letter_id"] == row["pubsub_message_id"] == "1234567890"
    assert datetime.fromisoformat(row["received_at"]) == received
    assert datetime.fromisoformat(row["publish_time"]) == msg.publish_time
    assert json.loads(row["attributes"]) == {"sns_message_id": SNS_ID, "k": "v"}
    assert base64.b64decode(row["payload"]) == b"\xff not json"
    assert row["error_type"] == "invalid_json"
    assert row["error_message"] == "message data is not JSON"
    assert row["function_version"] == "rev-7"


def test_a_minimal_dead_letter_row_has_the_columns_ids_reason_and_a_bounded_payload() -> None:
    data = b"x" * (events.MINIMAL_PAYLOAD_BYTES + 10)
    msg = message(data, attributes={"sns_message_id": SNS_ID, "sns_topic_arn": "a" * 1000, "k": "v"})
    row_id, row = events.minimal_dead_letter_row(msg, "too_old", "r" * 50_000, "too big", LOADED_AT, "rev-7")
    assert_matches_bigquery_schema(row, DEAD_LETTER_SCHEMA)
    assert row_id == "1234567890:too_old:minimal"
    assert row["dead_letter_id"] == row["pubsub_message_id"] == "1234567890"
    assert json.loads(row["attributes"]) == {"sns_message_id": SNS_ID, "sns_topic_arn": "a" * 256}
    assert base64.b64decode(row["payload"]) == data[: events.MINIMAL_PAYLOAD_BYTES]
    assert row["error_message"].startswith("r" * 2000 + " [full dead-letter row refused: too big;")
    assert len(row["error_message"]) < 3_500


def test_a_dead_letter_without_publish_time_has_a_null_publish_time() -> None:
    msg = PubSubMessage.from_push("garbage")
    _, row = events.dead_letter_row(msg, "invalid_shape", "x", LOADED_AT, "local")
    assert_matches_bigquery_schema(row, DEAD_LETTER_SCHEMA)
    assert row["publish_time"] is None
    assert events.message_from_dead_letter(row).publish_time is None


def test_a_long_error_message_is_truncated() -> None:
    _, row = events.dead_letter_row(message(), "schema_violation", "e" * 50_000, LOADED_AT, "local")
    assert len(row["error_message"]) == 10_000


@given(
    data=st.binary(max_size=200),
    attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4),
    message_id=st.text(min_size=1, max_size=12),
    publish_time=st.none() | st.datetimes(timezones=st.just(UTC)),
)
def test_a_dead_letter_row_round_trips_to_the_original_message(
    data: bytes, attributes: dict[str, str], message_id: str, publish_time: datetime | None
) -> None:
    original = PubSubMessage(message_id, data, attributes, publish_time)
    _, row = events.dead_letter_row(original, "invalid_json", "why", LOADED_AT, "local")
    assert_matches_bigquery_schema(row, DEAD_LETTER_SCHEMA)
    assert events.message_from_dead_letter(row) == original


def test_a_dead_letter_read_back_from_bigquery_with_a_datetime_publish_time_round_trips() -> None:
    original = message([event(), event()])
    _, row = events.dead_letter_row(original, "rejected_by_bigquery", "why", LOADED_AT, "local")
    as_queried = {**row, "publish_time": original.publish_time}  # the client returns TIMESTAMPs as datetime
    restored = events.message_from_dead_letter(as_queried)
    assert restored == original
    assert rows_of(restored) == rows_of(original)  # a replay loads the same event ids


def test_distinct_garbage_envelopes_get_distinct_dead_letter_insert_ids() -> None:
    first = PubSubMessage.from_push({"message": {"data": base64.b64encode(b"{}").decode()}})
    second = PubSubMessage.from_push({"message": {"data": base64.b64encode(b"[]").decode()}})
    first_id, _ = events.dead_letter_row(first, "schema_violation", "a", LOADED_AT, "local")
    second_id, _ = events.dead_letter_row(second, "schema_violation", "b", LOADED_AT, "local")
    assert first_id != second_id
