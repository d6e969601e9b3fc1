"""check.py group ``failover``: several relays, one closed, one answering 421.

A closed loopback port, a loopback server that answers 421 at the greeting, and Postfix
ports 2532/2533, whose log names (``postfix/p2532``) tell which relay took each message.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import socket
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _checks_shared import MailBox, Record, make_mailer, make_message, new_id

from asyncmail import DeliveryError, Mailer, RetryPolicy


class Greeting421:
    """A loopback server that answers every connection ``421 4.3.2 try later`` and closes."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Greeting421:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.write(b"421 4.3.2 try later (interop)\r\n")
        try:
            await writer.drain()
        finally:
            writer.close()


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def ports_by_message_id(maillog: Path) -> dict[str, str]:
    """``{message-id: smtpd log name}`` joined through the queue id (p2532, p2533, smtpd)."""
    try:
        text = maillog.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    by_qid: dict[str, str] = {}
    out: dict[str, str] = {}
    for m in re.finditer(r"postfix/(?:(p\d+)/)?smtpd\[\d+\]: ([0-9A-F]+): client=", text):
        by_qid[m.group(2)] = m.group(1) or "smtpd"
    for m in re.finditer(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<([^>]*)>", text):
        if m.group(1) in by_qid:
            out[m.group(2)] = by_qid[m.group(1)]
    return out


def _accepts_relay_list() -> bool:
    return "strategy" in inspect.signature(Mailer).parameters


async def _sent_ports(
    maillog: Path, message_ids: Sequence[str], limit: float = 10.0
) -> Counter[str]:
    ids = [mid.strip("<>") for mid in message_ids]
    deadline = time.monotonic() + limit
    while True:
        seen = ports_by_message_id(maillog)
        if all(i in seen for i in ids) or time.monotonic() > deadline:
            return Counter(seen.get(i, "missing") for i in ids)
        await asyncio.sleep(0.2)


async def run_failover(prof: dict[str, Any], box: MailBox, record: Record, maillog: Path) -> None:
    good, other = prof.get("relay_a"), prof.get("relay_b")
    if not good or not other:
        record("failover", None, "profile has no relay ports")
        return
    plain = "?tls=none"
    closed = closed_port()
    async with Greeting421() as busy:
        # harness: each relay alone, through today's single-URL Mailer
        one = RetryPolicy(attempts=1)
        for label, port, want in (
            ("closed port", closed, "ConnectError"),
            ("421 greeting", busy.port, "TemporaryFailure"),
        ):
            try:
                async with Mailer(f"smtp://127.0.0.1:{port}{plain}", retry=one) as mailer:
                    r = await mailer.send(make_message(new_id("fo-harness")))
                record(f"failover harness: {label}", False, f"unexpectedly {r!r}")
            except DeliveryError as exc:
                record(
                    f"failover harness: {label}",
                    type(exc).__name__ == want,
                    f"{type(exc).__name__} code={exc.code} {exc.text!r}",
                )
        for port in (good, other):
            ident = new_id("fo-harness")
            async with Mailer(f"smtp://127.0.0.1:{port}{plain}") as mailer:
                r = await mailer.send(make_message(ident))
            counts = await box.wait({ident: 1})
            where = await _sent_ports(maillog, [r.message_id or ""])
            record(
                f"failover harness: relay {port} alone, log names it",
                r.ok and counts[ident] == 1 and where == Counter({f"p{port}": 1}),
                f"copies={counts[ident]} log={dict(where)}",
            )

        if not _accepts_relay_list():
            record("failover", None, "(asyncmail Mailer takes no relay list/strategy= yet)")
            return

        urls = [f"smtp://127.0.0.1:{p}{plain}" for p in (closed, busy.port, good)]
        pairs = [(ident, make_message(ident)) for ident in (new_id("fo") for _ in range(20))]
        before = busy.connections
        results: list[Any] = []
        async with make_mailer(urls, strategy="failover", retry_period=60.0) as mailer:
            async for r in mailer.send_many(m for _, m in pairs):
                results.append(r)
        counts = await box.wait({i: 1 for i, _ in pairs})
        relays = Counter(str(getattr(r, "relay", None)) for r in results)
        where = await _sent_ports(maillog, [r.message_id or "" for r in results])
        once = sum(1 for i, _ in pairs if counts[i] == 1)
        record(
            "failover [closed, 421, good] x20",
            all(r.ok for r in results)
            and once == 20
            and all(re.search(rf"\b{good}\b", k) for k in relays)
            and where == Counter({f"p{good}": 20}),
            f"exactly_once={once}/20 relay={dict(relays)} log={dict(where)} "
            f"421_connections={busy.connections - before}",
        )

    # failover prefers the first relay while it works
    pairs = [(ident, make_message(ident)) for ident in (new_id("fo1") for _ in range(10))]
    urls = [f"smtp://127.0.0.1:{p}{plain}" for p in (good, other)]
    async with make_mailer(urls, strategy="failover") as mailer:
        results = [await mailer.send(m) for _, m in pairs]
    counts = await box.wait({i: 1 for i, _ in pairs})
    where = await _sent_ports(maillog, [r.message_id or "" for r in results])
    record(
        "failover [good, good2]: all on the first",
        all(counts[i] == 1 for i, _ in pairs) and where == Counter({f"p{good}": 10}),
        f"log={dict(where)}",
    )

    # round-robin spreads the messages over both
    pairs = [(ident, make_message(ident)) for ident in (new_id("rr") for _ in range(40))]
    results = []
    async with make_mailer(urls, strategy="round-robin") as mailer:
        async for r in mailer.send_many(m for _, m in pairs):
            results.append(r)
    counts = await box.wait({i: 1 for i, _ in pairs})
    where = await _sent_ports(maillog, [r.message_id or "" for r in results])
    relays = Counter(str(getattr(r, "relay", None)) for r in results)
    once = sum(1 for i, _ in pairs if counts[i] == 1)
    record(
        "round-robin [good, good2] x40",
        once == 40
        and set(where) == {f"p{good}", f"p{other}"}
        and min(where.values()) >= 10,  # "spreads": each relay takes at least a quarter
        f"exactly_once={once}/40 log={dict(where)} relay={dict(relays)}",
    )
