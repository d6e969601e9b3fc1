"""CaptureServer: a real SMTP server on 127.0.0.1 that records what it receives.

Example::

    async with CaptureServer(tls="starttls", auth={"user": "secret"}) as server:
        await aiosmtplib.send(message, hostname=server.host, port=server.port,
                              start_tls=True, tls_context=server.client_ssl_context(),
                              username="user", password="secret")
        [captured] = await server.wait_for_messages(1)
        assert captured.parsed["Subject"] == "Hello"

Sync code (or another event loop) runs it in a thread::

    with CaptureServer().run_in_thread() as server:
        smtplib.SMTP(server.host, server.port).sendmail(...)

A long-running server hands each message to a sink and keeps nothing in memory; that is how
``asyncmail serve`` fills a Maildir::

    async with CaptureServer(port=1025, record=False, on_message=write_to_disk) as server:
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from ..engine._mail_outbox import MailOutbox
from ._faults import Fault, FaultBook
from ._records import CapturedMessage, Session, SessionLog

if TYPE_CHECKING:
    import trustme

    from ._protocol import CaptureSMTP
    from ._thread import ServerThread
    from ._tls import TLSMaterial

__all__ = ["CaptureServer", "CaptureStatistics"]

TLSMode = Literal["none", "starttls", "implicit"]
#: Interface the server listens on unless told otherwise.
HOST = "127.0.0.1"
#: Default timeout of ``wait_for_messages``, in seconds.
WAIT_TIMEOUT = 5.0
_EXTRA_HINT = "asyncmail.testing needs the 'testing' extra: pip install 'asyncmail[testing]'"


def _load_backend() -> tuple[type[CaptureSMTP], type[TLSMaterial]]:
    """Import the modules that need aiosmtpd and trustme, with an actionable error."""
    try:
        from ._protocol import CaptureSMTP
        from ._tls import TLSMaterial
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(_EXTRA_HINT, name=exc.name) from exc
    return CaptureSMTP, TLSMaterial


@dataclass(frozen=True, slots=True)
class ServerLink:
    """What a connection's protocol may do to its CaptureServer, handed to it explicitly."""

    #: The armed faults, taken as the commands they match arrive.
    faults: FaultBook
    #: Called when a client connects: (protocol, transport, tls) -> the session's log.
    open_session: Callable[[CaptureSMTP, asyncio.BaseTransport, bool], SessionLog]
    #: Called when the connection is gone.
    close_session: Callable[[CaptureSMTP], None]
    #: Keeps an accepted message and wakes whoever waits for messages.
    store: Callable[[CapturedMessage], None]


@dataclass(frozen=True, slots=True)
class CaptureStatistics:
    """A snapshot of a CaptureServer."""

    messages: int
    open_connections: int
    connections_opened: int
    max_concurrent_connections: int


class CaptureServer:
    """A capture SMTP server with TLS, AUTH and fault injection; an async context manager.

    Args:
        tls: ``"none"``, ``"starttls"`` (offered after EHLO) or ``"implicit"`` (TLS on connect).
        require_starttls: Refuse MAIL and the like before STARTTLS (``tls="starttls"`` only).
        auth: User name to password; enables AUTH PLAIN, LOGIN and CRAM-MD5.
        xoauth2_tokens: User name to OAuth2 access token; enables AUTH XOAUTH2.
        auth_require_tls: Neither offer nor accept AUTH on a plaintext connection.
        require_auth: Refuse MAIL, RCPT and DATA before a successful AUTH.
        pipelining: Advertise PIPELINING in the EHLO reply.
        smtputf8: Advertise and accept SMTPUTF8.
        dsn: Advertise DSN (RFC 3461): accept RET and ENVID on MAIL and NOTIFY and ORCPT on
            RCPT (a malformed one gets 501), and record them as sent in
            ``CapturedMessage.mail_options`` and ``recipient_options``. No notification is
            ever sent.
        chunking: Advertise CHUNKING (RFC 3030) and accept ``BDAT <size> [LAST]``; the
            message records its chunk sizes in ``CapturedMessage.chunks``. A chunk out of
            sequence gets 503, one that takes the message past 32 MiB gets 552; its octets are
            read and dropped either way. Without it BDAT is an unknown command (500).
        record_chunks: Keep every raw read from each client in ``Session.chunks``.
        faults: Faults armed from the start; see ``Fault``.
        host: The interface to listen on. The TLS certificate covers only localhost,
            127.0.0.1 and ::1.
        port: The port to listen on; 0 lets the OS pick a free one (see ``port``).
        on_message: Called with each message as it is stored (what ``messages`` holds), on
            the server's event loop, before the client gets its reply: a sink, such as a
            writer to disk. If it raises, the client gets a 500 reply and the message is not
            recorded.
        record: Keep accepted messages in ``messages`` and connections in ``sessions``. With
            False nothing is kept (``statistics()`` still counts), so the memory of a
            long-running server stays flat; ``wait_for_messages`` then cannot be used.
    """

    def __init__(
        self,
        *,
        tls: TLSMode = "none",
        require_starttls: bool = False,
        auth: Mapping[str, str] | None = None,
        xoauth2_tokens: Mapping[str, str] | None = None,
        auth_require_tls: bool = True,
        require_auth: bool = False,
        pipelining: bool = True,
        smtputf8: bool = True,
        dsn: bool = False,
        chunking: bool = False,
        record_chunks: bool = False,
        faults: Iterable[Fault] = (),
        host: str = HOST,
        port: int = 0,
        on_message: Callable[[CapturedMessage], object] | None = None,
        record: bool = True,
    ) -> None:
        if tls not in ("none", "starttls", "implicit"):
            raise ValueError(f"tls must be 'none', 'starttls' or 'implicit', not {tls!r}")
        if require_starttls and tls != "starttls":
            raise ValueError("require_starttls needs tls='starttls'")
        if require_auth and auth is None and xoauth2_tokens is None:
            raise ValueError("require_auth needs auth= or xoauth2_tokens=")
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        self.tls: TLSMode = tls
        self.require_starttls = require_starttls
        self.auth = dict(auth) if auth is not None else None
        self.xoauth2_tokens = dict(xoauth2_tokens) if xoauth2_tokens is not None else None
        self.auth_require_tls = auth_require_tls
        self.require_auth = require_auth
        self.pipelining = pipelining
        self.smtputf8 = smtputf8
        self.dsn = dsn
        self.chunking = chunking
        self.record_chunks = record_chunks
        self.record = record
        self._host = host
        self._requested_port = port
        self._on_message = on_message
        self._faults = FaultBook(tuple(faults))
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._messages: MailOutbox[CapturedMessage] = MailOutbox()
        self._accepted = 0
        self._sessions: list[Session] = []
        self._live: set[CaptureSMTP] = set()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._opened = 0
        self._max_concurrent = 0
        self._state: Literal["new", "running", "closed"] = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tls_material: TLSMaterial | None = None
        self._port = 0

    def __repr__(self) -> str:
        return (
            f"<CaptureServer {self._state} {self.url if self._port else ''} "
            f"messages={self._accepted} live={len(self._live)} opened={self._opened}>"
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> CaptureServer:
        if self._state != "new":
            raise RuntimeError(f"a CaptureServer cannot be started twice (it is {self._state})")
        protocol_class, tls_class = _load_backend()
        self._state = "running"
        self._loop = loop = asyncio.get_running_loop()
        if self.tls != "none":
            self._tls_material = tls_class.create()
        server_context = self._tls_material.server_context if self._tls_material else None
        link = ServerLink(
            faults=self._faults,
            open_session=self._open_session,
            close_session=self._close_session,
            store=self._store,
        )
        try:
            self._server = await loop.create_server(
                lambda: protocol_class(
                    self,
                    link,
                    tls_context=server_context if self.tls == "starttls" else None,
                    implicit_tls=self.tls == "implicit",
                ),
                self._host,
                self._requested_port,
                ssl=server_context if self.tls == "implicit" else None,
            )
        except BaseException:
            await self.aclose()
            raise
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening, abort every client connection and wait for their tasks to end."""
        if self._state == "closed":
            return
        self._state = "closed"
        if self._server is not None:
            self._server.close()
        await self._drop()
        if self._server is not None:
            await self._server.wait_closed()
        if self._tls_material is not None:
            self._tls_material.cleanup()

    def run_in_thread(self) -> ServerThread:
        """A sync context manager running this server on its own loop in a daemon thread."""
        from ._thread import ServerThread

        return ServerThread(self)

    # --- addresses and TLS --------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the OS picked; 0 before start."""
        return self._port

    @property
    def url(self) -> str:
        """``smtp://127.0.0.1:PORT?tls=none``, ``smtp://127.0.0.1:PORT`` or ``smtps://...``."""
        scheme = "smtps" if self.tls == "implicit" else "smtp"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}" + ("?tls=none" if self.tls == "none" else "")

    @property
    def ca(self) -> trustme.CA:
        """The ``trustme.CA`` that signed the server certificate."""
        return self._require_tls().ca

    @property
    def ca_file(self) -> Path:
        """The CA certificate as a PEM file, removed when the server stops."""
        return self._require_tls().ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new client SSL context that trusts the server's CA, hostname checking on."""
        return self._require_tls().client_context()

    def _require_tls(self) -> TLSMaterial:
        if self._tls_material is None:
            raise RuntimeError("no TLS material: the server has tls='none' or is not started")
        return self._tls_material

    # --- records ------------------------------------------------------------------------

    @property
    def messages(self) -> MailOutbox[CapturedMessage]:
        """The accepted messages, live and in order (do not mutate; see ``clear``), with
        ``MailOutbox``'s assertions: ``server.messages.assert_sent(to="a@example.com")``."""
        return self._messages

    @property
    def sessions(self) -> list[Session]:
        """One record per client connection, live and in order of arrival."""
        return self._sessions

    @property
    def connections_opened(self) -> int:
        """How many client connections were accepted in total."""
        return self._opened

    @property
    def max_concurrent_connections(self) -> int:
        """The most client connections that were open at the same time."""
        return self._max_concurrent

    def statistics(self) -> CaptureStatistics:
        """A frozen snapshot of the server's counts."""
        with self._lock:
            return CaptureStatistics(
                messages=self._accepted,
                open_connections=len(self._live),
                connections_opened=self._opened,
                max_concurrent_connections=self._max_concurrent,
            )

    def clear(self) -> None:
        """Forget captured messages and sessions (the lists are emptied in place)."""
        with self._lock:
            self._accepted = 0
            self._messages.clear()
            self._sessions.clear()

    async def wait_for_messages(
        self,
        count: int = 1,
        *,
        timeout: float = WAIT_TIMEOUT,  # noqa: ASYNC109 (a deadline is this helper's point)
    ) -> list[CapturedMessage]:
        """Wait, on any event loop, until ``count`` messages were captured; return them all.

        Raises:
            TimeoutError: Fewer messages arrived within ``timeout`` seconds.
            RuntimeError: The server keeps no messages (``record=False``).
        """
        self._require_record()
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                with self._lock:
                    if len(self._messages) >= count:
                        return list(self._messages)
                    waiter = (loop, loop.create_future())
                    self._waiters.append(waiter)
                try:
                    await waiter[1]
                finally:
                    with self._lock:
                        self._waiters.remove(waiter)

    def wait_for_messages_sync(
        self, count: int = 1, *, timeout: float = WAIT_TIMEOUT
    ) -> list[CapturedMessage]:
        """Block until ``count`` messages were captured (for thread mode); return them all.

        Raises:
            TimeoutError: Fewer messages arrived within ``timeout`` seconds.
            RuntimeError: The server keeps no messages (``record=False``).
        """
        self._require_record()
        with self._received:
            if not self._received.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} of {count} messages after {timeout}s")
            return list(self._messages)

    def _require_record(self) -> None:
        if not self.record:
            raise RuntimeError("this CaptureServer keeps no messages to wait for (record=False)")

    # --- faults and connections ---------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Arm one more fault, from any thread; it applies to commands from now on."""
        self._faults.add(fault)
        if fault.kind == "close_idle" and self._loop is not None and self._state == "running":
            self._loop.call_soon_threadsafe(self._rearm_idle_timers)

    async def drop_connections(self) -> None:
        """Abort every open client connection and wait until the server has seen them go."""
        if self._loop is None or self._loop is asyncio.get_running_loop():
            await self._drop()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._drop(), self._loop))

    def drop_connections_sync(self, *, timeout: float = WAIT_TIMEOUT) -> None:
        """``drop_connections`` for sync code talking to a server in thread mode."""
        if self._loop is None:
            return
        if self._loop.is_running() and _in_loop_thread(self._loop):
            raise RuntimeError("drop_connections_sync would block the server's own loop")
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(timeout)

    async def _drop(self) -> None:
        live = list(self._live)
        for protocol in live:
            protocol.hang_up()
        await asyncio.gather(*(protocol.wait_closed() for protocol in live))

    def _rearm_idle_timers(self) -> None:
        for protocol in self._live:
            protocol.rearm_idle_timer()

    # --- called by the protocol, on the server's loop -----------------------------------

    def _open_session(
        self, protocol: CaptureSMTP, transport: asyncio.BaseTransport, tls: bool
    ) -> SessionLog:
        peer = transport.get_extra_info("peername")
        with self._lock:
            log = SessionLog(id=self._opened, peer=(peer[0], peer[1]), tls=tls)
            self._opened += 1
            self._live.add(protocol)
            self._max_concurrent = max(self._max_concurrent, len(self._live))
            if self.record:
                self._sessions.append(Session(log))
        return log

    def _close_session(self, protocol: CaptureSMTP) -> None:
        with self._lock:
            self._live.discard(protocol)

    def _store(self, message: CapturedMessage) -> None:
        if self._on_message is not None:
            self._on_message(message)
        with self._received:
            self._accepted += 1
            if self.record:
                self._messages.append(message)
            self._received.notify_all()
            waiters = list(self._waiters)
        for loop, future in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed meanwhile
                loop.call_soon_threadsafe(_wake, future)


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
