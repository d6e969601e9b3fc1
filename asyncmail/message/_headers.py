"""Header text: validation against injection, RFC 2047 encoded-words and folding.

Everything here works on ``str`` and returns ASCII ``str`` lines joined with ``\\r\\n ``
(folding whitespace), so a rendered header can never contain a bare CR or LF.
"""

from __future__ import annotations

import re
from binascii import b2a_base64

from .._exceptions import MessageError

__all__ = [
    "MANAGED_HEADERS",
    "check_header_name",
    "check_text",
    "encode_words",
    "fold_unstructured",
    "needs_encoding",
]

# Headers asyncmail writes itself; users set them through Message fields instead.
MANAGED_HEADERS = frozenset(
    {
        *("from", "to", "cc", "bcc", "subject", "mime-version"),
        *("list-id", "list-unsubscribe", "list-unsubscribe-post"),
    }
)

_FORBIDDEN = re.compile(r"[\r\n\x00]")
# The same, and lone surrogates (not encodable as UTF-8): one search settles a valid value.
_SUSPECT = re.compile("[\r\n\x00\ud800-\udfff]")
_FIELD_NAME = re.compile(r"[!-9;-~]{1,76}")  # printable ASCII without colon or space
# Unstructured text we may write raw: printable ASCII words separated by single spaces,
# no encoded-word look-alike, no word too long to fit on a line.
_RAW_WORD = 900  # characters in a word, at most
_RAW_SAFE = re.compile(rf"[!-~]{{1,{_RAW_WORD}}}(?: [!-~]{{1,{_RAW_WORD}}})*")
# Q-encoding: the characters allowed unencoded in an encoded-word inside a phrase (RFC 2047 5(3)).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_TABLE = tuple("_" if b == 0x20 else chr(b) if b in _Q_SAFE else f"={b:02X}" for b in range(256))
_Q_LITERAL = bytes(_Q_SAFE) + b" "  # written as one character each
_EW_B_BYTES = 45  # 45 bytes -> 60 base64 chars -> a 72-char encoded-word
_EW_Q_CHARS = 63  # 75 - len("=?utf-8?q??=")
_LINE = 78


def check_text(value: object, field: str, key: str | None = None) -> str:
    """Return ``value`` if it is a str with no CR, LF or NUL and encodable as UTF-8.

    Raises:
        MessageError: naming ``field`` (as ``field[key]`` when a key is given), when the value
            could inject a header or is not text.
    """
    if not isinstance(value, str):
        problem = f"expected str, got {type(value).__name__}"
    elif value.isascii() and "\r" not in value and "\n" not in value and "\x00" not in value:
        return value  # (no surrogate in ASCII; three memchr cost a third of the regex)
    elif value.isprintable() or _SUSPECT.search(value) is None:
        return value  # (printable: no CR, LF, NUL or surrogate, at half the regex's cost)
    elif _FORBIDDEN.search(value):
        problem = f"CR, LF and NUL are not allowed: {value!r}"
    else:
        problem = f"not encodable as UTF-8 (a lone surrogate): {value!r}"
    label = field if key is None else f"{field}[{key!r}]"
    raise MessageError(f"{label}: {problem}")


def check_header_name(name: object, field: str) -> str:
    """Return ``name`` lowercased if it is a valid field name (printable ASCII, no colon).

    Raises:
        MessageError: naming ``field``, when the name is not a valid field name.
    """
    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
        raise MessageError(f"{field}: invalid header name {name!r}")
    return name.lower()


def needs_encoding(text: str) -> bool:
    """Whether unstructured ``text`` must be written as encoded-words to round-trip exactly."""
    if 0 < len(text) <= _RAW_WORD and text.isascii() and text.isprintable():
        # (the common case, at a fraction of the regex's cost: printable ASCII is "!"-"~"
        # and space, and no word can be too long)
        return text[0] == " " or text[-1] == " " or "  " in text or "=?" in text
    return _RAW_SAFE.fullmatch(text) is None or "=?" in text


def encode_words(text: str) -> list[str]:
    """Encode ``text`` as RFC 2047 UTF-8 encoded-words, B or Q whichever is shorter.

    Each word is at most 75 characters and never splits a multibyte UTF-8 character;
    whitespace between adjacent encoded-words is ignored by readers, so callers join them
    with folding whitespace.
    """
    data = text.encode("utf-8")
    table = _Q_TABLE
    q_len = len(data) + 2 * len(data.translate(None, _Q_LITERAL))
    b_len = (len(data) + 2) // 3 * 4
    if b_len < q_len and len(data) <= _EW_B_BYTES:  # (one word: a short name or subject)
        return [f"=?utf-8?b?{b2a_base64(data, newline=False).decode('ascii')}?="]
    words: list[str] = []
    if b_len < q_len:
        start, n = 0, len(data)
        while start < n:
            end = min(start + _EW_B_BYTES, n)
            while end < n and 0x80 <= data[end] < 0xC0:  # don't cut inside a character
                end -= 1
            chunk = b2a_base64(data[start:end], newline=False).decode("ascii")
            words.append(f"=?utf-8?b?{chunk}?=")
            start = end
        return words
    parts: list[str] = []
    size = 0
    for ch in text:  # per character, so a multibyte character is never split
        piece = table[ord(ch)] if ch < "\x80" else "".join(table[b] for b in ch.encode())
        if size + len(piece) > _EW_Q_CHARS:
            words.append("=?utf-8?q?" + "".join(parts) + "?=")
            parts, size = [], 0
        parts.append(piece)
        size += len(piece)
    if parts or not words:
        words.append("=?utf-8?q?" + "".join(parts) + "?=")
    return words


def fold_unstructured(name: str, text: str) -> str:
    """Render ``name: text`` as one folded header line (without the final CRLF)."""
    if text.isascii() and not needs_encoding(text):  # (non-ASCII always needs it)
        if len(name) + len(text) + 2 <= _LINE:
            return f"{name}: {text}"
        return _fold_words(f"{name}:", text.split(" "))
    words = encode_words(text)
    if len(words) == 1:  # (a short subject: what _fold_words makes of one word)
        return f"{name}: {words[0]}"
    return _fold_words(f"{name}:", words)


def _fold_words(head: str, words: list[str]) -> str:
    """Join ``words`` after ``head`` with spaces, breaking lines before 78 chars where possible."""
    lines: list[str] = []
    line = head
    for word in words:
        if len(line) + 1 + len(word) > _LINE and line != head:
            lines.append(line)
            line = " " + word
        else:
            line = f"{line} {word}"
    lines.append(line)
    return "\r\n".join(lines)
