"""What a CaptureServer saw: accepted messages and per-connection sessions."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email.message import EmailMessage

from ..message._parsed import ParsedMail

__all__ = ["CapturedMessage", "Session"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CapturedMessage(ParsedMail):
    """One message the server accepted (or stored before a ``"dot"`` fault).

    Its content reads back like a ``memory://`` Mailer's ``SentMessage``: ``subject``,
    ``text``, ``html``, ``to``, ``cc``, ``bcc``, ``from_``/``sender``, ``reply_to``,
    ``attachments``, ``headers``, ``message_id`` and ``parsed`` (an ``EmailMessage``).

    Attributes:
        envelope_sender: The MAIL FROM address (``""`` for the null sender).
        recipients: The accepted RCPT TO addresses, in order.
        data: The content exactly as received: after DATA dot-unstuffed with CRLF line
            endings; after BDAT the chunks' octets joined, untouched.
        mail_options: MAIL FROM parameters (upper-cased by aiosmtpd), e.g. ``("SIZE=123",)``,
            then the DSN parameters as sent (a server with ``dsn=True``).
        rcpt_options: RCPT TO parameters of all recipients.
        recipient_options: The RCPT TO parameters of each recipient in ``recipients``, as
            sent, e.g. ``(("NOTIFY=FAILURE", "ORCPT=rfc822;a@example.com"),)``.
        tls: Whether the connection was encrypted when the message arrived.
        authenticated_as: The user name that authenticated the connection, if any.
        session_id: The ``Session.id`` of the connection it came on.
        chunks: The size of each BDAT chunk it came in, in order; ``()`` if it came by DATA.
    """

    envelope_sender: str
    recipients: tuple[str, ...]
    data: bytes
    mail_options: tuple[str, ...] = ()
    rcpt_options: tuple[str, ...] = ()
    recipient_options: tuple[tuple[str, ...], ...] = ()
    tls: bool = False
    authenticated_as: str | None = None
    session_id: int = 0
    chunks: tuple[int, ...] = ()
    _email: EmailMessage | None = field(default=None, init=False, repr=False, compare=False)


class SessionLog:
    """The writable side of a ``Session``: the server's protocol records into it as it goes."""

    __slots__ = ("authenticated_as", "chunks", "closed", "commands", "id", "lock", "peer", "tls")

    def __init__(self, *, id: int, peer: tuple[str, int], tls: bool) -> None:
        self.lock = threading.Lock()
        self.id = id
        self.peer = peer
        self.tls = tls
        self.chunks: list[bytes] = []
        self.commands: list[str] = []
        self.closed = False
        self.authenticated_as: str | None = None

    def add_chunk(self, chunk: bytes) -> None:
        with self.lock:
            self.chunks.append(chunk)

    def add_command(self, command: str) -> None:
        with self.lock:
            self.commands.append(command)


class Session:
    """One client connection as the server saw it; live, updated by the server as it goes.

    Attributes are read-only for tests; collections are returned as snapshots.
    """

    __slots__ = ("_log",)

    def __init__(self, log: SessionLog) -> None:
        self._log = log

    def __repr__(self) -> str:
        log = self._log
        state = "closed" if log.closed else "open"
        return (
            f"<Session id={log.id} peer={log.peer!r} tls={log.tls} {state} "
            f"commands={len(log.commands)}>"
        )

    @property
    def id(self) -> int:
        """Connection number on this server, from 0 in order of arrival."""
        return self._log.id

    @property
    def peer(self) -> tuple[str, int]:
        """The client's address and port."""
        return self._log.peer

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted (implicit TLS or after STARTTLS)."""
        return self._log.tls

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._log.closed

    @property
    def authenticated_as(self) -> str | None:
        """The user name of the last successful AUTH on this connection."""
        return self._log.authenticated_as

    @property
    def chunks(self) -> tuple[bytes, ...]:
        """Every read from the client, as received (after TLS); only with ``record_chunks``."""
        with self._log.lock:
            return tuple(self._log.chunks)

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands the server processed, e.g. ``"MAIL FROM:<a@b>"``; AUTH secrets omitted."""
        with self._log.lock:
            return tuple(self._log.commands)
