"""The "too fast" classifier (a table of real provider replies) and the adaptive pace."""

from __future__ import annotations

import pytest

from asyncmail.engine._adaptive import MIN_RATE, RAISE_AFTER, THROTTLE_HOLD, Pace
from asyncmail.engine._ratelimit import RateLimit
from asyncmail.smtp._throttle import says_too_fast

GMAIL_28 = (
    "4.7.28 [203.0.113.42] Our system has detected an unusual rate of\n"
    "4.7.28 unsolicited mail originating from your IP address. To protect our\n"
    "4.7.28 users from spam, mail sent from your IP address has been temporarily\n"
    "4.7.28 rate limited. Please visit\n"
    "4.7.28 https://support.google.com/mail/?p=UnsolicitedRateLimitError to\n"
    "4.7.28 review our Bulk Email Senders Guidelines. - gsmtp"
)

THROTTLED = [
    (421, GMAIL_28),
    (421, "4.7.28 Gmail has detected an unusual rate of unsolicited mail. - gsmtp"),
    (421, "4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail"),
    (421, "4.7.28 [192.0.2.1] (a text Gmail may change; the code alone says it)"),
    (451, "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714)"),
    (451, "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP"),
    (
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
    ),
    (451, "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?id=20022"),
    (421, "Connection frequency limited"),
    (421, "HL:IFC 192.0.2.1 sent too many mails in a short time"),
    (421, "HL:ICC too many concurrent connections from 192.0.2.1"),
    (451, "MI:SFQ sender over its quota"),
    (454, "Throttling failure: Maximum sending rate exceeded"),
    (421, "4.7.0 smtp.example.com Error: too many connections from 192.0.2.1"),
    (450, "4.7.1 You are sending too fast, slow down"),
]

NOT_THROTTLED = [
    (451, "4.3.0 Temporary local problem - please try later"),
    (421, "Service not available, closing transmission channel"),
    (421, "4.3.2 Service shutting down"),
    (451, "4.4.1 No answer from host"),
    (452, "4.5.3 Too many recipients"),
    (
        450,
        "4.2.1 The Gmail user you are trying to contact is receiving mail at a rate that "
        "prevents additional messages from being delivered. Please resend your message later",
    ),
    (421, "Max message per connection reached, closing transmission channel"),
    (451, "RP:CEL too many error commands"),
    (450, "4.2.0 Mailbox busy"),
    # a 5xx ends the message: it is no pacing advice, whatever it says
    (550, "Ip frequency limited. http://service.mail.qq.com/cgi-bin/help?id=20022"),
    (554, "5.7.1 rate limited"),
    (250, "2.0.0 OK rate limited? no"),
]


@pytest.mark.parametrize(("code", "text"), THROTTLED)
def test_a_provider_reply_asking_to_slow_down_is_a_throttle(code: int, text: str) -> None:
    assert says_too_fast(code, text)


@pytest.mark.parametrize(("code", "text"), NOT_THROTTLED)
def test_a_temporary_failure_without_a_rate_hint_is_no_throttle(code: int, text: str) -> None:
    assert not says_too_fast(code, text)


def test_no_reply_is_no_throttle() -> None:
    assert not says_too_fast(None, "rate limited")


def test_a_configured_rate_is_halved_once_per_burst_of_signals_then_raised_back() -> None:
    pace = Pace(RateLimit(40), clock=lambda: 0.0)
    assert pace.slow_down(100.0) == (40.0, 20.0)
    for _ in range(50):  # the same burst: counted, not halved again
        assert pace.slow_down(100.0 + THROTTLE_HOLD / 2) is None
    assert pace.rate == 20.0
    assert pace.throttled == 51
    assert pace.slow_down(100.0 + THROTTLE_HOLD) == (20.0, 10.0)
    t = 100.0 + THROTTLE_HOLD
    assert pace.recover(t + RAISE_AFTER - 1) is None  # not quiet long enough
    rates = []
    while pace.lowered:
        t += RAISE_AFTER
        changed = pace.recover(t)
        assert changed is not None
        rates.append(changed[1])
    # +25% each quiet period, then the configured limit itself
    assert rates == pytest.approx([12.5, 15.625, 19.53, 24.41, 30.52, 38.15, 40.0], abs=0.01)
    assert pace.limiter is not None and pace.limiter.limit == RateLimit(40)


def test_an_unlimited_relay_is_slowed_from_its_measured_rate_and_freed_again() -> None:
    pace = Pace(None, clock=lambda: 0.0)
    for i in range(100):  # 10 transactions a second
        pace.note(i / 10)
    changed = pace.slow_down(10.0)
    assert changed is not None
    old, new = changed
    assert old is None
    assert new == pytest.approx(5.0, rel=0.1)
    t = 10.0
    while pace.lowered:
        t += RAISE_AFTER
        pace.recover(t)
    assert pace.rate is None and pace.limiter is None  # no limit again


def test_the_rate_never_drops_below_the_floor() -> None:
    pace = Pace(RateLimit(0.15), clock=lambda: 0.0)
    for i in range(10):
        pace.slow_down(i * THROTTLE_HOLD)
    assert pace.rate == MIN_RATE
