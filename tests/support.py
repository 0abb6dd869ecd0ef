"""Small helpers shared by several test modules."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupiter_data.logs import JsonFormatter
from tests.conftest import REPO_ROOT


class RecordingEnv(dict[str, str]):
    """An environment that records which variables were read, to hold ``names()`` to the code."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: list[str] = []

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.append(key)
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must read named variables, not scan the environment")


def all_log_text(records: list[logging.LogRecord]) -> str:
    """Everything a log record could put anywhere: message, args, fields, and the JSON line."""
    formatter = JsonFormatter()
    parts = []
    for record in records:
        parts += [
            record.getMessage(),
            repr(record.args),
            json.dumps(getattr(record, "fields", {}), default=str),
            formatter.format(record),
        ]
    return "\n".join(parts)


def write_manifest(folder: Path, **changes: Any) -> Path:
    """A valid ``function.json`` in ``folder`` (created): the bridge's, with ``changes``."""
    raw = json.loads((REPO_ROOT / "functions" / "sns_to_pubsub" / "function.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "function.json").write_text(json.dumps({**raw, **changes}, indent=2))
    return folder
