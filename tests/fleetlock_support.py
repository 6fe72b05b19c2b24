"""Test helpers for FleetLock: a real server in-process, a real HTTP client, and etcd snapshots."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import aiohttp

from locksmithd.etcd.client import EtcdStore
from locksmithd.etcd.connection import EtcdSettings, parse_endpoints
from locksmithd.fleetlock.server import FleetLockServer, ServerConfig

HEADERS = {"fleet-lock-protocol": "true"}


def etcd_settings(endpoints: list[str], key_prefix: str) -> EtcdSettings:
    return EtcdSettings(endpoints=parse_endpoints(endpoints, "test", "endpoints"), key_prefix=key_prefix,
                        request_timeout_s=3.0)


@asynccontextmanager
async def running_server(endpoints: list[str], key_prefix: str, **options: Any) -> AsyncIterator[FleetLockServer]:
    """A FleetLockServer on a free loopback port, stopped afterwards."""
    server = FleetLockServer(ServerConfig(etcd=etcd_settings(endpoints, key_prefix), host="127.0.0.1", port=0,
                                          **options))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def body(client_id: str, group: str = "default") -> bytes:
    return json.dumps({"client_params": {"id": client_id, "group": group}}).encode()


class Client:
    """A FleetLock client speaking HTTP to one or more servers (Zincati's requests)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def post(self, path: str, data: bytes, headers: dict[str, str] | None = None,
                   base: str | None = None) -> tuple[int, Any]:
        url = f"{base or self.base}{path}"
        async with self.session.post(url, data=data, headers=HEADERS if headers is None else headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def pre_reboot(self, client_id: str, group: str = "default", base: str | None = None) -> tuple[int, Any]:
        return await self.post("/v1/pre-reboot", body(client_id, group), base=base)

    async def steady_state(self, client_id: str, group: str = "default", base: str | None = None) -> tuple[int, Any]:
        return await self.post("/v1/steady-state", body(client_id, group), base=base)


def base_url(server: FleetLockServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def stored_keys(store: EtcdStore, key_prefix: str) -> list[tuple[str, bytes, int, int]]:
    """Every key under the test's prefix with value and revisions: "unchanged" means equal lists."""
    return [(entry.key, entry.value, entry.mod_revision, entry.create_revision)
            for entry in store.read_prefix(key_prefix)]
