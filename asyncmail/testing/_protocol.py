"""The per-connection SMTP protocol of a CaptureServer: aiosmtpd's SMTP plus faults and extras.

aiosmtpd does the SMTP; this subclass adds what a test server needs: fault dispatch before each
command, PIPELINING in EHLO, AUTH CRAM-MD5 and XOAUTH2, AUTH gated on this connection's real TLS
state (aiosmtpd only knows STARTTLS, not implicit TLS), BDAT (CHUNKING, which aiosmtpd lacks),
raw chunk recording and an idle timer.
Imported lazily: it is the only module (with ``_tls``) that needs the ``testing`` extra.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, auth_mechanism
from aiosmtpd.smtp import Session as SMTPSession

from ._chunking import ChunkedTransaction, receive_bdat
from ._dsnparams import DSNError, split_dsn
from ._faults import Fault, FaultBook, Phase
from ._records import CapturedMessage, SessionLog

if TYPE_CHECKING:
    import ssl

    from ._server import CaptureServer, ServerLink

__all__ = ["CaptureSMTP"]

#: Seconds to wait for asyncio to report a dropped connection before assuming it.
LOST_GRACE = 2.0

#: The name the server gives itself in its greeting and EHLO reply.
HOSTNAME = "localhost"
#: Mechanisms enabled by ``auth=`` and by ``xoauth2_tokens=``.
PASSWORD_MECHANISMS = ("CRAM-MD5", "LOGIN", "PLAIN")
TOKEN_MECHANISMS = ("XOAUTH2",)
#: What Gmail answers (base64 JSON in a 334) when an XOAUTH2 token is refused.
XOAUTH2_ERROR = {"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}

_PHASE_OF_COMMAND: dict[str, Phase] = {
    "EHLO": "ehlo",
    "HELO": "ehlo",
    "MAIL": "mail",
    "RCPT": "rcpt",
    "DATA": "data",
    "RSET": "rset",
    "AUTH": "auth",
    "QUIT": "quit",
}


def _command(name: str) -> Callable[[CaptureSMTP, str | None], Coroutine[Any, Any, None]]:
    """An ``smtp_<name>`` override that runs the base method through ``CaptureSMTP._dispatch``."""
    base = getattr(SMTP, f"smtp_{name}")

    @functools.wraps(base)  # keeps aiosmtpd's HELP syntax attributes
    async def method(self: CaptureSMTP, arg: str | None) -> None:
        await self._dispatch(name, arg, functools.partial(base, self))

    return method


class _Hooks:
    """aiosmtpd's handler object: forwards its hooks to the protocol instance."""

    async def handle_EHLO(
        self,
        server: CaptureSMTP,
        session: SMTPSession,
        envelope: Envelope,
        hostname: str,
        lines: list[str],
    ) -> list[str]:
        session.host_name = hostname
        return server.ehlo_lines(lines)

    async def handle_DATA(
        self, server: CaptureSMTP, session: SMTPSession, envelope: Envelope
    ) -> str:
        return await server.on_message(envelope)


class CaptureSMTP(SMTP):
    """One client connection of a CaptureServer."""

    def __init__(
        self,
        owner: CaptureServer,
        link: ServerLink,
        *,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool,
    ) -> None:
        offered = set(PASSWORD_MECHANISMS if owner.auth is not None else ())
        offered.update(TOKEN_MECHANISMS if owner.xoauth2_tokens is not None else ())
        super().__init__(
            _Hooks(),
            enable_SMTPUTF8=owner.smtputf8,
            hostname=HOSTNAME,
            ident="asyncmail.testing",
            tls_context=tls_context,
            require_starttls=owner.require_starttls,
            auth_require_tls=False,  # enforced here, on the real TLS state
            authenticator=self._check_password,
            auth_exclude_mechanism=set(PASSWORD_MECHANISMS + TOKEN_MECHANISMS) - offered,
            loop=asyncio.get_running_loop(),
        )
        self._owner = owner
        self._link = link
        self._implicit_tls = implicit_tls
        self._mechanisms = sorted(offered)
        self._record: SessionLog | None = None
        self._task: asyncio.Task[Any] | None = None
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._mid_data: Fault | None = None
        self._content_bytes = 0
        self._swallowing = False
        self._mail_params: tuple[str, ...] = ()  # the DSN parameters of the last MAIL
        self._rcpt_params: list[tuple[str, ...]] = []  # those of each accepted RCPT
        self.chunked: ChunkedTransaction | None = None  # the BDAT transaction under way
        if not owner.chunking:  # BDAT stays an unknown command, as in plain aiosmtpd
            del self._smtp_methods["BDAT"]

    smtp_EHLO = _command("EHLO")
    smtp_HELO = _command("HELO")
    smtp_MAIL = _command("MAIL")
    smtp_RCPT = _command("RCPT")
    smtp_DATA = _command("DATA")
    smtp_RSET = _command("RSET")
    smtp_AUTH = _command("AUTH")
    smtp_NOOP = _command("NOOP")
    smtp_QUIT = _command("QUIT")
    smtp_STARTTLS = _command("STARTTLS")
    smtp_VRFY = _command("VRFY")

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030 ``BDAT <size> [LAST]``; only reachable on a server with ``chunking``."""
        await self._dispatch("BDAT", arg, functools.partial(receive_bdat, self))

    # --- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._record is None:
            self._record = self._link.open_session(self, transport, self._implicit_tls)
            self.rearm_idle_timer()
        else:  # the same connection again, now wrapped in TLS by STARTTLS
            self._record.tls = True

    def connection_lost(self, error: Exception | None) -> None:
        try:
            super().connection_lost(error)
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            if self._record is not None:
                self._record.closed = True
                self._link.close_session(self)
            if not self._lost.done():
                self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._record is not None and self._owner.record_chunks:
            self._record.add_chunk(data)
        if self._swallowing:
            return
        if self._mid_data is not None:
            self._content_bytes += len(data)
            assert self._mid_data.after_bytes is not None
            if self._content_bytes >= self._mid_data.after_bytes:
                fault, self._mid_data = self._mid_data, None
                if fault.kind == "stall":
                    self._swallowing = True
                else:
                    self.hang_up()
                return
        super().data_received(data)

    def hang_up(self, *, graceful: bool = False) -> None:
        """Close the connection: flush then close if graceful, else abort at once."""
        transport = cast(asyncio.Transport | None, self.transport)
        if transport is None:
            return
        if not graceful:
            transport.abort()
            # mid-STARTTLS the TLS layer may not pass the abort down: drop the socket too
            raw = cast(asyncio.Transport | None, self._original_transport)
            if raw is not None and not raw.is_closing():
                raw.abort()
        elif not transport.is_closing():
            transport.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is lost and its command task has finished."""
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), LOST_GRACE)
        except TimeoutError:
            # a client that quit in the middle of the STARTTLS handshake leaves asyncio's TLS
            # layer unable to tell us (it never made the TLS connection): end it here
            if self._task is not None:
                self._task.cancel()
            self.connection_lost(None)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def rearm_idle_timer(self) -> None:
        """Restart the idle clock if a ``close_idle`` fault is armed and no command is running."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._busy:
            return
        after = self._link.faults.idle_after()
        if after is not None and self.transport is not None:
            self._idle_timer = self.loop.call_later(after, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self._link.faults.take_idle():
            self.hang_up()

    async def _forever(self) -> NoReturn:
        """Never return; when the task is cancelled (connection lost, shutdown), close."""
        try:
            await self.loop.create_future()
        finally:
            self.hang_up()
        raise AssertionError("unreachable")  # pragma: no cover

    # --- greeting and commands ----------------------------------------------------------

    async def _handle_client(self) -> None:
        self._task = asyncio.current_task()
        fault = self._link.faults.take("greeting")
        if fault is None:
            await super()._handle_client()
            return
        await self.apply_fault(fault)
        # An error greeting other than 421: RFC 5321 3.1, wait for QUIT, refuse all else.
        while not self._reader.at_eof():
            line = await self._reader.readline()
            if line.strip().upper() == b"QUIT":
                await self.push("221 2.0.0 Bye")
                self.hang_up(graceful=True)
                return
            if line:
                await self.push("503 5.5.1 Bad sequence of commands")
        self.hang_up()

    async def _dispatch(
        self, name: str, arg: str | None, run: Callable[[str | None], Awaitable[None]]
    ) -> None:
        assert self._record is not None
        shown = arg.split()[0] if name == "AUTH" and arg else arg  # never record AUTH secrets
        self._record.add_command(f"{name} {shown}" if shown else name)
        self._busy = True  # not idle: the idle clock stops until the command is answered
        self.rearm_idle_timer()
        try:
            await self._run_command(name, arg, run)
        finally:
            self._busy = False
        self.rearm_idle_timer()

    async def _run_command(
        self, name: str, arg: str | None, run: Callable[[str | None], Awaitable[None]]
    ) -> None:
        assert self._record is not None
        if name == "AUTH" and (refusal := self._auth_refusal()) is not None:
            await self.push(refusal)
            return
        if name == "DATA" and self.chunking_under_way() is not None:
            await self.push("503 5.5.1 Error: DATA after BDAT in the same transaction")
            return
        phase = _PHASE_OF_COMMAND.get(name)
        fault = self._link.faults.take(phase, arg or "") if phase else None
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.after or 0.0)
        elif fault is not None:
            await self.apply_fault(fault)
            return
        if name == "DATA":
            self._mid_data = self._link.faults.take("mid_data")
            self._content_bytes = 0
        if name in ("MAIL", "RCPT"):
            await self._envelope_command(name, arg, run)
            return
        try:
            await run(arg)
        finally:
            self._mid_data = None
        session = self.session
        if name == "AUTH" and session is not None and session.authenticated and session.auth_data:
            self._record.authenticated_as = str(session.auth_data)

    async def _envelope_command(
        self, name: str, arg: str | None, run: Callable[[str | None], Awaitable[None]]
    ) -> None:
        """MAIL or RCPT: with ``dsn``, its DSN parameters are taken off, checked and kept."""
        params: tuple[str, ...] = ()
        if self._owner.dsn and arg:
            try:
                arg, params = split_dsn(name, arg)
            except DSNError as exc:
                await self.push(f"501 5.5.4 {exc}")
                return
        envelope = self.envelope
        before = (envelope.mail_from, len(envelope.rcpt_tos)) if envelope else (None, 0)
        await run(arg)
        envelope = self.envelope
        if envelope is None:  # pragma: no cover - aiosmtpd keeps one per session
            return
        if name == "MAIL" and envelope.mail_from is not None and before[0] is None:
            self._mail_params, self._rcpt_params = params, []
        elif name == "RCPT" and len(envelope.rcpt_tos) > before[1]:
            self._rcpt_params.append(params)

    async def apply_fault(self, fault: Fault) -> None:
        """Do what a reply/disconnect/stall fault says, in place of the normal answer."""
        if fault.kind == "reply":
            for line in fault.reply_lines():
                await self.push(line)
            if fault.code != 421:
                return
            self.hang_up(graceful=True)
        elif fault.kind == "disconnect":
            self.hang_up()
        await self._forever()

    def ehlo_lines(self, lines: list[str]) -> list[str]:
        """aiosmtpd's EHLO reply lines with PIPELINING and the AUTH this connection offers."""
        lines = [line for line in lines if not line.startswith("250-AUTH")]
        extra = ["250-PIPELINING"] if self._owner.pipelining else []
        if self._owner.dsn:
            extra.append("250-DSN")
        if self._owner.chunking:
            extra.append("250-CHUNKING")
        if self._mechanisms and self._auth_refusal() is None:
            extra.append("250-AUTH " + " ".join(self._mechanisms))
        return lines[:-1] + extra + lines[-1:]

    def _auth_refusal(self) -> str | None:
        assert self._record is not None
        if not self._mechanisms:
            return "502 5.5.1 AUTH not supported"
        if self._owner.auth_require_tls and not self._record.tls:
            return "538 5.7.11 Encryption required for requested authentication mechanism"
        return None

    def needs_auth(self) -> bool:
        """Whether mail commands are refused until AUTH (``require_auth``)."""
        return self._owner.require_auth and not (self.session and self.session.authenticated)

    async def check_auth_needed(self, caller_method: str) -> bool:
        """Refuse mail commands before AUTH when the server has ``require_auth``."""
        if self.needs_auth():
            await self.push("530 5.7.0 Authentication required")
            return True
        return False

    # --- for BDAT (``_chunking``) -------------------------------------------------------

    @property
    def faults(self) -> FaultBook:
        """The server's armed faults."""
        return self._link.faults

    @property
    def reader(self) -> asyncio.StreamReader:
        """The stream the client's commands and chunks arrive on."""
        return self._reader

    def chunking_under_way(self) -> ChunkedTransaction | None:
        """The BDAT transaction of the current envelope (RSET, EHLO... replace the envelope)."""
        chunked = self.chunked
        if chunked is not None and chunked.envelope is not self.envelope:
            chunked = self.chunked = None
        return chunked

    async def cut_mid_data(self, fault: Fault) -> None:
        """Do a ``"mid_data"`` disconnect or stall fault now; never returns."""
        self._swallowing = fault.kind == "stall"
        await self.apply_fault(fault)

    # --- messages -----------------------------------------------------------------------

    async def on_message(
        self, envelope: Envelope, *, phase: Phase = "dot", chunks: tuple[int, ...] = ()
    ) -> str:
        """Store (unless a fault refuses it) one message; return the reply to its data."""
        assert self._record is not None
        # aiosmtpd sets both before it calls the DATA hook, _bdat before the LAST chunk
        assert envelope.original_content is not None and envelope.mail_from is not None
        data = envelope.original_content
        fault = self._link.faults.take(phase, data.decode("utf-8", "replace"))
        delay = None
        if fault is not None and fault.kind == "delay":
            delay, fault = fault.after, None
        if fault is None or fault.kind != "reply" or (fault.code or 0) < 300:
            self._link.store(
                CapturedMessage(
                    envelope_sender="" if envelope.mail_from == "<>" else envelope.mail_from,
                    recipients=tuple(envelope.rcpt_tos),
                    data=data,
                    mail_options=(*envelope.mail_options, *self._mail_params),
                    rcpt_options=(
                        *envelope.rcpt_options,
                        *(p for params in self._rcpt_params for p in params),
                    ),
                    recipient_options=tuple(self._rcpt_params),
                    tls=self._record.tls,
                    authenticated_as=self._record.authenticated_as,
                    session_id=self._record.id,
                    chunks=chunks,
                )
            )
        if fault is None:
            if delay is not None:
                await asyncio.sleep(delay)
            return f"250 2.0.0 OK queued as {secrets.token_hex(6)}"
        if fault.kind == "reply" and fault.code != 421:
            return "\r\n".join(fault.reply_lines())
        await self.apply_fault(fault)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- authentication -----------------------------------------------------------------

    def _check_password(
        self,
        server: SMTP,
        session: SMTPSession,
        envelope: Envelope,
        mechanism: str,
        auth_data: LoginPassword,
    ) -> AuthResult:
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        expected = (self._owner.auth or {}).get(user)
        if expected is not None and hmac.compare_digest(expected.encode(), password.encode()):
            return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, _: SMTP, args: list[str]) -> AuthResult:
        """RFC 2195: the client proves the password with an HMAC-MD5 of a fresh challenge."""
        if len(args) != 1:
            await self.push("501 5.5.4 CRAM-MD5 takes no initial response")
            return AuthResult(success=False, handled=True)
        challenge = f"<{secrets.randbits(64)}.{int(time.time())}@{HOSTNAME}>".encode()
        response = await self.challenge_auth(challenge)
        if response is MISSING:
            return AuthResult(success=False, handled=True)
        user, _sep, digest = bytes(response).decode("utf-8", "replace").rpartition(" ")
        password = (self._owner.auth or {}).get(user)
        if password is not None:
            expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
            if hmac.compare_digest(expected, digest.lower()):
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, _: SMTP, args: list[str]) -> AuthResult:
        """Google's XOAUTH2: ``user=U^Aauth=Bearer T^A^A``; refusal is a 334 JSON, then 535."""
        if len(args) == 1:
            blob = await self.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        fields: dict[str, str] = {}
        for part in bytes(blob).decode("utf-8", "replace").split("\x01"):
            key, _sep, value = part.partition("=")
            fields[key] = value
        user = fields.get("user", "")
        token = (self._owner.xoauth2_tokens or {}).get(user)
        offered = fields.get("auth", "")
        if token is not None and hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
            return AuthResult(success=True, auth_data=user)
        error = base64.b64encode(json.dumps(XOAUTH2_ERROR).encode()).decode()
        await self.push(f"334 {error}")
        await self._reader.readline()  # the client's empty line acknowledging the error
        await self.push("535 5.7.8 Username and Password not accepted")
        return AuthResult(success=False, handled=True)
