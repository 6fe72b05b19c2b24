"""locksmithctl's commands are imported on first use: each name finds its command, none is forgotten."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click

from locksmithd.ctl.main import _COMMAND_MODULES, cli


def test_every_listed_name_loads_its_command() -> None:
    """Each name of the table resolves to the click command of that name."""
    with click.Context(cli) as ctx:
        for name in _COMMAND_MODULES:
            command = cli.get_command(ctx, name)
            assert command is not None and command.name == name


def test_every_command_of_the_ctl_modules_is_listed() -> None:
    """A command added to one of the modules but not to the table would be unreachable."""
    defined = set()
    for module_name in set(_COMMAND_MODULES.values()):
        module = importlib.import_module(f"locksmithd.ctl.{module_name}")
        defined |= {c.name for c in vars(module).values() if isinstance(c, click.Command)}
    assert defined == set(_COMMAND_MODULES)


def test_starting_locksmithctl_imports_no_command_module() -> None:
    """Importing the entry point loads neither the commands nor what only they need (schedules, the bus)."""
    code = ("import sys, locksmithd.ctl.main; "
            "loaded = [m for m in sys.modules if m.startswith(('locksmithd.ctl.', 'locksmithd.core.schedule', "
            "'locksmithd.core.app_specific', 'locksmithd.bus'))]; "
            "assert sorted(loaded) == ['locksmithd.ctl.context', 'locksmithd.ctl.main'], loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
