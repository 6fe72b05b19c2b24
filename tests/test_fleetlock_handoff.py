"""Our FleetLock client's pace, with real daemons and a real server: a freed slot is taken within a second."""

from __future__ import annotations

import asyncio
import re
import statistics
from pathlib import Path

import pytest

from harness.checker import Observation
from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from locksmithd.core.fleetlock_protocol import poll_pause_s, queue_place
from tests.fleetlock_support import base_url, running_server


def _host(name: str, tmp_path: Path, url: str) -> SimulatedHost:
    # LOCKSMITHD_RETRY_MAX 30s: a backoff towards it would leave freed slots idle for seconds;
    # the pace must come from the place the server names.
    options = HostOptions(strategy="fleet-lock", retry_max="30s", extra_env={"LOCKSMITHD_FLEETLOCK_URL": url})
    return SimulatedHost(name, tmp_path / name, ["http://127.0.0.1:9"], options=options, reboot_delay_s=3.0)


def _settled(host: SimulatedHost) -> bool:
    return len(host.logind.reboots) >= 1 and host.boots >= 2 and host.daemon_state().get("DAEMON_STATE") == "idle"


def handoff_gaps_s(history: list[Observation]) -> list[float]:
    """Seconds from each observed release (holders none) to the next observed take."""
    gaps, freed_at = [], None
    for seen in history:
        if not seen.holders and freed_at is None:
            freed_at = seen.at
        elif seen.holders and freed_at is not None:
            gaps.append(seen.at - freed_at)
            freed_at = None
    return gaps


def test_the_pace_follows_the_place() -> None:
    """Head: every 0.5 s; 0.5 s more per place; never beyond LOCKSMITHD_RETRY_MAX; the place is read from
    our server's refusal text, and other servers' texts name none."""
    assert [poll_pause_s(n, 30.0) for n in (1, 2, 3, 10, 1000)] == [0.5, 1.0, 1.5, 5.0, 30.0]
    assert poll_pause_s(1, 0.1) == 0.5
    assert queue_place("semaphore currently full, all slots are locked already (1 of max 1); "
                       "queued at position 3 of 7") == (3, 7)
    assert queue_place("failed to acquire lock") is None


@pytest.mark.slow
def test_four_fleet_lock_daemons_take_a_freed_slot_within_a_second(tmp_path: Path, etcd_node: EtcdCluster,
                                                                   key_prefix: str) -> None:
    """Four daemons with REBOOT_STRATEGY=fleet-lock at one slot: the median handoff (a release seen in etcd
    to the next take seen) is under 1 s; refusals are INFO lines, one per place (and kind), and no daemon claims a
    slot from before this boot."""
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=1)
    monitor.start()

    async def scenario() -> list[SimulatedHost]:
        async with running_server(etcd_node.client_urls, key_prefix) as server:
            hosts = [_host(f"fl-pace-{i}", tmp_path, base_url(server)) for i in range(4)]
            await asyncio.gather(*(h.start() for h in hosts))
            try:
                await wait_for(lambda: all(h.daemon_state().get("DAEMON_STATE") == "idle" for h in hosts), 30,
                               "idle")
                for host in hosts:
                    host.need_reboot()
                await wait_for(lambda: all(_settled(h) for h in hosts), 60, "every host rebooted")
            finally:
                await asyncio.gather(*(h.stop() for h in hosts))
            return hosts

    try:
        hosts = asyncio.run(scenario())
        assert monitor.violations == []
        gaps = handoff_gaps_s(monitor.history)
        assert len(gaps) == 3, monitor.history
        print(f"handoff gaps (s): {[round(gap, 3) for gap in gaps]}")
        assert statistics.median(gaps) < 1.0, gaps
    finally:
        monitor.stop()
    refused = 0
    for host in hosts:
        text = host.log_text()
        assert "holding the slot taken before this reboot" not in text
        refusals = [line for line in text.splitlines() if "no slot yet" in line]
        places = {re.search(r"answered 409 (\S+):.*position (\d+)", line).groups()  # type: ignore[union-attr]
                  for line in refusals}
        assert len(refusals) == len(places), refusals  # logged again only when the place (or kind) changed
        assert all(" INFO " in line for line in refusals), refusals
        refused += len(refusals)
    assert refused >= 3  # the three hosts that waited said so
