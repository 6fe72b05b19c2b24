"""locksmithctl's D-Bus commands against a real private bus with fake logind."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from locksmithd.errors import ExitCode
from harness.bus import PrivateBus
from harness.etcd import EtcdCluster
from harness.services import SimulatedServices

CTL = str(Path(sys.executable).with_name("locksmithctl"))


async def ctl(bus: PrivateBus, cluster: EtcdCluster, prefix: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        CTL, "--endpoint", cluster.client_urls[0], "--etcd-key-prefix", prefix, *args,
        env={"DBUS_SYSTEM_BUS_ADDRESS": bus.address, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_reboot_command_locks_then_asks_logind(private_bus: PrivateBus, etcd_node: EtcdCluster,
                                               key_prefix: str, tmp_path: Path) -> None:
    """`locksmithctl reboot` takes this machine's slot and calls logind Reboot(false)."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("feedfacefeedfacefeedfacefeedface\n")

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as services:
            code, _, err = await ctl(private_bus, etcd_node, key_prefix, "--machine-id-file", str(machine_id),
                                     "reboot")
            assert code == 0, err
            assert [r.interactive for r in services.logind.reboots] == [False]
            _, out, _ = await ctl(private_bus, etcd_node, key_prefix, "status", "--json")
            assert json.loads(out)["holders"] == ["feedfacefeedfacefeedfacefeedface"]

    asyncio.run(scenario())


def test_refused_reboot_releases_the_slot(private_bus: PrivateBus, etcd_node: EtcdCluster,
                                          key_prefix: str, tmp_path: Path) -> None:
    """If logind refuses, the slot is released and the exit code is the D-Bus one (11)."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as services:
            services.logind.refuse_reboots = "org.freedesktop.login1.OperationInProgress"
            code, _, err = await ctl(private_bus, etcd_node, key_prefix, "--machine-id-file", str(machine_id),
                                     "reboot")
            assert code == ExitCode.BUS and "OperationInProgress" in err and err.count("\n") == 1
            _, out, _ = await ctl(private_bus, etcd_node, key_prefix, "status", "--json")
            assert json.loads(out)["holders"] == []

    asyncio.run(scenario())


def test_send_need_reboot_without_bus_is_one_line_error(etcd_node: EtcdCluster, key_prefix: str,
                                                        tmp_path: Path) -> None:
    """No bus at the address: exit 11 with one line naming the address."""
    async def scenario() -> None:
        class Dead:
            address = f"unix:path={tmp_path}/nobody"

        code, _, err = await ctl(Dead(), etcd_node, key_prefix, "send-need-reboot")  # type: ignore[arg-type]
        assert code == ExitCode.BUS and str(tmp_path) in err and err.count("\n") == 1

    asyncio.run(scenario())


def test_refusal_text_from_logind_is_escaped(private_bus: PrivateBus, etcd_node: EtcdCluster,
                                            key_prefix: str, tmp_path: Path) -> None:
    """An error text from D-Bus with newlines and terminal sequences reaches stderr as one escaped line."""
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")

    async def scenario() -> None:
        async with await SimulatedServices.start(private_bus.address) as services:
            services.logind.refuse_reboots = "org.freedesktop.login1.OperationInProgress"
            services.logind.refuse_message = "busy\nlocksmithctl: ok: fake line\x1b]0;pwned\x07\r"
            code, out, err = await ctl(private_bus, etcd_node, key_prefix, "--machine-id-file", str(machine_id),
                                       "reboot")
            assert code == ExitCode.BUS and err.count("\n") == 1 and out == ""
            assert "\\nlocksmithctl: ok: fake line\\x1b]0;pwned\\x07\\r" in err and "\x1b" not in err
            _, out, _ = await ctl(private_bus, etcd_node, key_prefix, "status", "--json")
            assert json.loads(out)["holders"] == []

    asyncio.run(scenario())
