"""locksmithd-fleetlock: serve the FleetLock protocol from locksmithd's etcd semaphore (composition root, CLI)."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import resource
import signal
import ssl
import sys
from typing import NoReturn

import click

from locksmithd import __version__
from locksmithd.core.duration import parse_duration
from locksmithd.core.etcd_config import request_timeout_problem
from locksmithd.core.names import printable
from locksmithd.errors import ConfigError, LocksmithError, UsageError
from locksmithd.fleetlock.server import DEFAULT_MAX_CONNECTIONS, FleetLockServer, ServerConfig
from locksmithd.host.journal import OneLine, quiet_grpc
from locksmithd.settings.etcd_checks import check_readable_file
from locksmithd.settings.etcd_options import etcd_click_options, etcd_settings_from

ENV = "LOCKSMITHD_FLEETLOCK_"
SOURCE = "command line or LOCKSMITHD_FLEETLOCK_* environment"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_GRACE = "10m"
MIN_GRACE_S, MAX_GRACE_S = 2, 86_400  # etcd refuses shorter leases; a day is beyond any sane poll interval
MIN_REQUEST_TIMEOUT_S, MAX_REQUEST_TIMEOUT_S = 0.5, 300.0
SPARE_FILES = 64
"""Open files besides client connections: listeners, etcd channels, logs, TLS files."""
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^\s:\[\]]*)):(?P<port>[0-9]{1,5})")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` (port 0: any free port); UsageError otherwise."""
    match = _LISTEN.fullmatch(text)
    port = int(match["port"]) if match else -1
    if match is None or port > 65535:
        raise UsageError(f"--listen {printable(text, 100)!r}: expected HOST:PORT or [IPv6]:PORT, port 0-65535")
    return match["v6"] or match["host"] or "0.0.0.0", port


def parse_grace(text: str) -> int:
    """The grace time in whole seconds, from a Go duration; UsageError naming the option otherwise."""
    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as error:
        raise UsageError(f"--grace: {error}") from None
    if not MIN_GRACE_S <= seconds <= MAX_GRACE_S:
        raise UsageError(f"--grace {printable(text, 100)!r}: must be from {MIN_GRACE_S}s to 24h")
    return int(seconds)


def check_request_timeout(seconds: float) -> float:
    """A finite number of seconds in range (NaN passes click's range check: refused here); UsageError otherwise."""
    if not (math.isfinite(seconds) and MIN_REQUEST_TIMEOUT_S <= seconds <= MAX_REQUEST_TIMEOUT_S):
        raise UsageError(f"--request-timeout {seconds!r}: must be a number of seconds from "
                         f"{MIN_REQUEST_TIMEOUT_S:g} to {MAX_REQUEST_TIMEOUT_S:g}")
    return seconds


def check_open_files(max_connections: int) -> None:
    """Make room for ``max_connections`` under the open-file limit (raising the soft limit up to the hard one);
    ConfigError naming the option when the hard limit is too low, so the bound is hit before the limit."""
    needed = max_connections + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(SOURCE, f"{ENV}MAX_CONNECTIONS", str(max_connections),
                          f"needs {needed} open files but the limit is {hard} (LimitNOFILE= in the unit)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LOCKSMITHD_FLEETLOCK"})
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT", help="address to serve on")
@etcd_click_options(ENV)
@click.option("--grace", default=DEFAULT_GRACE, show_default=True,
              help="how long a queued client keeps its place (and the head its free slot) after its last request "
                   "(at least 2/3 of it; keep it above 1.5x the clients' poll interval)")
@click.option("--tls-cert", help="server certificate (PEM); serves https")
@click.option("--tls-key", help="server private key (PEM)")
@click.option("--tls-client-ca", help="CA certificates; clients must present a certificate signed by one")
@click.option("--max-concurrent", default=64, show_default=True, type=click.IntRange(1, 10_000),
              help="requests handled at once; more are answered 503 server_busy")
@click.option("--max-connections", default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              type=click.IntRange(1, 100_000),
              help="client connections open at once; more are answered 503 server_busy and closed")
@click.option("--request-timeout", default=10.0, show_default=True, type=float,
              help="seconds (0.5 to 300) for a request's headers, then its body, then its answer")
@click.option("--debug", is_flag=True, help="debug logging")
@click.version_option(__version__, "--version", prog_name="locksmithd-fleetlock")
def cli(listen: str, endpoints: tuple[str, ...], etcd_cafile: str | None, etcd_certfile: str | None,
        etcd_keyfile: str | None, etcd_username: str | None, etcd_password: str | None, etcd_key_prefix: str,
        etcd_timeout: float, grace: str, tls_cert: str | None, tls_key: str | None, tls_client_ca: str | None,
        max_concurrent: int, max_connections: int, request_timeout: float, debug: bool) -> None:
    """Serve FleetLock (Zincati's reboot lock protocol) from locksmithd's etcd semaphore.

    Every option can also be set as LOCKSMITHD_FLEETLOCK_<OPTION>, e.g.
    LOCKSMITHD_FLEETLOCK_ENDPOINT, LOCKSMITHD_FLEETLOCK_GRACE.
    """
    _configure_logging(debug)
    host, port = parse_listen(listen)
    problem = request_timeout_problem(etcd_timeout)
    if problem is not None:
        raise UsageError(f"--etcd-timeout {etcd_timeout!r}: {problem}")
    request_timeout = check_request_timeout(request_timeout)
    grace_s = parse_grace(grace)
    etcd = etcd_settings_from(click.get_current_context().params, SOURCE, ENV)  # checked like locksmithctl's
    cert, key, client_ca = _tls_files(tls_cert, tls_key, tls_client_ca)
    check_open_files(max_connections)
    config = ServerConfig(etcd=etcd, host=host, port=port, grace_s=grace_s, max_concurrent=max_concurrent,
                          max_connections=max_connections, request_timeout_s=request_timeout,
                          tls_cert=cert, tls_key=key, tls_client_ca=client_ca)
    asyncio.run(_serve(config))


def _tls_files(cert: str | None, key: str | None,
               client_ca: str | None) -> tuple[str | None, str | None, str | None]:
    """The server's TLS files, checked now (readable, a matching pair): a bad file is exit 3, not a 500 later."""
    if bool(cert) != bool(key):
        raise ConfigError(SOURCE, f"{ENV}TLS_KEY" if cert else f"{ENV}TLS_CERT", "",
                          "a server certificate and its key must be given together")
    if client_ca and not cert:
        raise ConfigError(SOURCE, f"{ENV}TLS_CLIENT_CA", client_ca, "client verification needs --tls-cert")
    for name, path in (("TLS_CERT", cert), ("TLS_KEY", key), ("TLS_CLIENT_CA", client_ca)):
        check_readable_file(path, SOURCE, f"{ENV}{name}")
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(SOURCE, f"{ENV}TLS_CERT", cert,
                              f"unusable server certificate or key: {printable(str(error), 200)}") from None
        if client_ca:
            try:
                context.load_verify_locations(cafile=client_ca)
            except (ssl.SSLError, ValueError) as error:
                raise ConfigError(SOURCE, f"{ENV}TLS_CLIENT_CA", client_ca,
                                  f"unusable client CA file: {printable(str(error), 200)}") from None
    return cert or None, key or None, client_ca or None


async def _serve(config: ServerConfig) -> None:
    """Serve until SIGTERM or SIGINT, then finish requests in flight."""
    server = FleetLockServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as error:
        await server.stop()
        raise LocksmithError(f"cannot listen on {config.host}:{config.port}: {error.strerror or error}") from None
    try:
        await stop.wait()
        logging.getLogger("locksmithd.fleetlock").info("stopping")
    finally:
        await server.stop()


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("locksmithd-fleetlock: %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OneLine())  # every message one escaped line: requests carry outside text
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    if not debug:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)


def fail(error: LocksmithError) -> NoReturn:
    """One escaped stderr line and the error's exit code."""
    click.echo(f"locksmithd-fleetlock: {printable(error.one_line(), 2000)}", err=True)
    sys.exit(int(error.exit_code))


def main(args: list[str] | None = None) -> None:
    """Console entry point: every outcome is an exit code and at most one stderr line."""
    quiet_grpc()
    try:
        cli.main(args=args, prog_name="locksmithd-fleetlock", standalone_mode=False)
    except click.ClickException as error:
        fail(UsageError(f"{printable(error.format_message(), 300)} (see 'locksmithd-fleetlock --help')"))
    except click.exceptions.Abort:
        sys.exit(0)
    except LocksmithError as error:
        fail(error)
    except Exception as error:  # a bug must still end as one line
        logging.getLogger("locksmithd.fleetlock").debug("unexpected error", exc_info=True)
        fail(LocksmithError(f"unexpected {type(error).__name__}: {printable(str(error), 200)}"))
    sys.exit(0)


if __name__ == "__main__":
    main()
