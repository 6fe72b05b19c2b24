"""Strategy fleet-lock against hostile answers on real HTTP: only the protocol's 200 is a grant or a release.

A real aiohttp server on loopback plays what a wrong URL or a proxy answers
(a redirect to a login page, a web server's welcome page, JSON of another
shape) and what real FleetLock servers answer (airlock's empty 200,
locksmithd-fleetlock's ``{}``, poseidon/fleetlock's text). The strategy and
the real locksmithd daemon must never count the first kind as a slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web

from harness.fleet import HostOptions, SimulatedHost, wait_for
from locksmithd.core.fleetlock_protocol import PRE_REBOOT_PATH, STEADY_STATE_PATH, Reply, success_problem
from locksmithd.errors import FleetLockRefused
from locksmithd.strategies.fleet_lock import FleetLockStrategy

LOGIN_PAGE = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>\x1b[31mSSO\x1b[0m login</body></html>\n"
NGINX_PAGE = ("<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to nginx!</title>\n</head>\n<body>\n"
              "<h1>Welcome to nginx!</h1>\n" + "<p>padding</p>\n" * 200 + "</body>\n</html>\n")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answer(kind: str) -> Handler:
    """A handler answering as ``kind`` describes."""
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if kind == "redirect":
            raise web.HTTPFound("/login?next=/v1/pre-reboot&token=secret-token")
        if kind == "nginx":
            return web.Response(text=NGINX_PAGE, content_type="text/html")
        if kind == "wrong-json":
            return web.json_response({"status": "ok", "granted": True})
        if kind == "json-list":
            return web.json_response([{"kind": "ok", "value": "ok"}])
        if kind == "html-401":
            return web.Response(status=401, text=LOGIN_PAGE, content_type="text/html")
        if kind == "ours":
            return web.json_response({})
        if kind == "airlock":
            return web.Response(status=200)
        if kind == "poseidon":
            text = "steady-state confirmed" if request.path == STEADY_STATE_PATH else "obtained reboot lease"
            return web.Response(text=text)
        if kind == "full":
            return web.json_response({"kind": "failed_lock_semaphore_full", "value": "all slots are taken"},
                                     status=409)
        raise AssertionError(kind)
    return handle


@asynccontextmanager
async def hostile_server(pre_reboot: str, steady_state: str = "ours") -> AsyncIterator[tuple[str, Counter[str]]]:
    """A server on a free loopback port: its base URL and a count of the requests per method and path."""
    seen: Counter[str] = Counter()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen[f"{request.method} {request.path}"] += 1
        return await handler(request)

    async def login(request: web.Request) -> web.Response:
        return web.Response(text=LOGIN_PAGE, content_type="text/html")

    app = web.Application(middlewares=[count])
    app.router.add_post(PRE_REBOOT_PATH, _answer(pre_reboot))
    app.router.add_post(STEADY_STATE_PATH, _answer(steady_state))
    app.router.add_route("*", "/login", login)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def _strategy(url: str) -> FleetLockStrategy:
    return FleetLockStrategy(url, "fl-client-1", "default", poll_max_s=1.0)


BAD = ["redirect", "nginx", "wrong-json", "json-list", "html-401"]


@pytest.mark.parametrize("kind", BAD)
def test_foreign_answers_to_pre_reboot_are_never_a_grant(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """Polled for 3 s the strategy never counts the answer as a slot, never follows a redirect, and logs
    what came back once, in one escaped line naming status, content type and the body's start."""
    caplog.set_level(logging.DEBUG, logger="locksmithd.strategy")

    async def scenario() -> tuple[bool, Counter[str]]:
        async with hostile_server(kind) as (url, seen):
            strategy = _strategy(url)
            try:
                deadline = datetime.now(timezone.utc) + timedelta(seconds=3)
                return await strategy.acquire(deadline), seen
            finally:
                await strategy.close()

    granted, seen = asyncio.run(scenario())
    assert granted is False
    assert seen[f"POST {PRE_REBOOT_PATH}"] >= 2  # it kept asking: each answer was a refusal
    assert seen["GET /login"] == seen["POST /login"] == 0  # redirects are never followed
    assert seen[f"POST {STEADY_STATE_PATH}"] == 1  # leaving the queue at the deadline
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]  # logged once while it repeats
    line = refusals[0].getMessage()
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert "check LOCKSMITHD_FLEETLOCK_URL" in line and "counted as a refusal" in line
    assert "content type" in line and len(line) < 900
    expected = {"redirect": ["a redirect (302)", "location /login", "body"],
                "nginx": ["an HTML page", "text/html", "Welcome to nginx!"],
                "wrong-json": ["fields the protocol does not have (granted, status)", "application/json"],
                "json-list": ["JSON that is not an object"],
                "html-401": ["status 401", "text/html", "\\x1b[31mSSO"]}[kind]
    for needle in expected:
        assert needle in line, line
    assert "secret-token" not in line  # a redirect's query is not logged


@pytest.mark.parametrize("kind", ["ours", "airlock", "poseidon"])
def test_real_servers_answers_are_grants_and_releases(kind: str) -> None:
    """The 200s real FleetLock servers send: granted at the first request, released without error."""
    async def scenario() -> Counter[str]:
        async with hostile_server(kind, steady_state=kind) as (url, seen):
            strategy = _strategy(url)
            try:
                assert await strategy.acquire(None) is True
                await strategy.release()
            finally:
                await strategy.close()
            return seen

    seen = asyncio.run(scenario())
    assert seen == Counter({f"POST {PRE_REBOOT_PATH}": 1, f"POST {STEADY_STATE_PATH}": 1})


@pytest.mark.parametrize("kind", BAD + ["full"])
def test_steady_state_needs_the_protocols_answer_too(kind: str) -> None:
    """A foreign 200 (or a redirect) to steady-state is no release: FleetLockRefused, one escaped line."""
    async def scenario() -> FleetLockRefused:
        async with hostile_server("ours", steady_state=kind) as (url, seen):
            strategy = _strategy(url)
            try:
                with pytest.raises(FleetLockRefused) as caught:
                    await strategy.release()
            finally:
                await strategy.close()
            assert seen["GET /login"] == 0
            return caught.value

    error = asyncio.run(scenario())
    assert error.foreign is (kind != "full")
    assert "\n" not in error.one_line() and "\x1b" not in error.one_line()


def test_poseidon_texts_count_only_on_their_own_path() -> None:
    """poseidon/fleetlock's steady-state text is no grant, its grant text no release; any other text is neither."""
    def reply(text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
        return Reply(200, content_type, text.encode())

    assert success_problem(PRE_REBOOT_PATH, reply("obtained reboot lease")) is None
    assert success_problem(PRE_REBOOT_PATH, reply("retained reboot lease")) is None
    assert success_problem(STEADY_STATE_PATH, reply("steady-state confirmed")) is None
    assert success_problem(PRE_REBOOT_PATH, reply("steady-state confirmed")) is not None
    assert success_problem(STEADY_STATE_PATH, reply("obtained reboot lease")) is not None
    assert success_problem(PRE_REBOOT_PATH, reply("OK")) is not None
    assert success_problem(PRE_REBOOT_PATH, reply("")) is None  # airlock
    assert success_problem(PRE_REBOOT_PATH, reply("", "text/html")) is not None
    assert success_problem(PRE_REBOOT_PATH, reply(json.dumps({"kind": "k", "value": "v"}), "application/json")) is None
    assert success_problem(PRE_REBOOT_PATH, reply(json.dumps({"kind": 1}), "application/json")) is not None
    assert success_problem(PRE_REBOOT_PATH, Reply(200, "application/json", b"{}", truncated=True)) is not None
    assert success_problem(PRE_REBOOT_PATH, Reply(204, "", b"")) is not None


# -- the real daemon ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redirect", "nginx"])
def test_daemon_behind_a_foreign_answer_never_reboots(tmp_path: Path, kind: str) -> None:
    """A real locksmithd with REBOOT_STRATEGY=fleet-lock whose pre-reboot gets a redirect to a login page
    (or nginx's welcome page) keeps waiting: logind records no reboot, the line is logged once."""
    async def scenario() -> None:
        async with hostile_server(kind) as (url, seen):
            options = HostOptions(strategy="fleet-lock", retry_max="1s",
                                  extra_env={"LOCKSMITHD_FLEETLOCK_URL": url})
            host = SimulatedHost("fl-hostile", tmp_path / "host", ["http://127.0.0.1:9"], options=options)
            await host.start(needs_reboot=True)
            try:
                await wait_for(lambda: seen[f"POST {PRE_REBOOT_PATH}"] >= 4, 60, "four pre-reboot requests")
                assert host.daemon_state().get("DAEMON_STATE") == "waiting-for-lock", host.log_text()
                assert host.logind.reboots == []
                assert seen["GET /login"] == 0
            finally:
                await host.stop()
            log_text = host.log_text()
            lines = [line for line in log_text.splitlines() if "check LOCKSMITHD_FLEETLOCK_URL" in line]
            assert len(lines) == 1, log_text
            assert "Traceback" not in log_text

    asyncio.run(scenario())


def test_daemon_whose_steady_state_gets_a_foreign_answer_keeps_retrying(tmp_path: Path) -> None:
    """A real locksmithd whose steady-state (sent at every start) gets nginx's page has not released: it
    does not go idle, retries at LOCKSMITHD_RETRY_MAX, and logs the answer once as an error."""
    async def scenario() -> None:
        async with hostile_server("ours", steady_state="nginx") as (url, seen):
            options = HostOptions(strategy="fleet-lock", retry_max="1s",
                                  extra_env={"LOCKSMITHD_FLEETLOCK_URL": url, "LOCKSMITHD_HEALTH_SYSTEM_STATES": "any"})
            host = SimulatedHost("fl-hostile-ss", tmp_path / "host", ["http://127.0.0.1:9"], options=options)
            await host.start()
            try:
                await wait_for(lambda: seen[f"POST {STEADY_STATE_PATH}"] >= 4, 60, "four steady-state requests")
                assert host.daemon_state().get("DAEMON_STATE") != "idle", host.log_text()
                assert seen[f"POST {PRE_REBOOT_PATH}"] == 0
                assert host.logind.reboots == []
            finally:
                await host.stop()
            log_text = host.log_text()
            lines = [line for line in log_text.splitlines() if "not a FleetLock answer" in line]
            assert len(lines) == 1 and "ERROR" in lines[0], log_text
            assert "Welcome to nginx!" in lines[0] and "Traceback" not in log_text

    asyncio.run(scenario())
