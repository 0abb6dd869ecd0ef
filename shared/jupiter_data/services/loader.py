"""Pub/Sub message → rows in ``ops.all_user_events``, or a row in the dead-letter table. Never both
lost and acknowledged: ``handle`` returns only once the message's rows (or its dead letter) are in
BigQuery, and raises ``TransientError`` when Pub/Sub should deliver it again."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jupiter_data.domain import events
from jupiter_data.domain.events import InvalidMessage, PubSubMessage
from jupiter_data.ports import Clock, TransientError, Warehouse
from jupiter_data.services.batcher import InsertBatcher
from jupiter_data.settings import LoaderSettings

log = logging.getLogger(__name__)


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
            warehouse, settings.batch_max_rows, settings.batch_max_wait_ms / 1000
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
