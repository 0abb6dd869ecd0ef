"""Pub/Sub message → rows in ``ops.all_user_events``, or a row in the dead-letter table. Never both
lost and acknowledged: ``handle`` returns only once the message's rows (or its dead letter) are in
BigQuery, and raises ``TransientError`` when Pub/Sub should deliver it again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jupiter_data.domain import events
from jupiter_data.domain.events import InvalidMessage, PubSubMessage
from jupiter_data.ports import Clock, SystemClock, TransientError, Warehouse
from jupiter_data.services.batcher import InsertBatcher
from jupiter_data.settings import FromEnv, Settings, int_between, load_settings, reachable_retry_age, setting

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderSettings(FromEnv):
    """What ``pubsub_to_bigquery`` reads on top of ``Settings``."""

    # Past it a failing message is dead-lettered as too_old, with its reason; it must come before Pub/Sub's
    # last delivery attempt (reachable_retry_age), after which Pub/Sub dead-letters it without one.
    max_retry_age: timedelta = setting(
        "LOADER_MAX_RETRY_AGE",
        reachable_retry_age,
        default="90m",
        doc="a message still failing after this is dead-lettered as `too_old` instead of retrying forever",
    )
    # Terraform and the local stack set THREADS to function.json's concurrency: that one number sizes
    # both the requests an instance serves at once and the batch their rows fill.
    threads: int | None = setting(
        "THREADS",
        int_between(1, 1_000),
        optional=True,
        doc="requests one instance serves at once (functions-framework): function.json's concurrency",
    )
    batch_max_rows: int | None = setting(
        "LOADER_BATCH_MAX_ROWS",
        int_between(1, 10_000),
        optional=True,
        doc="rows one shared insert waits for at most; unset: `THREADS`, the function's concurrency",
    )
    batch_max_wait_ms: int = setting(
        "LOADER_BATCH_MAX_WAIT_MS",
        int_between(0, 1_000),
        default="50",
        doc="how long the first invocation of a batch waits for others",
    )
    function_version: str = setting(
        "K_REVISION",
        str,
        default="local",
        platform=True,
        doc="recorded as the function version in dead letters",
    )

    @property
    def rows_per_batch(self) -> int:
        rows = self.batch_max_rows or self.threads
        assert rows is not None, "check() refuses settings without either"
        return rows

    @classmethod
    def check(cls, values: Mapping[str, Any], environment: Callable[[], str]) -> dict[str, str]:
        if values["batch_max_rows"] is None and values["threads"] is None:
            return {"LOADER_BATCH_MAX_ROWS": "is required when THREADS is not set"}
        return {}


@dataclass(frozen=True)
class Outcome:
    status: str  # "loaded" or "dead_lettered"
    rows: int = 0
    error_type: str | None = None


class Loader:
    def __init__(
        self,
        settings: LoaderSettings,
        warehouse: Warehouse,
        clock: Clock,
        batcher: InsertBatcher | None = None,
    ) -> None:
        self._settings = settings
        self._warehouse = warehouse
        self._clock = clock
        self.batcher = batcher or InsertBatcher(
            warehouse, settings.rows_per_batch, settings.batch_max_wait_ms / 1000
        )

    def handle(self, message: PubSubMessage) -> Outcome:
        now = self._clock.now()
        ids = {"pubsub_message_id": message.message_id, **_safe_attributes(message)}
        try:
            rows = events.message_rows(message, now)
        except InvalidMessage as invalid:
            return self._dead_letter(message, invalid.error_type, str(invalid), ids, invalid.summary)
        try:
            self.batcher.insert(events.EVENTS_TABLE, rows)
        except ValueError as rejected:  # BigQuery refused rows that passed our schema: never retryable
            return self._dead_letter(
                message, "rejected_by_bigquery", str(rejected), ids, "BigQuery refused the rows"
            )
        except TransientError as exc:
            age = now - message.publish_time if message.publish_time else None
            if age is not None and age > self._settings.max_retry_age:
                return self._dead_letter(message, "too_old", f"still failing after {age}: {exc}", ids)
            log.warning("load failed, Pub/Sub will redeliver: %s", exc, extra={"fields": ids})
            raise
        log.info("loaded %d event(s)", len(rows), extra={"fields": ids})
        return Outcome("loaded", rows=len(rows))

    def _dead_letter(
        self,
        message: PubSubMessage,
        error_type: str,
        error: str,
        ids: dict[str, str],
        summary: str | None = None,
    ) -> Outcome:
        """Store the message with the full reason; log ``summary`` instead when the reason may quote
        payload values."""
        now, version = self._clock.now(), self._settings.function_version
        row_id, row = events.dead_letter_row(message, error_type, error, now, version)
        fields = {**ids, "error_type": error_type, "dead_letter_row": "full"}
        # Not acknowledged until a dead letter is stored: a transient failure raises for redelivery.
        try:
            self._warehouse.insert_rows(events.DEAD_LETTER_TABLE, [row], [row_id])
        except ValueError as refused:
            # Never leave the message to Pub/Sub's dead-letter topic without a recorded reason: store
            # what BigQuery will surely take. The refusal may quote the row: it goes to the row, not here.
            log.error("BigQuery refused the dead-letter row; storing a minimal one", extra={"fields": fields})
            row_id, row = events.minimal_dead_letter_row(
                message, error_type, error, str(refused), now, version
            )
            self._warehouse.insert_rows(events.DEAD_LETTER_TABLE, [row], [row_id])
            fields["dead_letter_row"] = "minimal"
        reason = error if summary is None else summary
        log.warning("dead-lettered message: %s", reason, extra={"fields": fields})
        return Outcome("dead_lettered", error_type=error_type)


def _safe_attributes(message: PubSubMessage) -> dict[str, str]:
    return {
        k: message.attributes[k][:256] for k in ("sns_message_id", "sns_topic_arn") if k in message.attributes
    }


def bootstrap(
    settings: Settings | None = None,
    *,
    loader_settings: LoaderSettings | None = None,
    warehouse: Warehouse | None = None,
    clock: Clock | None = None,
) -> Loader:
    """The loader on BigQuery unless given a warehouse. The adapter is imported here, so a process that
    imports this module loads no Google client until it builds one."""
    if warehouse is None:
        from jupiter_data.adapters.bigquery import BigQueryWarehouse
        from jupiter_data.adapters.clients import bigquery_client

        warehouse = BigQueryWarehouse(bigquery_client(settings or load_settings(Settings)))
    return Loader(loader_settings or load_settings(LoaderSettings), warehouse, clock or SystemClock())
