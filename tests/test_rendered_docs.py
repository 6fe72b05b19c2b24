"""The man pages and the packaged locksmithd.conf are rendered from the commands and the settings table."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from locksmithd.ctl.main import cli as ctl_cli
from locksmithd.daemon.main import cli as daemon_cli
from locksmithd.fleetlock.main import cli as fleetlock_cli
from locksmithd.settings import SETTINGS, parse_conf_text
from locksmithd.settings.manpage import conffile_text, escape
from locksmithd.settings.table import BY_KEY, parse_row

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "contrib" / "man"


def render_docs() -> ModuleType:
    """contrib/render_docs.py, the script that writes the committed files."""
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "contrib" / "render_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDrift:
    """Each committed file is exactly its rendering: run contrib/render_docs.py after changing a row or option."""

    @pytest.mark.parametrize("name", ["man/locksmithd.8", "man/locksmithctl.1", "man/locksmithd-fleetlock.8",
                                      "man/locksmithd.conf.5", "locksmithd.conf"])
    def test_committed_file_is_its_rendering(self, name: str) -> None:
        rendered = {path.relative_to(ROOT / "contrib").as_posix(): text for path, text in render_docs().rendered().items()}
        assert (ROOT / "contrib" / name).read_text() == rendered[name]

    def test_check_mode_names_a_stale_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
        """--check fails (exit 1) naming a file that differs, passes when none does; it writes nothing."""
        module = render_docs()
        assert module.main(["--check"]) == 0
        stale = ROOT / "contrib" / "locksmithd.conf"
        monkeypatch.setattr(module, "rendered", lambda: {stale: stale.read_text() + "#EXTRA=1\n"})
        assert module.main(["--check"]) == 1
        assert "contrib/locksmithd.conf differs" in capsys.readouterr().err
        assert "#EXTRA" not in stale.read_text()


class TestConffile:
    """Every operator setting is in the file, commented out, with its default."""

    def test_the_file_as_shipped_sets_nothing(self) -> None:
        assert parse_conf_text(conffile_text(), "locksmithd.conf") == []

    def test_uncommented_it_sets_exactly_the_defaults(self) -> None:
        """Uncommenting every setting line gives each operator key once, parsing to its default value."""
        lines = [line[1:] for line in conffile_text().splitlines() if line.startswith("#") and "=" in line
                 and line[1:].split("=", 1)[0] in BY_KEY]
        found = parse_conf_text("\n".join(lines), "uncommented")
        assert [raw.key for raw in found] == [row.key for row in SETTINGS if row.operator]
        for raw in found:
            row = BY_KEY[raw.key]
            if row.default is None:
                assert raw.value == ""
            else:
                assert parse_row(row, raw) == row.default_value(), raw.key


class TestManPages:
    """The pages document every option and setting, and groff reads them without a warning."""

    def test_daemon_page_has_every_flag_and_the_conf_page_every_key(self) -> None:
        daemon, conf = (MAN / "locksmithd.8").read_text(), (MAN / "locksmithd.conf.5").read_text()
        for param in daemon_cli.params:
            for opt in getattr(param, "opts", []):
                assert escape(opt) in daemon, opt
        for row in SETTINGS:
            assert (escape(row.key) in conf) == row.operator, row.key

    def test_ctl_page_has_every_command_and_fleetlock_page_every_option(self) -> None:
        ctl, fleetlock = (MAN / "locksmithctl.1").read_text(), (MAN / "locksmithd-fleetlock.8").read_text()
        ctx = ctl_cli.make_context("locksmithctl", ["status"], resilient_parsing=True)
        for name in ctl_cli.list_commands(ctx):
            assert f".SS\n\\fB{escape(name)}\\fR" in ctl, name
        for param in fleetlock_cli.params:
            for opt in getattr(param, "opts", []):
                assert escape(opt) in fleetlock, opt
        assert "LOCKSMITHD_FLEETLOCK_LISTEN" in fleetlock.replace("\\-", "-")

    @pytest.mark.parametrize("page", ["locksmithd.8", "locksmithctl.1", "locksmithd-fleetlock.8", "locksmithd.conf.5"])
    def test_groff_reads_the_page_without_warnings(self, page: str) -> None:
        groff = shutil.which("groff") or "/usr/bin/groff"
        result = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(MAN / page)],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0 and result.stderr == "", result.stderr
