"""Builds each use case with its real adapters, once per process (a Cloud Functions instance).

Settings are read when a function module is imported, so a bad deploy fails at cold start with a
message naming the variable; Google clients are created on the first request that needs them.
"""

from __future__ import annotations

import functools

from jupiter_data.adapters.bigquery import BigQueryWarehouse
from jupiter_data.adapters.clients import (
    bigquery_client,
    publisher_client,
)
from jupiter_data.adapters.pubsub import PubSubPublisher
from jupiter_data.adapters.sns_http import SnsHttpGateway
from jupiter_data.logs import configure_logging
from jupiter_data.ports import SystemClock
from jupiter_data.services.bridge import Bridge
from jupiter_data.services.loader import Loader
from jupiter_data.settings import (
    BridgeSettings,
    LoaderSettings,
    Settings,
    get_settings,
    load_settings,
)


def cold_start() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level)
    return settings


@functools.cache
def bridge() -> Bridge:
    settings, bridge_settings = get_settings(), load_settings(BridgeSettings)
    return Bridge(
        bridge_settings,
        SnsHttpGateway(base_url=bridge_settings.cert_base_url),
        PubSubPublisher(publisher_client(settings), settings.project),
        SystemClock(),
    )


@functools.cache
def loader() -> Loader:
    settings = get_settings()
    return Loader(load_settings(LoaderSettings), BigQueryWarehouse(bigquery_client(settings)), SystemClock())
