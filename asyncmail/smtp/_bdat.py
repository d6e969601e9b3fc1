"""Mail transactions by BDAT (RFC 3030 CHUNKING), several in flight on one connection.

With CHUNKING and PIPELINING (RFC 2920) a message needs no 354: its MAIL FROM, its RCPT TOs,
``BDAT <n> LAST`` and the n octets of content go out in one write, and the next message's
right behind it, before any reply has come. ``send`` writes one transaction, and ``collect``
reads its replies back, in the order the transactions went; the engine keeps a window of
them in flight (``asyncmail.engine._driver``). Content over ``CHUNK_SIZE`` goes in several
chunks, all written at once. The content is not dot-stuffed: BDAT counts octets.

A transaction written while another is still open gets RSET in front of it (RFC 2920 lets
RSET go anywhere in a group): after a refused BDAT the session's state is indeterminate until
RSET (RFC 3030), and the client cannot yet know whether the one before will be refused.

``Exchange.dot_sent`` means the last chunk left the process. A transaction's bytes are handed
to the kernel before the next transaction is written: when the connection breaks, the ones
that left end UNKNOWN, and the one being written did not leave whole (it is tried again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._exceptions import Phase
from ._connection import Connection
from ._judge import Attempt, Exchange, judge
from ._transaction import Prepared, broke
from ._wire import Wire, WireClosed

__all__ = ["CHUNK_SIZE", "Flight", "collect", "send"]

logger = logging.getLogger("asyncmail")

#: Content up to this size goes in one ``BDAT <n> LAST`` chunk; larger content in chunks of it.
CHUNK_SIZE = 1024 * 1024
#: A transaction with content up to this size goes in one write; larger content is paced
#: by ``Wire.send_content``.
ONE_WRITE = 64 * 1024


@dataclass(slots=True)
class Flight:
    """One BDAT transaction written to the connection, its replies still to read."""

    tx: Prepared
    x: Exchange
    chunks: int
    """BDAT commands sent: one reply each."""
    rset: bool
    """RSET went in front of it: its reply comes first."""


async def send(conn: Connection, tx: Prepared, *, rset: bool) -> Flight:
    """Write a BDAT transaction (``tx.bdat``) and wait until its bytes left the process.

    Never raises for a broken connection: that is recorded in the flight's Exchange.

    Args:
        conn: The open connection.
        tx: The transaction, its content not dot-stuffed.
        rset: Send RSET in front of it (a transaction before it may still be open).
    """
    wire = conn.wire
    assert wire is not None
    conn.transactions += 1
    x = Exchange(tuple(given for given, _ in tx.recipients), reused=conn.reused, bdat=True)
    content = tx.content
    size = len(content)
    flight = Flight(tx, x, max(1, -(-size // CHUNK_SIZE)), rset)
    head = [b"RSET\r\n", *tx.commands] if rset else tx.commands
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "connection %d >> %s%s + %d RCPT + BDAT %d octets in %d chunk(s)",
            conn.id,
            "RSET + " if rset else "",
            tx.commands[0].rstrip().decode("utf-8", "replace"),
            len(tx.recipients),
            size,
            flight.chunks,
        )
    try:
        if size <= ONE_WRITE:  # most messages
            wire.write(b"".join([*head, b"BDAT %d LAST\r\n" % size, content]))
            x.phase = Phase.DATA_TRANSFER
            if not wire.all_sent:
                await wire.flush(conn.timeouts.data_transfer)
        else:
            await _send_chunks(wire, conn.timeouts.data_transfer, head, content, x)
        x.dot_sent = True
    except (WireClosed, TimeoutError) as exc:
        broke(x, exc)
    except BaseException:  # cancelled: the session is in no known state
        conn.abort()
        raise
    return flight


async def _send_chunks(
    wire: Wire, limit: float | None, head: list[bytes], content: bytes, x: Exchange
) -> None:
    """Large content: the commands, then each chunk's BDAT line and octets in turn."""
    wire.write(b"".join(head))
    x.phase = Phase.DATA_TRANSFER
    view = memoryview(content)
    size = len(view)
    for start in range(0, size, CHUNK_SIZE):
        piece = view[start : start + CHUNK_SIZE]
        last = b" LAST" if start + CHUNK_SIZE >= size else b""
        wire.write(b"BDAT %d%s\r\n" % (len(piece), last))
        await wire.send_content(piece, limit)


async def collect(conn: Connection, flight: Flight) -> Attempt:
    """Read a flight's replies, in order, and judge them; a broken session is aborted."""
    x = flight.x
    if x.broke is None:
        wire = conn.wire
        assert wire is not None
        try:
            await _replies(wire, conn, flight)
        except (WireClosed, TimeoutError) as exc:
            broke(x, exc)
        except BaseException:  # cancelled: the session is in no known state
            conn.abort()
            raise
    attempt = judge(x)
    if not attempt.reusable:
        conn.abort()
    if attempt.reply is not None:
        logger.debug("connection %d << %s", conn.id, attempt.reply)
    return attempt


async def _replies(wire: Wire, conn: Connection, flight: Flight) -> None:
    """One reply per command of the flight; none are read after a 421 (the server closes)."""
    x, t = flight.x, conn.timeouts
    if flight.rset:
        x.rset = await wire.read_reply(t.command)
        if x.rset.code == 421:
            return
    x.phase = Phase.MAIL
    x.mail = wire.ready_reply() or await wire.read_reply(t.command)
    if x.mail.code == 421:
        return
    x.phase = Phase.RCPT
    for _ in flight.tx.recipients:
        reply = wire.ready_reply() or await wire.read_reply(t.command)
        x.rcpt.append(reply)
        if reply.code == 421:
            return
    x.phase = Phase.DATA_TRANSFER
    for _ in range(flight.chunks - 1):
        reply = await wire.read_reply(t.data_transfer)
        x.chunks.append(reply)
        if reply.code == 421:
            return
    x.phase = Phase.FINAL_REPLY
    x.final = await wire.read_reply(t.final_reply)
