"""The emulator's state on disk (``--data-dir DIR``): saved by ``stop()``, loaded by ``start()``.

* ``stop()``, which SIGTERM and SIGINT reach when run as a module, writes ``DIR/state.json``
  atomically (temp file, fsync, rename), and ``start()`` loads it if present (an unreadable file
  is an error, never silently dropped). The file is JSON: topics and subscriptions as their
  protobuf JSON (``json_format``, field names as in the proto: every field they hold, push config,
  ack deadline, retry and dead-letter policies, retention, labels...), every unacknowledged message
  once (data in base64, attributes, id, publish time), and per subscription the ids and delivery
  counts of its ``undelivered`` and ``in_flight`` messages, plus the next message id and ack id so
  neither repeats after a restart.
* Undelivered messages (queued, or nacked and backing off: the rest of the backoff is forgotten)
  come back deliverable. In-flight ones (leased to a puller, or being pushed when ``stop()``'s grace
  ran out, so the outcome is unknown) count as a failed delivery, as an expired lease does: they are
  redelivered at once with their delivery count carried on, or dead-lettered if that was the last
  attempt the dead-letter policy allows. A redelivery can duplicate a message; none is lost. An
  ack that arrives once ``stop()`` has begun may not be recorded: that message is redelivered too.
* Push subscriptions resume pushing once started. Messages keep their ids and publish times.
* Only ``stop()`` saves: a SIGKILL (or a crash) loses whatever changed since the start, and the next
  start loads the previous save again (acked messages come back, later topics are missing).
  The stack's supervisor sends SIGTERM and waits 10 s before SIGKILL; ``stop()`` waits at most
  ``2 * grace`` (2 s) for RPCs and pushes in flight before it saves.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.pubsub_v1 import types

from jupiter_data.local.pubsub_emulator.broker import Broker, Pending, PubsubMessage, TopicState
from jupiter_data.local.pubsub_emulator.leases import retry_locked

log = logging.getLogger(__name__)

STATE_FILE = "state.json"  # in the data directory
_FORMAT = "jupiter-data pubsub emulator state"
_VERSION = 1


def save(broker: Broker, data_dir: Path) -> None:
    """Write the whole state to ``data_dir/state.json`` atomically (temp file, fsync, rename)."""
    with broker.lock:
        state = _snapshot_locked(broker)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    temp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    with temp.open("w", encoding="utf-8") as out:
        json.dump(state, out, indent=1)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
    directory = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash of the machine
    finally:
        os.close(directory)
    log.info(
        "saved %d topics, %d subscriptions and %d messages to %s",
        len(state["topics"]),
        len(state["subscriptions"]),
        len(state["messages"]),
        path,
    )


def load(broker: Broker, data_dir: Path) -> None:
    """Restore what the last save left in ``data_dir``, if anything; an unreadable file is an error."""
    path = data_dir / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        log.info("no saved state in %s: starting empty", path)
        return
    try:
        state = json.loads(text)
        if state.get("format") != _FORMAT or state.get("version") != _VERSION:
            raise ValueError(f"not a version {_VERSION} {_FORMAT!r} file")
        with broker.lock:
            _restore_locked(broker, state)
    except (ValueError, KeyError, TypeError, json_format.ParseError) as exc:
        raise RuntimeError(f"cannot load Pub/Sub emulator state from {path}: {exc}") from exc
    log.info(
        "loaded %d topics, %d subscriptions and %d messages from %s",
        len(broker.topics),
        len(broker.subs),
        len(state["messages"]),
        path,
    )


def _snapshot_locked(broker: Broker) -> dict[str, Any]:
    def as_dict(pb: Any) -> dict[str, Any]:
        return dict(json_format.MessageToDict(pb, preserving_proto_field_name=True))

    def by_id(pendings: Any) -> list[Pending]:
        return sorted(pendings, key=lambda p: int(p.message.message_id))

    messages: dict[str, Any] = {}

    def refs(pendings: list[Pending]) -> list[dict[str, Any]]:
        for pending in pendings:
            if pending.message.message_id not in messages:
                messages[pending.message.message_id] = as_dict(pending.message)
        return [{"message_id": p.message.message_id, "delivery_attempts": p.attempts} for p in pendings]

    subscriptions = []
    for name in sorted(broker.subs):
        sub = broker.subs[name]
        subscriptions.append(
            {
                "subscription": as_dict(sub.pb),
                # waiting for a delivery; a backoff still to wait out is forgotten
                "undelivered": refs([*sub.available, *by_id(sub.delayed)]),
                # delivered, outcome unknown: redelivered after a restart
                "in_flight": refs([lease.pending for lease in sub.leases.values()] + by_id(sub.pushing)),
            }
        )
    return {
        "format": _FORMAT,
        "version": _VERSION,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # the emulator is stopping, so consuming one value of each counter costs nothing
        "next_message_id": next(broker.message_ids),
        "next_ack_id": next(broker.seq),  # ack ids of the last run must not ack new deliveries
        "topics": [as_dict(topic.pb) for _, topic in sorted(broker.topics.items())],
        "subscriptions": subscriptions,
        "messages": dict(sorted(messages.items(), key=lambda item: int(item[0]))),
    }


def _restore_locked(broker: Broker, state: dict[str, Any]) -> None:
    broker.message_ids = itertools.count(int(state["next_message_id"]))
    broker.seq = itertools.count(int(state["next_ack_id"]))
    for topic in state["topics"]:
        pb = json_format.ParseDict(topic, types.Topic.pb()())
        broker.topics[pb.name] = TopicState(pb=pb)
    messages = {
        message_id: json_format.ParseDict(message, PubsubMessage())
        for message_id, message in state["messages"].items()
    }
    restored = []
    for saved in state["subscriptions"]:
        pb = json_format.ParseDict(saved["subscription"], types.Subscription.pb()())
        sub = broker.new_subscription_locked(pb)
        if pb.topic in broker.topics:
            broker.topics[pb.topic].subscriptions.add(pb.name)
        restored.append((sub, saved))
    # Queues last: dead-lettering below publishes, which needs every subscription in place.
    now = time.monotonic()
    for sub, saved in restored:
        for ref in saved["undelivered"]:
            sub.available.append(Pending(messages[ref["message_id"]], int(ref["delivery_attempts"])))
        for ref in reversed(saved["in_flight"]):  # each goes to the front: their order is kept
            # An unanswered delivery counts as a failed one, as when a lease expires: redelivered
            # at once, or dead-lettered if that was the last attempt the policy allows.
            pending = Pending(messages[ref["message_id"]], int(ref["delivery_attempts"]))
            retry_locked(broker, sub, pending, now, backoff=False)
