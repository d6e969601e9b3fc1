"""One mail transaction on an open session: MAIL, RCPT, DATA, the content, the final dot.

``prepare`` builds it (or refuses it before any I/O); ``run`` carries it out and records
what it saw in an ``Exchange``, which ``asyncmail.smtp._judge.judge`` turns into an
``Attempt``. This module only moves bytes.

With PIPELINING (RFC 2920) MAIL FROM, every RCPT TO and DATA go out in one write and
their replies are read back in order; without it, each command waits for its reply.
Both paths give the same outcomes. ``run`` never raises for an SMTP failure, only for
cancellation.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from .._config import Timeouts
from .._exceptions import DeliveryError, NotSupportedError, Phase, Rejected, Reply
from ..message._content import WireContent
from ..message._dsn import DSN, orcpt
from ._connection import Connection
from ._judge import Attempt, Exchange, failed, judge
from ._wire import CHUNK, Wire, WireClosed

__all__ = ["Gate", "Prepared", "broke", "prepare", "reset", "run"]

#: Awaited right before the content and its final dot leave; raising DeliveryError
#: withholds them (the session is then dropped: after DATA's 354 there is no other way out).
Gate = Callable[[], Awaitable[None]]

logger = logging.getLogger("asyncmail")

#: Content up to this size goes out in one write with the next chained group.
MERGE_LIMIT = 64 * 1024

#: The connections already logged as sending without the DSN a message asked for.
_told_no_dsn: weakref.WeakSet[Connection] = weakref.WeakSet()


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


# Not frozen, as ``Attempt``: one per transaction; never changed once made.
@dataclass(slots=True)
class Prepared:
    """A transaction ready to go: its commands, and its content already dot-stuffed."""

    commands: list[bytes]
    """MAIL FROM, then one RCPT TO per recipient."""
    recipients: list[tuple[str, str]]
    content: bytes
    """Dot-stuffed with the final dot for DATA; as it is for BDAT."""
    pipelined: bool
    bdat: bool = False
    """It goes by BDAT (``asyncmail.smtp._bdat``), not DATA."""
    group: bytes = b""
    """Pipelined DATA: everything up to DATA, in one write (RFC 2920)."""


def prepare(
    conn: Connection,
    sender: str,
    recipients: list[tuple[str, str]],
    content: WireContent,
    *,
    pipelining: bool,
    dsn: DSN | None = None,
    bdat: bool = False,
) -> Prepared | Attempt:
    """Build a transaction's commands, or the Attempt that ends it before any I/O.

    Args:
        conn: The open connection it will run on (its extensions decide the parameters).
        sender: The reverse-path, already in its SMTP form.
        recipients: ``(address as given, SMTP form)`` pairs, at least one.
        content: The content for this server (``asyncmail.message._content.wire_content``),
            which also says whether to declare SMTPUTF8 and BODY=8BITMIME (RFC 6531, 6152).
        pipelining: Group the commands (the server offers PIPELINING).
        dsn: The notifications to ask for (RFC 3461), when the server offers DSN; without
            it they are left out, or, when required, the transaction is refused.
        bdat: Send the content by BDAT (RFC 3030): not dot-stuffed.
    """
    if dsn is not None and not conn.supports("dsn"):
        if dsn.required:
            return failed([r for r, _ in recipients], _no_dsn())
        if conn not in _told_no_dsn:
            _told_no_dsn.add(conn)
            logger.debug("connection %d: the server does not offer DSN; sending without", conn.id)
        dsn = None
    params = " SMTPUTF8" if content.smtputf8 else ""
    if content.eight_bit:
        params += " BODY=8BITMIME"
    max_size = conn.max_size
    if max_size is not None:
        if content.size > max_size:
            # what the server would answer (RFC 1870), said before sending the content
            error = Rejected(
                f"5.3.4 message of {content.size} bytes exceeds the server's SIZE limit "
                f"{max_size} (refused by asyncmail before sending)",
                code=552,
                phase=Phase.MAIL,
            )
            return failed([r for r, _ in recipients], error)
        params += f" SIZE={content.size}"
    encoding = "utf-8" if content.smtputf8 else "ascii"
    if dsn is None:
        commands = [f"MAIL FROM:<{sender}>{params}\r\n".encode(encoding)]
        commands += [f"RCPT TO:<{smtp}>\r\n".encode(encoding) for _, smtp in recipients]
    else:
        commands = [f"MAIL FROM:<{sender}>{params}{dsn.mail_params}\r\n".encode(encoding)]
        commands += [
            f"RCPT TO:<{smtp}>{_rcpt_params(dsn, smtp)}\r\n".encode(encoding)
            for _, smtp in recipients
        ]
    if bdat:
        return Prepared(commands, recipients, content.raw, pipelining, bdat)
    group = b"".join([*commands, b"DATA\r\n"]) if pipelining else b""
    return Prepared(commands, recipients, content.data, pipelining, bdat, group)


def _rcpt_params(dsn: DSN, smtp: str) -> str:
    """`` NOTIFY=.. ORCPT=..`` for one recipient (no ORCPT when it would be too long)."""
    original = orcpt(smtp) if dsn.orcpt else None
    return dsn.notify_param if original is None else f"{dsn.notify_param} ORCPT={original}"


def _no_dsn() -> NotSupportedError:
    return NotSupportedError(
        "the server does not offer DSN (RFC 3461) and the message requires it "
        "(DSN(required=True)); send through a server that offers DSN, or set "
        "required=False to send without delivery status notifications",
        phase=Phase.MAIL,
    )


async def run(
    conn: Connection,
    tx: Prepared,
    *,
    group_sent: bool = False,
    follow: Callable[[], bytes | None] | None = None,
    gate: Gate | None = None,
) -> Attempt:
    """Run a prepared transaction to its end: the I/O, recorded in an Exchange and judged.

    Args:
        conn: The connection; it must be open.
        tx: The transaction.
        group_sent: The pipelined group was already written (behind the previous
            transaction's content), so only its replies are left to read.
        follow: Called once the content has left (it must not raise); it may return the
            next transaction's pipelined group, written right behind the final dot (in the
            same write for small content), so the next transaction costs no extra round trip.
        gate: Awaited once the server has said 354, right before the content and its final
            dot leave (a durable "the dot may be out" record goes here).
    """
    wire = conn.wire
    assert wire is not None
    conn.transactions += 1
    x = Exchange(tuple([given for given, _ in tx.recipients]), reused=conn.reused)
    debug = logger.isEnabledFor(logging.DEBUG)  # (asked once: this runs for every message)
    if debug:
        _log_commands(conn, tx)
    try:
        wanted = await _envelope(wire, conn.timeouts, tx, x, group_sent=group_sent)
        if wanted and (gate is None or await _through(gate, x)):
            # The content and final dot, the next group behind it, then the final reply.
            # (Inlined: a coroutine less to make, and to resume, per message.)
            t = conn.timeouts
            x.phase = Phase.DATA_TRANSFER
            content, follow = _merged(tx.content, x, follow)
            if len(content) > CHUNK:
                await wire.send_content(content, t.data_transfer)
            elif not wire.write_content(content):  # (most: no coroutine, nothing to wait)
                await wire.flush(t.data_transfer)
            x.dot_sent = True
            x.phase = Phase.FINAL_REPLY
            if follow is not None:
                following = follow()
                if following:
                    wire.write(following)
            x.final = await wire.read_reply(t.final_reply)
    except (WireClosed, TimeoutError) as exc:
        broke(x, exc)
    except BaseException:  # cancelled: the session is in no known state
        conn.abort()
        raise
    attempt = judge(x)
    if not attempt.reusable:
        conn.abort()
    elif attempt.end_data:
        attempt = await _end_unwanted_data(conn, attempt)
    if debug and attempt.reply is not None:
        logger.debug("connection %d << %s", conn.id, attempt.reply)
    return attempt


def _log_commands(conn: Connection, tx: Prepared) -> None:
    logger.debug(
        "connection %d >> %s + %d RCPT + DATA%s",
        conn.id,
        tx.commands[0].rstrip().decode("utf-8", "replace"),
        len(tx.recipients),
        " (pipelined)" if tx.pipelined else "",
    )


def _merged(
    content: bytes, x: Exchange, follow: Callable[[], bytes | None] | None
) -> tuple[bytes, Callable[[], bytes | None] | None]:
    """Small content with the next group behind it, for one write; then no follower is left
    to ask (it is asked once per transaction)."""
    if follow is None or len(content) > MERGE_LIMIT:
        return content, follow
    following = follow()
    if not following:
        return content, None
    # Should the kernel not take all of the one write and the connection then break,
    # whether the final dot left is unknown.
    x.dot_sent = True
    return content + following, None


async def _through(gate: Gate, x: Exchange) -> bool:
    """Whether the gate lets the content go; if not, ``x`` records why it was withheld."""
    try:
        await gate()
    except DeliveryError as exc:
        x.withheld = exc
        return False
    return True


def broke(x: Exchange, exc: WireClosed | TimeoutError) -> None:
    """Record in ``x`` that the connection broke, stalled or sent garbage."""
    x.broke = str(exc)
    x.timed_out = isinstance(exc, TimeoutError)
    x.garbled = isinstance(exc, WireClosed) and exc.garbled


async def _envelope(
    wire: Wire, t: Timeouts, tx: Prepared, x: Exchange, *, group_sent: bool
) -> bool:
    """MAIL, RCPT..., DATA: grouped with PIPELINING, else one round trip each.

    Returns:
        Whether the content should follow (``asyncmail.smtp._judge.content_wanted``).
    """
    pipelining = tx.pipelined
    if not group_sent:
        wire.write(tx.group if pipelining else tx.commands[0])
    x.mail = mail = wire.ready_reply() or await wire.read_reply(t.command)
    # a 421 means the server is closing: no further reply will come
    if mail.code == 421 or not (pipelining or _ok(mail)):
        return False
    x.phase = Phase.RCPT
    accepted = False  # (one RCPT accepted at least)
    for cmd in tx.commands[1:]:
        if not pipelining:
            wire.write(cmd)
        reply = wire.ready_reply() or await wire.read_reply(t.command)
        x.rcpt.append(reply)
        if reply.code == 421:
            return False
        accepted = accepted or 200 <= reply.code < 300
    if not (pipelining or accepted):
        return False
    x.phase = Phase.DATA
    if not pipelining:
        wire.write(b"DATA\r\n")
    x.data = data = wire.ready_reply() or await wire.read_reply(t.data_start)
    return accepted and data.code == 354 and 200 <= mail.code < 300


async def _end_unwanted_data(conn: Connection, attempt: Attempt) -> Attempt:
    """A pipelined DATA got 354 although the transaction failed: end it with no content."""
    wire = conn.wire
    assert wire is not None
    try:
        wire.write(b".\r\n")
        await wire.read_reply(conn.timeouts.final_reply)
    except (WireClosed, TimeoutError):
        conn.abort()
        return replace(attempt, reusable=False, needs_rset=False)
    return attempt


async def reset(conn: Connection) -> bool:
    """Send RSET to return the session to a clean state; False when that failed."""
    wire = conn.wire
    if wire is None or wire.is_closed:
        return False
    try:
        wire.write(b"RSET\r\n")
        reply = await wire.read_reply(conn.timeouts.command)
    except (WireClosed, TimeoutError):
        conn.abort()
        return False
    if not _ok(reply):
        conn.abort()
        return False
    return True
