"""A minimal SMTP sink that offers CHUNKING, for the BDAT scenarios of benchmarks/run.py.

Postfix's ``smtp-sink`` does not offer CHUNKING (RFC 3030), so the scenarios that measure
BDAT run against this instead, peers included (they send DATA to it). It is written for the
benchmark and kept minimal: it accepts every command in a transaction, reads DATA content to
the final dot and BDAT chunks by their size, throws the content away and counts messages. It
offers PIPELINING, CHUNKING, 8BITMIME, SIZE and ENHANCEDSTATUSCODES, with no TLS and no AUTH.

Like ``smtp-sink -c`` it prints ``mesg=N`` (messages so far) to stdout whenever a session
ends, which is how run.py counts what arrived.

    python benchmarks/_chunking_sink.py 127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import cast

EHLO = (
    b"250-chunking-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 104857600\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
)
REPLIES = {
    b"MAIL": b"250 2.1.0 Ok\r\n",
    b"RCPT": b"250 2.1.5 Ok\r\n",
    b"RSET": b"250 2.0.0 Ok\r\n",
    b"NOOP": b"250 2.0.0 Ok\r\n",
    b"HELO": b"250 chunking-sink\r\n",
    b"EHLO": EHLO,
    b"DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
}
QUEUED = b"250 2.0.0 Ok: queued\r\n"

messages = 0


class SinkProtocol(asyncio.Protocol):
    """One session: commands line by line, DATA to the dot, BDAT by octet count."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.in_data = False
        self.chunk_left = 0  # octets of the current BDAT chunk still to come
        self.chunk_last = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is no subclass)
        self.transport.write(b"220 chunking-sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        self._consume(out)
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _consume(self, out: list[bytes]) -> None:
        global messages
        buf = self.buffer
        while buf:
            if self.chunk_left:
                take = min(self.chunk_left, len(buf))
                del buf[:take]
                self.chunk_left -= take
                if self.chunk_left:
                    return
                out.append(self._chunk_done())
                continue
            if self.in_data:
                end = buf.find(b"\r\n.\r\n")
                if end < 0:
                    if len(buf) > 4:
                        del buf[: len(buf) - 4]  # keep a possible start of the end marker
                    return
                del buf[: end + 5]
                self.in_data = False
                messages += 1
                out.append(QUEUED)
                continue
            end = buf.find(b"\r\n")
            if end < 0:
                return
            line = bytes(buf[:end])
            del buf[: end + 2]
            out.append(self._command(line))

    def _command(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"BDAT":
            words = line.split()
            self.chunk_left = int(words[1])
            self.chunk_last = len(words) > 2
            if self.chunk_left:
                return b""  # the reply comes once the octets are read
            return self._chunk_done()
        if verb == b"DATA":
            self.in_data = True
        elif verb == b"QUIT":
            if self.transport is not None:
                self.transport.write(b"221 2.0.0 Bye\r\n")
                self.transport.close()
            return b""
        return REPLIES.get(verb, b"502 5.5.2 Error: command not recognized\r\n")

    def _chunk_done(self) -> bytes:
        global messages
        if self.chunk_last:
            messages += 1
            return QUEUED
        return b"250 2.0.0 Ok: chunk\r\n"

    def connection_lost(self, exc: Exception | None) -> None:
        print(f"mesg={messages}", flush=True)


async def main(where: str) -> None:
    host, _, port = where.rpartition(":")
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, host, int(port), backlog=1000)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(sys.argv[1]))
