"""contrib/hooks/kubernetes: drain and uncordon hooks, against a stand-in kubectl that keeps node state in files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

HOOKS = Path(__file__).resolve().parent.parent / "contrib" / "hooks" / "kubernetes"
DRAIN = HOOKS / "pre-reboot.d" / "50-kubernetes-drain"
UNCORDON = HOOKS / "post-boot.d" / "50-kubernetes-uncordon"

# A kubectl for one node: state/unschedulable, state/annotation; every call is appended to state/calls.
FAKE_KUBECTL = r"""#!/bin/sh
state="$FAKE_STATE"
echo "$*" >> "$state/calls"
case "$1 $2" in
    "get node")
        case "$5" in
            *unschedulable*) cat "$state/unschedulable" 2>/dev/null ;;
            *annotations*) cat "$state/annotation" 2>/dev/null ;;
        esac ;;
    "annotate node")
        case "$*" in
            *cordoned=true*) printf true > "$state/annotation" ;;
            *cordoned-*) rm -f "$state/annotation" ;;
        esac ;;
    "drain "*)
        printf true > "$state/unschedulable"
        [ -e "$state/pdb-blocks" ] && { echo "error: Cannot evict pod as it would violate the pod's disruption budget." >&2; exit 1; }
        echo "node/$2 drained" ;;
    "uncordon "*) printf false > "$state/unschedulable" ;;
esac
exit 0
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "unschedulable").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    return state


def hook(path: Path, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{state.parent / 'bin'}:{os.environ['PATH']}", "FAKE_STATE": str(state),
           "LOCKSMITHD_K8S_NODE": "node-7", "LOCKSMITHD_DRAIN_TIMEOUT": "90s",
           "LOCKSMITHD_REBOOT_REASON": "reboot-required: /run/reboot-required"}
    return subprocess.run([str(path)], capture_output=True, text=True, env=env, timeout=30)


def test_drain_then_uncordon(cluster: Path) -> None:
    drained = hook(DRAIN, cluster)
    assert drained.returncode == 0, drained.stderr
    assert "drain node-7 --ignore-daemonsets --delete-emptydir-data --timeout=90s" in (cluster / "calls").read_text()
    assert (cluster / "unschedulable").read_text() == "true"
    uncordoned = hook(UNCORDON, cluster)
    assert uncordoned.returncode == 0, uncordoned.stderr
    assert (cluster / "unschedulable").read_text() == "false"
    assert not (cluster / "annotation").exists()


def test_a_blocked_drain_fails_and_uncordon_undoes_it(cluster: Path) -> None:
    (cluster / "pdb-blocks").write_text("")
    drained = hook(DRAIN, cluster)
    assert drained.returncode == 1
    assert "disruption budget" in drained.stderr and "failed or timed out after 90s" in drained.stderr
    assert hook(UNCORDON, cluster).returncode == 0
    assert (cluster / "unschedulable").read_text() == "false"


def test_an_operators_cordon_is_kept(cluster: Path) -> None:
    (cluster / "unschedulable").write_text("true")
    assert hook(DRAIN, cluster).returncode == 0
    result = hook(UNCORDON, cluster)
    assert result.returncode == 0 and "not cordoned by locksmithd" in result.stdout
    assert (cluster / "unschedulable").read_text() == "true"
    assert "uncordon" not in (cluster / "calls").read_text()
