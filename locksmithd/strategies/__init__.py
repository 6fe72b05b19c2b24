"""Reboot strategies behind one interface, in one registry keyed by label."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from locksmithd.core.strategy_labels import ALIASES, LABELS, resolve_label
from locksmithd.strategies.base import RebootStrategy

if TYPE_CHECKING:
    from locksmithd.settings import DaemonSettings

Factory = Callable[["DaemonSettings"], RebootStrategy]


def _off(settings: DaemonSettings) -> RebootStrategy:
    from locksmithd.strategies.off import OffStrategy

    return OffStrategy()


def _reboot(settings: DaemonSettings) -> RebootStrategy:
    from locksmithd.strategies.reboot import ImmediateRebootStrategy

    return ImmediateRebootStrategy()


def _etcd_lock(settings: DaemonSettings) -> RebootStrategy:
    # Imported here: the etcd client loads gRPC, which "off" and "reboot" never need.
    import math
    import socket

    from locksmithd.etcd.client import EtcdStore
    from locksmithd.strategies.etcd_lock import EtcdLockStrategy

    return EtcdLockStrategy(EtcdStore(settings.etcd), settings.machine_id, settings.group, settings.etcd.key_prefix,
                            hostname=socket.gethostname(),
                            reboot_deadline_s=settings.reboot_deadline_s, stale_policy=settings.stale_policy,
                            recheck_interval_s=settings.recheck_interval_s, retry_max_s=settings.retry_max_s,
                            lease_ttl_s=math.ceil(settings.queue_drop_out_s),
                            head_timeout_s=settings.queue_head_timeout_s)


def _fleet_lock(settings: DaemonSettings) -> RebootStrategy:
    from locksmithd.strategies.fleet_lock import FleetLockStrategy

    assert settings.fleetlock_url is not None  # the loader requires it with this strategy
    return FleetLockStrategy(settings.fleetlock_url, settings.machine_id, settings.fleetlock_group,
                             poll_max_s=settings.retry_max_s)


REGISTRY: Mapping[str, Factory] = {"etcd-lock": _etcd_lock, "fleet-lock": _fleet_lock, "reboot": _reboot,
                                   "off": _off}
"""Every strategy's factory, by the label operators write in REBOOT_STRATEGY (``core.strategy_labels.LABELS``)."""

__all__ = ["ALIASES", "LABELS", "REGISTRY", "Factory", "make_strategy", "resolve_label"]


def make_strategy(settings: DaemonSettings) -> RebootStrategy:
    """Build the strategy ``settings.strategy`` names.

    ``settings.strategy`` was checked against ``REGISTRY`` by the settings
    loader (``resolve_label``), so every label it can hold has a factory.
    """
    return REGISTRY[settings.strategy](settings)
