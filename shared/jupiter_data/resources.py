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
    concurrency: int  # requests one instance serves at once (Terraform's setting; THREADS locally too)

    @property
    def is_http(self) -> bool:
        return self.trigger == "http"


@dataclass(frozen=True)
class TableDef:
    table_id: str  # dataset.table
    schema: list[dict[str, Any]]  # BigQuery JSON schema, the same file Terraform passes to the table
    partition_field: str
    clustering: list[str]
    description: str


@dataclass(frozen=True)
class ViewDef:
    table_id: str
    query_template: str  # ${project} is replaced per environment (Terraform: templatefile)
    description: str

    def query(self, project: str) -> str:
        return self.query_template.replace("${project}", project)


@dataclass(frozen=True)
class Resources:
    functions: tuple[FunctionDef, ...]
    topics: dict[str, dict[str, Any]]
    trigger_retry: dict[str, int]
    datasets: dict[str, dict[str, Any]]
    tables: tuple[TableDef, ...]
    views: tuple[ViewDef, ...]
    buckets: dict[str, dict[str, Any]]

    def table(self, table_id: str) -> TableDef:
        (table,) = (t for t in self.tables if t.table_id == table_id)
        return table

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
            FunctionDef(name, spec["trigger"], spec["local_port"], spec["concurrency"])
            for name, spec in raw["functions"].items()
        ),
        topics=raw["pubsub"]["topics"],
        trigger_retry=raw["pubsub"]["trigger_retry"],
        datasets=raw["bigquery"]["datasets"],
        tables=tuple(
            TableDef(
                table_id=table_id,
                schema=json.loads((SCHEMAS / spec["schema"]).read_text()),
                partition_field=spec["partition_field"],
                clustering=spec["clustering"],
                description=spec["description"],
            )
            for table_id, spec in raw["bigquery"]["tables"].items()
        ),
        views=tuple(
            ViewDef(table_id, (SCHEMAS / spec["query"]).read_text(), spec["description"])
            for table_id, spec in raw["bigquery"]["views"].items()
        ),
        buckets=raw["storage"]["buckets"],
    )
