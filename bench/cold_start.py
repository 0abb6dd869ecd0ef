"""Cold start of each function: importing its main.py in a fresh process, against its libraries alone.

For each function folder with a main.py, in the same run and interleaved so both see the same machine:
  * the function: ``python -X importtime -c "import main"`` in its folder;
  * baseline: ``python -X importtime -c "import <its libraries>"`` in the same folder: functions_framework
    and every library its manifest's ``requirements`` declares, each mapped to the names it installs with
    ``importlib.metadata.packages_distributions()`` (below a namespace shared by several distributions,
    such as ``google``, the outermost packages it ships: google.cloud.pubsub_v1, google.pubsub, ...).
Both run with the same interpreter and only the environment the local stack gives the function (the
settings it declares: ``GOOGLE_CLOUD_PROJECT=jupiter-local``, ``JUPITER_ENV=local``, its own class's;
THREADS), so importing main passes its settings check as it does in ``make run``.

Figure, one definition for both: the process's total import time, the sum of the cumulative times of the
top-level entries of ``-X importtime`` (every import the process makes, the interpreter's own start-up
imports included; not the interpreter's start-up itself). Median of ``--runs`` runs each. Target (issue
14): the function within 1.3x of its libraries. Each function also prints the costliest modules its
import loads that its libraries alone do not (where the difference goes).

Exit 0 whether or not the targets were met (MET/MISSED). Exit 1: a function or one of its declared
libraries does not import (the product is wrong), never because the machine is slow.

    .venv/bin/python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import record, verdict  # bench/report.py: scripts run with bench/ on sys.path
from support import private_stack  # bench/support.py

from jupiter_data.resources import FunctionDef

TARGET_RATIO = 1.3
# "import time:   self |   cumulative | <two spaces per nesting level>name", microseconds
_IMPORT_TIME = re.compile(r"^import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)$")


class ImportFailed(Exception):
    """A function or one of its libraries does not import: exit 1."""


@dataclass(frozen=True)
class Imports:
    total_ms: float  # the figure: cumulative time of the top-level imports
    modules: dict[str, float]  # every module the process imported -> its cumulative ms


def parse_importtime(stderr: str) -> Imports:
    modules: dict[str, float] = {}
    total = 0.0
    for line in stderr.splitlines():
        if match := _IMPORT_TIME.match(line):
            cumulative_ms = int(match[1]) / 1000
            modules[match[3]] = cumulative_ms
            if not match[2]:
                total += cumulative_ms
    return Imports(total, modules)


def library_imports(requirements: Iterable[str]) -> list[str]:
    """The modules ``import <library>`` means for each requirement, plus functions_framework (every main
    imports it to be served)."""
    installs = metadata.packages_distributions()  # top-level name -> distributions installing it
    names = {"functions_framework"}
    for requirement in requirements:
        dist = metadata.distribution(requirement)
        packages = {".".join(f.parts[:-1]) for f in dist.files or () if f.name == "__init__.py"}
        for top in (top for top, dists in installs.items() if dist.metadata["Name"] in dists):
            # A namespace (no __init__.py of its own) holds nothing to import: take what it ships below.
            below = {p for p in packages if p.startswith(f"{top}.") and p.rpartition(".")[0] not in packages}
            names |= below if top not in packages and below else {top}
    return sorted(names)


def timed_import(statement: str, folder: Path, env: Mapping[str, str]) -> Imports:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=folder,
        env=dict(env),  # only these: a variable left in this shell cannot change the figure
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if not _IMPORT_TIME.match(line)]
        raise ImportFailed(f"`{statement}` in {folder} exited {done.returncode}:\n" + "\n".join(lines[-15:]))
    return parse_importtime(done.stderr)


def not_in_libraries(function: Imports, libraries: Imports, most: int = 5) -> list[tuple[str, float]]:
    """The costliest modules (cumulative, so nested ones overlap) that importing main loads and its
    libraries alone do not: the project's own code, and any client it imports without declaring it."""
    extra = function.modules.keys() - libraries.modules.keys() - {"main"}
    return sorted(((name, function.modules[name]) for name in extra), key=lambda item: -item[1])[:most]


def measure(function: FunctionDef, folder: Path, env: Mapping[str, str], runs: int) -> bool:
    """Prints and records the function's row; False if it or one of its libraries does not import."""
    libraries = library_imports(function.requirements)
    statement = "import " + ", ".join(libraries)
    own: list[Imports] = []
    base: list[Imports] = []
    try:
        for _ in range(runs):
            own.append(timed_import("import main", folder, env))
            base.append(timed_import(statement, folder, env))
    except ImportFailed as exc:
        print(f"\n{function.name}: FAILED: {exc}")
        return False
    value = statistics.median(i.total_ms for i in own)
    baseline = statistics.median(i.total_ms for i in base)
    ratio = value / baseline
    print(
        f"\n{function.name}: cold import {value:.0f} ms, its libraries {baseline:.0f} ms: {ratio:.2f}x "
        f"(target <= {TARGET_RATIO}x: {verdict(ratio <= TARGET_RATIO)})"
    )
    print(f"  libraries: {', '.join(libraries)}")
    print(f"  env: {', '.join(f'{k}={v}' for k, v in sorted(env.items()))}")
    extra = ", ".join(f"{name} {ms:.0f} ms" for name, ms in not_in_libraries(own[-1], base[-1]))
    print(f"  costliest imports beyond its libraries (cumulative, last run): {extra or 'none'}")
    record(
        bench="cold_start",
        figure=f"{function.name}: cold import, median of {runs} runs",
        value=value,
        unit="ms",
        baseline=baseline,
        baseline_label="its libraries alone",
        target=f"<= {TARGET_RATIO}x of its libraries",
        met=ratio <= TARGET_RATIO,
        higher_is_better=False,
    )
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(machine())
    print(f"figure: total -X importtime of the process (top-level cumulative), median of {runs} runs")
    with tempfile.TemporaryDirectory(prefix="bench-cold-start-") as tmp:
        stack = private_stack(Path(tmp))  # never started: it only says what each function is given
        assert stack.functions_dir is not None
        failed = [
            f.name
            for f in stack.functions
            if not measure(f, stack.functions_dir / f.name, stack.function_env(f), runs)
        ]
    if failed:
        print(f"\nFAILED: {', '.join(failed)} did not import")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
