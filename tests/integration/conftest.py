from __future__ import annotations

from collections.abc import Iterator

import pytest

from jupiter_data.local.stack import LocalStack, StackPorts
from jupiter_data.settings import Settings


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Every emulator, on free ports, provisioned from resources.json; no functions."""
    stack = LocalStack(tmp_path_factory.mktemp("stack"), StackPorts.free(), functions_dir=None)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def settings(emulators: LocalStack) -> Settings:
    return emulators.settings()
