"""``make build``: one reproducible archive per function (jupiter_data.build).

Most tests build functions they create in a throwaway repository layout (a copy of the real
``shared/jupiter_data`` and ``Pipfile.lock``); others build the real functions. The last ones deploy
archives the way Cloud Functions does: extract, make a fresh virtualenv, ``pip install -r
requirements.txt`` (hash-checked) under pip 23.2 (what a new Python 3.11 virtualenv brings) and under
the current pip, then import each real function's ``main``, or start functions-framework on a test
function and call it over HTTP. Those download the runtime dependencies (pip's cache helps), so they
take a while; they skip only when pip cannot reach any package index. Each deletes its virtualenv.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import packaging.markers
import pytest
import requests
from packaging.utils import canonicalize_name

from jupiter_data.build import (
    TARGET,
    BuildError,
    build_all,
    build_function,
    declared_packages,
    main,
    requirements_txt,
)
from jupiter_data.resources import load_functions
from tests.support import write_manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_PACKAGE = REPO_ROOT / "shared" / "jupiter_data"
LOCK = REPO_ROOT / "Pipfile.lock"
FUNCTIONS = sorted(p.parent.name for p in (REPO_ROOT / "functions").glob("*/main.py"))
# Pinned, hashed, optional markers; extras only on a package that also has its plain line.
REQUIREMENT = re.compile(
    r"([A-Za-z0-9][\w.-]*)(\[[\w,-]+\])?==([^\s;]+)(; .+?)?((?: --hash=sha256:[0-9a-f]{64})+)"
)
# HELLO imports every shipped module of jupiter_data, so it needs what they import.
HELLO_PACKAGES = [
    "cryptography",
    "functions-framework",
    "google-cloud-bigquery",
    "google-cloud-pubsub",
    "google-cloud-storage",
    "isal",
    "jsonschema",
    "orjson",
    "requests",
]

# Answers with proof of where it runs: jupiter_data's folder, the interpreter prefix, every shipped module
# imported (so nothing shipped needs a dev-only package), and the schema files readable as package data.
HELLO = '''\
"""A tiny HTTP function for the build tests."""

import importlib
import pkgutil
import sys
from importlib import resources
from pathlib import Path

import jupiter_data


def hello(request):
    found = pkgutil.walk_packages(jupiter_data.__path__, "jupiter_data.")
    modules = sorted(m.name for m in found if m.name != "jupiter_data.__main__")
    for name in modules:
        importlib.import_module(name)
    schemas = resources.files("jupiter_data") / "schemas"
    return {
        "package_dir": str(Path(jupiter_data.__file__).resolve().parent),
        "prefix": sys.prefix,
        "modules": modules,
        "schemas": sorted(p.name for p in schemas.iterdir()) if schemas.is_dir() else [],
        "greeting": f"hello {request.args.get('name', 'world')}",
    }
'''


def shipped_package_files() -> set[str]:
    """What the archive must hold of jupiter_data, computed independently of the build code."""
    files = set()
    for path in REAL_PACKAGE.rglob("*"):
        rel = path.relative_to(REAL_PACKAGE)
        if (
            path.is_file()
            and rel.parts[0] != "local"
            and not {"__pycache__", ".pyc"} & {*rel.parts, path.suffix}
        ):
            files.add(f"jupiter_data/{rel.as_posix()}")
    return files


def add_function(repo: Path, name: str, body: str) -> Path:
    folder = repo / "functions" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "main.py").write_text(body)
    write_manifest(folder, requirements=HELLO_PACKAGES)
    return folder


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REAL_PACKAGE, root / "shared" / "jupiter_data", ignore=ignore)
    shutil.copy(REPO_ROOT / "Pipfile.lock", root / "Pipfile.lock")
    (root / "Pipfile").write_text("# placeholder: the build reads Pipfile.lock only\n")
    add_function(root, "hello", HELLO)
    return root


def parse(requirements: str) -> list[re.Match[str]]:
    lines = [line for line in requirements.splitlines() if line[:1] != "#"]
    for line in lines:
        assert REQUIREMENT.fullmatch(line), f"not a pinned, hashed requirement: {line[:120]}"
    return [match for line in lines if (match := REQUIREMENT.fullmatch(line))]


def names(requirements: str) -> set[str]:
    return {canonicalize_name(match[1]) for match in parse(requirements)}


def shipped(archive: Path) -> str:
    with zipfile.ZipFile(archive) as zf:
        return zf.read("requirements.txt").decode()


@pytest.fixture(scope="module")
def real_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    return {name: build_function(REPO_ROOT, name, out) for name in FUNCTIONS}


def test_archives_pin_and_hash_packages_of_the_lock_default_only(real_archives: dict[str, Path]) -> None:
    lock = json.loads(LOCK.read_text())
    default = {canonicalize_name(name): entry for name, entry in lock["default"].items()}
    develop_only = {canonicalize_name(n) for n in set(lock["develop"]) - set(lock["default"])}
    assert {"pytest", "moto", "bqemulator", "ruff", "mypy"} <= develop_only
    assert set(real_archives) == {f.name for f in load_functions()}
    for name, archive in real_archives.items():
        parsed = parse(shipped(archive))
        plain = [canonicalize_name(match[1]) for match in parsed if not match[2]]
        assert plain == sorted(set(plain)), name
        assert set(plain) <= set(default), name
        for match in parsed:
            entry = default[canonicalize_name(match[1])]
            assert f"=={match[3]}" == entry["version"]
            assert match[4] == (f"; {entry['markers']}" if entry.get("markers") else None)
            assert match[5].split(" --hash=")[1:] == sorted(entry["hashes"])
        # functions-framework: Cloud Functions' Python runtime requires it.
        assert {"functions-framework", *declared_packages(REPO_ROOT, name)} <= set(plain)
        # google-cloud-bigquery asks for google-auth[pyopenssl] and google-api-core asks for plain
        # google-auth: pip 23.2 installs with hashes only when both are pinned.
        with_extras = {match[1] + match[2] for match in parsed if match[2]}
        assert {"google-api-core[grpc]"} <= with_extras and {"google-auth", "google-api-core"} <= set(plain)
        if "google-cloud-bigquery" in plain:
            assert "google-auth[pyopenssl]" in with_extras
        assert {canonicalize_name(extra.split("[")[0]) for extra in with_extras} <= set(plain)


def test_each_function_ships_only_what_it_needs(real_archives: dict[str, Path]) -> None:
    packages = {name: names(shipped(archive)) for name, archive in real_archives.items()}
    assert not {"pandas", "numpy", "pyarrow", "google-cloud-bigquery"} & packages["sns_to_pubsub"]
    assert not {"pandas", "numpy"} & set().union(*packages.values())  # nothing deployed imports them
    assert {"pyarrow", "google-cloud-bigquery-storage"} <= packages["fetch_from_bigquery"]  # Arrow reads
    assert "isal" in packages["sync_amplitude"]
    assert "isal" not in packages["sns_to_pubsub"]


def test_the_pipfile_runtime_section_is_exactly_what_functions_declare(
    real_archives: dict[str, Path],
) -> None:
    pipfile = tomllib.loads((REPO_ROOT / "Pipfile").read_text())
    declared = {package for name in FUNCTIONS for package in declared_packages(REPO_ROOT, name)}
    assert {canonicalize_name(p) for p in pipfile["packages"]} == declared  # no runtime package unused
    lock_default = {canonicalize_name(name) for name in json.loads(LOCK.read_text())["default"]}
    assert set().union(*(names(shipped(archive)) for archive in real_archives.values())) == lock_default
    assert "pandas" in pipfile["dev-packages"]  # analysts still get it from make install


def test_a_package_asked_for_with_extras_is_pinned_plain_and_with_them() -> None:
    core = requirements_txt(LOCK, ["google-api-core"])
    bigquery = requirements_txt(LOCK, ["google-cloud-bigquery"])  # asks for google-api-core[grpc]
    assert not {"grpcio", "grpcio-status"} & names(core)
    assert {"google-api-core", "google-auth", "grpcio", "grpcio-status"} <= names(bigquery)
    auth = {match[2]: match for match in parse(bigquery) if match[1] == "google-auth"}
    assert set(auth) == {None, "[pyopenssl]"}  # both pinned, to the same version and hashes
    assert auth[None].group(3, 4, 5) == auth["[pyopenssl]"].group(3, 4, 5)
    assert bigquery.splitlines()[1] == "# For google-cloud-bigquery and their dependencies."


def test_requirements_are_the_same_whatever_machine_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    on_linux = requirements_txt(LOCK, ["functions-framework"])
    windows = {
        **packaging.markers.default_environment(),
        "os_name": "nt",
        "platform_system": "Windows",
        "sys_platform": "win32",
        "platform_machine": "AMD64",
        "python_version": "3.13",
        "python_full_version": "3.13.1",
    }
    monkeypatch.setattr(packaging.markers, "default_environment", lambda: dict(windows))
    assert requirements_txt(LOCK, ["functions-framework"]) == on_linux
    assert "gunicorn" in names(on_linux)  # required where platform_system != "Windows"
    assert set(TARGET) >= set(windows)


def write_lock(path: Path, default: dict[str, str]) -> Path:
    hashes = ["sha256:" + "b" * 64, "sha256:" + "a" * 64]
    entries = {name: {"version": version, "hashes": hashes} for name, version in default.items()}
    path.write_text(json.dumps({"default": entries, "develop": {"pytest": {"version": "==9"}}}))
    return path


def test_lock_problems_give_clear_errors(tmp_path: Path) -> None:
    dateutil, six = (f"=={importlib.metadata.version(n)}" for n in ("python-dateutil", "six"))
    lock = write_lock(tmp_path / "Pipfile.lock", {"python-dateutil": dateutil, "six": six})
    assert requirements_txt(lock, ["Python_Dateutil"]).splitlines()[2:] == [
        f"python-dateutil{dateutil} --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}",
        f"six{six} --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}",
    ]
    write_lock(lock, {"python-dateutil": dateutil})
    with pytest.raises(
        BuildError, match=r"six \(needed by python-dateutil\) is not in Pipfile\.lock \[default\]"
    ):
        requirements_txt(lock, ["python-dateutil"])
    write_lock(lock, {"python-dateutil": dateutil, "six": "==1.4.0"})
    with pytest.raises(
        BuildError, match=r"python-dateutil .* requires six>=1\.5, but Pipfile\.lock pins six 1\.4\.0"
    ):
        requirements_txt(lock, ["python-dateutil"])
    with pytest.raises(
        BuildError, match=r"six .* is installed but Pipfile\.lock pins 1\.4\.0: run `make install`"
    ):
        requirements_txt(lock, ["six"])
    write_lock(lock, {"surely-not-installed-pkg": "==1.0"})
    with pytest.raises(BuildError, match=r"surely-not-installed-pkg .* is not installed: run `make install`"):
        requirements_txt(lock, ["surely-not-installed-pkg"])
    lock.write_text(json.dumps({"default": {"jupiter-data": {"path": "./shared", "editable": True}}}))
    with pytest.raises(BuildError, match=r"'jupiter-data' has no pinned version.*cannot be deployed"):
        requirements_txt(lock, ["jupiter-data"])
    lock.write_text("{not json")
    with pytest.raises(BuildError, match=r"not a valid Pipfile\.lock"):
        requirements_txt(lock, ["six"])


def test_archive_holds_the_function_the_core_package_and_requirements(repo: Path, tmp_path: Path) -> None:
    folder = repo / "functions" / "hello"
    (folder / "helpers").mkdir()
    (folder / "helpers" / "text.py").write_text("X = 1\n")
    for junk in ["__pycache__/main.cpython-311.pyc", "tests/test_main.py", ".env", "helpers/text.pyc"]:
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_text("junk")
    (repo / "shared" / "jupiter_data" / "__pycache__").mkdir()
    (repo / "shared" / "jupiter_data" / "__pycache__" / "settings.cpython-311.pyc").write_text("junk")
    assert (repo / "shared" / "jupiter_data" / "local" / "__init__.py").is_file()

    archive = build_function(repo, "hello", tmp_path / "dist")

    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        names = [info.filename for info in infos]
        assert set(names) == {"main.py", "helpers/text.py", "requirements.txt"} | shipped_package_files()
        assert names == sorted(names)
        assert "jupiter_data/__init__.py" in names
        schemas = {
            f"jupiter_data/schemas/{p.relative_to(REAL_PACKAGE / 'schemas')}"
            for p in (REAL_PACKAGE / "schemas").rglob("*")
            if p.is_file()
        }
        assert schemas <= set(names)
        assert not [n for n in names if n.startswith("jupiter_data/local/") or "__pycache__" in n]
        for info in infos:
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644
            assert info.compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("main.py") == HELLO.encode()
        requirements = requirements_txt(repo / "Pipfile.lock", HELLO_PACKAGES)
        assert zf.read("requirements.txt") == requirements.encode()
        assert zf.read("jupiter_data/__init__.py") == (REAL_PACKAGE / "__init__.py").read_bytes()


def test_builds_are_byte_for_byte_reproducible(repo: Path, tmp_path: Path) -> None:
    first = build_function(repo, "hello", tmp_path / "one")
    later = time.time() + 3600
    for path in repo.rglob("*"):
        os.utime(path, (later, later))
    (repo / "functions" / "hello" / "main.py").chmod(0o755)
    second = build_function(repo, "hello", tmp_path / "two")
    again = build_function(repo, "hello", tmp_path / "one")

    assert first.name == second.name == again.name
    assert first.read_bytes() == second.read_bytes()
    assert re.fullmatch(r"hello-[0-9a-f]{12}\.zip", first.name)
    assert first.name == f"hello-{hashlib.sha256(first.read_bytes()).hexdigest()[:12]}.zip"
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [first.name, "manifest.json"]


def test_one_changed_byte_renames_the_archive_and_replaces_the_old_one(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    old = build_function(repo, "hello", out)
    main_py = repo / "functions" / "hello" / "main.py"
    main_py.write_bytes(main_py.read_bytes().replace(b"hello {", b"Hello {"))
    new = build_function(repo, "hello", out)

    assert new.name != old.name
    assert sorted(p.name for p in out.iterdir()) == [new.name, "manifest.json"]
    assert json.loads((out / "manifest.json").read_text())["hello"]["archive"] == new.name


def test_build_all_writes_the_manifest_and_forgets_removed_functions(repo: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    add_function(repo, "bye", "def bye(request):\n    return 'bye'\n")
    out.mkdir()
    (out / "notes.zip").write_text("not ours")

    archives = build_all(repo, out)

    assert [p.name.split("-")[0] for p in archives] == ["bye", "hello"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {
        p.name.split("-")[0]: {"archive": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
        for p in archives
    }
    shutil.rmtree(repo / "functions" / "bye")
    [hello] = build_all(repo, out)
    assert json.loads((out / "manifest.json").read_text()) == {"hello": manifest["hello"]}
    assert sorted(p.name for p in out.iterdir()) == sorted([hello.name, "manifest.json", "notes.zip"])


def test_build_all_with_no_functions_writes_an_empty_manifest(repo: Path, tmp_path: Path) -> None:
    shutil.rmtree(repo / "functions")
    assert build_all(repo, tmp_path / "dist") == []
    assert json.loads((tmp_path / "dist" / "manifest.json").read_text()) == {}


def test_bad_inputs_give_clear_errors(repo: Path, tmp_path: Path) -> None:
    folder = repo / "functions" / "hello"
    (folder / "requirements.txt").write_text("requests\n")
    with pytest.raises(BuildError, match=r"functions/hello/requirements.txt: .* generated.*function\.json"):
        build_function(repo, "hello", tmp_path / "dist")
    (folder / "requirements.txt").unlink()
    for requirements, error in [
        (["requests", "requests>=2"], r"function\.json: requirements/1: 'requests>=2' does not match"),
        ([], r"functions/hello/function\.json: requirements: \[\] should be non-empty"),
        (["requests", "leftpad"], r"leftpad \(needed by functions/hello/function\.json\) is not in Pipfile"),
    ]:
        write_manifest(folder, requirements=requirements)
        with pytest.raises(BuildError, match=error):
            build_function(repo, "hello", tmp_path / "dist")
    (folder / "function.json").unlink()
    with pytest.raises(BuildError, match=r"functions/hello/function\.json not found"):
        build_function(repo, "hello", tmp_path / "dist")
    with pytest.raises(BuildError, match=r"unknown function 'nope'.*known: hello"):
        build_function(repo, "nope", tmp_path / "dist")


def test_main_prints_one_line_per_archive_and_exits_2_on_errors(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--repo-root", str(repo)]) == 0
    [archive] = (repo / "dist").glob("hello-*.zip")
    out = capsys.readouterr().out
    assert re.fullmatch(rf"hello +{archive.name} +\d+\.\d KiB  sha256:{archive.stem[-12:]}\n", out)

    assert main(["--repo-root", str(repo), "hello", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown function(s) nope" in err and "Traceback" not in err

    (repo / "Pipfile.lock").unlink()
    assert main(["--repo-root", str(repo)]) == 2
    assert "Pipfile.lock not found" in capsys.readouterr().err


# --- the real ones: deploy archives into fresh virtualenvs, as Cloud Functions' buildpack does ----------

NETWORK_ERRORS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
)
# pip 23.2 comes with a new Python 3.11 virtualenv (and once refused google-auth[pyopenssl] with hashes);
# the current pip is the one the project's own virtualenv runs.
PIPS = {"pip-23.2": "23.2", "pip-current": importlib.metadata.version("pip")}
# Generous bounds, never expected to be reached: only a hung step should hit them, on a busy machine too.
VENV_TIMEOUT = 300
INSTALL_TIMEOUT = 900
START_TIMEOUT = 300
REQUEST_TIMEOUT = 300


def extract(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    return folder


def pip(python: str, args: list[str], cwd: Path, env: dict[str, str]) -> None:
    """``python -m pip ARGS``; skips the test only when no package index can be reached."""
    done = subprocess.run(
        [python, "-m", "pip", *args, "--no-input"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    if done.returncode != 0:
        output = done.stdout + done.stderr
        network = [line.strip() for line in output.splitlines() if any(e in line for e in NETWORK_ERRORS)]
        if network and "No matching distribution" in output:  # nothing found, and the index was unreachable
            pytest.skip(f"pip cannot reach a package index: {network[-1][:300]}")
        pytest.fail(f"pip {' '.join(args)} failed:\n{output[-6000:]}")


@contextlib.contextmanager
def fresh_virtualenv(folder: Path, pip_version: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A new virtualenv running pip ``pip_version``, removed afterwards (each is hundreds of MB)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = f"{folder / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    base_python = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base_python, "-m", "venv", str(folder)], check=True, env=env, timeout=VENV_TIMEOUT)
        python = str(folder / "bin" / "python")
        for dev_only in ["pytest", "jupiter_data", "functions_framework"]:
            probe = subprocess.run(
                [python, "-c", f"import {dev_only}"],
                cwd=folder,
                env=env,
                capture_output=True,
                timeout=VENV_TIMEOUT,
            )
            assert probe.returncode != 0, f"the new virtualenv is not fresh: it can import {dev_only}"
        pip(python, ["install", f"pip=={pip_version}"], folder, env)
        version = subprocess.run(
            [python, "-m", "pip", "--version"], env=env, capture_output=True, text=True, timeout=VENV_TIMEOUT
        )
        assert version.stdout.startswith(f"pip {pip_version} "), version.stdout
        yield python, env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# Settings each function reads at import (cold start), and emulator hosts, so that building a use case
# creates its clients without credentials; nothing is contacted.
IMPORT_ENV = {
    "GOOGLE_CLOUD_PROJECT": "jupiter-build-test",
    "JUPITER_ENV": "local",
    "THREADS": "4",
    "SNS_ALLOWED_TOPIC_ARNS": "arn:aws:sns:us-east-1:123456789012:jupiter-events",
    "AMPLITUDE_API_KEY": "key",
    "AMPLITUDE_SECRET_KEY": "secret",
    "FETCH_API_KEYS": "ci:" + "0" * 64,
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    "STORAGE_EMULATOR_HOST": "127.0.0.1:9",
    "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9",
}
# What a function imports on its first request: its use case, built with its clients.
REQUEST_TIME_IMPORTS = {
    "sns_to_pubsub": "main.bridge()",
    "pubsub_to_bigquery": "main.loader()",
    # Large results stream through the Storage Read API, created on the first such query.
    "fetch_from_bigquery": "main.data_api()\nimport google.cloud.bigquery_storage_v1, pyarrow",
    "sync_amplitude": "from jupiter_data.services.amplitude_sync import bootstrap\nbootstrap()",
}
# Imports the function, then names every installed distribution whose files it loaded.
IMPORT_PROBE = """\
import importlib.metadata, json, sys
from pathlib import Path
import main
{request_time}
files = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
loaded = {{str(Path(file).resolve()) for file in files if file}}
used = [
    d.metadata["Name"]
    for d in importlib.metadata.distributions()
    if any(str(Path(f.locate()).resolve()) in loaded for f in d.files or ())
]
print("USED " + json.dumps(sorted(used)))
"""


@pytest.mark.timeout(2 * VENV_TIMEOUT + 2 * INSTALL_TIMEOUT + 2 * REQUEST_TIMEOUT)
@pytest.mark.parametrize("pip_version", list(PIPS.values()), ids=list(PIPS))
@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_function_imports_in_a_clean_virtualenv_from_its_own_requirements(
    name: str, pip_version: str, tmp_path: Path
) -> None:
    archive = build_function(REPO_ROOT, name, tmp_path / "dist")
    app = extract(archive, tmp_path / "app")
    with fresh_virtualenv(tmp_path / "venv", pip_version) as (python, env):
        pip(python, ["install", "--require-hashes", "--no-compile", "-r", "requirements.txt"], app, env)
        check = subprocess.run(
            [python, "-m", "pip", "check"], env=env, capture_output=True, text=True, timeout=VENV_TIMEOUT
        )
        assert check.returncode == 0, check.stdout[-4000:]
        installed = subprocess.run(
            [python, "-m", "pip", "list", "--format=json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=VENV_TIMEOUT,
        )
        probe = subprocess.run(
            [python, "-c", IMPORT_PROBE.format(request_time=REQUEST_TIME_IMPORTS.get(name, ""))],
            cwd=app,
            env={**env, **IMPORT_ENV},
            capture_output=True,
            text=True,
            timeout=REQUEST_TIMEOUT,
        )
    assert probe.returncode == 0, f"import main failed in a clean virtualenv:\n{probe.stderr[-6000:]}"
    [used_line] = [line for line in probe.stdout.splitlines() if line.startswith("USED ")]
    used = {canonicalize_name(n) for n in json.loads(used_line.removeprefix("USED "))}
    assert set(declared_packages(REPO_ROOT, name)) <= used  # every declared package is imported
    present = {canonicalize_name(p["name"]) for p in json.loads(installed.stdout)}
    assert present - {"pip", "setuptools"} == names(shipped(archive)) - {"setuptools"}  # nothing else came


def wait_until_listening(process: subprocess.Popen[bytes], log: Path) -> int:
    """The port gunicorn bound (it was asked for port 0, so no other process can hold it)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if match := re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace")):
            return int(match[1])
        if process.poll() is not None:
            pytest.fail(f"functions-framework exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"functions-framework did not listen within {START_TIMEOUT}s:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(VENV_TIMEOUT + 2 * INSTALL_TIMEOUT + START_TIMEOUT + 2 * REQUEST_TIMEOUT)
def test_archive_installs_in_a_fresh_virtualenv_and_serves_http(repo: Path, tmp_path: Path) -> None:
    app = extract(build_function(repo, "hello", tmp_path / "dist"), tmp_path / "app")
    with fresh_virtualenv(tmp_path / "venv", PIPS["pip-current"]) as (python, env):
        pip(python, ["install", "--require-hashes", "-r", "requirements.txt"], app, env)
        log = tmp_path / "functions-framework.log"
        command = [
            str(Path(python).parent / "functions-framework"),
            "--target",
            "hello",
            "--source",
            "main.py",
        ]
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", "0"],
                cwd=app,
                env={**env, "GUNICORN_LOG_LEVEL": "info"},  # info logs the port it bound
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # gunicorn forks workers: stop the whole group
            )
        try:
            port = wait_until_listening(process, log)
            # Listening already: the request waits for the worker, which then imports every module.
            response = requests.get(f"http://127.0.0.1:{port}/?name=archive", timeout=(30, REQUEST_TIMEOUT))
            assert response.status_code == 200, f"{response.text[:2000]}\n{log.read_text()[-4000:]}"
            body = response.json()
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        venv = Path(python).parent.parent

        assert body["greeting"] == "hello archive"
        assert body["package_dir"] == str((app / "jupiter_data").resolve())  # imported from the archive
        assert Path(body["prefix"]).resolve() == venv.resolve()  # running on the fresh virtualenv
    assert "jupiter_data.local" not in body["modules"]
    expected = {n.removesuffix(".py").replace("/", ".") for n in shipped_package_files() if n.endswith(".py")}
    expected = {n.removesuffix(".__init__") for n in expected} - {"jupiter_data", "jupiter_data.__main__"}
    assert set(body["modules"]) == expected  # and every one imported with only the deployed requirements
    assert body["schemas"] == sorted(p.name for p in (REAL_PACKAGE / "schemas").iterdir())
