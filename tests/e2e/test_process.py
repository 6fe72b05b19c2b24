"""Scenarios 5 and 9 on real systemd hosts: the watchdog restarts a wedged daemon; an operator's own reboot."""

from __future__ import annotations

from harness.real_fleet import RealFleet, events, wait_until

BLOCKER = "e2e-blocker"  # a holder that is no host: keeps the one slot taken while a host waits
WATCHDOG_TIMEOUT_S = 120.0  # WatchdogSec=60s, RestartSec=10s, and slack for a loaded machine
ERROR_PRIORITY = 3  # journal PRIORITY of log.error and worse


def test_watchdog_kills_and_restarts_a_stopped_daemon_which_keeps_its_queue_place(fleet: RealFleet) -> None:
    """Scenario 5: SIGSTOP the daemon; systemd's watchdog (WatchdogSec=) kills and restarts it, queued again."""
    group = "e2e-watchdog"
    host = fleet.add("e2e-watchdog", {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_SOURCES": "reboot-required"})
    fleet.ctl("set-max", "1", group=group)
    fleet.ctl("lock", BLOCKER, group=group)
    fleet.boot_all()
    host.run(["touch", "/run/reboot-required"])
    wait_until(lambda: fleet.queue_place(group, host) is not None, 30, "the host to queue")
    stopped_pid = host.main_pid()
    host.run(["systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", host.unit])
    wait_until(lambda: host.main_pid() not in ("0", stopped_pid), WATCHDOG_TIMEOUT_S,
               "systemd to kill and restart the stopped daemon")
    system = [str(entry.get("MESSAGE", "")) for entry in host.journal("-u", host.unit, "_PID=1")]
    assert any("Watchdog timeout" in message for message in system), system[-10:]
    wait_until(lambda: fleet.queue_place(group, host) is not None, 60, "the restarted daemon to queue again")
    assert len(host.boots) == 1
    fleet.ctl("unlock", BLOCKER, group=group)
    wait_until(lambda: len(host.boots) >= 2 and bool(events(host, "reboot-done")), 60,
               "the host to take the slot, reboot and release")
    assert fleet.status(group)["holders"] == []


PENDING_CHECK = """#!/bin/sh
# An update staged on disk waits for a coordinated reboot (as rpm-ostree's staged deployment would).
[ -e /var/lib/e2e/pending ] && { echo "an update is staged"; exit 1; }
exit 0
"""


def test_operator_reboot_while_queued_stops_cleanly_and_rejoins_after_boot(fleet: RealFleet) -> None:
    """Scenario 9: ``systemctl reboot`` by hand on a queued host: a clean stop, its place given up, back after boot.

    The need survives the reboot (an update staged on disk, found by the check
    command), so the daemon queues again in the new boot. Then the update is
    taken back (hooks run in the daemon's read-only sandbox, so the test does
    it) and the coordinated reboot that follows leaves the host up.
    """
    group = "e2e-shutdown"
    host = fleet.add("e2e-shutdown", {"LOCKSMITHD_GROUP": group, "LOCKSMITHD_SOURCES": "command",
                                      "LOCKSMITHD_REBOOT_CHECK_COMMAND": "/usr/local/sbin/e2e-pending",
                                      "LOCKSMITHD_REBOOT_CHECK_INTERVAL": "2s"},
                     files={"usr/local/sbin/e2e-pending": (PENDING_CHECK, 0o755),
                            "var/lib/e2e/pending": ("", 0o644)})
    fleet.ctl("set-max", "1", group=group)
    fleet.ctl("lock", BLOCKER, group=group)
    fleet.boot_all()
    wait_until(lambda: fleet.queue_place(group, host) is not None, 30, "the host to queue")
    first_place = fleet.queue_place(group, host)
    assert first_place is not None
    first_boot = host.journal("-u", host.unit)[-1]["_BOOT_ID"]

    host.run(["systemctl", "reboot"], check=False)
    wait_until(lambda: len(host.boots) >= 2 and host.system_up(), 60, "the operator's reboot")
    old_boot = [entry for entry in host.journal("-u", host.unit) if entry["_BOOT_ID"] == first_boot]
    daemon_lines = [entry for entry in old_boot if entry.get("SYSLOG_IDENTIFIER") == "locksmithd"]
    assert not [e["MESSAGE"] for e in daemon_lines if int(e.get("PRIORITY", 6)) <= ERROR_PRIORITY]
    assert not any("Traceback" in str(entry.get("MESSAGE", "")) for entry in daemon_lines)
    assert any("stopped (was waiting-for-lock)" in str(entry.get("MESSAGE", "")) for entry in daemon_lines), \
        [entry.get("MESSAGE") for entry in daemon_lines[-8:]]
    unit_lines = [str(entry.get("MESSAGE", "")) for entry in old_boot if entry.get("_PID") == "1"]
    assert not any("Failed with result" in message or "timed out" in message.lower() for message in unit_lines)

    wait_until(lambda: fleet.queue_place(group, host) is not None, 30, "the host to queue again after boot")
    second_place = fleet.queue_place(group, host)
    assert second_place is not None and second_place["since"] != first_place["since"], \
        "the host kept its old queue entry across the reboot instead of giving it up"
    host.run(["rm", "/var/lib/e2e/pending"])  # the need is recorded; the next boot must not need another
    fleet.ctl("unlock", BLOCKER, group=group)
    wait_until(lambda: len(host.boots) >= 3 and bool(events(host, "reboot-done")), 60,
               "the coordinated reboot after the rejoin")
    assert fleet.status(group)["holders"] == []
    assert len(host.boots) == 3, "the host rebooted again after the staged update was applied"
