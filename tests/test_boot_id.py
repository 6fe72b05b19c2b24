"""The boot id in containers: the pure derivation, systemd's init start over D-Bus, and the daemon's choice."""

# No ``from __future__ import annotations``: StringTimestampManager below is a
# dbus_fast interface, and dbus_fast reads its annotations at runtime.

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from dbus_fast import PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface

from harness.dbus_compat import DBusStr, dbus_property

from harness.bus import PrivateBus
from harness.systemd_service import FakeSystemd
from locksmithd.bus.connection import connect, disconnect
from locksmithd.bus.systemd import SystemdClient
from locksmithd.core.boot_id import container_boot_id
from locksmithd.daemon.boot_id import resolve_boot_id
from locksmithd.errors import BusError

KERNEL_ID = "0b6c2e0a-5f7e-4b8e-9d3a-1c2b3d4e5f60"
OTHER_KERNEL_ID = "7d1f0c3e-2a4b-4c5d-8e6f-a1b2c3d4e5f6"
BOOT_ID_SHAPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    """Run an async test scenario to completion."""

    async def main() -> None:
        await scenario()

    asyncio.run(main())


@asynccontextmanager
async def client_of(address: str) -> AsyncIterator[SystemdClient]:
    """A SystemdClient on its own connection, closed on exit."""
    bus = await connect(address)
    try:
        yield SystemdClient(bus, call_timeout_s=2.0)
    finally:
        await disconnect(bus)


class TestDerivation:
    """container_boot_id is a fixed function of (kernel boot id, init start)."""

    @pytest.mark.parametrize(("a", "b", "same"), [
        ((KERNEL_ID, 2_000_000), (KERNEL_ID, 2_000_000), True),  # a daemon restart within one boot
        ((KERNEL_ID, 2_000_000), (KERNEL_ID, 95_000_000), False),  # the container rebooted
        ((KERNEL_ID, 2_000_000), (OTHER_KERNEL_ID, 2_000_000), False),  # the host rebooted, same init start
        ((KERNEL_ID, 1), (KERNEL_ID, 10), False),  # no arithmetic on the text: "1" and "10" differ
    ])
    def test_same_boot_same_id_other_boot_other_id(self, a: tuple[str, int], b: tuple[str, int],
                                                   same: bool) -> None:
        """Equal inputs give equal ids; a different init start or kernel boot id gives another id."""
        assert (container_boot_id(*a) == container_boot_id(*b)) is same

    def test_written_like_a_kernel_boot_id_and_fixed(self) -> None:
        """A dashed lowercase UUID (version 5), never the kernel's own id, and fixed across versions."""
        boot_id = container_boot_id(KERNEL_ID, 2_000_000)
        assert BOOT_ID_SHAPE.fullmatch(boot_id), boot_id
        assert boot_id != KERNEL_ID
        # Recorded ids must survive an upgrade of the daemon: the namespace and the text never change
        # (value computed by hand: SHA-1 of the namespace bytes and "<kernel id>/2000000", RFC 4122 v5).
        assert boot_id == "a22064b8-0e6b-5a4e-99f4-81d7e3a242bd"

    @pytest.mark.parametrize(("kernel_id", "started_us"), [("", 2_000_000), (KERNEL_ID, 0), (KERNEL_ID, -1)])
    def test_no_boot_named_is_an_error(self, kernel_id: str, started_us: int) -> None:
        """No kernel id, or an init start systemd does not know (0), names no boot: ValueError."""
        with pytest.raises(ValueError):
            container_boot_id(kernel_id, started_us)


class StringTimestampManager(ServiceInterface):
    """A manager whose UserspaceTimestampMonotonic is a string."""

    def __init__(self) -> None:
        super().__init__("org.freedesktop.systemd1.Manager")

    @dbus_property(access=PropertyAccess.READ, name="UserspaceTimestampMonotonic")
    def dbus_timestamp(self) -> DBusStr:
        return "2000000"


class TestInitStartOverDBus:
    """SystemdClient.userspace_timestamp_monotonic_us against a fake systemd on a private dbus-daemon."""

    def test_reads_the_managers_property(self, private_bus: PrivateBus) -> None:
        """The uint64 property comes back as an int, and follows the manager (a new boot of a container)."""

        async def scenario() -> None:
            async with await FakeSystemd.start(private_bus.address) as systemd:
                async with client_of(private_bus.address) as client:
                    assert await client.userspace_timestamp_monotonic_us() == 2_000_000
                    systemd.manager.userspace_timestamp_us = 2**63 + 5  # the whole uint64 range
                    assert await client.userspace_timestamp_monotonic_us() == 2**63 + 5

        run(scenario)

    def test_absent_systemd_or_wrong_type_is_a_bus_error(self, private_bus: PrivateBus) -> None:
        """Nobody on the name, or a property that is not a uint64, is a BusError naming what failed."""

        async def scenario() -> None:
            async with client_of(private_bus.address) as client:
                with pytest.raises(BusError, match=r"cannot read when init started: systemd .* is not on the bus"):
                    await client.userspace_timestamp_monotonic_us()
                owner: MessageBus = await connect(private_bus.address)
                try:
                    owner.export("/org/freedesktop/systemd1", StringTimestampManager())
                    await owner.request_name("org.freedesktop.systemd1")
                    with pytest.raises(BusError, match="UserspaceTimestampMonotonic is not a uint64"):
                        await client.userspace_timestamp_monotonic_us()
                finally:
                    await disconnect(owner)

        run(scenario)


class TestResolve:
    """resolve_boot_id: the kernel's id on a host, a derived one in a container, the kernel's on failure."""

    @pytest.fixture
    def kernel_path(self, tmp_path: Path) -> Path:
        path = tmp_path / "boot_id"
        path.write_text(KERNEL_ID + "\n")
        return path

    def test_outside_a_container_the_kernel_id(self, private_bus: PrivateBus, kernel_path: Path,
                                              tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """No marker: the kernel's id, without asking systemd (none is on this bus) and without a warning."""

        async def scenario() -> None:
            async with client_of(private_bus.address) as client:
                found = await resolve_boot_id(client, str(kernel_path), str(tmp_path / "no-container"))
                assert found == KERNEL_ID

        with caplog.at_level(logging.INFO, "locksmithd"):
            run(scenario)
        assert caplog.records == []

    def test_in_a_container_each_boot_has_its_own_id(self, private_bus: PrivateBus, kernel_path: Path,
                                                    tmp_path: Path) -> None:
        """With the marker, the id changes when the container's init starts again, not when the daemon does."""
        marker = tmp_path / "container"
        marker.write_text("systemd-nspawn\n")

        async def scenario() -> None:
            async with await FakeSystemd.start(private_bus.address) as systemd:
                async with client_of(private_bus.address) as client:
                    first = await resolve_boot_id(client, str(kernel_path), str(marker))
                    assert first == container_boot_id(KERNEL_ID, 2_000_000)
                    assert await resolve_boot_id(client, str(kernel_path), str(marker)) == first  # daemon restart
                    systemd.manager.userspace_timestamp_us = 61_000_000  # the container rebooted
                    second = await resolve_boot_id(client, str(kernel_path), str(marker))
                    assert second == container_boot_id(KERNEL_ID, 61_000_000)
                    assert second not in (first, KERNEL_ID)

        run(scenario)

    @pytest.mark.parametrize("systemd_answer", ["absent", "zero"])
    def test_unreadable_init_start_warns_once_and_keeps_the_kernel_id(
            self, private_bus: PrivateBus, kernel_path: Path, tmp_path: Path,
            caplog: pytest.LogCaptureFixture, systemd_answer: str) -> None:
        """systemd absent or not knowing its start (0): one warning naming the container, the kernel's id."""
        marker = tmp_path / "container"
        marker.write_text("lxc")

        async def scenario() -> None:
            async with await FakeSystemd.start(private_bus.address) as systemd:
                if systemd_answer == "absent":
                    await systemd.stop()
                systemd.manager.userspace_timestamp_us = 0
                async with client_of(private_bus.address) as client:
                    assert await resolve_boot_id(client, str(kernel_path), str(marker)) == KERNEL_ID

        with caplog.at_level(logging.INFO, "locksmithd"):
            run(scenario)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.records
        text = warnings[0].getMessage()
        assert "lxc container" in text and "same boot" in text
        assert ("not on the bus" if systemd_answer == "absent" else "init start 0 us") in text

    def test_no_kernel_id_is_unknown(self, private_bus: PrivateBus, tmp_path: Path) -> None:
        """An unreadable kernel boot id stays unknown (None) in a container too: nothing to derive from."""
        marker = tmp_path / "container"
        marker.write_text("systemd-nspawn\n")

        async def scenario() -> None:
            async with await FakeSystemd.start(private_bus.address):
                async with client_of(private_bus.address) as client:
                    assert await resolve_boot_id(client, str(tmp_path / "absent"), str(marker)) is None

        run(scenario)
