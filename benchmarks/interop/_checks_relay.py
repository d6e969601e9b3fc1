"""check.py's group ``relay``: ``asyncmail relay`` with real Postfix on both sides.

- relay -> Postfix: messages sent to the relay (smtplib; a DKIM-signed one, 8-bit, a
  998-octet line, lines starting with a dot) reach Postfix's Maildir as they were sent,
  after Postfix's own trace fields and exactly one Received field of the relay's; the DKIM
  signature still verifies (dkimpy). A recipient Postfix refuses ends FAILED in the outbox.
- Postfix -> relay: a Postfix null client (run_postfix_nullclient.sh, port 2641) whose
  relayhost is the relay takes messages and hands them to the relay, which delivers them to
  the Postfix of run_postfix.sh: a chain through both.

The relay runs as a process: ``asyncmail relay --listen 127.0.0.1:2640``.
"""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _checks_shared import MailBox, Record, new_id

from asyncmail import Outbox, OutboxState

RELAY_PORT = 2640
NULLCLIENT_PORT = 2641
RELAY_NAME = "relay.interop.test"
STARTED = re.compile(r"relay listening on [^ ]+:(\d+)")


def corpus(ident: str) -> dict[str, bytes]:
    """Messages as another program wrote them, each with ``X-Interop-Id: <ident>-<name>``.

    Each has a Date field: Postfix adds one to a message from its own networks that lacks
    it, which would be Postfix's change, not the relay's.
    """

    def head(name: str, extra: str = "") -> str:
        return (
            f"From: Ann <ann@example.com>\r\nTo: rcpt@example.net\r\nSubject: relay {name}\r\n"
            f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{ident}-{name}@example.com>\r\n"
            f"X-Interop-Id: {ident}-{name}\r\n{extra}"
        )

    return {
        "dots": (
            head("dots") + "\r\n.a line that starts with a dot\r\n..two\r\n.\r\nend\r\n"
        ).encode(),
        "8bit": (
            head(
                "8bit",
                "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n",
            )
            + "\r\nhéllo 你好\r\n"
        ).encode(),
        "998": (head("998") + "\r\n" + "x" * 998 + "\r\nshort\r\n").encode(),
    }


def dkim_signed(data: bytes) -> tuple[bytes, Any] | None:
    """``data`` signed by dkimpy with a fresh key, and a dnsfunc for it; None without dkimpy."""
    try:
        import dkim
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        return None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"relay._domainkey.example.com." else None

    signature: bytes = dkim.sign(
        data, b"relay", b"example.com", pem, include_headers=[b"from", b"to", b"subject"]
    )
    return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + data, dns


def send(port: int, data: bytes, rcpt: str = "rcpt@example.net") -> tuple[int, bytes]:
    """Send ``data`` with smtplib; the reply to its final dot."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.interop.test") as client:
        client.ehlo()
        client.mail("ann@example.com", ["BODY=8BITMIME"])
        client.rcpt(rcpt)
        return client.data(data)


class RelayProcess:
    def __init__(self, outbox: str, upstream: str) -> None:
        code = "from asyncmail.cli import main; main()"
        args = [
            f"--listen=127.0.0.1:{RELAY_PORT}",
            f"--outbox={outbox}",
            f"--url={upstream}",
            "--relay-domains=example.net",
            f"--hostname={RELAY_NAME}",
            "--lease-seconds=5",
        ]
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "relay", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        self.first = self.process.stdout.readline().strip()

    def stop(self) -> tuple[int, str]:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=60)
        return self.process.returncode, out


def _trace_count(raw: bytes) -> int:
    return len(re.findall(rb"by " + re.escape(RELAY_NAME.encode()) + rb" \(asyncmail relay\)", raw))


def _stored(box: MailBox, ident: str) -> bytes | None:
    """The Maildir file of the message with this X-Interop-Id, as stored (LF line ends)."""
    box.scan()
    for name, message in box.seen.items():
        if str(message.get("X-Interop-Id")) == ident:
            return (box.path / name).read_bytes()
    return None


async def run_relay(prof: dict[str, Any], box: MailBox, record: Record) -> None:
    ident = new_id("relay")
    with tempfile.TemporaryDirectory(prefix="asyncmail-relay-") as tmp:
        outbox = f"sqlite:///{Path(tmp) / 'relay.db'}"
        relay = RelayProcess(outbox, f"smtp://127.0.0.1:{prof['plain']}?tls=none")
        if not STARTED.search(relay.first):
            record("relay: started", False, relay.first)
            relay.stop()
            return
        record("relay: started", True, relay.first.split(", queueing")[0])
        try:
            await _to_postfix(box, record, ident)
            await _refused(outbox, record, ident)
            await _through_nullclient(box, record, ident)
        finally:
            code, out = await asyncio.to_thread(relay.stop)
            last = out.strip().splitlines()[-1:] or [""]
            record("relay: SIGTERM exits 0", code == 0, f"rc={code} {last[0]}")


async def _to_postfix(box: MailBox, record: Record, ident: str) -> None:
    messages = corpus(ident)
    signed = dkim_signed(messages["dots"].replace(b"-dots", b"-dkim"))
    if signed is not None:
        messages["dkim"] = signed[0]
    for name, data in messages.items():
        reply = await asyncio.to_thread(send, RELAY_PORT, data)
        wanted = f"{ident}-{name}"
        deadline = time.monotonic() + 30
        raw = _stored(box, wanted)
        while raw is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            raw = _stored(box, wanted)
        if raw is None:
            record(f"relay -> postfix {name}", False, f"reply={reply} never arrived")
            continue
        unchanged = raw.endswith(data.replace(b"\r\n", b"\n"))
        traces = _trace_count(raw)
        detail = f"reply={reply[0]} unchanged={unchanged} relay_received={traces}"
        ok = reply[0] == 250 and unchanged and traces == 1
        if name == "dkim" and signed is not None:
            import dkim

            verified = bool(dkim.verify(raw.replace(b"\n", b"\r\n"), dnsfunc=signed[1]))
            detail += f" dkim_verifies={verified}"
            ok = ok and verified
        record(f"relay -> postfix {name}", ok, detail)


async def _refused(outbox_url: str, record: Record, ident: str) -> None:
    """A recipient Postfix refuses (550 5.1.1): the relay said 250, the outbox ends FAILED."""
    data = corpus(ident)["dots"].replace(b"-dots", b"-refused")
    reply = await asyncio.to_thread(send, RELAY_PORT, data, "reject-me@example.net")
    key = reply[1].decode().rpartition(" ")[2]
    status = None
    async with Outbox(outbox_url) as outbox:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = await outbox.status(key)
            if status is not None and status.final:
                break
            await asyncio.sleep(0.2)
    state = status.state if status is not None else None
    error = (status.error or "")[:120] if status is not None else ""
    record(
        "relay -> postfix refused recipient",
        reply[0] == 250 and state is OutboxState.FAILED and "5.1.1" in error,
        f"reply={reply[0]} key={key} state={state} {error}",
    )


async def _through_nullclient(box: MailBox, record: Record, ident: str) -> None:
    """Postfix (null client, relayhost = the relay) -> asyncmail relay -> Postfix."""
    data = corpus(ident)["dots"].replace(b"-dots", b"-chain")
    try:
        reply = await asyncio.to_thread(send, NULLCLIENT_PORT, data)
    except OSError as exc:
        record("postfix -> relay (relayhost)", None, f"no null client on {NULLCLIENT_PORT}: {exc}")
        return
    wanted = f"{ident}-chain"
    deadline = time.monotonic() + 60
    raw = _stored(box, wanted)
    while raw is None and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        raw = _stored(box, wanted)
    if raw is None:
        record("postfix -> relay (relayhost)", False, f"reply={reply} never arrived")
        return
    trace = re.search(
        rb"Received: from (\S+) \(\[127\.0\.0\.1\]\)\n\tby " + re.escape(RELAY_NAME.encode()), raw
    )
    body = data.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
    ok = reply[0] == 250 and trace is not None and _trace_count(raw) == 1 and raw.endswith(body)
    client = trace.group(1).decode() if trace else None
    record(
        "postfix -> relay (relayhost)",
        ok,
        f"reply={reply[0]} relay saw EHLO {client} relay_received={_trace_count(raw)}",
    )
