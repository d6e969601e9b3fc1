"""BDAT (RFC 3030 CHUNKING) for the capture server: the command's syntax and one transaction.

A ``BDAT <size> [LAST]`` line is followed by exactly ``size`` octets of raw content: no
dot-stuffing, no line-end processing. The server reads them even when it refuses the chunk, so
the command stream stays in sync. ``receive_bdat`` does one BDAT command of a ``CaptureSMTP``.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Protocol

from aiosmtpd.smtp import Envelope

if TYPE_CHECKING:
    from aiosmtpd.smtp import Session

    from ._faults import Fault, FaultBook, Phase

__all__ = ["READ_SIZE", "BdatHost", "ChunkedTransaction", "parse_bdat", "receive_bdat"]

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


class BdatHost(Protocol):
    """What BDAT needs of the connection's protocol (``CaptureSMTP``)."""

    chunked: ChunkedTransaction | None
    envelope: Envelope | None
    data_size_limit: int | None

    @property
    def session(self) -> Session | None: ...
    @property
    def faults(self) -> FaultBook: ...
    @property
    def reader(self) -> asyncio.StreamReader: ...
    async def push(self, status: str) -> None: ...
    def chunking_under_way(self) -> ChunkedTransaction | None: ...
    def needs_auth(self) -> bool: ...
    async def apply_fault(self, fault: Fault) -> None: ...
    async def cut_mid_data(self, fault: Fault) -> None: ...
    async def on_message(
        self, envelope: Envelope, *, phase: Phase = ..., chunks: tuple[int, ...] = ...
    ) -> str: ...


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


async def receive_bdat(smtp: BdatHost, arg: str | None) -> None:
    """Do one BDAT command of ``smtp``'s client: read its chunk, then answer it."""
    parsed = parse_bdat(arg)
    if parsed is None:  # no size to read: nothing else can be done
        await smtp.push("501 5.5.4 Syntax: BDAT <size> [LAST]")
        return
    size, last = parsed
    chunked = smtp.chunking_under_way()
    refusal = _refusal(smtp, chunked)
    if refusal is None and chunked is None:
        assert smtp.envelope is not None
        mid_data = smtp.faults.take("mid_data")
        chunked = smtp.chunked = ChunkedTransaction(smtp.envelope, mid_data)
    limit = smtp.data_size_limit
    if refusal is None and chunked is not None and limit and chunked.received + size > limit:
        refusal, chunked.failed = "552 5.3.4 Error: message size exceeds fixed maximum", True
    # a refused chunk is still read (and dropped), to stay in step with the client
    chunk = await _read_chunk(smtp, size, None if refusal is not None else chunked)
    if refusal is not None or chunked is None:
        await smtp.push(refusal or "503 5.5.1 Bad sequence of commands")
        return
    chunked.add(chunk)
    if not last:
        await _answer_chunk(smtp, chunked, chunk)
        return
    envelope = chunked.envelope
    envelope.content = envelope.original_content = chunked.content
    smtp.chunked = None
    try:
        reply = await smtp.on_message(envelope, phase="bdat_last", chunks=chunked.sizes)
    finally:
        smtp.envelope = Envelope()  # what aiosmtpd does after DATA
    await smtp.push(reply)


def _refusal(smtp: BdatHost, chunked: ChunkedTransaction | None) -> str | None:
    """Why a BDAT chunk cannot be taken now, as the reply; None if it can."""
    session, envelope = smtp.session, smtp.envelope
    if session is None or not session.host_name:
        return "503 5.5.1 Error: send EHLO first"
    if smtp.needs_auth():
        return "530 5.7.0 Authentication required"
    if chunked is not None and chunked.failed:
        return "503 5.5.1 Error: an earlier BDAT of this transaction failed; send RSET"
    if envelope is None or not envelope.rcpt_tos:
        return "503 5.5.1 Error: need RCPT command"
    return None


async def _read_chunk(smtp: BdatHost, size: int, chunked: ChunkedTransaction | None) -> bytes:
    """Read ``size`` raw octets (kept only for a ``chunked``, whose ``"mid_data"`` may cut in)."""
    parts: list[bytes] = []
    left = size
    while left:
        step = min(left, READ_SIZE)
        if chunked is None:
            await _read_exactly(smtp, step)  # dropped
            left -= step
            continue
        fault = chunked.mid_data
        if fault is not None:
            assert fault.after_bytes is not None
            short = fault.after_bytes - chunked.received
            if short <= step:
                await _read_exactly(smtp, short)
                chunked.mid_data = None
                await smtp.cut_mid_data(fault)
        parts.append(await _read_exactly(smtp, step))
        left -= step
        chunked.received += step
    return b"".join(parts)


async def _read_exactly(smtp: BdatHost, count: int) -> bytes:
    # at EOF aiosmtpd cancels the command task: no IncompleteReadError reaches here
    return await smtp.reader.readexactly(count)


async def _answer_chunk(smtp: BdatHost, chunked: ChunkedTransaction, chunk: bytes) -> None:
    """Reply to a chunk other than the last, or do the ``"bdat"`` fault instead."""
    fault = smtp.faults.take("bdat", chunk.decode("utf-8", "replace"))
    if fault is not None and fault.kind == "delay":
        await asyncio.sleep(fault.after or 0.0)
        fault = None
    if fault is None:
        await smtp.push(f"250 2.0.0 {len(chunk)} octets received")
    elif fault.kind == "reply" and fault.code != 421:
        chunked.failed = (fault.code or 0) >= 400
        for line in fault.reply_lines():
            await smtp.push(line)
    else:
        await smtp.apply_fault(fault)
