"""One message on its way: its envelope, its rendered bytes, and the tally of its attempts.

``settle`` books one attempt and says which recipients deserve another try; ``result``
turns the tally into the message's single SendResult.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._exceptions import DeliveryError, MailError, Reply, SendResult, Status
from ..message._envelope import Envelope, message_bytes
from ..message._message import Message
from ..smtp._transaction import Attempt, dot_stuff

__all__ = ["Job"]


class Job:
    """The state of one message across its attempts."""

    __slots__ = (
        "accepted",
        "announced",
        "attempts",
        "content",
        "envelope",
        "message",
        "pending",
        "refused",
        "reply",
        "started",
    )

    def __init__(self, message: Any, envelope: Envelope) -> None:
        self.message = message
        self.envelope = envelope
        self.content: dict[bool, bytes] = {}
        self.pending = list(envelope.recipients)
        self.accepted: list[str] = []
        self.refused: dict[str, DeliveryError] = {}
        self.reply: Reply | None = None
        self.attempts = 0
        self.started = 0.0
        self.announced = False  # before_send was called

    def announce(self, before_send: Callable[[Any], object] | None) -> None:
        """Call the write-ahead hook once, before the first transaction that may deliver."""
        if not self.announced:
            self.announced = True
            if before_send is not None:
                before_send(self.message)

    def begin(self) -> None:
        """Count a transaction that is about to start."""
        if not self.attempts:
            self.started = time.monotonic()
        self.attempts += 1

    def content_for(self, smtputf8: bool) -> bytes:
        """The dot-stuffed DATA content, rendered once per mode and kept for retries."""
        data = self.content.get(smtputf8)
        if data is None:
            raw = message_bytes(
                self.message, smtputf8=smtputf8, message_id=self.envelope.message_id
            )
            # our renderer is CRLF-only by construction; a subclass might not be
            data = dot_stuff(raw, crlf_only=type(self.message) is Message)
            self.content[smtputf8] = data
        return data

    def settle(self, attempt: Attempt, *, retry_unknown: bool) -> list[str]:
        """Book an attempt; return the recipients that another attempt may still reach."""
        self.reply = attempt.reply or self.reply
        self.accepted += attempt.accepted
        if attempt.status is Status.UNKNOWN:
            return list(self.pending) if retry_unknown else []
        if attempt.refused:
            self.refused.update({r: e for r, e in attempt.refused.items() if not e.retryable})
            return [r for r, e in attempt.refused.items() if e.retryable]
        if attempt.status is Status.FAILED:
            assert attempt.error is not None
            if attempt.error.retryable:
                return list(self.pending)
            self.refused.update(dict.fromkeys(self.pending, attempt.error))
        return []

    def result(self, last: Attempt, unsettled: list[str]) -> SendResult:
        """The final SendResult; ``unsettled`` recipients end with the last attempt's error."""
        if last.status is Status.UNKNOWN and not unsettled and self.accepted:
            unsettled = self.pending  # delivered to some: the rest can only be told here
        for rcpt in unsettled:
            error = last.refused.get(rcpt) or last.error
            if error is not None and rcpt not in self.accepted:
                self.refused[rcpt] = error
        error_out: MailError | None = None
        if self.accepted:
            status = Status.DELIVERED
        else:
            status = Status.UNKNOWN if last.status is Status.UNKNOWN else Status.FAILED
            error_out = last.error or next(iter(self.refused.values()), None)
        return SendResult(
            message=self.message,
            status=status,
            message_id=self.envelope.message_id,
            accepted=tuple(self.accepted),
            refused={r: e for r, e in self.refused.items() if r not in self.accepted},
            reply=self.reply,
            attempts=self.attempts,
            error=error_out,
        )
