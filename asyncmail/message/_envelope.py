"""The SMTP envelope of a message, for asyncmail and stdlib messages alike.

A ``Message`` and an ``email.message.EmailMessage`` are validated by the same address
rules, before any I/O. Their DATA bytes are ``message._content``'s business.
"""

from __future__ import annotations

import email.message
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import NonASCIILocalPartDefect, ObsoleteHeaderDefect
from email.headerregistry import AddressHeader

from .._exceptions import MessageError
from ._address import _FAST, _MAX_LOCAL, unique_addresses, validate_addr_spec, wire_addr_spec
from ._content import check_headers, headers_need_smtputf8
from ._dsn import DSN
from ._message import Message, new_message_id
from ._raw import RawMessage
from ._verp import is_template

__all__ = ["Envelope", "envelope_of", "smtp_address"]

# Obsolete syntax is still unambiguous; a UTF-8 local part is legal (RFC 6532).
_TOLERATED_DEFECTS = (ObsoleteHeaderDefect, NonASCIILocalPartDefect)


# Not frozen: one is made per message (sending is hot), and a frozen dataclass's
# __init__ costs about three times a plain one's. Never changed once made.
@dataclass(slots=True)
class Envelope:
    """Who the message is from and to, as MAIL FROM and RCPT TO will say it.

    Attributes:
        sender: The reverse-path addr-spec (Unicode allowed); ``""`` is the null path ``<>``.
        recipients: The forward-paths: de-duplicated, in order, never empty.
        message_id: The Message-ID header value, if the message has one.
        needs_smtputf8: Whether an envelope address, or an address in a header such as
            Reply-To, has a non-ASCII local part: the transaction must declare SMTPUTF8.
            IDN domains alone do not need it: they have an ASCII (IDNA) form.
        verp: ``sender`` is a VERP template (``asyncmail.message._verp``): each recipient
            gets a transaction of its own, from the template filled in for it.
        dsn: The message's own DSN request; None leaves it to the Mailer.
        wants_smtputf8: The content has UTF-8 header fields (a ``RawMessage``): declare
            SMTPUTF8 where the server offers it, send it as 8-bit content where not.
    """

    sender: str
    recipients: tuple[str, ...]
    message_id: str | None
    needs_smtputf8: bool
    verp: bool = False
    dsn: DSN | None = None
    wants_smtputf8: bool = False


def envelope_of(message: Message | RawMessage | email.message.Message) -> Envelope:
    """Return the envelope of ``message``, validating it before any I/O.

    For a stdlib message the sender comes from Sender or From and the recipients from
    To, Cc and Bcc, or from the Resent-* headers when present, as ``smtplib`` does.

    Raises:
        MessageError: for a missing sender, no recipients, an invalid address or a header
            that could inject another header.
    """
    message_id: str | None
    verp = False
    dsn = None
    if isinstance(message, Message):
        sender, message_id = message.envelope_sender, message.message_id
        to = message.to
        if len(to) == 1 and not message.cc and not message.bcc:
            recipients: tuple[str, ...] = (to[0].addr,)  # (nothing to de-duplicate)
        else:
            recipients = message.recipients
        if message.return_path:
            verp = is_template(message.return_path)
        dsn = message.dsn
    elif isinstance(message, RawMessage):  # (checked when it was made)
        return Envelope(
            message.sender,
            message.recipients,
            message.message_id,
            message.needs_smtputf8,
            dsn=message.dsn,
            wants_smtputf8=message.utf8_headers,
        )
    elif isinstance(message, email.message.Message):
        check_headers(message)
        sender, recipients = _stdlib_addresses(message)
        raw_id = message.get("Message-ID")
        if raw_id is not None:
            message_id = str(raw_id).strip()
        else:  # one is added to the bytes; made here so every attempt carries the same
            message_id = new_message_id(sender or _from_address(message))
    else:
        raise MessageError(
            f"message: expected a Message, RawMessage or EmailMessage, got {message!r}"
        )
    # (an ASCII address has an ASCII local part: most envelopes need no closer look)
    needs = not (sender.isascii() and all(map(str.isascii, recipients))) and any(
        not addr.rpartition("@")[0].isascii() for addr in (sender, *recipients)
    )
    if not needs and (
        type(message) is not Message or message.reply_to or message.return_path is not None
    ):
        # (otherwise every header address is also in the envelope: nothing more to find)
        needs = headers_need_smtputf8(message)
    return Envelope(sender, recipients, message_id, needs, verp, dsn)


def smtp_address(address: str, *, smtputf8: bool) -> str:
    """Return ``address`` as MAIL FROM / RCPT TO carry it (``""`` stays the null path).

    The domain is IDNA-encoded unless ``smtputf8``.

    Raises:
        MessageError: for an invalid address, or a non-ASCII local part without ``smtputf8``.
    """
    if len(address) <= _MAX_LOCAL and _FAST.fullmatch(address):
        return address  # the common case: valid, and ASCII (validate_addr_spec's fast path)
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
