"""Render a Message to RFC 5322 bytes without the email package: CRLF, <= 998 octets a line.

The MIME tree follows the content::

    mixed                        when there are regular attachments
    └── related                  when there are inline attachments and HTML
        └── alternative          when there are both text and HTML
            ├── text/plain
            └── text/html

Every text body is normalised to CRLF line ends and always ends with one, so what a reader
gets back is the text with ``\\n`` line ends and a final newline.
"""

from __future__ import annotations

import struct
import time
import unicodedata
from binascii import b2a_base64
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol
from urllib.parse import quote

from .._exceptions import MessageError
from ._address import Address, format_address
from ._headers import fold_unstructured
from ._qp import encode_qp
from ._random import random_hex


class Attachment(Protocol):
    """What the renderer reads of an attachment (``asyncmail.Attachment``)."""

    @property
    def filename(self) -> str: ...
    @property
    def content(self) -> bytes: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def inline(self) -> bool: ...
    @property
    def content_id(self) -> str | None: ...


class Message(Protocol):
    """What the renderer reads of a message (``asyncmail.Message``), which imports it.

    A protocol, not an import: the message module sits on top of this one.
    """

    @property
    def sender(self) -> Address: ...
    @property
    def to(self) -> tuple[Address, ...]: ...
    @property
    def cc(self) -> tuple[Address, ...]: ...
    @property
    def reply_to(self) -> tuple[Address, ...]: ...
    @property
    def subject(self) -> str: ...
    @property
    def date(self) -> datetime: ...
    @property
    def message_id(self) -> str: ...
    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...
    @property
    def attachments(self) -> Sequence[Attachment]: ...


__all__ = ["body_bytes", "crlf_lines", "current_date", "format_date", "render"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MAX_LINE = 998
_LINE = 78
_B64_LINE = 76
_PARAM_CHUNK = 60
_BLOCK_LINES = 1024
_date_cache: dict[tuple[datetime, object], str] = {}
# A message's text and HTML bodies: CRLF-only UTF-8 and a hint (see ``body_bytes``).
_Bodies = tuple[tuple[bytes, int] | None, tuple[bytes, int] | None]
# The current second: its datetime and its header text, made once a second.
_now: tuple[int, datetime, str] = (-1, datetime.fromtimestamp(0, UTC), "")
# The latest From line made: its sender, smtputf8, and the line (see ``_from_header``).
_last_from: tuple[Address | None, bool, str] = (None, False, "")
# Octets to look for with ``in``: an int is one memchr, where a one-octet bytes object
# first fails a conversion to int (an exception raised and cleared: ~2k instructions).
_CR = 0x0D
_NUL = 0x00


def render(
    message: Message, bodies: _Bodies, list_head: str | None = None, *, smtputf8: bool
) -> bytes:
    """Return ``message`` as bytes for DATA: CRLF lines, no Bcc, not dot-stuffed.

    Args:
        message: The message.
        bodies: Its text and HTML bodies as ``body_bytes`` made them (the Message keeps
            them from construction), each None when absent.
        list_head: The List-* header lines the Message made at construction, if any.
        smtputf8: Allow raw UTF-8 addresses in the headers.

    Raises:
        MessageError: when an address needs SMTPUTF8 and ``smtputf8`` is false.
    """
    head = [_from_header(message.sender, smtputf8)]
    if message.to:
        head.append(_address_header("To", message.to, smtputf8))
    if message.cc:
        head.append(_address_header("Cc", message.cc, smtputf8))
    if message.reply_to:
        head.append(_address_header("Reply-To", message.reply_to, smtputf8))
    head.append(fold_unstructured("Subject", message.subject) if message.subject else "Subject:")
    head.append("Date: " + format_date(message.date))
    head.append("Message-ID: " + message.message_id)
    if list_head is not None:
        head.append(list_head)
    for name, value in message.headers:
        head.append(fold_unstructured(name, value))
    head.append("MIME-Version: 1.0")
    content_head, body = _content(message, bodies, random_hex()[:24])  # (96 bits are plenty)
    head.append(content_head)
    head.append("\r\n")
    body[0] = "\r\n".join(head).encode("utf-8" if smtputf8 else "ascii")
    return b"".join(body)  # the one copy of the body parts


def current_date() -> datetime:
    """Now, in UTC and to the second (the precision of a Date header).

    Every message made within one second shares one datetime object, so ``format_date``
    recognises it by identity instead of formatting it again.
    """
    global _now
    second = int(time.time())
    if second != _now[0]:
        value = datetime.fromtimestamp(second, UTC)
        _now = (second, value, _format_date(value, "+0000"))
    return _now[1]


def format_date(value: datetime) -> str:
    """Format ``value`` as an RFC 5322 date; a naive datetime is taken as UTC (``-0000``)."""
    now = _now
    if value is now[1]:
        return now[2]
    offset = value.utcoffset()
    key = (value.replace(microsecond=0, tzinfo=None), offset)
    cached = _date_cache.get(key)
    if cached is not None:
        return cached
    if offset is None:
        zone = "-0000"
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    text = _format_date(value, zone)
    if len(_date_cache) > 64:  # dates repeat within a second; keep only recent ones
        _date_cache.clear()
    _date_cache[key] = text
    return text


def _format_date(value: datetime, zone: str) -> str:
    return (
        f"{_DAYS[value.weekday()]}, {value.day:02d} {_MONTHS[value.month]} {value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} {zone}"
    )


def _from_header(sender: Address, smtputf8: bool) -> str:
    # Senders repeat across messages, mostly as the very same Address (``parse_address``
    # caches them): an identity check costs a fraction of hashing one for the cache.
    global _last_from
    last = _last_from
    if sender is last[0] and smtputf8 is last[1]:
        return last[2]
    line = _from_line(sender, smtputf8)
    _last_from = (sender, smtputf8, line)
    return line


@lru_cache(maxsize=256)
def _from_line(sender: Address, smtputf8: bool) -> str:
    return _address_header("From", (sender,), smtputf8)


def _address_header(name: str, addresses: tuple[Address, ...], smtputf8: bool) -> str:
    if len(addresses) == 1:  # (the common case; the same line as below)
        return f"{name}: {format_address(addresses[0], smtputf8=smtputf8)}"
    items = [format_address(address, smtputf8=smtputf8) for address in addresses]
    line = f"{name}: " + ", ".join(items)
    if len(line) <= _LINE and "\r" not in line:
        return line
    return f"{name}: " + ",\r\n ".join(items)


# An entity: its header lines, and its body as bytes (a leaf) or as pieces (a multipart,
# whose first piece is left empty for the enclosing header).
_Entity = tuple[str, "bytes | list[bytes]"]


def _content(message: Message, bodies: _Bodies, token: str) -> tuple[str, list[bytes]]:
    """Return the top entity's Content-* header lines and its body, in pieces.

    The first piece is a placeholder (``b""``) for the caller to put the header in, so
    the whole message is joined, and the bodies copied, once.
    """
    text, html = bodies
    parts: list[_Entity] = []
    if text is not None:
        parts.append(_text_part(text, "plain"))
    if html is not None:
        parts.append(_text_part(html, "html"))
    if not parts and not message.attachments:
        parts.append(_text_part((b"\r\n", 0), "plain"))
    entity: _Entity | None = None
    if len(parts) > 1:
        entity = _multipart("alternative", parts, f"=_a{token}")
    if entity is None and parts:
        entity = parts[0]
    if not message.attachments:  # (the common case: skip looking through none)
        assert entity is not None
        head, body = entity
        return head, [b"", body] if isinstance(body, bytes) else body
    related = html is not None and any(a.inline for a in message.attachments)
    if related and entity is not None:
        embedded = [_attachment_part(a) for a in message.attachments if a.inline]
        entity = _multipart("related", [entity, *embedded], f"=_r{token}")
    files = [a for a in message.attachments if not (related and a.inline)]
    if files:
        mixed = [] if entity is None else [entity]
        mixed.extend(_attachment_part(a) for a in files)
        entity = _multipart("mixed", mixed, f"=_m{token}")
    assert entity is not None
    head, body = entity
    return head, [b"", body] if isinstance(body, bytes) else body


def _multipart(subtype: str, parts: list[_Entity], boundary: str) -> tuple[str, list[bytes]]:
    # Each part's line end, delimiter and header lines go as one piece (one encode a
    # part, not three pieces): "--B CRLF head CRLF CRLF", body, "CRLF --B CRLF head...".
    chunks: list[bytes] = [b""]
    lead = f"--{boundary}\r\n"
    for head, body in parts:
        chunks.append(f"{lead}{head}\r\n\r\n".encode("ascii"))
        if isinstance(body, bytes):
            chunks.append(body)
        else:
            chunks += body
        lead = f"\r\n--{boundary}\r\n"
    chunks.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"', chunks


def body_bytes(text: object, field: str) -> tuple[bytes, int]:
    """Return ``text`` as UTF-8 with CRLF line ends (ending with CRLF), and a hint.

    The hint is a lower bound on the number of non-ASCII octets, free to compute here (a
    character of k octets adds k - 1 to the length, and k / (k - 1) >= 4 / 3), which often
    settles base64 against quoted-printable without counting. It is 0 exactly when the
    text is ASCII, which spares the renderer an ``isascii`` pass.

    Raises:
        MessageError: naming ``field`` when ``text`` is not a str encodable as UTF-8.
    """
    if not isinstance(text, str):
        raise MessageError(f"{field}: expected str, got {type(text).__name__}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError(f"{field}: not encodable as UTF-8") from None
    high_at_least = (len(data) - len(text)) * 4 // 3
    return crlf_lines(data), high_at_least


def crlf_lines(data: bytes) -> bytes:
    """Return ``data`` with CRLF line ends only, the last line ended too.

    CRLF, a bare CR and a bare LF each become one CRLF, so no line end reaches the wire
    that a server could read differently (SMTP smuggling). This is asyncmail's one line
    end normaliser: text bodies and the wire content of anything not rendered here
    (``message._content``) go through it.
    """
    if _CR in data:  # text from Python mostly has LF only: skip two passes
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if data.endswith(b"\n"):
        return data.replace(b"\n", b"\r\n")
    # (not ``data += b"\n"`` first: a copy, where ``replace`` gives a body without a line
    # end, such as one-line HTML, back as it is)
    return data.replace(b"\n", b"\r\n") + b"\r\n"


def _text_part(body: tuple[bytes, int], subtype: str) -> tuple[str, bytes]:
    data, high_at_least = body
    if not high_at_least and _NUL not in data and _lines_fit(data):  # (0: ASCII)
        cte, encoded = "7bit", data
    else:
        # Quoted-printable when it is no longer than base64. The hint settles mostly
        # non-ASCII text without encoding it twice; otherwise the encoded length decides
        # (counting the octets to escape would cost as much as encoding).
        size = len(data)
        b64_size = (size + 2) // 3 * 4 * (_B64_LINE + 2) // _B64_LINE
        if size + 2 * high_at_least <= b64_size:
            cte, encoded = "quoted-printable", encode_qp(data, crlf_only=True)
            if len(encoded) > b64_size:
                cte, encoded = "base64", _base64_lines(data)
        else:
            cte, encoded = "base64", _base64_lines(data)
    return _TEXT_HEAD[subtype, cte], encoded


_TEXT_HEAD = {
    (
        subtype,
        cte,
    ): f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {cte}"
    for subtype in ("plain", "html")
    for cte in ("7bit", "quoted-printable", "base64")
}


def _lines_fit(data: bytes) -> bool:
    """Whether every line of CRLF-only ``data`` is at most 998 octets long.

    Jumps from line start to the last LF within reach (998 octets, CR, LF), so a body
    costs a few C searches, not one Python step per line.
    """
    size = len(data)
    start = 0
    while size - start > _MAX_LINE:  # what is left may hold a line too long
        end = data.rfind(b"\n", start, start + _MAX_LINE + 2)
        if end < 0:
            return False
        start = end + 1
    return True


def _base64_lines(data: bytes) -> bytes:
    """Base64 in 76-character CRLF lines, the final line ending in CRLF too.

    The split into lines is one ``struct`` unpack per block of lines: C speed, where a
    Python loop over slices costs more than the encoding itself.
    """
    encoded = b2a_base64(data, newline=False)
    size = len(encoded)
    lines: list[bytes] = []
    start = 0
    block = _B64_LINE * _BLOCK_LINES
    while size - start >= block:
        lines.extend(_line_splitter(_BLOCK_LINES).unpack_from(encoded, start))
        start += block
    full = (size - start) // _B64_LINE
    if full:
        lines.extend(_line_splitter(full).unpack_from(encoded, start))
        start += full * _B64_LINE
    if start < size:
        lines.append(encoded[start:])
    lines.append(b"")
    return b"\r\n".join(lines)


@lru_cache(maxsize=256)
def _line_splitter(count: int) -> struct.Struct:
    return struct.Struct(f"{_B64_LINE}s" * count)


def _attachment_part(attachment: Attachment) -> tuple[str, bytes]:
    disposition = "inline" if attachment.inline else "attachment"
    lines = [
        _with_params(f"Content-Type: {attachment.content_type}", "name", attachment.filename),
        _with_params(f"Content-Disposition: {disposition}", "filename", attachment.filename),
        "Content-Transfer-Encoding: base64",
    ]
    if attachment.content_id is not None:
        lines.append(f"Content-ID: <{attachment.content_id}>")
    return "\r\n".join(lines), _base64_lines(attachment.content)


def _with_params(head: str, key: str, filename: str) -> str:
    """Append ``key`` for ``filename``: RFC 2231 for non-ASCII, plus a plain fallback."""
    params: list[str]
    if filename.isascii() and len(filename) <= _PARAM_CHUNK:
        params = [f"{key}={_quoted(filename)}"]
    else:
        pieces = _rfc2231_pieces(filename)
        if len(pieces) == 1:
            params = [f"{key}*=utf-8''{pieces[0]}"]
        else:
            params = [f"{key}*0*=utf-8''{pieces[0]}"]
            params.extend(f"{key}*{i}*={piece}" for i, piece in enumerate(pieces[1:], 1))
        # Readers pick the first of duplicate names; old ones only know the plain form.
        params.append(f"{key}={_quoted(_ascii_fallback(filename))}")
    line = f"{head}; " + "; ".join(params)
    if len(line) <= _LINE:
        return line
    return f"{head};\r\n " + ";\r\n ".join(params)


def _rfc2231_pieces(filename: str) -> list[str]:
    """Percent-encode ``filename`` in pieces that never split a character."""
    pieces: list[str] = []
    current = ""
    for ch in filename:
        encoded = quote(ch, safe="!#$&+^`|~")
        if len(current) + len(encoded) > _PARAM_CHUNK:
            pieces.append(current)
            current = ""
        current += encoded
    pieces.append(current)
    return pieces


def _ascii_fallback(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    if not dot or not ext.isascii() or len(ext) > 10:
        stem, dot, ext = filename, "", ""
    plain = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii")
    plain = "".join(ch if ch.isprintable() else "_" for ch in plain).strip()
    if len(plain) < len(stem) // 2:
        plain = "_" * min(len(stem), 8)
    return plain[: _PARAM_CHUNK - len(ext) - 1] + dot + ext


def _quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
