"""``make build``: one reproducible archive per function (jupiter_data.build).

Every test builds functions it creates in a throwaway repository layout (a copy of the real
``shared/jupiter_data`` and ``Pipfile.lock``). The last test deploys an archive the way Cloud Functions
does: extract it, make a fresh virtualenv, ``pip install -r requirements.txt`` (hash-checked), start
functions-framework on it and call it over HTTP. That one downloads the runtime dependencies (pip's
cache helps), so it takes a while; it skips only when pip cannot reach any package index.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from jupiter_data.build import BuildError, build_all, build_function, main, requirements_txt

REPO_ROOT = Path(__file__).resolve().parents[2]
REAL_PACKAGE = REPO_ROOT / "shared" / "jupiter_data"

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


def test_requirements_pin_and_hash_the_default_packages_only() -> None:
    lock = json.loads((REPO_ROOT / "Pipfile.lock").read_text())
    lines = [line for line in requirements_txt(REPO_ROOT / "Pipfile.lock").splitlines() if line[:1] != "#"]
    pattern = re.compile(r"([\w.-]+)(\[[\w,.-]+\])?==([^\s;]+)(; .+?)?((?: --hash=sha256:[0-9a-f]{64})+)")
    parsed = {}
    for line in lines:
        match = pattern.fullmatch(line)
        assert match, f"not a pinned, hashed requirement: {line[:120]}"
        parsed[match[1]] = match
    assert list(parsed) == sorted(lock["default"])
    develop_only = set(lock["develop"]) - set(lock["default"])
    assert {"pytest", "moto", "bqemulator", "ruff", "mypy"} <= develop_only
    assert not develop_only & set(parsed)
    for name, entry in lock["default"].items():
        assert parsed[name][2] == (f"[{','.join(sorted(entry['extras']))}]" if entry.get("extras") else None)
        assert f"=={parsed[name][3]}" == entry["version"]
        assert parsed[name][4] == (f"; {entry['markers']}" if entry.get("markers") else None)
        assert parsed[name][5].split(" --hash=")[1:] == sorted(entry["hashes"])
    assert "google-cloud-pubsub" in parsed
    assert "functions-framework" in parsed  # Cloud Functions' Python runtime requires it


def test_requirements_keep_extras_and_reject_undeployable_entries(tmp_path: Path) -> None:
    lock = tmp_path / "Pipfile.lock"
    entry = {"version": "==1.0", "hashes": ["sha256:" + "b" * 64, "sha256:" + "a" * 64], "extras": ["x"]}
    lock.write_text(json.dumps({"default": {"pkg": entry}, "develop": {"pytest": {"version": "==9"}}}))
    assert requirements_txt(lock).splitlines()[1:] == [
        f"pkg[x]==1.0 --hash=sha256:{'a' * 64} --hash=sha256:{'b' * 64}"
    ]
    lock.write_text(json.dumps({"default": {"jupiter-data": {"path": "./shared", "editable": True}}}))
    with pytest.raises(BuildError, match=r"'jupiter-data' has no pinned version.*cannot be deployed"):
        requirements_txt(lock)
    lock.write_text("{not json")
    with pytest.raises(BuildError, match=r"not a valid Pipfile\.lock"):
        requirements_txt(lock)


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
        assert zf.read("requirements.txt") == requirements_txt(repo / "Pipfile.lock").encode()
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
    (repo / "functions" / "hello" / "requirements.txt").write_text("requests\n")
    with pytest.raises(BuildError, match=r"functions/hello/requirements.txt.*Pipfile"):
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


# --- the real one: deploy an archive into a fresh virtualenv and call it over HTTP -----------------------

NETWORK_ERRORS = (
    "NewConnectionError",
    "ConnectTimeoutError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "ProxyError",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0
) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"functions-framework exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            time.sleep(0.2)
    pytest.fail(f"functions-framework did not answer within {timeout}s:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(900)
def test_archive_installs_in_a_fresh_virtualenv_and_serves_http(repo: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    archive = build_function(repo, "hello", tmp_path / "dist")
    app = tmp_path / "app"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(app)
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    python = str(venv / "bin" / "python")
    for dev_only in ["pytest", "jupiter_data", "functions_framework"]:
        probe = subprocess.run(
            [python, "-c", f"import {dev_only}"], cwd=tmp_path, env=env, capture_output=True
        )
        assert probe.returncode != 0, f"the new virtualenv is not fresh: it can import {dev_only}"

    pip = subprocess.run(
        [python, "-m", "pip", "install", "--require-hashes", "--no-input", "-r", "requirements.txt"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=720,
    )
    if pip.returncode != 0:
        output = pip.stdout + pip.stderr
        network = [line.strip() for line in output.splitlines() if any(e in line for e in NETWORK_ERRORS)]
        if network and "No matching distribution" in output:  # nothing found, and the index was unreachable
            pytest.skip(f"pip cannot reach a package index: {network[-1][:300]}")
        pytest.fail(f"pip install -r requirements.txt failed:\n{output[-6000:]}")
    installed = time.monotonic()

    port = free_port()
    log = tmp_path / "functions-framework.log"
    command = [str(venv / "bin" / "functions-framework"), "--target", "hello", "--source", "main.py"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=app,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # gunicorn forks workers: stop the whole group
        )
    try:
        response = wait_for_http(f"http://127.0.0.1:{port}/?name=archive", process, log)
        assert response.status_code == 200, f"{response.text}\n{log.read_text()[-4000:]}"
        body = response.json()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    assert body["greeting"] == "hello archive"
    assert body["package_dir"] == str((app / "jupiter_data").resolve())  # imported from the archive
    assert Path(body["prefix"]).resolve() == venv.resolve()  # running on the fresh virtualenv
    assert "jupiter_data.local" not in body["modules"]
    expected = {n.removesuffix(".py").replace("/", ".") for n in shipped_package_files() if n.endswith(".py")}
    expected = {n.removesuffix(".__init__") for n in expected} - {"jupiter_data", "jupiter_data.__main__"}
    assert set(body["modules"]) == expected  # and every one imported with only the deployed requirements
    assert body["schemas"] == sorted(p.name for p in (REAL_PACKAGE / "schemas").iterdir())
    served = time.monotonic()
    print(
        f"\nbuild, venv and pip install {installed - started:.1f}s; serve and call {served - installed:.1f}s"
    )
