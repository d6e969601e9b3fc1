"""One mail transaction on an open session: MAIL, RCPT, DATA, the content, the final dot.

``prepare`` builds it (or refuses it before any I/O); ``run`` carries it out.

With PIPELINING (RFC 2920) MAIL FROM, every RCPT TO and DATA go out in one write and
their replies are read back in order; without it, each command waits for its reply.
Both paths give the same outcomes. The result is an ``Attempt``; it never raises for an
SMTP failure, only for cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .._exceptions import (
    DeliveryError,
    Phase,
    Rejected,
    Reply,
    ServerDisconnected,
    SMTPTimeoutError,
    Status,
    UnknownOutcomeError,
    error_for_reply,
)
from ._connection import Connection
from ._wire import Wire, WireClosed

__all__ = ["Attempt", "Prepared", "dot_stuff", "prepare", "reset", "run"]

logger = logging.getLogger("asyncmail")

#: Content up to this size goes out in one write with the next chained group.
MERGE_LIMIT = 64 * 1024


@dataclass(slots=True)
class Attempt:
    """What one transaction achieved."""

    status: Status
    accepted: list[str] = field(default_factory=list)
    refused: dict[str, DeliveryError] = field(default_factory=dict)
    reply: Reply | None = None
    error: DeliveryError | None = None
    reusable: bool = True
    """The session is in a known state and may carry another transaction (after RSET
    when ``needs_rset``)."""
    needs_rset: bool = False
    stale: bool = False
    """A reused session failed on its first command with nothing done: the server had
    dropped it while idle. Retry once on a fresh connection, transparently."""


def dot_stuff(data: bytes, *, crlf_only: bool = False) -> bytes:
    """Return DATA content ready for the wire: CRLF lines, dots doubled, final dot added.

    Any bare CR or LF is first turned into CRLF, so no line ending the server might
    read differently (SMTP smuggling) reaches the wire.

    Args:
        data: The message.
        crlf_only: The caller vouches that ``data`` has no bare CR or LF: our own
            renderer's output, which is CRLF-only by construction (and property-tested).
            The check costs three passes over the data, about 10 µs for 5 KB.
    """
    if not crlf_only:
        crlf = data.count(b"\r\n")
        if crlf != data.count(b"\n") or crlf != data.count(b"\r"):
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\r\n.", b"\r\n..")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


def _first_error(refused: dict[str, DeliveryError]) -> DeliveryError:
    """The error that speaks for a message whose every recipient was refused."""
    errors = list(refused.values())
    return next((e for e in errors if e.retryable), errors[0])


async def _end_unwanted_data(wire: Wire, limit: float) -> None:
    """A pipelined DATA got 354 although the transaction failed: end it with no content."""
    wire.write(b".\r\n")
    await wire.read_reply(limit)


@dataclass(slots=True)
class Prepared:
    """A transaction ready to go: its commands, and its content already dot-stuffed."""

    commands: list[bytes]
    """MAIL FROM, then one RCPT TO per recipient."""
    recipients: list[tuple[str, str]]
    content: bytes
    pipelined: bool

    @property
    def group(self) -> bytes:
        """Everything up to DATA in one write (RFC 2920)."""
        return b"".join([*self.commands, b"DATA\r\n"])


def prepare(
    conn: Connection,
    sender: str,
    recipients: list[tuple[str, str]],
    content: bytes,
    *,
    smtputf8: bool,
    pipelining: bool,
) -> Prepared | Attempt:
    """Build a transaction's commands, or the Attempt that ends it before any I/O.

    Args:
        conn: The open connection it will run on (its extensions decide the parameters).
        sender: The reverse-path, already in its SMTP form.
        recipients: ``(address as given, SMTP form)`` pairs, at least one.
        content: Dot-stuffed content ending with the final dot (see ``dot_stuff``).
        smtputf8: Ask for SMTPUTF8 (the server offers it and the message needs it).
        pipelining: Group the commands (the server offers PIPELINING).
    """
    params = ""
    if smtputf8:
        params = " SMTPUTF8 BODY=8BITMIME" if conn.supports("8bitmime") else " SMTPUTF8"
    max_size = conn.max_size
    if max_size is not None:
        if len(content) > max_size:
            # what the server would answer (RFC 1870), said before sending the content
            error: DeliveryError = Rejected(
                f"5.3.4 message of {len(content)} bytes exceeds the server's SIZE limit "
                f"{max_size} (refused by asyncmail before sending)",
                code=552,
                phase=Phase.MAIL,
            )
            return Attempt(Status.FAILED, error=error)
        params += f" SIZE={len(content)}"
    encoding = "utf-8" if smtputf8 else "ascii"
    commands = [f"MAIL FROM:<{sender}>{params}\r\n".encode(encoding)]
    commands += [f"RCPT TO:<{smtp}>\r\n".encode(encoding) for _, smtp in recipients]
    return Prepared(commands, recipients, content, pipelining)


async def run(
    conn: Connection,
    tx: Prepared,
    *,
    group_sent: bool = False,
    follow: Callable[[], bytes | None] | None = None,
) -> Attempt:
    """Run a prepared transaction to its end.

    Args:
        conn: The connection; it must be open.
        tx: The transaction.
        group_sent: The pipelined group was already written (behind the previous
            transaction's content), so only its replies are left to read.
        follow: Called before the final reply is awaited; it may return the next
            transaction's pipelined group, which is written right behind the final dot
            (in the same write for small content), so the next transaction costs no
            extra round trip.
    """
    wire = conn.wire
    assert wire is not None
    t = conn.timeouts
    conn.transactions += 1
    pipelining = tx.pipelined
    debug = logger.isEnabledFor(logging.DEBUG)
    if debug:
        logger.debug(
            "connection %d >> %s + %d RCPT + DATA%s",
            conn.id,
            tx.commands[0].rstrip().decode("utf-8", "replace"),
            len(tx.recipients),
            " (pipelined)" if pipelining else "",
        )
    phase = Phase.MAIL
    data_reply: Reply | None = None
    try:
        rcpt_replies: list[Reply] = []
        if not group_sent:
            wire.write(tx.group if pipelining else tx.commands[0])
        mail_reply = await wire.read_reply(t.command)
        # a 421 means the server is closing: no further reply will come
        if mail_reply.code != 421 and (pipelining or _ok(mail_reply)):
            phase = Phase.RCPT
            for cmd in tx.commands[1:]:
                if not pipelining:
                    wire.write(cmd)
                reply = await wire.read_reply(t.command)
                rcpt_replies.append(reply)
                if reply.code == 421:
                    break
            if rcpt_replies[-1].code != 421 and (pipelining or any(map(_ok, rcpt_replies))):
                phase = Phase.DATA
                if not pipelining:
                    wire.write(b"DATA\r\n")
                data_reply = await wire.read_reply(t.data_start)

        for answer, where in (
            (mail_reply, Phase.MAIL),
            *((r, Phase.RCPT) for r in rcpt_replies),
            (data_reply, Phase.DATA),
        ):
            if answer is not None and answer.code == 421:
                error = error_for_reply(421, answer.text, phase=where)
                stale = conn.reused and where is Phase.MAIL
                return _failed(error, closing=True, stale=stale)
        if not _ok(mail_reply):
            if data_reply is not None and data_reply.code == 354:
                await _end_unwanted_data(wire, t.final_reply)
            error = error_for_reply(mail_reply.code, mail_reply.text, phase=Phase.MAIL)
            return _failed(error, closing=False)

        accepted: list[str] = []
        refused: dict[str, DeliveryError] = {}
        for (given, _), reply in zip(tx.recipients, rcpt_replies, strict=True):
            if _ok(reply):
                accepted.append(given)
            else:
                refused[given] = error_for_reply(
                    reply.code, reply.text, phase=Phase.RCPT, recipient=given
                )
        if not accepted:
            if data_reply is not None and data_reply.code == 354:
                await _end_unwanted_data(wire, t.final_reply)
            return _failed(_first_error(refused), refused=refused, closing=False)
        assert data_reply is not None
        if data_reply.code != 354:
            error = error_for_reply(data_reply.code, data_reply.text, phase=Phase.DATA)
            return _failed(error, refused=refused, closing=False)

        phase = Phase.DATA_TRANSFER
        content = tx.content
        following = None
        if follow is not None and len(content) <= MERGE_LIMIT:
            # one send() for this content and the next group. Should the kernel not take
            # it all at once and the connection then break, whether the final dot left is
            # unknown: the flush below reports the outcome as UNKNOWN, never as FAILED.
            following = follow()
            if following:
                content += following
        wire.write(content)
        if not wire.all_sent:
            if following:
                phase = Phase.FINAL_REPLY
            async with asyncio.timeout(t.data_transfer):
                await wire.flush()
        phase = Phase.FINAL_REPLY
        if follow is not None and following is None:
            following = follow()
            if following:
                wire.write(following)
        final = await wire.read_reply(t.final_reply)
    except (WireClosed, TimeoutError) as exc:
        conn.abort()
        return _broken(conn, phase, exc)

    if debug:
        logger.debug("connection %d << %s", conn.id, final)
    if _ok(final):
        return Attempt(Status.DELIVERED, accepted=accepted, refused=refused, reply=final)
    error = error_for_reply(final.code, final.text, phase=Phase.FINAL_REPLY)
    # the rejected content concerns every accepted recipient: they are retried together
    return Attempt(
        Status.FAILED,
        refused={**refused, **dict.fromkeys(accepted, error)},
        reply=final,
        error=error,
        reusable=final.code != 421,
    )


def _failed(
    error: DeliveryError,
    *,
    refused: dict[str, DeliveryError] | None = None,
    closing: bool,
    stale: bool = False,
) -> Attempt:
    return Attempt(
        Status.FAILED,
        refused=refused or {},
        error=error,
        reusable=not closing,
        needs_rset=not closing,
        stale=stale,
    )


def _broken(conn: Connection, phase: Phase, exc: Exception) -> Attempt:
    """The session broke or stalled in ``phase``; decide what the server may have."""
    timed_out = isinstance(exc, TimeoutError)
    how = f"timed out waiting in {phase.value}" if timed_out else str(exc)
    if phase is Phase.FINAL_REPLY:
        # the final dot left this process: the server may have queued the message
        error: DeliveryError = UnknownOutcomeError(
            f"{how} after the final dot: the message may have been delivered", phase=phase
        )
        return Attempt(Status.UNKNOWN, error=error, reusable=False)
    if timed_out:
        error = SMTPTimeoutError(how, phase=phase)
    else:
        error = ServerDisconnected(how, phase=phase)
    stale = conn.reused and phase is Phase.MAIL and not timed_out
    return Attempt(Status.FAILED, error=error, reusable=False, stale=stale)


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
    return _ok(reply)
