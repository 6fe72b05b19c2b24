"""The wheel holds the product: locksmithd's modules and its two commands, never the harness, tests or tools."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Build output and environments of the checkout: a stale build/lib would leak into the wheel.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache")
NEVER_SHIPPED = ("harness/", "tests/", "bench/", "contrib/")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Build the wheel offline from a clean copy of the checkout; its files by name."""
    source = tmp_path_factory.mktemp("source") / "locksmithd"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--no-index", str(source), "-w", str(out)],
                           capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = out.glob("locksmithd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_wheel_holds_every_module_of_the_package(wheel_files: dict[str, bytes]) -> None:
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "locksmithd").rglob("*.py")}
    shipped = {name for name in wheel_files if name.endswith(".py")}
    assert source - shipped == set()
    assert {"locksmithd/daemon/main.py", "locksmithd/ctl/main.py", "locksmithd/core/semaphore.py"} <= shipped


def test_wheel_holds_nothing_but_the_package_and_its_metadata(wheel_files: dict[str, bytes]) -> None:
    """No harness, tests, benchmarks or demo: every file is under locksmithd/ or the dist-info."""
    leaked = [name for name in wheel_files if name.startswith(NEVER_SHIPPED)]
    assert leaked == []
    strays = [name for name in wheel_files
              if not name.startswith("locksmithd/") and not name.split("/", 1)[0].endswith(".dist-info")]
    assert strays == []


def test_wheel_declares_both_console_commands(wheel_files: dict[str, bytes]) -> None:
    (name,) = [n for n in wheel_files if n.endswith(".dist-info/entry_points.txt")]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel_files[name].decode())
    assert dict(entry_points["console_scripts"]) == {
        "locksmithd": "locksmithd.daemon.main:main",
        "locksmithctl": "locksmithd.ctl.main:main",
        "locksmithd-fleetlock": "locksmithd.fleetlock.main:main",
    }
