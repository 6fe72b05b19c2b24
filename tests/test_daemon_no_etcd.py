"""A fresh install with no etcd: the daemon runs, says once that etcd is unreachable, retries, never reboots."""

from __future__ import annotations

import asyncio
import re
import socket
import tempfile
from pathlib import Path

from harness.fleet import HostOptions, SimulatedHost

RUN_S = 6.0


def test_no_etcd_starts_warns_once_retries_and_never_reboots(tmp_path: Path) -> None:
    """The packaged default endpoint on a host without etcd, with a reboot needed from the start.

    The daemon tells systemd it is ready (so `Type=notify` start completes and
    apt's postinst does not wait), stays in releasing-after-boot, and only its
    first failure is a warning.

    The endpoint is a loopback port bound but not listening (connections are
    refused, and no other process can take it). Real private dbus-daemon,
    fake update_engine saying NEED_REBOOT, fake logind counting reboots.
    """
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    # systemd's notify socket (Type=notify): a unix path must stay under 108 bytes.
    notify_dir = tempfile.TemporaryDirectory(prefix="notify-")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(f"{notify_dir.name}/s")
    notify.setblocking(False)
    host = SimulatedHost("h-no-etcd", tmp_path / "host", [endpoint],
                         options=HostOptions(retry_max="1s", etcd_timeout="1s",
                                             extra_env={"LOCKSMITHD_DEBUG": "1",
                                                        "NOTIFY_SOCKET": f"{notify_dir.name}/s"}))

    async def scenario() -> None:
        await host.start(needs_reboot=True)
        try:
            await asyncio.sleep(RUN_S)
            assert host.process is not None and host.process.returncode is None, "the daemon must keep running"
            assert host.daemon_state().get("DAEMON_STATE") == "releasing-after-boot"
            assert host.logind is not None and host.logind.reboots == []
        finally:
            await host.stop()

    try:
        asyncio.run(scenario())
        messages = []
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        closed.close()
        notify.close()
        notify_dir.cleanup()
    assert any("READY=1" in message for message in messages), messages  # the unit's start completes
    log = (tmp_path / "host" / "locksmithd.log").read_text()
    warnings = [line for line in log.splitlines() if " WARNING " in line and "cannot look up the slot" in line]
    assert len(warnings) == 1, log
    assert "unavailable" in warnings[0] and endpoint in warnings[0]
    retries = [float(d) for d in re.findall(r"DEBUG cannot look up the slot held before boot: .*retrying in ([0-9.]+)s",
                                            log)]
    assert len(retries) >= 3, log  # it keeps trying, quietly
    assert max(retries) <= 1.0  # with backoff capped at LOCKSMITHD_RETRY_MAX
    assert "reboot" not in " ".join(line for line in log.splitlines() if "state " in line and "->" in line)
