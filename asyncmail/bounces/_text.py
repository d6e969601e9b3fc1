"""Reading the pieces of a bounce as text: headers, bodies, addresses, codes.

Every helper here takes whatever the stdlib parser built from arbitrary bytes and returns a
``str`` (empty when there is nothing), never raising: bounces are often malformed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import errors
from email.header import decode_header, make_header
from email.message import Message

from ._model import UNKNOWN_USER

__all__ = [
    "MAX_PARTS",
    "MAX_RECIPIENTS",
    "MAX_TEXT",
    "body_text",
    "header",
    "host",
    "infer_status",
    "one_line",
    "parts",
    "payload",
    "strip_address",
    "strip_type",
    "xtext_decode",
]

#: Parts looked at per message; a report has three or four.
MAX_PARTS = 200
#: Recipients read per report (a report on a mailing list's explosion can be long).
MAX_RECIPIENTS = 1000
#: Characters of a body read for its wording (a bounce's own text is short).
MAX_TEXT = 256 * 1024

_XTEXT = re.compile(r"\+([0-9A-F]{2})")
_XTEXT_BYTES = re.compile(rb"\+([0-9A-F]{2})")
_UTF8_ADDR = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_SPACE = re.compile(r"\s+")
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?<!\d)([45])\d\d(?![\d.])")
_FULL = re.compile(
    r"mailbox (?:is )?full|over ?quota|quota exceeded|exceeded (?:their|the) quota|"
    r"insufficient (?:storage|space)|空间不足|容量(?:已满|不足)",
    re.IGNORECASE,
)
_TAG = re.compile(r"<[^>]{0,2000}>")
_BREAK = re.compile(r"<\s*(?:br|/p|/div|/tr|/li)\b[^>]{0,200}>", re.IGNORECASE)


def header(message: Message, name: str) -> str:
    """A header's value, RFC 2047 words decoded, or "" when it is absent or unreadable."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))
    except (errors.MessageError, ValueError, LookupError, TypeError, AssertionError):
        return str(value)


def host(value: str) -> str:
    """``dns; mx.example.org. (192.0.2.1, ...)`` -> ``mx.example.org``: the name alone."""
    words = strip_type(value).split()
    return words[0].rstrip(".") if words else ""


def one_line(text: str) -> str:
    """Unfolded: every run of whitespace (line breaks too) as one space."""
    return _SPACE.sub(" ", text).strip()


def strip_type(value: str) -> str:
    """``dns; mx.example.com`` -> ``mx.example.com`` (the RFC 3464 type before ``;``)."""
    type_, semicolon, rest = value.partition(";")
    if semicolon and " " not in type_.strip() and "@" not in type_:
        value = rest
    return one_line(value)


def xtext_decode(value: str) -> str:
    """Undo RFC 3461 xtext (``+2B`` for ``+``) and RFC 6533 ``\\x{..}``; as is when not."""
    value = _UTF8_ADDR.sub(lambda m: _char(int(m.group(1), 16)), value)
    if _XTEXT.search(value) is None:
        return value
    try:
        data = _XTEXT_BYTES.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8"))
        return data.decode("utf-8")
    except UnicodeError:  # not xtext after all (or a lone surrogate): leave it
        return value


def _char(code: int) -> str:
    return chr(code) if code <= 0x10FFFF else "\ufffd"


def strip_address(value: str) -> str:
    """``rfc822; <Bob@example.org>`` -> ``Bob@example.org``: type, brackets, spaces off."""
    address = xtext_decode(strip_type(value))
    if address.startswith("<") and ">" in address:
        address = address[1 : address.index(">")]
    return address.strip().strip("<>").strip()


def infer_status(text: str, *, permanent: bool = True) -> str:
    """The enhanced status code a server reply implies, or "" when it names no code.

    An enhanced code in the text wins (``550 5.7.1 ...`` -> ``5.7.1``). Else a basic reply
    code (``550``) or, failing that, ``permanent`` gives the class, and the wording the
    subject: "user unknown" -> ``X.1.1``, "mailbox full" -> ``X.2.2``, else ``X.0.0``.
    """
    enhanced = _ENHANCED.search(text)
    if enhanced is not None and enhanced.group(1) != "2":
        return ".".join(enhanced.groups())
    basic = _BASIC.search(text)
    klass = basic.group(1) if basic else ("5" if permanent else "4")
    if UNKNOWN_USER.search(text):
        return f"{klass}.1.1"
    if _FULL.search(text):
        return f"{klass}.2.2"
    return f"{klass}.0.0" if basic or text.strip() else ""


def payload(part: Message) -> list[Message] | str | None:
    """``part.get_payload()``, or None where the stdlib trips on it (a bad charset name)."""
    try:
        value = part.get_payload()
    except (ValueError, LookupError, TypeError, AssertionError):
        return None
    if isinstance(value, list):
        return [item for item in value if isinstance(item, Message)]
    return value if isinstance(value, str) else None


def parts(message: Message) -> Iterator[Message]:
    """The message and its MIME parts, depth first, not entering ``message/*`` parts.

    A bounce's ``message/rfc822`` part is the message that bounced (which may itself be a
    bounce): its parts are not the report's.
    """
    stack = [message]
    seen = 0
    while stack and seen < MAX_PARTS:
        part = stack.pop()
        seen += 1
        yield part
        if part.get_content_maintype() == "message":
            continue
        children = payload(part)
        if isinstance(children, list):
            stack.extend(p for p in reversed(children) if isinstance(p, Message))


def body_text(part: Message) -> str:
    """A text part's content as ``str`` (transfer encoding and charset undone), capped."""
    try:
        raw = part.get_payload(decode=True)
    except (ValueError, LookupError, TypeError, AssertionError):
        raw = None
    if not isinstance(raw, bytes):
        text = payload(part)
        return text[:MAX_TEXT] if isinstance(text, str) else ""
    raw = raw[: MAX_TEXT * 4]
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, "replace")
    except (LookupError, ValueError):
        text = raw.decode("utf-8", "replace")
    text = text[:MAX_TEXT]
    if part.get_content_subtype() == "html":
        text = _TAG.sub("", _BREAK.sub("\n", text))
        text = text.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">")
        text = text.replace("&amp;", "&")
    return text
