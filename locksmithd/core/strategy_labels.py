"""The strategies' labels as data: what settings/ reads to parse and describe REBOOT_STRATEGY.

The factories live in ``locksmithd.strategies.REGISTRY``, keyed by these labels (a test keeps the two
equal). The labels sit here, below both, so settings/ parses a label without importing the strategies.
"""

from __future__ import annotations

from collections.abc import Mapping

LABELS: tuple[str, ...] = ("etcd-lock", "fleet-lock", "reboot", "off")
"""Every strategy, by the label operators write in REBOOT_STRATEGY."""

# locksmith's legacy default meant "etcd-lock if etcd is configured, else reboot";
# an endpoint is always configured here (it has a default), so it means etcd-lock.
ALIASES: Mapping[str, str] = {"best-effort": "etcd-lock"}


def resolve_label(text: str) -> str | None:
    """The strategy label ``text`` names (any case, aliases resolved), or None if it names none."""
    label = text.strip().lower()
    label = ALIASES.get(label, label)
    return label if label in LABELS else None
