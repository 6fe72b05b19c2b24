"""``make e2e``: prepare the bookworm root filesystem (cached), run tests/e2e on real systemd hosts, print figures.

Usage: python -m harness.e2e [PYTEST_ARGS...]. Exits with pytest's status.
Figures the scenarios measure are appended to ``build/e2e/figures.txt`` during
the run and printed at the end with the wall time (cold: the root filesystem
was built; warm: it was reused).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from harness.real_fleet import FIGURES_FILE, REPO
from harness.rootfs import RootfsError, prepare_layers

BUILD_DIR = REPO / "build/e2e"
RUN_DIR = Path("/tmp/locksmithd-e2e")  # pytest's basetemp: hosts' roots and journals of the last run
WORKERS = "2"


def main() -> int:
    started = time.monotonic()
    cold = not any(BUILD_DIR.glob("base-*/etc/os-release"))
    try:
        prepare_layers(REPO, BUILD_DIR)
    except RootfsError as error:
        print(f"e2e: {error}", file=sys.stderr)
        return 1
    prepared_s = time.monotonic() - started
    (BUILD_DIR / FIGURES_FILE).write_text("")
    env = {**os.environ, "LOCKSMITHD_E2E": "1"}
    argv = [sys.executable, "-m", "pytest", "-n", WORKERS, "-p", "no:cacheprovider", f"--basetemp={RUN_DIR}",
            "tests/e2e", *sys.argv[1:]]
    code = subprocess.call(argv, cwd=REPO, env=env)
    wall_s = time.monotonic() - started
    figures = (BUILD_DIR / FIGURES_FILE).read_text()
    print("\ne2e figures (this run):")
    print(figures.rstrip() or "  (none recorded)")
    print(f"  wall time {wall_s:.0f}s ({'cold' if cold else 'warm'}: root filesystem ready in {prepared_s:.0f}s)")
    print(f"  hosts' roots and journals of this run: {RUN_DIR}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
