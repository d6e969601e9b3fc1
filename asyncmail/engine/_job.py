"""One message on its way: its envelope, its bytes for the wire, and the tally of its attempts.

``settle`` books one attempt and says which recipients deserve another try; ``result``
turns the tally into the message's single SendResult. Every recipient ends in exactly one
of ``accepted``, ``refused`` or ``unknown``.

A VERP message (``Envelope.verp``) goes in rounds of one transaction per open recipient,
each from its own envelope sender: ``batch`` is the first recipient not yet tried in the
round, ``more_now`` says the round goes on, and the recipients that may be tried again wait
in ``later`` for the next round, after the backoff. The retry policy counts rounds
(``tries``), so each recipient gets the attempts the policy allows, and the result's
``attempts`` is the rounds: how often the most-tried recipient was tried.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeAlias

from .._exceptions import (
    DeliveryError,
    MailError,
    PermanentError,
    Reply,
    SendResult,
    ShutdownError,
    Status,
)
from ..message._content import WireContent, wire_content
from ..message._envelope import Envelope, envelope_of
from ..message._message import Message
from ..message._raw import RawMessage
from ..smtp._judge import Attempt
from ..smtp._transaction import Gate

if TYPE_CHECKING:
    from ._relays import RelayState

__all__ = ["MESSAGE_TYPES", "BeforeSend", "Job", "Sign", "send_result"]

#: Called with each message right before its first transaction (a write-ahead hook).
BeforeSend: TypeAlias = Callable[[Any], object]
#: Called with a content's final bytes: the header lines to put in front (DKIM signatures).
Sign: TypeAlias = Callable[[bytes], bytes]
#: What a job can render. (A tuple built once: ``isinstance(x, A | B)`` builds a union each call.)
MESSAGE_TYPES = (Message, RawMessage, email.message.Message)


class Job:
    """The state of one message across its attempts."""

    __slots__ = (
        "accepted",
        "announced",
        "attempts",
        "content",
        "due",
        "envelope",
        "errors",
        "gate",
        "last",
        "later",
        "message",
        "more_now",
        "pending",
        "pinned",
        "refused",
        "relay",
        "reply",
        "round_tx",
        "rounds",
        "sign",
        "started",
        "unknown",
        "unknown_error",
    )

    def __init__(self, message: object, envelope: Envelope, sign: Sign | None = None) -> None:
        self.message = message  # (a Message, RawMessage or EmailMessage, or a subclass)
        self.envelope = envelope
        self.sign = sign  # DKIM: signs each content once, when it is made
        self.content: dict[tuple[bool, bool], WireContent] = {}
        self.pending = list(envelope.recipients)
        self.later: list[str] = []  # VERP: tried this round, open for the next one
        self.more_now = False  # VERP: the round goes on with the next recipient
        self.rounds = 0  # VERP: rounds begun
        self.round_tx = 0  # VERP: transactions begun in the current round
        self.accepted: list[str] = []
        self.unknown: list[str] = []
        self.unknown_error: DeliveryError | None = None
        self.refused: dict[str, DeliveryError] = {}  # final: permanent refusals
        self.errors: dict[str, DeliveryError] = {}  # the latest error of each open recipient
        self.reply: Reply | None = None
        self.last: Attempt | None = None
        self.attempts = 0
        self.started = 0.0
        self.due = 0.0  # when a retry may start (the engine's clock)
        self.announced = False  # before_send was called
        self.gate: Gate | None = None  # awaited before each content leaves (the outbox's)
        self.relay: RelayState | None = None  # the relay of its latest session
        self.pinned = False  # the relay accepted a recipient: the job never moves from it

    @classmethod
    def of(
        cls,
        message: Message | RawMessage | email.message.Message,
        *,
        sign: Sign | None = None,
    ) -> Job:
        """A job for ``message``, validated and rendered (and signed) before any I/O.

        Raises:
            MessageError: The message is invalid, or cannot be put on the wire as it is.
        """
        if type(message) is RawMessage and not message.dkim:
            sign = None  # (its bytes go as they are)
        job = cls(message, envelope_of(message), sign)
        job.content_for(smtputf8=job.envelope.needs_smtputf8, eightbitmime=True)
        return job

    def announce(self, before_send: BeforeSend | None) -> None:
        """Call the write-ahead hook once, before the first transaction that may deliver.

        Raises:
            PermanentError: The hook raised (the message is not sent).
        """
        if self.announced:
            return
        self.announced = True
        if before_send is not None:
            try:
                before_send(self.message)
            except Exception as exc:
                raise PermanentError(
                    f"before_send raised {type(exc).__name__}: {exc}; the message was not sent"
                ) from exc

    def begin(self, now: float) -> None:
        """Count a transaction that is about to start."""
        if not self.attempts:
            self.started = now
        self.attempts += 1
        if self.envelope.verp:
            self.round_tx += 1
            if self.round_tx == 1:
                self.rounds += 1

    def batch(self) -> list[str]:
        """The recipients of the next transaction: all open ones, or the next one for VERP."""
        return self.pending[:1] if self.envelope.verp else self.pending

    @property
    def more(self) -> bool:
        """A VERP round has recipients after the next transaction's."""
        return self.envelope.verp and len(self.pending) > 1

    @property
    def tries(self) -> int:
        """What the retry policy counts: transactions, or rounds for VERP (``attempts``)."""
        return self.rounds if self.envelope.verp else self.attempts

    def unbook(self) -> None:
        """Take back a transaction that did not happen (a stale connection, an unsent group)."""
        self.attempts -= 1
        if self.envelope.verp:
            self.round_tx -= 1
            if not self.round_tx:
                self.rounds -= 1

    def content_for(self, *, smtputf8: bool, eightbitmime: bool) -> WireContent:
        """The bytes for the wire in this mode, made once and kept for retries.

        Raises:
            MessageError: The message cannot go on any wire as it is.
            NotSupportedError: It is 8-bit and cannot reach a server without 8BITMIME.
        """
        key = (smtputf8, eightbitmime)
        made = self.content.get(key)
        if made is None:
            message = self.message
            assert isinstance(message, MESSAGE_TYPES)
            made = self.content[key] = wire_content(
                message,
                message_id=self.envelope.message_id,
                smtputf8=smtputf8,
                eightbitmime=eightbitmime,
                sign=self.sign,
            )
        return made

    def settle(self, attempt: Attempt, *, retry_unknown: bool) -> list[str]:
        """Book an attempt; return the recipients that another attempt may still reach."""
        self.last = attempt
        self.reply = attempt.reply or self.reply
        if attempt.accepted:
            self.pinned = True
        if attempt.status is Status.DELIVERED:
            self.accepted += attempt.accepted
        elif attempt.status is Status.UNKNOWN and not retry_unknown:
            self.unknown += attempt.accepted
            self.unknown_error = attempt.error
        retry: list[str] = []
        if attempt.status is Status.UNKNOWN and retry_unknown and attempt.error is not None:
            retry += attempt.accepted  # at-least-once: the same Message-ID again
            self.errors.update(dict.fromkeys(attempt.accepted, attempt.error))
        for rcpt, error in attempt.refused.items():
            if error.retryable:
                retry.append(rcpt)
                self.errors[rcpt] = error
            else:
                self.refused[rcpt] = error
        if self.envelope.verp:
            return self._settle_verp(attempt, retry)
        self.pending = retry
        return retry

    def _settle_verp(self, attempt: Attempt, retry: list[str]) -> list[str]:
        """Book one transaction of a VERP round: only its recipients are done with."""
        done = {*attempt.accepted, *attempt.refused}
        self.pending = [r for r in self.pending if r not in done]
        self.later += retry
        self.more_now = bool(self.pending)
        if self.more_now:
            return retry
        self.pending, self.later = self.later, []
        self.round_tx = 0
        return self.pending

    def fail(self, error: DeliveryError) -> None:
        """End the open recipients with ``error`` (outside any transaction)."""
        for rcpt in self.pending:
            self.errors[rcpt] = error
        self.last = Attempt(Status.FAILED, error=error)

    def result(self, *, shutdown: bool = False) -> SendResult[Any]:
        """The final SendResult; open recipients end with their latest error.

        Args:
            shutdown: The Mailer closed while the message waited for another attempt.
        """
        refused = dict(self.refused)
        closing = None
        if shutdown:
            closing = ShutdownError("the Mailer closed before this message was delivered")
        for rcpt in (*self.pending, *self.later):
            refused[rcpt] = closing or self.errors[rcpt]
        error: MailError | None = None
        if self.accepted:
            status = Status.DELIVERED
        elif self.unknown:
            status = Status.UNKNOWN
            error = self.unknown_error
        else:
            status = Status.FAILED
            last = self.last.error if self.last is not None else None
            error = closing or last or next(iter(refused.values()), None)
        return send_result(
            self.message,
            status,
            self.envelope.message_id,
            tuple(self.accepted),
            refused,
            tuple(self.unknown),
            self.reply,
            self.tries,
            error,
            None if self.relay is None else self.relay.display,
        )


def send_result(
    message: object,
    status: Status,
    message_id: str | None,
    accepted: tuple[str, ...],
    refused: Mapping[str, DeliveryError],
    unknown: tuple[str, ...],
    reply: Reply | None,
    attempts: int,
    error: MailError | None,
    relay: str | None,
) -> SendResult[Any]:
    """``SendResult(...)`` with every field given, at under half the cost: one is made per
    message sent, and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``. The slots' own setters do the same for less
    (tests/test_public_api.py holds it to the constructor)."""
    result: SendResult[Any] = object.__new__(SendResult)
    _set_message(result, message)
    _set_status(result, status)
    _set_message_id(result, message_id)
    _set_accepted(result, accepted)
    _set_refused(result, refused)
    _set_unknown(result, unknown)
    _set_reply(result, reply)
    _set_attempts(result, attempts)
    _set_error(result, error)
    _set_relay(result, relay)
    if error is not None:  # (it binds the error to its result: nothing to do without one)
        result.__post_init__()
    return result


# (in the order of the fields: one more field, and this fails at import)
(
    _set_message,
    _set_status,
    _set_message_id,
    _set_accepted,
    _set_refused,
    _set_unknown,
    _set_reply,
    _set_attempts,
    _set_error,
    _set_relay,
) = (SendResult.__dict__[f.name].__set__ for f in fields(SendResult))
