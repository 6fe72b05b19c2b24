"""Scenario 4 on a real systemd host: the package's unprivileged unit, its sysusers entry and polkit rule."""

from __future__ import annotations

from harness.fleet import SemaphoreMonitor
from harness.real_fleet import POLKIT_RULE, POLKIT_RULE_PATH, RealFleet, events, wait_until
from harness.real_host import RealHost

GROUP = "e2e-unprivileged"
REFUSED = "logind refused to reboot"


def _released_in_boot(host: RealHost, boot_number: int) -> bool:
    """Whether the host has ``boot_number`` boots and released a slot in the latest one."""
    if len(host.boots) < boot_number:
        return False
    released = events(host, "reboot-done")
    boots = {entry["_BOOT_ID"] for entry in host.journal("-u", host.unit)}
    return len(boots) >= boot_number and len(released) >= boot_number - 1


def test_unprivileged_unit_reboots_through_polkit_and_retries_when_refused(fleet: RealFleet) -> None:
    """The locksmithd user reboots through logind thanks to the polkit rule; without it, logind refuses.

    A refusal gives the slot back and says why in one journal line (no
    traceback); with the rule restored, the next try reboots.
    """
    host = fleet.add("e2e-unpriv", {"LOCKSMITHD_GROUP": GROUP, "LOCKSMITHD_SOURCES": "reboot-required",
                                    "LOCKSMITHD_RETRY_MAX": "5s"}, unprivileged=True)
    monitor = SemaphoreMonitor([fleet.endpoint], group=GROUP, expected_max=1)
    monitor.start()
    try:
        fleet.boot_all()
        daemon_user = host.run(["systemctl", "show", "-P", "User", host.unit]).stdout.strip()
        assert daemon_user == "locksmithd", daemon_user
        main_pid = host.run(["systemctl", "show", "-P", "MainPID", host.unit]).stdout.strip()
        uid_line = [line for line in host.run(["cat", f"/proc/{main_pid}/status"]).stdout.splitlines()
                    if line.startswith("Uid:")]
        passwd = host.run(["getent", "passwd", "locksmithd"]).stdout
        assert uid_line and uid_line[0].split()[1] == passwd.split(":")[2], (uid_line, passwd)

        host.run(["touch", "/run/reboot-required"])
        wait_until(lambda: _released_in_boot(host, 2), 90, "the first reboot as the locksmithd user")

        host.run(["rm", "-f", "/" + POLKIT_RULE_PATH])
        host.run(["touch", "/run/reboot-required"])
        wait_until(lambda: any(REFUSED in message for message in host.messages()), 60, "logind to refuse")
        wait_until(lambda: fleet.status(GROUP)["holders"] == [], 30, "the refused slot to be given back")
        assert len(host.boots) == 2
        refusals = [message for message in host.messages() if REFUSED in message]
        assert all("\n" not in message for message in refusals), refusals
        host.write(POLKIT_RULE_PATH, POLKIT_RULE.read_text())
        wait_until(lambda: _released_in_boot(host, 3), 90, "the retried reboot once the rule is back")
    finally:
        monitor.stop()
    assert monitor.violations == []
    messages = host.messages()
    refusals = [message for message in messages if REFUSED in message]
    assert refusals and all("giving the slot back" in message for message in refusals), refusals
    assert not any("Traceback" in message for message in messages)
    assert fleet.status(GROUP)["holders"] == []
