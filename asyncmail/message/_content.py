"""Content for the wire: a message to the bytes of the SMTP DATA phase, in one module.

``wire_content`` takes an asyncmail ``Message`` or a stdlib ``email.message.Message`` and
returns a ``WireContent``: what goes out after DATA, and what MAIL FROM must say about it.
Every decision about those bytes is made here, before any I/O:

- Line ends: whatever our own renderer did not make goes through ``crlf_lines``, the one
  normaliser, so a bare CR or LF never reaches the wire (SMTP smuggling). The renderer's
  output is CRLF-only by construction and skips that pass: the send path is hot.
- NUL: 7bit and 8bit data never hold a NUL octet (RFC 2045 2.7, 2.8): a ``MessageError``.
- 8-bit: content with octets over 127 needs BODY=8BITMIME (RFC 6152). For a server without
  8BITMIME, a stdlib message is re-encoded by the stdlib itself (``cte_type="7bit"``: base64
  or quoted-printable), which RFC 6152 allows a client to do, unless it is signed, since
  re-encoding would break the signature. Whatever cannot go 7-bit is a
  ``NotSupportedError`` (phase MAIL) that says what to do.
- SMTPUTF8: UTF-8 headers only for an SMTPUTF8 transaction; otherwise a non-ASCII local
  part in a header is a ``MessageError``.

The stdlib's serialiser is not trusted with header injection (the running Python may
predate the fixes for CVE-2024-6923): values are checked before, and the produced header
block is checked after.
"""

from __future__ import annotations

import copy
import email.message
import email.utils
import re
from collections.abc import Callable
from email import headerregistry
from email import policy as email_policy
from email.headerregistry import AddressHeader

from .._exceptions import MessageError, NotSupportedError, Phase
from ._address import wire_addr_spec
from ._message import Message
from ._raw import RawMessage
from ._render import crlf_lines

__all__ = [
    "WireContent",
    "check_headers",
    "content_bytes",
    "dot_stuff",
    "headers_need_smtputf8",
    "unstuffed",
    "wire_content",
]

_FIELD_NAME = re.compile(r"[!-9;-~]+")
_FOLDED_BREAK = re.compile(r"\r?\n[ \t]")
_BAD_CHARS = re.compile(r"[\r\n\x00]")
_BCC = ("bcc", "resent-bcc")
_ADDRESS_FIELDS = frozenset(
    {"from", "sender", "to", "cc", "reply-to", "resent-from", "resent-sender", "resent-to"}
    | {"resent-cc"}
)
_MAX_LINE = 998
_NO_8BITMIME = "the message has 8-bit content and the server does not offer 8BITMIME (RFC 6152)"
_USE_7BIT = "give its non-ASCII parts a Content-Transfer-Encoding of base64 or quoted-printable"


class WireContent:
    """A message ready for DATA or BDAT, with what MAIL FROM must say about it.

    Made from either form of the content; the other is derived when first asked for and
    kept. A message that goes by BDAT is then never dot-stuffed (and unstuffed again), and
    one that goes by DATA is stuffed once, however often it is retried.

    Attributes:
        size: Octets of the message before dot-stuffing, without the final dot: the
            ``SIZE=`` value (RFC 1870).
        eight_bit: The content has octets over 127: MAIL FROM must declare
            ``BODY=8BITMIME`` (RFC 6152). Never true unless the server offers 8BITMIME.
        smtputf8: Rendered for an SMTPUTF8 transaction (UTF-8 headers allowed): MAIL FROM
            must declare ``SMTPUTF8``. The value passed to ``wire_content``.
    """

    # (a plain slotted class, not a frozen dataclass: one is made per message, sending is
    # hot, and the two forms are made lazily. Never changed otherwise.)
    __slots__ = ("_raw", "_stuffed", "eight_bit", "size", "smtputf8")

    def __init__(
        self,
        data: bytes | None,
        size: int,
        eight_bit: bool,
        smtputf8: bool,
        *,
        raw: bytes | None = None,
    ) -> None:
        """Give ``data`` (dot-stuffed) or ``raw`` (not: CRLF lines ending in CRLF)."""
        if data is None and raw is None:
            raise ValueError("WireContent needs data or raw")
        self._stuffed = data
        self._raw = raw
        self.size = size
        self.eight_bit = eight_bit
        self.smtputf8 = smtputf8

    @property
    def data(self) -> bytes:
        """CRLF lines, dot-stuffed, ending with the final ``b"\\r\\n.\\r\\n"``: what goes
        after DATA's 354 reply, as it is."""
        stuffed = self._stuffed
        if stuffed is None:
            assert self._raw is not None
            stuffed = self._stuffed = _stuffed(self._raw)
            self._raw = None  # (one copy is enough: most messages go one way)
        return stuffed

    @property
    def raw(self) -> bytes:
        """CRLF lines ending in CRLF, not dot-stuffed, no final dot: what BDAT sends
        (RFC 3030); ``unstuffed(data)``."""
        raw = self._raw
        if raw is None:
            assert self._stuffed is not None
            raw = self._raw = unstuffed(self._stuffed)
        return raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WireContent):
            return NotImplemented
        mine = (self.size, self.eight_bit, self.smtputf8)
        return mine == (other.size, other.eight_bit, other.smtputf8) and self.data == other.data

    __hash__ = None  # type: ignore[assignment]  # (equal by value, and not immutable)

    def __repr__(self) -> str:
        return (
            f"WireContent(size={self.size}, eight_bit={self.eight_bit}, smtputf8={self.smtputf8})"
        )


def wire_content(
    message: Message | RawMessage | email.message.Message,
    *,
    message_id: str | None,
    smtputf8: bool,
    eightbitmime: bool,
    sign: Callable[[bytes], bytes] | None = None,
) -> WireContent:
    """Return ``message`` as the DATA phase sends it, validated before any I/O.

    Args:
        message: An asyncmail Message or a stdlib (Email)Message; the latter is never
            changed.
        message_id: For a stdlib message without one, the Message-ID to add (see
            ``Envelope.message_id``, so every attempt carries the same); ignored for a
            Message, which has its own.
        smtputf8: The transaction declares SMTPUTF8 (the envelope needs it and the server
            offers it): headers may carry UTF-8.
        eightbitmime: The server offers 8BITMIME.
        sign: Called with the final content (for this mode, before dot-stuffing); the
            ASCII header lines it returns (DKIM-Signature) go in front of it.

    Raises:
        MessageError: the message is invalid whatever the server: a NUL octet, header
            injection, a line over 998 octets, or a non-ASCII local part in a header
            when ``smtputf8`` is false.
        NotSupportedError: (phase MAIL) the content is 8-bit, the server does not offer
            8BITMIME and the content cannot be re-encoded 7-bit.
    """
    if type(message) is Message:  # the hot path: no scan for bare CR/LF or NUL
        # our renderer's output is CRLF-only, NUL-free and ASCII unless smtputf8, by
        # construction (property-tested in tests/test_content.py)
        raw = message.to_bytes(smtputf8=smtputf8)
        eight_bit = smtputf8 and not raw.isascii()
    elif isinstance(message, RawMessage):  # checked when it was made; sent as it is
        raw = message.data
        eight_bit = not raw.isascii()
    else:
        raw = content_bytes(message, smtputf8=smtputf8, message_id=message_id)
        eight_bit = not raw.isascii()
    if eight_bit and not eightbitmime:
        utf8_head = smtputf8 and not _head_is_ascii(raw)  # no 7-bit form: SMTPUTF8 needs 8-bit
        if isinstance(message, RawMessage):
            raise NotSupportedError(
                f"{_NO_8BITMIME}, and a RawMessage is sent unchanged: send it through a "
                "server that offers 8BITMIME",
                phase=Phase.MAIL,
            )
        if utf8_head or not isinstance(message, email.message.Message):
            raise _not_7bit(raw, smtputf8, "")
        raw = _seven_bit(message, smtputf8=smtputf8, message_id=message_id)
        eight_bit = False
    if sign is not None:
        raw = sign(raw) + raw
    # (not dot-stuffed yet: BDAT sends it as it is, DATA stuffs it when it first goes)
    wire = raw if raw.endswith(b"\r\n") else raw + b"\r\n"  # (as ``_stuffed`` ends it)
    return WireContent(None, len(raw), eight_bit, smtputf8, raw=wire)


def headers_need_smtputf8(message: Message | email.message.Message) -> bool:
    """Whether an address header (not Bcc) of ``message`` has a non-ASCII local part.

    Such headers have no ASCII form, so the transaction needs SMTPUTF8 (RFC 6531, 6532)
    even when every envelope address is ASCII: a Reply-To, or a From behind a return
    path or Sender. A non-ASCII display name or domain alone has an ASCII form.
    """
    if isinstance(message, Message):
        for mailbox in (message.sender, *message.to, *message.cc, *message.reply_to):
            addr = mailbox.addr
            if not addr.isascii() and not addr.rpartition("@")[0].isascii():
                return True
        return False
    for name, value in message.raw_items():
        text = str(value)
        if text.isascii() or name.lower() not in _ADDRESS_FIELDS:
            continue
        try:
            header = email_policy.default.header_factory(name, text)
        except Exception:  # malformed: serialising the message reports that, precisely
            continue
        addresses = header.addresses if isinstance(header, AddressHeader) else ()
        if any(not address.username.isascii() for address in addresses):
            return True
    return False


def content_bytes(
    message: Message | email.message.Message, *, smtputf8: bool, message_id: str | None = None
) -> bytes:
    """Return the DATA content of ``message``: CRLF lines, no Bcc, not dot-stuffed.

    What ``wire_content`` sends, before the 8BITMIME decision and dot-stuffing; the
    arguments and errors are the same (no ``NotSupportedError`` here).
    """
    if type(message) is Message:
        return message.to_bytes(smtputf8=smtputf8)  # CRLF-only, NUL-free by construction
    if isinstance(message, Message):  # a subclass may render anything
        raw = message.to_bytes(smtputf8=smtputf8)
        if not isinstance(raw, bytes):
            raise MessageError(f"message: to_bytes() returned {type(raw).__name__}, not bytes")
        data = crlf_lines(raw)
    elif isinstance(message, email.message.Message):
        data = _stdlib_bytes(message, smtputf8=smtputf8, message_id=message_id)
    else:
        raise MessageError(f"message: expected a Message or EmailMessage, got {message!r}")
    if b"\x00" in data:
        raise MessageError(
            "message: the content holds a NUL octet, which SMTP cannot carry; send binary "
            "data base64-encoded"
        )
    return data


def dot_stuff(data: bytes, *, crlf_only: bool = False) -> bytes:
    """Return DATA content ready for the wire: CRLF lines, dots doubled, final dot added.

    Any bare CR or LF is first turned into CRLF (``crlf_lines``), so no line ending the
    server might read differently (SMTP smuggling) reaches the wire.

    Args:
        data: The message.
        crlf_only: The caller vouches that ``data`` has no bare CR or LF (our renderer's
            output), which saves the normalising passes.
    """
    return _stuffed(data if crlf_only else crlf_lines(data))


def _stuffed(data: bytes) -> bytes:
    """Dot-stuff CRLF-only ``data`` and add the final dot (RFC 5321 4.5.2)."""
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def unstuffed(data: bytes) -> bytes:
    """The content of dot-stuffed ``data`` (``WireContent.data``) as BDAT sends it (RFC 3030).

    The final dot goes and each line's stuffed leading dot with it. What ``_stuffed`` added
    to end the last line stays: it is what DATA delivers too.
    """
    body = data[:-3]  # (b".\r\n")
    if body.startswith(b".."):
        body = body[1:]
    if b"\r\n.." in body:
        body = body.replace(b"\r\n..", b"\r\n.")
    return body


def _seven_bit(message: email.message.Message, *, smtputf8: bool, message_id: str | None) -> bytes:
    """Serialise an 8-bit stdlib message again, 7-bit: the stdlib re-encodes its parts.

    Raises:
        NotSupportedError: the message is signed, or the stdlib cannot re-encode it.
    """
    if "DKIM-Signature" in message or any(
        part.get_content_type() == "multipart/signed" for part in message.walk()
    ):
        raise NotSupportedError(
            f"{_NO_8BITMIME}; it is signed, and re-encoding it would break the signature: "
            f"{_USE_7BIT} before signing",
            phase=Phase.MAIL,
        )
    try:
        data = _stdlib_bytes(message, smtputf8=smtputf8, message_id=message_id, seven_bit=True)
    except MessageError as exc:
        raise NotSupportedError(
            f"{_NO_8BITMIME}, and it cannot be re-encoded ({exc}): {_USE_7BIT}",
            phase=Phase.MAIL,
        ) from exc
    if not data.isascii():  # a part without a charset: the stdlib leaves it as it is
        raise _not_7bit(data, smtputf8, ", and a part of it cannot be re-encoded")
    return data


def _head_is_ascii(data: bytes) -> bool:
    end = data.find(b"\r\n\r\n")
    return data[: end + 2 if end >= 0 else None].isascii()


def _not_7bit(data: bytes, smtputf8: bool, detail: str) -> NotSupportedError:
    """The error for 8-bit ``data`` and a server without 8BITMIME, saying what to do."""
    if smtputf8 and not _head_is_ascii(data):
        text = (
            "the message has UTF-8 headers (an address needs SMTPUTF8) but the server does "
            "not offer 8BITMIME, which RFC 6531 requires of a server that offers SMTPUTF8: "
            "send through a server that offers both"
        )
    else:
        text = f"{_NO_8BITMIME}{detail}: {_USE_7BIT}"
    return NotSupportedError(text, phase=Phase.MAIL)


def _stdlib_bytes(
    message: email.message.Message,
    *,
    smtputf8: bool,
    message_id: str | None,
    seven_bit: bool = False,
) -> bytes:
    check_headers(message)
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
    if seven_bit:
        chosen = chosen.clone(cte_type="7bit")
    try:
        # (the base class's method: a subclass such as Django's SafeMIMEText overrides
        # as_bytes() without the policy argument)
        data = email.message.Message.as_bytes(clone, policy=chosen)
    except (UnicodeError, ValueError, TypeError) as exc:
        raise MessageError(f"message: cannot be serialised: {exc}") from exc
    data = crlf_lines(data)
    _check_output(clone, data)
    return data


def check_headers(message: email.message.Message) -> None:
    """Reject CR, LF and NUL in any header name or (unfolded, decoded) value of any part.

    Raises:
        MessageError: naming the header.
    """
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


def _ascii_address_headers(message: email.message.Message) -> None:
    """IDNA-encode the domains in address headers, which the stdlib would mangle.

    Without SMTPUTF8, Python writes ``user@例え.jp`` as ``user@=?utf-8?...?=.jp``, which no
    reader can reply to. A non-ASCII local part has no ASCII form at all.

    Raises:
        MessageError: for a non-ASCII local part.
    """
    items = list(message.raw_items())
    replaced = [_ascii_address_header(message, name, value) for name, value in items]
    if not any(replaced):
        return
    for name in {name for name, _ in items}:
        del message[name]
    for (name, value), new in zip(items, replaced, strict=True):
        message.set_raw(*(new or (name, value)))  # in the original order


def _ascii_address_header(
    message: email.message.Message, name: str, value: str
) -> tuple[str, str] | None:
    """The ``(name, value)`` to store instead of a non-ASCII address header, else None."""
    if name.lower() not in _ADDRESS_FIELDS or str(value).isascii():
        return None
    header = message.policy.header_fetch_parse(name, value)
    if not isinstance(header, AddressHeader):
        return None
    items: list[headerregistry.Address | headerregistry.Group] = []
    for group in header.groups:
        addresses = [_ascii_address(address) for address in group.addresses]
        if group.display_name is None:
            items.extend(addresses)
        else:
            items.append(headerregistry.Group(group.display_name, addresses))
    return message.policy.header_store_parse(name, items)  # type: ignore[arg-type]


def _ascii_address(address: headerregistry.Address) -> headerregistry.Address:
    spec = wire_addr_spec(address.addr_spec, smtputf8=False)
    local, _, domain = spec.rpartition("@")
    if local.startswith('"'):
        return headerregistry.Address(address.display_name, addr_spec=spec)
    return headerregistry.Address(address.display_name, local, domain)


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
