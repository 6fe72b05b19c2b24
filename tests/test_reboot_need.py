"""One "reboot-needed" event per need, naming its real source: the daemon's own pieces wired as main.py wires them.

A real Daemon (fake strategy and logind), the real RebootNeed, the real
reboot-required watcher (inotify on a temporary directory), the real Observers
with metrics, and the journal listener sending through a JournalHandler whose
sender records each entry (no journald here; see tests/test_journal_fields.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from locksmithd.daemon.observing import Observers
from locksmithd.daemon.sources import RebootNeed
from locksmithd.host.journal_events import MESSAGE_IDS, JournalFields, journal_listener
from locksmithd.settings import load_settings
from locksmithd.sources.reboot_required import RebootRequiredWatcher
from tests.test_daemon_unit import T0, FakeClock, FakeRebooter, FakeStrategy, Publisher, settings_for
from tests.test_journal_fields import sent  # noqa: F401  # the recording journal fixture

from locksmithd.daemon.run import Daemon

NEEDED_ID = MESSAGE_IDS["reboot-needed"]


def needed_gauges(observers: Observers) -> dict[str, float]:
    """{source: value} of ``locksmithd_reboot_needed`` in the exposition."""
    assert observers.metrics is not None
    text = observers.metrics.exposition().decode()
    return {sample.labels["source"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "locksmithd_reboot_needed"}


def test_reboot_required_need_is_one_event_naming_its_source(tmp_path: Path, sent: list[dict[str, Any]]) -> None:
    """Only the reboot-required source: the file appears, the daemon goes all the way to the reboot, and
    the journal holds exactly one reboot-needed entry (source reboot-required); update_engine's gauge is never set."""
    fields: JournalFields = sent.pop()["_fields"]
    settings = load_settings({"LOCKSMITHD_MACHINE_ID": "h1", "LOCKSMITHD_METRICS_ADDRESS": "127.0.0.1:9474",
                              "LOCKSMITHD_SOURCES": "reboot-required"}, conf_paths=[])
    clock = FakeClock(T0)
    strategy = FakeStrategy(clock)
    rebooter = FakeRebooter()
    observers = Observers(settings, strategy)  # type: ignore[arg-type]
    observers.add_listener(journal_listener(fields))
    need = RebootNeed(strategy, observers.event)  # type: ignore[arg-type]
    daemon = Daemon(strategy, rebooter, settings=settings_for(), publisher=Publisher(),  # type: ignore[arg-type]
                    reboot_needed=need.event, now=clock, sleep=clock.sleep, on_event=observers.event)
    watcher = RebootRequiredWatcher(str(tmp_path / "reboot-required"), need.of("reboot-required"))

    async def scenario() -> None:
        await watcher.start()
        task = asyncio.create_task(daemon.run())
        try:
            for _ in range(100):  # the daemon idles, waking as the loop turns
                await asyncio.sleep(0)
            assert daemon.state.value == "idle" and needed_gauges(observers) == {}
            (tmp_path / "reboot-required").write_text("*** System restart required ***\n")
            async with asyncio.timeout(5):
                while rebooter.reboots == 0:
                    await asyncio.sleep(0.01)
            need.needed("command", "command: check exited 1")  # a later need from another source: not an event
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await watcher.stop()

    asyncio.run(scenario())
    needed = [entry for entry in sent if entry.get("MESSAGE_ID") == NEEDED_ID]
    assert len(needed) == 1, needed
    assert needed[0]["LOCKSMITHD_EVENT"] == "reboot-needed"
    assert needed[0]["MESSAGE"] == "a reboot is needed (source: reboot-required)"
    assert needed_gauges(observers) == {"reboot-required": 1.0}
    assert getattr(strategy, "reason") == f"reboot-required: {tmp_path / 'reboot-required'}"


def test_each_source_sets_only_its_own_gauge(sent: list[dict[str, Any]]) -> None:
    """Whichever source is first is the one named; the others never set a gauge or write an entry."""
    for first in ("update-engine", "reboot-required", "command"):
        settings = load_settings({"LOCKSMITHD_MACHINE_ID": "h1", "LOCKSMITHD_METRICS_ADDRESS": "127.0.0.1:9474"},
                                 conf_paths=[])
        strategy = FakeStrategy(FakeClock(T0))
        observers = Observers(settings, strategy)  # type: ignore[arg-type]
        events: list[tuple[str, str]] = []
        observers.add_listener(lambda kind, detail: events.append((kind, detail)))
        need = RebootNeed(strategy, observers.event)  # type: ignore[arg-type]
        need.of(first)(f"{first}: first")
        for other in ("update-engine", "reboot-required", "command"):
            need.needed(other, f"{other}: later")
        assert events == [("reboot-needed", first)]
        assert needed_gauges(observers) == {first: 1.0}
        assert getattr(strategy, "reason") == f"{first}: first" and need.event.is_set()
