"""The one registry of sources: every module of ``sources/`` that defines ``SOURCE`` (a SourceKind).

Adding a source is adding its module here and its rows in ``settings/table.py`` (their field ``source.<name>``,
read from ``DaemonSettings.source_options``); nothing else names it
(a test keeps the registry's names equal to ``settings.table.SOURCE_KINDS``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

import locksmithd.sources as package
from locksmithd.sources.base import SourceKind


def registry() -> Mapping[str, SourceKind]:
    """{name: kind} for every source module, by name."""
    found: dict[str, SourceKind] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        kind = module.__dict__.get("SOURCE")
        if isinstance(kind, SourceKind):
            assert kind.name not in found, f"two sources named {kind.name}"
            found[kind.name] = kind
    return found
