"""A local capture server for development: aiosmtpd on 127.0.0.1, every message into a Maildir.

Python 3.12 removed ``smtpd``; ``asyncmail serve`` is its friendly successor. It accepts
everything, says one line per message, and keeps each message in a Maildir that any mail
client (mutt -f DIR) or ``mailbox.Maildir`` can read.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import mailbox
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MaildirServer"]

HOST = "127.0.0.1"
_HOSTNAME = socket.gethostname().replace("/", "_").replace(":", "_")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


class _Handler:
    def __init__(self, server: MaildirServer) -> None:
        self._server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        # aiosmtpd keeps CRLF line ends; a Maildir file uses the local convention.
        data: bytes = envelope.original_content or envelope.content
        self._server._store(envelope.mail_from, tuple(envelope.rcpt_tos), data)
        return "250 2.0.0 OK: captured"


class MaildirServer:
    """An SMTP server in the running loop that stores what it receives in a Maildir.

    Args:
        maildir: The Maildir folder; created when missing.
        port: The port; 0 lets the OS pick one (see ``port`` after start).
        host: The interface to listen on.
        on_message: Called with (envelope sender, recipients, headers) for each message.
    """

    def __init__(
        self,
        maildir: str | Path,
        *,
        port: int = 0,
        host: str = HOST,
        on_message: Callable[[str, tuple[str, ...], Any], None] | None = None,
    ) -> None:
        self.maildir_path = Path(maildir)
        self.host = host
        self.port = port
        self.count = 0
        self._on_message = on_message
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> MaildirServer:
        try:
            from aiosmtpd.smtp import SMTP
        except ImportError:
            from . import INSTALL_HINT

            raise RuntimeError(f"the capture server needs aiosmtpd: {INSTALL_HINT}") from None
        mailbox.Maildir(self.maildir_path, create=True)  # creates new/, cur/ and tmp/
        handler = _Handler(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, enable_SMTPUTF8=True, hostname="asyncmail-serve"),
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        """The URL a Mailer uses to send here."""
        return f"smtp://{self.host}:{self.port}?tls=none"

    def _store(self, sender: str, recipients: tuple[str, ...], data: bytes) -> None:
        # The Maildir way (write in tmp/, rename into new/), without mailbox's fsync per
        # message: this is a development server, and the fsync halved the demo's speed.
        self.count += 1
        name = f"{time.time():.6f}.P{os.getpid()}Q{self.count}.{_HOSTNAME}"
        tmp = self.maildir_path / "tmp" / name
        tmp.write_bytes(data.replace(b"\r\n", b"\n"))
        os.rename(tmp, self.maildir_path / "new" / name)
        if self._on_message is not None:
            self._on_message(sender, recipients, _HEADERS.parsebytes(data))
