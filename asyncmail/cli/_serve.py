"""``asyncmail serve``: the capture server of ``asyncmail.testing``, storing into a Maildir.

Python 3.12 removed ``smtpd``; ``asyncmail serve`` is its friendly successor. It is a
``CaptureServer`` that keeps nothing in memory and hands every message to a ``MaildirSink``,
which any mail client (mutt -f DIR) or ``mailbox.Maildir`` can read.
"""

from __future__ import annotations

import email.parser
import email.policy
import mailbox
import os
import socket
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from ..testing import CapturedMessage, CaptureServer

__all__ = ["MaildirSink", "cannot_listen", "maildir_server"]

HOST = "127.0.0.1"
_HOSTNAME = socket.gethostname().replace("/", "_").replace(":", "_")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)

#: Called after a message was stored: the message and its parsed headers.
OnStored = Callable[[CapturedMessage, EmailMessage], None]


class MaildirSink:
    """Writes each message it is given into a Maildir (created when missing) and counts them.

    Args:
        maildir: The Maildir folder.
        on_stored: Called after each message was written, with the message and its headers.
    """

    def __init__(self, maildir: str | Path, *, on_stored: OnStored | None = None) -> None:
        self.path = Path(maildir)
        self.count = 0
        self._on_stored = on_stored
        mailbox.Maildir(self.path, create=True)  # creates new/, cur/ and tmp/

    def __call__(self, message: CapturedMessage) -> None:
        # The Maildir way (write in tmp/, rename into new/), without mailbox's fsync per
        # message: this is a development server, and the fsync halved the demo's speed.
        # The capture server keeps CRLF line ends; a Maildir file uses the local convention.
        self.count += 1
        name = f"{time.time():.6f}.P{os.getpid()}Q{self.count}.{_HOSTNAME}"
        tmp = self.path / "tmp" / name
        tmp.write_bytes(message.data.replace(b"\r\n", b"\n"))
        os.rename(tmp, self.path / "new" / name)
        if self._on_stored is not None:
            self._on_stored(message, _HEADERS.parsebytes(message.data))


def maildir_server(
    maildir: str | Path,
    *,
    port: int = 0,
    host: str = HOST,
    on_stored: OnStored | None = None,
) -> CaptureServer:
    """A capture server (not started) that stores every message in ``maildir``, none in memory.

    Start it with ``async with``; its ``statistics().messages`` counts what it received.
    """
    sink = MaildirSink(maildir, on_stored=on_stored)
    return CaptureServer(host=host, port=port, record=False, on_message=sink)


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line saying why the server could not start (the port is taken...), no errno."""
    if exc.errno and not isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno)
    else:  # a host name that does not resolve: the resolver's own words
        reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {reason}"
