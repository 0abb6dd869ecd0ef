"""Starts, health-checks and stops local server processes (emulators and functions). Dev only.

Every process gets its own process group and a log file under ``<state_dir>/logs``. Start-up is
all-or-nothing: if one service cannot start (port taken, binary missing, process exits, health check
times out) the supervisor says which and why, with the tail of its log, and stops the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

HealthCheck = Callable[[], bool]
# Seconds a service may take to pass its health check. The whole stack is healthy in ~5 s on 2 CPUs; a
# loaded machine (CI, other stacks, `make test` beside `make bench`) must only be slower, never fail.
STARTUP_TIMEOUT = 120.0


class StartupError(RuntimeError):
    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service, self.reason, self.log_tail = service, reason, log_tail
        message = f"{service} failed to start: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)


class StackAlreadyRunning(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    port: int
    health: HealthCheck
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass
class _Running:
    service: Service
    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections lingering in TIME_WAIT do not make a port busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_ok(url: str) -> HealthCheck:
    def check() -> bool:
        try:
            return requests.get(url, timeout=1).status_code < 500
        except requests.RequestException:
            return False

    return check


def tcp_open(port: int, host: str = "127.0.0.1") -> HealthCheck:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.log_dir = state_dir / "logs"
        self._running: list[_Running] = []
        self._stopped: dict[str, Service] = {}

    def start(self, services: Sequence[Service], timeout: float = STARTUP_TIMEOUT) -> None:
        """Start services concurrently and wait until every health check passes."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in services:
            self._preflight(service)
        try:
            for service in services:
                self._spawn(service)
            self._wait_healthy(self._running[-len(services) :], timeout)
        except BaseException:
            self.stop()
            raise

    def _preflight(self, service: Service) -> None:
        if not port_is_free(service.port):
            raise StartupError(service.name, f"port {service.port} on 127.0.0.1 is already in use")
        program = service.argv[0]
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise StartupError(service.name, f"executable not found: {program}")

    def _spawn(self, service: Service) -> None:
        log_path = self.log_dir / f"{service.name}.log"
        log_file = log_path.open("ab")  # append: a restarted service keeps its earlier log
        process = subprocess.Popen(  # noqa: S603 - argv is built by the stack, never from input
            list(service.argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=service.cwd,
            env={**os.environ, **service.env},
            start_new_session=True,  # own process group: Ctrl-C reaches us, we stop children in order
        )
        self._running.append(_Running(service, process, log_path, log_file))

    def _wait_healthy(self, pending: list[_Running], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(pending)
        while waiting:
            for running in list(waiting):
                code = running.process.poll()
                if code is not None:
                    raise StartupError(
                        running.service.name, f"process exited with code {code}", tail(running.log_path)
                    )
                if running.service.health():
                    waiting.remove(running)
            if waiting and time.monotonic() > deadline:
                first = waiting[0]
                raise StartupError(
                    first.service.name,
                    f"health check did not pass within {timeout:.0f}s",
                    tail(first.log_path),
                )
            if waiting:
                time.sleep(0.1)

    def dead_services(self) -> list[str]:
        """Names of services whose process has exited since start."""
        return [r.service.name for r in self._running if r.process.poll() is not None]

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def stop_service(self, name: str, grace: float = 10.0, kill: bool = False) -> None:
        """Stop one service: SIGTERM, or SIGKILL at once with ``kill`` (a crash, for fault drills).
        ``resume_service`` starts it again."""
        for running in [r for r in self._running if r.service.name == name]:
            self._terminate(running, grace, kill)
            self._running.remove(running)
            self._stopped[name] = running.service

    def resume_service(self, name: str, timeout: float = STARTUP_TIMEOUT) -> None:
        """Start a service stopped by ``stop_service`` again, as it was, and wait until it is healthy."""
        self._spawn(self._stopped.pop(name))
        self._wait_healthy(self._running[-1:], timeout)

    def restart_service(
        self, name: str, down_for: float = 0.0, timeout: float = STARTUP_TIMEOUT, kill: bool = False
    ) -> None:
        """Stop one service, leave it down for ``down_for`` seconds, start it again (fault drills)."""
        self.stop_service(name, kill=kill)
        time.sleep(down_for)
        self.resume_service(name, timeout)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every process group, newest first; SIGKILL whatever is still alive after ``grace``."""
        while self._running:
            self._terminate(self._running.pop(), grace)

    @staticmethod
    def _terminate(running: _Running, grace: float, kill: bool = False) -> None:
        process = running.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        running.log_file.close()


class StackLock:
    """One stack per state directory: a second ``make run`` is told so instead of colliding on ports.

    An advisory ``flock`` dies with its process, so a crashed stack never leaves a stale lock.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "stack.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            handle.close()
            raise StackAlreadyRunning(
                f"a local stack is already running from {self.path.parent} (pid {owner}); "
                "attach to it with `source .local/stack.env`, or stop it with Ctrl-C first"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
