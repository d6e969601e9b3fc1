"""What an attempt's result means for the stored message: a pure function, tested with tables.

A worker makes one attempt per lease; ``plan`` merges its SendResult into what earlier
attempts achieved and says what to store: a retry of the transiently refused recipients
only, at a backoff kept in the store (so it survives restarts), or the final state.

A relay that refuses the login or the TLS handshake says nothing about the message: the
setup is wrong (a rotated password, an expired certificate). ``send()`` reports that at
once; the outbox keeps such a message and tries again on its schedule, as Postfix does with
``smtp_sasl_auth_soft_bounce``, so fixing the setup delivers what waited.
"""

from __future__ import annotations

from typing import Any

from .._config import RetryPolicy
from .._exceptions import AuthenticationError, DeliveryError, MailError, SendResult, TLSError
from ..engine._retry import backoff_delay, may_retry
from ._model import Lease, Outcome, Refusal, State

__all__ = ["DEFAULT_RETRY", "plan", "refusal"]

#: The outbox's default schedule: it waits out a relay that is down for hours, not minutes.
DEFAULT_RETRY = RetryPolicy(
    attempts=30, max_time=3 * 86400.0, base_delay=2.0, max_delay=600.0, jitter=True
)


def refusal(error: MailError | None, *, retryable: bool | None = None) -> Refusal:
    """A recipient's stored refusal: the server's code and text, or the local reason."""
    if isinstance(error, DeliveryError):
        text = error.text or str(error)
        return Refusal(error.code, text, error.retryable if retryable is None else retryable)
    return Refusal(None, str(error) if error else "not delivered", bool(retryable))


def _setup_error(error: DeliveryError) -> bool:
    """The relay refused the login or TLS: not the message's fault (see the module doc)."""
    return isinstance(error, AuthenticationError | TLSError)


def plan(
    lease: Lease,
    result: SendResult[Any],
    *,
    policy: RetryPolicy,
    now: float,
    resend_unknown: bool,
) -> Outcome:
    """The record to store after ``result``, one attempt made under ``lease``."""
    accepted = (*lease.accepted, *result.accepted)
    refused = dict(lease.refused)
    unknown = list(lease.unknown)
    attempts = lease.attempts + result.attempts
    first = lease.first_attempt_at if lease.first_attempt_at is not None else now
    retry: list[str] = []
    errors: dict[str, MailError] = {}
    for rcpt, error in result.refused.items():
        if isinstance(error, DeliveryError) and (error.retryable or _setup_error(error)):
            retry.append(rcpt)
            errors[rcpt] = error
        else:
            refused[rcpt] = refusal(error, retryable=False)
    if resend_unknown and result.unknown:
        retry += result.unknown
        errors.update(dict.fromkeys(result.unknown, result.error or DeliveryError("unknown")))
    else:
        unknown += result.unknown
    error_text = str(result.error) if result.error is not None else None
    reply = str(result.reply) if result.reply is not None else None
    if retry:
        delay = backoff_delay(policy, max(attempts, 1))
        if may_retry(policy, attempts, now - first, delay):
            return Outcome(
                state=State.QUEUED,
                pending=tuple(retry),
                accepted=accepted,
                refused=refused,
                unknown=tuple(unknown),
                attempts=attempts,
                first_attempt_at=first,
                due=now + delay,
                error=error_text,
                reply=reply,
            )
        for rcpt in retry:  # out of attempts or time: their last error is final
            refused[rcpt] = refusal(errors[rcpt], retryable=True)
    if accepted:
        state = State.DELIVERED
    elif unknown:
        state = State.UNKNOWN
    else:
        state = State.FAILED
    return Outcome(
        state=state,
        pending=(),
        accepted=accepted,
        refused=refused,
        unknown=tuple(unknown),
        attempts=attempts,
        first_attempt_at=first,
        due=now,
        error=None if state is State.DELIVERED else error_text,
        reply=reply,
    )
