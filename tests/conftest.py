from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from jupiter_data.settings import clear_settings_cache

# CI explores the same examples on every run, so a landing never hinges on a lucky draw; developers'
# runs stay random (and keep hypothesis's example database) to keep finding new failures.
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Tests may set variables freely; each one starts from the same environment."""
    saved = dict(os.environ)
    clear_settings_cache()
    yield
    os.environ.clear()
    os.environ.update(saved)
    clear_settings_cache()
