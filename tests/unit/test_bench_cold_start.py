"""bench/cold_start.py: what it times (-X importtime's top level), what a function's libraries are, and
that a function which does not import fails the bench rather than making a row."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.bench_scripts import load_script


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_script("cold_start", monkeypatch)


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       200 |        200 |   _io
import time:       600 |        800 | _frozen_importlib_external
import time:       700 |       1000 |     json.scanner
import time:       600 |       1600 |   json.decoder
import time:      2000 |       3600 | json
a line the imported code printed
"""


def test_the_figure_is_the_cumulative_time_of_the_top_level_imports(bench: ModuleType) -> None:
    imports = bench.parse_importtime(IMPORTTIME)
    assert imports.total_ms == pytest.approx(0.8 + 3.6)  # nested entries are inside their parents' time
    assert imports.modules == {
        "_io": 0.2,
        "_frozen_importlib_external": 0.8,
        "json.scanner": 1.0,
        "json.decoder": 1.6,
        "json": 3.6,
    }


def test_a_library_is_its_top_level_packages_and_below_a_shared_namespace_its_own(
    bench: ModuleType,
) -> None:
    assert bench.library_imports(["requests"]) == ["functions_framework", "requests"]
    pubsub = bench.library_imports(["google-cloud-pubsub"])
    assert {"google.cloud.pubsub_v1", "google.pubsub_v1"} <= set(pubsub)
    assert "google" not in pubsub  # the namespace other clients share: importing it loads nothing
    assert "google.pubsub_v1.types" not in pubsub  # inside a package it already imports


def test_the_costliest_extra_imports_leave_out_main_and_what_the_libraries_load(bench: ModuleType) -> None:
    own = bench.Imports(10.0, {"main": 10.0, "json": 3.0, "pandas": 6.0, "jupiter_data.app": 7.0})
    libraries = bench.Imports(3.0, {"json": 3.0})
    assert bench.not_in_libraries(own, libraries) == [("jupiter_data.app", 7.0), ("pandas", 6.0)]


def test_an_import_error_is_a_failure_not_a_figure(bench: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("import json\nraise RuntimeError('settings missing')\n")
    with pytest.raises(bench.ImportFailed, match="settings missing"):
        bench.timed_import("import main", tmp_path, {})
    assert "json" in bench.timed_import("import json", tmp_path, {}).modules
