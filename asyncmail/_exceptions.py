"""The exception tree: one root, transient and permanent failures as distinct classes.

::

    MailError
    ├── MessageError (ValueError)        bad input, raised before any network I/O
    ├── ConfigError (ValueError)         bad Mailer/Server options or URL
    ├── InvalidToken (ValueError)        an unsubscribe token or SRS address is forged or expired
    ├── MailerClosedError (RuntimeError) the Mailer was used after aclose()
    ├── WrongEventLoopError (RuntimeError) the Mailer was used in another event loop
    ├── OutboxError                      the outbox's store is unreachable, corrupt or foreign
    └── DeliveryError                    a message was not delivered; carries its SendResult
        ├── TransientError               a retry may help
        │   ├── TemporaryFailure         4xx reply
        │   ├── ConnectError (ConnectionError)
        │   ├── ServerDisconnected (ConnectionError)   before the final dot
        │   ├── SMTPTimeoutError (TimeoutError)        before the final dot
        │   ├── ProtocolError            not an SMTP reply, or a reply out of step
        │   ├── PoolTimeout (TimeoutError)             no connection free in time
        │   └── ShutdownError (also MailerClosedError) the Mailer closed before delivery
        ├── PermanentError               a retry will not help
        │   ├── Rejected                 5xx reply
        │   ├── AuthenticationError      AUTH refused, or no usable mechanism
        │   ├── TLSError                 handshake/certificate failure, STARTTLS missing
        │   └── NotSupportedError        the server lacks a needed extension (SMTPUTF8)
        └── UnknownOutcomeError          the connection broke after the final dot: the
                                         message may have been delivered

Every ``DeliveryError`` carries what a user needs to act: ``code``, ``enhanced_code``,
``text`` (the server's words), ``phase``, ``recipient`` and ``retryable``. Errors are built
here (``error_for_reply``, ``broken_error``) and, for aiosmtplib's, at one boundary
(``asyncmail.smtp._handshake.map_error``). A ``DeliveryError`` is immutable: its ``result``
is bound once, when the SendResult that it explains is made, before it is raised.

The outcome values live here too (``Status``, ``Reply``, ``SendResult``): a SendResult
holds its error and a DeliveryError its SendResult, so they are one concept.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

#: The type of message a SendResult reports on (an asyncmail Message, a stdlib EmailMessage).
MessageT = TypeVar("MessageT", covariant=True)

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "ConnectError",
    "DeliveryError",
    "InvalidToken",
    "MailError",
    "MailerClosedError",
    "MessageError",
    "NotSupportedError",
    "OutboxError",
    "PermanentError",
    "Phase",
    "PoolTimeout",
    "ProtocolError",
    "Rejected",
    "Reply",
    "SMTPTimeoutError",
    "SendResult",
    "ServerDisconnected",
    "ShutdownError",
    "Status",
    "TLSError",
    "TemporaryFailure",
    "TransientError",
    "UnknownOutcomeError",
    "WrongEventLoopError",
    "broken_error",
    "error_for_reply",
    "parse_enhanced_code",
]


class Phase(enum.StrEnum):
    """The step of the SMTP exchange in which something happened."""

    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command and its 354
    DATA_TRANSFER = "data-transfer"  # sending the content, up to the final dot
    FINAL_REPLY = "final-reply"  # waiting for the reply to the final dot
    POOL = "pool"  # waiting for a free connection


class MailError(Exception):
    """Root of every exception asyncmail raises."""


class MessageError(MailError, ValueError):
    """A message, address or header is invalid; raised before any network I/O."""


class ConfigError(MailError, ValueError):
    """An option, URL or server configuration is invalid."""


class InvalidToken(MailError, ValueError):
    """A signed token (an unsubscribe token, an SRS address) was not made with our secret, was
    altered, or has expired."""


class MailerClosedError(MailError, RuntimeError):
    """The Mailer (or pool) was used after it was closed."""


class WrongEventLoopError(MailError, RuntimeError):
    """The Mailer was used in an event loop other than the one it was opened in.

    Its connections, locks and tasks belong to that loop (each ``asyncio.run()`` makes a
    new one). Create the Mailer inside the event loop that uses it; from synchronous code,
    use ``asyncmail.SyncMailer``, which keeps one Mailer in an event loop of its own.
    """


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


class OutboxError(MailError):
    """The outbox's store cannot be used: unreachable, corrupt, foreign or of another schema.

    The message names the store's URL with any password replaced by ``***``.
    """


def parse_enhanced_code(text: str) -> str | None:
    """Return the RFC 3463 enhanced status code at the start of a reply text, if any."""
    m = _ENHANCED.match(text)
    return m.group(0) if m else None


class DeliveryError(MailError):
    """A send did not deliver.

    Attributes:
        code: The SMTP reply code, or None when there was no reply (timeouts, disconnects).
        enhanced_code: The RFC 3463 code such as ``"5.1.1"``, if the server gave one.
        text: The server's reply text, or a description of what went wrong.
        phase: The SMTP step that failed.
        recipient: The recipient the failure concerns, if it concerns one.
        retryable: Whether sending again may succeed.
        result: The SendResult of the message, when the failure ended a send.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        text: str,
        *,
        code: int | None = None,
        phase: Phase | None = None,
        recipient: str | None = None,
        enhanced_code: str | None = None,
        result: SendResult[Any] | None = None,
    ) -> None:
        self.text = text
        self.code = code
        self.phase = phase
        self.recipient = recipient
        self.enhanced_code = (
            enhanced_code if enhanced_code is not None else parse_enhanced_code(text)
        )
        self.result = result
        super().__init__(text)
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        # (dunder names are the interpreter's: __cause__, __traceback__, __notes__)
        if getattr(self, "_frozen", False) and not name.startswith("__"):
            raise AttributeError(f"{type(self).__name__} is immutable")
        super().__setattr__(name, value)

    def __str__(self) -> str:
        parts = []
        if self.code is not None:
            parts.append(str(self.code))
        parts.append(self.text)
        context = []
        if self.phase is not None:
            context.append(f"phase={self.phase.value}")
        if self.recipient is not None:
            context.append(f"recipient={self.recipient}")
        context.append(f"retryable={self.retryable}")
        return f"{' '.join(parts)} ({', '.join(context)})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, text={self.text!r}, "
            f"phase={self.phase!r}, recipient={self.recipient!r})"
        )


class TransientError(DeliveryError):
    """A failure that a later attempt may not repeat."""

    retryable = True


class PermanentError(DeliveryError):
    """A failure that sending again will repeat."""


class TemporaryFailure(TransientError):
    """The server answered 4xx."""


class ConnectError(TransientError, ConnectionError):
    """The TCP connection could not be made."""


class ServerDisconnected(TransientError, ConnectionError):
    """The connection broke before the final dot was sent, so nothing was delivered."""


class SMTPTimeoutError(TransientError, TimeoutError):
    """The server did not answer in time, before the final dot was sent."""


class PoolTimeout(TransientError, TimeoutError):
    """No connection became free within the pool-acquire timeout."""


class ProtocolError(TransientError):
    """The server sent something that is not an SMTP reply, or a reply out of step.

    The connection is dropped; before the final dot nothing was delivered, so a retry on a
    new connection is safe.
    """


class ShutdownError(TransientError, MailerClosedError):
    """The Mailer closed before this message was delivered; nothing was stored for it.

    Send it again with a new Mailer (or leave it to an outbox). Also a MailerClosedError.
    """


class Rejected(PermanentError):
    """The server answered 5xx."""


class AuthenticationError(PermanentError):
    """Authentication failed or could not be attempted safely."""


class TLSError(PermanentError):
    """TLS could not be established as required (handshake, certificate, STARTTLS missing)."""


class NotSupportedError(PermanentError):
    """The server lacks an extension the message needs, such as SMTPUTF8."""


class UnknownOutcomeError(DeliveryError):
    """The connection broke after the final dot and before the reply: maybe delivered."""


def error_for_reply(
    code: int,
    text: str,
    *,
    phase: Phase,
    recipient: str | None = None,
) -> DeliveryError:
    """Classify an SMTP reply that refused something, by its code, not by who noticed it.

    A code that is no refusal at all (a 250 to STARTTLS, -1 for a garbled line) means the
    server is out of step or is not an SMTP server: a ProtocolError, which a retry on a
    new connection may get past.
    """
    cls: type[DeliveryError]
    if 400 <= code < 500:
        cls = TemporaryFailure
    elif not 500 <= code < 600:
        return ProtocolError(
            f"unexpected reply {code} {text}".strip(), phase=phase, recipient=recipient
        )
    elif phase is Phase.AUTH:
        cls = AuthenticationError
    else:
        cls = Rejected
    return cls(text, code=code, phase=phase, recipient=recipient)


def broken_error(
    phase: Phase, why: str, *, timed_out: bool, dot_sent: bool, bdat: bool = False
) -> DeliveryError:
    """The error of a connection that broke, stalled or went out of step in ``phase``.

    ``dot_sent``: the final dot, or with ``bdat`` the last BDAT chunk, had left.
    """
    if dot_sent:
        end = "the last BDAT chunk" if bdat else "the final dot"
        return UnknownOutcomeError(
            f"{why} after {end}: the message may have been delivered", phase=phase
        )
    if timed_out:
        return SMTPTimeoutError(why, phase=phase)
    return ServerDisconnected(why, phase=phase)


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
class SendResult(Generic[MessageT]):
    """The single outcome of one message handed to ``send()`` or ``send_many()``.

    Attributes:
        message: The message as it was given, so callers can correlate results.
        status: DELIVERED, FAILED or UNKNOWN.
        message_id: The Message-ID header value, for finding the mail later.
        accepted: The recipients the server accepted the message for, over all attempts.
        refused: Each recipient the message certainly did not reach, mapped to the error
            that says why (with ``retryable`` on it).
        unknown: The recipients whose copy may or may not have arrived: the connection
            broke after the final dot of a transaction that had accepted them.
        reply: The server's reply to the final dot, when there was one.
        attempts: How many transactions were attempted for this message. A VERP message
            has one transaction per recipient each time: there it counts those times.
        error: Why nothing was delivered (FAILED, UNKNOWN); None when DELIVERED.
            A DeliveryError, or a MessageError for invalid input in send_many().
        relay: The relay that took the message (its display form, no password); for a
            message that was not delivered, the last relay tried; None if none was.
    """

    message: MessageT
    status: Status
    message_id: str | None = None
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, DeliveryError] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    reply: Reply | None = None
    attempts: int = 0
    error: MailError | None = None
    relay: str | None = None

    def __post_init__(self) -> None:
        error = self.error
        if isinstance(error, DeliveryError) and error.result is None:
            # the one place an error is completed: bound to the result it explains,
            # once, before anyone raises it (it is immutable from then on)
            object.__setattr__(error, "result", self)

    @property
    def ok(self) -> bool:
        """True when the message was delivered to at least one recipient."""
        return self.status is Status.DELIVERED

    def __repr__(self) -> str:
        return (
            f"SendResult(status={self.status.name}, message_id={self.message_id!r}, "
            f"accepted={len(self.accepted)}, refused={len(self.refused)}, "
            f"unknown={len(self.unknown)}, "
            f"attempts={self.attempts})"
        )
