"""The one registry of sources: make_sources builds what LOCKSMITHD_SOURCES names, from sources/ alone."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import pytest

from locksmithd.host.reads import HOST_READS
from locksmithd.core.update_status import NEED_REBOOT, UpdateStatus
from locksmithd.daemon.sources import RebootNeed, make_sources
from locksmithd.settings import load_settings
from locksmithd.sources.check_command import CheckCommandSource
from locksmithd.sources.reboot_required import RebootRequiredWatcher
from locksmithd.sources.update_engine import UpdateEngineSource, status_reason


def status(operation: str, version: str = "") -> UpdateStatus:
    return UpdateStatus(0, 0.0, operation, version, 0)


@pytest.mark.parametrize(("report", "reason"), [
    (status(NEED_REBOOT, "3510.2.0"), "update-engine: version 3510.2.0"),
    (status(NEED_REBOOT), "update-engine"),
    (status("UPDATE_STATUS_IDLE", "3510.2.0"), None),
    (status("UPDATE_STATUS_DOWNLOADING"), None),
])
def test_update_engine_reason(report: UpdateStatus, reason: str | None) -> None:
    assert status_reason(report) == reason


class Strategy:
    reason = ""


def test_make_sources_builds_each_named_source_in_order(tmp_path: Path) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    true = shutil.which("true")
    assert true is not None
    settings = load_settings({"LOCKSMITHD_SOURCES": "command,update-engine,reboot-required",
                              "LOCKSMITHD_REBOOT_CHECK_COMMAND": f"{true} --flag",
                              "LOCKSMITHD_REBOOT_CHECK_INTERVAL": "1h",
                              "LOCKSMITHD_REBOOT_REQUIRED_FILE": str(tmp_path / "reboot-required"),
                              "PATH": "/usr/bin:/bin", "LOCKSMITHD_K8S_NODE": "n1", "LOCKSMITHD_HOOK_TOKEN": "t"},
                             conf_paths=[], machine_id_path=str(machine_id), host=HOST_READS)
    events: list[tuple[str, str]] = []
    strategy = Strategy()
    need = RebootNeed(cast(Any, strategy), lambda kind, source: events.append((kind, source)))
    bus = cast(Any, object())  # not started here: no source touches the bus before start()
    sources = make_sources(settings, need, bus)

    assert [name for name, _ in sources] == ["command", "update-engine", "reboot-required"]
    command, update_engine, reboot_required = (source for _, source in sources)
    assert isinstance(command, CheckCommandSource)
    assert command.argv == (true, "--flag")
    # Built by the loader: the hooks' own variables pass, the daemon's settings and secret-looking names do not.
    assert settings.command_env == {"PATH": "/usr/bin:/bin", "LOCKSMITHD_K8S_NODE": "n1"}
    assert isinstance(reboot_required, RebootRequiredWatcher)
    assert reboot_required.path == str(tmp_path / "reboot-required")
    assert isinstance(update_engine, UpdateEngineSource) and update_engine.bus is bus

    update_engine.on_status(status("UPDATE_STATUS_IDLE"))
    assert events == [] and not need.event.is_set()
    update_engine.on_status(status(NEED_REBOOT, "3510.2.0"))  # each source tells the need under its own name
    assert events == [("reboot-needed", "update-engine")]
    assert strategy.reason == "update-engine: version 3510.2.0"
