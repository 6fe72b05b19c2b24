"""contrib/reboot-check: the RHEL and rpm-ostree check commands, against stand-in tools on PATH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "reboot-check"


def fake_tool(bin_dir: Path, name: str, output: str, code: int) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\ncat <<'END'\n{output}\nEND\nexit {code}\n")
    (bin_dir / name).chmod(0o755)


def run_check(script: str, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run([str(CONTRIB / script)], capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize(("output", "code", "expected"), [
    ("Core libraries or services have been updated since boot-up:\n  * kernel\n\n"
     "Reboot is required to fully utilize these updates.", 1, 1),
    ("No core libraries or services have been updated since boot-up.\nReboot should not be necessary.", 0, 0),
    ("Error: Failed to download metadata for repo 'baseos'", 1, 2),  # needs-restarting's error is exit 1 too
    ("Traceback (most recent call last): ...", 3, 2),
])
def test_rhel_needs_restarting(tmp_path: Path, output: str, code: int, expected: int) -> None:
    fake_tool(tmp_path / "bin", "needs-restarting", output, code)
    result = run_check("rhel-needs-restarting", tmp_path / "bin")
    assert result.returncode == expected, result.stderr


def deployments(*items: dict[str, object]) -> str:
    return json.dumps({"deployments": list(items), "transaction": None})


@pytest.mark.parametrize(("output", "code", "expected"), [
    (deployments({"booted": False, "staged": True, "version": "40.20240601"}, {"booted": True}), 0, 1),
    (deployments({"booted": False, "checksum": "abc"}, {"booted": True}), 0, 1),  # pending, not staged
    (deployments({"booted": True, "version": "40.20240601"}, {"booted": False}), 0, 0),  # rollback only
    ("error: Timeout was reached", 1, 2),
    ("not json", 0, 2),
    (deployments(), 0, 2),
])
def test_rpm_ostree_staged(tmp_path: Path, output: str, code: int, expected: int) -> None:
    fake_tool(tmp_path / "bin", "rpm-ostree", output, code)
    result = run_check("rpm-ostree-staged", tmp_path / "bin")
    assert result.returncode == expected, result.stdout + result.stderr
