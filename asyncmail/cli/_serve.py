"""``asyncmail serve``: the capture server of ``asyncmail.testing``, storing into a Maildir.

Python 3.12 removed ``smtpd``; ``asyncmail serve`` is its friendly successor. It is a
``CaptureServer`` that keeps nothing in memory and hands every message to a ``MaildirSink``,
which any mail client (mutt -f DIR) or ``mailbox.Maildir`` can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import mailbox
import os
import socket
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import click

from ..preview import MessageStore, PreviewServer
from ..preview._server import is_loopback
from ..testing import CapturedMessage, CaptureServer

__all__ = [
    "MaildirSink",
    "cannot_listen",
    "keep",
    "maildir_server",
    "parse_web_address",
    "run_serve",
]

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
    auth: tuple[str, str] | None = None,
    tls: bool = False,
) -> CaptureServer:
    """A capture server (not started) that stores every message in ``maildir``, none in memory.

    Start it with ``async with``; its ``statistics().messages`` counts what it received.

    Args:
        maildir: The Maildir folder (created when missing).
        port: The SMTP port; 0 lets the OS pick one.
        host: The interface to listen on.
        on_stored: Called after each message was written, with the message and its headers.
        auth: A user name and password that clients must AUTH with before MAIL. Without
            ``tls`` AUTH is accepted over plaintext (the client must allow that too).
        tls: Offer STARTTLS with a throwaway certificate (see ``CaptureServer.ca_file``).
    """
    sink = MaildirSink(maildir, on_stored=on_stored)
    return CaptureServer(
        host=host,
        port=port,
        record=False,
        on_message=sink,
        tls="starttls" if tls else "none",
        auth=dict([auth]) if auth is not None else None,
        require_auth=auth is not None,
        auth_require_tls=tls,
    )


def parse_web_address(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (on 127.0.0.1) as (host, port).

    Raises:
        ValueError: Not an address and port.
    """
    host, colon, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") if colon else HOST
    if not port.isdecimal() or not 0 <= int(port) <= 65535 or (colon and not host):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8025, not {value!r}")
    return host, int(port)


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line saying why the server could not start (the port is taken...), no errno."""
    if exc.errno and not isinstance(exc, socket.gaierror):
        reason = os.strerror(exc.errno)
    else:  # a host name that does not resolve: the resolver's own words
        reason = exc.strerror or str(exc)
    return f"cannot listen on {host}:{port}: {reason}"


def keep(store: MessageStore, message: CapturedMessage) -> None:
    """Add a captured message to the preview's store."""
    store.add(
        message.data,
        envelope_sender=message.envelope_sender,
        recipients=message.recipients,
        tls=message.tls,
        authenticated_as=message.authenticated_as,
    )


async def _listen(
    stack: contextlib.AsyncExitStack,
    server: CaptureServer | PreviewServer,
    host: str,
    port: int,
) -> None:
    """Start ``server`` on ``stack``; a port in use (or the like) is one line, no traceback."""
    try:
        await stack.enter_async_context(server)
    except OSError as exc:  # the port is taken, the host is not an address here...
        raise click.ClickException(cannot_listen(host, port, exc)) from None


async def run_serve(
    *,
    maildir: Path,
    host: str,
    port: int,
    web: tuple[str, int] | None,
    auth: tuple[str, str] | None,
    tls: bool,
    max_messages: int,
) -> None:
    """Run ``asyncmail serve`` until cancelled: the SMTP server, and the web preview if asked.

    Raises:
        click.ClickException: A port cannot be listened on (one line, no traceback).
    """
    store = MessageStore(max_messages=max_messages)

    def stored(message: CapturedMessage, headers: EmailMessage) -> None:
        sender, to = message.envelope_sender, ",".join(message.recipients)
        click.echo(f"received from={sender} to={to} subject={headers.get('Subject', '')!r}")
        if web is not None:
            keep(store, message)

    server = maildir_server(maildir, port=port, host=host, on_stored=stored, auth=auth, tls=tls)
    preview = PreviewServer(store, host=web[0], port=web[1]) if web is not None else None
    async with contextlib.AsyncExitStack() as stack:
        # Both ports first, then the news: a port in use is the one line said.
        await _listen(stack, server, host, port)
        if preview is not None and web is not None:
            await _listen(stack, preview, *web)
        click.echo(f"listening on {server.url}, storing in {maildir}/ (Ctrl-C to stop)")
        if tls:
            click.echo(
                f"STARTTLS with a throwaway certificate; its CA (for clients to verify it): "
                f"{server.ca_file}  e.g. {server.url}?ca_file={server.ca_file}"
            )
        if auth is not None:
            click.echo(f"AUTH required: user {auth[0]!r} with the password given in --auth")
        if preview is not None:
            click.echo(f"web preview on {preview.url} (the newest {max_messages} messages)")
            if not is_loopback(preview.host):
                click.echo(f"warning: no password: anyone reaching {preview.url} reads the mail")
        await asyncio.Event().wait()
