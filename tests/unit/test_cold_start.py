"""Cold start: a function imports only the clients its use case needs, and none before a request.

Each check runs a fresh interpreter in the function's folder, with the environment the local stack
gives the function (emulator hosts, so building a client contacts nothing).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jupiter_data.local.stack import LocalStack, StackPorts
from jupiter_data.resources import load_functions
from tests.conftest import REPO_ROOT

BIGQUERY = ("google.cloud.bigquery", "google.cloud.bigquery_storage", "google.cloud.bigquery_storage_v1")
OTHER_CLIENTS = ("google.cloud.storage", "google.cloud.pubsub", "google.cloud.pubsub_v1", "grpc")
HEAVY = ("pandas", "pyarrow")


def modules_after(function: str, statement: str, tmp_path: Path) -> set[str]:
    """The modules a fresh process holds after ``import main`` and ``statement`` in the function's folder."""
    (manifest,) = [f for f in load_functions() if f.name == function]
    env = LocalStack(tmp_path, StackPorts()).function_env(manifest)
    probe = f"import json, sys\nimport main\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT / "functions" / function,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # only a guard against a hang
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def loaded(modules: set[str], prefix: str) -> bool:
    return any(m == prefix or m.startswith(f"{prefix}.") for m in modules)


@pytest.mark.parametrize("function", [f.name for f in load_functions()])
def test_importing_a_function_loads_no_client_library(function: str, tmp_path: Path) -> None:
    """Settings are read and checked at cold start; clients come with the first request."""
    modules = modules_after(function, "", tmp_path)
    assert "main" in modules
    assert not [prefix for prefix in (*BIGQUERY, *OTHER_CLIENTS, *HEAVY) if loaded(modules, prefix)]


def test_the_bridge_loads_pub_sub_and_never_bigquery_storage_or_pandas(tmp_path: Path) -> None:
    modules = modules_after("sns_to_pubsub", "main.bridge()", tmp_path)
    assert loaded(modules, "google.cloud.pubsub_v1")
    for prefix in (*BIGQUERY, "google.cloud.storage", *HEAVY):
        assert not loaded(modules, prefix), prefix
