"""A daemon that etcd refuses: slow retries, one error line, alive; and a stop is always clean."""

from __future__ import annotations

import asyncio
import random
import re
import signal
from pathlib import Path

from harness.etcd import EtcdCluster
from harness.fleet import HostOptions, SimulatedHost, wait_for

ATTEMPT = re.compile(r"cannot [a-z ]+: denied")


def test_denied_daemon_retries_at_the_maximum_and_says_it_once(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """A role without permission on the key prefix: pauses grow to LOCKSMITHD_RETRY_MAX, one ERROR line.

    With the old fixed 1-2 s pause the daemon tried about ten times in 14 s;
    with an 8 s maximum (jittered 4-8 s) it may try at most four times.
    """
    auth, pki = etcd_auth_node.auth, etcd_auth_node.pki
    assert auth is not None and pki is not None
    env = {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert), "LOCKSMITHD_ETCD_USERNAME": auth.user,
           "LOCKSMITHD_ETCD_PASSWORD": auth.password, "LOCKSMITHD_DEBUG": "1"}

    async def scenario() -> str:
        host = SimulatedHost("denied-host", tmp_path / "h", etcd_auth_node.client_urls,
                             options=HostOptions(key_prefix="not-allowed/", retry_max="8s", extra_env=env))
        await host.start(needs_reboot=True)
        try:
            await wait_for(lambda: bool(ATTEMPT.search(host.log_text())), 20, "the first denied request")
            await asyncio.sleep(14)
            assert host.process is not None and host.process.returncode is None, "the daemon must stay alive"
            assert host.logind.reboots == []
            return host.log_text()
        finally:
            await host.stop()

    log = asyncio.run(scenario())
    attempts = [line for line in log.splitlines() if ATTEMPT.search(line)]
    errors = [line for line in attempts if " ERROR " in line]
    assert 1 <= len(attempts) <= 4, attempts
    assert len(errors) == 1, errors
    assert auth.password not in log


def test_sigterm_while_retrying_release_after_boot_is_clean(tmp_path: Path, etcd_auth_node: EtcdCluster) -> None:
    """etcd with auth and no credentials: SIGTERM (once or twice) at any moment of the retry loop exits 0."""
    pki = etcd_auth_node.pki
    assert pki is not None
    env = {"LOCKSMITHD_ETCD_CAFILE": str(pki.ca_cert)}
    rng = random.Random(1)

    async def scenario() -> list[tuple[int | None, str]]:
        host = SimulatedHost("no-creds", tmp_path / "h", etcd_auth_node.client_urls,
                             options=HostOptions(retry_max="1s", extra_env=env))
        results: list[tuple[int | None, str]] = []
        await host.start()
        try:
            for attempt in range(8):
                await wait_for(lambda: "cannot look up" in host.log_text().rsplit("--- start", 1)[-1], 20,
                               "a failed look-up of the slot held before boot")
                await asyncio.sleep(rng.uniform(0.0, 1.2))
                if attempt % 2 and host.process is not None:  # an impatient operator: two signals at once
                    host.process.send_signal(signal.SIGTERM)
                code = await host.stop_daemon(signal.SIGTERM)
                results.append((code, host.log_text().rsplit("--- start", 1)[-1]))
                await host.spawn_daemon()
        finally:
            await host.stop()
        return results

    for code, log in asyncio.run(scenario()):
        assert code == 0, log[-2000:]
        assert "Traceback" not in log, log[-2000:]
