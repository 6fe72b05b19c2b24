"""Reboot strategies behind one interface, chosen by label in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from locksmithd.errors import ConfigError
from locksmithd.strategies.base import RebootStrategy

if TYPE_CHECKING:
    from locksmithd.settings import DaemonSettings

LABELS = ("etcd-lock", "reboot", "off")


def make_strategy(settings: DaemonSettings, holder_info: Callable[[], dict[str, Any]] = dict) -> RebootStrategy:
    """Build the strategy named by ``settings.strategy``; ConfigError for an unknown label."""
    label = settings.strategy
    if label == "off":
        from locksmithd.strategies.off import OffStrategy

        return OffStrategy()
    if label == "reboot":
        from locksmithd.strategies.reboot import ImmediateRebootStrategy

        return ImmediateRebootStrategy()
    if label == "etcd-lock":
        from locksmithd.etcd.client import EtcdStore
        from locksmithd.strategies.etcd_lock import EtcdLockStrategy

        import socket

        from locksmithd.host.identity import read_boot_id

        return EtcdLockStrategy(EtcdStore(settings.etcd), settings.machine_id, settings.group,
                                settings.etcd.key_prefix, hostname=socket.gethostname(),
                                boot_id=read_boot_id(settings.boot_id_path), reboot_deadline_s=3600.0,
                                recheck_interval_s=settings.recheck_interval_s, retry_max_s=settings.retry_max_s)
    raise ConfigError("settings", "REBOOT_STRATEGY", label, f"unsupported strategy; use one of {', '.join(LABELS)}")
