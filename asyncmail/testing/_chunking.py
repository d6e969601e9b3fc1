"""BDAT (RFC 3030 CHUNKING) for the capture server: the command's syntax and one transaction.

A ``BDAT <size> [LAST]`` line is followed by exactly ``size`` octets of raw content: no
dot-stuffing, no line-end processing. The server reads them even when it refuses the chunk, so
the command stream stays in sync. The I/O lives in ``CaptureSMTP``; this module only keeps state.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiosmtpd.smtp import Envelope

    from ._faults import Fault

__all__ = ["READ_SIZE", "ChunkedTransaction", "parse_bdat"]

#: The most octets of a chunk read from the stream at once.
READ_SIZE = 64 * 1024
_SIZE = re.compile(r"[0-9]{1,18}")


def parse_bdat(arg: str | None) -> tuple[int, bool] | None:
    """``(size, last)`` from the argument of a BDAT command, or None if it is malformed."""
    words = (arg or "").split()
    if not 1 <= len(words) <= 2 or not _SIZE.fullmatch(words[0]):
        return None
    if len(words) == 2 and words[1].upper() != "LAST":
        return None
    return int(words[0]), len(words) == 2


class ChunkedTransaction:
    """The chunks of one mail transaction sent by BDAT, until its LAST chunk.

    It belongs to one aiosmtpd ``Envelope``: when RSET, EHLO or a finished message replace the
    envelope, the transaction is over.
    """

    __slots__ = ("envelope", "failed", "mid_data", "parts", "received")

    def __init__(self, envelope: Envelope, mid_data: Fault | None) -> None:
        self.envelope = envelope
        #: A chunk got a 4xx/5xx reply: later chunks get 503 until RSET (RFC 3030 section 3).
        self.failed = False
        #: An armed ``"mid_data"`` fault, counted over the content of all chunks.
        self.mid_data = mid_data
        self.parts: list[bytes] = []
        #: Content octets read so far (the accepted chunks and the one being read).
        self.received = 0

    def add(self, chunk: bytes) -> None:
        """Keep one accepted chunk."""
        self.parts.append(chunk)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The size of each accepted chunk, in order."""
        return tuple(len(part) for part in self.parts)

    @property
    def content(self) -> bytes:
        """The message: the accepted chunks joined."""
        return b"".join(self.parts)
