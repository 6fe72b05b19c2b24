"""Scenarios 2 and 3 on real systemd hosts: a failed unit halts the group; required units and check commands."""

from __future__ import annotations

import time

from harness.fleet import SemaphoreMonitor
from harness.real_fleet import RealFleet, events, released_after_reboot, wait_until

# Fails in every boot after the first: the host comes back "degraded" from its coordinated reboot.
FLAKY_UNIT = """[Unit]
Description=e2e: a unit that fails after the host's first boot

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if [ -e /var/lib/e2e/booted-once ]; then echo failing on purpose; exit 1; fi; \
mkdir -p /var/lib/e2e; touch /var/lib/e2e/booted-once'

[Install]
WantedBy=multi-user.target
"""
# Fails the first time it runs after a boot, passes from then on.
ONCE_CHECK = """#!/bin/sh
if [ -e /run/e2e-check-failed-once ]; then echo "check passes now"; exit 0; fi
touch /run/e2e-check-failed-once
echo "check fails once"
exit 1
"""
HALT_TIMEOUT_S = 120.0
QUIET_S = 8.0  # how long the other hosts are watched for a reboot that must not come


def test_failed_unit_after_boot_keeps_the_slot_and_halts_until_resumed(fleet: RealFleet) -> None:
    """Scenario 2: a host back "degraded" keeps its slot and halts the group; no other host reboots.

    ``systemctl reset-failed`` makes it healthy (it releases, the group stays
    halted); ``locksmithctl resume`` then lets the rollout finish.
    """
    group = "e2e-halt"
    # The fallback re-check is far off: the healed host must notice `reset-failed` from systemd's signals.
    settings = {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_SOURCES": "reboot-required",
                "LOCKSMITHD_HEALTH_TIMEOUT": "15s", "LOCKSMITHD_HEALTH_RECHECK_INTERVAL": "10m"}
    sick = fleet.add("e2e-halt-a", settings)
    sick.write("etc/systemd/system/e2e-flaky.service", FLAKY_UNIT)
    (sick.root / "etc/systemd/system/multi-user.target.wants/e2e-flaky.service").symlink_to(
        "/etc/systemd/system/e2e-flaky.service")
    others = [fleet.add(f"e2e-halt-{name}", settings) for name in "bc"]
    fleet.ctl("set-max", "1", group=group)
    monitor = SemaphoreMonitor([fleet.endpoint], group=group, expected_max=1)
    monitor.start()
    try:
        fleet.boot_all()
        sick.run(["touch", "/run/reboot-required"])
        wait_until(lambda: bool(events(sick, "slot-taken")), 30, "the first host to take the slot")
        for host in others:
            host.run(["touch", "/run/reboot-required"])
        wait_until(lambda: fleet.status(group)["halt"] is not None, HALT_TIMEOUT_S, "the group to be halted")
        status = fleet.status(group)
        assert status["holders"] == [sick.machine_id]
        assert sick.machine_id in status["halt"]["reason"] and "failed its health checks" in status["halt"]["reason"]
        assert sick.run(["systemctl", "is-system-running"], check=False).stdout.strip() == "degraded"
        assert [entry["LOCKSMITHD_EVENT"] for entry in events(sick, "health-failed")] == ["health-failed"]
        time.sleep(QUIET_S)
        assert [len(host.boots) for host in others] == [1, 1], "another host rebooted while the group was halted"
        assert fleet.status(group)["holders"] == [sick.machine_id]

        sick.run(["systemctl", "reset-failed"])
        wait_until(lambda: fleet.status(group)["holders"] == [], 30, "the healed host to release its slot")
        assert fleet.status(group)["halt"] is not None, "the halt must stay until an operator resumes"
        time.sleep(2)
        assert [len(host.boots) for host in others] == [1, 1]
        fleet.ctl("resume", group=group)
        for host in others:
            wait_until(lambda host=host: len(host.boots) >= 2 and released_after_reboot(host), HALT_TIMEOUT_S,
                       f"{host.name} rebooted and released after the resume")
    finally:
        monitor.stop()
    assert monitor.violations == []
    assert monitor.max_holders_seen == 1
    assert len(sick.boots) == 2
    assert fleet.status(group)["holders"] == []


def test_required_unit_halts_and_a_check_that_fails_once_then_passes_releases(fleet: RealFleet) -> None:
    """Scenario 3: a unit in LOCKSMITHD_HEALTH_UNITS that is not active halts; a flaky check command releases."""
    units_group, checks_group = "e2e-units", "e2e-checks"
    needs_unit = fleet.add("e2e-units-a", {"LOCKSMITHD_GROUP": units_group, "LOCKSMITHD_SOURCES": "reboot-required",
                                           "LOCKSMITHD_HEALTH_UNITS": "e2e-required.service",
                                           "LOCKSMITHD_HEALTH_TIMEOUT": "10s"})
    checked = fleet.add("e2e-checks-a", {"LOCKSMITHD_GROUP": checks_group, "LOCKSMITHD_SOURCES": "reboot-required",
                                         "LOCKSMITHD_HEALTH_TIMEOUT": "2m",
                                         "LOCKSMITHD_HEALTH_RECHECK_INTERVAL": "2s"},
                        files={"etc/locksmithd/health.d/10-once": (ONCE_CHECK, 0o755)})
    fleet.boot_all()
    for host in (needs_unit, checked):
        host.run(["touch", "/run/reboot-required"])
    wait_until(lambda: released_after_reboot(checked), HALT_TIMEOUT_S, "the checked host to release")
    messages = checked.messages()
    assert any("check fails once" in message for message in messages), messages
    assert any("check passes now" in message for message in messages), messages
    assert events(checked, "health-failed") == []
    assert fleet.status(checks_group)["halt"] is None

    wait_until(lambda: fleet.status(units_group)["halt"] is not None, HALT_TIMEOUT_S, "the units group to halt")
    status = fleet.status(units_group)
    assert status["holders"] == [needs_unit.machine_id]
    assert "e2e-required.service" in status["halt"]["reason"]
    assert len(needs_unit.boots) == 2
