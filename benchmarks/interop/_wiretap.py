"""A recording TCP proxy on 127.0.0.1 and a reader of the SMTP sessions it recorded.

The CHUNKING checks put it between asyncmail and Postfix to see what went over the wire:
which commands (BDAT or DATA, RSET), the octets of each BDAT chunk, Postfix's reply to each
command, and how many messages the client had written before Postfix's reply to an earlier
one came back (the window). Every chunk read from either side gets a number from one
counter, in the order the proxy read them, and is forwarded at once, unchanged. A client
command numbered before a server reply was written before the client could have seen that
reply.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = [
    "Command",
    "Session",
    "Transaction",
    "WireFacts",
    "WireReply",
    "Wiretap",
    "behind",
    "wire_facts",
]

_HEADER_ID = re.compile(rb"^X-Interop-Id: *(\S+)\r?$", re.MULTILINE)


@dataclass(slots=True)
class WireReply:
    code: int
    text: str
    """The reply's lines joined with `` | ``."""
    seq: int
    """When its last octet reached the proxy."""

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(slots=True)
class Command:
    verb: str
    """``MAIL``, ``RCPT``, ``BDAT``, ``DATA``, ``RSET``..., or ``CONTENT`` (after DATA's 354)."""
    line: bytes
    payload: bytes
    """A BDAT chunk's octets, or DATA content as sent (dot-stuffed, with the final dot)."""
    seq: int
    """When its last octet reached the proxy."""
    reply: WireReply | None = None


@dataclass(slots=True)
class Transaction:
    """One MAIL and what followed it, up to the last chunk or the end of the content."""

    commands: list[Command]
    rset: bool
    """RSET went right in front of it."""

    @property
    def content(self) -> bytes:
        """The message as the client sent it (DATA content with the dot-stuffing undone)."""
        chunks = [c.payload for c in self.commands if c.verb == "BDAT"]
        if chunks:
            return b"".join(chunks)
        for c in self.commands:
            if c.verb == "CONTENT":
                body = c.payload[: -len(b".\r\n")]
                return re.sub(rb"(?m)^\.", b"", body)
        return b""

    @property
    def ident(self) -> str | None:
        m = _HEADER_ID.search(self.content)
        return m.group(1).decode() if m else None

    @property
    def chunks(self) -> list[Command]:
        return [c for c in self.commands if c.verb == "BDAT"]

    @property
    def decision(self) -> WireReply | None:
        """The last reply of the transaction (to its last chunk, content or command)."""
        replies = [c.reply for c in self.commands if c.reply is not None]
        return replies[-1] if replies else None

    @property
    def mail_seq(self) -> int:
        return next(c.seq for c in self.commands if c.verb == "MAIL")


@dataclass(slots=True)
class Session:
    """One proxied connection: each chunk read, numbered, per direction."""

    client: list[tuple[int, bytes]] = field(default_factory=list)
    server: list[tuple[int, bytes]] = field(default_factory=list)

    def replies(self) -> list[WireReply]:
        """The server's replies in order, the greeting first."""
        out: list[WireReply] = []
        lines: list[str] = []
        for seq, line in _lines(self.server):
            text = line.decode("utf-8", "replace")
            lines.append(text[4:])
            if len(text) < 4 or text[3] != "-":
                code = int(text[:3]) if text[:3].isdigit() else 0
                out.append(WireReply(code, " | ".join(lines), seq))
                lines = []
        return out

    def commands(self) -> list[Command]:
        """The client's commands in order, each with its reply (BDAT octets, DATA content)."""
        replies = self.replies()[1:]  # (after the greeting)
        data, ends = _joined(self.client)
        out: list[Command] = []
        pos = 0
        while pos < len(data):
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                break
            line = data[pos:eol]
            pos = eol + 2
            verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
            payload = b""
            if verb == "BDAT":
                size = int(line.split()[1])
                payload, pos = data[pos : pos + size], pos + size
            cmd = Command(verb, line, payload, _seq_at(ends, pos - 1))
            out.append(cmd)
            if len(out) <= len(replies):
                cmd.reply = replies[len(out) - 1]
            if verb == "DATA" and cmd.reply is not None and cmd.reply.code == 354:
                end = data.find(b"\r\n.\r\n", pos - 2)  # (content may be just ".\r\n")
                stop = len(data) if end < 0 else end + 5
                content = Command("CONTENT", b"", data[pos:stop], _seq_at(ends, stop - 1))
                pos = stop
                out.append(content)
                if len(out) <= len(replies):
                    content.reply = replies[len(out) - 1]
        return out

    def transactions(self) -> list[Transaction]:
        out: list[Transaction] = []
        current: Transaction | None = None
        previous = ""
        for cmd in self.commands():
            if cmd.verb == "MAIL":
                current = Transaction([cmd], rset=previous == "RSET")
                out.append(current)
            elif cmd.verb in ("RCPT", "BDAT", "DATA", "CONTENT") and current is not None:
                current.commands.append(cmd)
            else:
                current = None
            previous = cmd.verb
        return out


def behind(transactions: list[Transaction], index: int) -> int:
    """Messages written after transaction ``index`` before its last reply reached the proxy."""
    decision = transactions[index].decision
    if decision is None:
        return 0
    return sum(1 for t in transactions[index + 1 :] if t.mail_seq < decision.seq)


@dataclass(slots=True)
class WireFacts:
    """What the proxy saw over a check's sessions."""

    sessions: int
    verbs: Counter[str]
    decisions: Counter[str]
    """Postfix's last reply of each transaction, ``code enhanced-code`` (BDAT or DATA)."""
    max_window: int
    refused: int
    refused_mid_window: int
    """Refused transactions with later messages already written when the refusal came."""
    refused_then_delivered: int
    """Refused transactions followed on the same connection by a delivered one."""
    by_ident: dict[str, list[Transaction]]

    def __str__(self) -> str:
        v = self.verbs
        return (
            f"wire: {self.sessions} sessions, BDAT={v['BDAT']} DATA={v['DATA']} RSET={v['RSET']} "
            f"MAIL={v['MAIL']}, in flight at once up to {self.max_window}, "
            f"{self.refused_mid_window}/{self.refused} refusals came with later messages "
            f"already written ({self.refused_then_delivered} followed by a delivery on the "
            f"same connection), last replies {dict(self.decisions.most_common(8))}"
        )


def wire_facts(tap: Wiretap) -> WireFacts:
    verbs: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    by_ident: dict[str, list[Transaction]] = {}
    max_window = refused = mid = then_delivered = 0
    for session in tap.sessions:
        verbs.update(c.verb for c in session.commands())
        txs = session.transactions()
        for i, tx in enumerate(txs):
            by_ident.setdefault(tx.ident or "?", []).append(tx)
            d = tx.decision
            decisions[f"{d.code} {d.text[:5]}" if d else "none"] += 1
            n = behind(txs, i)
            max_window = max(max_window, n + 1)
            if d is not None and d.code >= 400:
                refused += 1
                mid += n > 0
                then_delivered += any(
                    (t.decision is not None and t.decision.code == 250) for t in txs[i + 1 :]
                )
    return WireFacts(
        len(tap.sessions), verbs, decisions, max_window, refused, mid, then_delivered, by_ident
    )


class Wiretap:
    """A proxy from an ephemeral 127.0.0.1 port to ``target``, recording every session."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.sessions: list[Session] = []
        self._seq = itertools.count()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Wiretap:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._server.wait_closed()

    def transactions(self) -> list[tuple[int, list[Transaction]]]:
        """Each session's transactions, with the session's number."""
        return [(n, s.transactions()) for n, s in enumerate(self.sessions)]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session()
        self.sessions.append(session)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, session.client)),
            asyncio.create_task(self._pump(up_reader, writer, session.server)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log: list[tuple[int, bytes]],
    ) -> None:
        try:
            while data := await reader.read(65536):
                log.append((next(self._seq), data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def _joined(chunks: list[tuple[int, bytes]]) -> tuple[bytes, list[tuple[int, int]]]:
    """The chunks as one byte string, and (end offset, seq) of each."""
    ends, total = [], 0
    for seq, data in chunks:
        total += len(data)
        ends.append((total, seq))
    return b"".join(data for _, data in chunks), ends


def _seq_at(ends: list[tuple[int, int]], offset: int) -> int:
    """The number of the chunk that holds the octet at ``offset``."""
    i = bisect.bisect_right(ends, offset, key=lambda e: e[0])
    return ends[min(i, len(ends) - 1)][1] if ends else -1


def _lines(chunks: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    data, ends = _joined(chunks)
    out, pos = [], 0
    while (eol := data.find(b"\r\n", pos)) >= 0:
        out.append((_seq_at(ends, eol + 1), data[pos:eol]))
        pos = eol + 2
    return out
