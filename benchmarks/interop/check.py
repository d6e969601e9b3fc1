"""asyncmail against real SMTP servers on 127.0.0.1: prints one PASS/FAIL line per check.

Run by hand (not in CI), after starting a server with its script:

    sudo benchmarks/interop/run_postfix.sh start
    .venv/bin/python benchmarks/interop/check.py --profile postfix
    sudo benchmarks/interop/run_postfix.sh stop

Each message carries a unique ``X-Interop-Id`` header; a check passes only when the server
reported what was expected AND the catch-all Maildir holds exactly the expected copies.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import hashlib
import os
import subprocess
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import _checks_chunking
import _checks_dkim
import _checks_dsn
import _checks_failover
import _checks_relay
import dkim_selftest

from asyncmail import (
    Attachment,
    AuthenticationError,
    DeliveryError,
    Mailer,
    Message,
    NotSupportedError,
    Rejected,
    RetryPolicy,
    Status,
    TLSError,
)

BASE = Path(os.environ.get("BASE", "/tmp/interop"))
CA = BASE / "certs" / "client.pem"
USER, PASSWORD = "user", "secret"

# port map per server; a check whose port is missing is SKIPped
PROFILES: dict[str, dict[str, Any]] = {
    "postfix": {
        "maildir": BASE / "mail" / "catchall" / "new",
        "plain": 2525,  # no TLS, no AUTH
        "may": 2526,  # STARTTLS offered, AUTH after TLS
        "submission": 2587,  # STARTTLS required, AUTH PLAIN LOGIN CRAM-MD5
        "mech": {"PLAIN": 2591, "LOGIN": 2592, "CRAM-MD5": 2593},
        "implicit": 2465,
        "idle3s": 2527,
        "strict_helo": 2528,
        "conn_limit2": 2529,
        "size_limit": 10240000,
        "dkim": 2530,  # OpenDKIM milter (verify)
        "dsn": 2531,  # smtpd command transcript in the log
        "relay_a": 2532,  # failover / round-robin, logged as postfix/p2532
        "relay_b": 2533,
        "chunking": 2534,  # refusals at MAIL, RCPT and end of content, logged as postfix/p2534
        "maillog": BASE / "maillog",
    },
    "exim": {
        "maildir": BASE / "exim" / "mail" / "new",
        "plain": 3525,
        "may": 3526,
        "submission": 3587,
        "mech": {"PLAIN": 3591, "LOGIN": 3592, "CRAM-MD5": 3593},
        "implicit": 3465,
        "idle3s": 3527,
        "strict_helo": 3528,
        "conn_limit2": 3529,
        "size_limit": 10 * 1024 * 1024,
    },
}

RUN = uuid.uuid4().hex[:8]
results: list[tuple[str, str, str]] = []


def record(name: str, ok: bool | None, detail: str = "") -> None:
    status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
    results.append((name, status, detail))
    print(f"{status:4}  {name:38} {detail}", flush=True)


class Box:
    """The catch-all Maildir: messages indexed by X-Interop-Id."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, EmailMessage] = {}

    def scan(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        if not self.path.is_dir():
            return counts
        for f in self.path.iterdir():
            if f.name not in self.seen:
                try:
                    raw = f.read_bytes()
                except FileNotFoundError:
                    continue
                msg = email.message_from_bytes(raw, policy=email.policy.default)
                self.seen[f.name] = msg
        for msg in self.seen.values():
            mid = msg.get("X-Interop-Id")
            if mid:
                counts[str(mid)] += 1
        return counts

    async def wait(self, ids: dict[str, int], limit: float = 30.0) -> Counter[str]:
        """Wait until each id has at least its expected copies (then a little more)."""
        deadline = time.monotonic() + limit
        while True:
            counts = self.scan()
            if all(counts[i] >= n for i, n in ids.items()) or time.monotonic() > deadline:
                await asyncio.sleep(0.5)  # late duplicates would show up now
                return self.scan()
            await asyncio.sleep(0.2)

    def get(self, ident: str) -> list[EmailMessage]:
        self.scan()
        return [m for m in self.seen.values() if str(m.get("X-Interop-Id")) == ident]


async def guarded(group: str, checks: Awaitable[None]) -> None:
    """Run a group of checks for features still in flux: a crash is one FAIL, not the end."""
    try:
        await checks
    except Exception as exc:
        traceback.print_exc()
        record(f"{group}: the group crashed", False, f"{type(exc).__name__}: {exc}")


def new_id(tag: str) -> str:
    return f"{RUN}-{tag}-{uuid.uuid4().hex[:6]}"


def msg(
    tag: str,
    *,
    sender: str = "Interop <sender@example.com>",
    to: str | list[str] = "rcpt@example.net",
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
) -> tuple[str, Message]:
    ident = new_id(tag)
    message = Message(
        sender=sender,
        to=to,
        subject=f"interop {tag}" if subject is None else subject,
        text=f"hello from check {tag}\n" if text is None else text,
        html=html,
        attachments=attachments,
        headers={"X-Interop-Id": ident},
    )
    return ident, message


def url(port: int, *, auth: bool = False, scheme: str = "smtp", query: str = "") -> str:
    cred = f"{USER}:{PASSWORD}@" if auth else ""
    return f"{scheme}://{cred}127.0.0.1:{port}{'?' + query if query else ''}"


async def simple_send(box: Box, name: str, server_url: str, *, expect_tls: bool | None) -> None:
    ident, m = msg(name)
    try:
        async with Mailer(server_url) as mailer:
            r = await mailer.send(m)
    except Exception as exc:
        record(name, False, f"{type(exc).__name__}: {exc}")
        return
    counts = await box.wait({ident: 1})
    detail = f"{r.status.value} reply={r.reply} copies={counts[ident]}"
    ok = r.status is Status.DELIVERED and counts[ident] == 1
    if ok and expect_tls is not None:
        received = " ".join(str(h) for h in box.get(ident)[0].get_all("Received", []))
        low = received.lower()
        has_tls = "using tls" in low or "with esmtps" in low  # Postfix / Exim wording
        ok = has_tls == expect_tls
        detail += f" tls={'yes' if has_tls else 'no'}"
    record(name, ok, detail)


async def expect_error(name: str, server_url: str, exc_type: type, code: int | None) -> None:
    _, m = msg(name)
    try:
        async with Mailer(server_url, retry=RetryPolicy(attempts=1)) as mailer:
            r = await mailer.send(m)
        record(name, False, f"unexpectedly {r.status.value}")
    except DeliveryError as exc:
        ok = isinstance(exc, exc_type) and (code is None or exc.code == code)
        record(name, ok, f"{type(exc).__name__} code={exc.code} phase={exc.phase} {exc.text!r}")
    except Exception as exc:
        record(name, False, f"{type(exc).__name__}: {exc}")


async def main(profile_name: str, many: int, only: set[str] | None) -> int:
    prof = PROFILES[profile_name]
    box = Box(prof["maildir"])
    ca = f"ca_file={CA}"
    sub: int = prof["submission"]

    def want(name: str) -> bool:
        return only is None or any(name.startswith(o) for o in only)

    # -- connection modes -----------------------------------------------------------------
    if want("plain"):
        await simple_send(
            box, "plain tls=none", url(prof["plain"], query="tls=none"), expect_tls=False
        )
        await simple_send(box, "plain loopback default", url(prof["plain"]), expect_tls=False)
        await expect_error(
            "plain tls=starttls -> TLSError",
            url(prof["plain"], query="tls=starttls"),
            TLSError,
            None,
        )
    if want("starttls"):
        await simple_send(
            box, "starttls loopback default (no CA)", url(prof["may"]), expect_tls=True
        )
        await simple_send(
            box,
            "starttls opportunistic+CA",
            url(prof["may"], query=f"tls=opportunistic&{ca}"),
            expect_tls=True,
        )
        await simple_send(
            box, "starttls required+AUTH+CA", url(sub, auth=True, query=ca), expect_tls=True
        )
        await simple_send(
            box, "starttls AUTH default (no CA)", url(sub, auth=True), expect_tls=True
        )
        await expect_error(
            "starttls required, untrusted CA", url(sub, query="tls=starttls"), TLSError, None
        )
        await expect_error(
            "AUTH creds with tls=none (no TLS)",
            url(prof["may"], auth=True, query="tls=none"),
            AuthenticationError,
            None,
        )
        for mech, port in prof.get("mech", {}).items():
            await simple_send(
                box, f"AUTH {mech} only", url(port, auth=True, query=ca), expect_tls=True
            )
        # user@realm form, percent-encoded (Cyrus SASL realms: Postfix only)
        if profile_name == "postfix":
            await simple_send(
                box,
                "AUTH user%40realm",
                f"smtp://{USER}%40interop.test:{PASSWORD}@127.0.0.1:{sub}?{ca}",
                expect_tls=True,
            )
        await expect_error(
            "wrong password -> 535",
            f"smtp://{USER}:wrong@127.0.0.1:{sub}?{ca}",
            AuthenticationError,
            535,
        )
    if want("implicit") and prof.get("implicit"):
        await simple_send(
            box,
            "implicit TLS+AUTH+CA",
            url(prof["implicit"], auth=True, scheme="smtps", query=ca),
            expect_tls=True,
        )
        await simple_send(
            box,
            "implicit tls=implicit no AUTH",
            url(prof["implicit"], query=f"tls=implicit&{ca}"),
            expect_tls=True,
        )
        await expect_error(
            "implicit wrong password -> 535",
            f"smtps://{USER}:bad@127.0.0.1:{prof['implicit']}?{ca}",
            AuthenticationError,
            535,
        )

    submission = url(sub, auth=True, query=ca)

    # -- recipients -------------------------------------------------------------------------
    if want("refused"):
        ident, m = msg(
            "refused", to=["ok1@example.net", "reject-bob@example.net", "ok2@example.net"]
        )
        async with Mailer(submission) as mailer:
            r = await mailer.send(m)
        counts = await box.wait({ident: 2})
        ref = r.refused.get("reject-bob@example.net")
        ok = (
            r.status is Status.DELIVERED
            and set(r.accepted) == {"ok1@example.net", "ok2@example.net"}
            and isinstance(ref, Rejected)
            and ref.code == 550
            and ref.enhanced_code == "5.1.1"
            and counts[ident] == 2
        )
        record(
            "refused rcpt in result.refused",
            ok,
            f"{r!r} refused={ {k: str(v) for k, v in r.refused.items()} } copies={counts[ident]}",
        )

        ident, m = msg("allrefused", to=["reject-a@example.net", "reject-b@example.net"])
        try:
            async with Mailer(submission) as mailer:
                r = await mailer.send(m)
            record("all rcpts refused -> Rejected", False, f"unexpectedly {r!r}")
        except DeliveryError as exc:
            rr = exc.result
            record(
                "all rcpts refused -> Rejected",
                isinstance(exc, Rejected) and exc.code == 550,
                f"{type(exc).__name__} {exc} refused={len(rr.refused) if rr else '?'} "
                f"attempts={rr.attempts if rr else '?'}",
            )

        ident, m = msg("tempfail", to=["ok@example.net", "tempfail-x@example.net"])
        t0 = time.monotonic()
        async with Mailer(submission, retry=RetryPolicy(attempts=3, base_delay=0.2)) as mailer:
            r = await mailer.send(m)
        counts = await box.wait({ident: 1})
        ref = r.refused.get("tempfail-x@example.net")
        ok = (
            r.status is Status.DELIVERED
            and ref is not None
            and ref.code in (450, 451)
            and r.attempts == 3
            and counts[ident] == 1
        )
        record(
            "4xx rcpt retried, no dup to others",
            ok,
            f"{r!r} refused={ {k: str(v) for k, v in r.refused.items()} } copies={counts[ident]} "
            f"{time.monotonic() - t0:.1f}s",
        )

    # -- UTF-8 ------------------------------------------------------------------------------
    if want("utf8"):
        subject = "订单确认 #1024 — 主题很长" * 3
        body = "你好，张三！这是正文。\nЗдравствуйте. مرحبا. 🎉\n"
        ident, m = msg(
            "utf8",
            sender="商店 <shop@example.com>",
            to="张三 <zhang@example.net>",
            subject=subject,
            text=body,
            html=f"<p>{body}</p>",
        )
        async with Mailer(submission) as mailer:
            r = await mailer.send(m)
        counts = await box.wait({ident: 1})
        got = box.get(ident)
        ok = r.ok and counts[ident] == 1
        detail = f"copies={counts[ident]}"
        if got:
            g = got[0]
            to = g["To"].addresses[0]
            frm = g["From"].addresses[0]
            plain = g.get_body(("plain",))
            text_ok = plain is not None and plain.get_content().replace("\r\n", "\n") == body
            ok = (
                ok
                and str(g["Subject"]) == subject
                and to.display_name == "张三"
                and frm.display_name == "商店"
                and text_ok
            )
            detail += (
                f" subject_ok={str(g['Subject']) == subject} to={to.display_name!r}"
                f" from={frm.display_name!r} body_ok={text_ok}"
            )
        record("UTF-8 subject/name/body", ok, detail)

        ident, m = msg("idn", to="Bob <bob@例子.测试>", sender="sender@bücher.example")
        async with Mailer(submission) as mailer:
            r = await mailer.send(m)
        counts = await box.wait({ident: 1})
        got = box.get(ident)
        detail = f"accepted={r.accepted} copies={counts[ident]}"
        ok = r.ok and counts[ident] == 1
        if got:
            g = got[0]
            detail += f" To={g['To']!s} Delivered-To={g.get('Delivered-To')}"
            detail += f" Return-Path={g.get('Return-Path')}"
        record("IDN domain (no SMTPUTF8 needed)", ok, detail)

        ident, m = msg("smtputf8", to="张三 <张三@例子.测试>", sender="发件人@example.com")
        try:
            async with Mailer(submission) as mailer:
                r = await mailer.send(m)
            counts = await box.wait({ident: 1})
            got = box.get(ident)
            detail = f"accepted={r.accepted} copies={counts[ident]}"
            ok = r.ok and counts[ident] == 1
            if got:
                g = got[0]
                detail += f" To={g['To']!s} Delivered-To={g.get('Delivered-To')}"
                detail += f" Return-Path={g.get('Return-Path')}"
                ok = ok and "张三@" in str(g.get("Delivered-To", "")) + str(g["To"])
            record("non-ASCII local part (SMTPUTF8)", ok, detail)
        except DeliveryError as exc:
            record("non-ASCII local part (SMTPUTF8)", False, f"{type(exc).__name__}: {exc}")

        # SMTPUTF8 message to a server without it: Postfix port 2525 has it too, so only
        # meaningful where the profile has a non-SMTPUTF8 port
        if prof.get("no_smtputf8"):
            await expect_error(
                "SMTPUTF8 unsupported -> NotSupportedError",
                url(prof["no_smtputf8"]),
                NotSupportedError,
                None,
            )

    # -- sizes ------------------------------------------------------------------------------
    if want("attach"):
        blob = os.urandom(5 * 1024 * 1024)
        ident, m = msg("attach5mb", attachments=[Attachment(filename="数据.bin", content=blob)])
        async with Mailer(submission) as mailer:
            t0 = time.monotonic()
            r = await mailer.send(m)
            dt = time.monotonic() - t0
        counts = await box.wait({ident: 1})
        got = box.get(ident)
        ok = r.ok and counts[ident] == 1
        detail = f"copies={counts[ident]} {dt:.2f}s"
        if got:
            atts = list(got[0].iter_attachments())
            same = (
                bool(atts)
                and hashlib.sha256(atts[0].get_content()).digest() == hashlib.sha256(blob).digest()
            )
            ok = ok and same and atts[0].get_filename() == "数据.bin"
            detail += f" sha256_ok={same} filename={atts[0].get_filename() if atts else None!r}"
        record("5 MB attachment", ok, detail)

        big = os.urandom(int(prof["size_limit"] * 0.8))  # base64 makes it > the limit
        ident, m = msg("toobig", attachments=[Attachment(filename="big.bin", content=big)])
        try:
            async with Mailer(submission) as mailer:
                r = await mailer.send(m)
            record("over SIZE limit -> Rejected", False, f"unexpectedly {r!r}")
        except DeliveryError as exc:
            rr = exc.result
            # asyncmail refuses client-side from the EHLO SIZE value (no 552 from the server)
            record(
                "over SIZE limit -> Rejected",
                isinstance(exc, Rejected) and exc.code in (None, 552),
                f"{type(exc).__name__} code={exc.code} phase={exc.phase} {exc.text!r} "
                f"attempts={rr.attempts if rr else '?'}",
            )

    # -- stdlib EmailMessage ----------------------------------------------------------------
    if want("stdlib"):
        ident = new_id("stdlib")
        em = EmailMessage()
        em["From"] = "Alice <alice@example.com>"
        em["To"] = "bob@example.net"
        em["Subject"] = "stdlib message 测试"
        em["X-Interop-Id"] = ident
        em.set_content("plain body\n")
        async with Mailer(submission) as mailer:
            sent = await mailer.send(em)
        counts = await box.wait({ident: 1})
        record(
            "stdlib EmailMessage",
            sent.ok and counts[ident] == 1,
            f"{sent!r} copies={counts[ident]}",
        )

    # -- concurrency ------------------------------------------------------------------------
    if want("concurrent"):
        pairs = [msg(f"task{i}") for i in range(200)]
        async with Mailer(submission, max_connections=5) as mailer:
            t0 = time.monotonic()
            rs = await asyncio.gather(*(mailer.send(m) for _, m in pairs), return_exceptions=True)
            dt = time.monotonic() - t0
            stats = mailer.statistics()
        counts = await box.wait({i: 1 for i, _ in pairs})
        errors = [r for r in rs if isinstance(r, BaseException)]
        wrong = [i for i, _ in pairs if counts[i] != 1]
        record(
            "200 send() from concurrent tasks",
            not errors and not wrong,
            f"errors={len(errors)} {errors[:1]} not_exactly_once={len(wrong)} {dt:.2f}s "
            f"stats={stats.delivered}/{stats.failed}/{stats.unknown}",
        )

    # -- pipelining, many -------------------------------------------------------------------
    if want("many"):
        for label, server_url, pipelining in (
            ("send_many pipelined AUTH+TLS", submission, True),
            ("send_many pipelined plain", url(prof["plain"]), True),
        ):
            pairs = [msg(f"many{i}") for i in range(many)]
            statuses: Counter[str] = Counter()
            async with Mailer(server_url, max_connections=10, pipelining=pipelining) as mailer:
                t0 = time.monotonic()
                async for r in mailer.send_many(m for _, m in pairs):
                    statuses[r.status.value] += 1
                dt = time.monotonic() - t0
            counts = await box.wait({i: 1 for i, _ in pairs}, limit=120)
            missing = sum(1 for i, _ in pairs if counts[i] == 0)
            dups = sum(1 for i, _ in pairs if counts[i] > 1)
            ok = statuses == Counter({"delivered": many}) and not missing and not dups
            record(
                f"{label} x{many}",
                ok,
                f"{dict(statuses)} missing={missing} duplicated={dups} "
                f"{dt:.2f}s ({many / dt:.0f} msg/s)",
            )

    # -- content the server must keep byte-exact -------------------------------------------
    if want("content"):
        body = ".\n..two dots\n.\nlast line .\n" + "x" * 5000 + "\n" + "From the start of a line\n"
        ident, m = msg("content", text=body)
        async with Mailer(url(prof["plain"])) as mailer:
            r = await mailer.send(m)
        counts = await box.wait({ident: 1})
        got = box.get(ident)
        plain = got[0].get_body(("plain",)) if got else None
        same = plain is not None and plain.get_content().replace("\r\n", "\n") == body
        record(
            "dot-stuffing + 5000-char line intact",
            r.ok and counts[ident] == 1 and same,
            f"copies={counts[ident]} body_intact={same}",
        )

    # -- server policies real relays use ----------------------------------------------------
    if want("policy"):
        if prof.get("strict_helo"):
            ident, m = msg("helo")
            try:
                async with Mailer(url(prof["strict_helo"])) as mailer:
                    r = await mailer.send(m)
                record("strict HELO policy (default EHLO name)", r.ok, f"{r!r}")
            except DeliveryError as exc:
                record(
                    "strict HELO policy (default EHLO name)", False, f"{type(exc).__name__}: {exc}"
                )
            ident, m = msg("helo2")
            async with Mailer(
                url(prof["strict_helo"], query="local_hostname=client.example.com")
            ) as mailer:
                r = await mailer.send(m)
            record("strict HELO with ?local_hostname=", r.ok, f"{r!r}")
        if prof.get("idle3s"):
            ids = []
            async with Mailer(url(prof["idle3s"]), retry=RetryPolicy(attempts=1)) as mailer:
                ident, m = msg("idle-a")
                r1 = await mailer.send(m)
                ids.append(ident)
                await asyncio.sleep(5)  # the server times the pooled connection out (421)
                ident, m = msg("idle-b")
                try:
                    r2: Any = await mailer.send(m)
                except DeliveryError as exc:
                    r2 = exc
                ids.append(ident)
            counts = await box.wait(dict.fromkeys(ids, 1))
            ok = (
                r1.ok
                and not isinstance(r2, Exception)
                and r2.ok
                and all(counts[i] == 1 for i in ids)
            )
            record(
                "server idle-timeout on pooled conn",
                ok,
                f"second={r2!r} copies={[counts[i] for i in ids]} (attempts=1: no retry budget)",
            )
        if prof.get("conn_limit2"):
            pairs = [msg(f"climit{i}") for i in range(300)]
            limited: Counter[str] = Counter()
            refusals: Counter[str] = Counter()
            t0 = time.monotonic()
            async with Mailer(url(prof["conn_limit2"]), max_connections=10) as mailer:
                async for r in mailer.send_many(m for _, m in pairs):
                    limited[r.status.value] += 1
                    if r.error is not None:
                        code = r.error.code if isinstance(r.error, DeliveryError) else None
                        refusals[f"{type(r.error).__name__} {code}"] += 1
            dt = time.monotonic() - t0
            counts = await box.wait({i: 1 for i, _ in pairs}, limit=60)
            dups = sum(1 for i, _ in pairs if counts[i] > 1)
            record(
                "server allows 2 conns, pool wants 10",
                limited == Counter({"delivered": 300}) and not dups,
                f"{dict(limited)} errors={dict(refusals)} duplicated={dups} {dt:.1f}s",
            )

    # -- deliverability: _checks_dkim.py, _checks_dsn.py, _checks_failover.py; _checks_chunking.py
    maillog = prof.get("maillog", BASE / "maillog")
    if want("dkim"):
        if prof.get("dkim"):
            for tag, ok, ar in await asyncio.to_thread(dkim_selftest.run_cases, prof["dkim"]):
                record(f"dkim harness (dkimpy+smtplib) {tag}", ok, " | ".join(ar)[:300])
        await guarded("dkim", _checks_dkim.run_dkim(prof, box, record))
    if want("dsn"):
        await guarded("dsn", _checks_dsn.run_dsn(prof, box, record, maillog))
    if want("failover"):
        await guarded("failover", _checks_failover.run_failover(prof, box, record, maillog))
    if want("chunking"):
        await guarded("chunking", _checks_chunking.run_chunking(prof, box, record, maillog, many))
    if want("relay") and profile_name == "postfix":
        # asyncmail relay between Postfix and Postfix (run_postfix_nullclient.sh): _checks_relay.py
        await guarded("relay", _checks_relay.run_relay(prof, box, record))

    # -- CLI --------------------------------------------------------------------------------
    if want("cli"):
        exe = Path(sys.executable).parent / "asyncmail"
        if not exe.exists():
            record("CLI", None, "no asyncmail executable")
        else:
            for label, args in (
                ("CLI check submission", ["check", submission]),
                (
                    "CLI check implicit",
                    ["check", url(prof["implicit"], auth=True, scheme="smtps", query=ca)],
                ),
                ("CLI check plain", ["check", url(prof["plain"])]),
                (
                    "CLI check wrong password",
                    ["check", f"smtp://{USER}:wrong@127.0.0.1:{sub}?{ca}"],
                ),
            ):
                p = await asyncio.to_thread(
                    subprocess.run, [str(exe), *args], capture_output=True, text=True, timeout=60
                )
                out = (p.stdout + p.stderr).strip()
                leaked = (PASSWORD in out and "wrong" not in label) or ":wrong@" in out
                expect_fail = "wrong" in label
                ok = (p.returncode != 0) == expect_fail and not leaked
                record(
                    label,
                    ok,
                    f"rc={p.returncode} leaked_password={leaked} | "
                    + out.replace("\n", " | ")[:300],
                )
            ident = new_id("cli")
            body_file = BASE / "cli-body.txt"
            body_file.write_text("CLI body 正文\n", encoding="utf-8")
            p = await asyncio.to_thread(
                subprocess.run,
                [
                    str(exe),
                    "send",
                    "--from",
                    "命令行 <cli@example.com>",
                    "--to",
                    "bob@example.net",
                    "--subject",
                    f"CLI 主题 {ident}",
                    "--text-file",
                    str(body_file),
                    "--url",
                    submission,
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            await asyncio.sleep(1.5)
            box.scan()
            got = [g for g in box.seen.values() if ident in str(g.get("Subject", ""))]
            out = (p.stdout + p.stderr).strip().replace("\n", " | ")
            record(
                "CLI send",
                p.returncode == 0 and len(got) == 1,
                f"rc={p.returncode} copies={len(got)} leaked_password={PASSWORD in out} "
                f"| {out[:300]}",
            )

    print()
    failed = [r for r in results if r[1] == "FAIL"]
    print(
        f"{len(results)} checks: {sum(r[1] == 'PASS' for r in results)} PASS, {len(failed)} FAIL, "
        f"{sum(r[1] == 'SKIP' for r in results)} SKIP (run {RUN})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--profile", choices=sorted(PROFILES), default="postfix")
    ap.add_argument("--many", type=int, default=2000, help="messages for the send_many checks")
    ap.add_argument(
        "--only",
        nargs="*",
        help="run only checks whose group starts with these "
        "(plain starttls implicit refused utf8 attach stdlib concurrent many content policy "
        "dkim dsn failover chunking relay cli)",
    )
    ns = ap.parse_args()
    try:
        sys.exit(asyncio.run(main(ns.profile, ns.many, set(ns.only) if ns.only else None)))
    except Exception:
        traceback.print_exc()
        sys.exit(2)
