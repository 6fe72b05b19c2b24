"""Scenarios 1, 6 and 7 on real systemd hosts: a rollout at max 1, its journal, its hooks; and its figures."""

from __future__ import annotations

import time
from typing import Any

from harness.fleet import SemaphoreMonitor
from harness.real_fleet import RealFleet, entry_time, events, record_figures, released_after_reboot, wait_until
from harness.real_host import REBOOT_EXIT, RealHost

GROUP = "e2e-rollout"
EVENTS_ONCE = ("reboot-needed", "slot-taken", "reboot-requested", "slot-released", "reboot-done")
MESSAGE_IDS = {
    "reboot-needed": "bf7cf1b965434db89d2cb16fb36eceeb",
    "slot-taken": "1f27f45d78ab426ca14f281f2fbc121a",
    "reboot-requested": "3985772a2ae04d10b1706e3d65ff0c43",
    "slot-released": "9070c4891e3b4e1f94ef2ffe4798c711",
    "reboot-done": "b215b27408e24665bb6de0a4ff708ea0",
}
PRE_HOOK = "#!/bin/sh\necho \"pre-reboot hook: draining $(hostname)\"\n"
POST_HOOK = "#!/bin/sh\necho \"post-boot hook: back on $(hostname)\"\n"
ROLLOUT_TIMEOUT_S = 150.0
FALLBACK_RECHECK = "10m"  # longer than every wait here: only systemd's signals can wake the health checks in time


def _hosts(fleet: RealFleet) -> list[RealHost]:
    # The fallback re-check is far off: a host must release because it follows systemd's state as it changes.
    settings = {"LOCKSMITHD_GROUP": GROUP, "LOCKSMITHD_SOURCES": "update-engine,reboot-required",
                "LOCKSMITHD_HEALTH_RECHECK_INTERVAL": FALLBACK_RECHECK}
    hooks = {"etc/locksmithd/pre-reboot.d/10-drain": (PRE_HOOK, 0o755),
             "etc/locksmithd/post-boot.d/10-uncordon": (POST_HOOK, 0o755)}
    return [fleet.add(f"e2e-roll-{name}", settings, files=hooks) for name in "abc"]


def _boot_ids(host: RealHost) -> list[str]:
    """The distinct _BOOT_IDs of the host's locksmithd entries, in order."""
    seen: list[str] = []
    for entry in host.journal("-u", host.unit):
        if entry["_BOOT_ID"] not in seen:
            seen.append(entry["_BOOT_ID"])
    return seen


def _first(entries: list[dict[str, Any]], predicate: Any) -> dict[str, Any]:
    found = [entry for entry in entries if predicate(entry)]
    assert found, "no matching journal entry"
    return found[0]


def test_rollout_one_at_a_time_with_health_hooks_and_journal(fleet: RealFleet) -> None:
    """3 hosts at max 1 each reboot once for real, pass their health checks after the new boot and release.

    One host learns the need from update_engine's signal on the real system
    bus (``locksmithctl send-need-reboot``), two from /run/reboot-required.
    Throughout, etcd never shows more than one holder.
    """
    hosts = _hosts(fleet)
    fleet.ctl("set-max", "1", group=GROUP)
    monitor = SemaphoreMonitor([fleet.endpoint], group=GROUP, expected_max=1)
    monitor.start()
    try:
        fleet.boot_all()
        for host in hosts:
            wait_until(lambda host=host: any("state starting -> " in m for m in host.messages()), 30,
                       f"locksmithd running on {host.name}")
        started = time.monotonic()
        hosts[0].run(["locksmithctl", "send-need-reboot"])
        for host in hosts[1:]:
            host.run(["touch", "/run/reboot-required"])
        for host in hosts:
            wait_until(lambda host=host: len(host.boots) >= 2 and released_after_reboot(host),
                       ROLLOUT_TIMEOUT_S, f"{host.name} rebooted and released")
        rollout_s = time.monotonic() - started
    finally:
        monitor.stop()

    assert monitor.violations == []
    assert monitor.max_holders_seen == 1
    assert fleet.status(GROUP)["holders"] == []
    for host in hosts:
        assert len(host.boots) == 2, f"{host.name} booted {len(host.boots)} times"
        assert host.boots[0].exit_code == REBOOT_EXIT
        boot_ids = _boot_ids(host)
        assert len(boot_ids) == 2, f"{host.name}: locksmithd ran in boots {boot_ids}"
        messages = host.messages()
        # The new boot is recognised as one: health checks, then the release (not "same boot").
        assert not any("taken in this boot" in message for message in messages), messages
        assert any("releasing it once the host is healthy" in message for message in messages), messages
        _check_events_once(host, boot_ids)
        _check_hooks(host, boot_ids)
    assert _reboot_needed_source(hosts[0]) == "update-engine"
    assert {_reboot_needed_source(host) for host in hosts[1:]} == {"reboot-required"}
    _print_figures(hosts, rollout_s)




def _reboot_needed_source(host: RealHost) -> str:
    (entry,) = events(host, "reboot-needed")
    return str(entry["MESSAGE"]).rsplit("source: ", 1)[-1].rstrip(")")


def _check_events_once(host: RealHost, boot_ids: list[str]) -> None:
    """Scenario 6: each documented event exactly once, with its MESSAGE_ID and the LOCKSMITHD_* fields."""
    seen = events(host)
    kinds = [entry["LOCKSMITHD_EVENT"] for entry in seen]
    for kind in EVENTS_ONCE:
        assert kinds.count(kind) == 1, f"{host.name}: {kind} logged {kinds.count(kind)} times: {kinds}"
    assert "health-failed" not in kinds
    for entry in seen:
        assert entry["MESSAGE_ID"] == MESSAGE_IDS[entry["LOCKSMITHD_EVENT"]], entry
        assert entry["LOCKSMITHD_GROUP"] == GROUP
        assert entry["LOCKSMITHD_HOLDER"] == host.machine_id
        assert entry["LOCKSMITHD_STATE"], entry
    by_kind = {entry["LOCKSMITHD_EVENT"]: entry for entry in seen}
    assert by_kind["reboot-requested"]["_BOOT_ID"] == boot_ids[0]
    assert by_kind["reboot-done"]["_BOOT_ID"] == boot_ids[1]


def _check_hooks(host: RealHost, boot_ids: list[str]) -> None:
    """Scenario 7: the pre-reboot hook ran before the reboot, the post-boot hook after it, output in the journal."""
    entries = host.journal("-u", host.unit)
    pre = _first(entries, lambda e: "pre-reboot hook: draining" in str(e.get("MESSAGE", "")))
    post = _first(entries, lambda e: "post-boot hook: back on" in str(e.get("MESSAGE", "")))
    requested = _first(entries, lambda e: e.get("LOCKSMITHD_EVENT") == "reboot-requested")
    released = _first(entries, lambda e: e.get("LOCKSMITHD_EVENT") == "slot-released")
    assert pre["_BOOT_ID"] == boot_ids[0] and post["_BOOT_ID"] == boot_ids[1]
    assert entry_time(pre) <= entry_time(requested) <= entry_time(post) <= entry_time(released)


def _print_figures(hosts: list[RealHost], rollout_s: float) -> None:
    """Per host: reboot time (logind call to the daemon up in the new boot) and boot-to-release; the rollout."""
    reboot_s: list[float] = []
    booted_s: list[float] = []
    lines = []
    first_taken, last_released = float("inf"), 0.0
    for host in hosts:
        entries = host.journal("-u", host.unit)
        boot_ids = _boot_ids(host)
        requested = _first(entries, lambda e: e.get("LOCKSMITHD_EVENT") == "reboot-requested")
        up = _first(entries, lambda e: e["_BOOT_ID"] == boot_ids[1])
        released = [e for e in entries if e.get("LOCKSMITHD_EVENT") == "slot-released"][-1]
        taken = _first(entries, lambda e: e.get("LOCKSMITHD_EVENT") == "slot-taken")
        system = host.journal("-b", "0", "_PID=1")
        finished = [e for e in system if str(e.get("MESSAGE", "")).startswith("Startup finished")]
        ready_at = entry_time(finished[-1]) if finished else entry_time(up)
        reboot_s.append(entry_time(up) - entry_time(requested))
        booted_s.append(ready_at - entry_time(requested))
        first_taken = min(first_taken, entry_time(taken))
        last_released = max(last_released, entry_time(released))
        lines.append(f"  {host.name}: reboot {reboot_s[-1]:.2f}s (logind call -> daemon up; "
                     f"{booted_s[-1]:.2f}s to systemd up), boot-to-release {entry_time(released) - ready_at:.2f}s "
                     f"(systemd up -> released; {entry_time(released) - entry_time(up):.2f}s from daemon up)")
    span_s = last_released - first_taken
    record_figures("rollout (3 hosts, max 1, health soak 0):\n" + "\n".join(lines))
    record_figures(f"  rollout {span_s:.2f}s (first slot taken -> last released; {rollout_s:.1f}s from the first "
                   f"need); sum of reboots {sum(reboot_s):.2f}s -> ratio {span_s / sum(reboot_s):.2f}x; "
                   f"sum of reboots to systemd up {sum(booted_s):.2f}s -> ratio {span_s / sum(booted_s):.2f}x")
