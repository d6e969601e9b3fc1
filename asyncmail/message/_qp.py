"""Quoted-printable (RFC 2045 section 6.7) for text bodies, in a few C-speed passes.

``binascii.b2a_qp`` walks the body one octet at a time. Text bodies are mostly ASCII and
often one long line (minified HTML, template output), so this encoder works on whole runs:
``bytes.replace`` for ``=``, ``translate`` and ``find`` for the runs of other octets that need
escaping, one ``split`` to see whether any line needs more, and one ``findall`` per line
longer than 76 characters to cut it into pieces that never split an ``=XX`` escape. Python
code runs per escaped run and per line that needs work, not per octet.

The output is what ``b2a_qp(data, istext=True)`` means, not always the same octets: CRLF line
ends stay hard line breaks, ``=``, controls, DEL and octets over 126 are escaped, a space or
tab at the end of a line (or of the data) is escaped, a line that is a lone ``.`` is written
``=2E`` (as ``b2a_qp`` does; dot-stuffing happens later anyway), lines are at most 76
characters with soft breaks ``=\\r\\n``, and a bare CR or LF is escaped, so every input decodes
back exactly.
"""

from __future__ import annotations

import re
from binascii import hexlify
from itertools import repeat

__all__ = ["encode_qp"]

_MAX = 76  # characters a line, the soft break's "=" included
# A piece of a long line before a soft break: 75 characters, or 74 or 73 when an escape
# would straddle the cut. Escapes are the only "=" in escaped text, and hex digits are
# never "=", so an "=" among the last two characters is exactly a straddling escape.
# Used on one line at a time, so "." (any octet, a fast skip in ``re``) never meets CRLF.
_PIECE = re.compile(rb"(?s).{73}(?:[^=]{2}|[^=]?(?==))")
# 1 for an octet to escape (after "=" became "=3D"): controls but tab, CR and LF, DEL and
# octets over 126; 0 for the rest. ``translate`` then ``find`` locate runs at C speed.
_MARKS = bytes(0 if 32 <= octet < 127 or octet in b"\t\r\n" else 1 for octet in range(256))
_SPACE_CR = (b" \r", b"\t\r")


def encode_qp(data: bytes, *, crlf_only: bool = False) -> bytes:
    """Return ``data`` as quoted-printable text, CRLF line ends kept as line breaks.

    Every output line is at most 76 characters of printable ASCII, ends in CRLF (the
    last one only if ``data`` does) and never in a space or tab.

    Args:
        data: The octets. A bare CR or LF is escaped, so it decodes back as itself.
        crlf_only: Promise that every CR and LF in ``data`` is part of a CRLF (as
            ``crlf_lines`` makes them), which skips looking for bare ones.
    """
    if b"=" in data:
        data = data.replace(b"=", b"=3D")
    if not crlf_only:
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            lines = data.split(b"\r\n")
            data = b"\r\n".join([_escape_runs(line, bare=True) for line in lines])
    data = _escape_runs(data)
    lines = data.split(b"\n")  # after escaping, every LF ends a CRLF: lines end in CR
    lines[-1] += b"\r"  # the last too, for a moment
    if (
        max(map(len, lines)) <= _MAX + 1  # the CR included
        and not any(map(bytes.endswith, lines, repeat(_SPACE_CR)))
        and b".\r" not in lines
    ):
        return data  # the common case: nothing to do line by line
    lines = [_line(line) for line in lines]
    lines[-1] = lines[-1][:-1]
    return b"\n".join(lines)


def _escape_runs(data: bytes, *, bare: bool = False) -> bytes:
    """Escape every run of octets marked in ``_MARKS`` (and CR, LF when ``bare``)."""
    if bare:
        data = data.replace(b"\r", b"=0D").replace(b"\n", b"=0A")
    marks = data.translate(_MARKS)
    start = marks.find(1)
    if start < 0:
        return data
    out: list[bytes] = []
    done = 0
    while start >= 0:
        end = marks.find(0, start)
        if end < 0:
            end = len(data)
        out.append(data[done:start])
        out.append(b"=" + hexlify(data[start:end], b"=").upper())
        done = end
        start = marks.find(1, end)
    out.append(data[done:])
    return b"".join(out)


def _line(line: bytes) -> bytes:
    """Finish one escaped line ending in CR: trailing white space, a lone dot, folding."""
    end = len(line) - 1
    if end and line[end - 1] in b" \t":
        line = line[: end - 1] + (b"=20\r" if line[end - 1] == 32 else b"=09\r")
        end += 2
    elif line == b".\r":
        return b"=2E\r"
    if end <= _MAX:
        return line
    # Pieces from all but the last character, so at least one is left for the last
    # piece, which is then at most 75 characters.
    pieces = _PIECE.findall(line, 0, end - 1)
    pieces.append(line[sum(map(len, pieces)) :])
    if pieces[-1] == b".\r":
        pieces[-1] = b"=2E\r"
    return b"=\r\n".join(pieces)
