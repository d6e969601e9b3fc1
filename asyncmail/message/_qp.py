"""Quoted-printable (RFC 2045 section 6.7) for text bodies, in a few C-speed passes.

``binascii.b2a_qp`` walks the body one octet at a time. Text bodies are mostly ASCII and
often one long line (minified HTML, template output), so this encoder works on whole runs:
``bytes.replace`` for ``=``, ``translate`` and ``find`` for the runs of other octets that need
escaping. A body of one line is cut on a grid of 75-character pieces (``struct`` slices
them in C): escapes are the only ``=`` in escaped text, so two extended slices of the line
(the characters at offsets 73 and 74 of every piece) show at once whether an escape
straddles a cut, and only there does Python code move the grid. In a body of many lines,
each line too long is cut by one regex ``findall``. Python code runs per escaped run, per
line that needs work and per cut that an escape moves, not per octet.

The output is what ``b2a_qp(data, istext=True)`` means, not always the same octets: CRLF line
ends stay hard line breaks, ``=``, controls, DEL and octets over 126 are escaped, a space or
tab at the end of a line (or of the data) is escaped, a line that is a lone ``.`` is written
``=2E`` (as ``b2a_qp`` does; dot-stuffing happens later anyway), lines are at most 76
characters with soft breaks ``=\\r\\n``, and a bare CR or LF is escaped, so every input decodes
back exactly.
"""

from __future__ import annotations

import re
import struct
from binascii import hexlify
from functools import lru_cache
from itertools import repeat

__all__ = ["encode_qp"]

_MAX = 76  # characters a line, the soft break's "=" included, the line end not
_PIECE = 75  # characters before a soft break, unless an escape would straddle the cut
_EQUALS = 61  # "="
_GRID_BLOCK = 256  # pieces sliced by one cached struct
_FEW_CUTS = 4  # up to this many cuts left in a line, the regex costs less than a grid
_GRID_FROM = _MAX + _FEW_CUTS * _PIECE  # a line this long or shorter: no grid
_MAX_MOVES = 8  # grids moved by escapes in one line before the regex takes over
# The same cuts one by one, for a line with few cuts or dense escapes: a piece of 75
# characters, or 73 or 74 when an "=" (an escape) is at offset 73 or 74, while at least
# 77 characters are left (so the rest is at most 76). Used with ``endpos`` at the end of
# the line's text, so "." (any octet, a fast skip in ``re``) never meets its line end.
_CUTS = re.compile(rb"(?s)(?=.{77}).{73}(?:[^=]{2}|[^=]?(?==))")
# The same for a line that ends in CR, the rest of the line (its CR included) matched too:
# ``findall`` gives the pieces to join with soft breaks, one C call per line.
_LINE_CUTS = re.compile(rb"(?s)(?=.{78}).{73}(?:[^=]{2}|[^=]?(?==))|.+")
# 1 for an octet to escape (after "=" became "=3D"): controls but tab, CR and LF, DEL and
# octets over 126; 0 for the rest. ``translate`` then ``find`` locate runs at C speed.
_MARKS = bytes(0 if 32 <= octet < 127 or octet in b"\t\r\n" else 1 for octet in range(256))
_SPACE_CR = (b" \r", b"\t\r")
_LAST = frozenset((b" ", b"\t", b"."))  # a line's last character that may need work


def encode_qp(data: bytes, *, crlf_only: bool = False) -> bytes:
    """Return ``data`` as quoted-printable text, CRLF line ends kept as line breaks.

    Every output line is at most 76 characters of printable ASCII, ends in CRLF (the
    last one only if ``data`` does) and never in a space or tab.

    Args:
        data: The octets. A bare CR or LF is escaped, so it decodes back as itself.
        crlf_only: Promise that every CR and LF in ``data`` is part of a CRLF (as
            ``crlf_lines`` makes them), which skips looking for bare ones.
    """
    if _EQUALS in data:  # (an int: one memchr; b"=" would first fail a conversion to int)
        data = data.replace(b"=", b"=3D")
    if not crlf_only:
        crlf = data.count(b"\r\n")
        if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
            lines = data.split(b"\r\n")
            data = b"\r\n".join([_escape_runs(line, bare=True) for line in lines])
    data = _escape_runs(data)
    # After escaping, every LF ends a CRLF.
    last = len(data) - 2 if data.endswith(b"\r\n") else len(data)
    if data.find(b"\n", 0, last) < 0:  # one line (memchr: no pass of Python's own)
        return _line(data, last)
    lines = data.split(b"\n")  # lines end in CR
    lines[-1] += b"\r"  # the last too, for a moment
    longest = max(map(len, lines))  # the CR included
    if any(map(bytes.endswith, lines, repeat(_SPACE_CR))) or b".\r" in lines:
        lines = [_line_end(line) if line[-2:-1] in _LAST else line for line in lines]
        longest += 2  # at most (" " became "=20")
    elif longest <= _MAX + 1:
        return data  # the common case: nothing to do line by line
    if longest > _MAX + 1:
        cut = _LINE_CUTS.findall
        lines = [b"=\r\n".join(cut(line)) if len(line) > _MAX + 1 else line for line in lines]
    lines[-1] = lines[-1][:-1]
    return b"\n".join(lines)


def _line_end(line: bytes) -> bytes:
    """Escape the space or tab that ends a line (ending in CR), or a line that is "."."""
    if line == b".\r":
        return b"=2E\r"
    if line[-2] == 32:  # " "
        return line[:-2] + b"=20\r"
    if line[-2] == 9:  # tab
        return line[:-2] + b"=09\r"
    return line


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


def _line(line: bytes, end: int) -> bytes:
    """Finish one escaped line: trailing white space, a lone dot, folding.

    ``line[:end]`` is the text, ``line[end:]`` its line end (CR, CRLF or nothing).
    """
    if end and line[end - 1] in b" \t":
        line = line[: end - 1] + (b"=20" if line[end - 1] == 32 else b"=09") + line[end:]
        end += 2
    elif end == 1 and line[0] == 46:  # "."
        return b"=2E" + line[1:]
    if end <= _MAX:
        return line
    if end > _GRID_FROM:
        return b"=\r\n".join(_pieces(line, end))
    pieces = _CUTS.findall(line, 0, end)
    pieces.append(line[sum(map(len, pieces)) :])
    return b"=\r\n".join(pieces)


def _pieces(line: bytes, end: int) -> list[bytes]:
    """Cut ``line`` (text up to ``end``, then its line end) into pieces for soft breaks.

    Every piece but the last has 73 to 75 characters and never ends inside an escape;
    the last has at most 76 characters of text. Cuts go every 75 characters from the
    start or from the last moved cut; an ``=`` at offset 73 or 74 of a piece moves that
    cut to before it. Many cuts at once on a grid (see the module docstring) while they
    are many and seldom moved; by a regex (``_CUTS``) otherwise.
    """
    # The common case first, without the loop's bookkeeping (~1.3k instructions): no escape
    # at a cut, so one grid (of at most one block) cuts the whole line. The loop below
    # starts with the same test.
    count = (end - 2) // _PIECE
    stop = count * _PIECE
    if (
        _FEW_CUTS < count <= _GRID_BLOCK
        and line[_PIECE - 2 : stop : _PIECE].find(_EQUALS) < 0
        and line[_PIECE - 1 : stop : _PIECE].find(_EQUALS) < 0
    ):
        pieces: list[bytes] = list(_grid_struct(count).unpack_from(line))
        pieces.append(line[stop:])
        return pieces
    pieces = []
    pos = 0
    moves = 0
    while end - pos > _MAX:
        count = (end - pos - 2) // _PIECE  # pieces to cut so that the rest is <= 76
        if count <= _FEW_CUTS or moves == _MAX_MOVES:
            found = _CUTS.findall(line, pos, end)
            pieces += found
            pos += sum(map(len, found))
            break
        stop = pos + count * _PIECE
        at73 = line[pos + _PIECE - 2 : stop : _PIECE].find(_EQUALS)
        at74 = line[pos + _PIECE - 1 : stop : _PIECE].find(_EQUALS)
        if at73 < 0 and at74 < 0:
            _grid(pieces, line, pos, count)
            pos = stop
            break
        if at74 < 0 or 0 <= at73 < at74:
            whole, cut = at73, _PIECE - 2
        else:
            whole, cut = at74, _PIECE - 1
        if whole:
            _grid(pieces, line, pos, whole)
            pos += whole * _PIECE
        pieces.append(line[pos : pos + cut])
        pos += cut
        moves += 1
    pieces.append(line[pos:])
    return pieces


def _grid(pieces: list[bytes], line: bytes, pos: int, count: int) -> None:
    """Append ``count`` pieces of 75 characters of ``line`` from ``pos`` to ``pieces``."""
    while count > _GRID_BLOCK:
        pieces += _grid_struct(_GRID_BLOCK).unpack_from(line, pos)
        pos += _GRID_BLOCK * _PIECE
        count -= _GRID_BLOCK
    pieces += _grid_struct(count).unpack_from(line, pos)


@lru_cache(maxsize=_GRID_BLOCK)
def _grid_struct(count: int) -> struct.Struct:
    return struct.Struct(f"{_PIECE}s" * count)
