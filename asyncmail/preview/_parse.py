"""What the preview shows of a message: a list summary and the details, read from its bytes.

Every header is decoded (RFC 2047) and every body part is decoded with its declared charset,
falling back to UTF-8 with replacement characters: a broken message is still shown.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from dataclasses import dataclass
from email.message import EmailMessage, Message

__all__ = [
    "Attachment",
    "Details",
    "Summary",
    "attachment_content",
    "details",
    "inline_content",
    "summary",
]

_POLICY = email.policy.default


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """One attachment (or inline part): its number among the message's attachments."""

    index: int
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """What a row of the list shows."""

    sender: str
    to: tuple[str, ...]
    subject: str
    date: str
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Details:
    """What the message view shows, beside the summary."""

    cc: tuple[str, ...]
    text: str | None
    html: str | None
    headers: tuple[tuple[str, str], ...]


def parse(data: bytes) -> EmailMessage:
    """The message parsed with the modern policy (never raises on malformed input)."""
    return email.message_from_bytes(data, policy=_POLICY)


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except Exception:  # a malformed header is shown raw, never fails the view
        return str(message.get_all(name, [""])[0])
    return "" if value is None else " ".join(str(value).split())


def _all_headers(message: Message) -> list[tuple[str, str]]:
    found = []
    for name, value in message.raw_items() if isinstance(message, EmailMessage) else []:
        try:
            shown = str(_POLICY.header_fetch_parse(name, value))
        except Exception:  # a malformed header is shown raw
            shown = str(value)
        found.append((name, " ".join(shown.split())))
    return found


def _addresses(message: Message, name: str) -> tuple[str, ...]:
    try:
        addresses = getattr(message.get(name), "addresses", None) or ()
        return tuple(str(address) for address in addresses)
    except Exception:  # a malformed address header: its text, split at commas
        return tuple(part.strip() for part in _header(message, name).split(",") if part.strip())


def _iso_date(message: Message) -> str:
    raw = _header(message, "Date")
    try:
        return email.utils.parsedate_to_datetime(raw).isoformat()
    except (TypeError, ValueError, IndexError):
        return raw


def _body_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return payload.decode("utf-8", errors="replace")


def _is_attachment(part: Message) -> bool:
    if part.is_multipart():
        return False
    disposition = part.get_content_disposition()
    if disposition in ("attachment", "inline") and part.get_filename():
        return True
    return disposition == "attachment" or part.get_content_maintype() not in ("text", "multipart")


def _attachment_parts(message: Message) -> list[Message]:
    return [part for part in message.walk() if _is_attachment(part)]


def summary(message: EmailMessage) -> Summary:
    """The list row of a parsed message."""
    found = []
    for index, part in enumerate(_attachment_parts(message)):
        payload = part.get_payload(decode=True)
        found.append(
            Attachment(
                index=index,
                filename=part.get_filename() or f"attachment-{index}",
                content_type=part.get_content_type(),
                size=len(payload) if isinstance(payload, bytes) else 0,
            )
        )
    return Summary(
        sender=_header(message, "From"),
        to=_addresses(message, "To"),
        subject=_header(message, "Subject"),
        date=_iso_date(message),
        attachments=tuple(found),
    )


def details(message: EmailMessage) -> Details:
    """The first text/plain and text/html parts outside attachments, and every header."""
    text = html = None
    for part in message.walk():
        if part.is_multipart() or _is_attachment(part):
            continue
        if part.get_content_type() == "text/plain" and text is None:
            text = _body_text(part)
        elif part.get_content_type() == "text/html" and html is None:
            html = _body_text(part)
    headers = tuple(_all_headers(message))
    return Details(cc=_addresses(message, "Cc"), text=text, html=html, headers=headers)


def attachment_content(message: EmailMessage, index: int) -> tuple[Attachment, bytes] | None:
    """The attachment number ``index`` and its decoded bytes, or None if there is none."""
    parts = _attachment_parts(message)
    if not 0 <= index < len(parts):
        return None
    part = parts[index]
    payload = part.get_payload(decode=True)
    content = payload if isinstance(payload, bytes) else b""
    name = part.get_filename() or f"attachment-{index}"
    info = Attachment(
        index=index, filename=name, content_type=part.get_content_type(), size=len(content)
    )
    return info, content


def inline_content(message: EmailMessage, content_id: str) -> tuple[str, bytes] | None:
    """The type and decoded bytes of the part whose Content-ID is ``content_id`` (no ``<>``)."""
    for part in message.walk():
        if part.is_multipart():
            continue
        found = str(part.get("Content-ID", "")).strip().removeprefix("<").removesuffix(">")
        if found and found == content_id:
            payload = part.get_payload(decode=True)
            return part.get_content_type(), payload if isinstance(payload, bytes) else b""
    return None
