"""contrib/demo.py end to end: a small real fleet rolls through and the summary says so."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "contrib" / "demo.py"
SUMMARY_ROW = re.compile(r"^(host-\d+)\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)$", re.MULTILINE)


def run_demo(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEMO), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(f"{cmdline.parent.name}: {args}")
    return found


@pytest.mark.timeout(150)
def test_three_hosts_max_two_each_reboot_once_within_max() -> None:
    """Every host reboots exactly once, never more than max hold slots, and nothing is left running."""
    done = run_demo("--hosts", "3", "--max", "2", "--reboot-delay", "0.5", "--no-live", "--timeout", "90",
                    "--keep-dir")
    kept = re.search(r"work dir kept \(host logs, etcd data\): (\S+)", done.stderr)
    assert kept, done.stderr
    workdir = kept[1]
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        summary = done.stdout.split("\nSummary\n", 1)[1]
        rows = SUMMARY_ROW.findall(summary)
        assert sorted(r[0] for r in rows) == ["host-0", "host-1", "host-2"]
        assert all(r[1] == "1" and r[4] == "2" for r in rows), rows  # one reboot, second boot
        most = re.search(r"^most holders at once: (\d+) \(max 2\)$", summary, re.MULTILINE)
        assert most and 1 <= int(most[1]) <= 2, summary
        assert "\nviolations: none\n" in summary
        assert "\nresult: OK" in summary
        assert re.search(r"^\s+Available: 2$", summary, re.MULTILINE), summary  # locksmithctl status
        assert re.search(r"host-\d\s+waiting-for-lock -> holding$", done.stdout, re.MULTILINE)
        assert "\x1b[" not in done.stdout  # no live table when stdout is not a TTY
        assert processes_mentioning(workdir) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_daemon_that_cannot_start_fails_the_demo_quickly() -> None:
    """A bad window makes every locksmithd exit; the demo reports it with the log and exits 1."""
    done = run_demo("--hosts", "1", "--no-live", "--timeout", "60", "--window-start", "bogus",
                    "--window-length", "1h")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "host-0: locksmithd exited with code" in done.stdout
    assert "invalid window start 'bogus'" in done.stdout


def test_window_start_needs_window_length() -> None:
    """Half a window is a usage error before anything starts."""
    done = run_demo("--window-start", "04:00", timeout_s=30)
    assert done.returncode == 2
    assert "--window-start and --window-length go together" in done.stderr


@pytest.mark.timeout(150)
def test_a_broken_host_halts_the_rollout_until_it_is_repaired_and_resumed() -> None:
    """--break host-2: it goes first, fails its check and halts; nobody takes a slot; repair, resume, all done."""
    done = run_demo("--hosts", "3", "--max", "1", "--reboot-delay", "0.5", "--no-live", "--timeout", "100",
                    "--break", "host-2")
    assert done.returncode == 0, done.stdout + done.stderr
    log, summary = done.stdout.split("\nSummary\n", 1)
    halt = re.search(r"^\s*[\d.]+s  HALT by host-2: (.*)$", log, re.MULTILINE)
    assert halt and "50-demo-app exited 1" in halt[1], log
    order = [log.index(text) for text in ("HALT by host-2", "locksmithctl status (while halted)",
                                          "repaired by the operator", "locksmithctl resume: resumed")]
    assert re.search(r"^\s*[\d.]+s    HALTED since \S+ by host-2: ", log, re.MULTILINE), log  # the real CLI's view
    assert order == sorted(order), log
    # Nobody else reboots before the resume: the other hosts' reboots come after it in the log.
    resumed_at = log.index("resumed with")
    assert "host-2     logind accepted a reboot" in log[:resumed_at]
    assert "host-0     logind accepted a reboot" not in log[:resumed_at], log
    assert "host-1     logind accepted a reboot" not in log[:resumed_at], log
    assert re.search(r"host-2\s+checking-health -> unhealthy$", log, re.MULTILINE), log
    rows = SUMMARY_ROW.findall(summary)
    assert sorted(r[0] for r in rows) == ["host-0", "host-1", "host-2"]
    assert all(r[1] == "1" and r[4] == "2" for r in rows), rows
    assert "\nevery host rebooted once: yes\n" in summary
    assert "\nmost holders at once: 1 (max 1)\n" in summary
    assert re.search(r"^halt: at [\d.]+s by host-2: .*50-demo-app exited 1$", summary, re.MULTILINE), summary
    assert re.search(r"^while halted: no host took a slot \(holding host-2; waiting host-[01], host-[01]\)$",
                     summary, re.MULTILINE), summary
    assert re.search(r"^resumed: at [\d.]+s with locksmithctl resume, after repairing host-2 at [\d.]+s$", summary,
                     re.MULTILINE), summary
    assert "\nviolations: none\n" in summary and "\nresult: OK" in summary


def test_break_must_name_a_host() -> None:
    """--break naming no host of the fleet is a usage error before anything starts."""
    done = run_demo("--hosts", "3", "--break", "host-3", timeout_s=30)
    assert done.returncode == 2
    assert "--break 'host-3' names no host; the hosts are host-0 to host-2" in done.stderr
    assert "Traceback" not in done.stderr
