"""What each install holds: `make run` and the image the runtime lock, `make test` the dev
lock (the same pins plus the dev extra), and nothing that serves needs a dev package."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from tests.deploy.deploy_support import ROOT
from tests.server import free_port

LOCKS = ("requirements.lock", "requirements-dev.lock", "requirements-bench.lock")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / lock).read_text(), re.MULTILINE)
    return {canonical(name): version for name, version in found}


def declared(extra: str | None) -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"][extra] if extra else project["dependencies"]
    found = (re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", r) for r in requirements)
    return {canonical(m[1]): m[2] for m in found if m}


def test_the_runtime_lock_has_no_dev_tool_and_the_others_keep_its_pins() -> None:
    runtime, dev, bench = (pins(lock) for lock in LOCKS)
    for name, version in declared(None).items():
        assert runtime.get(name) == version, name
    for name, version in declared("dev").items():
        assert dev.get(name) == version, name
        assert name not in runtime, f"{name} (dev extra) is in requirements.lock"
    for name in declared("bench"):
        assert name in bench, name
    assert runtime.items() <= dev.items(), "the tests must run the versions the image runs"
    assert dev.items() <= bench.items(), "the bench must run the versions the tests run"


def make_dry_run(workdir: Path, target: str) -> str:
    result = subprocess.run(
        ["make", "-n", target], cwd=workdir, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def synced_locks(commands: str) -> list[str]:
    return re.findall(r"uv pip sync .*?(requirements[\w-]*\.lock)", commands)


def test_make_run_installs_the_runtime_lock_and_make_test_the_dev_lock(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml", *LOCKS):
        shutil.copy(ROOT / name, tmp_path / name)
    assert synced_locks(make_dry_run(tmp_path, "run")) == ["requirements.lock"]
    assert synced_locks(make_dry_run(tmp_path, "test")) == ["requirements-dev.lock"]
    # A runtime-only venv, as `make run` leaves it: `make test` must install the dev lock.
    stamp = tmp_path / ".venv" / ".installed-runtime"
    stamp.parent.mkdir()
    stamp.touch()
    later = time.time() + 60
    os.utime(stamp, (later, later))
    assert synced_locks(make_dry_run(tmp_path, "run")) == []
    assert synced_locks(make_dry_run(tmp_path, "test")) == ["requirements-dev.lock"]


def test_the_image_installs_the_runtime_lock_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert set(re.findall(r"requirements[\w-]*\.lock", dockerfile)) == {"requirements.lock"}
    assert re.search(r"uv pip sync [^\n]*requirements\.lock", dockerfile)


def dev_only_modules() -> set[str]:
    """Top-level modules that only distributions of the dev lock provide (this venv has
    them: it is a dev install)."""
    extra = set(pins("requirements-dev.lock")) - set(pins("requirements.lock"))
    runtime = set(pins("requirements.lock"))
    modules = set()
    for module, dists in packages_distributions().items():
        names = {canonical(d) for d in dists}
        if names & extra and not names & runtime:
            modules.add(module)
    return modules


BLOCKED_SERVE = """
import sys
from importlib.abc import MetaPathFinder

class DevOnly(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} comes from the dev extra")
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, DevOnly())
sys.argv = ["banking-es", "serve"]
from banking_es.cli import main
main()
"""


def test_serving_imports_nothing_from_the_dev_extra(tmp_path: Path) -> None:
    blocked = dev_only_modules()
    assert {"pytest", "hypothesis", "mypy", "kubernetes_validate", "pypdf"} <= blocked
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'banking.db'}",
        "DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "WORKERS": "1",
    }
    with (tmp_path / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", BLOCKED_SERVE, ",".join(sorted(blocked))],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail(
                "serve did not answer /health/live:\n" + (tmp_path / "serve.log").read_text()
            )
    finally:
        process.terminate()
        process.wait(timeout=30)


def imported_modules(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.partition(".")[0])
    local = {path.stem for path in [*ROOT.iterdir(), *folder.rglob("*.py")]}
    local |= {"banking_es", "__future__"}
    return found - set(sys.stdlib_module_names) - local


def test_the_dev_lock_provides_every_module_the_tests_import() -> None:
    dev = set(pins("requirements-dev.lock"))
    provided = packages_distributions()
    for module in sorted(imported_modules(ROOT / "tests")):
        dists = {canonical(d) for d in provided.get(module, [])}
        assert dists & dev, f"tests import {module}, which requirements-dev.lock does not install"
