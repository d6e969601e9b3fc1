"""Shared helpers for the transport tests: messages and Mailers pointed at a CaptureServer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, Unpack

import pytest
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SMTPEnvelope
from aiosmtpd.smtp import Session as SMTPSession

from asyncmail import (
    DSN,
    Attachment,
    Mailer,
    Message,
    Phase,
    RetryPolicy,
    SendResult,
    Server,
    Timeouts,
    TLSMode,
)
from asyncmail._config import TokenProvider
from asyncmail.message._address import AddressInput
from asyncmail.sync._mailer import MailerOptions
from asyncmail.testing import CaptureServer, Fault
from asyncmail.testing._faults import Phase as FaultPhase
from asyncmail.testing._server import TLSMode as CaptureTLS

#: Retries without waiting: tests assert behaviour, never time.
NO_WAIT_RETRY = RetryPolicy(attempts=3, base_delay=0.0, jitter=False)
#: Short phase timeouts so a stalled server is noticed quickly.
SHORT_TIMEOUTS = Timeouts(
    connect=5, greeting=0.5, command=0.5, data_start=0.5, data_transfer=2, final_reply=0.5
)


class MessageFields(TypedDict, total=False):
    """The keyword arguments of ``Message``."""

    sender: AddressInput
    to: AddressInput | Iterable[AddressInput]
    cc: AddressInput | Iterable[AddressInput]
    bcc: AddressInput | Iterable[AddressInput]
    reply_to: AddressInput | Iterable[AddressInput]
    subject: str
    text: str | None
    html: str | None
    attachments: Iterable[Attachment]
    headers: Mapping[str, str] | Iterable[tuple[str, str]]
    return_path: str | None
    message_id: str | None
    date: datetime | None
    dsn: DSN | None
    unsubscribe: str | None
    unsubscribe_mailto: str | None
    list_id: str | None


def message(i: int = 0, **overrides: Unpack[MessageFields]) -> Message:
    fields: MessageFields = {
        "sender": "商店 <shop@example.com>",
        "to": [f"张三 <user{i}@example.net>"],
        "subject": f"订单确认 #{i}",
        "text": f"Hello {i}\n.\nA line with a lone dot above.",
        "html": f"<p>Hello {i}</p>",
    }
    fields.update(overrides)
    return Message(**fields)


def mailer_for(
    server: CaptureServer,
    *,
    tls: TLSMode | None = None,
    username: str | None = None,
    password: str | None = None,
    oauth_token: TokenProvider | None = None,
    allow_plaintext_auth: bool = False,
    auth_mechanism: str | None = None,
    local_hostname: str | None = None,
    **options: Unpack[MailerOptions],
) -> Mailer:
    """A Mailer for the capture server, trusting its CA when it speaks TLS."""
    modes = {"none": TLSMode.NONE, "starttls": TLSMode.STARTTLS, "implicit": TLSMode.IMPLICIT}
    target = Server(
        host=server.host,
        port=server.port,
        tls=modes[server.tls] if tls is None else tls,
        ssl_context=server.client_ssl_context() if server.tls != "none" else None,
        username=username,
        password=password,
        oauth_token=oauth_token,
        allow_plaintext_auth=allow_plaintext_auth,
        auth_mechanism=auth_mechanism,
        local_hostname=local_hostname,
    )
    options.setdefault("retry", NO_WAIT_RETRY)
    return Mailer(target, **options)


async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, hold: float = 0) -> None:
    """Copy ``src`` to ``dst`` until it ends, then close ``dst`` (for small test proxies);
    ``hold``: wait that long before the first byte."""
    await asyncio.sleep(hold)
    with contextlib.suppress(ConnectionError):
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    dst.close()


def first_recipient(result: SendResult[Any]) -> str:
    """The first envelope recipient of the ``Message`` a result is about."""
    assert isinstance(result.message, Message)
    return result.message.recipients[0]


def copies(server: CaptureServer, recipient: str) -> int:
    """How many stored messages were addressed to ``recipient``."""
    return sum(recipient in m.recipients for m in server.messages)


@dataclass(frozen=True, slots=True)
class SendPath:
    """One way the content reaches the capture server, and the fault phases that go with it.

    The fault matrix runs each test once per path: DATA with PIPELINING, DATA one command per
    round trip, and BDAT (CHUNKING with PIPELINING, a window of messages in flight).
    """

    name: str
    pipelining: bool
    chunking: bool = False

    def server(
        self,
        *,
        faults: Iterable[Fault] = (),
        tls: CaptureTLS = "none",
        auth: Mapping[str, str] | None = None,
    ) -> CaptureServer:
        """A capture server that offers what this path needs."""
        return CaptureServer(
            pipelining=self.pipelining, chunking=self.chunking, faults=faults, tls=tls, auth=auth
        )

    @property
    def dot(self) -> FaultPhase:
        """The reply that gives the message's outcome: the final dot's, or the LAST chunk's."""
        return "bdat_last" if self.chunking else "dot"

    @property
    def content_refused(self) -> tuple[FaultPhase, Phase]:
        """Where a server refuses the content before storing it, and the error's phase.

        BDAT has no DATA command: the content left with the envelope, and the server's
        refusal is the LAST chunk's reply (RFC 3030 section 2).
        """
        if self.chunking:
            return "bdat_last", Phase.FINAL_REPLY
        return "data", Phase.DATA


#: The paths of the fault matrix; tests take one through the ``send_path`` fixture.
SEND_PATHS = (
    SendPath("pipelined", pipelining=True),
    SendPath("plain", pipelining=False),
    SendPath("chunking", pipelining=True, chunking=True),
)


@pytest.fixture(params=SEND_PATHS, ids=[path.name for path in SEND_PATHS])
def send_path(request: pytest.FixtureRequest) -> SendPath:
    """Each path of the fault matrix in turn (``SEND_PATHS``)."""
    path: SendPath = request.param
    return path


class No8BitMime:
    """An aiosmtpd handler that stores messages and does not offer 8BITMIME."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_EHLO(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: SMTPEnvelope,
        hostname: str,
        lines: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return [line for line in lines if "8BITMIME" not in line]

    async def handle_DATA(self, server: SMTP, session: SMTPSession, envelope: SMTPEnvelope) -> str:
        assert envelope.original_content is not None  # (set before DATA's hook runs)
        self.messages.append((list(envelope.mail_options), envelope.original_content))
        return "250 OK"


@contextlib.asynccontextmanager
async def serve_without_8bitmime() -> AsyncIterator[tuple[Server, No8BitMime]]:
    """An aiosmtpd server on 127.0.0.1 that does not offer 8BITMIME, and its handler."""
    handler = No8BitMime()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        yield Server(host="127.0.0.1", port=port, tls=TLSMode.NONE), handler
    finally:
        listener.close()
        await listener.wait_closed()
