from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupiter_data.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Tests may set variables freely; each one starts from the same environment."""
    saved = dict(os.environ)
    get_settings.cache_clear()
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
