"""User events from Pub/Sub: decoding, validation against the JSON Schema, and BigQuery rows. No I/O.

Input is data, never code: message bytes are parsed as JSON and checked against
``schemas/events/user_event.schema.json``; anything else becomes an ``InvalidMessage`` naming the field
and the problem, which the loader writes to the dead-letter table.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator

from jupiter_data.resources import SCHEMAS

EVENTS_TABLE = "ops.all_user_events"
DEAD_LETTER_TABLE = "ops.all_user_events_dead_letter"
REPLAYS_TABLE = "ops.all_user_events_dead_letter_replays"
SOURCE_OF_EVENT = "INTERNAL_SERVICES"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidMessage(Exception):
    """The message can never load; ``error_type`` classifies why for the dead-letter table.

    ``str()`` is the full reason for the dead-letter row and may quote payload values; ``summary``
    names only fields and rules, for logs.
    """

    def __init__(self, error_type: str, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.summary = summary or error_type


@dataclass(frozen=True)
class PubSubMessage:
    message_id: str
    data: bytes
    attributes: dict[str, str]
    publish_time: datetime | None

    @classmethod
    def from_push(cls, envelope: Mapping[str, Any]) -> PubSubMessage:
        """The ``message`` of a push envelope / Pub/Sub CloudEvent's data.

        Never raises: an envelope that is not shaped like a message still yields a ``PubSubMessage``
        (its raw JSON as data) so the loader can dead-letter it instead of retrying it forever.
        """
        message = envelope.get("message") if isinstance(envelope, Mapping) else None
        if not isinstance(message, Mapping):
            raw = json.dumps(envelope, default=str).encode()
            return cls(_content_id(raw), raw, {}, None)
        message_id = str(message.get("messageId") or message.get("message_id") or _content_id(message))
        attributes = message.get("attributes") or {}
        try:
            data = base64.b64decode(message.get("data") or "", validate=True)
        except (binascii.Error, TypeError, ValueError):
            data = json.dumps(message, default=str).encode()
        return cls(
            message_id=message_id,
            data=data,
            attributes={str(k): str(v) for k, v in attributes.items()}
            if isinstance(attributes, Mapping)
            else {},
            publish_time=_rfc3339(message.get("publishTime") or message.get("publish_time")),
        )


def _content_id(content: object) -> str:
    """An id for an envelope that carries none, so distinct garbage never shares a dead-letter id."""
    raw = content if isinstance(content, bytes) else json.dumps(content, default=str, sort_keys=True).encode()
    return f"no-id-{hashlib.sha256(raw).hexdigest()[:24]}"


def _rfc3339(raw: object) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@functools.cache
def _validator() -> Draft202012Validator:
    schema = json.loads((SCHEMAS / "events" / "user_event.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: would be stored as Infinity, which is not JSON
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_events(data: bytes) -> list[dict[str, Any]]:
    """One event object or a list of them, each valid against the event schema."""
    try:
        document = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidMessage(
            "invalid_json", f"message data is not JSON: {reason}", "data is not JSON"
        ) from None
    events = document if isinstance(document, list) else [document]
    if not events:
        raise InvalidMessage("invalid_shape", "message data is an empty list: no events")
    problems, rules = [], []
    for index, event in enumerate(events):
        where = f"$[{index}]" if isinstance(document, list) else "$"
        for error in sorted(_validator().iter_errors(event), key=lambda e: list(e.path)):
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
            problems.append(f"{where}{path}: {error.message}")
            rules.append(f"{where}{path}: {error.validator}")
    if problems:
        error_type = "invalid_shape" if any(not isinstance(e, dict) for e in events) else "schema_violation"
        raise InvalidMessage(error_type, "; ".join(problems[:10]), "; ".join(rules[:10]))
    return events


def event_id_base(message: PubSubMessage) -> str:
    """Stable across redeliveries: SNS's message id, else (published straight to Pub/Sub) Pub/Sub's."""
    sns_id = message.attributes.get("sns_message_id")
    return sns_id if sns_id else f"pubsub-{message.message_id}"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def to_rows(
    message: PubSubMessage, events: list[dict[str, Any]], loaded_at: datetime
) -> list[tuple[str, dict[str, Any]]]:
    """(event_id, row) for each event; event_id is also the row's streaming insert id."""
    loaded_ms = (loaded_at - EPOCH) // timedelta(milliseconds=1)  # exact: float seconds can be 1 ms off
    base = event_id_base(message)
    rows = []
    for index, event in enumerate(events):
        event_ms = int(event["timestamp"])
        event_id = f"{base}:{index}"
        context = event.get("context")
        rows.append(
            (
                event_id,
                {
                    "event_id": event_id,
                    "user_id": event["userId"],
                    "event_type": event["eventType"],
                    "time_transaction_occurred": event_ms,
                    "event_timestamp": _timestamp(EPOCH + timedelta(milliseconds=event_ms)),
                    "source_of_event": SOURCE_OF_EVENT,
                    "context": None if context is None else _compact(context),
                    "raw_event": _compact(event),
                    "created_at": loaded_ms,
                    "updated_at": loaded_ms,
                    "pubsub_message_id": message.message_id,
                    "sns_message_id": message.attributes.get("sns_message_id"),
                    "sns_topic_arn": message.attributes.get("sns_topic_arn"),
                    "loaded_at": _timestamp(loaded_at),
                },
            )
        )
    return rows


def message_rows(message: PubSubMessage, loaded_at: datetime) -> list[tuple[str, dict[str, Any]]]:
    """The message's rows, or an ``InvalidMessage``: mapping is pure code on the message's bytes, so any
    other failure (RecursionError on JSON nested just below the parser's limit, a bug) recurs on every
    delivery and is dead-lettered with its reason rather than retried until Pub/Sub drops the message."""
    try:
        return to_rows(message, parse_events(message.data), loaded_at)
    except (InvalidMessage, MemoryError):  # MemoryError may pass on another instance: retry
        raise
    except Exception as exc:
        name = type(exc).__name__
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:500]
        raise InvalidMessage(
            "unprocessable",
            f"could not turn the message into rows: {name}: {detail}",
            f"could not turn the message into rows: {name}",  # str(exc) may quote payload values
        ) from None


def dead_letter_row(
    message: PubSubMessage, error_type: str, error_message: str, received_at: datetime, function_version: str
) -> tuple[str, dict[str, Any]]:
    row = {
        "dead_letter_id": message.message_id,
        "received_at": _timestamp(received_at),
        "pubsub_message_id": message.message_id,
        "publish_time": _timestamp(message.publish_time) if message.publish_time else None,
        "attributes": _compact(message.attributes),
        "payload": base64.b64encode(message.data).decode("ascii"),
        "error_type": error_type,
        "error_message": error_message[:10_000],
        "function_version": function_version,
    }
    # The insert id dedups a redelivered dead letter of the same message and reason.
    return f"{message.message_id}:{error_type}", row


# What a minimal dead letter keeps of the payload: far under BigQuery's row and request limits.
MINIMAL_PAYLOAD_BYTES = 64 * 1024
_ID_ATTRIBUTES = ("sns_message_id", "sns_topic_arn")


def minimal_dead_letter_row(
    message: PubSubMessage,
    error_type: str,
    error_message: str,
    refusal: str,
    received_at: datetime,
    function_version: str,
) -> tuple[str, dict[str, Any]]:
    """For when BigQuery refuses the full dead-letter row (a 10 MB payload is over its row limit):
    the ids, the reason, why the full row was refused and the payload's first 64 KiB."""
    kept = message.data[:MINIMAL_PAYLOAD_BYTES]
    attributes = {k: message.attributes[k][:256] for k in _ID_ATTRIBUTES if k in message.attributes}
    note = (
        f" [full dead-letter row refused: {refusal[:1000]}; payload truncated to {len(kept)} of"
        f" {len(message.data)} bytes; attributes other than {', '.join(_ID_ATTRIBUTES)} dropped]"
    )
    row = {
        "dead_letter_id": message.message_id,
        "received_at": _timestamp(received_at),
        "pubsub_message_id": message.message_id,
        "publish_time": _timestamp(message.publish_time) if message.publish_time else None,
        "attributes": _compact(attributes),
        "payload": base64.b64encode(kept).decode("ascii"),
        "error_type": error_type,
        "error_message": error_message[:2000] + note,
        "function_version": function_version,
    }
    return f"{message.message_id}:{error_type}:minimal", row


def message_from_dead_letter(row: Mapping[str, Any]) -> PubSubMessage:
    """Rebuild the original message from its dead-letter row, for replay."""
    publish_time = row.get("publish_time")
    return PubSubMessage(
        message_id=str(row["pubsub_message_id"]),
        data=base64.b64decode(row["payload"]),
        attributes=json.loads(row["attributes"]),
        publish_time=publish_time if isinstance(publish_time, datetime) else _rfc3339(publish_time),
    )
