"""Reboot strategies behind one interface, in one registry keyed by label.

Each factory takes its strategy's config slice (``core/strategy_config.py``, built by the settings
loader) and the facts of the host the composition root reads (``daemon/main.py``); never the daemon's
whole settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from locksmithd.core.strategy_config import EtcdLockConfig, FleetLockConfig, StrategyConfig
from locksmithd.core.strategy_labels import ALIASES, ETCD_LOCK, FLEET_LOCK, LABELS, OFF, REBOOT, resolve_label
from locksmithd.strategies.base import RebootStrategy

Factory = Callable[[StrategyConfig, str], RebootStrategy]
"""(the strategy's config slice, this host's name) -> the strategy, not yet connected."""


def _off(config: StrategyConfig, hostname: str) -> RebootStrategy:
    from locksmithd.strategies.off import OffStrategy

    return OffStrategy()


def _reboot(config: StrategyConfig, hostname: str) -> RebootStrategy:
    from locksmithd.strategies.reboot import ImmediateRebootStrategy

    return ImmediateRebootStrategy()


def _etcd_lock(config: StrategyConfig, hostname: str) -> RebootStrategy:
    # Imported here: the etcd client loads gRPC, which "off" and "reboot" never need.
    from locksmithd.etcd.client import EtcdStore
    from locksmithd.strategies.etcd_lock import EtcdLockStrategy

    assert isinstance(config, EtcdLockConfig), "the loader builds etcd-lock's slice"
    return EtcdLockStrategy(EtcdStore(config.etcd), config.holder, config.group, config.etcd.key_prefix,
                            hostname=hostname, reboot_deadline_s=config.reboot_deadline_s,
                            stale_policy=config.stale_policy, recheck_interval_s=config.recheck_interval_s,
                            retry_max_s=config.retry_max_s, lease_ttl_s=config.lease_ttl_s,
                            head_timeout_s=config.head_timeout_s)


def _fleet_lock(config: StrategyConfig, hostname: str) -> RebootStrategy:
    from locksmithd.strategies.fleet_lock import FleetLockStrategy

    assert isinstance(config, FleetLockConfig), "the loader builds fleet-lock's slice"
    return FleetLockStrategy(config.url, config.holder, config.group, poll_max_s=config.poll_max_s)


REGISTRY: Mapping[str, Factory] = {ETCD_LOCK.label: _etcd_lock, FLEET_LOCK.label: _fleet_lock,
                                   REBOOT.label: _reboot, OFF.label: _off}
"""Every strategy's factory, by the label operators write in REBOOT_STRATEGY (``core.strategy_labels.LABELS``)."""

__all__ = ["ALIASES", "LABELS", "REGISTRY", "Factory", "make_strategy", "resolve_label"]


def make_strategy(label: str, config: StrategyConfig, *, hostname: str) -> RebootStrategy:
    """Build the strategy ``label`` names from its config slice.

    ``label`` was checked against the declarations by the settings loader
    (``resolve_label``), so every label it can hold has a factory.
    """
    return REGISTRY[label](config, hostname)
