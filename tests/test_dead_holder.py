"""A holder that never comes back is noticed at its deadline even when nobody waits (issue 20).

Real etcd, real private dbus-daemons (fake update_engine, logind and
systemd) and real locksmithd processes whose reboots the harness performs:
max 2, three hosts, the first host's reboot never finishes, the other two
reboot and go idle before its deadline. Then no host is queued, so the head
of the queue cannot act: the daemons' once-a-minute look must, exactly once,
within a minute of the deadline, and the idle daemons' metrics must show it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SemaphoreMonitor, SimulatedHost, wait_for
from harness.ports import free_port
from locksmithd.core.history import HistoryEvent, decode_event
from locksmithd.core.holder_record import new_record
from locksmithd.daemon.group_watch import LOOK_PERIOD_S, GroupWatch
from locksmithd.etcd.keys import alive_key, history_prefix
from locksmithd.etcd.lock import SemaphoreClient
from locksmithd.etcd.stale import StaleHolders, StalePolicy
from locksmithd.observe.group import GroupFigures
from tests.test_metrics import Samples, ctl, try_scrape, value
from tests.test_self_driving import client_for, settled, state

DEADLINE_S = 25  # long enough for the two others to finish first (a queued head would act otherwise)
LOOK_SLACK_S = 10  # a look's own requests and a loaded machine's scheduling
ENV = {"LOCKSMITHD_HEALTH_TIMEOUT": "4s", "LOCKSMITHD_HEALTH_SOAK": "0s", "LOCKSMITHD_RETRY_MAX": "2s",
       "LOCKSMITHD_REBOOT_DEADLINE": f"{DEADLINE_S}s"}


def history(client: SemaphoreClient, kind: str) -> list[HistoryEvent]:
    entries = client.store.read_prefix(history_prefix("", client.key_prefix))  # type: ignore[attr-defined]
    return [event for entry in entries if (event := decode_event(entry.value)).event == kind]


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["halt", "reclaim"])
def test_a_dead_holder_is_noticed_when_nobody_waits(tmp_path: Path, etcd_node: EtcdCluster, key_prefix: str,
                                                    policy: str) -> None:
    """Within a minute of the deadline one idle daemon halts (or reclaims), once; the others see it."""
    assert ctl(etcd_node, key_prefix, "set-max", "2").returncode == 0
    client = client_for(etcd_node, key_prefix)
    monitor = SemaphoreMonitor(etcd_node.client_urls, key_prefix=key_prefix, expected_max=2)
    monitor.start()
    addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    hosts = [SimulatedHost(f"dh-{i}", tmp_path / f"h{i}", etcd_node.client_urls, reboot_delay_s=0.5,
                           options=HostOptions(key_prefix=key_prefix, extra_env={
                               **ENV, "LOCKSMITHD_STALE_POLICY": policy, "LOCKSMITHD_METRICS_ADDRESS": addresses[i]}))
             for i in range(3)]
    dead, alive = hosts[0], hosts[1:]
    scrapes: dict[str, Samples] = {}

    def scraped(check: str) -> bool:
        """Every idle daemon's latest scrape passes ``check`` (kept in ``scrapes`` for the asserts)."""
        for host, address in zip(alive, addresses[1:]):
            samples = try_scrape(address)
            if samples is None:
                return False
            scrapes[host.name] = samples
        return all(passes(samples, check) for samples in scrapes.values())

    def passes(samples: Samples, check: str) -> bool:
        figure = {name: value(samples, f"locksmithd_group_{name}", group="")
                  for name in ("holders", "holders_overdue", "holders_stale", "halted")}
        if check == "stale":
            return figure == {"holders": 1, "holders_overdue": 1, "holders_stale": 1, "halted": 1}
        return figure == {"holders": 0, "holders_overdue": 0, "holders_stale": 0, "halted": 0}

    async def scenario() -> float:
        await asyncio.gather(*(host.start() for host in hosts))
        try:
            await wait_for(lambda: all(state(h) == "idle" for h in hosts), 30, "every daemon idle")
            dead.auto_restart = False  # its reboot never finishes
            dead.need_reboot()
            await wait_for(lambda: len(dead.logind.reboots) == 1, 20, "the dead host's reboot")
            record = client.read().semaphore.record(dead.name)
            assert record is not None and record.deadline is not None
            for host in alive:
                host.need_reboot()
            await wait_for(lambda: all(settled(h) for h in alive), DEADLINE_S, "the others done before the deadline")
            assert datetime.now(timezone.utc) < record.deadline, "too slow: the head of the queue may have acted"
            assert client.read().semaphore.holders == (dead.name,) and client.read().halt is None
            # Nobody waits now. Within a minute of the deadline one look acts.
            until_s = (record.deadline - datetime.now(timezone.utc)).total_seconds() + LOOK_PERIOD_S + LOOK_SLACK_S
            if policy == "halt":
                await wait_for(lambda: client.read().halt is not None, until_s, "the halt")
            else:
                await wait_for(lambda: dead.name not in client.read().semaphore.holders, until_s, "the reclaim")
            acted_after_s = (datetime.now(timezone.utc) - record.deadline).total_seconds()
            # Each idle daemon looks at least once a minute: by then both have seen the outcome.
            await wait_for(lambda: scraped("stale" if policy == "halt" else "clear"), LOOK_PERIOD_S + LOOK_SLACK_S,
                           "the idle daemons' metrics", interval_s=1.0)
            assert all(state(h) == "idle" for h in alive)
            assert [len(h.logind.reboots) for h in hosts] == [1, 1, 1]
            return acted_after_s
        finally:
            await asyncio.gather(*(host.stop() for host in hosts))

    try:
        started = time.monotonic()
        acted_after_s = asyncio.run(scenario())
        assert 0 <= acted_after_s <= LOOK_PERIOD_S + LOOK_SLACK_S, acted_after_s
        actors = {alive[0].machine_id, alive[1].machine_id}
        if policy == "halt":
            halt = client.read().halt
            assert halt is not None and halt.by in actors, halt
            assert halt.reason.startswith(f"did not come back: {dead.name} (")
            events = history(client, "halt")
            assert len(events) == 1 and events[0].host == halt.by and events[0].detail == halt.reason, events
            assert client.read().semaphore.holders == (dead.name,)  # a halt keeps the slot: a human decides
        else:
            events = history(client, "reclaim")
            assert len(events) == 1 and events[0].host == dead.name, events
            assert events[0].detail.rsplit("by ", 1)[1] in actors, events
            assert client.read().semaphore.holders == () and client.read().halt is None
        for samples in scrapes.values():
            assert value(samples, "locksmithd_state", state="idle") == 1
            assert value(samples, "locksmithd_etcd_up") == 1
            assert value(samples, "locksmithd_group_max", group="") == 2
            assert value(samples, "locksmithd_group_waiters", group="") is None  # only holders and the head count
        assert monitor.violations == [] and monitor.max_holders_seen <= 2
        assert time.monotonic() - started < 150
    finally:
        monitor.stop()
        client.store.close()  # type: ignore[attr-defined]


# -- the look itself, against real etcd (fast) ------------------------------------------------

def plant_holder(client: SemaphoreClient, holder: str, late_s: float) -> None:
    """``holder`` took a slot whose deadline passed ``late_s`` ago (negative: still to come); no alive key."""
    now = datetime.now(timezone.utc)
    record = new_record(now=now - timedelta(seconds=late_s + 60), deadline_after=timedelta(seconds=60),
                        hostname=holder, source="locksmithd")
    client.lock(holder, record.to_info())


def watch_of(client: SemaphoreClient, policy: StalePolicy, actor: str, seen: list[GroupFigures | None],
             busy: Callable[[], bool] = lambda: False) -> GroupWatch:
    stale = StaleHolders(client, policy, actor, lambda: datetime.now(timezone.utc))
    return GroupWatch(stale, busy=busy, seen=seen.append, rng=random.Random(7))


@pytest.mark.parametrize("policy", [StalePolicy.HALT, StalePolicy.RECLAIM])
def test_looks_act_once_however_many_daemons_look_together(etcd_node: EtcdCluster, key_prefix: str,
                                                           policy: StalePolicy) -> None:
    """Eight daemons look at the same moment: one halt (or reclaim) event; every look reports what it saw."""
    client = client_for(etcd_node, key_prefix)
    try:
        client.set_max(2)
        plant_holder(client, "gone", late_s=5)
        plant_holder(client, "fine", late_s=-3600)
        seen: list[GroupFigures | None] = []
        watches = [watch_of(client, policy, f"idle-{i}", seen) for i in range(8)]

        async def together() -> list[GroupFigures | None]:
            return list(await asyncio.gather(*(asyncio.to_thread(watch.look) for watch in watches)))

        figures = asyncio.run(together())
        assert all(f is not None and f.waiters is None and f.max == 2 for f in figures), figures
        if policy is StalePolicy.HALT:
            assert len(history(client, "halt")) == 1
            halt = client.read().halt
            assert halt is not None and halt.by.startswith("idle-") and "gone" in halt.reason
            assert "fine" not in halt.reason
            assert set(client.read().semaphore.holders) == {"gone", "fine"}
            assert all(f is not None and (f.halted, f.overdue, f.stale) == (True, 1, 1) for f in figures), figures
        else:
            assert len(history(client, "reclaim")) == 1
            assert client.read().semaphore.holders == ("fine",) and client.read().halt is None
            assert all(f is not None and (f.holders, f.overdue, f.stale) == (1, 0, 0) for f in figures), figures
        # A later look changes nothing.
        assert watches[0].look() is not None
        assert len(history(client, "halt" if policy is StalePolicy.HALT else "reclaim")) == 1
    finally:
        client.store.close()  # type: ignore[attr-defined]


def test_a_look_reports_but_never_acts_on_a_live_or_timely_holder(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Past its deadline with its daemon alive: counted overdue, not stale; no halt, no event."""
    client = client_for(etcd_node, key_prefix)
    try:
        client.set_max(2)
        plant_holder(client, "busy", late_s=5)
        client.store.put(alive_key("busy", "", key_prefix), b"busy")  # its daemon lives (the lease is the test's)
        plant_holder(client, "early", late_s=-3600)
        seen: list[GroupFigures | None] = []
        figures = watch_of(client, StalePolicy.RECLAIM, "idle", seen).look()
        assert figures is not None and (figures.holders, figures.overdue, figures.stale) == (2, 1, 0)
        assert set(client.read().semaphore.holders) == {"busy", "early"} and client.read().halt is None
        assert history(client, "reclaim") == [] and history(client, "halt") == []
    finally:
        client.store.close()  # type: ignore[attr-defined]


def test_a_look_leaves_its_own_slot_and_a_halted_group_alone(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Its own slot past the deadline (just booted, alive key not back yet) is not stale to a daemon; and
    while the group is halted nothing is reclaimed, as at the head of the queue."""
    client = client_for(etcd_node, key_prefix)
    try:
        client.set_max(2)
        plant_holder(client, "me", late_s=5)
        seen: list[GroupFigures | None] = []
        figures = watch_of(client, StalePolicy.HALT, "me", seen).look()
        assert figures is not None and (figures.stale, figures.halted) == (1, False)  # counted, not acted on
        assert client.read().halt is None and history(client, "halt") == []
        assert watch_of(client, StalePolicy.HALT, "other", seen).look() is not None
        assert client.read().halt is not None and len(history(client, "halt")) == 1
        figures = watch_of(client, StalePolicy.RECLAIM, "third", seen).look()
        assert figures is not None and (figures.stale, figures.halted) == (1, True)
        assert client.read().semaphore.holders == ("me",) and history(client, "reclaim") == []
    finally:
        client.store.close()  # type: ignore[attr-defined]


def test_the_watch_looks_at_least_once_a_minute_unless_queued() -> None:
    """Every pause is at most a minute (the first one too), and a busy (queued) daemon does not look."""
    pauses: list[float] = []
    looks: list[str] = []
    busy = [False, True, False, True, False]

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) > len(busy):
            raise Stop

    watch = GroupWatch(StaleHolders(None, StalePolicy.HALT, "x", lambda: datetime.now(timezone.utc)),  # type: ignore[arg-type]
                       busy=lambda: busy[len(pauses) - 1], seen=lambda f: looks.append(f"seen {f}"),
                       rng=random.Random(3), sleep=sleep)
    watch.look = lambda: None  # type: ignore[method-assign]  # what a look reads is tested above

    with pytest.raises(Stop):
        asyncio.run(watch.run())
    assert all(0 <= pause <= LOOK_PERIOD_S for pause in pauses) and min(pauses[1:]) >= 0.75 * LOOK_PERIOD_S
    assert looks == ["seen None"] * busy.count(False)
