"""Throughput and peak memory of the Amplitude export transform, against a naive baseline.

    .venv/bin/python bench/amplitude_transform.py [--small 100000] [--large 500000] [--seed 7]

In one run, local only, about 2.5 minutes on 2 CPUs. No fixed time budget: the first run of each
kind (generation, real, naive) is bounded generously (``FIRST_RUN_SECONDS``) and the large size's is
scaled from the small size's measured time (``SLACK`` x small time x size ratio), so a slower machine
gets proportionally longer and only a hung or disproportionately slow run stops the bench:
  * two deterministic one-day exports (``ExportSpec``, 2024-03-01 00..23 UTC, about ``--small`` and
    ``--large`` events, malformed lines at 0.05 % so the dead-letter path runs too) are generated into
    a temporary directory, in parallel; generation time is not part of any figure;
  * for each size, two implementations, each in a fresh subprocess (``--child``):
    (a) real: ``transform_export`` from the zip path into three temporary files, as
    ``AmplitudeSync`` calls it (its defaults: gzip level 1 with ISA-L, worker
    processes as it decides);
    (b) naive baseline, defined here: each member read whole (``gzip.decompress(zip.read(member))``),
    split into lines, ``json.loads`` per line, a new dict per output row, ``datetime.strptime`` on
    every timestamp, ``json.dumps`` per output row, written with ``gzip.open(path, "wt")`` at the
    same gzip level 1 (so the ratio measures the transform, not a slower compression level); it
    flattens the property bags by the same rules, so both write the same number of rows;
  * timing covers opening the zip to closing the outputs (gzip in -> gzip NDJSON out, on disk); CPU
    time includes worker processes (RUSAGE_CHILDREN); the CPU the rest of the machine used meanwhile
    is printed, as other work on a shared machine skews the figures;
  * peak RSS, absolute, nothing subtracted: the child's ``getrusage(RUSAGE_SELF).ru_maxrss`` plus,
    when the transform starts worker processes, each one's own peak (``VmHWM``, read from ``/proc``
    by a thread here every 20 ms while it lives): a conservative sum. The children are started
    through ``/bin/sh``: on Linux a process exec'd straight from this one inherits this process's
    peak RSS in its ru_maxrss (measured: a parent that once held 300 MiB made an idle child report
    311 MiB). Each child's ``VmHWM`` is printed beside its ru_maxrss as a cross-check, and an idle
    child that only imports the transform gives the interpreter's own RSS, for reference;
  * after the runs: every real output is gunzipped and its lines counted, and for the small size
    the codec's floor (gunzip of the input, gzip level 1 of the outputs) is timed, to show where the
    time goes.

Targets (issue 5, "Performance and limits"): real >= 5x the naive events/s and >= 50,000 events/s
end to end; peak RSS <= 300 MiB at both sizes and flat (large/small <= 1.2). The 3M-event day is
extrapolated from the large size's rate (and from its CPU time, for a one-vCPU instance) and set
against the 9-minute event-function timeout.

Exit 0: both implementations wrote exactly the generator's events (``ExportStats.events``), its
malformed lines as dead letters and its late events, the same number of property rows, and the real
outputs hold exactly the rows reported, whether or not the targets were met (printed MET/MISSED).
Exit 1: a count disagrees. Exit 2: the benchmark could not run (a child failed, or ran past its
scaled time limit).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from machine import machine  # bench/machine.py: scripts run with bench/ on sys.path
from report import record, verdict  # bench/report.py: scripts run with bench/ on sys.path
from support import BenchError, exit_status  # bench/support.py

from jupiter_data import amplitude_transform
from jupiter_data.amplitude_transform.gzip_streams import DEFAULT_COMPRESSLEVEL
from jupiter_data.domain import amplitude, amplitude_rows

if TYPE_CHECKING:  # the children import only what the transform needs (the idle child shows that)
    from jupiter_data.local.amplitude_data import ExportStats

FIRST_RUN_SECONDS = 900.0  # nothing measured yet to scale from: generous (~20 s here), and bounded
SLACK = 10.0  # a large run may take this many times what the small one of its kind predicts
MIN_SCALED_SECONDS = 60.0
EXPORT_DAY = date(2024, 3, 1)
MALFORMED_RATE = 0.0005  # below the transform's default max_bad_fraction (0.001)
COMPRESSLEVEL = DEFAULT_COMPRESSLEVEL  # both implementations write gzip level 1
TARGET_SPEEDUP = 5.0
TARGET_EVENTS_PER_S = 50_000.0
TARGET_RSS_MIB = 300.0
TARGET_RSS_FLAT = 1.2  # large / small peak RSS
DAY_EVENTS = 3_000_000
FUNCTION_TIMEOUT_S = 540.0  # event-triggered Cloud Functions: 9 minutes
OUTPUTS = ("events", "properties", "bad_lines")
MB = 1e6
MIB = 1 << 20


# -- the naive baseline ----------------------------------------------------------------------------


def _naive_timestamp(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S")


def _naive_flatten(bag: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
    leaves: list[tuple[str, Any]] = []
    for key, value in bag.items():
        if isinstance(value, dict) and value:
            leaves.extend(_naive_flatten(value, f"{prefix}{key}."))
        else:
            leaves.append((f"{prefix}{key}", value))
    return leaves


def _naive_value(value: Any) -> tuple[str | None, str]:
    if isinstance(value, str):
        return value, "string"
    if value is None:
        return None, "null"
    if isinstance(value, bool):
        return json.dumps(value), "boolean"
    if isinstance(value, int | float):
        return json.dumps(value), "number"
    if isinstance(value, list):
        return json.dumps(value), "array"
    return json.dumps(value), "object"


def naive_transform(zip_path: str, outdir: Path, export_day: date) -> dict[str, Any]:
    """The straightforward version: whole members in memory, stdlib json and datetime, a dict per row."""
    schema = amplitude.load_schema(amplitude.EVENTS_SCHEMA_FILE)
    columns = [column["name"] for column in schema]
    timestamps = [column["name"] for column in schema if column["type"] == "TIMESTAMP"]
    source = {column: amplitude.RENAMED_COLUMNS.get(column, column) for column in columns}
    known = {source[c] for c in columns if c not in amplitude.DERIVED_COLUMNS}
    day = export_day.isoformat()
    counts = dict.fromkeys(("events", "property_rows", "bad_lines", "blank_lines", "late"), 0)
    counts |= {"bytes_in": 0, "bytes_uncompressed": 0}
    with (
        zipfile.ZipFile(zip_path) as archive,
        gzip.open(outdir / "events.json.gz", "wt", compresslevel=COMPRESSLEVEL) as events_out,
        gzip.open(outdir / "properties.json.gz", "wt", compresslevel=COMPRESSLEVEL) as properties_out,
        gzip.open(outdir / "bad_lines.json.gz", "wt", compresslevel=COMPRESSLEVEL) as bad_out,
    ):
        for info in archive.infolist():
            compressed = archive.read(info)
            data = gzip.decompress(compressed)
            counts["bytes_in"] += len(compressed)
            counts["bytes_uncompressed"] += len(data)
            lines = data.split(b"\n")
            if lines and lines[-1] == b"":
                lines.pop()
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    counts["blank_lines"] += 1
                    continue
                try:
                    event = json.loads(line)
                    if not isinstance(event, dict):
                        raise ValueError("not a JSON object")
                    if not event.get("$insert_id") and not event.get("uuid"):
                        raise ValueError("no event id")
                    row = {column: event.get(source[column]) for column in columns}
                    extra = {key: value for key, value in event.items() if key not in known}
                    row["extra"] = extra or None
                    parsed = {}
                    for column in timestamps:
                        if row[column]:
                            parsed[column] = _naive_timestamp(row[column])
                            row[column] = parsed[column].strftime("%Y-%m-%d %H:%M:%S.%f")
                    event_time = parsed.get("event_time")
                    row["event_date"] = event_time.date().isoformat() if event_time else None
                    row["export_day"] = day
                    row["resolved_user_id"] = row["user_id"] or (
                        str(row["amplitude_id"]) if row["amplitude_id"] is not None else None
                    )
                    property_rows = []
                    for property_type in amplitude.PROPERTY_TYPES:
                        bag = row[property_type]
                        if bag is not None and not isinstance(bag, dict):
                            raise ValueError(f"{property_type} is not an object")
                        for key, leaf in _naive_flatten(bag or {}, ""):
                            value, value_type = _naive_value(leaf)
                            property_rows.append(
                                {
                                    "insert_id": row["insert_id"],
                                    "uuid": row["uuid"],
                                    "export_day": day,
                                    "event_type": row["event_type"],
                                    "event_time": row["event_time"],
                                    "property_type": property_type,
                                    "key": key,
                                    "value": value,
                                    "value_type": value_type,
                                }
                            )
                except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, strptime
                    counts["bad_lines"] += 1
                    bad = {
                        "export_day": day,
                        "member": info.filename,
                        "line_number": number,
                        "error": str(error),
                        "raw": line.decode("utf-8", "backslashreplace"),
                    }
                    bad_out.write(json.dumps(bad) + "\n")
                    continue
                events_out.write(json.dumps(row) + "\n")
                for property_row in property_rows:
                    properties_out.write(json.dumps(property_row) + "\n")
                counts["events"] += 1
                counts["property_rows"] += len(property_rows)
                if row["event_date"] is not None and row["event_date"] < day:
                    counts["late"] += 1
    return counts


# -- children (one per measurement, for a clean peak RSS) -----------------------------------------


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def _vm_hwm_kib() -> int:
    """The peak RSS of this program image (``VmHWM``), for a cross-check; 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# The transform's code: the rules, the row builder and the streaming package.
TRANSFORM_SOURCES = (
    Path(amplitude.__file__),
    Path(amplitude_rows.__file__),
    *sorted(Path(amplitude_transform.__file__).parent.glob("*.py")),
)


def transform_source() -> str:
    """The first 12 hex digits of the sha256 of the transform's modules as this process sees them."""
    digest = hashlib.sha256()
    for path in TRANSFORM_SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its children that have been waited for."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def child(kind: str, zip_path: str, outdir: str) -> dict[str, Any]:
    after_import = _max_rss_kib()
    out = Path(outdir)
    result: dict[str, Any] = {"kind": kind, "source": transform_source(), "pid": os.getpid()}
    wall, (own_cpu, children_cpu) = time.perf_counter(), _cpu_seconds()
    if kind == "real":
        with (
            (out / "events.json.gz").open("wb") as events_out,
            (out / "properties.json.gz").open("wb") as properties_out,
            (out / "bad_lines.json.gz").open("wb") as bad_out,
        ):
            stats = amplitude_transform.transform_export(
                zip_path, events_out, properties_out, bad_out, EXPORT_DAY
            )
        result |= {
            "codec": "isal",  # the transform's one codec
            "events": stats.events,
            "property_rows": stats.property_rows,
            "bad_lines": stats.bad_lines,
            "blank_lines": stats.blank_lines,
            "late": stats.late_events,
            "bytes_in": stats.bytes_in,
            "bytes_uncompressed": stats.bytes_uncompressed,
        }
    elif kind == "naive":
        result |= naive_transform(zip_path, out, EXPORT_DAY)
        result["codec"] = "zlib (gzip module)"
    elif kind != "idle":
        raise SystemExit(f"unknown child kind {kind!r}")
    result["seconds"] = time.perf_counter() - wall
    own_after, children_after = _cpu_seconds()
    result["cpu_seconds"] = own_after - own_cpu + children_after - children_cpu
    result["children_cpu_seconds"] = children_after - children_cpu
    result["rss_after_import_kib"] = after_import
    result["max_rss_kib"] = _max_rss_kib()
    result["vm_hwm_kib"] = _vm_hwm_kib()
    result["bytes_out"] = sum(p.stat().st_size for p in out.glob("*.json.gz")) if kind != "idle" else 0
    return result


def time_limit(measured_seconds: float | None, scale: float) -> float:
    """Seconds a run may take: ``FIRST_RUN_SECONDS`` with nothing measured yet, otherwise ``SLACK`` times
    the measured time of the same kind of run on ``1/scale`` of the work (at least ``MIN_SCALED_SECONDS``)."""
    if measured_seconds is None:
        return FIRST_RUN_SECONDS
    return max(MIN_SCALED_SECONDS, SLACK * measured_seconds * scale)


def run_child(kind: str, zip_path: Path | None, outdir: Path, timeout: float) -> dict[str, Any]:
    outdir.mkdir(parents=True, exist_ok=True)
    # Through /bin/sh: on Linux a process started straight from this one (vfork + exec) starts with
    # this process's peak RSS in its ru_maxrss; the shell's fork gives the child a clean count.
    command = [
        *("/bin/sh", "-c", '"$@"; exit $?', "sh"),
        *(sys.executable, __file__, "--child", kind, str(zip_path or ""), str(outdir)),
    ]
    busy_before, launched = _machine_busy_seconds(), time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = TreeWatch(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise BenchError(f"the {kind} run did not finish within its time limit ({timeout:.0f} s)") from None
    finally:
        watch.stop()
    if process.returncode != 0:
        raise BenchError(f"the {kind} child failed (exit {process.returncode}):\n{stderr[-3000:]}")
    result = dict(json.loads(stdout.strip().splitlines()[-1]))
    # CPU the rest of the machine used meanwhile (other sessions, this process's sampling thread)
    result["other_cpu_seconds"] = max(0.0, _machine_busy_seconds() - busy_before - result["cpu_seconds"])
    result["child_wall_seconds"] = time.perf_counter() - launched
    peaks = dict(watch.peaks)
    main_peak = max(peaks.pop(result["pid"], 0), result["max_rss_kib"])  # ru_maxrss is exact
    result["tree_peak_kib"] = main_peak + sum(peaks.values())
    result["tree_sampled_kib"] = watch.sampled_peak
    result["processes"] = 1 + len(peaks)
    return result


def _machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine has spent busy (or stolen) since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (this kernel has no /proc/<pid>/task/<tid>/children)."""
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat:
                    data = stat.read()
            except OSError:
                continue
            parents[int(entry.name)] = int(data[data.rindex(b")") + 2 :].split()[1])
    return parents


def _rss_and_hwm_kib(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            values = {
                line.split(":")[0]: int(line.split()[1])
                for line in status
                if line.startswith(("VmRSS:", "VmHWM:"))
            }
    except (OSError, ValueError, IndexError):
        return None
    return (values["VmRSS"], values["VmHWM"]) if len(values) == 2 else None


@dataclass
class TreeWatch:
    """Memory of every process under ``root`` (the launching shell excluded), sampled from here.

    ``peaks``: each process's own peak RSS (VmHWM, kept by the kernel, read while it lives), so a
    worker process is counted even if it starts and ends between two samples of the sum.
    ``sampled_peak``: the largest sum of the processes' current RSS seen at one sample.
    """

    root: int
    interval: float = 0.02
    rescan_every: int = 5  # finding new processes reads all of /proc (~1 ms): every 5th sample
    peaks: dict[int, int] = field(default_factory=dict)
    sampled_peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tree-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        known: list[int] = []
        tick = 0
        while not self._stop.is_set():
            if tick % self.rescan_every == 0:
                known = self._descendants()
            tick += 1
            total = 0
            for pid in known:
                if (memory := _rss_and_hwm_kib(pid)) is not None:
                    total += memory[0]
                    self.peaks[pid] = max(self.peaks.get(pid, 0), memory[1])
            self.sampled_peak = max(self.sampled_peak, total)
            self._stop.wait(self.interval)

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for pid, parent in _parents().items():
            children.setdefault(parent, []).append(pid)
        found, pending = [], list(children.get(self.root, ()))
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(children.get(pid, ()))
        return found

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)


# -- exports and outputs ---------------------------------------------------------------------------


def generate(path: Path, events_per_hour: int, seed: int) -> tuple[ExportStats, float]:
    from jupiter_data.local.amplitude_data import ExportSpec

    spec = ExportSpec(events_per_hour=events_per_hour, seed=seed, malformed_rate=MALFORMED_RATE)
    started = time.perf_counter()
    stats = spec.write_zip(path, EXPORT_DAY, datetime(2024, 3, 1, 23, tzinfo=UTC))
    return stats, time.perf_counter() - started


def gunzipped(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file, in pieces (never whole in memory)."""
    inflater = zlib.decompressobj(31)
    with path.open("rb") as handle:
        while data := handle.read(chunk):
            if piece := inflater.decompress(data):
                yield piece
    if tail := inflater.flush():
        yield tail
    if not inflater.eof:
        raise BenchError(f"{path} is a truncated gzip stream")


@dataclass
class OutputCheck:
    lines: dict[str, int]
    uncompressed: dict[str, int]
    compress_seconds: float = 0.0  # gzip level 1 of the outputs' NDJSON with zlib (timed when asked)


def check_outputs(outdir: Path, time_compression: bool) -> OutputCheck:
    """Lines and NDJSON bytes of each output; optionally the time zlib level 1 takes to write them."""
    check = OutputCheck({}, {})
    for name in OUTPUTS:
        lines = size = 0
        deflater = zlib.compressobj(COMPRESSLEVEL, zlib.DEFLATED, 31)
        for piece in gunzipped(outdir / f"{name}.json.gz"):
            lines += piece.count(b"\n")
            size += len(piece)
            if time_compression:
                started = time.perf_counter()
                deflater.compress(piece)
                check.compress_seconds += time.perf_counter() - started
        if time_compression:
            started = time.perf_counter()
            deflater.flush()
            check.compress_seconds += time.perf_counter() - started
        check.lines[name], check.uncompressed[name] = lines, size
    return check


def gunzip_seconds(zip_path: Path) -> float:
    """Time to inflate every member of the export with zlib, doing nothing with the bytes."""
    started = time.perf_counter()
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            inflater = zlib.decompressobj(31)
            with archive.open(info) as stream:
                while data := stream.read(1 << 20):
                    inflater.decompress(data)
    return time.perf_counter() - started


# -- report ----------------------------------------------------------------------------------------


@dataclass
class Size:
    label: str
    zip_path: Path
    export: ExportStats
    generation_seconds: float
    real: dict[str, Any] | None = None
    naive: dict[str, Any] | None = None
    real_outputs: OutputCheck | None = None

    def rate(self, run: dict[str, Any]) -> float:
        return float(run["events"] / run["seconds"])


def rss_mib(run: dict[str, Any]) -> float:
    """Peak RSS of the run: its process's ru_maxrss plus the peak of every process it started."""
    return float(run["tree_peak_kib"] / 1024)


def main_rss_mib(run: dict[str, Any]) -> float:
    return float(run["max_rss_kib"] / 1024)


def correctness(size: Size) -> list[str]:
    problems = []
    expected = size.export
    assert size.real is not None and size.naive is not None and size.real_outputs is not None
    for name, run in (("real", size.real), ("naive", size.naive)):
        for field_name, want in (("events", expected.events), ("bad_lines", expected.malformed)):
            if run[field_name] != want:
                problems.append(
                    f"{size.label} {name}: {field_name} {run[field_name]:,} != generator's {want:,}"
                )
        if run["late"] != expected.late:
            problems.append(
                f"{size.label} {name}: late events {run['late']:,} != generator's {expected.late:,}"
            )
    if size.real["property_rows"] != size.naive["property_rows"]:
        problems.append(
            f"{size.label}: property rows real {size.real['property_rows']:,} "
            f"!= naive {size.naive['property_rows']:,}"
        )
    written = size.real_outputs.lines
    for name, reported in (
        ("events", size.real["events"]),
        ("properties", size.real["property_rows"]),
        ("bad_lines", size.real["bad_lines"]),
    ):
        if written[name] != reported:
            problems.append(
                f"{size.label} real: {name} output holds {written[name]:,} rows, stats say {reported:,}"
            )
    if size.real["bytes_uncompressed"] != size.naive["bytes_uncompressed"]:
        problems.append(f"{size.label}: the implementations read different NDJSON byte counts")
    return problems


def report(small: Size, large: Size, idle: dict[str, Any]) -> None:
    # label, real, naive, ratio (None: computed, "-": none), target, met, higher is better, format
    rows: list[tuple[str, float, float, str | None, str, bool | None, bool | None, str]] = []
    for size in (small, large):
        real, naive = size.real, size.naive
        assert real is not None and naive is not None
        real_rate, naive_rate = size.rate(real), size.rate(naive)
        speed_met = real_rate >= TARGET_SPEEDUP * naive_rate and real_rate >= TARGET_EVENTS_PER_S
        rows += [
            (
                f"events/s, {size.label} ({real['events']:,} events)",
                real_rate,
                naive_rate,
                None,
                f">= {TARGET_SPEEDUP:.0f}x and >= {TARGET_EVENTS_PER_S:,.0f}/s",
                speed_met,
                True,
                ",.0f",
            ),
            (f"  gzip in, MB/s, {size.label}", real["bytes_in"] / MB / real["seconds"],
             naive["bytes_in"] / MB / naive["seconds"], None, "", None, True, ",.1f"),
            (f"  NDJSON in, MB/s, {size.label}", real["bytes_uncompressed"] / MB / real["seconds"],
             naive["bytes_uncompressed"] / MB / naive["seconds"], None, "", None, True, ",.1f"),
            (f"  elapsed s, {size.label}", real["seconds"], naive["seconds"], None, "", None, False, ",.2f"),
            (f"  CPU s, all processes, {size.label}", real["cpu_seconds"], naive["cpu_seconds"], None, "",
             None, False, ",.2f"),
            (f"  gzip out MB, {size.label}", real["bytes_out"] / MB, naive["bytes_out"] / MB, None, "", None,
             None, ",.1f"),
            (f"peak RSS MiB, {size.label}, all processes", rss_mib(real), rss_mib(naive), None,
             f"<= {TARGET_RSS_MIB:.0f} MiB", rss_mib(real) <= TARGET_RSS_MIB, False, ",.1f"),
            ("  processes", real["processes"], naive["processes"], "-", "", None, None, ".0f"),
            ("  main process ru_maxrss MiB", main_rss_mib(real), main_rss_mib(naive), None, "", None, False,
             ",.1f"),
            ("  sampled peak of the sum MiB", real["tree_sampled_kib"] / 1024,
             naive["tree_sampled_kib"] / 1024, None, "", None, False, ",.1f"),
        ]  # fmt: skip
    assert small.real is not None and large.real is not None and small.naive is not None
    assert large.naive is not None
    flat_real = rss_mib(large.real) / rss_mib(small.real)
    flat_naive = rss_mib(large.naive) / rss_mib(small.naive)
    rows += [
        (f"peak RSS {large.label}/{small.label}", flat_real, flat_naive, "-",
         f"<= {TARGET_RSS_FLAT:.1f} (flat)", flat_real <= TARGET_RSS_FLAT, False, ".3f"),
        ("idle child RSS MiB (imports only, reference)", rss_mib(idle), rss_mib(idle), "-", "", None, None,
         ",.1f"),
    ]  # fmt: skip
    print()
    print(f"{'figure':<44} | {'real':>10} | {'naive baseline':>14} | {'ratio':>7} | target")
    print(f"{'-' * 44}-+-{'-' * 10}-+-{'-' * 14}-+-{'-' * 7}-+-{'-' * 40}")
    for label, real_value, naive_value, ratio, target, met, higher, fmt in rows:
        shown = ratio if ratio is not None else (f"{real_value / naive_value:.2f}x" if naive_value else "-")
        printed_target = f"{target}: {verdict(bool(met))}" if target else ""
        print(f"{label:<44} | {real_value:>10{fmt}} | {naive_value:>14{fmt}} | {shown:>7} | {printed_target}")
        reference = label.startswith("idle")  # printed in both columns; it is no baseline
        record(
            bench="amplitude_transform",
            figure=label.strip(),
            value=real_value,
            baseline=None if reference else naive_value,
            baseline_label="naive transform",
            target=target,
            met=met,
            higher_is_better=higher,
            comparable=ratio is None,
        )


def day_extrapolation(large: Size) -> None:
    assert large.real is not None
    rate = large.rate(large.real)
    seconds = DAY_EVENTS / rate
    fits = seconds <= FUNCTION_TIMEOUT_S
    needed = DAY_EVENTS / FUNCTION_TIMEOUT_S
    cpu_seconds = DAY_EVENTS * large.real["cpu_seconds"] / large.real["events"]
    cpu_fits = cpu_seconds <= FUNCTION_TIMEOUT_S
    zip_per_event = large.export.bytes / large.export.events
    out_per_event = large.real["bytes_out"] / large.real["events"]
    print()
    print(
        f"3M-event day on one instance at the {large.label} rate ({rate:,.0f} events/s): "
        f"{seconds:,.0f} s ({seconds / 60:.1f} min) of transform vs the {FUNCTION_TIMEOUT_S:.0f} s "
        f"({FUNCTION_TIMEOUT_S / 60:.0f} min) timeout ({seconds / FUNCTION_TIMEOUT_S:.0%} of it; "
        f"{needed:,.0f} events/s needed) -> {'fits' if fits else 'DOES NOT FIT'}; "
        f"fan-out needed on this machine: {'no' if fits else 'YES'}"
    )
    print(
        f"  on one vCPU (its CPU time, {large.real['cpu_seconds']:.2f} s for {large.real['events']:,} "
        f"events, cannot overlap): {cpu_seconds:,.0f} s ({cpu_seconds / FUNCTION_TIMEOUT_S:.0%} of the "
        f"timeout) -> {'fits' if cpu_fits else 'DOES NOT FIT'}; "
        f"fan-out needed on 1 vCPU: {'no' if cpu_fits else 'YES'}"
    )
    print(
        "  not included: the Export API download, the GCS uploads and the load jobs; a Cloud Functions "
        "vCPU may be slower than this machine's."
    )
    cap = 256 * 2**20  # AMPLITUDE_MAX_WINDOW_BYTES's default
    per_event = zip_per_event + out_per_event
    windows = 2 ** math.ceil(math.log2(max(1.0, zip_per_event * DAY_EVENTS / cap)))
    print(
        f"  /tmp (memory on Cloud Functions) for a 3M day: zip {zip_per_event * DAY_EVENTS / MB:,.0f} MB + "
        f"outputs {out_per_event * DAY_EVENTS / MB:,.0f} MB at this export's bytes per event if held at "
        f"once; AmplitudeSync holds one window at a time, windows halved until the zip is <= 256 MiB: "
        f"about {windows} windows, peak about {per_event * DAY_EVENTS / windows / MB:,.0f} MB"
    )


def where_time_goes(small: Size, gunzip_s: float) -> None:
    assert small.real is not None and small.real_outputs is not None
    real = small.real
    compress_s = small.real_outputs.compress_seconds
    ndjson_out = sum(small.real_outputs.uncompressed.values())
    cpu = real["cpu_seconds"]
    rest = cpu - gunzip_s - compress_s
    print()
    print(
        f"where the time goes ({small.label}, real, codec {real['codec']}: {cpu:.2f} CPU s in "
        f"{real['processes']} process(es), {real['seconds']:.2f} s elapsed):"
    )
    print(
        f"  gunzip the input alone (zlib, one thread): {gunzip_s:.2f} s ({gunzip_s / cpu:.0%} of the CPU); "
        f"gzip level {COMPRESSLEVEL} of its {ndjson_out / MB:,.0f} MB of output NDJSON alone (zlib): "
        f"{compress_s:.2f} s ({compress_s / cpu:.0%}); the rest (parse, check, flatten, encode, I/O, "
        f"processes): {rest:.2f} s ({rest / cpu:.0%})"
    )
    print(
        f"  output NDJSON per event: {ndjson_out / real['events']:,.0f} B "
        f"({real['property_rows'] / real['events']:.1f} property rows per event)"
    )


# -- main ------------------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _, _, kind, zip_path, outdir = sys.argv
        print(json.dumps(child(kind, zip_path, outdir)))
        return 0
    return exit_status(run)


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--small", type=int, default=100_000, help="events in the small export (about)")
    parser.add_argument("--large", type=int, default=500_000, help="events in the large export (about)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="bench-amplitude-"))
    try:
        sizes: list[Size] = []
        labels = [f"{n // 1000}k" if n % 1000 == 0 else str(n) for n in (args.small, args.large)]
        with ProcessPoolExecutor(2) as pool:
            futures = [
                pool.submit(generate, work / f"export-{label}.zip", max(1, round(n / 24)), args.seed)
                for label, n in zip(labels, (args.small, args.large), strict=True)
            ]
            scale = args.large / args.small
            for label, future in zip(labels, futures, strict=True):
                small_seconds = sizes[0].generation_seconds if sizes else None
                limit = time_limit(small_seconds, scale)
                try:
                    export, seconds = future.result(timeout=limit)
                except TimeoutError:
                    raise BenchError(f"generating the {label} export took over {limit:.0f} s") from None
                sizes.append(Size(label, work / f"export-{label}.zip", export, seconds))
        for size in sizes:
            export = size.export
            print(
                f"export {size.label}: {export.events:,} events + {export.malformed} malformed lines "
                f"({export.late:,} late), {export.members} members, zip {export.bytes / MB:,.1f} MB "
                f"(generated in {size.generation_seconds:.1f} s, not timed)"
            )
        idle = run_child("idle", None, work / "idle", FIRST_RUN_SECONDS)
        for size in sizes:
            for kind in ("real", "naive"):
                outdir = work / f"{kind}-{size.label}"
                small_run = getattr(sizes[0], kind) if size is not sizes[0] else None
                measured = None if small_run is None else small_run["child_wall_seconds"]
                scale = size.export.events / sizes[0].export.events
                result = run_child(kind, size.zip_path, outdir, time_limit(measured, scale))
                setattr(size, kind, result)
                other = result["other_cpu_seconds"] / result["child_wall_seconds"]
                print(
                    f"{kind:>5} {size.label}: {result['events']:,} events, "
                    f"{result['property_rows']:,} property rows, "
                    f"{result['bad_lines']} bad lines in {result['seconds']:.2f} s "
                    f"({result['events'] / result['seconds']:,.0f} events/s), peak RSS "
                    f"{rss_mib(result):,.1f} MiB in {result['processes']} process(es); other load on the "
                    f"machine meanwhile: {other:.2f} CPUs"
                )
                if kind == "real":
                    size.real_outputs = check_outputs(outdir, time_compression=size is sizes[0])
                shutil.rmtree(outdir)  # keep the temporary directory small
        small, large = sizes
        gunzip_s = gunzip_seconds(small.zip_path)
        problems = [problem for size in sizes for problem in correctness(size)]
        assert small.real is not None
        print(
            f"real codec: {small.real['codec']} (gzip level {COMPRESSLEVEL}); naive: gzip module, level "
            f"{COMPRESSLEVEL}, json + datetime.strptime; each figure from one fresh subprocess; "
            "peak RSS = ru_maxrss of the child + VmHWM of each process it started"
        )
        runs = [idle, *(run for size in sizes for run in (size.real, size.naive) if run is not None)]
        sources = sorted({run["source"] for run in runs})
        where = Path(amplitude_transform.__file__).parents[1]
        modules = ", ".join(str(path.relative_to(where)) for path in TRANSFORM_SOURCES)
        print(f"transform modules {modules}: sha256 {', '.join(sources)} as the children read them")
        if len(sources) > 1:
            print("WARNING: the transform modules changed during the run; the figures mix their versions")
        named = [("idle", idle)] + [
            (f"{run['kind']} {size.label}", run)
            for size in sizes
            for run in (size.real, size.naive)
            if run is not None
        ]
        print(
            "peak RSS cross-check, ru_maxrss / VmHWM (MiB): "
            + ", ".join(
                f"{name} {main_rss_mib(run):.1f} / {run['vm_hwm_kib'] / 1024:.1f}" for name, run in named
            )
        )
        report(small, large, idle)
        day_extrapolation(large)
        where_time_goes(small, gunzip_s)
        print(machine())
        if problems:
            print("\nFAILED: counts disagree:")
            for problem in problems:
                print(f"  - {problem}")
            return 1
        print(
            "\nOK: at both sizes, real and naive wrote exactly the generator's events, malformed lines and "
            "late events, the same number of property rows, and the real outputs hold exactly those rows"
        )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
