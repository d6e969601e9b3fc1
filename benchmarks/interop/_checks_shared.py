"""What the deliverability groups of check.py share (dkim, dsn, failover).

Each group first proves its harness with tools that exist without the feature (smtplib,
the single-URL Mailer), then runs the asyncmail checks, which SKIP with a reason while the
asyncmail API they need (``asyncmail.DKIM``, ``asyncmail.DSN``, a ``Mailer`` that takes a
list of URLs and ``strategy=``) is missing. The feature APIs are reached through ``Any``
(``make_message``, ``make_mailer``) so the groups type-check before and after they exist.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

from _dkim_keys import DOMAIN

from asyncmail import Mailer, Message

Record = Callable[[str, "bool | None", str], None]


class MailBox(Protocol):
    """What the groups need of check.py's ``Box``."""

    path: Path
    seen: dict[str, EmailMessage]

    def scan(self) -> Counter[str]: ...

    def wait(self, ids: dict[str, int], limit: float = 30.0) -> Awaitable[Counter[str]]: ...

    def get(self, ident: str) -> list[EmailMessage]: ...


def new_id(tag: str) -> str:
    return f"dlv-{tag}-{uuid.uuid4().hex[:8]}"


def make_message(ident: str, **given: object) -> Message:
    """A Message with ``X-Interop-Id``; feature fields (``dsn=``) pass through untyped."""
    fields: dict[str, Any] = dict(given)
    fields.setdefault("sender", f"Interop <sender@{DOMAIN}>")
    fields.setdefault("to", "rcpt@example.net")
    fields.setdefault("subject", f"interop {ident}")
    fields.setdefault("text", f"hello from {ident}\n")
    fields["headers"] = {"X-Interop-Id": ident}
    return Message(**fields)


def make_mailer(server: str | list[str], **options: object) -> Mailer:
    """A Mailer with options this asyncmail may not know yet (``dkim=``, ``strategy=``)."""
    factory: Any = Mailer
    mailer: Mailer = factory(server, **options)
    return mailer


def raw_copies(box: MailBox, ident: str) -> list[bytes]:
    box.scan()
    out = []
    for name, parsed in box.seen.items():
        if str(parsed.get("X-Interop-Id")) == ident:
            try:
                out.append((box.path / name).read_bytes())
            except FileNotFoundError:
                continue
    return out


def log_lines(path: Path, needle: str) -> list[str]:
    """The lines of the log at ``path`` that contain ``needle``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if needle in line]
