"""check.py group ``dkim``: asyncmail's DKIM signatures judged by OpenDKIM and dkimpy.

Postfix port 2530 runs OpenDKIM as a milter (Mode v, public keys from ``TestPublicKeys``,
no DNS). Every Maildir copy must carry ``dkim=pass`` in Authentication-Results for each
selector that signed it, and dkimpy must verify every DKIM-Signature of the stored copy.
The harness signs the same message shapes with dkimpy (rendered by asyncmail's Message),
and a tampered message must be judged failed.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
from email.message import Message as StdMessage
from typing import Any

from _checks_shared import MailBox, Record, make_mailer, make_message, new_id, raw_copies
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
from asyncmail import Attachment, DeliveryError, Message, MessageError

AUTHSERV_ID = "mx.interop.test"  # run_postfix.sh: AuthservID of OpenDKIM


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


async def _judge_dkim(box: MailBox, ident: str, m: Message, keys: str) -> tuple[bool, str]:
    """Whether every copy arrived once and both OpenDKIM and dkimpy say pass per selector."""
    n_rcpt = len(m.to)
    counts = await box.wait({ident: n_rcpt})
    copies = box.get(ident)
    raws = raw_copies(box, ident)
    if not copies or not raws:
        return False, "copies=0"
    ar = dkim_results(copies[0])
    py = dkimpy_verify(raws[0])
    want = WANT_SELECTORS[keys]
    ar_ok = sorted(s for _, s in ar) == want and all(res == "pass" for res, _ in ar)
    py_ok = py == [True] * len(want)
    ok = counts[ident] == n_rcpt and ar_ok and py_ok
    return ok, f"copies={counts[ident]}/{n_rcpt} opendkim={ar} dkimpy={py}"


def _smtplib_signed(port: int, m: Message, selectors: list[str], tamper: bool = False) -> None:
    """asyncmail renders, dkimpy signs, smtplib sends: the harness for every shape."""
    try:
        raw, options = m.to_bytes(smtputf8=False), []
    except MessageError:
        raw, options = m.to_bytes(smtputf8=True), ["SMTPUTF8"]
    for selector in selectors:
        raw = dkimpy_sign(raw, selector)
    if tamper:
        raw = raw.replace(b"hello from", b"Hello from", 1)
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
            ident = new_id("dkim-harness")
            m = make_message(ident, **fields)
            await asyncio.to_thread(_smtplib_signed, port, m, sels)
            ok, detail = await _judge_dkim(box, ident, m, keys)
            record(f"dkim harness {keys} {shape}", ok, detail)
    # negative control: the judge must say no when the body changed after signing
    ident = new_id("dkim-harness")
    m = make_message(ident)
    await asyncio.to_thread(_smtplib_signed, port, m, selectors["rsa+ed25519"], True)
    ok, detail = await _judge_dkim(box, ident, m, "rsa+ed25519")
    record("dkim harness: tampered body is judged failed", not ok, detail)

    dkim_cls = getattr(asyncmail, "DKIM", None)
    if dkim_cls is None:
        record("dkim", None, "(asyncmail has no DKIM yet)")
        return
    signers = {
        keys: [dkim_cls(domain=DOMAIN, selector=s, key=str(KEYDIR / f"{s}.pem")) for s in sels]
        for keys, sels in selectors.items()
    }
    for keys, dkims in signers.items():
        option = dkims[0] if len(dkims) == 1 else dkims
        async with make_mailer(f"smtp://127.0.0.1:{port}?tls=none", dkim=option) as mailer:
            for shape, fields in _dkim_shapes():
                name = f"dkim {keys} {shape}"
                ident = new_id("dkim")
                m = make_message(ident, **fields)
                try:
                    r = await mailer.send(m)
                except DeliveryError as exc:
                    record(name, False, f"{type(exc).__name__}: {exc}")
                    continue
                ok, detail = await _judge_dkim(box, ident, m, keys)
                record(name, r.ok and ok, detail)
