"""What a send ended with: one of three statuses, and everything the server said."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._exceptions import DeliveryError, MailError, parse_enhanced_code

if TYPE_CHECKING:
    from email.message import EmailMessage

    from ._message import Message

__all__ = ["Reply", "SendResult", "Status"]


class Status(enum.StrEnum):
    """The outcome of one message. There are exactly three."""

    DELIVERED = "delivered"
    """The server accepted the message for at least one recipient."""
    FAILED = "failed"
    """Nothing was delivered; ``error`` says why."""
    UNKNOWN = "unknown"
    """The connection broke after the final dot and before the reply: maybe delivered."""


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: the code and the text (lines joined with ``\\n``)."""

    code: int
    text: str

    @property
    def enhanced_code(self) -> str | None:
        """The RFC 3463 enhanced status code, such as ``"2.0.0"``, if present."""
        return parse_enhanced_code(self.text)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class SendResult:
    """The single outcome of one message handed to ``send()`` or ``send_many()``.

    Attributes:
        message: The message as it was given, so callers can correlate results.
        status: DELIVERED, FAILED or UNKNOWN.
        message_id: The Message-ID header value, for finding the mail later.
        accepted: The recipients the server accepted, over all attempts.
        refused: Each refused recipient mapped to the error that refused it.
        reply: The server's reply to the final dot, when there was one.
        attempts: How many transactions were attempted for this message.
        error: Why nothing was delivered (FAILED, UNKNOWN); None when DELIVERED.
            A DeliveryError, or a MessageError for invalid input in send_many().
    """

    message: Message | EmailMessage | Any
    status: Status
    message_id: str | None = None
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, DeliveryError] = field(default_factory=dict)
    reply: Reply | None = None
    attempts: int = 0
    error: MailError | None = None

    @property
    def ok(self) -> bool:
        """True when the message was delivered to at least one recipient."""
        return self.status is Status.DELIVERED

    def __repr__(self) -> str:
        return (
            f"SendResult(status={self.status.name}, message_id={self.message_id!r}, "
            f"accepted={len(self.accepted)}, refused={len(self.refused)}, "
            f"attempts={self.attempts})"
        )
