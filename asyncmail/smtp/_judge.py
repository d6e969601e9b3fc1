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
3. 421 anywhere: the server is closing; the transaction failed for every recipient, retryably.
4. MAIL refused: every recipient fails with that reply.
5. No recipient accepted: each fails with its own RCPT reply.
6. DATA refused: the accepted recipients fail with that reply.
7. The final reply decides for the accepted recipients; RCPT refusals stand beside it.
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


@dataclass(frozen=True, slots=True)
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
    steps = [] if x.mail is None else [(x.mail, Phase.MAIL)]
    steps += [(reply, Phase.RCPT) for reply in x.rcpt]
    if x.data is not None:
        steps.append((x.data, Phase.DATA))
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
    if data is None or data.code != 354 or mail is None or not 200 <= mail.code < 300:
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
    for i, (reply, phase) in enumerate(_steps(x)):
        if not valid_reply(reply, phase):  # rule 1: as if it broke there (no later replies)
            why = f"reply {reply} to {phase.value} is out of step"
            x = replace(x, broke=why, garbled=True, phase=phase, rcpt=x.rcpt[: max(i - 1, 0)])
            break
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
            return failed(x.recipients, error, reusable=False, stale=stale)
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


def _broken(x: Exchange) -> Attempt:
    """Rule 2: the connection broke, stalled or went out of step in ``x.phase``."""
    why = x.broke or "connection lost"
    if x.timed_out:
        why = f"timed out waiting in {x.phase.value}"
    error = broken_error(x.phase, why, timed_out=x.timed_out, dot_sent=x.dot_sent)
    if x.garbled and not x.dot_sent:
        error = ProtocolError(why, phase=x.phase)
    refused = _rcpt_refusals(x)
    if x.dot_sent:
        accepted = tuple(r for r in x.recipients if r not in refused)
        return Attempt(
            Status.UNKNOWN, accepted=accepted, refused=refused, error=error, reusable=False
        )
    refused |= {r: error for r in x.recipients if r not in refused}
    stale = x.reused and x.phase is Phase.MAIL and x.mail is None and not x.timed_out
    return Attempt(Status.FAILED, refused=refused, error=error, reusable=False, stale=stale)
