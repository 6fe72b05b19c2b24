"""The slice of configuration each strategy's factory takes, built by the settings loader.

A factory (``strategies.REGISTRY``) is handed only its strategy's slice, never the daemon's whole
settings, so strategies/ does not import settings/. The slices sit here, below both: the loader builds
them (``DaemonSettings.strategy_config``) and the strategies read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from locksmithd.core.etcd_config import EtcdSettings
from locksmithd.core.stale_policy import StalePolicy


@dataclass(frozen=True, kw_only=True)
class EtcdLockConfig:
    """What strategy ``etcd-lock`` needs: the etcd connection, this host's holder id and group, and the
    queue's and the stale-holder policy's timings (the settings rows of the same names)."""

    etcd: EtcdSettings
    holder: str
    group: str
    retry_max_s: float
    recheck_interval_s: float
    reboot_deadline_s: float
    stale_policy: StalePolicy
    lease_ttl_s: int
    head_timeout_s: float


@dataclass(frozen=True, kw_only=True)
class FleetLockConfig:
    """What strategy ``fleet-lock`` needs: the server's base URL, this host's id and FleetLock group, and
    the longest pause between polls."""

    url: str
    holder: str
    group: str
    poll_max_s: float


StrategyConfig = EtcdLockConfig | FleetLockConfig | None
"""A strategy's slice; None for the strategies that need none (``reboot``, ``off``)."""
