"""locksmithd entry point: read settings once, wire the adapters, run, map errors to exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Any

import click

from locksmithd import __version__
from locksmithd.host.journal import quiet_grpc
from locksmithd.errors import BusError, ExitCode, LocksmithError

log = logging.getLogger("locksmithd")

# flag name -> settings key; flags are the highest-priority source.
FLAG_KEYS = {
    "strategy": "REBOOT_STRATEGY",
    "endpoint": "LOCKSMITHD_ENDPOINT",
    "group": "LOCKSMITHD_GROUP",
    "etcd_cafile": "LOCKSMITHD_ETCD_CAFILE",
    "etcd_certfile": "LOCKSMITHD_ETCD_CERTFILE",
    "etcd_keyfile": "LOCKSMITHD_ETCD_KEYFILE",
    "etcd_username": "LOCKSMITHD_ETCD_USERNAME",
    "etcd_password": "LOCKSMITHD_ETCD_PASSWORD",
    "etcd_key_prefix": "LOCKSMITHD_ETCD_KEY_PREFIX",
    "reboot_window_start": "LOCKSMITHD_REBOOT_WINDOW_START",
    "reboot_window_length": "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
    "machine_id": "LOCKSMITHD_MACHINE_ID",
    "state_file": "LOCKSMITHD_STATE_FILE",
    "login_delay": "LOCKSMITHD_LOGIN_DELAY",
}
EXIT_HELP = ("\b\nExit codes: 0 stopped or strategy off; 1 unexpected failure; 3 invalid configuration; "
             "4 no machine id; 11 D-Bus unusable; 12 another coordinator runs on this host.")


def _flag_options(func: Any) -> Any:
    for name in reversed(FLAG_KEYS):
        func = click.option(f"--{name.replace('_', '-')}", name, default=None,
                            help=f"overrides {FLAG_KEYS[name]}")(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@_flag_options
@click.option("--debug", is_flag=True, default=None, help="verbose logging")
@click.option("--conf", "conf_paths", multiple=True, metavar="PATH",
              help="read these KEY=value files instead of the update.conf and locksmithd.conf defaults")
@click.version_option(__version__, "--version", prog_name="locksmithd")
def cli(debug: bool | None, conf_paths: tuple[str, ...], **flags: str | None) -> None:
    """Coordinate this host's reboots after updates (etcd semaphore, update_engine, logind)."""
    from locksmithd.settings import DEFAULT_CONF_PATHS, load_settings

    given = {FLAG_KEYS[name]: value for name, value in flags.items() if value is not None}
    if debug:
        given["LOCKSMITHD_DEBUG"] = "1"
    try:
        # The only place the environment is read.
        settings = load_settings(os.environ, given, conf_paths=conf_paths or DEFAULT_CONF_PATHS)
    except LocksmithError as error:
        click.echo(f"locksmithd: {error.one_line()}", err=True)
        sys.exit(int(error.exit_code))
    from locksmithd.host.journal import setup_logging

    setup_logging(settings.debug, os.environ.get("JOURNAL_STREAM"))
    for source, key in settings.unknown_keys:
        log.warning("ignoring unknown setting %s from %s", key, source)
    try:
        code = asyncio.run(_run(settings, os.environ.get("NOTIFY_SOCKET")))
    except LocksmithError as error:
        log.error("%s", error.one_line())
        code = error.exit_code
    sys.exit(int(code))


async def _run(settings: Any, notify_socket: str | None) -> ExitCode:
    from locksmithd.host.journal import Notifier
    from locksmithd.host.statefile import CoordinatorFile
    from locksmithd.strategies import make_strategy

    coordinator = CoordinatorFile(settings.state_file)
    coordinator.acquire()
    try:
        strategy = make_strategy(settings, lambda: _holder_info(settings))
        if not strategy.enabled:
            log.info("reboot strategy is 'off': nothing to coordinate, exiting")
            coordinator.write("off", "running")
            return ExitCode.OK
        log.info("locksmithd %s starting: %s", __version__, settings.describe())
        coordinator.write(strategy.label, "starting", "starting")
        try:
            return await _serve(settings, strategy, coordinator, Notifier(notify_socket))
        finally:
            await strategy.close()
    finally:
        coordinator.release()


async def _serve(settings: Any, strategy: Any, coordinator: Any, notifier: Any) -> ExitCode:
    from locksmithd.bus.connection import connect, disconnect
    from locksmithd.bus.logind import LogindClient
    from locksmithd.bus.update_engine import UpdateEngineWatcher
    from locksmithd.daemon.run import Daemon
    from locksmithd.host.wall import reboot_notice, write_to_terminals

    bus = await _connect_with_retry(connect, settings.bus_address, settings.retry_max_s)
    reboot_needed = asyncio.Event()

    def on_status(status: Any) -> None:
        log.debug("update_engine status: %s", status.current_operation)
        if status.needs_reboot and not reboot_needed.is_set():
            reboot_needed.set()

    watcher = UpdateEngineWatcher(on_status)
    daemon = Daemon(
        strategy, LogindClient(bus), window=settings.window, publisher=coordinator, reboot_needed=reboot_needed,
        login_delay_s=settings.login_delay_s, retry_max_s=settings.retry_max_s,
        warn_users=lambda ttys, delay: write_to_terminals(ttys, reboot_notice(socket.gethostname(), delay)),
        notify=lambda state: notifier.send(STATUS=state))
    main = asyncio.current_task()
    assert main is not None
    stop_reason: dict[str, ExitCode] = {"code": ExitCode.OK}
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)

    async def bus_lost() -> None:
        # Shielded: cancelling this task must not cancel dbus-fast's shared disconnect future.
        await asyncio.shield(bus.wait_for_disconnect())
        log.error("lost the D-Bus connection; exiting so systemd restarts us")
        stop_reason["code"] = ExitCode.BUS
        main.cancel()

    lost = asyncio.create_task(bus_lost())
    run = asyncio.create_task(daemon.run())
    try:
        await watcher.start(bus)
        notifier.send(READY="1", STATUS="running")
        await run
    except asyncio.CancelledError:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    finally:
        lost.cancel()
        await watcher.stop()
        await disconnect(bus)
    return stop_reason["code"]


async def _connect_with_retry(connect: Any, address: str | None, retry_max_s: float) -> Any:
    delay = 0.5
    while True:
        try:
            return await connect(address)
        except BusError as error:
            log.warning("%s; retrying in %.1fs", error.one_line(), delay)
            await asyncio.sleep(delay)
            delay = min(retry_max_s, delay * 2)


def _holder_info(settings: Any) -> dict[str, str]:
    from locksmithd.host.holder_info import describe_holder
    from locksmithd.host.identity import read_boot_id

    return describe_holder(source="locksmithd", boot_id=read_boot_id(settings.boot_id_path))


def main() -> None:
    """Console entry point."""
    quiet_grpc()
    cli(prog_name="locksmithd")


if __name__ == "__main__":
    main()
