"""make deb: the Debian package's files, metadata, maintainer scripts and lintian's verdict.

The package is built once per session (about 5 s) by contrib/build-deb.sh, from a copy of
the checkout so that parallel workers never share build/ or dist/.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from locksmithd import __version__
from locksmithd.core.states import MAY_HOLD_UNUSED_SLOT, State

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
                                    ".pytest_cache", ".hypothesis", "tests", "harness", "bench")
BOOKWORM_DEPENDS = {"python3-etcd3", "python3-grpcio", "python3-protobuf", "python3-dbus-fast", "python3-click",
                    "python3-systemd", "python3-prometheus-client", "python3-aiohttp"}


class Built:
    """The built .deb, its contents unpacked (``tree``) and its control files (``control``)."""

    def __init__(self, deb: Path, tree: Path, control: Path) -> None:
        self.deb, self.tree, self.control = deb, tree, control

    def field(self, name: str) -> str:
        result = subprocess.run(["dpkg-deb", "-f", str(self.deb), name], capture_output=True, text=True,
                                timeout=30, check=True)
        return result.stdout.strip()

    def listing(self) -> dict[str, str]:
        """Path (without the leading ".") -> mode string, from dpkg-deb -c."""
        result = subprocess.run(["dpkg-deb", "-c", str(self.deb)], capture_output=True, text=True, timeout=30,
                                check=True)
        entries = {}
        for line in result.stdout.splitlines():
            fields = line.split()
            entries[fields[5].removeprefix(".").rstrip("/") or "/"] = fields[0]
        return entries


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    source = tmp_path_factory.mktemp("deb-source") / "locksmithd"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    result = subprocess.run(["sh", "contrib/build-deb.sh"], cwd=source, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    deb = source / "dist" / f"locksmithd_{__version__}_all.deb"
    assert deb.is_file(), result.stdout[-2000:]
    tree, control = source / "unpacked", source / "control"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=60)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, timeout=60)
    return Built(deb, tree, control)


class TestFiles:
    """What the package installs, and where."""

    def test_binaries_units_man_pages_and_completions(self, built: Built) -> None:
        listing = built.listing()
        expected = {
            "/usr/bin/locksmithd", "/usr/bin/locksmithctl", "/usr/bin/locksmithd-fleetlock",
            "/lib/systemd/system/locksmithd.service", "/lib/systemd/system/locksmithd-fleetlock.service",
            "/lib/systemd/system/locksmithd-unprivileged.service",
            "/usr/lib/sysusers.d/locksmithd.conf", "/usr/share/polkit-1/rules.d/50-locksmithd.rules",
            "/usr/share/man/man8/locksmithd.8.gz", "/usr/share/man/man1/locksmithctl.1.gz",
            "/usr/share/man/man8/locksmithd-fleetlock.8.gz", "/usr/share/man/man5/locksmithd.conf.5.gz",
            "/usr/share/bash-completion/completions/locksmithctl", "/usr/share/zsh/vendor-completions/_locksmithctl",
            "/usr/share/fish/vendor_completions.d/locksmithctl.fish",
            "/etc/locksmithd/locksmithd.conf", "/etc/locksmithd/health.d", "/etc/locksmithd/pre-reboot.d",
            "/etc/locksmithd/post-boot.d",
            "/usr/share/doc/locksmithd/examples/prometheus/alerts.yml",
            "/usr/share/doc/locksmithd/examples/grafana/locksmithd-dashboard.json",
            "/usr/share/doc/locksmithd/examples/fleetlock/kubernetes.yaml",
            "/usr/share/doc/locksmithd/examples/hooks/kubernetes/pre-reboot.d/50-kubernetes-drain",
            "/usr/share/doc/locksmithd/examples/hooks/kubernetes/post-boot.d/50-kubernetes-uncordon",
            "/usr/share/doc/locksmithd/README.md.gz",
        }
        assert expected - set(listing) == set()
        for binary in ("locksmithd", "locksmithctl", "locksmithd-fleetlock"):
            assert listing[f"/usr/bin/{binary}"] == "-rwxr-xr-x"
        for directory in ("health.d", "pre-reboot.d", "post-boot.d"):
            assert listing[f"/etc/locksmithd/{directory}"] == "drwxr-xr-x"
            assert not any(path.startswith(f"/etc/locksmithd/{directory}/") for path in listing)

    def test_the_product_only(self, built: Built) -> None:
        """The package's modules and nothing of the harness, tests, benchmarks or /usr/local."""
        listing = built.listing()
        assert "/usr/lib/python3/dist-packages/locksmithd/daemon/run.py" in listing
        strays = [p for p in listing if p.startswith(("/usr/local", "/usr/lib/python3/dist-packages/harness",
                                                       "/usr/lib/python3/dist-packages/tests"))]
        assert strays == []

    def test_units_are_the_repository_units_with_usr_bin(self, built: Built) -> None:
        """One source: each packaged unit is systemd/<name> with ExecStart= moved from /usr/local/bin to /usr/bin."""
        for unit in sorted((ROOT / "systemd").glob("*.service")):
            packaged = (built.tree / "lib/systemd/system" / unit.name).read_text()
            assert packaged == unit.read_text().replace("ExecStart=/usr/local/bin/", "ExecStart=/usr/bin/")
            assert re.findall(r"^ExecStart=(\S+)", packaged, re.M) == [f"/usr/bin/{unit.name.split('-unpriv')[0].removesuffix('.service')}"]

    def test_conffile_man_pages_and_rules_are_the_committed_renderings(self, built: Built) -> None:
        assert (built.tree / "etc/locksmithd/locksmithd.conf").read_text() == (ROOT / "contrib/locksmithd.conf").read_text()
        for page in ("man8/locksmithd.8", "man1/locksmithctl.1", "man8/locksmithd-fleetlock.8", "man5/locksmithd.conf.5"):
            shipped = gzip.decompress((built.tree / "usr/share/man" / f"{page}.gz").read_bytes()).decode()
            assert shipped == (ROOT / "contrib/man" / page.split("/")[1]).read_text(), page
        assert (built.tree / "usr/share/polkit-1/rules.d/50-locksmithd.rules").read_text() == \
            (ROOT / "systemd/polkit/50-locksmithd.rules").read_text()
        assert (built.tree / "usr/lib/sysusers.d/locksmithd.conf").read_text() == \
            (ROOT / "systemd/sysusers.d/locksmithd.conf").read_text()

    def test_completions_are_clicks_and_load_in_bash(self, built: Built) -> None:
        share = built.tree / "usr/share"
        bash = share / "bash-completion/completions/locksmithctl"
        assert "_LOCKSMITHCTL_COMPLETE=bash_complete" in bash.read_text()
        assert (share / "zsh/vendor-completions/_locksmithctl").read_text().startswith("#compdef locksmithctl")
        assert "_LOCKSMITHCTL_COMPLETE=fish_complete" in (share / "fish/vendor_completions.d/locksmithctl.fish").read_text()
        loaded = subprocess.run(["bash", "-c", f"source {bash} && complete -p locksmithctl"], capture_output=True,
                                text=True, timeout=30, check=False)
        assert loaded.returncode == 0 and "locksmithctl" in loaded.stdout, loaded.stderr


class TestMetadata:
    def test_version_follows_the_package(self, built: Built) -> None:
        assert built.field("Version") == __version__
        assert built.field("Architecture") == "all"

    def test_readme_installs_this_version(self) -> None:
        """The README's first install command names the file `make deb` writes for the current version."""
        readme = (ROOT / "README.md").read_text()
        section = readme[readme.index("## Install on a host"):readme.index("## Configure")]
        assert f"apt install ./dist/locksmithd_{__version__}_all.deb" in section
        assert section.index("apt install") < section.index("pip install")

    def test_depends_on_bookworms_libraries_and_never_asyncinotify(self, built: Built) -> None:
        depends = {item.split()[0].split(":")[0] for item in built.field("Depends").split(", ")}
        assert BOOKWORM_DEPENDS <= depends
        assert {"python3", "systemd"} <= depends
        assert not [d for d in depends if "asyncinotify" in d or d.startswith("python3-python3")]

    def test_conffiles_are_the_configuration_only(self, built: Built) -> None:
        assert (built.control / "conffiles").read_text().split() == ["/etc/locksmithd/locksmithd.conf"]


class TestMaintainerScripts:
    """Enabling, upgrading and removing follow Debian's helpers; none of it talks to etcd."""

    def test_daemon_enabled_fleetlock_and_unprivileged_variant_not(self, built: Built) -> None:
        postinst = (built.control / "postinst").read_text()
        assert "deb-systemd-helper enable 'locksmithd.service'" in postinst
        assert "systemd-sysusers" in postinst and "locksmithd.conf" in postinst
        for unit in ("locksmithd-fleetlock.service", "locksmithd-unprivileged.service"):
            assert f"deb-systemd-helper debian-installed '{unit}'" in postinst  # enabled only if it was

    def test_upgrade_keeps_a_slot_or_queue_place(self, built: Built) -> None:
        """The states the postinst will not restart in are those whose stop gives back a slot or place.

        MAY_HOLD_UNUSED_SLOT (the stop releases a slot taken in this boot and
        leaves the queue) plus rebooting (a restart would give back the slot
        the coming reboot still needs); the unit is not stopped before unpacking.
        """
        postinst = (built.control / "postinst").read_text()
        (deferred,) = re.findall(r"^\s*([a-z|-]+)\)\n\s*echo \"locksmithd: the daemon is", postinst, re.M)
        assert set(deferred.split("|")) == {s.value for s in MAY_HOLD_UNUSED_SLOT | {State.REBOOTING}}
        assert "deb-systemd-invoke try-restart locksmithd.service locksmithd-unprivileged.service" in postinst
        assert not (built.control / "preinst").exists() or "stop" not in (built.control / "preinst").read_text()

    def test_remove_stops_purge_removes_the_configuration_and_nothing_calls_etcd(self, built: Built) -> None:
        prerm, postrm = (built.control / "prerm").read_text(), (built.control / "postrm").read_text()
        assert re.search(r'"\$1" = remove .*\n\s*deb-systemd-invoke stop \'locksmithd.service\'', prerm)
        # Before that stop, on remove only, the marker that makes the daemon's stop write nothing to etcd.
        marker = prerm.index(": > /run/update-engine/package-removal")
        assert prerm.rindex('"$1" = "remove"', 0, marker) < marker < prerm.index("deb-systemd-invoke stop")
        assert re.search(r'if \[ "\$1" = "purge" \]; then\n\s*rm -rf /etc/locksmithd\n', postrm)
        commands = [line for p in built.control.iterdir() if p.name in ("preinst", "postinst", "prerm", "postrm")
                    for line in p.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert len(commands) > 50
        assert [line for line in commands if re.search(r"locksmithctl|etcdctl|2379|curl", line)] == []


def test_lintian_finds_no_errors_and_only_the_warnings_the_readme_justifies(built: Built) -> None:
    result = subprocess.run(["lintian", "--tag-display-limit", "0", str(built.deb)], capture_output=True, text=True,
                            timeout=300, check=False)
    tags = re.findall(r"^([EW]): locksmithd: (\S+)", result.stdout, re.M)
    assert [tag for kind, tag in tags if kind == "E"] == [], result.stdout
    readme = (ROOT / "README.md").read_text()
    justified = set(re.findall(r"^- lintian `([a-z0-9-]+)`", readme, re.M))
    assert {tag for kind, tag in tags if kind == "W"} <= justified, result.stdout


@pytest.mark.parametrize(("state", "restarted"), [
    ("idle", True), ("waiting-for-window", True), ("checking-health", True), ("unhealthy", True), ("", True),
    ("waiting-for-lock", False), ("holding", False), ("warning-users", False), ("rebooting", False),
])
def test_postinst_upgrade_restarts_only_when_nothing_is_at_stake(tmp_path: Path, state: str, restarted: bool) -> None:
    """The upgrade block of contrib/debian/locksmithd.postinst, run against a state file and a recording
    deb-systemd-invoke (paths moved into tmp_path): a fresh install never restarts from it."""
    script = (ROOT / "contrib/debian/locksmithd.postinst").read_text().replace("#DEBHELPER#", "")
    state_file = tmp_path / "coordinator.conf"
    if state:
        state_file.write_text(f"NAME=locksmithd\nSTRATEGY=etcd-lock\nSTATE=running\nDAEMON_STATE={state}\n")
    script = script.replace("/run/update-engine/coordinator.conf", str(state_file)).replace(
        "[ -d /run/systemd/system ]", "true")
    assert str(state_file) in script
    (tmp_path / "bin").mkdir()
    recorder = tmp_path / "bin" / "deb-systemd-invoke"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "invoked"}\n')
    recorder.chmod(0o755)
    (tmp_path / "postinst").write_text(script)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    for args, expect in ((["configure", ""], False), (["configure", "0.0.9"], restarted)):
        (tmp_path / "invoked").unlink(missing_ok=True)
        result = subprocess.run(["sh", str(tmp_path / "postinst"), *args], env=env, capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        invoked = (tmp_path / "invoked").read_text() if (tmp_path / "invoked").exists() else ""
        assert invoked == ("try-restart locksmithd.service locksmithd-unprivileged.service\n" if expect else ""), args
        assert (f"the daemon is {state}: not restarted now" in result.stdout) == (args[1] != "" and not restarted)
