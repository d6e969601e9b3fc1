"""``asyncmail bounces PATH... --report bounces.csv``: read a mailbox of bounces into a CSV.

PATH is a Maildir (a folder with ``cur/`` and/or ``new/``), an mbox file, or one message
file (``.eml``). Every message goes through ``asyncmail.bounces.parse``; the CSV has one row
per bounced recipient, with the columns of ``COLUMNS`` (``hard`` is ``true``/``false``).

Exit codes: 0 done (whatever the messages said); 2 a usage error: a path that is missing or
is neither a Maildir, an mbox nor a message, a bad ``--verp`` template, an unwritable report.
"""

from __future__ import annotations

import csv
import mailbox
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from .._exceptions import MessageError
from ..bounces import Bounce, parse
from ..message._verp import check_template
from ..suppression._import import BOUNCE_COLUMNS

__all__ = ["COLUMNS", "bounces"]

#: The report's columns (what ``asyncmail suppress import`` reads); ``recipient`` is the
#: original recipient.
COLUMNS = BOUNCE_COLUMNS
EXIT_USAGE = 2
_HEADER_LINE = re.compile(rb"[!-9;-~]{1,200}:")  # a header field name, then a colon
_SNIFF = 4096


@dataclass
class _Counts:
    messages: int = 0
    bounces: int = 0
    recipients: int = 0
    hard: int = 0
    soft: int = 0
    complaints: int = 0
    other: int = 0
    unreadable: int = 0

    def add(self, bounce: Bounce | None) -> None:
        self.messages += 1
        if bounce is None:
            return
        self.bounces += 1
        for recipient in bounce.recipients:
            self.recipients += 1
            if recipient.hard:
                self.hard += 1
            elif recipient.action in ("failed", "delayed"):
                self.soft += 1
            elif recipient.action == "complained":
                self.complaints += 1
            else:
                self.other += 1

    def summary(self) -> str:
        unreadable = f", {self.unreadable} unreadable" if self.unreadable else ""
        return (
            f"read {self.messages} messages: {self.bounces} bounces "
            f"({self.recipients} recipients: {self.hard} hard, {self.soft} soft, "
            f"{self.complaints} complaints, {self.other} other), "
            f"{self.messages - self.bounces} not bounces{unreadable}"
        )


def _usage(message: str) -> click.exceptions.Exit:
    click.echo(f"error: {message}", err=True)
    return click.exceptions.Exit(EXIT_USAGE)


def _kind_of(path: Path) -> str:
    """``maildir``, ``mbox`` or ``message``; raises the usage error for anything else."""
    if not path.exists():
        raise _usage(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "cur").is_dir() or (path / "new").is_dir():
            return "maildir"
        raise _usage(f"{path}: a folder but not a Maildir (it has no cur/ or new/ folder)")
    try:
        with path.open("rb") as file:
            head = file.read(_SNIFF)
    except OSError as exc:
        raise _usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head or head.startswith(b"From "):
        return "mbox"
    if _HEADER_LINE.match(head.lstrip(b"\r\n")):
        return "message"
    raise _usage(f"{path}: neither an mbox (first line 'From ...') nor a message (headers)")


def _messages(path: Path, kind: str, counts: _Counts) -> Iterator[tuple[str, bytes]]:
    """(source, raw bytes) of every message at ``path``."""
    if kind == "maildir":
        for folder in ("new", "cur"):
            entries = sorted((path / folder).iterdir()) if (path / folder).is_dir() else []
            for entry in entries:
                if not entry.is_dir() and not entry.name.startswith("."):
                    yield from _read_file(entry, counts)
    elif kind == "mbox":
        box = mailbox.mbox(path, create=False)
        try:
            for number, key in enumerate(box.keys(), start=1):
                yield f"{path}#{number}", box.get_bytes(key)
        finally:
            box.close()
    else:
        yield from _read_file(path, counts)


def _read_file(path: Path, counts: _Counts) -> Iterator[tuple[str, bytes]]:
    try:
        data = path.read_bytes()
    except OSError as exc:  # removed or unreadable while we ran: say so, go on
        counts.unreadable += 1
        click.echo(f"skipped {path}: {exc.strerror or exc}", err=True)
        return
    yield str(path), data


def _rows(source: str, bounce: Bounce) -> Iterator[list[str]]:
    for recipient in bounce.recipients:
        yield [
            source,
            recipient.original_recipient,
            recipient.action,
            recipient.status,
            recipient.diagnostic,
            bounce.original_message_id or "",
            recipient.verp_recipient or "",
            "true" if recipient.hard else "false",
            bounce.kind,
        ]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--report",
    default="bounces.csv",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The CSV to write: one row per bounced recipient.",
)
@click.option(
    "--verp",
    help="The VERP template the mail was sent with, such as "
    "'bounces+{local}={domain}@example.com': recipients are also read from the address "
    "each bounce came back to.",
)
def bounces(paths: tuple[Path, ...], report: Path, verp: str | None) -> None:
    """Read the bounces and complaints in PATH... (Maildirs, mbox files or .eml files).

    Writes one CSV row per bounced recipient (columns: source, recipient, action, status,
    diagnostic, message_id, verp_recipient, hard, kind) and prints a summary. 'hard' is
    true when the address is dead (5.1.x, 5.2.1): the rows to suppress. Complaints
    (action 'complained') are worth suppressing too.
    """
    if verp is not None:
        try:
            check_template(verp, "--verp")
        except MessageError as exc:
            raise _usage(str(exc)) from None
    kinds = [(path, _kind_of(path)) for path in paths]
    counts = _Counts()
    try:
        file = report.open("w", newline="", encoding="utf-8")
    except OSError as exc:
        raise _usage(f"{report}: cannot write: {exc.strerror or exc}") from None
    with file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for path, kind in kinds:
            for source, data in _messages(path, kind, counts):
                bounce = parse(data, verp=verp)
                counts.add(bounce)
                if bounce is not None:
                    writer.writerows(_rows(source, bounce))
    click.echo(f"{counts.summary()}; wrote {report}")
