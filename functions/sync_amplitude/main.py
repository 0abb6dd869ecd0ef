"""Daily (Cloud Scheduler 03:00 UTC → Pub/Sub daily-runs) and on-demand Amplitude sync.

Message data: ``{}`` → yesterday (UTC, at run time); ``{"day": "YYYY-MM-DD"}``; ``{"start": ..., "end": ...}``
for a backfill (days already synced are skipped); ``"force": true`` re-syncs them. A request reaching a
day that is not complete (before 02:00 UTC the next day) is refused whole, ``force`` or not.
"""

from __future__ import annotations

import functions_framework
from cloudevents.http import CloudEvent

from jupiter_data import bootstrap
from jupiter_data.domain.amplitude_request import days_requested
from jupiter_data.domain.events import PubSubMessage
from jupiter_data.services import amplitude_sync
from jupiter_data.services.amplitude_sync import AmplitudeSettings
from jupiter_data.settings import load_settings

bootstrap.cold_start()
load_settings(AmplitudeSettings)  # fail at cold start, naming the variable


@functions_framework.cloud_event
def sync_amplitude(cloud_event: CloudEvent) -> None:
    # A bad request, or one reaching a day not complete yet, is logged and acknowledged (retrying
    # cannot fix it: the operator re-sends it after 02:00 UTC); a failed day raises, so Pub/Sub
    # redelivers and the day is retried (already-synced days of a range are skipped).
    message = PubSubMessage.from_push(cloud_event.data)
    sync = amplitude_sync.bootstrap()
    request = days_requested(message.data, sync.clock.now())
    if request is None:
        return
    sync.sync_request(request)
