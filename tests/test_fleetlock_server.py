"""The FleetLock server against real etcd, driven by a real HTTP client, case by case as the protocol says."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

import aiohttp
import pytest

from harness.etcd import EtcdCluster
from locksmithd.core.halt import Halt
from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.halt import halt_group, resume_group
from locksmithd.core.history import HistoryEvent
from locksmithd.etcd.keys import waiter_key
from locksmithd.etcd.lock import SemaphoreClient
from tests.fleetlock_support import Client, base_url, body, etcd_settings, running_server, stored_keys

Scenario = Callable[[Client, SemaphoreClient, EtcdStore], Awaitable[None]]


def run(cluster: EtcdCluster, prefix: str, scenario: Scenario, group: str = "", **options: Any) -> None:
    """Run ``scenario`` against a fresh server on ``cluster`` under ``prefix``."""
    async def main() -> None:
        store = EtcdStore(etcd_settings(cluster.client_urls, prefix))
        try:
            async with running_server(cluster.client_urls, prefix, **options) as server, \
                    aiohttp.ClientSession() as session:
                await scenario(Client(session, base_url(server)), SemaphoreClient(store, group, prefix), store)
        finally:
            store.close()

    asyncio.run(main())


def test_pre_reboot_takes_a_slot_marked_as_fleetlock(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Success is 200; the holder is the client id, its record says source fleetlock, history says so too."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert await client.pre_reboot("node-a") == (200, {})
        semaphore = sem.read().semaphore
        assert semaphore.holders == ("node-a",)
        record = semaphore.record("node-a")
        assert record is not None and record.source == "fleetlock" and record.deadline is None
        events = [e for e in store.read_prefix(key_prefix) if "/events/" in e.key]
        assert [json.loads(e.value)["detail"] for e in events] == ["1 of max 1 held, via fleetlock"]
        assert store.read(waiter_key("node-a", "", key_prefix)) is None  # left the queue with the slot

    run(etcd_node, key_prefix, scenario)


def test_pre_reboot_is_recursive(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """RecursiveLock: asking again while holding is 200 and writes nothing."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert (await client.pre_reboot("node-a"))[0] == 200
        before = stored_keys(store, key_prefix)
        for _ in range(3):
            assert await client.pre_reboot("node-a") == (200, {})
        assert stored_keys(store, key_prefix) == before

    run(etcd_node, key_prefix, scenario)


def test_steady_state_releases_and_is_idempotent(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """UnlockIfHeld: releases a held slot (history 'released'); again, or never held, is still 200."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert (await client.pre_reboot("node-a"))[0] == 200
        assert await client.steady_state("node-a") == (200, {})
        assert sem.read().semaphore.holders == ()
        before = stored_keys(store, key_prefix)
        assert await client.steady_state("node-a") == (200, {})
        assert await client.steady_state("never-held") == (200, {})
        assert stored_keys(store, key_prefix) == before
        events = [json.loads(e.value) for e in store.read_prefix(key_prefix) if "/events/" in e.key]
        assert [(e["event"], e["detail"]) for e in events][-1] == ("released", "via fleetlock")

    run(etcd_node, key_prefix, scenario)


def test_full_semaphore_queues_the_client(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A full semaphore answers 409 failed_lock_semaphore_full and the client waits in the queue."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        sem.lock("daemon-host")
        status, error = await client.pre_reboot("node-a")
        assert status == 409 and error["kind"] == "failed_lock_semaphore_full"
        assert "semaphore currently full" in error["value"] and "position 1 of 1" in error["value"]
        entry = store.read_prefix(waiter_key("node-a", "", key_prefix))[0]
        assert entry.lease != 0
        assert json.loads(entry.value)["via"] == "fleetlock" and json.loads(entry.value)["grace_s"] == 600
        sem.unlock("daemon-host")
        assert await client.pre_reboot("node-a") == (200, {})
        assert sem.read().semaphore.holders == ("node-a",)

    run(etcd_node, key_prefix, scenario)


def test_queue_order_is_kept_between_fleetlock_clients(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """With a free slot, a later client is refused (failed_lock_queued) until the earlier one took its turn."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        sem.lock("daemon-host")
        assert (await client.pre_reboot("first"))[0] == 409
        assert (await client.pre_reboot("second"))[0] == 409
        sem.unlock("daemon-host")
        status, error = await client.pre_reboot("second")
        assert status == 409 and error["kind"] == "failed_lock_queued" and "position 2 of 2" in error["value"]
        assert await client.pre_reboot("first") == (200, {})
        status, error = await client.pre_reboot("second")
        assert error["kind"] == "failed_lock_semaphore_full"
        assert await client.steady_state("first") == (200, {})
        assert await client.pre_reboot("second") == (200, {})

    run(etcd_node, key_prefix, scenario)


def test_halted_group_refuses_and_resume_lets_through(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Halts apply to FleetLock clients: 409 failed_lock_group_halted, nothing taken, until resumed."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        now = datetime.now(timezone.utc)
        halt_group(sem, Halt("canary failed", "operator", now), [HistoryEvent(now, "operator", "halt", "test")])
        status, error = await client.pre_reboot("node-a")
        assert status == 409 and error["kind"] == "failed_lock_group_halted"
        assert "canary failed" in error["value"]
        assert sem.read().semaphore.holders == ()
        resume_group(sem, HistoryEvent(now, "operator", "resume", "test"))
        assert await client.pre_reboot("node-a") == (200, {})

    run(etcd_node, key_prefix, scenario)


def test_named_group_maps_to_the_locksmith_group(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """Group "workers" is locksmithd's group "workers"; "default" is the default group."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert (await client.pre_reboot("node-w", "workers"))[0] == 200
        assert sem.read().semaphore.holders == ("node-w",)
        assert SemaphoreClient(store, "", key_prefix).read().semaphore.holders == ()

    run(etcd_node, key_prefix, scenario, group="workers")


def test_corrupt_document_is_a_server_error_and_untouched(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A corrupt semaphore document: 500 failed_corrupt_document on both operations, never overwritten."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        store.put(sem.key, b"{not json")
        before = stored_keys(store, key_prefix)
        for answer in (await client.pre_reboot("node-a"), await client.steady_state("node-a")):
            assert answer[0] == 500 and answer[1]["kind"] == "failed_corrupt_document"
        after = [k for k in stored_keys(store, key_prefix) if "/waiters/" not in k[0]]
        assert after == before

    run(etcd_node, key_prefix, scenario)


BAD_REQUESTS: list[tuple[str, dict[str, str], bytes, int, str]] = [
    ("no header", {}, body("a"), 400, "bad_request_header"),
    ("header false", {"fleet-lock-protocol": "false"}, body("a"), 400, "bad_request_header"),
    ("not json", {}, b"{nope", 400, "bad_request_body"),
    ("not utf-8", {}, b"\xff\xfe", 400, "bad_request_body"),
    ("json list", {}, b"[]", 400, "bad_request_body"),
    ("no client_params", {}, b"{}", 400, "bad_request_body"),
    ("client_params string", {}, b'{"client_params": "x"}', 400, "bad_request_body"),
    ("no id", {}, b'{"client_params": {"group": "default"}}', 400, "bad_request_body"),
    ("no group", {}, b'{"client_params": {"id": "a"}}', 400, "bad_request_body"),
    ("empty id", {}, body(""), 400, "bad_request_client_id"),
    ("id not a string", {}, b'{"client_params": {"id": 7, "group": "default"}}', 400, "bad_request_client_id"),
    ("id with space", {}, body("a b"), 400, "bad_request_client_id"),
    ("id with newline", {}, body("a\nb"), 400, "bad_request_client_id"),
    ("id too long", {}, body("a" * 300), 400, "bad_request_client_id"),
    ("empty group", {}, body("a", ""), 400, "bad_request_group"),
    ("group with slash", {}, body("a", "x/y"), 400, "bad_request_group"),
    ("group with underscore", {}, body("a", "x_y"), 400, "bad_request_group"),
    ("group not ascii", {}, body("a", "gr\u00fcn"), 400, "bad_request_group"),
    ("oversized body", {}, b'{"client_params": {"id": "a", "group": "default", "pad": "' + b"x" * 20000 + b'"}}',
     413, "bad_request_body_too_large"),
]


@pytest.mark.parametrize(("case", "headers", "data", "status", "kind"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_get_the_error_shape_and_change_nothing(etcd_node: EtcdCluster, key_prefix: str, case: str,
                                                             headers: dict[str, str], data: bytes, status: int,
                                                             kind: str) -> None:
    """Each bad request: its 4xx and kind, a non-empty value, and every stored key byte-for-byte unchanged."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        sem.lock("daemon-host")  # a document with a holder, so "unchanged" means something
        before = stored_keys(store, key_prefix)
        for path in ("/v1/pre-reboot", "/v1/steady-state"):
            sent = headers if case.startswith(("no header", "header")) else {"fleet-lock-protocol": "true", **headers}
            answer_status, error = await client.post(path, data, headers=sent)
            assert (answer_status, error["kind"]) == (status, kind), error
            assert isinstance(error["value"], str) and error["value"] and "\n" not in error["value"]
        assert stored_keys(store, key_prefix) == before

    run(etcd_node, key_prefix, scenario)


def test_unknown_path_and_method_get_the_error_shape(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """404 not_found and 405 method_not_allowed in the protocol's error shape."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert (await client.post("/v1/other", body("a")))[1]["kind"] == "not_found"
        async with client.session.get(f"{client.base}/v1/pre-reboot") as response:
            assert response.status == 405 and (await response.json())["kind"] == "method_not_allowed"

    run(etcd_node, key_prefix, scenario)


def test_health_probe_follows_etcd(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """GET /-/healthy is 200 while etcd answers and 503 failed_etcd_unavailable while it does not."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        async with client.session.get(f"{client.base}/-/healthy") as response:
            assert response.status == 200
        etcd_node.members[0].pause()
        try:
            async with client.session.get(f"{client.base}/-/healthy") as response:
                assert response.status == 503 and (await response.json())["kind"] == "failed_etcd_unavailable"
            status, error = await client.pre_reboot("node-a")
            assert status == 503 and error["kind"] in ("failed_etcd_unavailable", "request_timeout")
        finally:
            etcd_node.members[0].resume()

    run(etcd_node, key_prefix, scenario, request_timeout_s=5.0)


def test_locksmithctl_status_marks_fleetlock_holders_and_waiters(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """`locksmithctl status` says "via fleetlock" for a holder and a waiter; --json has source and via."""
    import subprocess
    import sys
    from pathlib import Path

    ctl = [str(Path(sys.executable).with_name("locksmithctl")), "--endpoint", etcd_node.client_urls[0],
           "--etcd-key-prefix", key_prefix, "status"]

    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        assert (await client.pre_reboot("fl-holder"))[0] == 200
        assert (await client.pre_reboot("fl-waiter"))[0] == 409
        text = subprocess.run([*ctl, "--waiters"], capture_output=True, text=True, timeout=30)
        assert text.returncode == 0, text.stderr
        holder_line = next(line for line in text.stdout.splitlines() if line.startswith("fl-holder "))
        waiter_line = next(line for line in text.stdout.splitlines() if line.startswith("fl-waiter "))
        assert "via fleetlock" in holder_line and "via fleetlock" in waiter_line
        report = json.loads(subprocess.run([*ctl, "--json"], capture_output=True, text=True, timeout=30).stdout)
        assert report["holder_state"]["fl-holder"]["source"] == "fleetlock"
        assert report["holder_info"]["fl-holder"]["source"] == "fleetlock"
        waiting = report["waiting"]
        assert [(w["id"], w["position"], w["via"]) for w in waiting] == [("fl-waiter", 1, "fleetlock")]
        assert waiting[0]["since"] and waiting[0]["age_s"] >= 0

    run(etcd_node, key_prefix, scenario)


def test_concurrency_bound_and_request_timeout(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """With etcd stalled and one request allowed at once: the first times out (503 request_timeout),
    a second at the same time is turned away at once (503 server_busy), and so is a third (or a probe) after
    the first gave up while its etcd call is still stuck (the bound counts calls, not waiting requests)."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        etcd_node.members[0].pause()
        try:
            first = asyncio.create_task(client.pre_reboot("slow-1"))
            await asyncio.sleep(0.3)
            status, error = await client.pre_reboot("slow-2")
            assert (status, error["kind"]) == (503, "server_busy")
            status, error = await first
            assert (status, error["kind"]) == (503, "request_timeout")
            # The first request gave up but its etcd call has not returned: it still counts.
            async with client.session.get(f"{client.base}/-/healthy") as response:
                assert response.status == 503 and (await response.json())["kind"] == "server_busy"
            status, error = await client.pre_reboot("slow-3")
            assert (status, error["kind"]) == (503, "server_busy")
        finally:
            etcd_node.members[0].resume()
        await asyncio.sleep(3.5)  # the stalled etcd call ends (its own timeout) before the test's store closes

    run(etcd_node, key_prefix, scenario, max_concurrent=1, request_timeout_s=1.5)


def test_oversized_chunked_body_is_refused(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A body without Content-Length (chunked) is cut off at the limit too: 413, nothing stored."""
    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 1024

    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        before = stored_keys(store, key_prefix)
        async with client.session.post(f"{client.base}/v1/pre-reboot", data=chunks(),
                                       headers={"fleet-lock-protocol": "true"}) as response:
            assert response.status == 413
            assert (await response.json())["kind"] == "bad_request_body_too_large"
        assert stored_keys(store, key_prefix) == before

    run(etcd_node, key_prefix, scenario)


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "locksmithd.fleetlock.access"]


def _server_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith(("locksmithd.fleetlock", "aiohttp"))]


FOREIGN_SLOTS = [
    ("daemon", {"source": "locksmithd"}),
    ("locksmithctl", {"source": "locksmithctl"}),
    ("go locksmith, no record", None),
    ("record without a source", {"hostname": "daemon-host"}),
]


@pytest.mark.parametrize(("case", "record"), FOREIGN_SLOTS, ids=[c[0] for c in FOREIGN_SLOTS])
def test_fleetlock_requests_never_act_on_a_slot_they_did_not_take(etcd_node: EtcdCluster, key_prefix: str,
                                                                  caplog: pytest.LogCaptureFixture, case: str,
                                                                  record: dict[str, Any] | None) -> None:
    """A slot taken by the daemon's path (etcd/lock.py) under id X: steady-state and pre-reboot naming X are
    403 failed_slot_not_fleetlock, one log line each, and every stored key is unchanged (the slot stays)."""
    from locksmithd.core.holder_record import new_record

    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        if case == "daemon":  # exactly what the etcd-lock strategy writes
            info: dict[str, Any] | None = new_record(
                now=datetime.now(timezone.utc), deadline_after=None, hostname="daemon-host", source="locksmithd",
                boot_id="b" * 32).to_info()
        else:
            info = record
        sem.write(sem.read().semaphore.lock("daemon-host", info), sem.read().mod_revision)
        before = stored_keys(store, key_prefix)
        for path in ("/v1/steady-state", "/v1/pre-reboot", "/v1/steady-state"):
            caplog.clear()
            status, error = await client.post(path, body("daemon-host"))
            assert (status, error["kind"]) == (403, "failed_slot_not_fleetlock"), error
            assert "not taken through FleetLock" in error["value"]
            assert stored_keys(store, key_prefix) == before
            assert len(_server_lines(caplog)) == 1, _server_lines(caplog)
            assert _access_lines(caplog)[0]["outcome"] == "failed_slot_not_fleetlock"
        assert sem.read().semaphore.holders == ("daemon-host",)

    with caplog.at_level("INFO"):
        run(etcd_node, key_prefix, scenario)


def test_fleetlock_requests_never_touch_a_daemons_queue_place(etcd_node: EtcdCluster, key_prefix: str) -> None:
    """A daemon's waiter key under id X (its value has no 'via'): pre-reboot and steady-state naming X are 403,
    and the key, its value and its lease are left as they were."""
    async def scenario(client: Client, sem: SemaphoreClient, store: EtcdStore) -> None:
        sem.lock("other-host")
        lease = store.grant_lease(60)
        key = waiter_key("daemon-host", "", key_prefix)
        store.put(key, json.dumps({"since": "2026-12-06T00:00:00.000+00:00", "ticket": 3}).encode(), lease)
        before = stored_keys(store, key_prefix)
        for path in ("/v1/pre-reboot", "/v1/steady-state"):
            status, error = await client.post(path, body("daemon-host"))
            assert (status, error["kind"]) == (403, "failed_slot_not_fleetlock"), error
            assert stored_keys(store, key_prefix) == before
        assert store.read_prefix(key)[0].lease == lease
        store.revoke_lease(lease)

    run(etcd_node, key_prefix, scenario)
