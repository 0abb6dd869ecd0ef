"""The operator CLI: ``python -m jupiter_data <command>``.

Local-stack commands import ``jupiter_data.local`` lazily: that subpackage is dev-only and is not
shipped inside function archives.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupiter_data.local.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["build"]:  # build owns its options (jupiter_data/build.py); argparse can't forward them
        from jupiter_data.build import main as build_main

        return build_main(argv[1:])
    if argv[:1] == ["deploy"]:  # the same for deploy (jupiter_data/deploy.py)
        from jupiter_data.deploy import main as deploy_main

        return deploy_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m jupiter_data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="serve the local platform (emulators + functions) until Ctrl-C")
    run.add_argument("--state-dir", type=Path, default=Path(".local"), help="logs, data and stack.env")
    run.add_argument("--free-ports", action="store_true", help="pick free ports instead of the fixed ones")

    demo = commands.add_parser(
        "demo", help="start a private stack, drive sample traffic, check it end to end"
    )
    demo.add_argument("--state-dir", type=Path, default=None, help="keep logs here (default: a temp dir)")

    commands.add_parser("build", help="one reproducible archive per function under dist/ (build --help)")
    commands.add_parser("deploy", help="build, then terraform plan or apply one environment (deploy --help)")

    sync = commands.add_parser(
        "sync-amplitude", help="sync a day or a range of days from Amplitude (resumable)"
    )
    sync.add_argument(
        "--day",
        type=date.fromisoformat,
        help="YYYY-MM-DD (default: yesterday, UTC); a day can be synced from 02:00 UTC the next day",
    )
    sync.add_argument("--start", type=date.fromisoformat, help="first day of a backfill")
    sync.add_argument("--end", type=date.fromisoformat, help="last day of a backfill (inclusive)")
    sync.add_argument("--force", action="store_true", help="re-sync days that already succeeded")
    sync.add_argument(
        "--dry-run", action="store_true", help="download and transform only; store and load nothing"
    )

    replay = commands.add_parser(
        "replay-dead-letters", help="load dead-lettered SNS events that pass validation now, once each"
    )
    replay.add_argument(
        "--since", type=_utc_datetime, help="only dead letters received since (ISO 8601, UTC)"
    )
    replay.add_argument("--dry-run", action="store_true", help="report what would load; write nothing")

    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args.state_dir, args.free_ports)
    if args.command == "demo":
        from jupiter_data.local.demo import run_demo

        return run_demo(args.state_dir)
    if args.command == "sync-amplitude":
        return _sync_amplitude(args)
    if args.command == "replay-dead-letters":
        return _replay(args.since, args.dry_run)
    raise AssertionError(f"unhandled command {args.command}")


def _utc_datetime(raw: str) -> datetime:
    parsed = datetime.fromisoformat(raw)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sync_amplitude(args: argparse.Namespace) -> int:
    from jupiter_data.domain.amplitude_request import SyncRequest, days_between, yesterday
    from jupiter_data.services import amplitude_sync
    from jupiter_data.services.amplitude_sync import DayResult
    from jupiter_data.settings import SettingsError

    if (args.day and (args.start or args.end)) or bool(args.start) != bool(args.end):
        print("error: give --day, or both --start and --end", file=sys.stderr)
        return 2
    days: list[date] = []
    current: list[date] = []  # the day being synced, which the progress line names
    totals = {"bytes": 0, "events": 0}

    def starting(number: int, day: date) -> None:
        current[:] = [day]
        totals.update(bytes=0, events=0)
        print(f"[{number}/{len(days)}] {day}", file=sys.stderr)

    def progress(what: str, amount: int) -> None:
        totals[what] += amount
        line = f"{totals['bytes'] / 1e6:8.1f} MB downloaded, {totals['events']:>10,} events transformed"
        print(f"\r  {current[0]}: {line}", end="", file=sys.stderr, flush=True)

    def finished(result: DayResult) -> None:
        if result.status == "failed":
            print(f"\n  FAILED: {result.day}: {result.error}", file=sys.stderr)
            return
        counts = f"{result.events} events, {result.property_rows} property rows, {result.bad_lines} bad lines"
        print(f"\n  {result.status}: {counts}, {len(result.windows)} window(s)", file=sys.stderr)

    try:
        sync = amplitude_sync.bootstrap(progress=progress)
    except SettingsError as exc:
        print(f"error: {exc} (locally: source .local/stack.env)", file=sys.stderr)
        return 2
    try:
        days = days_between(args.start, args.end) if args.start else [args.day or yesterday(sync.clock.now())]
        # The whole range is refused before any day of it is synced if one is not complete; --force too.
        results = sync.sync_request(
            SyncRequest(days, args.force),
            dry_run=args.dry_run,
            keep_going=True,
            starting=starting,
            finished=finished,
        )
    except ValueError as exc:  # a bad range, or a day not complete yet (DayNotComplete)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = sum(result.status == "failed" for result in results)
    print(f"{len(days) - failed} of {len(days)} day(s) done", file=sys.stderr)
    return 1 if failed else 0


def _replay(since: datetime | None, dry_run: bool) -> int:
    from jupiter_data.services.replay import ReplaySummary, bootstrap
    from jupiter_data.settings import SettingsError

    try:
        replay = bootstrap()
    except SettingsError as exc:
        print(f"error: {exc} (locally: source .local/stack.env)", file=sys.stderr)
        return 2

    def progress(summary: ReplaySummary) -> None:
        print(f"\r  {summary.loaded} dead letters loadable, {summary.rows} events", end="", flush=True)

    summary = replay.run(since, dry_run, progress)
    verb = "would load" if dry_run else "loaded"
    print(f"\n{summary.pending} pending dead letters: {verb} {summary.loaded} ({summary.rows} events)")
    for error_type, count in sorted(summary.still_invalid.items()):
        print(f"  still invalid, left in place: {count} x {error_type}")
    return 0


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run(state_dir: Path, free_ports: bool) -> int:
    from jupiter_data.local.stack import LocalStack, StackPorts
    from jupiter_data.local.supervisor import StackAlreadyRunning, StartupError

    # Ctrl-C and SIGTERM stop the stack the same way; set SIGINT too, as a background job ignores it.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_interrupt)
    stack = LocalStack(
        state_dir.resolve(), StackPorts.free() if free_ports else StackPorts(), free_function_ports=free_ports
    )
    try:
        print("starting emulators and functions …", flush=True)
        stack.start()
    except (StackAlreadyRunning, StartupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    # From here on the stack runs: whatever happens, including a signal during the first sync request,
    # the finally below stops it (a signal outside this try left every service orphaned).
    try:
        if "sync_amplitude" in stack.function_urls():
            from jupiter_data.domain.amplitude_request import latest_complete_day

            day = latest_complete_day(datetime.now(UTC)).isoformat()  # yesterday from 02:00 UTC
            stack.trigger_amplitude_sync({"day": day})
            print(f"asked sync_amplitude to sync {day} from the local Amplitude (published to daily-runs)")
        print(_banner(stack), flush=True)
        while not (dead := stack.supervisor.dead_services()):
            time.sleep(0.5)
        print(f"error: {', '.join(dead)} exited; see {stack.supervisor.log_dir}; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping …", flush=True)
        return 0
    finally:
        stack.stop()


def _banner(stack: LocalStack) -> str:
    from jupiter_data.local.stack import SNS_TOPIC_ARN

    env = stack.env()
    lines = [f"local platform healthy in {stack.startup_seconds:.1f}s", ""]
    lines += [
        f"  {name:<24} {value}" for name, value in env.items() if "EMULATOR" in name or "ENDPOINT" in name
    ]
    for name, url in stack.function_urls().items():
        lines.append(f"  {name:<24} {url}")
    if "fetch_from_bigquery" in stack.function_urls():
        lines.append(f"  {'development API key':<24} {stack.fetch_api_key}")
    if not stack.functions:
        lines.append("  (no functions built yet: functions/<name>/main.py appear with their issues)")
    lines += [
        "",
        f"attach another shell:   source {stack.env_file}",
        f"logs:                   {stack.supervisor.log_dir}",
        "",
        "try:",
        f"  source {stack.env_file}",
        "  curl -s $STORAGE_EMULATOR_HOST/storage/v1/b?project=$GOOGLE_CLOUD_PROJECT",
        "  curl -s $BIGQUERY_EMULATOR_HOST/bigquery/v2/projects/$GOOGLE_CLOUD_PROJECT/datasets",
        "  python -m jupiter_data --help",
    ]
    if "sns_to_pubsub" in stack.function_urls():
        lines += [
            "  # publish to SNS (moto); the bridge verifies it and republishes it to Pub/Sub sns-events:",
            "  .venv/bin/python -c \"import boto3; print(boto3.client('sns').publish(TopicArn="
            f'\'{SNS_TOPIC_ARN}\', Message=\'{{\\"userId\\": \\"u1\\"}}\'))"',
            "  curl -si -X POST $SNS_TO_PUBSUB_URL -d '{}'    # unsigned: 400 with the reason",
        ]
    if "fetch_from_bigquery" in stack.function_urls():
        lines += [
            "  # the data API, with this stack's development key ($FETCH_API_KEY in stack.env):",
            '  curl -s -H "Authorization: Bearer $FETCH_API_KEY" '
            '"$FETCH_FROM_BIGQUERY_URL/v1/metrics/event-counts?start=2026-11-01&end=2026-11-30"',
        ]
    if "sync_amplitude" in stack.function_urls():
        lines += [
            "  # sync or backfill Amplitude days into amplitude.events (resumable, with progress):",
            "  .venv/bin/python -m jupiter_data sync-amplitude --start 2026-11-01 --end 2026-11-03",
        ]
    lines += [
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)
