"""A message that exists already, as bytes: sent as it is, with an envelope given apart.

Forwarding (and a relay) must not render a message again: that changes the bytes and breaks
the DKIM signature its author put on it. A ``RawMessage`` keeps the bytes; the only changes
ever made are the ones SMTP itself needs:

- bare LF line ends become CRLF (so an ``.eml`` file written on Unix can be sent);
- on the wire DATA doubles a leading dot and adds the final dot (BDAT sends the bytes as
  they are), and content that does not end with CRLF gets one (RFC 5321 4.1.1.4).

Everything a server would refuse, or that cannot go unchanged, is refused here, before any
I/O: a bare CR (it could smuggle a second message past a server, and there is no faithful
way to send it), a NUL octet, a line over 998 octets, an mbox ``From `` line, an invalid
address. 8-bit content is a ``NotSupportedError`` only for a server without 8BITMIME, and
a non-ASCII envelope address one for a server without SMTPUTF8, never a silent rewrite.

Resending (RFC 5322 3.6.6) prepends one block of ``Resent-*`` fields and changes nothing
else.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .._exceptions import MessageError
from ._address import (
    format_address,
    parse_address,
    unique_addresses,
    validate_addr_spec,
    wire_addr_spec,
)
from ._dsn import DSN
from ._message import new_message_id
from ._render import crlf_lines, current_date

__all__ = ["RawMessage"]

_MAX_LINE = 998
_FIELD = re.compile(rb"[!-9;-~]+:")
_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(.*(?:\r\n[ \t].*)*)")
_FOLD_AT = 76


@dataclass(frozen=True, slots=True, init=False)
class RawMessage:
    """Message bytes sent as they are, to the envelope given.

    Args:
        data: The message (header fields, a blank line, the body), as it came: from a
            file, a mailbox, or another server. Bare LF line ends are turned into CRLF;
            nothing else changes.
        sender: The envelope sender (MAIL FROM); ``""`` is the null sender ``<>``, as a
            bounce must use.
        recipients: The envelope recipients (RCPT TO): one address or several. The header
            fields (To, Cc) are not read: forwarding sends to whom you say.
        dsn: The delivery status notifications to ask for (RFC 3461).
        dkim: Sign it with the Mailer's DKIM signers too (a DKIM-Signature goes on top);
            off by default, since the bytes are to go as they are.
        resent_from: Resend it (RFC 5322 3.6.6): prepend Resent-Date, Resent-From (this
            address), Resent-To (the recipients) and a new Resent-Message-ID.

    Attributes:
        data: The bytes that go out (CRLF line ends; with the Resent-* block when resent).
        message_id: The Message-ID field of the message, if it has one (never added).
        needs_smtputf8: An envelope address has a non-ASCII local part: only a server that
            offers SMTPUTF8 can take it.
        utf8_headers: The header section is UTF-8 beyond ASCII (RFC 6532): sent with
            SMTPUTF8 where the server offers it.

    Raises:
        MessageError: The bytes or an address cannot go unchanged (see the module).
    """

    data: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    dsn: DSN | None
    dkim: bool
    needs_smtputf8: bool
    utf8_headers: bool

    def __init__(
        self,
        data: bytes | bytearray | memoryview,
        *,
        sender: str,
        recipients: str | Iterable[str],
        dsn: DSN | None = None,
        dkim: bool = False,
        resent_from: str | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MessageError(f"data: expected bytes, got {type(data).__name__}")
        if sender != "":
            validate_addr_spec(sender, "sender")
        rcpts = _recipients(recipients)
        raw = _checked(bytes(data))
        if resent_from is not None:
            raw = _resent(resent_from, rcpts) + raw
        if dsn is not None and not isinstance(dsn, DSN):
            raise MessageError(f"dsn: expected a DSN, got {type(dsn).__name__}")
        setattr_(self, "data", raw)
        setattr_(self, "sender", sender)
        setattr_(self, "recipients", rcpts)
        setattr_(self, "message_id", _message_id(raw))
        setattr_(self, "dsn", dsn)
        setattr_(self, "dkim", bool(dkim))
        setattr_(
            self,
            "needs_smtputf8",
            any(not a.rpartition("@")[0].isascii() for a in (sender, *rcpts)),
        )
        head_end = raw.find(b"\r\n\r\n")
        head = raw if head_end < 0 else raw[:head_end]
        setattr_(self, "utf8_headers", not head.isascii() and _is_utf8(head))

    def __repr__(self) -> str:
        return (
            f"RawMessage(sender={self.sender!r}, recipients={len(self.recipients)}, "
            f"message_id={self.message_id!r}, size={len(self.data)})"
        )


def _recipients(value: str | Iterable[str]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise MessageError("recipients: a message needs at least one recipient")
    for i, addr in enumerate(items):
        validate_addr_spec(addr, f"recipients[{i}]")
    return unique_addresses(items)


def _checked(data: bytes) -> bytes:
    """``data`` with CRLF line ends, or a MessageError saying why it cannot go as it is."""
    if not data.strip():
        raise MessageError("data: the message is empty")
    if data.startswith(b"From "):
        raise MessageError(
            "data: the message starts with an mbox 'From ' line, which is not part of it: "
            "read it with mailbox.mbox, or drop that first line"
        )
    if not _FIELD.match(data):
        raise MessageError("data: the message must start with a header field ('Name: value')")
    if b"\x00" in data:
        raise MessageError("data: the message holds a NUL octet, which SMTP cannot carry")
    crs = data.count(b"\r")
    if crs != data.count(b"\r\n"):
        raise MessageError(
            "data: the message has a bare CR (not followed by LF), which cannot be sent "
            "unchanged and which a server may read as a line end (SMTP smuggling)"
        )
    if crs != data.count(b"\n"):
        data = crlf_lines(data)  # bare LF: the one change allowed
    if not data.endswith(b"\r\n"):
        data += b"\r\n"  # (RFC 5321 4.1.1.4: DATA and BDAT alike end the last line)
    longest = max(map(len, data.split(b"\r\n")))
    if longest > _MAX_LINE:
        raise MessageError(
            f"data: a line of {longest} octets is over SMTP's limit of {_MAX_LINE} (RFC 5321 "
            "4.5.3.1.6); it cannot be sent unchanged"
        )
    return data


def _message_id(data: bytes) -> str | None:
    head_end = data.find(b"\r\n\r\n")
    found = _MESSAGE_ID.search(data if head_end < 0 else data[: head_end + 2])
    if found is None:
        return None
    value = found.group(1).replace(b"\r\n", b"").strip()
    return value.decode("utf-8", "replace") or None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _resent(resent_from: str, recipients: tuple[str, ...]) -> bytes:
    """The Resent-* block (RFC 5322 3.6.6), CRLF lines, folded at commas."""
    address = parse_address(resent_from, "resent_from")
    utf8 = not address.addr.rpartition("@")[0].isascii()
    lines = [
        f"Resent-Date: {email.utils.format_datetime(current_date())}",
        f"Resent-From: {format_address(address, smtputf8=utf8)}",
        _folded("Resent-To:", tuple(_header_addr(a) for a in recipients)),
        f"Resent-Message-ID: {new_message_id(address.addr)}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _header_addr(addr: str) -> str:
    """``addr`` for a header field: its IDNA form, unless the local part is UTF-8 anyway."""
    return wire_addr_spec(addr, smtputf8=not addr.rpartition("@")[0].isascii())


def _folded(head: str, items: tuple[str, ...]) -> str:
    """``head`` and the comma-separated ``items``, each continuation line starting with a
    space (RFC 5322 folding)."""
    lines, line = [], head
    for i, item in enumerate(items):
        piece = f" {item}," if i < len(items) - 1 else f" {item}"
        if len(line) + len(piece) > _FOLD_AT and line != head:
            lines.append(line)
            line = ""
        line += piece
    lines.append(line)
    return "\r\n".join(lines)
