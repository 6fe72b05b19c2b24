"""locksmithd entry point: read settings once, wire the adapters, run, map errors to exit codes."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from locksmithd import __version__
from locksmithd.core.backoff import Backoff
from locksmithd.core.names import printable
from locksmithd.errors import BusError, ConfigError, ExitCode, LocksmithError
from locksmithd.host.journal import quiet_grpc
from locksmithd.settings import COMMAND_LINE, FLAGS, Setting

if TYPE_CHECKING:  # imported lazily at run time: --help and config errors need neither D-Bus nor etcd
    from dbus_fast.aio import MessageBus

    from locksmithd.host.journal import Notifier
    from locksmithd.host.journal_events import JournalFields
    from locksmithd.host.statefile import CoordinatorFile
    from locksmithd.settings import DaemonSettings
    from locksmithd.strategies.base import RebootStrategy

log = logging.getLogger("locksmithd")
F = TypeVar("F", bound=Callable[..., Any])

CONNECT_FIRST_DELAY_S = 0.5
# Flags whose repetitions add up (like the comma-separated value); any other flag may be given once.
REPEATABLE = frozenset({"--endpoint"})
EXIT_HELP = ("\b\nExit codes: 0 stopped or strategy off; 1 unexpected failure; 3 invalid configuration; "
             "4 no machine id; 11 D-Bus unusable; 12 another coordinator runs on this host.")


def _param(row: Setting[object]) -> str:
    assert row.flag is not None
    return row.flag.removeprefix("--").replace("-", "_")


def _flag_options(func: F) -> F:
    """One click option per row of the settings table that has a flag."""
    for flag, row in reversed(list(FLAGS.items())):
        default = f"; default {row.default_text()}" if row.default_text() else ""
        text = f"{row.meaning} (overrides {row.key}{default})"
        if row.switch:
            func = click.option(flag, _param(row), is_flag=True, default=None, help=text)(func)
        else:
            func = click.option(flag, _param(row), multiple=True, metavar="VALUE", help=text)(func)
    return func


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_HELP)
@_flag_options
@click.option("--conf", "conf_paths", multiple=True, metavar="PATH",
              help="read these KEY=value files (which must exist) instead of the update.conf and "
                   "locksmithd.conf defaults")
@click.version_option(__version__, "--version", prog_name="locksmithd")
def cli(conf_paths: tuple[str, ...], **flags: tuple[str, ...] | bool | None) -> None:
    """Coordinate this host's reboots after updates (etcd semaphore, update_engine, logind)."""
    from locksmithd.host.reads import HOST_READS
    from locksmithd.settings import DEFAULT_CONF_PATHS, load_settings

    try:
        given = _given_flags(flags)
        # The only place the environment is read.
        settings = load_settings(os.environ, given, conf_paths=conf_paths or DEFAULT_CONF_PATHS,
                                 host=HOST_READS, conf_must_exist=bool(conf_paths))
    except LocksmithError as error:
        click.echo(f"locksmithd: {error.one_line()}", err=True)
        sys.exit(int(error.exit_code))
    from locksmithd.host.journal import setup_logging
    from locksmithd.host.journal_events import JournalFields

    fields = JournalFields(settings.group, settings.machine_id)
    journal = fields if setup_logging(settings.debug, settings.journal_stream, fields=fields) else None
    if FLAGS["--etcd-password"].key in given:
        log.warning("--etcd-password on the command line is visible to every user in ps; use "
                    "LOCKSMITHD_ETCD_PASSWORD_FILE or LoadCredential=etcd-password in the unit")
    for source, key in settings.unknown_keys:
        log.warning("ignoring unknown setting %s from %s", printable(key), printable(source))
    try:
        code = asyncio.run(_run(settings, journal))
    except LocksmithError as error:
        log.error("%s", error.one_line())
        code = error.exit_code
    sys.exit(int(code))


def _given_flags(flags: dict[str, tuple[str, ...] | bool | None]) -> dict[str, str]:
    """{settings key: text} for the flags given; ConfigError for a flag given twice."""
    given: dict[str, str] = {}
    for flag, row in FLAGS.items():
        value = flags.get(_param(row))
        if value is None or value == ():
            continue
        if isinstance(value, bool):
            given[row.key] = "1" if value else "0"
        elif len(value) > 1 and flag not in REPEATABLE:
            raise ConfigError(COMMAND_LINE, flag, "(hidden)" if row.secret else value[-1],
                              f"given {len(value)} times; give it once")
        else:
            given[row.key] = ",".join(value)
    return given


PACKAGE_REMOVAL_MARKER = "package-removal"
"""Written beside the state file by the Debian package's prerm before ``apt remove`` stops the daemon."""


def _stop_on_signals(main: asyncio.Task[Any], removal_marker: str) -> None:
    """SIGTERM/SIGINT cancel ``main`` once; a repeated signal during the clean stop is only logged.

    Installed first thing, so a stop at any moment (connecting, releasing,
    cleaning up) is a clean exit 0, never a CancelledError traceback. When
    ``removal_marker`` exists (the package is being removed), the stop writes
    nothing to etcd: the process exits at once, so a held slot stays held and
    a queue place lapses with its lease (README "Remove and purge").
    """
    loop = asyncio.get_running_loop()
    stopping: list[int] = []

    def stop(signum: int) -> None:
        if stopping:
            log.info("already stopping (signal %d ignored)", signum)
            return
        stopping.append(signum)
        if os.path.lexists(removal_marker):
            log.warning("stopping for the package's removal: nothing is written to etcd (a slot this host holds "
                        "stays held, a queue place lapses with its lease)")
            logging.shutdown()
            os._exit(int(ExitCode.OK))
        main.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)


async def _run(settings: DaemonSettings, journal: JournalFields | None = None) -> ExitCode:
    main = asyncio.current_task()
    assert main is not None
    _stop_on_signals(main, os.path.join(os.path.dirname(settings.state_file), PACKAGE_REMOVAL_MARKER))
    try:
        return await _run_signalled(settings, journal)
    except asyncio.CancelledError:  # stopped before the daemon ran (while starting): a clean stop
        log.info("stopped while starting")
        return ExitCode.OK


async def _run_signalled(settings: DaemonSettings, journal: JournalFields | None = None) -> ExitCode:
    from locksmithd.host.journal import Notifier
    from locksmithd.host.statefile import CoordinatorFile
    from locksmithd.strategies import make_strategy

    coordinator = CoordinatorFile(settings.state_file)
    coordinator.acquire()
    try:
        strategy = make_strategy(settings.strategy, settings.strategy_config(), hostname=socket.gethostname())
        if not strategy.enabled:
            log.info("reboot strategy is 'off': nothing to coordinate, exiting")
            coordinator.write("off", "running")
            return ExitCode.OK
        log.info("locksmithd %s starting: %s", __version__, settings.describe())
        coordinator.write(strategy.label, "starting", "starting")
        try:
            return await _serve(settings, strategy, coordinator, Notifier(settings.notify_socket), journal)
        finally:
            await strategy.close()
    finally:
        coordinator.release()


async def _serve(settings: DaemonSettings, strategy: RebootStrategy, coordinator: CoordinatorFile,
                 notifier: Notifier, journal: JournalFields | None = None) -> ExitCode:
    """Connect to D-Bus (retrying), then run the daemon until a stop signal or a lost bus."""
    from locksmithd.bus.connection import connect, disconnect

    main = asyncio.current_task()
    assert main is not None
    backoff = Backoff(CONNECT_FIRST_DELAY_S, settings.retry_max_s, random.Random())
    try:
        bus = await _connect_with_retry(connect, settings.bus_address, backoff)
    except asyncio.CancelledError:
        log.info("stopped while connecting to D-Bus")
        return ExitCode.OK
    try:
        return await _serve_on_bus(settings, strategy, coordinator, notifier, bus, main, journal)
    finally:
        await disconnect(bus)


async def _serve_on_bus(settings: DaemonSettings, strategy: RebootStrategy, coordinator: CoordinatorFile,
                        notifier: Notifier, bus: MessageBus, main: asyncio.Task[Any],
                        journal: JournalFields | None = None) -> ExitCode:
    """Watch update_engine and run the state machine; cancelling ``main`` stops both cleanly."""
    from locksmithd.bus.logind import LogindClient
    from locksmithd.bus.systemd import SystemdChanges, SystemdClient
    from locksmithd.daemon.boot_id import resolve_boot_id
    from locksmithd.daemon.health import HealthGateOnWallClock
    from locksmithd.daemon.hooks import Hooks
    from locksmithd.daemon.observing import Observers
    from locksmithd.daemon.run import Daemon
    from locksmithd.daemon.supervise import Supervisor, watchdog_interval_s
    from locksmithd.host.wall import reboot_notice, write_to_terminals

    from locksmithd.daemon.sources import RebootNeed, Source, make_sources, start_sources

    observers = Observers(settings, strategy)
    if journal is not None:  # one structured entry per event, with a fixed MESSAGE_ID (journal only)
        from locksmithd.host.journal_events import journal_listener

        observers.add_listener(journal_listener(journal))
    need = RebootNeed(strategy, observers.event)  # the one emitter of "reboot-needed"
    sources = make_sources(settings, need, bus)
    started: list[Source] = []
    logind = LogindClient(bus)
    daemon = Daemon(
        strategy, logind, settings=settings, publisher=coordinator, reboot_needed=need.event,
        health=(HealthGateOnWallClock(settings.health_policy(), SystemdClient(bus), env=settings.command_env,
                                      changes=SystemdChanges(bus)) if strategy.uses_lock else None),
        inhibitors=None if settings.ignore_inhibitors else logind.list_inhibitors,
        hooks=Hooks(settings.pre_reboot_dir, settings.post_boot_dir, settings.hook_timeout_s, group=settings.group,
                    holder=settings.machine_id, environ=settings.command_env),
        warn_users=lambda ttys, delay: write_to_terminals(ttys, reboot_notice(socket.gethostname(), delay)),
        notify=lambda text: supervisor.note(text), on_event=observers.event)
    supervisor = Supervisor(notifier, state=lambda: daemon.state,
                            watchdog_s=watchdog_interval_s(settings.watchdog_usec, settings.watchdog_pid, os.getpid()),
                            position=strategy.queue_position)
    stop_reason: dict[str, ExitCode] = {"code": ExitCode.OK}

    async def bus_lost() -> None:
        # Shielded: cancelling this task must not cancel dbus-fast's shared disconnect future.
        await asyncio.shield(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]  # untyped upstream
        log.error("lost the D-Bus connection; exiting so systemd restarts us")
        stop_reason["code"] = ExitCode.BUS
        main.cancel()

    if strategy.uses_lock:  # recorded with the slot; in a container it takes systemd's word (daemon/boot_id.py)
        strategy.boot_id = await resolve_boot_id(SystemdClient(bus), settings.boot_id_path)
    await observers.start()  # before the daemon runs: a bad address is a config error at start-up
    watching: asyncio.Task[None] | None = None
    if (stale := strategy.stale_holders()) is not None:  # a holder that never comes back, noticed by all
        from locksmithd.core.states import State
        from locksmithd.daemon.group_watch import GroupWatch

        watch = GroupWatch(stale, busy=lambda: daemon.state is State.WAITING_FOR_LOCK, seen=observers.group_seen)
        watching = asyncio.create_task(watch.run(), name="group watch")
    if settings.test_block_loop:  # tests only: a wedged loop, to prove the watchdog pings stop
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, _block_the_loop)
    lost = asyncio.create_task(bus_lost())
    supervising = asyncio.create_task(supervisor.run())
    run = asyncio.create_task(daemon.run())
    try:
        await start_sources(sources, started)
        notifier.send(READY="1")
        supervisor.note(daemon.state.value)
        await run
    except asyncio.CancelledError:
        supervisor.stopping()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        lost.cancel()
        supervising.cancel()
        if watching is not None:
            watching.cancel()
        for source in started:
            await source.stop()
        await observers.stop()
    return stop_reason["code"]


def _block_the_loop() -> None:
    log.warning("LOCKSMITHD_TEST_BLOCK_LOOP: blocking the event loop on SIGUSR2")
    time.sleep(3600)


async def _connect_with_retry(connect: Callable[[str | None], Awaitable[MessageBus]], address: str | None,
                              backoff: Backoff, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                              ) -> MessageBus:
    """Connect to the bus, retrying with ``backoff`` (jittered, capped) until it answers.

    The address was checked by the settings loader, so what is retried here is
    a bus that is not up yet (or not any more), never a typo.
    """
    while True:
        try:
            bus = await connect(address)
        except BusError as error:
            delay_s = backoff.next_delay_s()
            log.warning("%s; retrying in %.1fs", error.one_line(), delay_s)
            await sleep(delay_s)
        else:
            backoff.reset()
            return bus


def main() -> None:
    """Console entry point."""
    quiet_grpc()
    cli(prog_name="locksmithd")


if __name__ == "__main__":
    main()
