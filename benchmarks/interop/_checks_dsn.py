"""check.py group ``dsn``: DSN parameters (RFC 3461) and VERP through real Postfix.

Port 2531 logs smtpd's command transcript, so the MAIL/RCPT parameters asyncmail sent are
read back from the log. A NOTIFY=SUCCESS message makes Postfix send a success DSN to the
envelope sender, which lands in the catch-all Maildir and is parsed with the stdlib (and
with ``asyncmail.bounces.parse`` when it exists).
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
import uuid
from email.message import EmailMessage
from email.message import Message as StdMessage
from pathlib import Path
from typing import Any

from _checks_shared import MailBox, Record, log_lines, make_mailer, make_message, new_id
from _dkim_keys import DOMAIN

import asyncmail
from asyncmail import DeliveryError, RetryPolicy


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
        ln for rc in rcpts for ln in log_lines(maillog, f"from=<{expected[rc]}>") if "qmgr" in ln
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
    rcpt = f"dsn-ok-{uuid.uuid4().hex[:6]}@example.net"  # new each run: the log is grepped

    # harness: smtplib sends the DSN parameters by hand; Postfix must answer with a DSN
    envid, ident = new_id("envid"), new_id("dsn-harness")
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
    ident, rcpts = new_id("verp-harness"), _verp_recipients()
    m = make_message(ident, to=rcpts)

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
    envid, ident = new_id("envid"), new_id("dsn")
    option = dsn_cls(notify=("success", "failure"), ret="headers", envid=envid, orcpt=True)
    async with make_mailer(server) as mailer:
        r = await mailer.send(
            make_message(ident, sender=f"dsn-sender@{DOMAIN}", to=rcpt, dsn=option)
        )
    counts = await box.wait({ident: 1})
    ok, detail = _success_dsn_ok(await _await_dsn(box, envid), envid, rcpt, ident)
    wire_ok, wire = _dsn_wire_ok(maillog, f"dsn-sender@{DOMAIN}", rcpt, envid)
    record(
        "dsn success: ENVID/ORCPT/RET=HDRS back in the DSN",
        r.ok and counts[ident] == 1 and ok and wire_ok,
        f"copies={counts[ident]} {wire} {detail}",
    )

    # a refused recipient fails at RCPT (550), and Postfix sends no failure DSN
    envid, ident = new_id("envid"), new_id("dsn-reject")
    option = dsn_cls(notify=("failure",), envid=envid)
    try:
        async with make_mailer(server, retry=RetryPolicy(attempts=1)) as mailer:
            r = await mailer.send(
                make_message(
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
    ident = new_id("dsn-default")
    option = dsn_cls(notify=("failure",), required=True)
    async with make_mailer(server, dsn=option) as mailer:
        default_rcpt = f"dsn-default-{uuid.uuid4().hex[:6]}@example.net"
        r = await mailer.send(make_message(ident, to=default_rcpt))
    counts = await box.wait({ident: 1})
    lines = [
        p
        for p in smtp_params(maillog, "rcpt to", default_rcpt)
        if p.get("NOTIFY", "").upper() == "FAILURE"
    ]
    record(
        "dsn Mailer(dsn=) default, required=True",
        r.ok and counts[ident] == 1 and bool(lines),
        f"copies={counts[ident]} notify_lines={len(lines)}",
    )

    # VERP: one MAIL FROM per recipient, each naming its recipient
    ident, rcpts = new_id("verp"), _verp_recipients()
    async with make_mailer(server) as mailer:
        r = await mailer.send(make_message(ident, to=rcpts, return_path=VERP_TEMPLATE))
    ok, detail = await _verp_judge(box, maillog, ident, rcpts)
    record("VERP: 3 recipients -> 3 MAIL FROMs", r.ok and ok, detail)
