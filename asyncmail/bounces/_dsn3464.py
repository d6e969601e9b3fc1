"""RFC 3464 delivery status notifications and RFC 5965 feedback reports.

A DSN is ``multipart/report; report-type=delivery-status``: a human part, a
``message/delivery-status`` part (one block of per-message fields, then one block per
recipient, separated by blank lines) and the returned message or its headers. The stdlib
parser already splits a ``message/delivery-status`` part into one header block per
sub-message; ``message/global-delivery-status`` (RFC 6533) and ``message/feedback-report``
(RFC 5965) arrive as text and are split here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from ._model import BouncedRecipient
from ._text import (
    MAX_RECIPIENTS,
    MAX_TEXT,
    body_text,
    header,
    host,
    infer_status,
    one_line,
    parts,
    payload,
    strip_address,
    strip_type,
)

__all__ = ["Report", "read_arf", "read_dsn"]

_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
_DSN_ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})
_BLANK = re.compile(r"\r?\n[ \t]*\r?\n")


@dataclass(frozen=True, slots=True)
class Report:
    """The fields of a report's machine-readable part, before the returned message."""

    recipients: tuple[BouncedRecipient, ...]
    reporting_mta: str = ""
    envelope_id: str | None = None


def read_dsn(message: Message) -> Report | None:
    """The per-message and per-recipient fields of a DSN, or None when it has none."""
    part = next((p for p in parts(message) if p.get_content_type() in _DSN_TYPES), None)
    if part is None:
        return None
    blocks = _blocks(part)
    if not blocks:
        return None
    first = blocks[0]
    per_message = first if not _is_recipient_block(first) else None
    recipients = tuple(
        recipient
        for block in blocks[: MAX_RECIPIENTS + 1]
        if _is_recipient_block(block) and (recipient := _recipient(block)) is not None
    )
    if not recipients:
        return None
    reporting_mta = host(header(per_message, "Reporting-MTA")) if per_message else ""
    envid = strip_address(header(per_message, "Original-Envelope-Id")) if per_message else ""
    return Report(recipients[:MAX_RECIPIENTS], reporting_mta, envid or None)


def read_arf(message: Message) -> Report | None:
    """A feedback (complaint) report: who complained, as a ``complained`` recipient.

    The complainer is ``Original-Rcpt-To``, else the single ``To`` address of the returned
    message (many mailbox providers redact both; then a VERP address is the only clue and
    the recipient is left empty for ``parse`` to fill). A ``not-spam`` report is not a
    complaint: None.
    """
    part = next(
        (p for p in parts(message) if p.get_content_type() == "message/feedback-report"), None
    )
    if part is None:
        return None
    blocks = _blocks(part)
    if not blocks:
        return None
    fields = blocks[0]
    feedback_type = one_line(header(fields, "Feedback-Type")).lower() or "abuse"
    if feedback_type == "not-spam":
        return None
    address = strip_address(header(fields, "Original-Rcpt-To"))
    if not address:
        address = _returned_to(message)
    diagnostic = feedback_type
    agent = one_line(header(fields, "User-Agent"))
    if agent:
        diagnostic = f"{feedback_type} ({agent})"
    recipient = BouncedRecipient(
        original_recipient=address,
        final_recipient=address,
        action="complained",
        diagnostic=diagnostic,
    )
    return Report((recipient,), host(header(fields, "Reporting-MTA")))


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a report part, however the stdlib parser left them.

    ``message/delivery-status``: a list of blocks. Other ``message/*`` types: a list of one
    message, whose body holds the blocks after the first. Anything else: text.
    """
    content = payload(part)
    if not isinstance(content, list):
        return _split(body_text(part))
    blocks: list[Message] = []
    for block in content:
        if isinstance(block, Message):
            blocks.append(block)
            rest = payload(block)
            if isinstance(rest, str) and rest.strip():
                blocks += _split(rest[:MAX_TEXT])
    return blocks


def _split(text: str) -> list[Message]:
    parser = HeaderParser(policy=compat32)
    return [parser.parsestr(chunk.strip("\r\n") + "\n") for chunk in _BLANK.split(text)]


def _is_recipient_block(block: Message) -> bool:
    return "Final-Recipient" in block or "Original-Recipient" in block


def _recipient(block: Message) -> BouncedRecipient | None:
    final = strip_address(header(block, "Final-Recipient"))
    original = strip_address(header(block, "Original-Recipient")) or final
    if not original:
        return None
    diagnostic = strip_type(header(block, "Diagnostic-Code"))
    status_match = _STATUS.search(header(block, "Status"))
    status = ".".join(status_match.groups()) if status_match else ""
    action = one_line(header(block, "Action")).lower()
    if status in ("", "5.0.0", "4.0.0") and diagnostic and action in ("failed", "delayed", ""):
        inferred = infer_status(diagnostic, permanent=action != "delayed")
        if not status or inferred[:1] == status[:1]:
            status = inferred
    if action not in _DSN_ACTIONS:
        action = {"2": "delivered", "4": "delayed"}.get(status[:1], "failed")
    return BouncedRecipient(
        original_recipient=original,
        final_recipient=final or original,
        action=action,
        status=status,
        diagnostic=diagnostic,
        remote_mta=host(header(block, "Remote-MTA")),
    )


def _returned_to(message: Message) -> str:
    """The one ``To`` address of the message a report returns, or ""."""
    for part in parts(message):
        content_type = part.get_content_type()
        if content_type in ("message/rfc822", "message/global"):
            content = payload(part)
            returned = content[0] if isinstance(content, list) and content else None
        elif content_type == "text/rfc822-headers":
            returned = HeaderParser(policy=compat32).parsestr(body_text(part))
        else:
            continue
        if isinstance(returned, Message):
            to = header(returned, "To")
            if to and "," not in to:
                return strip_address(to.rpartition("<")[2] if "<" in to else to)
    return ""
