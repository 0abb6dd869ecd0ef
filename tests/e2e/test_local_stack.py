"""The local platform as a user starts it: `python -m jupiter_data run` / `demo` in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import requests

from jupiter_data.local.stack import LocalStack, StackPorts
from jupiter_data.local.supervisor import StartupError, port_is_free
from jupiter_data.settings import Settings
from tests.conftest import REPO_ROOT

CLI = [sys.executable, "-m", "jupiter_data"]


def read_env(path: Path) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines())
    return {key: value for key, value in pairs}


def wait_for_file(path: Path, process: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"stack exited with {process.returncode}: {process.stdout.read()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {seconds}s")
        time.sleep(0.2)


def test_run_serves_every_emulator_refuses_a_second_run_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stack = subprocess.Popen(
        [*CLI, "run", "--state-dir", str(state), "--free-ports"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_file(state / "stack.env", stack, seconds=180)  # beyond the supervisor's own 120 s
        env = read_env(state / "stack.env")
        assert env["GOOGLE_CLOUD_PROJECT"] == "jupiter-local"
        settings = Settings.from_env(env)
        project = settings.project

        # Attach as another shell would, with nothing but the exported variables.
        os.environ.update(env)
        from google.cloud import pubsub_v1

        topics = {
            t.name
            for t in pubsub_v1.PublisherClient().list_topics(request={"project": f"projects/{project}"})
        }
        assert f"projects/{project}/topics/sns-events" in topics
        datasets = requests.get(
            f"{env['BIGQUERY_EMULATOR_HOST']}/bigquery/v2/projects/{project}/datasets", timeout=30
        )
        assert {d["datasetReference"]["datasetId"] for d in datasets.json()["datasets"]} >= {
            "ops",
            "amplitude",
        }
        buckets = requests.get(f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b?project={project}", timeout=30)
        assert f"{project}-amplitude-raw" in {b["name"] for b in buckets.json()["items"]}
        sns = boto3.client("sns", endpoint_url=env["AWS_ENDPOINT_URL_SNS"])
        assert sns.create_topic(Name="e2e")["TopicArn"].endswith(":e2e")

        second = subprocess.run(
            [*CLI, "run", "--state-dir", str(state), "--free-ports"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr

        ports = [int(env[name].rsplit(":", 1)[1]) for name in env if name.endswith(("_HOST", "_URL_SNS"))]
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=180) == 0  # each service gets a 10 s grace: generous, bounded
        output = stack.stdout.read()  # type: ignore[union-attr]
        assert "local platform healthy" in output
        assert "stopping" in output
        assert not (state / "stack.env").exists()
        assert all(port_is_free(port) for port in ports), "every emulator must be gone"
    finally:
        if stack.poll() is None:
            stack.kill()
            stack.wait()


def test_a_taken_port_names_the_emulator_and_leaves_nothing_running(tmp_path: Path) -> None:
    ports = StackPorts.free()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports.storage))
        blocker.listen()
        with pytest.raises(StartupError) as err:
            LocalStack(tmp_path, ports, functions_dir=None).start()
    assert err.value.service == "storage"
    assert f"port {ports.storage}" in str(err.value)
    assert all(port_is_free(p) for p in (ports.bigquery, ports.pubsub, ports.sns))


def test_demo_drives_traffic_through_the_platform_and_exits_zero() -> None:
    result = subprocess.run([*CLI, "demo"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "checks passed" in result.stdout
