"""The supervisor with real processes: small HTTP servers and scripts that misbehave on purpose."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jupiter_data.local.supervisor import (
    Service,
    StackAlreadyRunning,
    StackLock,
    StartupError,
    Supervisor,
    free_port,
    http_ok,
    port_is_free,
    tcp_open,
)

STARTUP = 60  # seconds a test service may take to become healthy: generous for a loaded machine


def http_server(name: str, port: int) -> Service:
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return Service(name, argv, port, http_ok(f"http://127.0.0.1:{port}/"))


def script(name: str, code: str, port: int | None = None) -> Service:
    port = port or free_port()
    return Service(name, [sys.executable, "-c", code], port, tcp_open(port))


def wait_until_free(port: int, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_is_free(port):
            return True
        time.sleep(0.05)
    return False


def test_starts_all_services_healthy_and_stops_them(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    supervisor = Supervisor(tmp_path)
    supervisor.start([http_server("one", ports[0]), http_server("two", ports[1])], timeout=STARTUP)
    try:
        assert all(not port_is_free(p) for p in ports)
        assert supervisor.dead_services() == []
        assert supervisor.log_path("one").exists()
    finally:
        supervisor.stop()
    assert all(wait_until_free(p) for p in ports)


def test_a_taken_port_is_reported_by_service_name_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        other = free_port()
        supervisor = Supervisor(tmp_path)
        with pytest.raises(StartupError) as err:
            supervisor.start([http_server("fine", other), http_server("bigquery", taken)], timeout=10)
    assert err.value.service == "bigquery"
    assert f"port {taken}" in err.value.reason
    assert port_is_free(other), "nothing may be started when a port is taken"


def test_a_missing_binary_is_named(tmp_path: Path) -> None:
    service = Service("storage", ["/nonexistent/fake-gcs-server"], free_port(), lambda: True)
    with pytest.raises(StartupError, match="storage failed to start: executable not found"):
        Supervisor(tmp_path).start([service])


def test_a_crashing_service_stops_the_others_and_shows_its_log(tmp_path: Path) -> None:
    healthy_port = free_port()
    crashing = script("pubsub", "import sys; print('cannot open the thing'); sys.exit(3)")
    with pytest.raises(StartupError) as err:
        Supervisor(tmp_path).start([http_server("bigquery", healthy_port), crashing], timeout=STARTUP)
    assert err.value.service == "pubsub"
    assert "exited with code 3" in err.value.reason
    assert "cannot open the thing" in err.value.log_tail
    assert wait_until_free(healthy_port), "the healthy service must be stopped too"


@pytest.mark.timeout(120)  # far below the hour its process would otherwise last
def test_a_health_check_timeout_is_reported(tmp_path: Path) -> None:
    silent = script("sns", "import time; time.sleep(3600)")  # never healthy; stopped, not waited for
    with pytest.raises(StartupError, match="health check did not pass within 1s"):
        Supervisor(tmp_path).start([silent], timeout=1)


@pytest.mark.timeout(120)  # far below the hour its process would otherwise last
def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    port = free_port()
    code = (
        "import signal, socket, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(3600)"
    )
    supervisor = Supervisor(tmp_path)
    supervisor.start([script("stubborn", code, port)], timeout=STARTUP)
    supervisor.stop(grace=0.5)  # returns once the process is gone: it would otherwise sleep an hour
    assert port_is_free(port)


def test_children_of_a_service_are_stopped_with_it(tmp_path: Path) -> None:
    child_port = free_port()
    code = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-m', 'http.server', '{child_port}', '--bind', '127.0.0.1']); "
        "time.sleep(60)"
    )
    service = Service("parent", [sys.executable, "-c", code], free_port(), tcp_open(child_port))
    supervisor = Supervisor(tmp_path)
    supervisor.start([service], timeout=STARTUP)
    supervisor.stop()
    assert wait_until_free(child_port), "the whole process group must go"


def test_restart_service_brings_it_back(tmp_path: Path) -> None:
    port = free_port()
    supervisor = Supervisor(tmp_path)
    supervisor.start([http_server("bigquery", port)], timeout=STARTUP)
    try:
        supervisor.restart_service("bigquery")
        assert http_ok(f"http://127.0.0.1:{port}/")()
    finally:
        supervisor.stop()


@pytest.mark.timeout(120)  # far below the hour its process would otherwise last
def test_a_killed_service_gets_no_chance_to_clean_up_and_resumes_as_it_was(tmp_path: Path) -> None:
    port, marker = free_port(), tmp_path / "cleaned-up"
    code = (
        "import pathlib, signal, socket, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (pathlib.Path({str(marker)!r}).touch(), sys.exit(0)))\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)\n"
    )
    supervisor = Supervisor(tmp_path)
    supervisor.start([script("loader", code, port)], timeout=STARTUP)
    try:
        # A kill does not wait for the grace period (an hour: waiting would run into the test's timeout).
        supervisor.stop_service("loader", grace=3600, kill=True)
        assert port_is_free(port), "stop_service returns once the process is gone"
        assert not marker.exists(), "SIGKILL, not SIGTERM: the process could not run its handler"
        supervisor.resume_service("loader", timeout=STARTUP)
        assert not port_is_free(port)
        assert supervisor.dead_services() == []
    finally:
        supervisor.stop(grace=5)
    assert marker.exists(), "the resumed process is stopped gracefully"


def test_a_second_stack_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    first = StackLock(tmp_path)
    first.acquire()
    try:
        # Another process, as a second `make run` would be.
        code = (
            "import sys; from pathlib import Path; from jupiter_data.local.supervisor import StackLock\n"
            "try:\n    StackLock(Path(sys.argv[1])).acquire()\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc); sys.exit(1)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 1
        assert "StackAlreadyRunning" in result.stdout
        assert "already running" in result.stdout
    finally:
        first.release()
    second = StackLock(tmp_path)
    second.acquire()  # released locks are free again
    second.release()


def test_the_lock_is_refused_in_process_too(tmp_path: Path) -> None:
    first = StackLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(StackAlreadyRunning, match="already running"):
            StackLock(tmp_path).acquire()
    finally:
        first.release()
