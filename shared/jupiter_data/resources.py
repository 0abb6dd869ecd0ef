"""The definitions shared with Terraform, as typed objects: the cloud resources
(``schemas/resources.json``) and each function's manifest (``functions/<name>/function.json``).

Terraform reads the same files (``jsondecode(file(...))``): one definition, two consumers.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from pkgutil import resolve_name
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jupiter_data.settings import FromEnv

SCHEMAS = resources.files("jupiter_data") / "schemas"
# The repository's function folders. Archives ship no manifest (the code never needs one deployed):
# the local stack, the build, the tests and the benches read them.
FUNCTIONS_DIR = Path(__file__).resolve().parents[2] / "functions"
MANIFEST = "function.json"
# An entry point, and fn-<name> (hyphens for underscores) fits a service account id's 30 characters.
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,26}$")


class ManifestError(ValueError):
    """A function.json that does not follow schemas/function.schema.json or names unknown resources."""


@dataclass(frozen=True)
class AlertLabel:
    name: str  # a top-level field of the log line
    description: str


@dataclass(frozen=True)
class AlertDef:
    """A log line that alerts: Terraform makes a log-based metric and an alert policy of it."""

    metric: str
    match: str  # "exact": the message equals ``message``; "regex": it matches it
    message: str
    labels: tuple[AlertLabel, ...]
    title: str
    condition: str
    window_seconds: int
    runbook: str


@dataclass(frozen=True)
class FunctionDef:
    """One ``functions/<name>/function.json`` (fields: schemas/function.schema.json)."""

    name: str
    description: str
    trigger: str  # "http", or the Pub/Sub topic that triggers it
    local_port: int
    concurrency: int  # requests one instance serves at once (THREADS, deployed and locally)
    memory: str
    timeout_seconds: int
    max_instances: int
    ingress: str
    invokers: str  # public, analysts or pubsub-push
    project_roles: tuple[str, ...]
    dataset_access: dict[str, str]
    table_access: dict[str, str]
    bucket_access: dict[str, str]
    topic_access: dict[str, str]
    settings: str  # module:Class
    environment: tuple[str, ...]  # set by Terraform from the environment's variables
    secrets: dict[str, str]  # setting -> Secret Manager secret
    secret_files: dict[str, str]  # setting -> secret mounted as a file; the setting holds the path
    alerts: tuple[AlertDef, ...]
    requirements: tuple[str, ...]
    comments: dict[str, str]

    @property
    def is_http(self) -> bool:
        return self.trigger == "http"

    def settings_class(self) -> type[FromEnv]:
        """What the function reads on top of the common ``Settings``."""
        from jupiter_data.settings import FromEnv

        found = resolve_name(self.settings)
        if not (isinstance(found, type) and issubclass(found, FromEnv)):
            raise ManifestError(f"functions/{self.name}/{MANIFEST}: {self.settings} is not a settings class")
        return found

    @classmethod
    def from_manifest(cls, name: str, raw: dict[str, Any]) -> FunctionDef:
        alerts = tuple(
            AlertDef(**{**alert, "labels": tuple(AlertLabel(**label) for label in alert["labels"])})
            for alert in raw["alerts"]
        )
        lists = {key: tuple(raw[key]) for key in ("project_roles", "environment", "requirements")}
        return cls(name=name, **{**raw, **lists, "alerts": alerts, "comments": raw.get("comments", {})})


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


@functools.cache
def load_functions(functions_dir: Path = FUNCTIONS_DIR) -> tuple[FunctionDef, ...]:
    """Every ``<functions_dir>/*/function.json``, validated, in ``local_port`` order (the product's order)."""
    functions = [read_manifest(path.parent) for path in sorted(functions_dir.glob(f"*/{MANIFEST}"))]
    _check_references(functions, load_resources())
    return tuple(sorted(functions, key=lambda f: f.local_port))


def read_manifest(folder: Path) -> FunctionDef:
    """``<folder>/function.json``, or a ``ManifestError`` naming every field that breaks its schema."""
    where = f"functions/{folder.name}/{MANIFEST}"
    try:
        raw = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise ManifestError(f"{where} not found") from None
    except ValueError as exc:
        raise ManifestError(f"{where}: not JSON: {exc}") from None
    if problems := [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in _validator().iter_errors(raw)
    ]:
        raise ManifestError(f"{where}: " + "; ".join(sorted(problems)))
    if not _NAME.match(folder.name):
        raise ManifestError(f"{where}: the folder name must match {_NAME.pattern}")
    return FunctionDef.from_manifest(folder.name, raw)


@functools.cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator  # not at import: deployed code never reads a manifest

    return Draft202012Validator(json.loads((SCHEMAS / "function.schema.json").read_text()))


def _check_references(functions: list[FunctionDef], known: Resources) -> None:
    """Every resource a manifest names exists in resources.json, and no two functions share a port."""
    problems = []
    tables = {t.table_id for t in known.tables} | {v.table_id for v in known.views}
    for f in functions:
        for kind, names, defined in (
            ("trigger topic", [] if f.is_http else [f.trigger], known.topics),
            ("dataset", f.dataset_access, known.datasets),
            ("table", f.table_access, tables),
            ("bucket", f.bucket_access, known.buckets),
            ("topic", f.topic_access, known.topics),
        ):
            problems += [f"{f.name}: no {kind} {n!r} in resources.json" for n in names if n not in defined]
    ports = [f.local_port for f in functions]
    problems += [f"local_port {port} is used twice" for port in sorted(set(ports)) if ports.count(port) > 1]
    if problems:
        raise ManifestError("; ".join(problems))
