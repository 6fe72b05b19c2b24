"""The daemon's Prometheus metrics (prometheus_client) and the group's figures in the same exposition.

Imported only by the daemon's composition root and ``locksmithctl metrics``,
so other commands never load prometheus_client. Values the daemon already
knows (its state, its queue position) are read at scrape time by a
collector; events (errors, reboots, etcd requests) are counted as they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from locksmithd.core.states import State
from locksmithd.observe.group import GroupFigures

# States in which this host has a slot (its own, or the one kept from before the reboot).
HOLDS_SLOT = frozenset({State.HOLDING, State.WARNING_USERS, State.REBOOTING, State.RELEASING,
                        State.CHECKING_HEALTH, State.UNHEALTHY})
ETCD_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# (name without prefix, help, value of the figures); every one labelled with the group.
_GROUP_GAUGES: tuple[tuple[str, str, Callable[[GroupFigures], float | None]], ...] = (
    ("max", "slots in the group's semaphore", lambda f: f.max),
    ("holders", "hosts holding a slot", lambda f: f.holders),
    ("waiters", "hosts queued for a slot (not holding one)", lambda f: f.waiters),
    ("halted", "1 while the group is halted (no host takes a slot)", lambda f: int(f.halted)),
    ("holders_overdue", "holders past their reboot deadline", lambda f: f.overdue),
    ("holders_stale", "holders past their deadline with no live daemon", lambda f: f.stale),
    ("newest_holder_age_seconds", "age of the most recently taken slot (absent without holders)",
     lambda f: f.newest_holder_age_s),
    ("document_corrupt", "1 when the semaphore document or halt record does not decode",
     lambda f: int(f.corrupt)),
)


def group_families(figures: GroupFigures | None, etcd_up: bool | None = None) -> list[Metric]:
    """The ``locksmithd_group_*`` gauges for ``figures`` (none before a first read) and
    ``locksmithd_etcd_up`` when known."""
    families: list[Metric] = []
    for name, text, value in _GROUP_GAUGES if figures is not None else ():
        assert figures is not None
        family = GaugeMetricFamily(f"locksmithd_group_{name}", f"Group: {text}.", labels=["group"])
        figure = value(figures)
        if figure is not None:
            family.add_metric([figures.group], figure)
        families.append(family)
    if etcd_up is not None:
        families.append(GaugeMetricFamily("locksmithd_etcd_up", "1 when the last read of the group from etcd "
                                          "answered.", value=int(etcd_up)))
    return families


class _Static(Collector):
    def __init__(self, families: Callable[[], list[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families()


def group_exposition(figures: GroupFigures) -> bytes:
    """The group's figures in the Prometheus text exposition format (``locksmithctl metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(lambda: group_families(figures, etcd_up=True)))
    return generate_latest(registry)


class DaemonMetrics(Collector):
    """Every metric of one daemon, in its own registry.

    Call ``state_changed`` on each transition, ``event`` for daemon events,
    ``etcd_request`` from the etcd client's observer hook and ``group_read``
    after each read of the group. ``position`` returns (1-based position,
    queue length) while queued, else None; ``handoffs`` the releases seen by
    the queue's watch. ``clock`` is monotonic seconds.
    """

    def __init__(self, group: str, *, position: Callable[[], tuple[int, int] | None] = lambda: None,
                 handoffs: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.group = group
        self._position = position
        self._handoffs = handoffs
        self._clock = clock
        self._state = State.STARTING
        self._wait_started: float | None = None
        self._figures: GroupFigures | None = None
        self._etcd_up: bool | None = None
        self.reboot_needed = Gauge("locksmithd_reboot_needed", "1 once a reboot is needed, by source "
                                   "(update-engine, reboot-required, command).",
                                   ["source"], registry=self.registry)
        self.reboots_requested = Counter("locksmithd_reboots_requested", "Reboots logind accepted from this daemon.",
                                         registry=self.registry)
        self.reboots_done = Counter("locksmithd_reboots", "Coordinated reboots completed: the slot taken before "
                                    "the reboot released in the new boot.", registry=self.registry)
        self.errors = Counter("locksmithd_errors", "Failures the daemon retried, by error kind.", ["kind"],
                              registry=self.registry)
        self.etcd_latency = Histogram("locksmithd_etcd_request_duration_seconds", "etcd requests, by operation "
                                      "and outcome.", ["operation", "outcome"], buckets=ETCD_BUCKETS_S,
                                      registry=self.registry)
        self.registry.register(self)

    @property
    def state(self) -> State:
        """The daemon's current state, as last reported."""
        return self._state

    def state_changed(self, state: State) -> None:
        """Note the new state; the wait for a slot runs from the first queueing until a slot or idle."""
        self._state = state
        if state is State.WAITING_FOR_LOCK and self._wait_started is None:
            self._wait_started = self._clock()
        elif state not in (State.WAITING_FOR_LOCK, State.WAITING_FOR_WINDOW):
            self._wait_started = None

    def event(self, kind: str, detail: str = "") -> None:
        """Count a daemon event: "error" (``detail`` is the error kind), "reboot-requested", "reboot-done",
        "reboot-needed" (``detail`` is the source's name in LOCKSMITHD_SOURCES; only that source's gauge is set)."""
        if kind == "error":
            self.errors.labels(detail or "error").inc()
        elif kind == "reboot-requested":
            self.reboots_requested.inc()
        elif kind == "reboot-done":
            self.reboots_done.inc()
        elif kind == "reboot-needed":
            self.reboot_needed.labels(detail).set(1)

    def etcd_request(self, operation: str, seconds: float, outcome: str) -> None:
        self.etcd_latency.labels(operation, outcome).observe(seconds)

    def group_read(self, figures: GroupFigures | None) -> None:
        """The latest figures, or None when etcd did not answer (``locksmithd_etcd_up`` 0; the last figures
        stay, as Prometheus keeps a series' last value)."""
        self._etcd_up = figures is not None
        if figures is not None:
            self._figures = figures

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily("locksmithd_state", "1 for the daemon's current state, 0 for the others.",
                                  labels=["state"])
        for candidate in State:
            state.add_metric([candidate.value], int(candidate is self._state))
        yield state
        yield GaugeMetricFamily("locksmithd_holding", "1 while this host holds a slot.",
                                value=int(self._state in HOLDS_SLOT))
        position = self._position() if self._state is State.WAITING_FOR_LOCK else None
        queue = GaugeMetricFamily("locksmithd_queue_position", "1-based place in the group's queue while waiting: "
                                  "exact at 1 and 2, an upper bound further back (absent when not queued or not known).")
        if position is not None:
            queue.add_metric([], position[0])
        yield queue
        waited = 0.0 if self._wait_started is None else self._clock() - self._wait_started
        yield GaugeMetricFamily("locksmithd_slot_wait_seconds", "Seconds waited for the current slot so far.",
                                value=waited)
        yield CounterMetricFamily("locksmithd_handoffs_observed", "Slot releases seen by this daemon's queue watch.",
                                  value=self._handoffs())
        yield from group_families(self._figures, self._etcd_up)
