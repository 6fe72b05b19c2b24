"""locksmithctl metrics: the group's figures in the Prometheus text exposition format."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import click

from locksmithd.ctl.context import CtlContext, handled


@click.command("metrics")
@click.pass_obj
@handled
def metrics(obj: CtlContext) -> None:
    """Print the group's figures (max, holders, waiters, halted, late and stale holders) for Prometheus.

    One scrape job or a node_exporter textfile collector on any host gives the
    whole group. A corrupt document is a figure (document_corrupt 1), not an
    error; etcd not answering exits 7.
    """
    from locksmithd.observe.group import read_group_figures
    from locksmithd.observe.metrics import group_exposition

    figures = read_group_figures(obj.semaphore(), obj.group, obj.etcd.key_prefix, datetime.now(timezone.utc))
    sys.stdout.buffer.write(group_exposition(figures))
    sys.stdout.buffer.flush()
