"""A tiny SMTP server for faults no well-behaved server makes: half-closes, extra replies, garbage.

Each connection runs ``ScriptedServer.session``; a test overrides hooks (``greeting``,
``on_rcpt``, ``after_dot``...) to misbehave at one exact point. Messages are stored when
their final dot is read, as a real server would, whatever the client believes, unless
``dot_reply`` refuses them (4xx or 5xx).

With ``chunking`` it offers CHUNKING (RFC 3030) too and takes BDAT: the hooks then apply to
the chunks' octets (``mid_data``) and to the LAST chunk (``dot_reply``, ``after_dot``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trustme

Hook = Callable[["Conn"], Awaitable[bool]]


@dataclass
class Stored:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class Conn:
    """One client connection as the script sees it."""

    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: int = 0  # content bytes read so far in the current DATA or BDAT chunks
    rcpts: list[str] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)  # BDAT chunks before the LAST
    closing: bool = False  # a 421 was said: read nothing more

    def say(self, *lines: str) -> None:
        self.writer.write(b"".join(line.encode() + b"\r\n" for line in lines))
        self.closing = self.closing or lines[-1].startswith("421")


class ScriptedServer:
    """An SMTP server on 127.0.0.1 whose every reply a test can replace."""

    def __init__(
        self,
        *,
        extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME"),
        tls: bool = False,
        chunking: bool = False,
    ) -> None:
        self.extensions = (*extensions, "CHUNKING") if chunking else extensions
        self.messages: list[Stored] = []
        self.connections = 0
        self.commands: list[str] = []
        self.ca = trustme.CA() if tls else None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        # hooks: return True when they handled the step themselves
        self.greeting: Callable[[Conn], str] = lambda c: "220 scripted ESMTP"
        self.rcpt_reply: Callable[[Conn, str], str] = lambda c, rcpt: "250 2.1.5 OK"
        self.mid_data: Callable[[Conn], Awaitable[None]] | None = None
        self.dot_reply: Callable[[Conn], str] = lambda c: "250 2.0.0 stored"
        self.no_rcpt_reply: Callable[[Conn], str] = lambda c: "503 5.5.1 no valid recipients"
        self.after_dot: Callable[[Conn], Awaitable[bool]] | None = None

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        assert self.ca is not None
        self.ca.configure_trust(context)
        return context

    async def __aenter__(self) -> ScriptedServer:
        context = None
        if self.ca is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert("127.0.0.1").configure_cert(context)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        conn = Conn(self.connections, reader, writer)
        try:
            await self.session(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    async def session(self, conn: Conn) -> None:
        conn.say(self.greeting(conn))
        sender = ""
        # (after a 421 the server reads nothing more, as RFC 5321 says)
        while not conn.closing and (line := await conn.reader.readline()):
            command = line.decode().rstrip("\r\n")
            self.commands.append(command)
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                conn.say(
                    *(f"250-{e}" for e in ("scripted", *self.extensions[:-1])),
                    f"250 {self.extensions[-1] if self.extensions else 'OK'}",
                )
            elif verb == "MAIL":
                sender, conn.rcpts = command[10:].split(">")[0].lstrip("<"), []
                conn.received, conn.parts = 0, []
                conn.say("250 2.1.0 OK")
            elif verb == "RCPT":
                rcpt = command[8:].split(">")[0].lstrip("<")
                reply = self.rcpt_reply(conn, rcpt)
                if reply.startswith("2"):
                    conn.rcpts.append(rcpt)
                conn.say(reply)
            elif verb == "DATA":
                conn.say("354 go ahead")
                await self._data(conn, sender)
                if self.after_dot is not None and await self.after_dot(conn):
                    return
            elif verb == "BDAT" and "CHUNKING" in self.extensions:
                last = await self._bdat(conn, sender, command)
                if last and self.after_dot is not None and await self.after_dot(conn):
                    return
            elif verb == "RSET":
                conn.rcpts, conn.received, conn.parts = [], 0, []
                conn.say("250 OK")
            elif verb == "QUIT":
                conn.say("221 bye")
                await conn.writer.drain()
                return
            else:
                conn.say("250 OK")
            await conn.writer.drain()

    async def _data(self, conn: Conn, sender: str) -> None:
        chunks: list[bytes] = []
        conn.received = 0
        while True:
            line = await conn.reader.readuntil(b"\n")
            if line == b".\r\n":
                break
            chunks.append(line)
            conn.received += len(line)
            if self.mid_data is not None:
                await self.mid_data(conn)
        self._store(conn, Stored(sender, list(conn.rcpts), b"".join(chunks)))

    async def _bdat(self, conn: Conn, sender: str, command: str) -> bool:
        """Read one chunk and answer it; True when it was a LAST chunk that was stored."""
        words = command.split()
        size, last = int(words[1]), len(words) > 2
        left = size
        while left:
            piece = await conn.reader.readexactly(min(left, 64 * 1024))
            left -= len(piece)
            conn.parts.append(piece)
            conn.received += len(piece)
            if self.mid_data is not None:
                await self.mid_data(conn)
        if not conn.rcpts:
            conn.received, conn.parts = 0, []
            conn.say(self.no_rcpt_reply(conn))
            return False
        if not last:
            conn.say(f"250 2.0.0 {size} octets received")
            return False
        self._store(conn, Stored(sender, list(conn.rcpts), b"".join(conn.parts)))
        conn.received, conn.parts = 0, []
        return True

    def _store(self, conn: Conn, message: Stored) -> None:
        """Store a message whose content ended, unless ``dot_reply`` refuses it; reply."""
        reply = self.dot_reply(conn)
        if not reply.startswith(("4", "5")):
            self.messages.append(message)
        conn.say(reply)

    def copies(self, recipient: str) -> int:
        return sum(recipient in m.recipients for m in self.messages)
