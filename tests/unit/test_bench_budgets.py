"""The benchmarks' time limits scale with the machine's measured speed, so a slower machine gets
proportionally longer (a MISSED row at worst) and never a crash from a fixed budget."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType

import pytest

from tests.unit.bench_scripts import load_script


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    return partial(load_script, monkeypatch=monkeypatch)


def test_no_bench_has_a_fixed_whole_run_budget(load: Callable[[str], ModuleType]) -> None:
    for name in ("amplitude_transform", "bridge", "loader", "pubsub_emulator"):
        module = load(name)
        assert not hasattr(module, "BUDGET_SECONDS"), f"{name} still stops after a fixed time"


def test_pubsub_phase_deadlines_scale_with_the_measured_baseline(load: Callable[[str], ModuleType]) -> None:
    bench = load("pubsub_emulator")
    fast, slow = bench.PhaseTimeout(2_000.0), bench.PhaseTimeout(200.0)  # msg/s, 1 message per RPC
    assert slow.seconds(20_000) == 10 * fast.seconds(20_000)  # ten times slower: ten times longer
    # The old fixed 20 s: 20,000 messages at 200 msg/s take 100 s, and the deadline leaves room for it.
    assert slow.seconds(20_000) > 20_000 / 200
    assert fast.seconds(10) == bench.MIN_PHASE_SECONDS  # tiny phases still get a sane floor


def test_loader_drain_time_scales_with_how_long_the_phase_took(load: Callable[[str], ModuleType]) -> None:
    bench = load("loader")
    here, slower = bench.drain_seconds(20.0), bench.drain_seconds(200.0)
    assert slower - bench.DRAIN_SECONDS == 10 * (here - bench.DRAIN_SECONDS)
    assert slower > 200.0  # a phase that took 200 s to send may drain for longer than that


def test_amplitude_large_runs_scale_from_the_small_run_of_their_kind(
    load: Callable[[str], ModuleType],
) -> None:
    bench = load("amplitude_transform")
    assert bench.time_limit(None, 5.0) == bench.FIRST_RUN_SECONDS  # nothing measured yet
    # A naive small run of 60 s (a slow machine) predicts 300 s for five times the events.
    assert bench.time_limit(60.0, 5.0) == bench.SLACK * 300.0
    assert bench.time_limit(60.0, 5.0) > 300.0
    assert bench.time_limit(0.1, 5.0) == bench.MIN_SCALED_SECONDS
