"""The Message and its Attachments: immutable values, validated once at construction."""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from .._exceptions import MessageError
from ._address import (
    Address,
    AddressInput,
    ascii_domain,
    parse_address,
    parse_addresses,
    split_address_list,
    unique_addresses,
    validate_addr_spec,
)
from ._dsn import DSN
from ._headers import MANAGED_HEADERS, check_header_name, check_text
from ._list import list_head, normal_list_id, normal_mailto, normal_unsubscribe
from ._random import random_hex
from ._render import body_bytes, current_date, render
from ._verp import check_template, expand, is_template

__all__ = ["Attachment", "Message"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_CONTENT_ID = re.compile(r"[!-;=?-~]{1,250}")  # printable ASCII without space or <>
_MAX_MSG_ID = 900  # the header line must stay under 998 octets
_MSG_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file attached to a message, or embedded in its HTML when ``inline`` (``cid:``).

    Attributes:
        filename: The name the recipient sees; any printable Unicode (stripped).
        content: The file's bytes.
        content_type: The MIME type; guessed from ``filename`` when None.
        inline: Show it inside the message (with ``content_id``) instead of as a download.
        content_id: The id the HTML refers to as ``cid:<content_id>``, without brackets.
    """

    filename: str
    content: bytes
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None

    def __post_init__(self) -> None:
        name = check_text(self.filename, "attachment filename").strip()
        if not name or not name.isprintable():
            raise MessageError(f"attachment filename: invalid filename {self.filename!r}")
        object.__setattr__(self, "filename", name)
        if not isinstance(self.content, bytes | bytearray | memoryview):
            raise MessageError(f"attachment {name!r}: content must be bytes")
        object.__setattr__(self, "content", bytes(self.content))
        ctype = self.content_type
        if ctype is None:
            ctype = mimetypes.guess_type(name, strict=False)[0] or DEFAULT_CONTENT_TYPE
        if not isinstance(ctype, str) or not _CONTENT_TYPE.fullmatch(ctype):
            raise MessageError(f"attachment {name!r}: invalid content_type {ctype!r}")
        object.__setattr__(self, "content_type", ctype.lower())
        cid = self.content_id
        if cid is not None:
            if isinstance(cid, str) and cid.startswith("<") and cid.endswith(">"):
                cid = cid[1:-1]
            if not isinstance(cid, str) or not _CONTENT_ID.fullmatch(cid):
                raise MessageError(f"attachment {name!r}: invalid content_id {cid!r}")
            object.__setattr__(self, "content_id", cid)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        inline: bool = False,
        content_id: str | None = None,
    ) -> Attachment:
        """Read the file at ``path``; its name becomes the filename and suggests the type."""
        file = Path(path)
        return cls(
            filename=file.name,
            content=file.read_bytes(),
            content_type=content_type,
            inline=inline,
            content_id=content_id,
        )

    def __repr__(self) -> str:
        return (
            f"Attachment(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={len(self.content)}, inline={self.inline!r}, content_id={self.content_id!r})"
        )


@dataclass(frozen=True, slots=True, kw_only=True, init=False, repr=False)
class Message:
    """An email to send: immutable, validated at construction, rendered by ``to_bytes()``.

    Addresses are given as ``"Name <addr>"``, ``"addr"``, a ``("Name", "addr")`` pair or an
    :class:`Address`; ``to``, ``cc``, ``bcc`` and ``reply_to`` take one of those or a list
    (a 2-tuple of strings counts as one pair). Every invalid input raises
    :class:`MessageError` naming the field, so nothing bad reaches the network.

    The Message-ID is generated once, here, so every rendering and every retry carries the
    same one. Copies made with ``dataclasses.replace`` keep it too: pass ``message_id=None``
    to get a fresh one for a different message.

    Attributes:
        sender: The From mailbox.
        to: The To recipients.
        cc: The Cc recipients.
        bcc: The Bcc recipients: in the envelope, never in the bytes.
        reply_to: The Reply-To mailboxes.
        subject: The subject, any Unicode without CR, LF or NUL.
        text: The plain-text body, if any.
        html: The HTML body, if any.
        attachments: Files attached or embedded (``inline``).
        headers: Extra headers as ``(name, value)`` pairs, in the order given.
        return_path: The envelope sender when it differs from ``sender`` (``""`` for ``<>``),
            or a VERP template such as ``"bounces+{local}={domain}@example.com"``, filled
            in for each recipient: the message then goes in one transaction per recipient.
        message_id: The Message-ID, with angle brackets.
        date: The Date; now (UTC) by default.
        dsn: The delivery status notifications to ask for (RFC 3461), instead of the
            Mailer's ``dsn``.
        unsubscribe: An ``https://`` URL that unsubscribes the recipient with one POST: it
            becomes ``List-Unsubscribe`` plus ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
            (RFC 8058).
        unsubscribe_mailto: An address, or a ``mailto:`` URL (``?subject=`` allowed,
            percent-encoded), listed in ``List-Unsubscribe`` after the URL.
        list_id: The ``List-Id`` (RFC 2919): ``"label.example.com"`` or
            ``"Name <label.example.com>"``.
    """

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    bcc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    text: str | None
    html: str | None
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]
    return_path: str | None
    message_id: str
    date: datetime
    dsn: DSN | None
    unsubscribe: str | None
    unsubscribe_mailto: str | None
    list_id: str | None
    # The bodies as UTF-8 with CRLF line ends, encoded once, here (not part of the value),
    # with a hint for the renderer (see _render.body_bytes).
    _text_data: tuple[bytes, int] | None = field(init=False, repr=False, compare=False)
    _html_data: tuple[bytes, int] | None = field(init=False, repr=False, compare=False)
    # The List-* header lines, made once, here (see _list.list_head).
    _list_head: str | None = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        *,
        sender: AddressInput,
        to: AddressInput | Iterable[AddressInput] = (),
        cc: AddressInput | Iterable[AddressInput] = (),
        bcc: AddressInput | Iterable[AddressInput] = (),
        reply_to: AddressInput | Iterable[AddressInput] = (),
        subject: str = "",
        text: str | None = None,
        html: str | None = None,
        attachments: Iterable[Attachment] = (),
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        return_path: str | None = None,
        message_id: str | None = None,
        date: datetime | None = None,
        dsn: DSN | None = None,
        unsubscribe: str | None = None,
        unsubscribe_mailto: str | None = None,
        list_id: str | None = None,
    ) -> None:
        # The fields are set on a twin of the class whose slots take plain stores (see
        # ``_Fields``): a frozen class's slot setters cost ~0.6k instructions a field.
        cls = type(self)
        fields: Any
        if cls is Message:
            object.__setattr__(self, "__class__", _Fields)
            fields = self
        else:  # a subclass's layout differs: fill a twin, then copy its slots over
            fields = object.__new__(_Fields)
        try:
            from_ = parse_address(sender, "sender")
            fields.sender = from_
            to_ = parse_addresses(to, "to")
            # (mostly left empty: the comparison costs a fraction of the call)
            cc_ = () if cc == () else parse_addresses(cc, "cc")
            bcc_ = () if bcc == () else parse_addresses(bcc, "bcc")
            if not (to_ or cc_ or bcc_):
                raise MessageError("to: a message needs at least one recipient in to, cc or bcc")
            fields.to = to_
            fields.cc = cc_
            fields.bcc = bcc_
            reply = () if reply_to == () else parse_addresses(reply_to, "reply_to")
            fields.subject = check_text(subject, "subject")
            fields.text = text
            fields.html = html
            fields._text_data = None if text is None else body_bytes(text, "text")
            fields._html_data = None if html is None else body_bytes(html, "html")
            fields.attachments = _attachments(attachments) if attachments else ()
            extra: tuple[tuple[str, str], ...] = ()
            if headers:  # (the isinstance check against an ABC costs more than the test)
                extra, message_id, date, reply = _header_fields(headers, message_id, date, reply)
            fields.reply_to = reply
            fields.headers = extra
            if return_path is not None and return_path != "":
                _check_return_path(return_path, (*to_, *cc_, *bcc_))
            fields.return_path = return_path
            if dsn is not None and not isinstance(dsn, DSN):
                raise MessageError(f"dsn: expected a DSN, got {type(dsn).__name__}")
            fields.dsn = dsn
            fields.message_id = _message_id(message_id, from_.addr)
            if date is None:
                date = current_date()
            elif not isinstance(date, datetime):
                raise MessageError(f"date: expected a datetime, got {type(date).__name__}")
            fields.date = date
            head = None
            if unsubscribe is not None or unsubscribe_mailto is not None or list_id is not None:
                unsubscribe, unsubscribe_mailto, list_id, head = _list_fields(
                    unsubscribe, unsubscribe_mailto, list_id
                )
            fields.unsubscribe = unsubscribe
            fields.unsubscribe_mailto = unsubscribe_mailto
            fields.list_id = list_id
            fields._list_head = head
        except BaseException:  # not left a _Fields, should anything still hold it
            object.__setattr__(self, "__class__", cls)
            raise
        if cls is Message:
            fields.__class__ = Message
        else:
            for name in _Fields.__slots__:
                object.__setattr__(self, name, getattr(fields, name))

    def __repr__(self) -> str:
        recipients = len(self.to) + len(self.cc) + len(self.bcc)
        return (
            f"Message(sender={str(self.sender)!r}, recipients={recipients}, "
            f"subject={self.subject!r}, message_id={self.message_id!r}, "
            f"attachments={len(self.attachments)})"
        )

    @property
    def envelope_sender(self) -> str:
        """The MAIL FROM address: ``return_path`` if given, else the sender's address.

        For a VERP ``return_path`` this is the template; each recipient's transaction
        says ``asyncmail.message._verp.expand(template, recipient)``.
        """
        return self.sender.addr if self.return_path is None else self.return_path

    @property
    def recipients(self) -> tuple[str, ...]:
        """Every envelope recipient (to, cc, bcc), de-duplicated, first spelling kept."""
        return unique_addresses(address.addr for address in (*self.to, *self.cc, *self.bcc))

    def to_bytes(self, *, smtputf8: bool = False) -> bytes:
        """Render the RFC 5322 message with CRLF line ends, ready for DATA (not dot-stuffed).

        Args:
            smtputf8: Allow raw UTF-8 addresses (RFC 6532); otherwise the output is ASCII.

        Raises:
            MessageError: when an address has a non-ASCII local part and ``smtputf8`` is false.
        """
        return render(self, (self._text_data, self._html_data), self._list_head, smtputf8=smtputf8)


class _Fields:
    """A mutable twin of Message, for its ``__init__`` only: the very same slots, so an
    instance's class can be switched between the two (Python checks that the layouts match).

    A frozen class's fields are set through the slots' setters or ``object.__setattr__``,
    at ~0.6k or ~1.3k instructions a field; switching the class there and back costs about
    two of those, and then each field is a plain store. A Message is often made per
    message sent, with 20 fields.
    """

    __slots__ = Message.__slots__


def _attachments(attachments: Iterable[Attachment]) -> tuple[Attachment, ...]:
    files = tuple(attachments)
    for i, file in enumerate(files):
        if not isinstance(file, Attachment):
            raise MessageError(f"attachments[{i}]: expected an Attachment")
    return files


def _check_verp(template: str, recipients: Iterable[Address]) -> None:
    """A VERP template, and the address it makes for each recipient, must be valid.

    Raises:
        MessageError: for an invalid template, a quoted local part (it cannot go into
            another address's local part), or an address that comes out invalid (too long).
    """
    check_template(template, "return_path")
    for recipient in recipients:
        addr = recipient.addr
        local, _, domain = addr.rpartition("@")
        forms = {addr, f"{local}@{ascii_domain(domain)}"}  # as given, and as IDNA
        for form in forms:
            verp = expand(template, form)
            try:
                validate_addr_spec(verp, "return_path")
            except MessageError:
                raise MessageError(
                    f"return_path: the VERP address for {addr!r} would be invalid: {verp!r}"
                ) from None


def _check_return_path(return_path: str, recipients: tuple[Address, ...]) -> None:
    """Validate a return path: an address, or a VERP template every recipient fits."""
    if is_template(return_path):
        _check_verp(return_path, recipients)
    else:
        validate_addr_spec(return_path, "return_path")


def _list_fields(
    unsubscribe: str | None, mailto: str | None, list_id: str | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """The list fields in their normal forms, and the header lines they make."""
    if unsubscribe is not None:
        unsubscribe = normal_unsubscribe(unsubscribe)
    if mailto is not None:
        mailto = normal_mailto(mailto)
    if list_id is not None:
        list_id = normal_list_id(list_id)
    return unsubscribe, mailto, list_id, list_head(unsubscribe, mailto, list_id)


def _header_fields(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    message_id: str | None,
    date: datetime | None,
    reply: tuple[Address, ...],
) -> tuple[tuple[tuple[str, str], ...], str | None, datetime | None, tuple[Address, ...]]:
    """Split ``headers`` into the extra ones and the Message-ID, Date and Reply-To they set.

    Returns:
        The extra headers, then ``message_id``, ``date`` and ``reply`` as the headers
        leave them.

    Raises:
        MessageError: for an invalid header, one asyncmail sets itself, or one also given
            as its keyword argument.
    """
    extra: list[tuple[str, str]] = []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        key = check_header_name(name, "headers")
        check_text(value, "headers", name)
        if key in MANAGED_HEADERS or key.startswith("content-"):
            raise MessageError(
                f"headers[{name!r}]: asyncmail sets {name} itself; use the Message fields"
            )
        if key == "message-id":
            if message_id is not None:
                raise MessageError("headers['Message-ID']: also given as message_id=")
            message_id = value
        elif key == "date":
            if date is not None:
                raise MessageError("headers['Date']: also given as date=")
            try:
                date = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                raise MessageError(f"headers[{name!r}]: invalid date {value!r}") from None
        elif key == "reply-to":
            if reply:
                raise MessageError("headers['Reply-To']: also given as reply_to=")
            reply = parse_addresses(split_address_list(value), "reply_to")
        else:
            extra.append((name, value))
    return tuple(extra), message_id, date, reply


def new_message_id(sender: str) -> str:
    """A fresh Message-ID at the sender's domain (``localhost`` when there is none)."""
    return _message_id(None, sender)


@lru_cache(maxsize=256)
def _id_suffix(sender: str) -> str:
    """``@domain>`` for a Message-ID at the sender's domain (senders repeat across messages)."""
    domain = sender.rpartition("@")[2]
    try:
        domain = ascii_domain(domain) if domain else "localhost"
    except MessageError:  # pragma: no cover - validated with the sender already
        domain = "localhost"
    return f"@{domain}>"


def _message_id(given: str | None, sender: str) -> str:
    if given is None:
        return f"<{random_hex()}{_id_suffix(sender)}"
    check_text(given, "message_id")
    given = given.strip()
    if not given.startswith("<"):
        given = f"<{given}>"
    if len(given) > _MAX_MSG_ID or not _MSG_ID.fullmatch(given):
        raise MessageError(f"message_id: invalid Message-ID {given!r}")
    return given
