"""Build one deployable, byte-for-byte reproducible zip archive per Cloud Function.

Usage: ``python -m jupiter_data build [NAME ...] [--repo-root DIR] [--out DIR]`` (or ``make build``).

Each function ``functions/<name>/main.py`` (entry point ``<name>``) becomes ``<out>/<name>-<sha12>.zip``,
where ``sha12`` is the first 12 hex digits of the archive's SHA-256, holding:

- everything in ``functions/<name>/`` except ``function.json`` (read by the build, Terraform and the
  local stack; the code never needs it), ``__pycache__``, ``*.pyc``, ``tests/`` and dotfiles;
- ``jupiter_data/`` copied from ``shared/jupiter_data/`` without the dev-only ``local/`` subpackage
  (data files such as ``schemas/*.json`` included);
- ``requirements.txt``: only what the function needs. ``requirements`` in ``functions/<name>/function.json``
  names the packages of the Pipfile's ``[packages]`` that the function imports (names only); the
  build adds their dependencies, read from the installed packages' metadata with markers evaluated for
  the Cloud Functions runtime (CPython 3.11 on Linux x86_64), and pins every one from the ``default``
  section of ``Pipfile.lock`` (never ``develop``): ``name==version; markers --hash=sha256:...``, so
  the deployed install is pinned and hash-checked. A package some dependency asks for with extras
  (``google-cloud-bigquery`` wants ``google-auth[pyopenssl]``) gets its plain line and one line per
  extras set asked, all at the same pin and hashes, and the extras' own dependencies get their lines:
  in ``--require-hashes`` mode pip 23.2 (what a new Python 3.11 virtualenv brings) refuses a plain or
  an extras requirement left unpinned, while it and the current pip accept this form.

Archives are reproducible: entries sorted by path, dated 1980-01-01 00:00:00, mode 0644, deflated at
level 9, no directory entries. Older archives of a rebuilt function are removed, and
``<out>/manifest.json`` maps every built function to its archive, for Terraform and CI::

    {"hello": {"archive": "hello-0123456789ab.zip", "sha256": "<64 hex digits>"}}
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from jupiter_data.resources import MANIFEST, ManifestError, read_manifest

EPOCH = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644  # regular file, rw-r--r--
LEVEL = 9
SKIP_NAMES = {"__pycache__", "tests"}
# Markers in dependency metadata are evaluated for the deployed runtime (Terraform's python311), not for
# the machine that builds, so every build host writes the same requirements.txt.
TARGET = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.0",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": "3.11.0",
    "python_version": "3.11",
    "sys_platform": "linux",
}
Extras = tuple[str, ...]  # sorted, normalized; () for the package alone


class BuildError(Exception):
    """A problem the developer must fix; reported without a traceback."""


def function_names(repo_root: Path) -> list[str]:
    return sorted(p.parent.name for p in (repo_root / "functions").glob("*/main.py"))


@dataclass(frozen=True)
class Pin:
    """One package of ``Pipfile.lock [default]``."""

    name: str  # as the lock spells it
    version: str  # without "=="
    hashes: tuple[str, ...]
    markers: str | None

    def line(self, extras: Extras = ()) -> str:
        requirement = f"{self.name}[{','.join(extras)}]" if extras else self.name
        markers = f"; {self.markers}" if self.markers else ""
        return f"{requirement}=={self.version}{markers} " + " ".join(f"--hash={h}" for h in self.hashes)


def locked_packages(lock_path: Path) -> dict[str, Pin]:
    """The ``default`` (deployed) section of ``Pipfile.lock``, keyed by normalized package name."""
    pins: dict[str, Pin] = {}
    try:
        for name, entry in json.loads(lock_path.read_text())["default"].items():
            version, hashes = entry.get("version", ""), entry.get("hashes", [])
            if not version.startswith("==") or not hashes:
                raise BuildError(
                    f"Pipfile.lock [default] entry {name!r} has no pinned version or hashes (path, editable "
                    "or VCS dependency?): it cannot be deployed; move it to [dev-packages] or publish it"
                )
            pins[canonicalize_name(name)] = Pin(
                name, version[2:], tuple(sorted(hashes)), entry.get("markers")
            )
    except FileNotFoundError:
        raise BuildError(f"{lock_path} not found: run `pipenv lock` first") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BuildError(f"{lock_path} is not a valid Pipfile.lock ({exc!r}): run `pipenv lock`") from None
    return pins


def declared_packages(repo_root: Path, name: str) -> list[str]:
    """The runtime packages ``functions/<name>/function.json`` declares in ``requirements``."""
    try:
        manifest = read_manifest(repo_root / "functions" / name)
    except ManifestError as exc:
        raise BuildError(f"{exc} (requirements: the Pipfile [packages] the function imports)") from None
    return sorted({canonicalize_name(package) for package in manifest.requirements})


def _dependencies(pin: Pin, extras: set[str]) -> list[Requirement]:
    """What ``pin`` (with ``extras``) requires on the target runtime, read from its installed metadata."""
    try:
        installed = metadata.distribution(pin.name)
    except metadata.PackageNotFoundError:
        raise BuildError(
            f"{pin.name} (Pipfile.lock [default]) is not installed: run `make install`"
        ) from None
    if Version(installed.version) != Version(pin.version):
        raise BuildError(
            f"{pin.name} {installed.version} is installed but Pipfile.lock pins {pin.version}: "
            "run `make install`"
        )
    needed = []
    for line in installed.requires or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise BuildError(f"{pin.name} declares an unreadable dependency: {exc}") from None
        marker = requirement.marker
        if marker is None or any(marker.evaluate({**TARGET, "extra": e}) for e in {"", *extras}):
            needed.append(requirement)
    return needed


def runtime_closure(locked: dict[str, Pin], roots: Iterable[str], origin: str) -> dict[str, set[Extras]]:
    """``roots`` and all they need on the target runtime, each with the extras sets asked of it."""
    asked: dict[str, set[Extras]] = {}
    extras_of: dict[str, set[str]] = {}  # the union, to read dependencies with
    todo: list[tuple[str, Extras, str]] = [(canonicalize_name(r), (), origin) for r in roots]
    while todo:
        name, extras, wanted_by = todo.pop()
        if name not in locked:
            raise BuildError(
                f"{name} (needed by {wanted_by}) is not in Pipfile.lock [default]: add it to [packages] "
                "in the Pipfile and run `pipenv lock`"
            )
        asked.setdefault(name, {()}).add(extras)
        if name in extras_of and extras_of[name].issuperset(extras):
            continue
        extras_of[name] = extras_of.get(name, set()).union(extras)
        for requirement in _dependencies(locked[name], extras_of[name]):
            dependency = canonicalize_name(requirement.name)
            pinned = locked.get(dependency)
            if pinned and not requirement.specifier.contains(Version(pinned.version), prereleases=True):
                raise BuildError(
                    f"{locked[name].name} {locked[name].version} requires {requirement}, but Pipfile.lock "
                    f"pins {pinned.name} {pinned.version}: run `pipenv lock`"
                )
            wanted = tuple(sorted({canonicalize_name(e) for e in requirement.extras}))
            todo.append((dependency, wanted, locked[name].name))
    return {name: asked[name] for name in sorted(asked)}


def requirements_txt(lock_path: Path, packages: Iterable[str], origin: str = MANIFEST) -> str:
    """Pinned, hash-checked requirements for ``packages`` and their dependencies, from ``Pipfile.lock``."""
    locked = locked_packages(lock_path)
    roots = sorted({canonicalize_name(p) for p in packages})
    lines = [
        "# Generated by jupiter_data.build from Pipfile.lock [default]; do not edit.",
        f"# For {', '.join(roots)} and their dependencies.",
    ]
    for name, asked in runtime_closure(locked, roots, origin).items():
        lines += [locked[name].line(extras) for extras in sorted(asked)]
    return "\n".join(lines) + "\n"


def _tree(root: Path, prefix: str) -> dict[str, Path]:
    """Archive path -> file for every shippable file under ``root``."""
    files = {}
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if not path.is_file() or path.suffix == ".pyc" or SKIP_NAMES.intersection(parts):
            continue
        if not any(part.startswith(".") or part.endswith(".egg-info") for part in parts):
            files[prefix + "/".join(parts)] = path
    return files


def archive_bytes(repo_root: Path, name: str) -> bytes:
    """The zip for one function, built in memory; identical inputs give identical bytes."""
    folder = repo_root / "functions" / name
    if not (folder / "main.py").is_file():
        known = ", ".join(function_names(repo_root)) or "none"
        raise BuildError(f"unknown function {name!r}: no functions/{name}/main.py (known: {known})")
    if (folder / "requirements.txt").exists():
        raise BuildError(
            f"functions/{name}/requirements.txt: requirements.txt is generated; name the packages the "
            f"function imports in functions/{name}/{MANIFEST} (versions come from Pipfile.lock)"
        )
    if (folder / "jupiter_data").exists():
        raise BuildError(f"functions/{name}/jupiter_data: remove it, the build adds shared/jupiter_data")
    packages = declared_packages(repo_root, name)
    files = _tree(folder, "")
    files.pop(MANIFEST, None)  # an input of the build, not of the function
    shared = _tree(repo_root / "shared" / "jupiter_data", "jupiter_data/")
    files.update({arc: path for arc, path in shared.items() if not arc.startswith("jupiter_data/local/")})
    contents = {arc: path.read_bytes() for arc, path in files.items()}
    origin = f"functions/{name}/{MANIFEST}"
    contents["requirements.txt"] = requirements_txt(repo_root / "Pipfile.lock", packages, origin).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname in sorted(contents):
            info = zipfile.ZipInfo(arcname, date_time=EPOCH)
            info.create_system = 3  # Unix, so external_attr means the same on every build host
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, contents[arcname], compresslevel=LEVEL)
    return buffer.getvalue()


def _read_manifest(out_dir: Path) -> dict[str, dict[str, str]]:
    try:
        manifest: dict[str, dict[str, str]] = json.loads((out_dir / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return manifest


def _write_manifest(out_dir: Path, manifest: dict[str, dict[str, str]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _remove_archives(out_dir: Path, name: str, keep: str = "") -> None:
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{12}}\.zip")
    for old in out_dir.glob(f"{name}-*.zip"):
        if old.name != keep and pattern.fullmatch(old.name):
            old.unlink()


def build_function(repo_root: Path, name: str, out_dir: Path) -> Path:
    """Write ``out_dir/<name>-<sha12>.zip``, drop older archives of ``name``, update the manifest."""
    data = archive_bytes(repo_root, name)
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{digest[:12]}.zip"
    target.write_bytes(data)
    _remove_archives(out_dir, name, keep=target.name)
    manifest = _read_manifest(out_dir)
    manifest[name] = {"archive": target.name, "sha256": digest}
    _write_manifest(out_dir, manifest)
    return target


def build_all(repo_root: Path, out_dir: Path) -> list[Path]:
    """Build every ``functions/*/main.py``; forget archives of functions that no longer exist."""
    names = function_names(repo_root)
    locked_packages(repo_root / "Pipfile.lock")  # a broken lock fails the build even with no functions
    archives = [build_function(repo_root, name, out_dir) for name in names]
    manifest = _read_manifest(out_dir)
    for gone in sorted(set(manifest) - set(names)):
        _remove_archives(out_dir, gone)
        del manifest[gone]
    _write_manifest(out_dir, manifest)
    return archives


def find_repo_root(start: Path = Path(__file__)) -> Path:
    for folder in start.resolve().parents:
        if (folder / "Pipfile").is_file():
            return folder
    raise BuildError(f"no folder with a Pipfile above {start}: pass --repo-root")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupiter_data build", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="functions to build (default: all)")
    parser.add_argument("--repo-root", type=Path, help="default: the folder holding the Pipfile")
    parser.add_argument("--out", type=Path, help="default: <repo-root>/dist")
    args = parser.parse_args(argv)
    try:
        root: Path = args.repo_root or find_repo_root()
        out: Path = args.out or root / "dist"
        known = function_names(root)
        if unknown := sorted(set(args.names) - set(known)):
            raise BuildError(f"unknown function(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
        names = list(dict.fromkeys(args.names))
        archives = [build_function(root, n, out) for n in names] if names else build_all(root, out)
    except BuildError as exc:
        print(f"build: error: {exc}", file=sys.stderr)
        return 2
    for path in archives:
        name, sha12 = path.stem.rsplit("-", 1)
        print(f"{name:<24} {path.name:<40} {path.stat().st_size / 1024:9.1f} KiB  sha256:{sha12}")
    if not archives:
        print(f"no functions under {root / 'functions'}; wrote {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
