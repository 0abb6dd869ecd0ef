"""bench/report.py: figures recorded by the benchmarks in, one markdown table out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.bench_scripts import BENCH_DIR, load_script

with pytest.MonkeyPatch.context() as patch:
    report = load_script("report", patch)


def figure(bench: str, name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "figure",
        "bench": bench,
        "figure": name,
        "value": value,
        "machine": f"m-{bench}",
        **extra,
    }


def status(bench: str, code: int = 0, seconds: float = 12.0) -> dict[str, Any]:
    return {
        "kind": "status",
        "bench": bench,
        "command": f"python bench/{bench}.py",
        "exit": code,
        "seconds": seconds,
        "started": "2031-05-01T10:00:00Z",
        "finished": "2031-05-01T10:05:00Z",
        "commit": "abc1234",
        "machine": f"machine of {bench}",
    }


def table_rows(text: str) -> list[list[str]]:
    """The markdown table's body rows, split into cells (header and separator dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| bench | figure | value | baseline (same run) | ratio | target | met |")
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def row_for(text: str, figure_name: str) -> list[str]:
    (row,) = [r for r in table_rows(text) if r[1] == figure_name]
    return row


def test_ratio_is_value_over_baseline_with_the_baseline_and_its_label_beside_it() -> None:
    entries = [
        figure(
            "loader",
            "max throughput (msg/s)",
            1500.0,
            baseline=300.0,
            baseline_label="one insert per message",
            target=">= 1,000/s",
            met=True,
            higher_is_better=True,
        ),
        status("loader"),
    ]
    rendered = report.render(entries, ["loader"], "make bench", "abc1234")
    bench, _figure, value, baseline, ratio, target, met = row_for(rendered.text, "max throughput (msg/s)")
    assert (bench, value, baseline) == ("loader", "1,500", "300 (one insert per message)")
    assert ratio == "5.00x (higher is better)"
    assert (target, met) == (">= 1,000/s", "MET")
    assert rendered.failed == []


def test_lower_is_better_is_said_and_units_follow_both_numbers() -> None:
    entries = [
        figure(
            "bridge",
            "p99 at 200/s",
            12.5,
            unit="ms",
            baseline=5.0,
            baseline_label="trivial",
            target="<= 50 ms",
            met=True,
            higher_is_better=False,
        ),
        figure("bridge", "p50 at 200/s", 1.0, unit="ms", baseline=4.0, higher_is_better=False),
        status("bridge"),
    ]
    text = report.render(entries, ["bridge"], "make bench", "abc1234").text
    p99 = row_for(text, "p99 at 200/s")
    assert p99[2:5] == ["12.5 ms", "5 ms (trivial)", "2.50x (lower is better)"]
    assert row_for(text, "p50 at 200/s")[4] == "0.25x (lower is better)"


def test_no_ratio_without_a_baseline_for_counts_or_for_a_zero_or_nan_baseline() -> None:
    entries = [
        figure("pubsub_emulator", "push", 900.0, unit="msg/s"),
        figure("loader", "messages handled", 3000.0, baseline=400.0, comparable=False),
        figure("loader", "zero baseline", 3.0, baseline=0.0),
        figure("loader", "nan value", float("nan"), baseline=2.0),
        status("pubsub_emulator"),
        status("loader"),
    ]
    text = report.render(entries, ["pubsub_emulator", "loader"], "make bench", "abc1234").text
    push = row_for(text, "push")
    assert push[2:7] == ["900 msg/s", "-", "-", "", ""]
    assert row_for(text, "messages handled")[3:5] == ["400", "-"]
    assert row_for(text, "zero baseline")[4] == "n/a"
    assert row_for(text, "nan value")[2] == "n/a"
    assert row_for(text, "nan value")[4] == "n/a"


def test_a_missed_target_says_missed_and_is_counted_in_the_header() -> None:
    entries = [
        figure("fetch_api", "added at the median", 25.0, unit="ms", target="<= 20 ms", met=False),
        figure("fetch_api", "other", 1.0, target="<= 20 ms", met=True),
        status("fetch_api"),
    ]
    rendered = report.render(entries, ["fetch_api"], "make bench", "abc1234")
    assert row_for(rendered.text, "added at the median")[5:] == ["<= 20 ms", "MISSED"]
    assert "- targets: 1 met, 1 missed;" in rendered.text
    assert rendered.failed == []  # a missed target is a result, not a failed bench


def test_failed_silent_and_missing_benches_each_get_a_row_and_count_as_failed() -> None:
    expected = ["pubsub_emulator", "bridge", "loader", "fetch_api"]
    entries = [
        figure("pubsub_emulator", "publish", 5000.0),
        status("pubsub_emulator"),
        figure("bridge", "throughput", 700.0, baseline=1400.0),
        status("bridge", code=2, seconds=33.0),
        status("loader"),  # ran, exit 0, recorded nothing
        # fetch_api: never ran
    ]
    rendered = report.render(entries, expected, "make bench", "abc1234")
    rows = table_rows(rendered.text)
    assert [r[0] for r in rows] == ["pubsub_emulator", "bridge", "bridge", "loader", "fetch_api"]
    assert rows[1][1] == "throughput"  # what a failed bench recorded before failing is kept
    assert rows[2][1] == "**FAILED**: exit 2 after 33 s (see its output)"
    assert rows[3][1] == "**RECORDED NOTHING** (exit 0): no figures"
    assert rows[4][1] == "**DID NOT RUN**: no exit status recorded"
    assert rendered.failed == ["bridge", "loader", "fetch_api"]
    assert "FAILED: bridge, loader, fetch_api" in rendered.text


def test_header_carries_run_time_commit_command_and_each_bench_s_machine_line() -> None:
    entries = [figure("loader", "x", 1.0), status("loader"), status("bridge")]
    text = report.render(
        entries, ["loader", "bridge"], "make bench", "abc1234 + uncommitted changes (x)"
    ).text
    assert "- run: 2031-05-01T10:00:00Z to 2031-05-01T10:05:00Z (0.4 min of benchmarks)" in text
    assert "- git commit when written: abc1234 + uncommitted changes (x)" in text
    assert "- command: `make bench`" in text
    assert "  - `python bench/loader.py`: exit 0, 12 s" in text
    assert "  - `loader`: m-loader" in text  # from its figures
    assert "  - `bridge`: machine of bridge" in text  # recorded nothing: from its exit status
    assert "started at commit" not in text  # one commit throughout


def test_pipes_in_figures_do_not_break_the_table() -> None:
    entries = [figure("loader", "a | b", 1.0), status("loader")]
    text = report.render(entries, ["loader"], "make bench", "abc1234").text
    assert "| loader | a \\| b | 1 |" in text


def test_record_appends_one_json_line_and_is_a_no_op_without_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(BENCH_DIR))  # record() reads bench/machine.py, as the scripts do
    results = tmp_path / "results.jsonl"
    monkeypatch.delenv(report.ENV, raising=False)
    report.record(bench="loader", figure="x", value=1.0)
    assert not results.exists()

    monkeypatch.setenv(report.ENV, str(results))
    report.record(
        bench="loader", figure="x", value=3, baseline=2, target="t", met=True, higher_is_better=True
    )
    report.record(bench="loader", figure="y", value=4.5)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(lines) == 2
    first = lines[0]
    assert {k: first[k] for k in ("kind", "bench", "figure", "value", "baseline", "target", "met")} == {
        "kind": "figure",
        "bench": "loader",
        "figure": "x",
        "value": 3.0,
        "baseline": 2.0,
        "target": "t",
        "met": True,
    }
    assert first["machine"].startswith("machine: ") and "load average" in first["machine"]
    assert first["at"].endswith("Z")
    assert lines[1]["baseline"] is None and lines[1]["met"] is None


def test_write_renders_the_file_and_exits_nonzero_when_a_bench_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "git_state", lambda ignore=(): "abc1234")
    results, out = tmp_path / "results.jsonl", tmp_path / "RESULTS.md"
    good = [figure("loader", "x", 2.0, baseline=1.0), status("loader")]
    results.write_text("".join(json.dumps(e) + "\n" for e in good))
    argv = ["write", "--results", str(results), "--out", str(out), "--command", "make bench"]
    assert report.main([*argv, "--expected", "loader"]) == 0
    assert row_for(out.read_text(), "x")[4] == "2.00x"

    assert report.main([*argv, "--expected", "loader", "bridge"]) == 1  # bridge never ran
    assert "**DID NOT RUN**" in out.read_text()

    with results.open("a") as more:
        more.write(json.dumps(status("bridge", code=1)) + "\n")
    assert report.main([*argv, "--expected", "loader", "bridge"]) == 1
    assert row_for(out.read_text(), "**FAILED**: exit 1 after 12 s (see its output)")[0] == "bridge"


def test_write_with_no_results_file_reports_every_bench_as_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(report, "git_state", lambda ignore=(): "abc1234")
    out = tmp_path / "RESULTS.md"
    argv = ["write", "--results", str(tmp_path / "absent.jsonl"), "--out", str(out), "--expected", "a", "b"]
    assert report.main(argv) == 1
    rows = table_rows(out.read_text())
    assert [(r[0], r[1]) for r in rows] == [
        ("a", "**DID NOT RUN**: no exit status recorded"),
        ("b", "**DID NOT RUN**: no exit status recorded"),
    ]
    assert "- run: no benchmark ran" in out.read_text()


def test_percentile_is_nearest_rank_whatever_the_order() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 100 .. 1, unsorted on purpose
    assert [report.percentile(values, q) for q in (0.5, 0.9, 0.99, 1.0)] == [50.0, 90.0, 99.0, 100.0]
    assert report.percentile([7.0], 0.5) == 7.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0  # ceil(3.8) = 4th value
    assert report.percentile([], 0.5) != report.percentile([], 0.5)  # NaN for no values
