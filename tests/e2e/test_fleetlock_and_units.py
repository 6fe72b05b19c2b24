"""Scenarios 8 and 10 on real systemd hosts: a FleetLock server host serving two hosts; the units themselves."""

from __future__ import annotations

import re

from harness.fleet import SemaphoreMonitor
from harness.ports import free_port
from harness.real_fleet import FLEETLOCK_UNIT, RealFleet, record_figures, released_after_reboot, wait_until
from harness.real_host import RealHost

GROUP = "e2e-fleet"
# What README "Least privilege" states for `systemd-analyze security` on systemd 252 (bookworm).
EXPOSURE = {"locksmithd.service": 2.5, "locksmithd-fleetlock.service": 1.7}
UNPRIVILEGED_EXPOSURE = 1.7




def test_fleetlock_server_host_serves_two_fleet_lock_hosts(fleet: RealFleet) -> None:
    """Scenario 8: locksmithd-fleetlock.service on one host; two REBOOT_STRATEGY=fleet-lock hosts reboot through it."""
    port = free_port()
    server = fleet.add("e2e-fl-server", {"REBOOT_STRATEGY": "off"},
                       files={"etc/locksmithd/fleetlock.env": (
                           f"LOCKSMITHD_FLEETLOCK_LISTEN=127.0.0.1:{port}\n"
                           f"LOCKSMITHD_FLEETLOCK_ENDPOINT={fleet.endpoint}\n", 0o644)})
    server.enable(FLEETLOCK_UNIT)
    settings = {"REBOOT_STRATEGY": "fleet-lock", "LOCKSMITHD_FLEETLOCK_URL": f"http://127.0.0.1:{port}",
                "LOCKSMITHD_FLEETLOCK_GROUP": GROUP, "LOCKSMITHD_SOURCES": "reboot-required"}
    clients = [fleet.add(f"e2e-fl-{name}", settings) for name in "ab"]
    fleet.ctl("set-max", "1", group=GROUP)
    monitor = SemaphoreMonitor([fleet.endpoint], group=GROUP, expected_max=1)
    monitor.start()
    try:
        fleet.boot_all()
        assert server.run(["systemctl", "is-active", "locksmithd-fleetlock.service"], check=False).stdout.strip() \
            == "active"
        for host in clients:
            host.run(["touch", "/run/reboot-required"])
        for host in clients:
            wait_until(lambda host=host: len(host.boots) >= 2 and released_after_reboot(host), 120,
                       f"{host.name} rebooted through FleetLock and released")
    finally:
        monitor.stop()
    assert monitor.violations == []
    assert monitor.max_holders_seen == 1
    assert fleet.status(GROUP)["holders"] == []
    served = server.journal("-u", "locksmithd-fleetlock.service")
    lines = [str(entry.get("MESSAGE", "")) for entry in served]
    assert any("pre-reboot" in line for line in lines) and any("steady-state" in line for line in lines), lines[-10:]
    assert len(server.boots) == 1
    for host in clients:
        assert len(host.boots) == 2


def test_units_verify_clean_and_have_the_readme_exposure(fleet: RealFleet) -> None:
    """Scenario 10: ``systemd-analyze verify`` is clean for every unit the package installs; ``security`` gives
    README's scores."""
    host = fleet.add("e2e-units", {"REBOOT_STRATEGY": "off"})
    host.enable(FLEETLOCK_UNIT)
    unprivileged = fleet.add("e2e-units-unpriv", {"REBOOT_STRATEGY": "off"}, unprivileged=True)
    fleet.boot_all()
    for target, units in ((host, ("locksmithd.service", "locksmithd-fleetlock.service")),
                          (unprivileged, (unprivileged.unit,))):
        for unit in units:
            done = target.run(["systemd-analyze", "verify", f"/lib/systemd/system/{unit}"], check=False)
            assert done.returncode == 0 and (done.stdout + done.stderr).strip() == "", \
                f"{target.name} {unit}: {done.stdout}{done.stderr}"
    scores = {unit: _exposure(host, unit) for unit in ("locksmithd.service", "locksmithd-fleetlock.service")}
    record_figures(f"systemd-analyze security: {scores}, {unprivileged.unit} "
                   f"{_exposure(unprivileged, unprivileged.unit)}")
    assert scores == EXPOSURE
    assert _exposure(unprivileged, unprivileged.unit) == UNPRIVILEGED_EXPOSURE


def _exposure(host: RealHost, unit: str) -> float:
    out = host.run(["systemd-analyze", "security", "--no-pager", unit], check=False).stdout
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert match, out[-500:]
    return float(match.group(1))
