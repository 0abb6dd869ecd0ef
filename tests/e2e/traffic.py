"""SNS traffic for the e2e suite, and the checks that every event landed exactly once or was dead-lettered."""

from __future__ import annotations

import json
import threading
import time
from types import TracebackType
from typing import Any

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import bigquery_client
from jupiter_data.local.stack import SNS_TOPIC_ARN, LocalStack
from jupiter_data.local.tap import drain_dead_letters

# Invalid messages as producers get them wrong, each with the reason the loader must give.
POISON = [
    ("not json {", "invalid_json"),
    (json.dumps({"eventType": "poison", "timestamp": 1_700_000_000_000, "hash": "x"}), "schema_violation"),
    (json.dumps({"userId": 7, "eventType": "poison", "timestamp": "yesterday"}), "schema_violation"),
    (json.dumps([1, 2, 3]), "invalid_shape"),
]
VIEW_ROWS_OF = "SELECT sns_message_id FROM `ops.user_events` WHERE event_type = @run"
TRAFFIC_TIMEOUT = 120.0  # seconds a drill waits for its traffic to advance: bounded, and generous
DEAD_LETTERS_OF = (
    "SELECT JSON_VALUE(attributes, '$.sns_message_id') AS sns_message_id, error_type "
    "FROM `ops.all_user_events_dead_letter` WHERE JSON_VALUE(attributes, '$.sns_message_id') IN UNNEST(@ids)"
)


def query(platform: LocalStack, sql: str, **params: Any) -> list[dict[str, Any]]:
    return list(BigQueryWarehouse(bigquery_client(platform.settings())).query(sql, params))


def count(platform: LocalStack, sql: str, **params: Any) -> int:
    (row,) = query(platform, sql, **params)
    return int(row["n"])


def event(run: str, i: int) -> str:
    return json.dumps(
        {"userId": f"user-{i % 17}", "eventType": run, "timestamp": 1_700_000_000_000 + i, "hash": "abc"}
    )


def publish(platform: LocalStack, run: str, n: int, offset: int = 0) -> list[str]:
    sns = platform.sns_client()
    return [
        sns.publish(TopicArn=SNS_TOPIC_ARN, Message=event(run, i))["MessageId"]
        for i in range(offset, offset + n)
    ]


class SteadyTraffic:
    """Publishes 10 messages every 0.5 s (about 20/s) from a thread until exit; ``poison_every``-th ones
    (0: none) are invalid. Records the SNS message ids: ``valid``, and ``poison`` with the expected reason.

    Drills prove that traffic flowed before, during and after a fault by waiting for it
    (``wait_for_more``), never by counting what a fast machine happened to publish in a fixed time."""

    def __init__(self, platform: LocalStack, run: str, poison_every: int = 0) -> None:
        self.platform, self.run, self.poison_every = platform, run, poison_every
        self.valid: list[str] = []
        self.poison: dict[str, str] = {}
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"traffic-{run}")

    @property
    def published(self) -> int:
        """Messages SNS has accepted so far, valid and poison together."""
        return len(self.valid) + len(self.poison)

    def _run(self) -> None:
        try:
            self._publish()
        except BaseException as exc:  # handed to the test thread, which raises it
            self._error = exc

    def _publish(self) -> None:
        sns = self.platform.sns_client()
        i = 0
        while not self._stop.is_set():
            for _ in range(10):
                if self.poison_every and i % self.poison_every == self.poison_every - 1:
                    body, reason = POISON[(i // self.poison_every) % len(POISON)]
                    self.poison[sns.publish(TopicArn=SNS_TOPIC_ARN, Message=body)["MessageId"]] = reason
                else:
                    self.valid.append(
                        sns.publish(TopicArn=SNS_TOPIC_ARN, Message=event(self.run, i))["MessageId"]
                    )
                i += 1
            self._stop.wait(0.5)

    def _check(self) -> None:
        if self._error is not None:
            raise AssertionError(f"the traffic thread failed: {self._error!r}") from self._error

    def wait_for(self, published: int, timeout: float = TRAFFIC_TIMEOUT) -> None:
        """Block until at least ``published`` messages went out; fail after ``timeout`` (generous, so a
        loaded machine is only slower) or if publishing failed."""
        deadline = time.monotonic() + timeout
        while self.published < published:
            self._check()
            assert time.monotonic() < deadline, f"{self.published} of {published} published in {timeout:.0f}s"
            time.sleep(0.1)

    def wait_for_more(self, n: int, timeout: float = TRAFFIC_TIMEOUT) -> None:
        """Block until ``n`` more messages went out than when called (traffic flows right now)."""
        self.wait_for(self.published + n, timeout)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._check()


def wait_until_settled(
    platform: LocalStack, run: str, valid: int, poison: list[str], timeout: float
) -> tuple[list[str], list[dict[str, Any]]]:
    """Poll until the view holds ``valid`` rows of ``run`` and every ``poison`` id is dead-lettered, or
    ``timeout``; returns (view sns ids, dead-letter rows) as last seen."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [row["sns_message_id"] for row in query(platform, VIEW_ROWS_OF, run=run)]
        dead = query(platform, DEAD_LETTERS_OF, ids=poison) if poison else []
        if (len(rows) >= valid and len({d["sns_message_id"] for d in dead}) >= len(poison)) or (
            time.monotonic() > deadline
        ):
            return rows, dead
        time.sleep(1)


def assert_exactly_once(
    platform: LocalStack, run: str, valid: list[str], poison: dict[str, str], timeout: float = 120
) -> None:
    """Every ``valid`` SNS message of ``run`` is in ops.user_events once; every ``poison`` one is in the
    dead-letter table with its reason; none of them reached the Pub/Sub dead-letter topic."""
    rows, dead = wait_until_settled(platform, run, len(valid), list(poison), timeout)
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} duplicates in the view"
    missing, unexpected = set(valid) - set(rows), set(rows) - set(valid)
    assert not missing and not unexpected, f"{len(missing)} missing, {len(unexpected)} unexpected"
    reasons = {d["sns_message_id"]: d["error_type"] for d in dead}
    assert reasons == poison, "every invalid message is dead-lettered, with its reason"
    ours = set(valid) | set(poison)
    held = drain_dead_letters(platform.settings(), "sns-events")
    stuck = [m for m in held if m.attributes.get("sns_message_id") in ours]
    assert not stuck, f"{len(stuck)} messages of this run reached the Pub/Sub dead-letter topic"
