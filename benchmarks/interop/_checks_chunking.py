"""check.py group ``chunking``: BDAT (RFC 3030) windows through real Postfix.

Port 2534 (logs as ``postfix/p2534``) refuses the sender ``reject-sender@`` at MAIL, every
``reject-*`` recipient at RCPT (550 5.1.1) and ``tempfail-*`` (450 4.2.0), and a message with
``X-Interop-Verdict: reject`` at the end of its content (header_checks, 550 5.7.1). The
checks run through ``_wiretap.Wiretap``, a recording proxy, so they can show what went over
the wire (BDAT or DATA, each chunk, each reply) and how many messages the client had written
before Postfix's reply to an earlier one came back. Postfix's own ``disconnect from`` lines
(``mail=8 rcpt=8 bdat=8 rset=7 ...``) count the sessions and commands on its side.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _checks_shared import MailBox, Record, new_id, raw_copies
from _wiretap import WireFacts, Wiretap, behind, wire_facts

from asyncmail import (
    Attachment,
    DeliveryError,
    Mailer,
    Message,
    Phase,
    RetryPolicy,
    SendResult,
    Status,
)

DEFAULT_MAX_MESSAGES_PER_CONNECTION = 100  # (Mailer's max_messages_per_connection)
SENDER = "Interop <sender@example.com>"
REFUSED_KINDS = ("norcpt", "sender", "content", "tempfail", "bignorcpt")
# kind -> (code, enhanced code, words of Postfix's text) of the error a FAILED message carries
EXPECTED_ERROR = {
    "norcpt": (550, "5.1.1", "Recipient address rejected"),
    "bignorcpt": (550, "5.1.1", "Recipient address rejected"),
    "sender": (553, "5.7.1", "Sender address rejected"),
    "content": (550, "5.7.1", "content refused (interop test)"),
    "tempfail": (450, "4.2.0", "try again later"),
}
DOT_BODY = ".\n..two dots\n.\n. a dot and a space\nlast line .\n..\n"


@dataclass(slots=True)
class Postfix:
    """Postfix's side of a check: the smtpd log lines of one port since ``start``."""

    maillog: Path
    name: str
    start: int

    @classmethod
    def since_now(cls, maillog: Path, name: str) -> Postfix:
        return cls(maillog, name, maillog.stat().st_size if maillog.exists() else 0)

    def lines(self, needle: str) -> list[str]:
        try:
            with self.maillog.open("rb") as f:
                f.seek(self.start)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return []
        tag = f"postfix/{self.name}/smtpd["
        return [line for line in text.splitlines() if tag in line and needle in line]

    async def sessions(self, limit: float = 15.0) -> list[Counter[str]]:
        """Each session's ``disconnect from`` counts (``rcpt`` accepted, ``rcpt_all`` sent)."""
        deadline = time.monotonic() + limit
        while True:  # (postlogd writes the log a little later)
            connects = len(self.lines("]: connect from"))
            ends = self.lines("]: disconnect from")
            if (connects and len(ends) >= connects) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        out = []
        for line in ends:
            counts: Counter[str] = Counter()
            for name, ok, total in re.findall(r" (\w+)=(\d+)(?:/(\d+))?", line):
                counts[name] += int(ok)
                counts[f"{name}_all"] += int(total or ok)
            out.append(counts)
        return out


def summed(sessions: list[Counter[str]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in sessions:
        total.update(s)
    return total


def message(ident: str, kind: str, n: int = 0) -> Message:
    """A message of ``kind`` (good, partial or one of REFUSED_KINDS) carrying ``ident``."""
    to: list[str] = [f"ok-{n}@example.net"]
    sender, headers = SENDER, {"X-Interop-Id": ident}
    attachments: list[Attachment] = []
    if kind == "partial":
        to = [f"ok-{n}@example.net", f"reject-{n}@example.net"]
    elif kind in ("norcpt", "bignorcpt"):
        to = [f"reject-a{n}@example.net", f"reject-b{n}@example.net"]
    elif kind == "sender":
        sender = "reject-sender@example.com"
    elif kind == "content":
        headers["X-Interop-Verdict"] = "reject"
    elif kind == "tempfail":
        to = [f"tempfail-{n}@example.net"]
    if kind == "bignorcpt":  # several chunks, all refused after the first
        attachments = [Attachment(filename="big.bin", content=os.urandom(2 * 1024 * 1024))]
    return Message(
        sender=sender,
        to=to,
        subject=f"chunking {kind} {n}",
        text=f"{kind} message {n}\n" + DOT_BODY,
        headers=headers,
        attachments=attachments,
    )


def mix_kinds(n: int) -> list[str]:
    """Refusals spread through the stream: in each 8, 3 refused and 1 with a recipient refused.

    Every 50th is a temporary refusal instead, and 3 are 2 MiB with every recipient refused.
    """
    cycle = ["good", "norcpt", "good", "partial", "sender", "good", "content", "good"]
    kinds = [cycle[i % len(cycle)] for i in range(n)]
    for i in range(25, n, 50):
        kinds[i] = "tempfail"
    for i in range(n // 4, n, max(n // 4, 1)):
        kinds[i] = "bignorcpt"
    return kinds


def wrong(kind: str, r: SendResult[Any], copies: int, *, attempts: int = 1) -> str | None:
    """Why ``r`` is not what Postfix's answer to a message of ``kind`` must give, or None.

    ``attempts``: at most this many transactions for a message refused for good (1 unless
    the server also closed the session under it with 421).
    """
    if kind in ("good", "partial"):
        if r.status is not Status.DELIVERED or copies != 1:
            return f"{r.status.value} copies={copies} error={r.error}"
        if kind == "partial":
            ref = next(iter(r.refused.values()), None)
            if len(r.refused) != 1 or not isinstance(ref, DeliveryError) or ref.code != 550:
                return f"refused={ {k: str(v) for k, v in r.refused.items()} }"
        return None
    code, enhanced, words = EXPECTED_ERROR[kind]
    e = r.error
    if r.status is not Status.FAILED or copies != 0 or not isinstance(e, DeliveryError):
        return f"{r.status.value} copies={copies} error={e!r}"
    if e.code != code or e.enhanced_code != enhanced or words not in e.text:
        return f"error {e.code} {e.enhanced_code} {e.text!r} phase={e.phase}"
    if kind == "sender" and e.phase is not Phase.MAIL:
        return f"phase={e.phase}"
    if kind == "tempfail" and r.attempts != 2:
        return f"attempts={r.attempts}"
    if kind != "tempfail" and not 1 <= r.attempts <= attempts:
        return f"attempts={r.attempts}"
    return None


@dataclass(slots=True)
class Outcome:
    """What came of a stream of messages: per kind, on the wire, and in Postfix's log."""

    problems: dict[str, list[str]]
    statuses: Counter[str]
    wire: WireFacts
    postfix: Counter[str]
    """The ``disconnect from`` counts of all sessions, added up."""
    sessions: int
    """Postfix's sessions (``disconnect from`` lines)."""
    opened: int
    """Connections the Mailer's pool opened."""
    elapsed: float
    most: int
    """The most transactions (MAIL commands) one session carried."""

    @property
    def sessions_ok(self) -> bool:
        """One Postfix session per pool connection, each ended by QUIT, none over 100 MAILs."""
        quits = self.postfix["quit"]
        same = self.wire.sessions == self.sessions == self.opened == quits
        return same and self.most <= DEFAULT_MAX_MESSAGES_PER_CONNECTION

    def postfix_summary(self) -> str:
        c = self.postfix
        keys = ("mail", "rcpt", "bdat", "data", "rset", "quit")
        counts = " ".join(f"{k}={c[k]}/{c[k + '_all']}" for k in keys)
        return (
            f"postfix: {self.sessions} sessions (at most {self.most} MAILs in one), {counts} "
            f"| pool opened {self.opened}"
        )

    def wrong(self) -> str:
        first = next((f"e.g. {k} {v[0]}" for k, v in self.problems.items()), "")
        return f"wrong: { {k: len(v) for k, v in self.problems.items()} } {first}"


async def _stream(port: int, kinds: list[str], query: str, box: MailBox, maillog: Path) -> Outcome:
    """Send one message per kind through a wiretap to ``port``; what came of each kind."""
    pairs = [(new_id(f"bdat-{kind}"), kind) for kind in kinds]
    messages = [message(ident, kind, n) for n, (ident, kind) in enumerate(pairs)]
    kind_of = {id(m): p for m, p in zip(messages, pairs, strict=True)}
    results: dict[str, SendResult[Message]] = {}
    log = Postfix.since_now(maillog, "p2534")
    async with Wiretap(port) as tap:
        url = f"smtp://127.0.0.1:{tap.port}{'?' + query if query else ''}"
        retry = RetryPolicy(attempts=2, base_delay=0.1)
        async with Mailer(url, max_connections=10, chunking_window=8, retry=retry) as mailer:
            t0 = time.monotonic()
            async for r in mailer.send_many(messages):
                results[kind_of[id(r.message)][0]] = r
            elapsed = time.monotonic() - t0
            stats = mailer.statistics()
    stored = {ident: 1 for ident, kind in pairs if kind in ("good", "partial")}
    counts = await box.wait(stored, limit=180)
    problems: dict[str, list[str]] = {}
    statuses: Counter[str] = Counter()
    for ident, kind in pairs:
        got = results.get(ident)
        why = "no result" if got is None else wrong(kind, got, counts[ident])
        statuses[f"{kind}:{got.status.value if got else None}"] += 1
        if why:
            problems.setdefault(kind, []).append(f"{ident}: {why}")
    sessions = await log.sessions()
    return Outcome(
        problems,
        statuses,
        wire_facts(tap),
        summed(sessions),
        len(sessions),
        stats.pool.opened,
        elapsed,
        max((s["mail_all"] for s in sessions), default=0),
    )


async def run_chunking(
    prof: dict[str, Any], box: MailBox, record: Record, maillog: Path, many: int
) -> None:
    port = prof.get("chunking")
    if not port:
        record("chunking", None, "profile has no CHUNKING port")
        return
    await _harness(port, box, record)
    await _transcript(prof, record, maillog)
    await _many(port, box, record, maillog, many)
    await _mix(port, box, record, maillog, many, query="")
    await _mix(port, box, record, maillog, many, query="chunking=no")
    await _big_and_dots(port, box, record)
    await _error_limit(port, box, record, maillog)


async def _harness(port: int, box: MailBox, record: Record) -> None:
    """Pipelined BDAT written by hand through the wiretap: Postfix's answers, and the parser."""
    ids = [new_id("bdat-harness") for _ in range(5)]

    def tx(ident: str, sender: str, rcpt: str, *, rset: bool, verdict: bool = False) -> bytes:
        head = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: harness\r\nX-Interop-Id: {ident}\r\n"
        head += "X-Interop-Verdict: reject\r\n" if verdict else ""
        chunks = [head.encode(), b"\r\n.\r\n..dots, not stuffed\r\n"]
        out = b"RSET\r\n" if rset else b""
        out += f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode()
        out += b"BDAT %d\r\n%s" % (len(chunks[0]), chunks[0])
        return out + b"BDAT %d LAST\r\n%s" % (len(chunks[1]), chunks[1])

    block = b"".join(
        [
            tx(ids[0], "a@example.com", "reject-x@example.net", rset=False),
            tx(ids[1], "a@example.com", "ok@example.net", rset=False),  # (no RSET in front)
            tx(ids[2], "reject-sender@example.com", "ok@example.net", rset=True),
            tx(ids[3], "a@example.com", "ok@example.net", rset=True, verdict=True),
            tx(ids[4], "a@example.com", "ok@example.net", rset=True),
        ]
    )
    async with Wiretap(port) as tap:
        reader, writer = await asyncio.open_connection("127.0.0.1", tap.port)
        await reader.readline()
        writer.write(b"EHLO harness.example.com\r\n")
        ehlo = line = b""
        while line[3:4] != b" ":
            line = await reader.readline()
            ehlo += line
        writer.write(block + b"QUIT\r\n")
        while await reader.read(65536):
            pass
        writer.close()
    txs = tap.sessions[0].transactions()
    got = [[str(c.reply) for c in t.commands] for t in txs]
    want = [
        ["250", "550", "554", "551"],  # no valid recipients; the next chunk discarded
        ["250", "250", "250", "250"],  # accepted although no RSET came after the refusal
        ["553", "503", "503", "551"],  # sender refused; "need MAIL/RCPT", then "Discarded"
        ["250", "250", "250", "550"],  # header_checks REJECT at the last chunk
        ["250", "250", "250", "250"],
    ]
    codes = [[s[:3] for s in t] for t in got]
    counts = await box.wait({ids[1]: 1, ids[4]: 1})
    windows = [behind(txs, i) for i in range(len(txs))]
    ok = (
        b"CHUNKING" in ehlo
        and b"PIPELINING" in ehlo
        and codes == want
        and [t.rset for t in txs] == [False, False, True, True, True]
        and [t.ident for t in txs] == ids
        and [counts[i] for i in ids] == [0, 1, 0, 0, 1]
        and windows == [4, 3, 2, 1, 0]
    )
    rsets = [str(c.reply) for c in tap.sessions[0].commands() if c.verb == "RSET"]
    record(
        "chunking harness: pipelined BDAT by hand",
        ok,
        f"EHLO CHUNKING={b'CHUNKING' in ehlo} replies={codes} copies="
        f"{[counts[i] for i in ids]} behind={windows} | "
        + " / ".join(t[-1] for t in got)
        + f" | RSET: {rsets}",
    )


async def _transcript(prof: dict[str, Any], record: Record, maillog: Path) -> None:
    """Postfix's own command transcript (port 2531, debug_peer_level=1) shows BDAT."""
    port = prof.get("dsn")
    if not port:
        record("chunking: BDAT in smtpd's transcript", None, "no transcript port")
        return
    log = Postfix.since_now(maillog, "p2531")
    ident = new_id("bdat-transcript")
    async with Mailer(f"smtp://127.0.0.1:{port}") as mailer:
        r = await mailer.send(message(ident, "good"))
    await log.sessions()
    bdat = log.lines("]: < localhost[127.0.0.1]: BDAT ")
    data = [line for line in log.lines("]: < localhost[127.0.0.1]: ") if line.endswith(": data")]
    record(
        "chunking: BDAT in smtpd's transcript",
        r.ok and len(bdat) == 1 and bool(re.search(r"BDAT \d+ LAST$", bdat[0])) and not data,
        f"{r.status.value} | " + (bdat[0].split("]: ", 1)[-1] if bdat else "no BDAT line"),
    )


async def _many(port: int, box: MailBox, record: Record, maillog: Path, many: int) -> None:
    o = await _stream(port, ["good"] * many, "", box, maillog)
    wire, postfix = o.wire, o.postfix
    ok = (
        not o.problems
        and wire.verbs["BDAT"] == many
        and wire.verbs["DATA"] == 0
        and postfix["bdat_all"] == many
        and postfix["data_all"] == 0
        and 1 < wire.max_window <= 8
        and o.sessions_ok
    )
    record(
        f"chunking: send_many x{many}, window 8",
        ok,
        f"{dict(o.statuses)} {o.wrong()} {o.elapsed:.2f}s ({many / o.elapsed:.0f} msg/s) "
        f"| {wire} | {o.postfix_summary()}",
    )


async def _mix(
    port: int, box: MailBox, record: Record, maillog: Path, many: int, *, query: str
) -> None:
    kinds = mix_kinds(many)
    o = await _stream(port, kinds, query, box, maillog)
    wire, postfix = o.wire, o.postfix
    bdat = query == ""
    transactions = len(kinds) + kinds.count("tempfail")  # (tempfail: 2 attempts)
    ok = not o.problems and wire.verbs["MAIL"] == postfix["mail_all"] == transactions
    if bdat:
        ok = ok and wire.verbs["DATA"] == 0 and postfix["data_all"] == 0
        ok = ok and wire.refused_mid_window * 2 > wire.refused and wire.max_window <= 8
    else:
        ok = ok and wire.verbs["BDAT"] == 0 and postfix["bdat_all"] == 0
    ok = ok and "421" not in str(wire.decisions) and o.sessions_ok
    record(
        f"chunking: refusals mid-window x{many} ({'BDAT' if bdat else 'chunking=no: DATA'})",
        ok,
        f"{dict(sorted(o.statuses.items()))} {o.wrong()} {o.elapsed:.2f}s | {wire} "
        f"| {o.postfix_summary()}",
    )


async def _big_and_dots(port: int, box: MailBox, record: Record) -> None:
    """Content over 1 MiB goes in several chunks; lines starting with a dot stay as they are."""
    blob = os.urandom(3 * 1024 * 1024)
    big, dots = new_id("bdat-big"), new_id("bdat-dots")
    messages = {
        big: Message(
            sender=SENDER,
            to="big@example.net",
            subject="chunking big",
            text=DOT_BODY,
            headers={"X-Interop-Id": big},
            attachments=[Attachment(filename="big.bin", content=blob)],
        ),
        dots: Message(
            sender=SENDER,
            to="dots@example.net",
            subject="chunking dots",
            text=DOT_BODY,
            headers={"X-Interop-Id": dots},
        ),
    }
    async with Wiretap(port) as tap, Mailer(f"smtp://127.0.0.1:{tap.port}") as mailer:
        results = {k: await mailer.send(m) for k, m in messages.items()}
    counts = await box.wait({big: 1, dots: 1})
    wire = wire_facts(tap)
    for ident, label in ((big, "3 MiB attachment"), (dots, "lines starting with '.'")):
        txs = wire.by_ident.get(ident, [])
        sent = txs[0].content if len(txs) == 1 else b""
        stored = raw_copies(box, ident)
        lf = sent.replace(b"\r\n", b"\n")
        body_sent = lf.split(b"\n\n", 1)[-1]
        body_stored = stored[0].split(b"\n\n", 1)[-1] if stored else b""
        same_body = hashlib.sha256(body_sent).digest() == hashlib.sha256(body_stored).digest()
        whole = bool(stored) and stored[0].endswith(lf)  # (Postfix only prepends trace fields)
        chunks = [c.line.decode() for c in txs[0].chunks] if txs else []
        unstuffed = b"\r\n.\r\n..two dots\r\n.\r\n" in sent
        ok = results[ident].ok and counts[ident] == 1 and same_body and whole and unstuffed
        detail = f"copies={counts[ident]} body_sha256_equal={same_body} whole_message_equal={whole}"
        detail += f" dot_lines_unstuffed_on_wire={unstuffed}"
        if ident == big:
            got = box.get(ident)
            att = next(iter(got[0].iter_attachments()), None) if got else None
            blob_ok = att is not None and att.get_content() == blob
            replies = [str(c.reply)[:40] for c in txs[0].chunks] if txs else []
            ok = ok and blob_ok and len(chunks) >= 4 and chunks[-1].endswith(" LAST")
            detail += f" attachment_equal={blob_ok} {len(sent)} octets in {chunks} -> {replies}"
        else:
            got = box.get(ident)
            plain = got[0].get_body(("plain",)) if got else None
            text_ok = plain is not None and plain.get_content().replace("\r\n", "\n") == DOT_BODY
            ok = ok and text_ok and chunks == [f"BDAT {len(sent)} LAST"]
            detail += f" text_equal={text_ok} {chunks}"
        record(f"chunking: {label}", ok, detail)


async def _error_limit(port: int, box: MailBox, record: Record, maillog: Path) -> None:
    """24 refused messages in a row on one connection, then 16 good ones.

    Postfix counts each refusal as a client error: after 10 (smtpd_soft_error_limit) it
    answers slower, after 20 (smtpd_hard_error_limit) it says ``421 4.7.0 Error: too many
    errors`` and closes, with messages of the window written behind it.
    """
    kinds = ["norcpt"] * 24 + ["good"] * 16
    pairs = [(new_id(f"bdat-limit-{k}"), k) for k in kinds]
    messages = [message(ident, kind, n) for n, (ident, kind) in enumerate(pairs)]
    kind_of = {id(m): p for m, p in zip(messages, pairs, strict=True)}
    log = Postfix.since_now(maillog, "p2534")
    results: dict[str, SendResult[Message]] = {}
    t0 = time.monotonic()
    async with (
        Wiretap(port) as tap,
        Mailer(f"smtp://127.0.0.1:{tap.port}", max_connections=1) as mailer,
    ):
        async for r in mailer.send_many(messages):
            results[kind_of[id(r.message)][0]] = r
        stats = mailer.statistics()
    dt = time.monotonic() - t0
    counts = await box.wait({i: 1 for i, k in pairs if k == "good"})
    problems = []
    for ident, kind in pairs:
        got = results.get(ident)
        why = "no result" if got is None else wrong(kind, got, counts[ident], attempts=2)
        if why:
            problems.append(f"{kind}: {why}")
    again = sorted(n for n, (i, _) in enumerate(pairs) if i in results and results[i].attempts > 1)
    postfix = await log.sessions()
    too_many = log.lines("too many errors")
    wire = wire_facts(tap)
    record(
        "chunking: 24 refused in a row (Postfix error limit)",
        not problems and stats.unknown == 0 and len(too_many) >= 1,
        f"wrong={len(problems)} {problems[:2]} unknown={stats.unknown} {dt:.1f}s "
        f"| sent twice (all RCPTs refused 550, then 421 to BDAT): messages {again} | "
        f"postfix: {len(postfix)} sessions, {len(too_many)} 'too many errors' | {wire}",
    )
