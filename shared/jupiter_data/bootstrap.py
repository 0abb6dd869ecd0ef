"""A function's cold start: its settings read, checked and logging set up, before any request.

Each use case builds itself with its real adapters in its own module (``bootstrap()`` in
``services/<use case>.py`` and ``data_api/routes.py``), which imports the adapters it needs only when
called: a function imports the clients of its own use case and no other. A bad deploy fails here,
naming the variable; Google clients are created on the first request that needs them.
"""

from __future__ import annotations

from jupiter_data.logs import configure_logging
from jupiter_data.settings import Settings, load_settings


def cold_start() -> Settings:
    settings = load_settings(Settings)
    configure_logging(settings.log_level)
    return settings
