"""contrib/prometheus alert rules (promtool test rules) and the Grafana dashboard name metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from locksmithd.core.states import State
from locksmithd.observe.group import GroupFigures
from locksmithd.observe.metrics import DaemonMetrics

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "alerts_test.yml"
DASHBOARD = CONTRIB / "grafana" / "locksmithd-dashboard.json"
METRIC = re.compile(r"\blocksmithd_[a-z_]+")
ALERTS = ("LocksmithRolloutStalled", "LocksmithGroupHalted", "LocksmithHolderPastDeadline",
          "LocksmithdCannotReachEtcd", "LocksmithDocumentCorrupt")


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool is missing: contrib/bootstrap.sh installs Debian's prometheus package"
    return path


def exported_names() -> set[str]:
    """Every sample name a daemon exports once each kind of value has been seen."""
    metrics = DaemonMetrics("web", position=lambda: (2, 5), handoffs=lambda: 3)
    metrics.state_changed(State.WAITING_FOR_LOCK)
    for kind, detail in (("error", "unavailable"), ("reboot-needed", "update-engine"), ("reboot-requested", ""),
                         ("reboot-done", "")):
        metrics.event(kind, detail)
    metrics.etcd_request("read", 0.01, "ok")
    metrics.group_read(GroupFigures("web", max=2, holders=1, waiters=3, newest_holder_age_s=12.0))
    text = metrics.exposition().decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_alert_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_alert_rules_fire_when_they_should_and_only_then() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    rules = RULES.read_text()
    tests = RULE_TESTS.read_text()
    assert re.findall(r"- alert: (\w+)", rules) == list(ALERTS)
    for alert in ALERTS:
        cases = re.findall(rf"alertname: {alert}\n\s+exp_alerts:( \[\]|\n\s+- exp_labels)", tests)
        assert " []" in cases and any(case.strip() == "- exp_labels" for case in cases), alert


def test_rules_and_dashboard_name_exported_metrics() -> None:
    names = exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    exprs.append(dashboard["templating"]["list"][1]["query"])
    used = {name for text in [*exprs, RULES.read_text()] for name in METRIC.findall(text)}
    assert used, "no metric found: the check would be vacuous"
    assert used - names == set(), f"not exported: {sorted(used - names)}"
    # The dashboard shows every metric family the daemon exports.
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in names}
    shown = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert families - shown == set(), f"not on the dashboard or in a rule: {sorted(families - shown)}"


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
