"""Issue 19 on real systemd hosts: upgrading keeps a held slot and a queue place; removing writes nothing.

The earlier version is the same code built as ``<version>~e2e.previous`` (no
earlier release exists to install): what is tested is the package's upgrade
path (unpack without a stop, the postinst's restart rule) under real systemd.
"""

from __future__ import annotations

from harness.real_fleet import RealFleet, events, wait_until
from harness.real_host import RealHost

BLOCKER = "e2e-upgrade-blocker"


def _install(host: RealHost, deb_name: str, *extra: str) -> str:
    """``apt-get install ./<deb>`` inside the running host; returns what it printed."""
    done = host.run(["apt-get", "install", "-y", *extra, f"/var/tmp/{deb_name}"], timeout_s=120,
                    check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _version(host: RealHost) -> str:
    return host.run(["dpkg-query", "-W", "-f=${Version}", "locksmithd"]).stdout.strip()


def test_upgrade_keeps_a_queue_place_and_a_held_slot(fleet: RealFleet) -> None:
    """Install the earlier version, queue one host and hold a slot on another, then upgrade both.

    The queued host's daemon is not restarted (its place and ``since`` stay);
    the host holding its slot after a reboot (halted: a unit failed) is
    restarted into the new version and still holds the slot; both finish.
    """
    group = "e2e-upgrade"
    previous, current = fleet.layers.packages.previous, fleet.layers.packages.current
    queued = fleet.add("e2e-upg-queued", {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_SOURCES": "reboot-required"})
    holding = fleet.add("e2e-upg-holding", {"LOCKSMITHD_GROUP": group + "-held", "LOCKSMITHD_SOURCES": "reboot-required",
                                            "LOCKSMITHD_HEALTH_UNITS": "e2e-upgrade-ok.service",
                                            "LOCKSMITHD_HEALTH_TIMEOUT": "5s"})
    for host in (queued, holding):
        for deb in (previous, current):
            (host.root / "var/tmp" / deb.name).write_bytes(deb.read_bytes())
    fleet.ctl("set-max", "1", group=group)
    fleet.ctl("lock", BLOCKER, group=group)
    fleet.boot_all()
    for host in (queued, holding):
        _install(host, previous.name, "--allow-downgrades")
        host.run(["systemctl", "restart", host.unit])
        assert _version(host).endswith("~e2e.previous")

    queued.run(["touch", "/run/reboot-required"])
    wait_until(lambda: fleet.queue_place(group, queued) is not None, 30, "the queued host to queue")
    place, pid = fleet.queue_place(group, queued), queued.main_pid()
    output = _install(queued, current.name)
    assert _version(queued) == current.name.split("_")[1]
    assert queued.main_pid() == pid, f"the daemon was restarted while queued:\n{output}"
    assert fleet.queue_place(group, queued) == place
    assert "waiting-for-lock" in output, output  # the postinst says why it did not restart

    holding.run(["touch", "/run/reboot-required"])
    wait_until(lambda: fleet.status(group + "-held")["halt"] is not None, 90,
               "the rebooted host to halt its group (its required unit is missing)")
    assert fleet.status(group + "-held")["holders"] == [holding.machine_id]
    pid = holding.main_pid()
    _install(holding, current.name)
    wait_until(lambda: holding.main_pid() not in ("0", pid), 30, "the holding host's daemon to restart")
    assert fleet.status(group + "-held")["holders"] == [holding.machine_id], "the upgrade lost the held slot"
    holding.write("etc/systemd/system/e2e-upgrade-ok.service",
                  "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n")
    holding.run(["systemctl", "daemon-reload"])
    holding.run(["systemctl", "start", "e2e-upgrade-ok.service"])
    wait_until(lambda: fleet.status(group + "-held")["holders"] == [], 60, "the upgraded daemon to release")

    fleet.ctl("unlock", BLOCKER, group=group)
    wait_until(lambda: len(queued.boots) >= 2 and bool(events(queued, "reboot-done")), 90,
               "the queued host to reboot into the new version and release")
    assert any(f"locksmithd {current.name.split('_')[1]} starting" in message for message in queued.messages())


def test_remove_and_purge_never_write_to_etcd(fleet: RealFleet) -> None:
    """``apt-get remove`` stops the daemon holding a slot taken in this boot; the slot stays held; purge too.

    The host is in its pre-reboot hook (slow on purpose) when the package is
    removed: the removal's stop writes nothing to etcd, remove keeps
    /etc/locksmithd, purge removes it, and ``locksmithctl status`` still shows
    the slot.
    """
    group = "e2e-remove"
    host = fleet.add("e2e-remove", {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_SOURCES": "reboot-required"},
                     files={"etc/locksmithd/pre-reboot.d/10-slow": ("#!/bin/sh\nexec sleep 300\n", 0o755)})
    fleet.ctl("set-max", "1", group=group)
    fleet.boot_all()
    host.run(["touch", "/run/reboot-required"])
    wait_until(lambda: fleet.status(group)["holders"] == [host.machine_id], 30, "the host to take its slot")
    history = fleet.ctl("history", "--json", group=group).stdout
    done = host.run(["apt-get", "remove", "-y", "locksmithd"], timeout_s=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.run(["systemctl", "is-active", host.unit], check=False).stdout.strip() in ("inactive", "unknown")
    assert fleet.status(group)["holders"] == [host.machine_id], "the removal gave the slot back"
    assert fleet.ctl("history", "--json", group=group).stdout == history, "the removal wrote to etcd"
    assert host.run(["test", "-f", "/etc/locksmithd/locksmithd.conf"], check=False).returncode == 0
    assert any("stopping for the package's removal" in message for message in host.messages())
    done = host.run(["apt-get", "purge", "-y", "locksmithd"], timeout_s=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert host.run(["test", "-e", "/etc/locksmithd"], check=False).returncode != 0
    assert fleet.status(group)["holders"] == [host.machine_id]
    assert len(host.boots) == 1
