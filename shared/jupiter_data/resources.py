"""The resource definitions shared with Terraform (``schemas/resources.json``), as typed objects."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

SCHEMAS = resources.files("jupiter_data") / "schemas"


@dataclass(frozen=True)
class FunctionDef:
    name: str
    trigger: str  # "http", or the Pub/Sub topic that triggers it
    local_port: int

    @property
    def is_http(self) -> bool:
        return self.trigger == "http"


@dataclass(frozen=True)
class Resources:
    functions: tuple[FunctionDef, ...]
    topics: dict[str, dict[str, Any]]
    trigger_retry: dict[str, int]
    datasets: dict[str, dict[str, Any]]
    buckets: dict[str, dict[str, Any]]

    def bucket_name(self, project: str, role: str) -> str:
        """Bucket names are global, so every environment prefixes them with its project id."""
        if role not in self.buckets:
            raise KeyError(f"unknown bucket role {role!r}")
        return f"{project}-{role}"


@functools.cache
def load_resources() -> Resources:
    raw = json.loads((SCHEMAS / "resources.json").read_text())
    return Resources(
        functions=tuple(
            FunctionDef(name=name, trigger=spec["trigger"], local_port=spec["local_port"])
            for name, spec in raw["functions"].items()
        ),
        topics=raw["pubsub"]["topics"],
        trigger_retry=raw["pubsub"]["trigger_retry"],
        datasets=raw["bigquery"]["datasets"],
        buckets=raw["storage"]["buckets"],
    )
