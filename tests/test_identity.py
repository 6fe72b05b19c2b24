"""Host identity: machine-id, holder-id overrides and the boot id."""

from __future__ import annotations

from pathlib import Path

import pytest

from locksmithd.errors import ExitCode, IdentityError
from locksmithd.core.names import shown_value
from locksmithd.host.identity import read_boot_id, read_machine_id, validate_holder_id

MACHINE_ID = "3f2b8c1e9a4d4e6f8b7c6d5e4f3a2b1c"


class TestMachineId:
    """read_machine_id returns the id or raises IdentityError, never an empty string."""

    def test_reads_and_strips_the_newline(self, tmp_path: Path) -> None:
        """The id is the file's content without the trailing newline."""
        path = tmp_path / "machine-id"
        path.write_text(MACHINE_ID + "\n")
        assert read_machine_id(str(path)) == MACHINE_ID

    @pytest.mark.parametrize(
        ("content", "problem"),
        [
            (None, "cannot read"),
            ("", "empty"),
            ("\n", "empty"),
            ("uninitialized\n", "not initialized"),
            ("abc def\n", "whitespace"),
        ],
    )
    def test_unusable_files_raise_identity_error(self, tmp_path: Path, content: str | None, problem: str) -> None:
        """Missing, empty, placeholder or malformed files are identity errors naming the path."""
        path = tmp_path / "machine-id"
        if content is not None:
            path.write_text(content)
        with pytest.raises(IdentityError) as info:
            read_machine_id(str(path))
        assert info.value.source == str(path)
        assert info.value.key == "machine-id"
        assert info.value.exit_code == ExitCode.IDENTITY
        assert problem in str(info.value)
        assert "\n" not in str(info.value)

    def test_directory_is_unreadable(self, tmp_path: Path) -> None:
        """A directory where the file should be is an identity error, not a crash."""
        with pytest.raises(IdentityError, match="not a regular file"):
            read_machine_id(str(tmp_path))

    def test_fifo_is_refused_without_blocking(self, tmp_path: Path) -> None:
        """A FIFO as machine-id file would block the daemon forever: refused at once."""
        import os

        fifo = tmp_path / "machine-id"
        os.mkfifo(fifo)
        with pytest.raises(IdentityError, match="not a regular file"):
            read_machine_id(str(fifo))

    def test_binary_content_is_refused(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 are an identity error."""
        path = tmp_path / "machine-id"
        path.write_bytes(b"\xff\xfe\n")
        with pytest.raises(IdentityError, match="not UTF-8"):
            read_machine_id(str(path))


class TestHolderId:
    """validate_holder_id accepts printable single tokens up to 256 characters."""

    @pytest.mark.parametrize("value", [MACHINE_ID, "node-1", "host.example.com", "x" * 256, "n\u00f6de"])
    def test_accepts(self, value: str) -> None:
        """Ordinary ids come back unchanged."""
        assert validate_holder_id(value, "environment", "LOCKSMITHD_MACHINE_ID") == value

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ("", "empty"),
            ("x" * 257, "longer than 256"),
            ("a b", "whitespace"),
            (" node", "whitespace"),
            ("node\n", "whitespace"),
            ("no\x00de", "control"),
            ("no\u200bde", "control"),
        ],
    )
    def test_rejects(self, value: str, problem: str) -> None:
        """Each bad id is an IdentityError naming source, key and value on one line."""
        with pytest.raises(IdentityError) as info:
            validate_holder_id(value, "environment", "LOCKSMITHD_MACHINE_ID")
        message = str(info.value)
        assert problem in message
        assert message.startswith("environment: LOCKSMITHD_MACHINE_ID=")
        assert shown_value(value) in message
        assert "\n" not in message


class TestBootId:
    """read_boot_id is best effort: the id, or None."""

    def test_reads_the_id(self, tmp_path: Path) -> None:
        """The kernel's boot id is returned stripped."""
        path = tmp_path / "boot_id"
        path.write_text("0b6c2e0a-5f7e-4b8e-9d3a-1c2b3d4e5f60\n")
        assert read_boot_id(str(path)) == "0b6c2e0a-5f7e-4b8e-9d3a-1c2b3d4e5f60"

    def test_missing_or_empty_is_none(self, tmp_path: Path) -> None:
        """No file or an empty file gives None."""
        assert read_boot_id(str(tmp_path / "absent")) is None
        (tmp_path / "empty").write_text("")
        assert read_boot_id(str(tmp_path / "empty")) is None
