"""The SMTP envelope and the DATA bytes of a message, for asyncmail and stdlib messages alike.

The transport calls only these three functions, so a ``Message`` and an
``email.message.EmailMessage`` are validated by the same address rules, and both are
checked before any I/O. The stdlib's serialiser is not trusted with header injection (the
running Python may predate the fixes for CVE-2024-6923): values are checked before, and the
produced header block is checked after.
"""

from __future__ import annotations

import copy
import email.message
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import headerregistry
from email import policy as email_policy
from email.errors import NonASCIILocalPartDefect, ObsoleteHeaderDefect
from email.headerregistry import AddressHeader
from typing import Any

from .._exceptions import MessageError
from ._address import unique_addresses, validate_addr_spec, wire_addr_spec
from ._message import Message, new_message_id

__all__ = ["Envelope", "envelope_of", "message_bytes", "smtp_address"]

_FIELD_NAME = re.compile(r"[!-9;-~]+")
_FOLDED_BREAK = re.compile(r"\r?\n[ \t]")
_BAD_CHARS = re.compile(r"[\r\n\x00]")
_BCC = ("bcc", "resent-bcc")
_ADDRESS_FIELDS = frozenset(
    {"from", "sender", "to", "cc", "reply-to", "resent-from", "resent-sender", "resent-to"}
    | {"resent-cc"}
)
_MAX_LINE = 998
# Obsolete syntax is still unambiguous; a UTF-8 local part is legal (RFC 6532).
_TOLERATED_DEFECTS = (ObsoleteHeaderDefect, NonASCIILocalPartDefect)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who the message is from and to, as MAIL FROM and RCPT TO will say it.

    Attributes:
        sender: The reverse-path addr-spec (Unicode allowed); ``""`` is the null path ``<>``.
        recipients: The forward-paths: de-duplicated, in order, never empty.
        message_id: The Message-ID header value, if the message has one.
        needs_smtputf8: Whether an envelope address has a non-ASCII local part. IDN domains
            alone do not need SMTPUTF8: they have an ASCII (IDNA) form.
    """

    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    needs_smtputf8: bool


def envelope_of(message: Message | email.message.Message) -> Envelope:
    """Return the envelope of ``message``, validating it before any I/O.

    For a stdlib message the sender comes from Sender or From and the recipients from
    To, Cc and Bcc, or from the Resent-* headers when present, as ``smtplib`` does.

    Raises:
        MessageError: for a missing sender, no recipients, an invalid address or a header
            that could inject another header.
    """
    message_id: str | None
    if isinstance(message, Message):
        sender, recipients, message_id = (
            message.envelope_sender,
            message.recipients,
            message.message_id,
        )
    elif isinstance(message, email.message.Message):
        _check_headers(message)
        sender, recipients = _stdlib_addresses(message)
        raw_id = message.get("Message-ID")
        if raw_id is not None:
            message_id = str(raw_id).strip()
        else:  # one is added to the bytes; made here so every attempt carries the same
            message_id = new_message_id(sender or _from_address(message))
    else:
        raise MessageError(f"message: expected a Message or EmailMessage, got {message!r}")
    needs = any(not addr.rpartition("@")[0].isascii() for addr in (sender, *recipients))
    return Envelope(sender, recipients, message_id, needs)


def message_bytes(
    message: Message | email.message.Message, *, smtputf8: bool, message_id: str | None = None
) -> bytes:
    """Return the DATA content of ``message``: CRLF lines, no Bcc, not dot-stuffed.

    Args:
        message: An asyncmail Message or a stdlib (Email)Message.
        smtputf8: Whether the server accepted SMTPUTF8 for this transaction.
        message_id: For a stdlib message without one, the Message-ID to add (see
            ``Envelope.message_id``); a missing Date is added too. The caller's message
            is never changed.

    Raises:
        MessageError: for header injection, lines over 998 octets, or an address that needs
            SMTPUTF8 when ``smtputf8`` is false.
    """
    if isinstance(message, Message):
        return message.to_bytes(smtputf8=smtputf8)
    if not isinstance(message, email.message.Message):
        raise MessageError(f"message: expected a Message or EmailMessage, got {message!r}")
    _check_headers(message)
    clone = copy.copy(message)
    for name in _BCC:
        del clone[name]  # (this also gives the shallow copy a header list of its own)
    if message_id is not None and "Message-ID" not in clone:
        clone["Message-ID"] = message_id
    if "Date" not in clone:
        clone["Date"] = email.utils.formatdate()
    chosen: email_policy.Policy
    if isinstance(message.policy, email_policy.EmailPolicy):
        chosen = email_policy.SMTPUTF8 if smtputf8 else email_policy.SMTP
        if not smtputf8:
            _ascii_address_headers(clone)
    else:
        chosen = message.policy.clone(linesep="\r\n")
    try:
        data = clone.as_bytes(policy=chosen)
    except (UnicodeError, ValueError, TypeError) as exc:
        raise MessageError(f"message: cannot be serialised: {exc}") from exc
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    _check_output(clone, data)
    return data


def smtp_address(address: str, *, smtputf8: bool) -> str:
    """Return ``address`` as MAIL FROM / RCPT TO carry it (``""`` stays the null path).

    The domain is IDNA-encoded unless ``smtputf8``.

    Raises:
        MessageError: for an invalid address, or a non-ASCII local part without ``smtputf8``.
    """
    if address == "":
        return ""
    validate_addr_spec(address, "address")
    return wire_addr_spec(address, smtputf8=smtputf8)


def _from_address(message: email.message.Message) -> str:
    """The From address, for the domain of a generated Message-ID (best effort)."""
    addresses = email.utils.getaddresses([str(v) for v in message.get_all("From", [])])
    return next((addr for _, addr in addresses if "@" in addr), "")


def _stdlib_addresses(message: email.message.Message) -> tuple[str, tuple[str, ...]]:
    resent = message.get_all("Resent-Date")
    if resent is not None and len(resent) > 1:
        raise MessageError("Resent-Date: more than one Resent block; cannot choose")
    prefix = "Resent-" if resent else ""
    sender_field = f"{prefix}Sender" if f"{prefix}Sender" in message else f"{prefix}From"
    senders = list(_header_addresses(message, sender_field))
    if not senders:
        raise MessageError(f"{sender_field}: the message has no sender address")
    sender = senders[0]
    recipients = unique_addresses(
        addr
        for field in (f"{prefix}To", f"{prefix}Cc", f"{prefix}Bcc")
        for addr in _header_addresses(message, field)
    )
    if not recipients:
        raise MessageError(f"{prefix}To: the message has no recipients in To, Cc or Bcc")
    return sender, recipients


def _header_addresses(message: email.message.Message, field: str) -> Iterator[str]:
    try:
        values = message.get_all(field) or ()
    except Exception as exc:  # the stdlib parser fails in many ways on malformed input
        raise MessageError(f"{field}: cannot parse the header: {exc}") from exc
    for value in values:
        header = value
        if not isinstance(header, AddressHeader):  # compat32 strings: use the modern parser
            try:
                header = email_policy.default.header_factory(field, str(value))
            except Exception as exc:
                raise MessageError(f"{field}: cannot parse {str(value)!r}: {exc}") from exc
            if not isinstance(header, AddressHeader):
                return
        # The stdlib salvages *something* from a malformed list ("a@b.com <x@y.com>" gives
        # a@b.com): a guess is not good enough for an envelope, so refuse instead.
        defects = getattr(header, "defects", ())
        invalid = [d for d in defects if not isinstance(d, _TOLERATED_DEFECTS)]
        if invalid:
            raise MessageError(f"{field}: malformed address list {str(value)!r}: {invalid[0]}")
        for j, address in enumerate(header.addresses):
            spec = address.addr_spec
            if spec.startswith("<") or not spec or "@" not in spec:
                raise MessageError(f"{field}[{j}]: invalid address {str(value)!r}")
            yield validate_addr_spec(spec, f"{field}[{j}]")


def _ascii_address_headers(message: email.message.Message) -> None:
    """IDNA-encode the domains in address headers, which the stdlib would mangle.

    Without SMTPUTF8, Python writes ``user@例え.jp`` as ``user@=?utf-8?...?=.jp``, which no
    reader can reply to. A non-ASCII local part has no ASCII form at all.

    Raises:
        MessageError: for a non-ASCII local part.
    """
    # Replace in place, in order; ``_headers`` is the stdlib's list of (name, value) pairs.
    headers: list[tuple[str, Any]] = list(getattr(message, "_headers", []))
    for i, (name, value) in enumerate(headers):
        if name.lower() not in _ADDRESS_FIELDS or str(value).isascii():
            continue
        header = message.policy.header_fetch_parse(name, value)
        if not isinstance(header, AddressHeader):
            continue
        items: list[headerregistry.Address | headerregistry.Group] = []
        for group in header.groups:
            addresses = [_ascii_address(address) for address in group.addresses]
            if group.display_name is None:
                items.extend(addresses)
            else:
                items.append(headerregistry.Group(group.display_name, addresses))
        headers[i] = message.policy.header_store_parse(name, items)  # type: ignore[arg-type]
    message._headers = headers  # type: ignore[attr-defined]


def _ascii_address(address: headerregistry.Address) -> headerregistry.Address:
    spec = wire_addr_spec(address.addr_spec, smtputf8=False)
    local, _, domain = spec.rpartition("@")
    if local.startswith('"'):
        return headerregistry.Address(address.display_name, addr_spec=spec)
    return headerregistry.Address(address.display_name, local, domain)


def _check_headers(message: email.message.Message) -> None:
    """Reject CR, LF and NUL in any header name or (unfolded, decoded) value of any part."""
    for part in message.walk():
        for name, raw in part.raw_items():
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise MessageError(f"headers: invalid header name {name!r}")
            try:
                value = part.policy.header_fetch_parse(name, raw)
            except Exception as exc:  # the stdlib parser fails in many ways on malformed input
                raise MessageError(f"headers[{name!r}]: cannot parse: {exc}") from exc
            for text in (str(raw), str(value)):
                if _BAD_CHARS.search(_FOLDED_BREAK.sub(" ", text)):
                    raise MessageError(f"headers[{name!r}]: CR, LF and NUL are not allowed")


def _check_output(message: email.message.Message, data: bytes) -> None:
    """Check the serialised bytes: the same header fields, no Bcc, no over-long line."""
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[: head_end + 2]
    names: list[str] = []
    for line in head.split(b"\r\n"):
        if not line or line[:1] in b" \t":
            continue
        name, colon, _ = line.partition(b":")
        if not colon or not _FIELD_NAME.fullmatch(name.decode("latin-1")):
            raise MessageError(f"message: serialised header line is malformed: {line[:80]!r}")
        names.append(name.decode("ascii").lower())
    expected = [name.lower() for name in message]
    if names != expected or any(name in _BCC for name in names):
        raise MessageError("message: serialised headers differ from the message (injection?)")
    if any(len(line) > _MAX_LINE for line in data.split(b"\r\n")):
        raise MessageError(f"message: a line is longer than {_MAX_LINE} octets")
