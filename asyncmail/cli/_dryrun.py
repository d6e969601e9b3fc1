"""``batch --dry-run``: render every row without a server, show or save what would be sent.

Also the check every real batch makes first (``check_first_row``): the first usable row must
render, so a template error stops the batch before any mail, with the file and line of the
error and the columns the list has (``subject.txt:1: 'frist_name' is undefined; columns:
email, first_name, plan``).
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from .._exceptions import MessageError
from ..batch._duplicates import FirstRows
from ..batch._recipients import BadRow, Recipient, read_recipients
from ..batch._template import Template
from ..message._message import Message
from ._batch import BatchUsageError

__all__ = ["DryRun", "check_first_row", "dry_run", "eml_name", "with_columns"]

SHOWN_PROBLEMS = 10
PREVIEW_COUNT = 5
_UNSAFE = re.compile(r"[^\w.@+-]")
_NAME_LIMIT = 80


def with_columns(reason: str, variables: Mapping[str, Any]) -> str:
    """A render error, with the row's columns when a variable was undefined."""
    if "is undefined" not in reason:
        return reason
    return f"{reason}; columns: {', '.join(map(str, variables)) or '(none)'}"


def check_first_row(
    recipients: Path, template: Template, sender: str, delimiter: str | None = None
) -> int:
    """Render the first usable row, so a template error stops the batch before any mail.

    Returns:
        The row number that was checked (0 if the list has no usable row).

    Raises:
        BatchUsageError: The first usable row does not render (undefined variable...).
    """
    for item in read_recipients(recipients, delimiter=delimiter):
        if isinstance(item, Recipient):
            try:
                template.render(sender=sender, to=item.address, variables=item.variables)
            except MessageError as exc:
                reason = with_columns(str(exc), item.variables)
                raise BatchUsageError(f"row {item.row} ({item.email}): {reason}") from None
            return item.row
    return 0


def eml_name(row: int, address: str) -> str:
    """A safe file name for a preview: the row number and the address, nothing else."""
    safe = _UNSAFE.sub("_", address)[:_NAME_LIMIT]
    return f"{row:05d}-{safe}.eml"


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRun:
    """What ``batch --dry-run`` was asked to do."""

    recipients: Path
    template: Template
    sender: str
    delimiter: str | None = None
    dedupe: bool = False
    preview: Path | None = None
    preview_count: int = PREVIEW_COUNT


def dry_run(options: DryRun, console: Console) -> int:
    """Render every row; print problems and a summary; save or show the first messages.

    Returns:
        0 when every row renders, 1 when some do not.
    """
    good, problems, duplicates = 0, 0, 0
    saved: list[Path] = []
    shown: Message | None = None
    first_rows = FirstRows() if options.dedupe else None
    rows = read_recipients(options.recipients, delimiter=options.delimiter)
    for item in rows:
        if isinstance(item, BadRow):
            reason = item.reason
        else:
            if first_rows is not None and first_rows.first(item.email, item.row) != item.row:
                duplicates += 1
                continue
            try:
                message = options.template.render(
                    sender=options.sender, to=item.address, variables=item.variables
                )
            except MessageError as exc:
                reason = with_columns(str(exc), item.variables)
            else:
                good += 1
                if options.preview is not None and len(saved) < options.preview_count:
                    saved.append(_save(options.preview, item, message))
                elif shown is None and options.preview is None:
                    shown = message
                    console.rule(Text(f"row {item.row}: {item.email}"), style="dim")
                    _show(message, console)
                    console.rule(style="dim")
                continue
        problems += 1
        if problems <= SHOWN_PROBLEMS:
            console.print(
                f"row {item.row} ({item.email or '-'}): {reason}", soft_wrap=True, markup=False
            )
    if saved:
        console.print(
            f"dry run: wrote {len(saved)} messages to {options.preview}/",
            markup=False,
            soft_wrap=True,
        )
    skipped = f", {duplicates} duplicates would be left out" if duplicates else ""
    console.print(
        f"dry run: {good} rows would be sent, {problems} rows have problems{skipped}; "
        "nothing was sent",
        markup=False,
        soft_wrap=True,
    )
    return 1 if problems else 0


def _save(folder: Path, item: Recipient, message: Message) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / eml_name(item.row, item.email)
    path.write_bytes(_bytes(message))
    return path


def _bytes(message: Message) -> bytes:
    """The message as sent: with UTF-8 headers (SMTPUTF8) only when an address needs them."""
    try:
        return message.to_bytes()
    except MessageError:  # a non-ASCII local part
        return message.to_bytes(smtputf8=True)


def _show(message: Message, console: Console) -> None:
    """The message as a reader sees it: decoded headers, the text body, the other parts."""
    parsed = email.message_from_bytes(_bytes(message), policy=email.policy.default)
    for name, value in parsed.items():
        if not name.lower().startswith(("content-", "mime-")):
            console.print(f"{name}: {value}", markup=False, soft_wrap=True)
    console.print()
    body = parsed.get_body(preferencelist=("plain",))
    if body is not None:
        console.print(body.get_content().rstrip("\n"), markup=False, soft_wrap=True)
    others = [
        part.get_content_type()
        for part in parsed.walk()
        if not part.is_multipart() and part is not body
    ]
    if others:
        console.print(f"[also: {', '.join(others)}]", markup=False)
