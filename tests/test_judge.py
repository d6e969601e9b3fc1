"""``judge``: what a transaction's replies mean, as tables of recorded Exchanges.

Each case is an Exchange the I/O could record, pipelined (every reply read, even after a
refused MAIL) or plain (stopping where the client stops), and the whole Attempt expected.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail._exceptions import (
    DeliveryError,
    Phase,
    ProtocolError,
    Rejected,
    Reply,
    ServerDisconnected,
    SMTPTimeoutError,
    Status,
    TemporaryFailure,
    UnknownOutcomeError,
)
from asyncmail.smtp._judge import Attempt, Exchange, content_wanted, judge, valid_reply

A, B, C = "a@example.com", "b@example.com", "c@example.com"
MAIL, RCPT, DATA = Phase.MAIL, Phase.RCPT, Phase.DATA
TRANSFER, FINAL = Phase.DATA_TRANSFER, Phase.FINAL_REPLY
DELIVERED, FAILED, UNKNOWN = Status.DELIVERED, Status.FAILED, Status.UNKNOWN

Err = tuple[type[DeliveryError], int | None, Phase]


def r(code: int) -> Reply:
    return Reply(code, f"{code // 100}.0.0 reply {code}" if code >= 200 else "odd")


class _Extra(TypedDict, total=False):
    """The Exchange fields a case may set besides the replies."""

    reused: bool
    broke: str | None
    timed_out: bool
    garbled: bool
    phase: Phase


def x(
    *recipients: str,
    mail: int | None = None,
    rcpt: tuple[int, ...] = (),
    data: int | None = None,
    final: int | None = None,
    dot_sent: bool = False,
    **kwargs: Unpack[_Extra],
) -> Exchange:
    """An Exchange from reply codes (the texts do not matter to judge)."""
    return Exchange(
        recipients,
        mail=None if mail is None else r(mail),
        rcpt=[r(code) for code in rcpt],
        data=None if data is None else r(data),
        final=None if final is None else r(final),
        dot_sent=dot_sent,
        **kwargs,
    )


def sent(*recipients: str, rcpt: tuple[int, ...], final: int, **kwargs: Unpack[_Extra]) -> Exchange:
    """A transaction that got as far as the final reply."""
    return x(*recipients, mail=250, rcpt=rcpt, data=354, final=final, dot_sent=True, **kwargs)


@dataclass(frozen=True)
class Want:
    status: Status
    refused: dict[str, Err] = field(default_factory=dict)
    accepted: tuple[str, ...] = ()
    error: Err | None = None
    reply: int | None = None
    reusable: bool = True
    needs_rset: bool = False
    stale: bool = False
    end_data: bool = False


def err(error: DeliveryError) -> Err:
    assert error.phase is not None
    return (type(error), error.code, error.phase)


def seen(attempt: Attempt) -> Want:
    return Want(
        attempt.status,
        refused={rcpt: err(e) for rcpt, e in attempt.refused.items()},
        accepted=attempt.accepted,
        error=None if attempt.error is None else err(attempt.error),
        reply=None if attempt.reply is None else attempt.reply.code,
        reusable=attempt.reusable,
        needs_rset=attempt.needs_rset,
        stale=attempt.stale,
        end_data=attempt.end_data,
    )


def each(error: Err, *recipients: str) -> dict[str, Err]:
    return dict.fromkeys(recipients, error)


T450, T451 = (TemporaryFailure, 450, RCPT), (TemporaryFailure, 451, DATA)
R550 = (Rejected, 550, RCPT)

CASES: dict[str, tuple[Exchange, Want]] = {
    # --- rule 7: the final reply decides for the accepted recipients ---------------------
    "plain-one-recipient-delivered": (
        sent(A, rcpt=(250,), final=250),
        Want(DELIVERED, accepted=(A,), reply=250),
    ),
    "mixed-250-450-550-final-250-delivered-to-one": (
        sent(A, B, C, rcpt=(250, 450, 550), final=250),
        Want(DELIVERED, accepted=(A,), refused={B: T450, C: R550}, reply=250),
    ),
    "251-counts-as-accepted": (
        sent(A, B, rcpt=(251, 250), final=250),
        Want(DELIVERED, accepted=(A, B), reply=250),
    ),
    "mixed-250-450-550-final-451-fails-all-retryably-for-a": (
        sent(A, B, C, rcpt=(250, 450, 550), final=451),
        Want(
            FAILED,
            refused={A: (TemporaryFailure, 451, FINAL), B: T450, C: R550},
            error=(TemporaryFailure, 451, FINAL),
            reply=451,
        ),
    ),
    "mixed-250-450-550-final-554-rejects-a": (
        sent(A, B, C, rcpt=(250, 450, 550), final=554),
        Want(
            FAILED,
            refused={A: (Rejected, 554, FINAL), B: T450, C: R550},
            error=(Rejected, 554, FINAL),
            reply=554,
        ),
    ),
    # --- rule 6: DATA refused ----------------------------------------------------------
    "mixed-250-450-550-data-451": (
        x(A, B, C, mail=250, rcpt=(250, 450, 550), data=451),
        Want(
            FAILED,
            refused={A: T451, B: T450, C: R550},
            error=T451,
            needs_rset=True,
        ),
    ),
    "data-554": (
        x(A, B, mail=250, rcpt=(250, 250), data=554),
        Want(
            FAILED,
            refused=each((Rejected, 554, DATA), A, B),
            error=(Rejected, 554, DATA),
            needs_rset=True,
        ),
    ),
    # --- rule 5: no recipient accepted ------------------------------------------------
    "plain-all-refused-450-550-stops-before-data": (
        x(A, B, mail=250, rcpt=(550, 450)),
        Want(FAILED, refused={A: R550, B: T450}, error=T450, needs_rset=True),
    ),
    "plain-all-refused-550-error-is-the-first": (
        x(A, B, mail=250, rcpt=(550, 553)),
        Want(
            FAILED,
            refused={A: R550, B: (Rejected, 553, RCPT)},
            error=R550,
            needs_rset=True,
        ),
    ),
    "pipelined-all-refused-data-554": (
        x(A, B, mail=250, rcpt=(550, 450), data=554),
        Want(FAILED, refused={A: R550, B: T450}, error=T450, needs_rset=True),
    ),
    "pipelined-all-refused-data-354-ends-data": (
        x(A, B, mail=250, rcpt=(550, 450), data=354),
        Want(FAILED, refused={A: R550, B: T450}, error=T450, needs_rset=True, end_data=True),
    ),
    # --- rule 4: MAIL refused ---------------------------------------------------------
    "plain-mail-550-stops-there": (
        x(A, B, mail=550),
        Want(
            FAILED,
            refused=each((Rejected, 550, MAIL), A, B),
            error=(Rejected, 550, MAIL),
            needs_rset=True,
        ),
    ),
    "pipelined-mail-451-rcpt-503-data-503": (
        x(A, B, mail=451, rcpt=(503, 503), data=503),
        Want(
            FAILED,
            refused=each((TemporaryFailure, 451, MAIL), A, B),
            error=(TemporaryFailure, 451, MAIL),
            needs_rset=True,
        ),
    ),
    "pipelined-mail-550-rcpt-250-data-354-ends-data": (
        x(A, mail=550, rcpt=(250,), data=354),
        Want(
            FAILED,
            refused={A: (Rejected, 550, MAIL)},
            error=(Rejected, 550, MAIL),
            needs_rset=True,
            end_data=True,
        ),
    ),
    # --- rule 3: 421 anywhere ---------------------------------------------------------
    "421-to-mail-fresh": (
        x(A, B, mail=421),
        Want(
            FAILED,
            refused=each((TemporaryFailure, 421, MAIL), A, B),
            error=(TemporaryFailure, 421, MAIL),
            reusable=False,
        ),
    ),
    "421-to-mail-reused-is-stale": (
        x(A, B, mail=421, reused=True),
        Want(
            FAILED,
            refused=each((TemporaryFailure, 421, MAIL), A, B),
            error=(TemporaryFailure, 421, MAIL),
            reusable=False,
            stale=True,
        ),
    ),
    "421-to-second-rcpt-reused-is-not-stale-and-the-550-before-it-stands": (
        x(A, B, C, mail=250, rcpt=(550, 421), reused=True),
        Want(
            FAILED,
            refused={A: R550} | each((TemporaryFailure, 421, RCPT), B, C),
            error=(TemporaryFailure, 421, RCPT),
            reusable=False,
        ),
    ),
    "421-to-data-reused": (
        x(A, mail=250, rcpt=(250,), data=421, reused=True),
        Want(
            FAILED,
            refused={A: (TemporaryFailure, 421, DATA)},
            error=(TemporaryFailure, 421, DATA),
            reusable=False,
        ),
    ),
    "421-to-final-dot-fails-not-unknown": (
        sent(A, B, rcpt=(250, 250), final=421, reused=True),
        Want(
            FAILED,
            refused=each((TemporaryFailure, 421, FINAL), A, B),
            error=(TemporaryFailure, 421, FINAL),
            reusable=False,
        ),
    ),
    # --- rule 1: replies out of step --------------------------------------------------
    "plain-354-to-mail": (
        x(A, mail=354),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, MAIL)},
            error=(ProtocolError, None, MAIL),
            reusable=False,
        ),
    ),
    "pipelined-354-to-mail-later-replies-are-not-trusted": (
        x(A, B, mail=354, rcpt=(550, 250), data=250, reused=True),
        Want(
            FAILED,
            refused=each((ProtocolError, None, MAIL), A, B),
            error=(ProtocolError, None, MAIL),
            reusable=False,
        ),
    ),
    "354-to-rcpt-keeps-the-refusal-before-it": (
        x(A, B, C, mail=250, rcpt=(550, 354, 250), data=354),
        Want(
            FAILED,
            refused={A: R550, B: (ProtocolError, None, RCPT), C: (ProtocolError, None, RCPT)},
            error=(ProtocolError, None, RCPT),
            reusable=False,
        ),
    ),
    "250-to-data": (
        x(A, B, mail=250, rcpt=(250, 450), data=250),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, DATA), B: T450},
            error=(ProtocolError, None, DATA),
            reusable=False,
        ),
    ),
    "1xx-to-mail": (
        x(A, mail=150, rcpt=(250,), data=354),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, MAIL)},
            error=(ProtocolError, None, MAIL),
            reusable=False,
        ),
    ),
    "1xx-to-rcpt": (
        x(A, mail=250, rcpt=(150,), data=354),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, RCPT)},
            error=(ProtocolError, None, RCPT),
            reusable=False,
        ),
    ),
    "1xx-to-data": (
        x(A, mail=250, rcpt=(250,), data=150),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, DATA)},
            error=(ProtocolError, None, DATA),
            reusable=False,
        ),
    ),
    "1xx-to-final-dot-is-unknown": (
        sent(A, B, rcpt=(250, 550), final=150),
        Want(
            UNKNOWN,
            accepted=(A,),
            refused={B: R550},
            error=(UnknownOutcomeError, None, FINAL),
            reusable=False,
        ),
    ),
    "354-to-final-dot-is-unknown": (
        sent(A, rcpt=(250,), final=354),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
    # --- rule 2: broke, stalled or garbled -----------------------------------------------
    "broke-before-mail-reply-fresh": (
        x(A, B, broke="connection lost", phase=MAIL),
        Want(
            FAILED,
            refused=each((ServerDisconnected, None, MAIL), A, B),
            error=(ServerDisconnected, None, MAIL),
            reusable=False,
        ),
    ),
    "broke-before-mail-reply-reused-is-stale": (
        x(A, B, broke="connection lost", phase=MAIL, reused=True),
        Want(
            FAILED,
            refused=each((ServerDisconnected, None, MAIL), A, B),
            error=(ServerDisconnected, None, MAIL),
            reusable=False,
            stale=True,
        ),
    ),
    "timed-out-before-mail-reply-reused-is-not-stale": (
        x(A, broke="timeout", timed_out=True, phase=MAIL, reused=True),
        Want(
            FAILED,
            refused={A: (SMTPTimeoutError, None, MAIL)},
            error=(SMTPTimeoutError, None, MAIL),
            reusable=False,
        ),
    ),
    "garbled-before-mail-reply": (
        x(A, broke="garbage", garbled=True, phase=MAIL),
        Want(
            FAILED,
            refused={A: (ProtocolError, None, MAIL)},
            error=(ProtocolError, None, MAIL),
            reusable=False,
        ),
    ),
    "broke-in-rcpt-after-a-refusal-keeps-it": (
        x(A, B, mail=250, rcpt=(550,), broke="connection lost", phase=RCPT),
        Want(
            FAILED,
            refused={A: R550, B: (ServerDisconnected, None, RCPT)},
            error=(ServerDisconnected, None, RCPT),
            reusable=False,
        ),
    ),
    "broke-in-rcpt-after-mail-reply-reused-is-not-stale": (
        x(A, mail=250, broke="connection lost", phase=RCPT, reused=True),
        Want(
            FAILED,
            refused={A: (ServerDisconnected, None, RCPT)},
            error=(ServerDisconnected, None, RCPT),
            reusable=False,
        ),
    ),
    "broke-in-data-transfer-before-the-dot": (
        x(A, B, mail=250, rcpt=(250, 450), data=354, broke="reset", phase=TRANSFER),
        Want(
            FAILED,
            refused={A: (ServerDisconnected, None, TRANSFER), B: T450},
            error=(ServerDisconnected, None, TRANSFER),
            reusable=False,
        ),
    ),
    "timed-out-in-data-transfer-before-the-dot": (
        x(A, mail=250, rcpt=(250,), data=354, broke="t", timed_out=True, phase=TRANSFER),
        Want(
            FAILED,
            refused={A: (SMTPTimeoutError, None, TRANSFER)},
            error=(SMTPTimeoutError, None, TRANSFER),
            reusable=False,
        ),
    ),
    "broke-in-data-transfer-after-a-merged-dot-is-unknown": (
        x(A, mail=250, rcpt=(250,), data=354, dot_sent=True, broke="reset", phase=TRANSFER),
        Want(
            UNKNOWN,
            accepted=(A,),
            error=(UnknownOutcomeError, None, TRANSFER),
            reusable=False,
        ),
    ),
    "broke-after-the-dot-is-unknown-for-the-accepted": (
        x(
            A,
            B,
            C,
            mail=250,
            rcpt=(250, 550, 251),
            data=354,
            dot_sent=True,
            broke="reset",
            phase=FINAL,
        ),
        Want(
            UNKNOWN,
            accepted=(A, C),
            refused={B: R550},
            error=(UnknownOutcomeError, None, FINAL),
            reusable=False,
        ),
    ),
    "timed-out-after-the-dot-is-unknown": (
        x(
            A,
            mail=250,
            rcpt=(250,),
            data=354,
            dot_sent=True,
            broke="t",
            timed_out=True,
            phase=FINAL,
            reused=True,
        ),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
    "garbled-after-the-dot-is-unknown": (
        x(A, mail=250, rcpt=(250,), data=354, dot_sent=True, broke="g", garbled=True, phase=FINAL),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
}


def bdat(
    *recipients: str,
    mail: int | None = 250,
    rcpt: tuple[int, ...] = (),
    chunks: tuple[int, ...] = (),
    final: int | None = None,
    rset: int | None = None,
    dot_sent: bool = True,
    **kwargs: Unpack[_Extra],
) -> Exchange:
    """A BDAT Exchange (RFC 3030): its content left with its commands."""
    return Exchange(
        recipients,
        mail=None if mail is None else r(mail),
        rcpt=[r(code) for code in rcpt],
        final=None if final is None else r(final),
        dot_sent=dot_sent,
        bdat=True,
        rset=None if rset is None else r(rset),
        chunks=[r(code) for code in chunks],
        **kwargs,
    )


BDAT_CASES: dict[str, tuple[Exchange, Want]] = {
    "bdat-delivered": (
        bdat(A, B, rcpt=(250, 550), final=250, rset=250),
        Want(DELIVERED, accepted=(A,), refused={B: R550}, reply=250),
    ),
    "bdat-refused-last-chunk-fails-and-needs-rset": (
        bdat(A, rcpt=(250,), chunks=(250,), final=554),
        Want(
            FAILED,
            refused={A: (Rejected, 554, FINAL)},
            error=(Rejected, 554, FINAL),
            reply=554,
            needs_rset=True,
        ),
    ),
    "bdat-a-refused-middle-chunk-decides-not-the-503-after-it": (
        bdat(A, rcpt=(250,), chunks=(250, 452), final=503),
        Want(
            FAILED,
            refused={A: (TemporaryFailure, 452, TRANSFER)},
            error=(TemporaryFailure, 452, TRANSFER),
            reply=452,
            needs_rset=True,
        ),
    ),
    "bdat-every-rcpt-refused-the-554-to-bdat-does-not-speak": (
        bdat(A, rcpt=(550,), final=554),
        Want(FAILED, refused={A: R550}, error=R550, needs_rset=True),
    ),
    "bdat-mail-refused-the-503s-after-it-do-not-speak": (
        bdat(A, mail=553, rcpt=(503,), final=503),
        Want(
            FAILED, refused={A: (Rejected, 553, MAIL)}, error=(Rejected, 553, MAIL), needs_rset=True
        ),
    ),
    "bdat-broke-after-the-last-chunk-left-is-unknown": (
        bdat(A, rcpt=(250,), broke="lost", phase=FINAL),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
    "bdat-broke-before-any-reply-after-the-content-left-is-unknown": (
        bdat(A, B, mail=None, broke="lost", phase=MAIL),
        Want(UNKNOWN, accepted=(A, B), error=(UnknownOutcomeError, None, MAIL), reusable=False),
    ),
    "bdat-broke-while-the-content-was-leaving-is-retryable": (
        bdat(A, mail=None, broke="lost", phase=TRANSFER, dot_sent=False),
        Want(
            FAILED,
            refused={A: (ServerDisconnected, None, TRANSFER)},
            error=(ServerDisconnected, None, TRANSFER),
            reusable=False,
        ),
    ),
    "bdat-mail-refused-then-broke-is-a-failure-not-unknown": (
        bdat(A, mail=550, broke="lost", phase=RCPT),
        Want(
            FAILED,
            refused={A: (Rejected, 550, MAIL)},
            error=(Rejected, 550, MAIL),
            reusable=False,
        ),
    ),
    "bdat-every-rcpt-refused-then-broke-is-a-failure-not-unknown": (
        bdat(A, B, rcpt=(550, 450), broke="lost", phase=FINAL),
        Want(FAILED, refused={A: R550, B: T450}, error=T450, reusable=False),
    ),
    "bdat-421-to-the-last-chunk-keeps-the-rcpt-refusals": (
        bdat(A, B, rcpt=(550, 550), final=421),
        Want(
            FAILED,
            refused={A: R550, B: R550},
            error=R550,
            reusable=False,
        ),
    ),
    "bdat-421-to-the-rset-in-front-closes": (
        bdat(A, mail=None, rset=421),
        Want(
            FAILED,
            refused={A: (TemporaryFailure, 421, MAIL)},
            error=(TemporaryFailure, 421, MAIL),
            reusable=False,
        ),
    ),
    "bdat-a-refused-rset-is-out-of-step-and-unknown": (
        bdat(A, rset=550, rcpt=(250,), final=250),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, MAIL), reusable=False),
    ),
    "bdat-an-address-status-to-the-last-chunk-is-out-of-step": (
        Exchange(
            (A,),
            mail=r(250),
            rcpt=[r(250)],
            final=Reply(250, "2.1.5 Ok"),
            dot_sent=True,
            bdat=True,
        ),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
    "bdat-a-354-is-out-of-step": (
        bdat(A, rcpt=(250,), final=354),
        Want(UNKNOWN, accepted=(A,), error=(UnknownOutcomeError, None, FINAL), reusable=False),
    ),
}
CASES |= BDAT_CASES


@pytest.mark.parametrize(("exchange", "want"), list(CASES.values()), ids=list(CASES))
def test_judge(exchange: Exchange, want: Want) -> None:
    before = copy.deepcopy(exchange)
    assert seen(judge(exchange)) == want
    assert exchange == before  # judge is pure: the record is left as it was


def test_a_rcpt_refusal_names_its_recipient_and_keeps_the_server_text() -> None:
    attempt = judge(sent(A, B, rcpt=(250, 550), final=250))
    refusal = attempt.refused[B]
    assert refusal.recipient == B
    assert refusal.text == "5.0.0 reply 550"
    assert refusal.enhanced_code == "5.0.0"
    assert refusal.retryable is False


@pytest.mark.parametrize(
    ("exchange", "words"),
    [
        pytest.param(
            x(A, mail=354), "reply 354 3.0.0 reply 354 to mail is out of step", id="out-of-step"
        ),
        pytest.param(x(A, broke="", phase=MAIL), "connection lost", id="no-reason-given"),
        pytest.param(
            x(A, broke="stalled", timed_out=True, phase=MAIL),
            "timed out waiting in mail",
            id="timed-out",
        ),
        pytest.param(
            x(A, mail=250, rcpt=(250,), data=354, dot_sent=True, broke="reset", phase=FINAL),
            "reset after the final dot: the message may have been delivered",
            id="after-the-dot",
        ),
    ],
)
def test_a_broken_connection_says_why(exchange: Exchange, words: str) -> None:
    error = judge(exchange).error
    assert error is not None
    assert words in error.text


# --- valid_reply and content_wanted --------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "phase", "valid"),
    [
        (250, MAIL, True),
        (450, MAIL, True),
        (550, MAIL, True),
        (354, MAIL, False),
        (150, MAIL, False),
        (221, RCPT, True),
        (354, RCPT, False),
        (354, DATA, True),
        (250, DATA, False),
        (451, DATA, True),
        (554, DATA, True),
        (150, DATA, False),
        (334, DATA, False),
        (600, DATA, False),
        (250, FINAL, True),
        (354, FINAL, False),
        (600, FINAL, False),
        (199, FINAL, False),
    ],
    ids=lambda v: getattr(v, "value", v),
)
def test_valid_reply(code: int, phase: Phase, valid: bool) -> None:
    assert valid_reply(r(code), phase) is valid


@pytest.mark.parametrize(
    ("exchange", "wanted"),
    [
        pytest.param(x(A, mail=250, rcpt=(250,), data=354), True, id="all-ok"),
        pytest.param(x(A, B, mail=250, rcpt=(550, 251), data=354), True, id="one-accepted"),
        pytest.param(x(A, mail=250, rcpt=(550,), data=354), False, id="none-accepted"),
        pytest.param(x(A, mail=550, rcpt=(250,), data=354), False, id="mail-refused"),
        pytest.param(x(A, mail=250, rcpt=(250,), data=554), False, id="data-refused"),
        pytest.param(x(A, mail=250, rcpt=(250,)), False, id="no-data-reply"),
        pytest.param(x(A), False, id="no-mail-reply"),
    ],
)
def test_content_wanted(exchange: Exchange, wanted: bool) -> None:
    assert content_wanted(exchange) is wanted


# --- every recipient in exactly one of accepted and refused ---------------------------------

CODES = st.sampled_from([250, 251, 354, 421, 450, 451, 452, 503, 550, 553, 554, 150, 220])


class _Broke(Exception):
    pass


@st.composite
def exchanges(draw: st.DrawFn) -> Exchange:
    """Exchanges as the I/O records them, pipelined or plain, broken anywhere or not."""
    count = draw(st.integers(1, 4))
    recipients = tuple(f"r{i}@example.com" for i in range(count))
    pipelined = draw(st.booleans())
    ex = Exchange(recipients, reused=draw(st.booleans()))
    stop = draw(st.integers(0, count + 4))  # the reply at which the connection breaks
    read = 0

    def reply() -> Reply:
        nonlocal read
        if read == stop:
            raise _Broke
        read += 1
        return r(draw(CODES))

    try:
        ex.mail = reply()  # (as asyncmail.smtp._transaction._envelope reads them)
        if ex.mail.code != 421 and (pipelined or 200 <= ex.mail.code < 300):
            ex.phase = Phase.RCPT
            for _ in recipients:
                ex.rcpt.append(reply())
                if ex.rcpt[-1].code == 421:
                    break
            else:
                if pipelined or any(200 <= x.code < 300 for x in ex.rcpt):
                    ex.phase = Phase.DATA
                    ex.data = reply()
        if content_wanted(ex):
            ex.phase = Phase.DATA_TRANSFER
            if read == stop:
                ex.dot_sent = draw(st.booleans())  # a merged write may have left
                raise _Broke
            ex.dot_sent = True
            ex.phase = Phase.FINAL_REPLY
            ex.final = reply()
    except _Broke:
        ex.broke = draw(st.sampled_from(["connection lost", "", "garbage"]))
        ex.timed_out = draw(st.booleans())
        ex.garbled = not ex.timed_out and draw(st.booleans())
    return ex


@given(exchanges())
def test_every_recipient_is_either_accepted_or_refused(exchange: Exchange) -> None:
    attempt = judge(exchange)
    accepted = set(attempt.accepted)
    assert len(accepted) == len(attempt.accepted)
    assert accepted.isdisjoint(attempt.refused)
    assert accepted | set(attempt.refused) == set(exchange.recipients)
    if attempt.status is Status.FAILED:
        assert not accepted and attempt.error is not None
    elif attempt.status is Status.DELIVERED:
        assert accepted and attempt.reply is not None and attempt.error is None
    else:
        assert isinstance(attempt.error, UnknownOutcomeError) and exchange.dot_sent
    if exchange.broke is not None:
        assert not attempt.reusable
    assert not (attempt.end_data and not attempt.reusable)
