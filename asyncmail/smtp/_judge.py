"""What a transaction's replies mean: a pure function from what happened on the wire to an Attempt.

The I/O (``asyncmail.smtp._transaction``) only records what it saw in an ``Exchange``: the
replies to MAIL, each RCPT, DATA and the final dot, whether the final dot left the process,
and whether the connection broke, stalled or went out of step. ``judge`` decides the rest,
and is tested with tables of reply sequences.

The rules, in order:

1. A reply that cannot answer its command (a 354 to MAIL, a 250 to DATA, a 1xx anywhere) means
   the replies are out of step: the connection is dropped, as if it broke there.
2. A broken, stalled or out-of-step connection: once the final dot has left, the recipients
   accepted at RCPT are UNKNOWN; before it, nothing was delivered and every open recipient
   may be tried again. RCPT refusals already received stay what they are.
   2b. The content was withheld (the caller's gate refused after DATA's 354): nothing was
   delivered, the session is dropped, and the open recipients fail with the gate's error.
3. 421 anywhere: the server is closing; the transaction failed, retryably, for every
   recipient its RCPT reply had not already refused (those refusals stand).
4. MAIL refused: every recipient fails with that reply.
5. No recipient accepted: each fails with its own RCPT reply.
6. DATA refused: the accepted recipients fail with that reply.
7. The final reply decides for the accepted recipients; RCPT refusals stand beside it.

A BDAT transaction (RFC 3030; ``Exchange.bdat``) has no DATA and no 354: its content left
with its commands, and a reply comes for each chunk. A leading RSET (the transaction went
out behind another one still open) must be answered 2xx, or 421, else the replies are out
of step (rule 1); so is a chunk's 2xx with an address status (``2.1.x``, what MAIL and
RCPT get): a reply nobody asked for has shifted the rest. The first refused chunk, the last
one included, decides for the accepted recipients in place of rules 6 and 7, and leaves the
session to be RSET (its state is indeterminate after a refused BDAT). When MAIL or every
RCPT was refused, the server answers the chunks with 503/554 and rules 4 and 5 decide.
``dot_sent`` means the last chunk left.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from .._exceptions import (
    DeliveryError,
    Phase,
    ProtocolError,
    Reply,
    Status,
    broken_error,
    error_for_reply,
)

__all__ = ["Attempt", "Exchange", "content_wanted", "judge", "valid_reply"]


@dataclass(slots=True)
class Exchange:
    """What one transaction saw on the wire, recorded by the I/O as it goes."""

    recipients: tuple[str, ...]
    """The recipients as given, in RCPT order."""
    reused: bool = False
    """The connection had carried a transaction before this one."""
    mail: Reply | None = None
    rcpt: list[Reply] = field(default_factory=list)
    data: Reply | None = None
    final: Reply | None = None
    dot_sent: bool = False
    """The final dot left this process (it may have reached the server)."""
    broke: str | None = None
    """Why the connection ended early (disconnect, stall, garbage); None if it did not."""
    timed_out: bool = False
    garbled: bool = False
    phase: Phase = Phase.MAIL
    """Where the transaction was when it broke."""
    withheld: DeliveryError | None = None
    """The gate before the content refused: no content left, and the session is dropped."""
    bdat: bool = False
    """A BDAT transaction: ``chunks`` and ``final`` answer its chunks; no DATA."""
    rset: Reply | None = None
    """The reply to the RSET sent in front of a BDAT transaction, if one was."""
    chunks: list[Reply] = field(default_factory=list)
    """The replies to the BDAT chunks before the last."""


# Not frozen: one is made per transaction, and a frozen dataclass's __init__ costs about
# three times a plain one's (object.__setattr__ per field). Never changed once made: a
# changed copy is made with ``dataclasses.replace``.
@dataclass(slots=True)
class Attempt:
    """What one transaction achieved, recipient by recipient.

    ``accepted`` are delivered (DELIVERED) or may have been (UNKNOWN). ``refused`` maps each
    recipient this attempt certainly did not reach to the reason, retryable or not; every
    recipient of the transaction is in exactly one of the two.
    """

    status: Status
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, DeliveryError] = field(default_factory=dict)
    error: DeliveryError | None = None
    """What speaks for the message when it was not delivered."""
    reply: Reply | None = None
    reusable: bool = True
    """The session is in a known state and may carry another transaction."""
    needs_rset: bool = False
    """It may, after RSET (a transaction was started and not completed)."""
    stale: bool = False
    """A reused session that failed on its first command with nothing done: the server
    dropped it while idle. Retry at once on a fresh connection, not counted as an attempt."""
    end_data: bool = False
    """A pipelined DATA got 354 although the transaction failed: end it with an empty body."""
    closing: bool = False
    """The server answered 421: it closes the session and reads nothing after that reply."""


def _ok(reply: Reply) -> bool:
    return 200 <= reply.code < 300


def valid_reply(reply: Reply, phase: Phase) -> bool:
    """Whether ``reply`` can answer the command of ``phase`` at all (else: out of step)."""
    if phase is Phase.DATA:
        return reply.code == 354 or 400 <= reply.code < 600
    return 200 <= reply.code < 300 or 400 <= reply.code < 600


def content_wanted(x: Exchange) -> bool:
    """True when the content should follow: MAIL accepted, one RCPT accepted, DATA 354."""
    return (
        x.mail is not None
        and _ok(x.mail)
        and any(map(_ok, x.rcpt))
        and x.data is not None
        and x.data.code == 354
    )


def failed(
    recipients: tuple[str, ...] | list[str],
    error: DeliveryError,
    *,
    reusable: bool = True,
    needs_rset: bool = False,
    stale: bool = False,
    end_data: bool = False,
) -> Attempt:
    """An attempt that failed as a whole, for every recipient, with ``error``."""
    return Attempt(
        Status.FAILED,
        refused=dict.fromkeys(recipients, error),
        error=error,
        reusable=reusable,
        needs_rset=needs_rset,
        stale=stale,
        end_data=end_data,
    )


def _steps(x: Exchange) -> list[tuple[Reply, Phase]]:
    """Every reply recorded, in wire order, with the phase it answers."""
    steps = [] if x.rset is None else [(x.rset, Phase.MAIL)]
    if x.mail is not None:
        steps.append((x.mail, Phase.MAIL))
    steps += [(reply, Phase.RCPT) for reply in x.rcpt]
    if x.data is not None:
        steps.append((x.data, Phase.DATA))
    steps += [(reply, Phase.DATA_TRANSFER) for reply in x.chunks]
    if x.final is not None:
        steps.append((x.final, Phase.FINAL_REPLY))
    return steps


def _rcpt_refusals(x: Exchange) -> dict[str, DeliveryError]:
    return {
        rcpt: error_for_reply(reply.code, reply.text, phase=Phase.RCPT, recipient=rcpt)
        for rcpt, reply in zip(x.recipients, x.rcpt, strict=False)
        if not _ok(reply)
    }


def _all_accepted(x: Exchange) -> Attempt | None:
    """The common case, decided at once: everything accepted, nothing broke."""
    final, mail, data = x.final, x.mail, x.data
    if final is None or x.broke is not None or not 200 <= final.code < 300:
        return None
    if mail is None or not 200 <= mail.code < 300:
        return None
    if x.bdat:
        rset = x.rset
        if rset is not None and not 200 <= rset.code < 300:
            return None
        if _about_an_address(final):
            return None
        for reply in x.chunks:
            if not 200 <= reply.code < 300 or _about_an_address(reply):
                return None
    elif data is None or data.code != 354:
        return None
    for reply in x.rcpt:
        if not 200 <= reply.code < 300:
            return None
    return Attempt(Status.DELIVERED, accepted=x.recipients, reply=final)


def judge(x: Exchange) -> Attempt:
    """Decide what the transaction recorded in ``x`` achieved (see the module's rules)."""
    delivered = _all_accepted(x)
    if delivered is not None:
        return delivered
    x = _in_step(x)
    if x.broke is not None:
        return _broken(x)
    if x.withheld is not None:  # rule 2b: the caller withheld the content; nothing left
        refused = _rcpt_refusals(x)
        refused |= {r: x.withheld for r in x.recipients if r not in refused}
        return Attempt(Status.FAILED, refused=refused, error=x.withheld, reusable=False)
    for reply, phase in _steps(x):
        if reply.code == 421:  # rule 3
            error = error_for_reply(421, reply.text, phase=phase)
            stale = x.reused and phase is Phase.MAIL
            refused = _rcpt_refusals(x)
            still_open = [r for r in x.recipients if r not in refused]
            refused |= dict.fromkeys(still_open, error)
            if not still_open:  # every RCPT was refused already: they speak, as in rule 5
                errors = list(refused.values())
                error = next((e for e in errors if e.retryable), errors[0])
            return Attempt(
                Status.FAILED,
                refused=refused,
                error=error,
                reusable=False,
                stale=stale,
                closing=True,
            )
    assert x.mail is not None
    end_data = x.data is not None and x.data.code == 354 and not content_wanted(x)
    if not _ok(x.mail):  # rule 4
        error = error_for_reply(x.mail.code, x.mail.text, phase=Phase.MAIL)
        return failed(x.recipients, error, needs_rset=True, end_data=end_data)
    refused = _rcpt_refusals(x)
    accepted = tuple(r for r in x.recipients if r not in refused)
    if not accepted:  # rule 5
        errors = list(refused.values())
        error = next((e for e in errors if e.retryable), errors[0])
        return Attempt(
            Status.FAILED, refused=refused, error=error, needs_rset=True, end_data=end_data
        )
    if x.bdat:
        return _chunks_judged(x, accepted, refused)
    assert x.data is not None
    if x.data.code != 354:  # rule 6
        error = error_for_reply(x.data.code, x.data.text, phase=Phase.DATA)
        refused |= dict.fromkeys(accepted, error)
        return Attempt(Status.FAILED, refused=refused, error=error, needs_rset=True)
    final = x.final
    assert final is not None
    if _ok(final):  # rule 7
        return Attempt(Status.DELIVERED, accepted=accepted, refused=refused, reply=final)
    error = error_for_reply(final.code, final.text, phase=Phase.FINAL_REPLY)
    refused |= dict.fromkeys(accepted, error)
    return Attempt(Status.FAILED, refused=refused, error=error, reply=final)


def _in_step(x: Exchange) -> Exchange:
    """Rule 1: ``x`` as if it broke at the first reply that cannot answer its command."""
    before_rcpt = 1 if x.rset is None else 2  # (the steps before the first RCPT's)
    for i, (reply, phase) in enumerate(_steps(x)):
        if (
            not valid_reply(reply, phase)
            or (i == 0 and _bad_rset(x))
            or (x.bdat and phase in _CHUNK_PHASES and _about_an_address(reply))
        ):
            why = f"reply {reply} to {phase.value} is out of step"
            rcpt = x.rcpt[: max(i - before_rcpt, 0)]  # (no later replies count)
            mail = x.mail if i >= before_rcpt else None
            return replace(x, broke=why, garbled=True, phase=phase, mail=mail, rcpt=rcpt)
    return x


_CHUNK_PHASES = (Phase.DATA_TRANSFER, Phase.FINAL_REPLY)


def _about_an_address(reply: Reply) -> bool:
    """A 2xx with an address status (RFC 3463 ``2.1.x``): what MAIL and RCPT get.

    Answering a BDAT chunk, it shows the replies are out of step: a server sent one nobody
    asked for, and a window of BDAT transactions has no 354 to show that otherwise.
    """
    return reply.text.startswith("2.1.")


def _bad_rset(x: Exchange) -> bool:
    """A leading RSET was answered with neither 2xx nor 421 (RSET cannot fail otherwise)."""
    rset = x.rset
    return rset is not None and not (_ok(rset) or rset.code == 421)


def _chunks_judged(
    x: Exchange, accepted: tuple[str, ...], refused: dict[str, DeliveryError]
) -> Attempt:
    """BDAT, some recipients accepted: the first refused chunk decides, else the last reply."""
    final = x.final
    assert final is not None
    for reply, phase in [*((r, Phase.DATA_TRANSFER) for r in x.chunks), (final, Phase.FINAL_REPLY)]:
        if not _ok(reply):
            error = error_for_reply(reply.code, reply.text, phase=phase)
            refused |= dict.fromkeys(accepted, error)
            return Attempt(
                Status.FAILED, refused=refused, error=error, reply=reply, needs_rset=True
            )
    return Attempt(Status.DELIVERED, accepted=accepted, refused=refused, reply=final)


def _broken(x: Exchange) -> Attempt:
    """Rule 2: the connection broke, stalled or went out of step in ``x.phase``."""
    why = x.broke or "connection lost"
    if x.timed_out:
        why = f"timed out waiting in {x.phase.value}"
    error = broken_error(x.phase, why, timed_out=x.timed_out, dot_sent=x.dot_sent, bdat=x.bdat)
    if x.garbled and not x.dot_sent:
        error = ProtocolError(why, phase=x.phase)
    refused = _rcpt_refusals(x)
    if x.dot_sent:
        mail = x.mail
        if mail is not None and not _ok(mail):  # (BDAT: the content went anyway)
            mail_error = error_for_reply(mail.code, mail.text, phase=Phase.MAIL)
            return failed(x.recipients, mail_error, reusable=False)
        accepted = tuple(r for r in x.recipients if r not in refused)
        if not accepted:  # (BDAT: every RCPT refused, the content went anyway)
            errors = list(refused.values())
            first = next((e for e in errors if e.retryable), errors[0])
            return Attempt(Status.FAILED, refused=refused, error=first, reusable=False)
        return Attempt(
            Status.UNKNOWN, accepted=accepted, refused=refused, error=error, reusable=False
        )
    refused |= {r: error for r in x.recipients if r not in refused}
    stale = x.reused and x.phase is Phase.MAIL and x.mail is None
    stale = stale and not (x.timed_out or x.garbled)
    return Attempt(Status.FAILED, refused=refused, error=error, reusable=False, stale=stale)
