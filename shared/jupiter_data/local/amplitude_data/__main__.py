"""``python -m jupiter_data.local.amplitude_data``: write an export zip and print its counts.

    python -m jupiter_data.local.amplitude_data --start 20240301T00 --end 20240301T23 \\
        --events-per-hour 20000 -o export.zip
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import orjson

from jupiter_data.local.amplitude_data.hours import parse_export_hour
from jupiter_data.local.amplitude_data.spec import ExportSpec


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jupiter_data.local.amplitude_data",
        description="Write a deterministic Amplitude export zip and print its counts.",
    )
    parser.add_argument("--start", required=True, type=parse_export_hour, help="first hour, YYYYMMDDTHH")
    parser.add_argument(
        "--end", required=True, type=parse_export_hour, help="last hour, YYYYMMDDTHH (inclusive)"
    )
    parser.add_argument("--events-per-hour", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument("--compresslevel", type=int, default=6)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(list(argv) if argv is not None else None)
    spec = ExportSpec(
        events_per_hour=args.events_per_hour,
        seed=args.seed,
        malformed_rate=args.malformed_rate,
        compresslevel=args.compresslevel,
    )
    began = time.perf_counter()
    stats = spec.write_zip(args.output, args.start, args.end)
    elapsed = time.perf_counter() - began
    summary = {k: v for k, v in stats.to_json().items() if k not in {"member_names", "events_per_hour"}}
    summary["seconds"] = round(elapsed, 3)
    summary["events_per_second"] = round(stats.events / elapsed) if elapsed else None
    sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")


if __name__ == "__main__":
    main()
