"""Host identity: machine-id, holder-id overrides, the boot id and the container manager."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from locksmithd.errors import ExitCode, IdentityError
from locksmithd.core.names import shown_value
from locksmithd.host.identity import read_boot_id, read_container_manager, read_machine_id, validate_holder_id

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


class TestContainerManager:
    """read_container_manager: the name systemd wrote in /run/systemd/container, or None outside one."""

    @pytest.mark.parametrize(("content", "name"), [("systemd-nspawn\n", "systemd-nspawn"), ("lxc", "lxc"),
                                                   ("docker\n", "docker")])
    def test_the_manager_name_is_read(self, tmp_path: Path, content: str, name: str) -> None:
        """systemd writes the manager's name (nspawn: with a newline, others may not): it comes back stripped."""
        path = tmp_path / "container"
        path.write_text(content)
        assert read_container_manager(str(path)) == name

    def test_absent_means_not_in_a_container(self, tmp_path: Path) -> None:
        """No file: systemd runs on a host (or is not PID 1 of a container)."""
        assert read_container_manager(str(tmp_path / "absent")) is None

    @pytest.mark.parametrize("content", ["", "\n", "  \n"])
    def test_empty_means_not_in_a_container(self, tmp_path: Path, content: str) -> None:
        """An empty file names no manager."""
        path = tmp_path / "container"
        path.write_text(content)
        assert read_container_manager(str(path)) is None

    def test_not_a_regular_file_is_never_opened(self, tmp_path: Path) -> None:
        """A FIFO (opening it would block) or a directory is not a container marker."""
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        assert read_container_manager(str(fifo)) is None
        assert read_container_manager(str(tmp_path)) is None

    def test_read_is_bounded_and_not_utf8_is_none(self, tmp_path: Path) -> None:
        """At most 256 characters are read; bytes that are not UTF-8 name no manager."""
        path = tmp_path / "container"
        path.write_text("x" * 10_000)
        assert read_container_manager(str(path)) == "x" * 256
        path.write_bytes(b"lxc\xff\xfe")
        assert read_container_manager(str(path)) is None
