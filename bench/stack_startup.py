"""Time from `python -m jupiter_data run` to every health check passing (what `make run` waits for,
once dependencies are installed). Baseline, measured in the same run: the same emulators started one
after another by the same supervisor, i.e. what a sequential start would cost.

    .venv/bin/python bench/stack_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import record, verdict  # bench/report.py: scripts run with bench/ on sys.path
from support import private_stack  # bench/support.py

from jupiter_data.local.stack import REPO_ROOT
from jupiter_data.local.supervisor import STARTUP_TIMEOUT, Supervisor

TARGET_SECONDS = 30.0
# Past the supervisor's own health-check limit: a slow start is a MISSED row, only a stack that never
# becomes healthy (the command then exits by itself) stops the bench.
GIVE_UP_SECONDS = STARTUP_TIMEOUT + 60


def time_run_command(state: Path) -> float:
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "jupiter_data", "run", "--state-dir", str(state), "--free-ports"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (state / "stack.env").exists():
            if process.poll() is not None:
                raise SystemExit(f"stack exited with {process.returncode}; see {state / 'logs'}")
            if time.monotonic() - started > GIVE_UP_SECONDS:
                raise SystemExit(f"stack not healthy after {GIVE_UP_SECONDS:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def time_sequential_emulators(state: Path) -> float:
    stack = private_stack(state, functions=False)
    total = 0.0
    for service in stack.emulator_services():
        supervisor = Supervisor(state)
        started = time.monotonic()
        supervisor.start([service])
        total += time.monotonic() - started
        supervisor.stop()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as tmp:
        stack_times = [time_run_command(Path(tmp) / f"run{n}") for n in range(runs)]
        baseline_times = [time_sequential_emulators(Path(tmp) / f"seq{n}") for n in range(runs)]
    stack, baseline = statistics.median(stack_times), statistics.median(baseline_times)
    print(machine())
    print(f"{'figure':<52} {'median s':>9} {'runs':>5}")
    print(f"{'`jupiter_data run` to all health checks passing':<52} {stack:>9.2f} {runs:>5}")
    print(f"{'baseline: emulators started one after another':<52} {baseline:>9.2f} {runs:>5}")
    print(f"ratio stack/baseline: {stack / baseline:.2f}   target: <= {TARGET_SECONDS:.0f} s   "
          f"{verdict(stack <= TARGET_SECONDS)}")  # fmt: skip
    record(
        bench="stack_startup",
        figure=f"`jupiter_data run` to all health checks passing, median of {runs} runs",
        value=stack,
        unit="s",
        baseline=baseline,
        baseline_label="emulators started one after another",
        target=f"<= {TARGET_SECONDS:.0f} s",
        met=stack <= TARGET_SECONDS,
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
