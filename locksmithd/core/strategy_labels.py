"""Each strategy's declaration: its label, the help operators read, and the config slice it takes.

The strategies' modules name their declaration (``strategies/*.py`` ``DECLARATION``) and the
factories in ``locksmithd.strategies.REGISTRY`` are keyed by these labels (a test keeps the three
equal). The declarations sit here, below both, so settings/ parses and describes REBOOT_STRATEGY
without importing the strategies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from locksmithd.core.strategy_config import EtcdLockConfig, FleetLockConfig


@dataclass(frozen=True)
class StrategyDeclaration:
    """One strategy as operators see it: ``label`` in REBOOT_STRATEGY, ``help`` in the docs, and the
    type of the config slice its factory takes (None: it takes none)."""

    label: str
    help: str
    config: type[EtcdLockConfig] | type[FleetLockConfig] | None = None


ETCD_LOCK = StrategyDeclaration("etcd-lock", "take a slot first", EtcdLockConfig)
FLEET_LOCK = StrategyDeclaration("fleet-lock", "take a slot from a FleetLock server", FleetLockConfig)
REBOOT = StrategyDeclaration("reboot", "no lock")
OFF = StrategyDeclaration("off", "exit 0")

DECLARATIONS: tuple[StrategyDeclaration, ...] = (ETCD_LOCK, FLEET_LOCK, REBOOT, OFF)
"""Every strategy, in the order the docs list them."""

LABELS: tuple[str, ...] = tuple(declaration.label for declaration in DECLARATIONS)
"""Every strategy, by the label operators write in REBOOT_STRATEGY."""

# locksmith's legacy default meant "etcd-lock if etcd is configured, else reboot";
# an endpoint is always configured here (it has a default), so it means etcd-lock.
ALIASES: Mapping[str, str] = {"best-effort": ETCD_LOCK.label}


def resolve_label(text: str) -> str | None:
    """The strategy label ``text`` names (any case, aliases resolved), or None if it names none."""
    label = text.strip().lower()
    label = ALIASES.get(label, label)
    return label if label in LABELS else None


def strategies_help() -> str:
    """REBOOT_STRATEGY's help, from every declaration and alias."""
    described = ", ".join(f"`{declaration.label}` ({declaration.help})" for declaration in DECLARATIONS)
    aliases = "; ".join(f"`{alias}` is read as `{target}`" for alias, target in ALIASES.items())
    return f"{described}; {aliases}" if aliases else described
