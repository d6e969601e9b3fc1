"""check.py groups ``dkim``, ``dsn`` and ``failover``: deliverability against real Postfix.

Each group first proves its harness with tools that exist without the feature (smtplib,
the single-URL Mailer), then runs the asyncmail checks, which SKIP with a reason while the
asyncmail API they need (``asyncmail.DKIM``, ``asyncmail.DSN``, a ``Mailer`` that takes a
list of URLs and ``strategy=``) is missing. The feature APIs are reached through ``Any`` so
this file type-checks before and after they exist.

- ``dkim``: Postfix port 2530 runs OpenDKIM (Mode v, keys from ``TestPublicKeys``). Every
  Maildir copy must carry ``dkim=pass`` in Authentication-Results for each selector that
  signed it, and dkimpy must verify every DKIM-Signature of the stored copy too.
- ``dsn``: port 2531 logs smtpd's command transcript; a NOTIFY=SUCCESS message makes Postfix
  send a success DSN to the envelope sender, which lands in the catch-all Maildir.
- ``failover``: a closed port, a loopback server that answers 421 at the greeting, and Postfix
  ports 2532/2533 whose log names (``postfix/p2532``) tell which relay took each message.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import smtplib
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from email.message import EmailMessage
from email.message import Message as StdMessage
from pathlib import Path
from typing import Any, Protocol

from _dkim_keys import (
    DOMAIN,
    ED_SELECTOR,
    KEYDIR,
    RSA_SELECTOR,
    dkimpy_sign,
    dkimpy_verify,
    ensure_keys,
)

import asyncmail
from asyncmail import Attachment, DeliveryError, Mailer, Message, MessageError, RetryPolicy

Record = Callable[[str, "bool | None", str], None]
AUTHSERV_ID = "mx.interop.test"  # run_postfix.sh: AuthservID of OpenDKIM


class MailBox(Protocol):
    """What the groups need of check.py's ``Box``."""

    path: Path
    seen: dict[str, EmailMessage]

    def scan(self) -> Counter[str]: ...

    def wait(self, ids: dict[str, int], limit: float = 30.0) -> Awaitable[Counter[str]]: ...

    def get(self, ident: str) -> list[EmailMessage]: ...


def _new_id(tag: str) -> str:
    return f"dlv-{tag}-{uuid.uuid4().hex[:8]}"


def _message(ident: str, **given: object) -> Message:
    """A Message with ``X-Interop-Id``; feature fields (``dsn=``) pass through untyped."""
    fields: dict[str, Any] = dict(given)
    fields.setdefault("sender", f"Interop <sender@{DOMAIN}>")
    fields.setdefault("to", "rcpt@example.net")
    fields.setdefault("subject", f"interop {ident}")
    fields.setdefault("text", f"hello from {ident}\n")
    fields["headers"] = {"X-Interop-Id": ident}
    return Message(**fields)


def _mailer(server: str | list[str], **options: object) -> Mailer:
    """A Mailer with options this asyncmail may not know yet (``dkim=``, ``strategy=``)."""
    factory: Any = Mailer
    mailer: Mailer = factory(server, **options)
    return mailer


def _raw_copies(box: MailBox, ident: str) -> list[bytes]:
    box.scan()
    out = []
    for name, parsed in box.seen.items():
        if str(parsed.get("X-Interop-Id")) == ident:
            try:
                out.append((box.path / name).read_bytes())
            except FileNotFoundError:
                continue
    return out


# -- dkim -----------------------------------------------------------------------------------


def dkim_results(parsed: StdMessage) -> list[tuple[str, str]]:
    """``[(result, selector), ...]`` from our OpenDKIM's Authentication-Results fields."""
    out = []
    for value in parsed.get_all("Authentication-Results", []):
        text = " ".join(str(value).split())
        if not text.startswith(AUTHSERV_ID + ";"):
            continue  # not ours: a sender may forge Authentication-Results
        for part in text.split(";")[1:]:
            m = re.search(r"\bdkim=(\w+)", part)
            if m:
                s = re.search(r"header\.s=([\w.-]+)", part)
                out.append((m.group(1), s.group(1) if s else "?"))
    return out


def _dkim_shapes() -> list[tuple[str, dict[str, object]]]:
    return [
        ("text", {}),
        ("alternative", {"html": "<p>hello <b>html</b></p>"}),
        (
            "attachments",
            {
                "attachments": [
                    Attachment(filename="数据.bin", content=bytes(range(256)) * 40),
                    Attachment(filename="notes.txt", content=b"line\r\n" * 200),
                ]
            },
        ),
        (
            "CJK headers",
            {
                "sender": f"商店 お知らせ <shop@{DOMAIN}>",
                "to": "张三 <zhang@example.net>",
                "subject": "测试 主题：你好，世界 — Привет, мир 🌍",
                "text": "正文 テスト\n",
            },
        ),
        (
            "long folded headers",
            {
                "subject": " ".join(f"word{i:03d}" for i in range(38))[:300],
                "to": [f"Recipient Number {i} <rcpt{i:02d}@example.net>" for i in range(40)],
            },
        ),
        ("SMTPUTF8", {"sender": f"发件人 <发件人@{DOMAIN}>", "to": "张三 <张三@例子.测试>"}),
    ]


WANT_SELECTORS = {
    "rsa": [RSA_SELECTOR],
    "ed25519": [ED_SELECTOR],
    "rsa+ed25519": [ED_SELECTOR, RSA_SELECTOR],
}


async def _judge_dkim(
    box: MailBox, record: Record, name: str, sent_ok: bool, ident: str, m: Message, keys: str
) -> None:
    """PASS when every copy arrived once and both OpenDKIM and dkimpy say pass per selector."""
    n_rcpt = len(m.to)
    counts = await box.wait({ident: n_rcpt})
    copies = box.get(ident)
    raws = _raw_copies(box, ident)
    if not copies or not raws:
        record(name, False, f"sent_ok={sent_ok} copies=0")
        return
    ar = dkim_results(copies[0])
    py = dkimpy_verify(raws[0])
    want = WANT_SELECTORS[keys]
    ar_ok = sorted(s for _, s in ar) == want and all(res == "pass" for res, _ in ar)
    py_ok = py == [True] * len(want)
    record(
        name,
        sent_ok and counts[ident] == n_rcpt and ar_ok and py_ok,
        f"copies={counts[ident]}/{n_rcpt} opendkim={ar} dkimpy={py}",
    )


def _smtplib_signed(port: int, m: Message, selectors: list[str]) -> None:
    """asyncmail renders, dkimpy signs, smtplib sends: the harness for every shape."""
    try:
        raw, options = m.to_bytes(smtputf8=False), []
    except MessageError:
        raw, options = m.to_bytes(smtputf8=True), ["SMTPUTF8"]
    for selector in selectors:
        raw = dkimpy_sign(raw, selector)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail(m.envelope_sender, [a.addr for a in m.to], raw, mail_options=options)


async def run_dkim(prof: dict[str, Any], box: MailBox, record: Record) -> None:
    port = prof.get("dkim")
    if not port:
        record("dkim", None, "profile has no OpenDKIM port")
        return
    ensure_keys()
    selectors = {"rsa": [RSA_SELECTOR], "ed25519": [ED_SELECTOR]}
    selectors["rsa+ed25519"] = [RSA_SELECTOR, ED_SELECTOR]  # ed1 signs last, so on top

    # harness: the same shapes, rendered by asyncmail but signed by dkimpy
    for keys, sels in selectors.items():
        for shape, fields in _dkim_shapes():
            ident = _new_id("dkim-harness")
            m = _message(ident, **fields)
            await asyncio.to_thread(_smtplib_signed, port, m, sels)
            await _judge_dkim(box, record, f"dkim harness {keys} {shape}", True, ident, m, keys)

    dkim_cls = getattr(asyncmail, "DKIM", None)
    if dkim_cls is None:
        record("dkim", None, "(asyncmail has no DKIM yet)")
        return
    signers = {
        keys: [dkim_cls(domain=DOMAIN, selector=s, key=KEYDIR / f"{s}.pem") for s in sels]
        for keys, sels in selectors.items()
    }
    for keys, dkims in signers.items():
        option = dkims[0] if len(dkims) == 1 else dkims
        async with _mailer(f"smtp://127.0.0.1:{port}?tls=none", dkim=option) as mailer:
            for shape, fields in _dkim_shapes():
                name = f"dkim {keys} {shape}"
                ident = _new_id("dkim")
                m = _message(ident, **fields)
                try:
                    r = await mailer.send(m)
                except DeliveryError as exc:
                    record(name, False, f"{type(exc).__name__}: {exc}")
                    continue
                await _judge_dkim(box, record, name, r.ok, ident, m, keys)


# -- dsn ------------------------------------------------------------------------------------


def find_dsn(box: MailBox, envid: str) -> list[EmailMessage]:
    """The DSNs in the Maildir whose Original-Envelope-Id is ``envid``."""
    box.scan()
    out = []
    for parsed in box.seen.values():
        if parsed.get_content_type() != "multipart/report":
            continue
        for part in parsed.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            blocks = part.get_payload()
            if (
                isinstance(blocks, list)
                and blocks
                and isinstance(blocks[0], StdMessage)
                and str(blocks[0].get("Original-Envelope-Id", "")).strip() == envid
            ):
                out.append(parsed)
    return out


def describe_dsn(dsn: EmailMessage) -> dict[str, Any]:
    """The fields a check compares, parsed with the stdlib (RFC 3464)."""
    info: dict[str, Any] = {"recipients": [], "returned_headers": None}
    for part in dsn.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            blocks = part.get_payload()
            assert isinstance(blocks, list)
            groups = [b for b in blocks if isinstance(b, StdMessage)]
            info["envid"] = str(groups[0].get("Original-Envelope-Id", "")).strip()
            for block in groups[1:]:
                info["recipients"].append(
                    {
                        "final": str(block.get("Final-Recipient", "")).strip(),
                        "original": str(block.get("Original-Recipient", "")).strip(),
                        "action": str(block.get("Action", "")).strip(),
                        "status": str(block.get("Status", "")).strip(),
                    }
                )
        elif ctype == "text/rfc822-headers":
            info["returned_headers"] = part.get_payload(decode=True)
    parse = getattr(getattr(asyncmail, "bounces", None), "parse", None)
    if parse is not None:
        info["asyncmail.bounces.parse"] = parse(dsn.as_bytes())
    return info


async def _await_dsn(box: MailBox, envid: str, limit: float = 20.0) -> list[EmailMessage]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = find_dsn(box, envid)
        if found:
            await asyncio.sleep(0.5)  # a duplicate would show up now
            return find_dsn(box, envid)
        await asyncio.sleep(0.2)
    return []


def _success_dsn_ok(
    dsns: list[EmailMessage], envid: str, rcpt: str, ident: str
) -> tuple[bool, str]:
    if len(dsns) != 1:
        return False, f"success DSNs={len(dsns)}"
    info = describe_dsn(dsns[0])
    rcpts = info["recipients"]
    headers = info["returned_headers"] or b""
    ok = (
        info.get("envid") == envid
        and len(rcpts) == 1
        and rcpts[0]["action"] == "delivered"
        and rcpts[0]["status"].startswith("2.")
        and rcpts[0]["original"].replace(" ", "").lower() == f"rfc822;{rcpt}"
        and ident.encode() in headers  # RET=HDRS: the headers came back...
        and b"hello from" not in headers  # ...and not the body
    )
    shown = {k: v for k, v in info.items() if k != "returned_headers"}
    return ok, f"{shown} headers_returned={ident.encode() in headers}"


def smtp_params(maillog: Path, verb: str, address: str) -> list[dict[str, str]]:
    """The parameters of each ``MAIL FROM``/``RCPT TO`` for ``address`` in smtpd's transcript.

    Port 2531 logs every client command (``< localhost[127.0.0.1]: rcpt TO:<a> NOTIFY=...``);
    verbs, keywords and ``rfc822;`` are case-insensitive, so keys come back upper-case.
    """
    pattern = re.compile(
        rf": < \S+: {verb}:<{re.escape(address)}>(.*)$", re.IGNORECASE | re.MULTILINE
    )
    try:
        text = maillog.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for m in pattern.finditer(text):
        params = {}
        for word in m.group(1).split():
            key, _, value = word.partition("=")
            params[key.upper()] = value
        out.append(params)
    return out


def _dsn_wire_ok(maillog: Path, sender: str, rcpt: str, envid: str) -> tuple[bool, str]:
    """Whether one MAIL FROM carried RET=HDRS ENVID=envid, and RCPT TO NOTIFY and ORCPT."""
    mails = [p for p in smtp_params(maillog, "mail from", sender) if p.get("ENVID") == envid]
    rcpts = smtp_params(maillog, "rcpt to", rcpt)
    last = rcpts[-1] if rcpts else {}
    ok = (
        len(mails) == 1
        and mails[0].get("RET", "").upper() == "HDRS"
        and set(last.get("NOTIFY", "").upper().split(",")) == {"SUCCESS", "FAILURE"}
        and last.get("ORCPT", "").lower() == f"rfc822;{rcpt}"
    )
    return ok, f"wire mail={mails} rcpt={last}"


def _log_lines(path: Path, needle: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if needle in line]


VERP_TEMPLATE = "bounces+{local}={domain}@" + DOMAIN


def _verp_recipients() -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"verp{i}-{tag}@example.net" for i in range(3)]


async def _verp_judge(
    box: MailBox, maillog: Path, ident: str, rcpts: list[str]
) -> tuple[bool, str]:
    """Each recipient's copy came in its own transaction from its own bounce address."""
    counts = await box.wait({ident: len(rcpts)})
    expected = {}
    for rc in rcpts:
        local, _, domain = rc.rpartition("@")
        expected[rc] = VERP_TEMPLATE.format(local=local, domain=domain)
    froms = [
        ln for rc in rcpts for ln in _log_lines(maillog, f"from=<{expected[rc]}>") if "qmgr" in ln
    ]
    got = {
        str(c.get("Delivered-To")): str(c.get("Return-Path")).strip("<>") for c in box.get(ident)
    }
    ok = counts[ident] == len(rcpts) and len(froms) == len(rcpts) and got == expected
    return (
        ok,
        f"copies={counts[ident]} qmgr_from_lines={len(froms)} return_paths_ok={got == expected}",
    )


async def run_dsn(prof: dict[str, Any], box: MailBox, record: Record, maillog: Path) -> None:
    port = prof.get("dsn")
    if not port:
        record("dsn", None, "profile has no DSN port")
        return
    rcpt = "dsn-ok@example.net"

    # harness: smtplib sends the DSN parameters by hand; Postfix must answer with a DSN
    envid, ident = _new_id("envid"), _new_id("dsn-harness")
    raw = f"From: dsn-sender@{DOMAIN}\r\nTo: {rcpt}\r\nSubject: dsn harness\r\n"
    raw += f"X-Interop-Id: {ident}\r\n\r\nhello from the harness\r\n"

    def smtplib_send() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.sendmail(
                f"dsn-sender@{DOMAIN}",
                [rcpt],
                raw.encode(),
                mail_options=["RET=HDRS", f"ENVID={envid}"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{rcpt}"],
            )

    await asyncio.to_thread(smtplib_send)
    ok, detail = _success_dsn_ok(await _await_dsn(box, envid), envid, rcpt, ident)
    wire_ok, wire = _dsn_wire_ok(maillog, f"dsn-sender@{DOMAIN}", rcpt, envid)
    record("dsn harness (smtplib) success DSN", ok and wire_ok, f"{wire} {detail}")

    # harness: VERP by hand, one smtplib transaction per recipient
    ident, rcpts = _new_id("verp-harness"), _verp_recipients()
    m = _message(ident, to=rcpts)

    def smtplib_verp() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            for rc in rcpts:
                local, _, domain = rc.rpartition("@")
                bounce = VERP_TEMPLATE.format(local=local, domain=domain)
                smtp.sendmail(bounce, [rc], m.to_bytes())

    await asyncio.to_thread(smtplib_verp)
    ok, detail = await _verp_judge(box, maillog, ident, rcpts)
    record("VERP harness (smtplib): 3 MAIL FROMs counted", ok, detail)

    dsn_cls = getattr(asyncmail, "DSN", None)
    if dsn_cls is None:
        record("dsn", None, "(asyncmail has no DSN yet)")
        return
    server = f"smtp://127.0.0.1:{port}?tls=none"

    # success DSN with ENVID, ORCPT, RET=HDRS
    envid, ident = _new_id("envid"), _new_id("dsn")
    option = dsn_cls(notify=("success", "failure"), ret="headers", envid=envid, orcpt=True)
    async with _mailer(server) as mailer:
        r = await mailer.send(_message(ident, sender=f"dsn-sender@{DOMAIN}", to=rcpt, dsn=option))
    counts = await box.wait({ident: 1})
    ok, detail = _success_dsn_ok(await _await_dsn(box, envid), envid, rcpt, ident)
    wire_ok, wire = _dsn_wire_ok(maillog, f"dsn-sender@{DOMAIN}", rcpt, envid)
    record(
        "dsn success: ENVID/ORCPT/RET=HDRS back in the DSN",
        r.ok and counts[ident] == 1 and ok and wire_ok,
        f"copies={counts[ident]} {wire} {detail}",
    )

    # a refused recipient fails at RCPT (550), and Postfix sends no failure DSN
    envid, ident = _new_id("envid"), _new_id("dsn-reject")
    option = dsn_cls(notify=("failure",), envid=envid)
    try:
        async with _mailer(server, retry=RetryPolicy(attempts=1)) as mailer:
            r = await mailer.send(
                _message(
                    ident, sender=f"dsn-sender@{DOMAIN}", to="reject-x@example.net", dsn=option
                )
            )
        record("dsn failure is synchronous (550)", False, f"unexpectedly {r!r}")
    except DeliveryError as exc:
        late = await _await_dsn(box, envid, limit=3.0)
        record(
            "dsn failure is synchronous (550)",
            exc.code == 550 and not late,
            f"{type(exc).__name__} code={exc.code} phase={exc.phase} dsn_messages={len(late)}",
        )

    # the Mailer-wide default, and required=True on a server that offers DSN
    ident = _new_id("dsn-default")
    option = dsn_cls(notify=("failure",), required=True)
    async with _mailer(server, dsn=option) as mailer:
        r = await mailer.send(_message(ident, to="dsn-default@example.net"))
    counts = await box.wait({ident: 1})
    lines = [
        p
        for p in smtp_params(maillog, "rcpt to", "dsn-default@example.net")
        if p.get("NOTIFY", "").upper() == "FAILURE"
    ]
    record(
        "dsn Mailer(dsn=) default, required=True",
        r.ok and counts[ident] == 1 and bool(lines),
        f"copies={counts[ident]} notify_lines={len(lines)}",
    )

    # VERP: one MAIL FROM per recipient, each naming its recipient
    ident, rcpts = _new_id("verp"), _verp_recipients()
    async with _mailer(server) as mailer:
        r = await mailer.send(_message(ident, to=rcpts, return_path=VERP_TEMPLATE))
    ok, detail = await _verp_judge(box, maillog, ident, rcpts)
    record("VERP: 3 recipients -> 3 MAIL FROMs", r.ok and ok, detail)


# -- failover -------------------------------------------------------------------------------


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
                    r = await mailer.send(_message(_new_id("fo-harness")))
                record(f"failover harness: {label}", False, f"unexpectedly {r!r}")
            except DeliveryError as exc:
                record(
                    f"failover harness: {label}",
                    type(exc).__name__ == want,
                    f"{type(exc).__name__} code={exc.code} {exc.text!r}",
                )
        for port in (good, other):
            ident = _new_id("fo-harness")
            async with Mailer(f"smtp://127.0.0.1:{port}{plain}") as mailer:
                r = await mailer.send(_message(ident))
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
        pairs = [(ident, _message(ident)) for ident in (_new_id("fo") for _ in range(20))]
        before = busy.connections
        results: list[Any] = []
        async with _mailer(urls, strategy="failover", retry_period=60.0) as mailer:
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
    pairs = [(ident, _message(ident)) for ident in (_new_id("fo1") for _ in range(10))]
    urls = [f"smtp://127.0.0.1:{p}{plain}" for p in (good, other)]
    async with _mailer(urls, strategy="failover") as mailer:
        results = [await mailer.send(m) for _, m in pairs]
    counts = await box.wait({i: 1 for i, _ in pairs})
    where = await _sent_ports(maillog, [r.message_id or "" for r in results])
    record(
        "failover [good, good2]: all on the first",
        all(counts[i] == 1 for i, _ in pairs) and where == Counter({f"p{good}": 10}),
        f"log={dict(where)}",
    )

    # round-robin spreads the messages over both
    pairs = [(ident, _message(ident)) for ident in (_new_id("rr") for _ in range(40))]
    results = []
    async with _mailer(urls, strategy="round-robin") as mailer:
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
