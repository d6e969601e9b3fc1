"""Prove the OpenDKIM harness without asyncmail: dkimpy signs, smtplib sends, OpenDKIM judges.

    benchmarks/interop/run_postfix.sh start      # with opendkim installed: port 2530
    .venv/bin/python benchmarks/interop/dkim_selftest.py

Sends through Postfix port 2530 (OpenDKIM milter, Mode v, keys from TestPublicKeys):
one message signed rsa-sha256 (selector rsa1), one ed25519-sha256 (ed1), one signed by both,
and for each key type one whose body is changed by one byte after signing. Prints the
Authentication-Results of each Maildir copy; exits 1 unless the signed ones say
``dkim=pass`` for every selector and the tampered ones ``dkim=fail``, and dkimpy agrees on
the stored copy.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import re
import smtplib
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from _dkim_keys import DOMAIN, ED_SELECTOR, RSA_SELECTOR, dkimpy_sign, dkimpy_verify

BASE = Path(os.environ.get("BASE", "/tmp/interop"))
MAILDIR = BASE / "mail" / "catchall" / "new"
PORT = int(os.environ.get("DKIM_PORT", "2530"))
RUN = uuid.uuid4().hex[:8]


def _dkim_results(value: str) -> list[tuple[str, str]]:
    """``[(result, selector), ...]`` from one Authentication-Results value."""
    out = []
    for part in value.split(";"):
        m = re.search(r"\bdkim=(\w+)", part)
        if m:
            s = re.search(r"header\.s=([\w.-]+)", part)
            out.append((m.group(1), s.group(1) if s else "?"))
    return out


def _raw(tag: str, ident: str) -> bytes:
    m = EmailMessage()
    m["From"] = f"Selftest <selftest@{DOMAIN}>"
    m["To"] = "rcpt@example.net"
    m["Subject"] = f"dkim selftest {tag}"
    m["Date"] = email.utils.formatdate()
    m["Message-ID"] = email.utils.make_msgid(domain=DOMAIN)
    m["X-Interop-Id"] = ident
    m.set_content(f"signed by dkimpy ({tag})\n")
    return m.as_bytes(policy=email.policy.SMTP)


def _wait(ident: str, limit: float = 20.0) -> tuple[EmailMessage, bytes] | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for f in MAILDIR.iterdir() if MAILDIR.is_dir() else ():
            raw = f.read_bytes()
            if ident.encode() in raw:
                got = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(got, EmailMessage)
                return got, raw
        time.sleep(0.2)
    return None


CASES: list[tuple[str, list[str], bool]] = [
    ("rsa", [RSA_SELECTOR], False),
    ("ed25519", [ED_SELECTOR], False),
    ("rsa+ed25519", [RSA_SELECTOR, ED_SELECTOR], False),
    ("rsa tampered", [RSA_SELECTOR], True),
    ("ed25519 tampered", [ED_SELECTOR], True),
]


HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


def run_cases(port: int = PORT) -> list[tuple[str, bool, list[str]]]:
    """Send every case; ``[(case, as expected, [what the verifiers said]), ...]``."""
    out = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        for tag, selectors, tamper in CASES:
            ident = f"{RUN}-selftest-{tag.replace(' ', '-').replace('+', '-')}"
            raw = _raw(tag, ident)
            for selector in selectors:
                raw = dkimpy_sign(raw, selector, HEADERS)
            if tamper:
                raw = raw.replace(b"signed by dkimpy", b"signed by dkimPy", 1)
            smtp.sendmail(f"selftest@{DOMAIN}", ["rcpt@example.net"], raw)
            copy = _wait(ident)
            if copy is None:
                out.append((tag, False, ["no Maildir copy"]))
                continue
            got, stored_raw = copy
            ar = [" ".join(str(h).split()) for h in got.get_all("Authentication-Results", [])]
            results = [r for value in ar for r in _dkim_results(value)]
            want = "fail" if tamper else "pass"
            # and dkimpy on the stored copy (after Postfix and the milter touched it)
            stored = dkimpy_verify(stored_raw)
            ok = (
                sorted(s for _, s in results) == sorted(selectors)
                and all(r == want for r, _ in results)
                and stored == [not tamper] * len(selectors)
            )
            lines = [f"Authentication-Results: {value}" for value in ar]
            out.append((tag, ok, [*lines, f"dkimpy on the stored copy: {stored}"]))
    return out


def main() -> int:
    version = subprocess.run(["opendkim", "-V"], capture_output=True, text=True, check=False)
    print(version.stdout.splitlines()[0] if version.stdout else "opendkim: not found")
    results = run_cases()
    for tag, ok, lines in results:
        want = "fail" if "tampered" in tag else "pass"
        print(f"{'PASS' if ok else 'FAIL'}  {tag:18} want dkim={want}")
        for line in lines:
            print(f"      {line}")
    good = sum(ok for _, ok, _ in results)
    print(f"{good}/{len(results)} as expected")
    return 0 if good == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
