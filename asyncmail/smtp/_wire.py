"""The byte level of an established SMTP session: writes, reply parsing, flow control.

aiosmtplib opens the session (connect, TLS, EHLO, AUTH); then ``Wire`` takes over the
transport so transactions can be pipelined (RFC 2920): many commands in one write, their
replies read back in order. ``Wire`` knows whether everything written has left the
process, which is how a broken connection after the final dot (UNKNOWN) is told apart
from one that broke while the data was still queued here (not delivered).

When the server closes its side (FIN) the session is over: whatever is still queued here is
dropped at once, never sent after the fact. (A server that half-closes but keeps reading
would otherwise receive the rest of the message, final dot included, and store it while the
client had already counted it as not delivered.)

Over TLS the transport's flow control only sees the TLS layer's own buffer; the encrypted
bytes wait in the socket transport below it, out of sight. So content goes out in chunks,
each written only once the previous one has left the TLS layer: at most one chunk plus the
socket transport's buffer is ever unaccounted for, and a break in the middle of a large
body is seen as one before the final dot.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .._exceptions import Reply
from ._tap import TAP, client_lines, content_line, server_lines

__all__ = ["Wire", "WireClosed"]

#: Content is written in pieces of this size (one piece for most messages).
CHUNK = 64 * 1024
MAX_REPLY_LINE = 8192
MAX_REPLY_LINES = 256
_SEPARATORS = (b" ", b"-", b"\r", b"")

#: One-line replies already parsed, by their raw line: most replies repeat word for word
#: (``250 2.1.5 Ok``, ``354 End data...``), and a Reply is immutable, so one object serves
#: them all. Parsing a line and building a frozen Reply costs more than the whole lookup.
#: Bounded: emptied when full (the unique ``250 ... queued as X`` lines pass through).
_KNOWN: dict[bytes, Reply] = {}
_KNOWN_SIZE = 256
_KNOWN_LINE = 200
#: A read's deadline this close counts as reached (the loop may run a timer this early).
_EARLY = 0.001


class WireClosed(Exception):
    """The connection is gone, or the server sent something that is not a reply.

    Attributes:
        garbled: The server sent something that is not an SMTP reply.
    """

    def __init__(self, why: str, *, garbled: bool = False) -> None:
        super().__init__(why)
        self.garbled = garbled


class Wire(asyncio.Protocol):
    """Reads SMTP replies into a queue and writes commands, over a taken-over transport."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._loop = asyncio.get_running_loop()
        self._transport = transport
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed: str | None = None
        self._garbled = False
        self._aborted = False
        self._paused = False
        self._flushed: asyncio.Future[None] | None = None
        # read_reply's deadline (loop time; None: no limit) and the one timer that checks it
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._tap = TAP.get()  # (None but under ``send -v``)
        # pause_writing fires whenever bytes are queued in this process and resume_writing
        # when all of them left, so flush() is exact. A socket transport pauses above
        # high-water, the TLS one at or above it: high=1 there, or it would pause for
        # good with nothing queued.
        tls = transport.get_extra_info("ssl_object") is not None
        transport.set_write_buffer_limits(high=1 if tls else 0, low=0)
        transport.set_protocol(self)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        if buf or data[-1:] != b"\n":  # a line cut between reads: gather it in the buffer
            buf += data
            end = buf.rfind(b"\n")
            if end < 0:
                if len(buf) > MAX_REPLY_LINE:
                    self._protocol_error("reply line too long")
                return
            data = bytes(buf[: end + 1])
            del buf[: end + 1]
            if len(buf) > MAX_REPLY_LINE:
                self._protocol_error("reply line too long")
                return
        self._parse(data)  # (most reads end with a whole reply: no copy through the buffer)

    def eof_received(self) -> bool:
        # Drop what is still queued here: it must not reach a server we count as gone.
        self._lose("the server closed the connection")
        self.abort()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost: {exc}" if exc else "connection lost")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)

    # -- state ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """True once the connection is lost or being closed."""
        return self._closed is not None or self._transport.is_closing()

    @property
    def all_sent(self) -> bool:
        """True when nothing written is still queued inside this process."""
        return not self._paused

    @property
    def has_unread(self) -> bool:
        """True when the server sent something nobody asked for (or a reply is unread)."""
        return bool(self._replies or self._buffer or self._lines)

    def _lose(self, why: str) -> None:
        if self._closed is None:
            self._closed = why
        self._disarm()
        self._wake()
        if self._flushed is not None and not self._flushed.done():
            self._flushed.set_exception(WireClosed(why))
            self._flushed.exception()  # mark retrieved; flush() re-raises

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _parse(self, complete: bytes) -> None:
        """Take the replies in ``complete``, whole lines."""
        replies = self._replies
        before = len(replies)
        for line in complete.split(b"\n")[:-1]:
            reply = None if self._lines else _KNOWN.get(line)
            if reply is None:
                if not self._take_line(line):
                    return  # (not a reply: the wire is closed)
                continue
            replies.append(reply)  # a one-line reply seen before: the same Reply
            if self._tap is not None:
                self._show(reply)
        if len(replies) > before:
            self._wake()

    def _take_line(self, line: bytes) -> bool:
        """Parse one reply line; False when it is not one (the wire is then closed)."""
        sep = line[3:4]
        if not line[:3].isdigit() or sep not in _SEPARATORS:
            self._protocol_error(f"malformed reply line {line[:80]!r}")
            return False
        text = line[4:].rstrip(b"\r").decode("utf-8", "replace")
        if sep == b"-":
            self._lines.append(text)
            if len(self._lines) > MAX_REPLY_LINES:
                self._protocol_error("reply has too many lines")
                return False
            return True
        if self._lines:
            self._lines.append(text)
            reply = Reply(int(line[:3]), "\n".join(self._lines))
            self._lines = []
        else:
            reply = Reply(int(line[:3]), text)
            if len(line) <= _KNOWN_LINE:
                if len(_KNOWN) >= _KNOWN_SIZE:
                    _KNOWN.clear()
                _KNOWN[line] = reply
        self._replies.append(reply)
        if self._tap is not None:
            self._show(reply)
        return True

    def _show(self, reply: Reply) -> None:
        """Show a reply in the tap (``send -v``)."""
        assert self._tap is not None
        for shown in server_lines(reply.code, reply.text):
            self._tap("S", shown)

    def _protocol_error(self, why: str) -> None:
        self._buffer.clear()
        if self._closed is None:
            self._garbled = True
        self._lose(why)
        self.abort()

    # -- I/O ------------------------------------------------------------------------------

    def write(self, data: bytes | memoryview, *, content: bool = False) -> None:
        """Queue bytes for sending (``content``: message content, never shown in a tap).

        Raises:
            WireClosed: The connection is already gone.
        """
        if self.is_closed:
            raise WireClosed(self._closed or "connection closing")
        if self._tap is not None and not content:
            for shown in client_lines(data):
                self._tap("C", shown)
        self._transport.write(data)

    async def flush(self, limit: float | None = None) -> None:
        """Wait until everything written has been handed to the kernel.

        Raises:
            WireClosed: The connection broke first.
            TimeoutError: Not all of it left within ``limit`` seconds.
        """
        if not self._paused:
            return
        if self._closed is not None:
            raise WireClosed(self._closed)
        self._flushed = flushed = self._loop.create_future()
        timer = None if limit is None else self._loop.call_later(limit, self._stall, flushed)
        try:
            await flushed
        finally:
            self._flushed = None
            if timer is not None:
                timer.cancel()

    @staticmethod
    def _stall(flushed: asyncio.Future[None]) -> None:
        if not flushed.done():
            flushed.set_exception(TimeoutError("the content stopped moving"))

    async def send_content(self, data: bytes | memoryview, limit: float | None) -> None:
        """Write message content and wait until it has left the process.

        Large content goes in ``CHUNK`` pieces, each after the previous one left, so a
        stall or break is noticed where it happens, even over TLS. ``limit`` bounds the
        wait for each piece: a transfer that makes no progress for that long times out.

        Raises:
            WireClosed: The connection broke before all of it left.
            TimeoutError: A piece did not leave within ``limit``.
        """
        if len(data) <= CHUNK:  # most messages: one write
            if not self.write_content(data):
                await self.flush(limit)
            return
        if self._tap is not None:
            self._tap("C", content_line(len(data)))
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            self.write(view[start : start + CHUNK], content=True)
            await self.flush(limit)

    def write_content(self, data: bytes | memoryview) -> bool:
        """Write message content of up to ``CHUNK`` bytes in one piece, with no coroutine to
        make (most messages): ``send_content`` less the wait.

        Returns:
            False when the transport's buffer is over its high-water mark (writing paused):
            then ``flush`` waits until it drains, as ``send_content`` does.

        Raises:
            WireClosed: The connection is already gone.
        """
        if self._tap is not None:
            self._tap("C", content_line(len(data)))
        if self._closed is not None or self._transport.is_closing():  # (``write``, inlined)
            raise WireClosed(self._closed or "connection closing")
        self._transport.write(data)
        return not self._paused

    def ready_reply(self) -> Reply | None:
        """The next reply if it is already here, else None: no coroutine to run, which is
        what most replies to a pipelined group cost (they arrive together)."""
        return self._replies.popleft() if self._replies else None

    async def read_reply(self, limit: float | None = None) -> Reply:
        """Return the next reply, waiting for it up to ``limit`` seconds.

        One timer per connection, armed lazily and left running between reads: each read
        only moves the deadline (a float), and the timer, when it fires, re-arms itself for
        the current deadline unless that has passed. A timer armed and cancelled per read
        costs more than the rest of this method; this runs for nearly every message.

        Raises:
            WireClosed: The connection broke before a complete reply arrived.
            TimeoutError: No complete reply within ``limit``.
        """
        if self._replies:
            return self._replies.popleft()
        loop = self._loop
        if limit is None:
            self._deadline = None
        else:
            self._deadline = deadline = loop.time() + limit
            if self._timer is None or self._timer_at > deadline:
                self._arm(deadline)
        try:
            while not self._replies:
                if self._closed is not None:
                    raise WireClosed(self._closed, garbled=self._garbled)
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        finally:
            self._deadline = None
        return self._replies.popleft()

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        waiter = self._waiter
        if deadline is None or waiter is None or waiter.done():
            return  # no read waits: the next one arms a timer again
        if deadline - self._loop.time() > _EARLY:  # a later read moved the deadline on
            self._arm(deadline)
            return
        waiter.set_exception(TimeoutError("no reply in time"))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        """Close the transport now, without QUIT."""
        if self._closed is None:
            self._closed = "closed by asyncmail"
        self._disarm()
        self._transport.close()

    def abort(self) -> None:
        """Drop the connection at once, discarding unsent data. Safe to call again."""
        if self._closed is None:
            self._closed = "aborted by asyncmail"
        self._disarm()
        if not self._aborted:
            self._aborted = True
            self._transport.abort()
