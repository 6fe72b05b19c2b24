"""locksmithctl's D-Bus commands: send-need-reboot and reboot."""

from __future__ import annotations

import click

from locksmithd.ctl.context import CtlContext, handled
from locksmithd.errors import LocksmithError


@click.command("send-need-reboot")
@click.pass_obj
@handled
def send_need_reboot(obj: CtlContext) -> None:
    """Emit update_engine's 'reboot needed' signal on the system bus."""
    from locksmithd.bus.need_reboot import send_need_reboot_sync

    send_need_reboot_sync(obj.bus_address)


@click.command()
@click.pass_obj
@handled
def reboot(obj: CtlContext) -> None:
    """Take this machine's slot and reboot through logind; release the slot if logind refuses."""
    import asyncio

    from locksmithd.bus.connection import connect, disconnect
    from locksmithd.bus.logind import LogindClient
    from locksmithd.host.holder_info import describe_holder

    holder = obj.default_id(None)
    client = obj.semaphore()
    client.lock(holder, describe_holder(source="locksmithctl reboot"))

    async def ask_logind() -> None:
        bus = await connect(obj.bus_address)
        try:
            await LogindClient(bus).reboot()
        finally:
            await disconnect(bus)

    try:
        asyncio.run(ask_logind())
    except LocksmithError:
        client.unlock(holder)
        raise
    click.echo(f"{holder} holds a slot; reboot requested")
