from __future__ import annotations

from collections.abc import Iterator

import pytest

from jupiter_data.local.stack import LocalStack, StackPorts


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The whole local platform, every function that exists included, on free ports."""
    stack = LocalStack(
        tmp_path_factory.mktemp("platform"),
        StackPorts.free(),
        free_function_ports=True,
        # Production backs off 10 s to 600 s between push retries; fault drills would wait minutes.
        retry_overrides={"minimum_backoff_seconds": 1, "maximum_backoff_seconds": 5},
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
