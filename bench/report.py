"""One results table for every benchmark: each figure beside its baseline measured in the same run.

Inside a bench script, each row of its printed table is also recorded as it is computed (every
p50/p95/p99 a bench prints or records comes from ``percentile`` here, every MET/MISSED from ``verdict``):

    from report import record  # bench/report.py: scripts run with bench/ on sys.path
    record(bench="loader", figure="max throughput (msg/s)", value=rate, baseline=baseline_rate,
           baseline_label="one insert per message", target=">= 1,000/s", met=rate >= 1_000,
           higher_is_better=True)

``record`` appends one JSON line (with the machine line and a timestamp) to the file named by
``BENCH_RESULTS``, and does nothing when it is unset, so every script still runs on its own.

``make bench`` runs each script through this module and then renders the file:

    python bench/report.py run bench/loader.py [args...]   # needs BENCH_RESULTS; records exit + time
    python bench/report.py write --results F --out bench/RESULTS.md --expected NAME... --command CMD

``write`` renders ONE markdown table (bench | figure | value | baseline | ratio | target | met); the
ratio is value / baseline, computed here. A bench that failed, did not run or recorded nothing gets
a row saying so, and ``write`` then exits 1 (after writing the file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ENV = "BENCH_RESULTS"
REPO_ROOT = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` a fraction (0.99); NaN when there are no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def verdict(met: bool | None) -> str:
    """How every bench says whether a figure met its target; empty for a figure without one."""
    return {True: "MET", False: "MISSED", None: ""}[met]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _machine() -> str:
    from machine import machine  # bench/machine.py, on sys.path whenever a bench script runs

    return machine()


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def record(
    *,
    bench: str,
    figure: str,
    value: float,
    unit: str = "",
    baseline: float | None = None,
    baseline_label: str = "",
    target: str = "",
    met: bool | None = None,
    higher_is_better: bool | None = None,
    comparable: bool = True,
) -> None:
    """One row of a bench's table. ``comparable=False``: the ratio means nothing (e.g. message counts
    of differently sized phases); the renderer shows none. No-op unless ``BENCH_RESULTS`` is set."""
    if not os.environ.get(ENV):
        return
    _append(
        {
            "kind": "figure",
            "bench": bench,
            "figure": figure,
            "value": float(value),
            "unit": unit,
            "baseline": None if baseline is None else float(baseline),
            "baseline_label": baseline_label,
            "target": target,
            "met": met,
            "higher_is_better": higher_is_better,
            "comparable": comparable,
            "machine": _machine(),
            "at": _now(),
        }
    )


# -- git -------------------------------------------------------------------------------------------


def _git(*args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run([git, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(ignore: Iterable[str] = ()) -> str:
    """``abc1234``, ``abc1234 + uncommitted changes (a, b)`` or ``unknown (no git)``."""
    head = _git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown (no git)"
    status = _git("status", "--porcelain") or ""
    skip = set(ignore)
    paths = [line[3:] for line in status.splitlines() if line[3:] and line[3:] not in skip]
    if not paths:
        return head.strip()
    shown = ", ".join(paths[:8]) + (f", ... {len(paths) - 8} more" if len(paths) > 8 else "")
    return f"{head.strip()} + uncommitted changes ({shown})"


# -- run: one bench, its exit status recorded ------------------------------------------------------


def run_bench(script: str, args: Sequence[str]) -> int:
    """Run ``script`` with this interpreter, output passed through; append its exit status and time."""
    if not os.environ.get(ENV):
        raise SystemExit(f"report.py run: set {ENV} to the results file")
    bench = Path(script).stem
    command = [sys.executable, script, *args]
    shown = " ".join(command)
    print(f"\n== {bench}: {shown}", flush=True)
    at, commit = _now(), git_state()
    started = time.monotonic()
    code = subprocess.run(command, check=False).returncode
    seconds = time.monotonic() - started
    _append(
        {
            "kind": "status",
            "bench": bench,
            "command": shown,
            "exit": code,
            "seconds": round(seconds, 1),
            "started": at,
            "finished": _now(),
            "commit": commit,
            "machine": _machine(),
        }
    )
    print(f"== {bench}: exit {code} after {seconds:.0f} s", flush=True)
    return code


# -- write: the table ------------------------------------------------------------------------------


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def number(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "inf"
    if (x == int(x) and abs(x) >= 1) or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def ratio(entry: dict[str, Any]) -> str:
    value, baseline = entry["value"], entry.get("baseline")
    if baseline is None or not entry.get("comparable", True):
        return "-"
    if baseline == 0 or math.isnan(baseline) or math.isnan(value):
        return "n/a"
    shown = f"{value / baseline:.2f}x"
    direction = entry.get("higher_is_better")
    if direction is True:
        return f"{shown} (higher is better)"
    if direction is False:
        return f"{shown} (lower is better)"
    return shown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _with_unit(x: float | None, unit: str) -> str:
    shown = number(x)
    return f"{shown} {unit}" if unit and shown != "n/a" else shown


@dataclass
class Rendered:
    text: str
    failed: list[str] = field(default_factory=list)  # benches that failed, did not run or recorded nothing


def render(entries: Sequence[dict[str, Any]], expected: Sequence[str], command: str, commit: str) -> Rendered:
    figures = [e for e in entries if e.get("kind") == "figure"]
    statuses = {e["bench"]: e for e in entries if e.get("kind") == "status"}
    order = list(expected) + sorted({e["bench"] for e in entries if e.get("bench") not in expected}, key=str)

    rows: list[list[str]] = []
    failed: list[str] = []
    for bench in order:
        own = [e for e in figures if e["bench"] == bench]
        for e in own:
            baseline = e.get("baseline")
            base = "-" if baseline is None else _with_unit(baseline, e.get("unit", ""))
            if baseline is not None and e.get("baseline_label"):
                base += f" ({e['baseline_label']})"
            rows.append(
                [bench, e["figure"], _with_unit(e["value"], e.get("unit", "")), base, ratio(e),
                 e.get("target", ""), verdict(e.get("met"))]
            )  # fmt: skip
        status = statuses.get(bench)
        problem = None
        if status is None:
            problem = "**DID NOT RUN**: no exit status recorded"
        elif status["exit"] != 0:
            problem = f"**FAILED**: exit {status['exit']} after {status['seconds']:.0f} s (see its output)"
        elif not own:
            problem = "**RECORDED NOTHING** (exit 0): no figures"
        if problem is not None:
            failed.append(bench)
            rows.append([bench, problem, "", "", "", "", ""])

    starts = sorted(s["started"] for s in statuses.values())
    ends = sorted(s["finished"] for s in statuses.values())
    total = sum(s["seconds"] for s in statuses.values())
    heads = {str(s.get("commit")).split()[0] for s in statuses.values()}  # the hash, dirty or not
    lines = ["# Benchmark results", ""]
    lines.append("Generated by `bench/report.py write` from the figures the benchmarks recorded as they ran")
    lines.append("(nothing typed in); each baseline was measured in the same run as its figure.")
    lines.append("")
    if starts:
        lines.append(f"- run: {starts[0]} to {ends[-1]} ({total / 60:.1f} min of benchmarks)")
    else:
        lines.append("- run: no benchmark ran")
    lines.append(f"- git commit when written: {commit}")
    if heads and heads != {commit.split()[0]}:  # someone committed during the run
        for bench in order:
            if bench in statuses:
                lines.append(f"  - `{bench}` started at commit {statuses[bench].get('commit')}")
    lines.append(f"- command: `{command}`")
    for bench in order:
        status = statuses.get(bench)
        if status is not None:
            lines.append(f"  - `{status['command']}`: exit {status['exit']}, {status['seconds']:.0f} s")
    lines.append("- machine, as each bench recorded it (load average includes whatever else was running):")
    for bench in order:
        machines = [e["machine"] for e in figures if e["bench"] == bench] or (
            [statuses[bench]["machine"]] if bench in statuses else []
        )
        if machines:
            lines.append(f"  - `{bench}`: {machines[-1]}")
    verdicts = [e.get("met") for e in figures]
    lines.append(
        f"- targets: {verdicts.count(True)} met, {verdicts.count(False)} missed; benches: "
        f"{len(order) - len(failed)} of {len(order)} ran and recorded"
        + (f", FAILED: {', '.join(failed)}" if failed else "")
    )
    lines.append("")
    header = ["bench", "figure", "value", "baseline (same run)", "ratio", "target", "met"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * 2 + ["---:"] * 3 + ["---"] * 2) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(str(c)) for c in row) + " |")
    lines.append("")
    lines.append(
        "ratio = value / baseline. Each bench prints more detail (where the time goes, verification) "
        "than this table; see its output."
    )
    return Rendered("\n".join(lines) + "\n", failed)


def write(results: Path, out: Path, expected: Sequence[str], command: str) -> int:
    ignore = [str(p.resolve().relative_to(REPO_ROOT)) for p in (out, results) if _inside_repo(p)]
    rendered = render(read_results(results), expected, command, git_state(ignore))
    out.write_text(rendered.text, encoding="utf-8")
    print(f"wrote {out}" + (f"; FAILED: {', '.join(rendered.failed)}" if rendered.failed else ""))
    return 1 if rendered.failed else 0


def _inside_repo(path: Path) -> bool:
    return path.resolve().is_relative_to(REPO_ROOT)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="run one bench script, recording its exit status")
    run.add_argument("script")
    run.add_argument("args", nargs=argparse.REMAINDER)
    out = commands.add_parser("write", help="render the results file as one markdown table")
    out.add_argument("--results", type=Path, required=True)
    out.add_argument("--out", type=Path, required=True)
    out.add_argument("--expected", nargs="+", default=[], help="bench names that must appear")
    out.add_argument("--command", default="make bench", help="the command that produced the results")
    options = parser.parse_args(argv)
    if options.action == "run":
        return run_bench(options.script, options.args)
    return write(options.results, options.out, options.expected, options.command)


if __name__ == "__main__":
    raise SystemExit(main())
