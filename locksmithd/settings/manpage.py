"""Man pages (roff) and the packaged locksmithd.conf, rendered from click commands and the settings table.

One source, as for the README's table: the options of each page are the
command's own click parameters (what ``--help`` prints), the settings are the
rows of ``table.SETTINGS``. ``contrib/render_docs.py`` passes in the three
commands (settings never imports an entry point) and writes ``contrib/man/``
and ``contrib/locksmithd.conf``; tests/test_rendered_docs.py fails when a
committed file differs from its rendering.
"""

from __future__ import annotations

import re
import shlex
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import click

from locksmithd.settings.table import SETTINGS, Setting

_CODE = re.compile(r"`([^`]*)`")
DATE = "2026-12-06"
"""The pages' date: fixed, so a rendering does not change with the day it runs."""


@dataclass(frozen=True)
class Page:
    """What a page adds to its command's options: name, section, one-line summary and prose sections."""

    name: str
    section: int
    summary: str
    sections: Sequence[tuple[str, str]] = ()


def escape(text: str) -> str:
    """``text`` safe inside a roff line: backslashes, minus signs, and a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def inline(text: str) -> str:
    """Escaped text with Markdown-style `code` set in bold, as the README writes it."""
    parts = _CODE.split(text)
    return "".join(f"\\fB{escape(part)}\\fR" if odd else escape(part) for odd, part in
                   ((index % 2 == 1, part) for index, part in enumerate(parts)))


def plain(text: str) -> str:
    """Text without the Markdown backticks (for the configuration file's comments)."""
    return _CODE.sub(r"\1", text)


def _header(page: Page, version: str) -> list[str]:
    return [f'.TH "{page.name.upper()}" "{page.section}" "{DATE}" "locksmithd {version}" "locksmithd"',
            ".SH NAME", f"{escape(page.name)} \\- {escape(page.summary)}"]


def _prose(sections: Sequence[tuple[str, str]]) -> list[str]:
    """Sections of paragraphs; a paragraph whose lines start with two spaces is set verbatim."""
    lines: list[str] = []
    for title, body in sections:
        lines.append(f".SH {title.upper()}")
        for paragraph in body.strip("\n").split("\n\n"):
            if paragraph.startswith("  "):
                lines += [".PP", ".nf", *(inline(line.strip()) for line in paragraph.splitlines()), ".fi"]
            else:
                lines += [".PP", inline(" ".join(paragraph.split()))]
    return lines


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    """The command's visible options as --help shows them, one .TP each."""
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f"\\fB{escape(names)}\\fR", inline(" ".join(help_text.split())) or "\\&"]
        envvar = _envvar(param, ctx)
        if envvar:
            lines += [".br", f"Environment: \\fB{escape(envvar)}\\fR."]
    return lines


def _envvar(param: click.Parameter, ctx: click.Context) -> str | None:
    """The variable click reads the option from: its own, else the command's automatic prefix."""
    if isinstance(param.envvar, str):
        return param.envvar
    if isinstance(param, click.Option) and param.allow_from_autoenv and ctx.auto_envvar_prefix and param.name:
        return f"{ctx.auto_envvar_prefix}_{param.name.upper()}"
    return None


def _epilog(command: click.Command) -> list[str]:
    """The command's epilog (its exit codes) as verbatim lines, click's \\b markers dropped."""
    text = "\n".join(line for line in (command.epilog or "").splitlines() if line.strip() != "\b")
    return [".PP", ".nf", *(escape(line.rstrip()) for line in textwrap.dedent(text).strip().splitlines()), ".fi"]


def command_page(command: click.Command, page: Page, version: str) -> str:
    """The roff page of ``command``: synopsis, description, options, subcommands, exit status, prose."""
    ctx = click.Context(command, info_name=page.name, **command.context_settings)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = _header(page, version)
    lines += [".SH SYNOPSIS", f"\\fB{escape(page.name)}\\fR {escape(usage)}"]
    lines += [".SH DESCRIPTION", inline(" ".join((command.help or page.summary).split()))]
    lines += [".SH OPTIONS", *_options(command, ctx)]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            sub_ctx = click.Context(sub, info_name=name, parent=ctx)
            lines += [".SS", f"\\fB{escape(name)}\\fR {escape(' '.join(sub.collect_usage_pieces(sub_ctx)))}",
                      ".PP", inline(" ".join((sub.help or "").split()))]
            options = _options(sub, sub_ctx)
            if len(options) > 3:  # more than --help
                lines += [".RS", *options, ".RE"]
    if command.epilog:
        lines += [".SH EXIT STATUS", *_epilog(command)]
    lines += _prose(page.sections)
    return "\n".join(lines) + "\n"


def _shown_default(row: Setting[object]) -> str:
    return row.default_text() or "unset"


def settings_page(page: Page, version: str) -> str:
    """locksmithd.conf(5): the file's syntax and every operator setting with its flag and default."""
    lines = _header(page, version)
    lines += [".SH SYNOPSIS", "\\fI/etc/locksmithd/locksmithd.conf\\fR"]
    lines += _prose(page.sections[:1])
    lines.append(".SH SETTINGS")
    for row in SETTINGS:
        if not row.operator:
            continue
        flag = f" (\\fB{escape(row.flag)}\\fR)" if row.flag else ""
        lines += [".TP", f"\\fB{escape(row.key)}\\fR{flag}", inline(row.meaning) + ".",
                  f"Default: {inline(_shown_default(row))}."]
        if row.aliases:
            lines.append("Also read as " + ", ".join(f"\\fB{escape(alias)}\\fR" for alias in row.aliases) + ".")
    lines += _prose(page.sections[1:])
    return "\n".join(lines) + "\n"


def conffile_text() -> str:
    """/etc/locksmithd/locksmithd.conf as packaged: every operator setting commented out with its default.

    Uncommenting a line as it stands sets the default (a row without one is
    shown empty), so the file documents the defaults the daemon uses.
    """
    out = ["# locksmithd's settings (locksmithd.conf(5)): shell-style KEY=value lines, read after the",
           "# update.conf files and before the environment and command-line flags. Every setting is",
           "# listed commented out with its default; uncomment a line to change it, then",
           "# `systemctl restart locksmithd` (settings are read once, at start).",
           "#",
           "# Rendered from locksmithd/settings/table.py (contrib/render_docs.py).",
           ""]
    for row in SETTINGS:
        if not row.operator:
            continue
        about = plain(row.meaning)
        if row.flag:
            about += f" (flag {row.flag})"
        if row.shown_default is not None:
            about += f"; default: {plain(row.shown_default) or 'empty'}"
        out += textwrap.wrap(about, width=96, initial_indent="# ", subsequent_indent="# ",
                             break_on_hyphens=False, break_long_words=False)
        value = row.default or ""
        out += [f"#{row.key}={shlex.quote(value) if value else ''}", ""]
    return "\n".join(out[:-1]) + "\n"
