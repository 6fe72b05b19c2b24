"""The demo's closing report: per host, safety, and with --break the halt and the resume."""

from __future__ import annotations

from dataclasses import dataclass, field

from demo_break import BreakOutcome
from demo_fleet import DemoFleet

LOG_TAIL_LINES = 15


@dataclass
class Outcome:
    """How the run ended: filled in by the rollout, read by the summary."""

    updates_at_s: float | None = None
    done_at_s: float | None = None
    back_at_s: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    broken: BreakOutcome | None = None  # with --break


def summary(fleet: DemoFleet, outcome: Outcome, status_text: str) -> list[str]:
    """The closing report; also fills ``outcome.problems`` with reboot-count and safety failures."""
    lines = ["", "Summary", f"{'HOST':<10} {'REBOOTS':>7} {'REBOOTED AT':>12} {'BACK AT':>9} {'BOOTS':>6}"]
    for host in fleet.hosts:
        at = f"{host.reboot_times[0] - fleet.started_s:.2f}s" if host.reboot_times else "-"
        back = outcome.back_at_s.get(host.name)
        lines.append(f"{host.name:<10} {len(host.reboot_times):>7} {at:>12} "
                     f"{f'{back:.2f}s' if back is not None else '-':>9} {host.boots:>6}")
        if len(host.reboot_times) != 1:
            outcome.problems.append(f"{host.name} rebooted {len(host.reboot_times)} times, not once")
    violations = list(fleet.monitor.violations)  # holders > max, or a max other than --max
    outcome.problems += violations
    once = all(len(host.reboot_times) == 1 for host in fleet.hosts)
    lines.append(f"every host rebooted once: {'yes' if once else 'NO'}")
    lines.append(f"most holders at once: {fleet.monitor.max_holders_seen} (max {fleet.args.max})")
    if outcome.broken is not None:
        lines += outcome.broken.summary_lines()
        outcome.problems += outcome.broken.problems()
    if outcome.updates_at_s is not None and outcome.done_at_s is not None:
        lines.append(f"rollout: {outcome.done_at_s - outcome.updates_at_s:.2f}s from update to all back idle")
    lines.append(f"total time: {fleet.now_s():.2f}s")
    lines.append("violations: " + ("none" if not violations else "; ".join(violations)))
    lines += ["", "locksmithctl status:", *(("  " + line).rstrip() for line in status_text.splitlines())]
    lines.append("")
    lines.append("result: " + ("OK" if not outcome.problems else "FAILED: " + "; ".join(outcome.problems)))
    return lines


def log_tails(fleet: DemoFleet) -> list[str]:
    """The last lines of the log of each host that did not reboot exactly once."""
    lines: list[str] = []
    for host in fleet.hosts:
        if len(host.reboot_times) != 1 or host.boots != 2:
            tail = host.log_text().splitlines()[-LOG_TAIL_LINES:]
            where = host.workdir / "locksmithd.log" if fleet.args.keep_dir else f"{host.name}'s locksmithd log"
            lines += ["", f"last lines of {where}:", *("  " + t for t in tail)]
    return lines
