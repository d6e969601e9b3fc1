"""How long does a DKIM signature take, and does signing stall the event loop?

In one run:

a) per signature, on the same ~5 KB message (text + HTML, Chinese display name): asyncmail's
   ``sign`` (relaxed/relaxed canonicalisation, SHA-256, the ``cryptography`` primitive;
   everything from the message bytes to the header line) with RSA-2048 and with Ed25519,
   and the primitive alone (signing a 32-byte digest), for what the rest costs;
b) the peer: dkimpy's ``dkim.sign`` on the same bytes, same headers, same keys (its RSA is
   pure Python; its Ed25519 is PyNaCl);
c) the loop-lag probe: ``send_many`` pushes N messages (dual-signed: RSA-2048 + Ed25519, and
   unsigned for comparison) into the capture server, which runs in a child process so that
   its work does not hold this process's GIL. Two measures: a probe task sleeps 1 ms at a
   time and records how late it wakes (one turn of the loop, plus whatever the OS took from
   this process: noisy on a shared machine); and every callback the loop runs is timed
   (wall and this thread's CPU time), so the longest is the longest the loop was blocked.

Every signature made here is checked once with ``dkim.verify``.

(Not ``benchmarks/dkim.py``: a script of that name would be what ``import dkim`` finds,
here and for mypy, instead of dkimpy.)

Usage::

    .venv/bin/python benchmarks/dkim_signing.py [--repeats 7] [--messages 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import anyio
import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from asyncmail import DKIM, Mailer, Message, RetryPolicy, Server, TLSMode
from asyncmail.dkim._signer import SIGNED_HEADERS, sign

PARAGRAPH = (
    "Thank you for shopping with us. Your order has been confirmed and will ship soon. "
    "If you have any questions about your order, reply to this email or call our support line; "
    "our team answers during business hours.\n"
)
SERVER = """
import sys, anyio
from asyncmail.testing import CaptureServer
async def main():
    async with CaptureServer(record=False, pipelining=True) as server:
        print(server.port, flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)
anyio.run(main)
"""


def message(i: int) -> Message:
    text = f"Dear 张三 {i},\n\n" + PARAGRAPH * 8
    html = "<html><body>" + f"<p>{PARAGRAPH}</p>\n" * 8 + "</body></html>\n"
    return Message(
        sender="商店 <shop@example.com>",
        to=(f"张三 {i}", f"user{i}@example.net"),
        subject=f"订单确认 #{i} — 感谢您的购买",
        text=text,
        html=html,
        headers={"Feedback-ID": "order:shop:1"},
        unsubscribe_mailto=f"unsubscribe+{i}@example.com",
    )


def per_call(fn: Callable[[], object], iterations: int, repeats: int) -> list[float]:
    """µs per call of ``fn``, one figure per repeat."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        out.append((time.perf_counter() - start) / iterations * 1e6)
    return out


def row(label: str, figures: list[float]) -> str:
    return f"| {label} | {min(figures):,.1f} | {statistics.median(figures):,.1f} |"


def signing(repeats: int, quick: bool) -> list[str]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_signer = DKIM(domain="example.com", selector="rsa", key=rsa_key)
    ed_signer = DKIM(domain="example.com", selector="ed", key=ed_key)
    records = {f"{s.dns_name}.".encode(): s.dns_record.encode() for s in (rsa_signer, ed_signer)}

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    raw = message(1).to_bytes()
    print(f"message: {len(raw):,} octets", file=sys.stderr)
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    ed_seed = base64.b64encode(
        ed_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )
    include = [h.encode() for h in SIGNED_HEADERS]

    def dkimpy(selector: bytes, key: bytes, algorithm: bytes) -> bytes:
        return dkim.sign(  # type: ignore[no-any-return]
            raw,
            selector,
            b"example.com",
            key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            signature_algorithm=algorithm,
        )

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("asyncmail `sign`, RSA-2048", lambda: sign(raw, [rsa_signer]), 2000),
        ("asyncmail `sign`, Ed25519", lambda: sign(raw, [ed_signer]), 5000),
        ("asyncmail `sign`, both (dual signing)", lambda: sign(raw, [rsa_signer, ed_signer]), 2000),
        (
            "primitive only: `cryptography` RSA-2048 PKCS#1 v1.5 over a digest",
            lambda: rsa_key.sign(b"\0" * 32, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())),
            2000,
        ),
        (
            "primitive only: `cryptography` Ed25519 over a digest",
            lambda: ed_key.sign(b"\0" * 32),
            5000,
        ),
        ("dkimpy `dkim.sign`, RSA-2048", lambda: dkimpy(b"rsa", rsa_pem, b"rsa-sha256"), 100),
        (
            "dkimpy `dkim.sign`, Ed25519 (PyNaCl)",
            lambda: dkimpy(b"ed", ed_seed, b"ed25519-sha256"),
            1000,
        ),
    ]
    # every signature made here verifies
    for signed in (
        sign(raw, [rsa_signer]) + raw,
        sign(raw, [ed_signer]) + raw,
        dkimpy(b"rsa", rsa_pem, b"rsa-sha256") + raw,
        dkimpy(b"ed", ed_seed, b"ed25519-sha256") + raw,
    ):
        assert dkim.verify(signed, dnsfunc=dns), signed[:300]
    lines = ["| case | best µs | median µs |", "|---|---:|---:|"]
    for label, fn, iterations in cases:
        figures = per_call(fn, max(iterations // (10 if quick else 1), 10), repeats)
        lines.append(row(label, figures))
        print(lines[-1], file=sys.stderr)
    return lines


class CallbackTimer:
    """Times each callback the asyncio loop runs: the longest is the longest block."""

    def __init__(self) -> None:
        self.longest_wall = self.longest_cpu = 0.0
        self.original = asyncio.events.Handle._run  # noqa: SLF001 (a benchmark's probe)

    def __enter__(self) -> CallbackTimer:
        timer, original = self, self.original

        def timed(handle: asyncio.Handle) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            original(handle)
            timer.longest_wall = max(timer.longest_wall, time.perf_counter() - wall)
            timer.longest_cpu = max(timer.longest_cpu, time.thread_time() - cpu)

        asyncio.events.Handle._run = timed  # type: ignore[method-assign,assignment]  # noqa: SLF001
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.events.Handle._run = self.original  # type: ignore[method-assign]  # noqa: SLF001


async def lag_probe(port: int, count: int, signers: tuple[DKIM, ...]) -> dict[str, float]:
    """Send ``count`` messages with send_many while a probe measures how late the loop wakes."""
    lateness: list[float] = []
    done = anyio.Event()
    timer = CallbackTimer()

    async def probe() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await anyio.sleep(0.001)
            lateness.append(time.perf_counter() - start - 0.001)

    server = Server(host="127.0.0.1", port=port, tls=TLSMode.NONE)
    messages = [message(i) for i in range(count)]  # (built before: not what is measured)
    async with (
        Mailer(server, dkim=signers, max_connections=10, retry=RetryPolicy(attempts=1)) as mailer,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(probe)
        await anyio.sleep(0.05)
        lateness.clear()
        start = time.perf_counter()
        delivered = 0
        with timer:
            async for result in mailer.send_many(messages):
                delivered += result.status.value == "delivered"
        wall = time.perf_counter() - start
        done.set()
    lateness.sort()
    return {
        "delivered": delivered,
        "msg_per_s": delivered / wall,
        "max_ms": lateness[-1] * 1e3,
        "p99_ms": lateness[int(len(lateness) * 0.99)] * 1e3,
        "p50_ms": lateness[len(lateness) // 2] * 1e3,
        "callback_wall_ms": timer.longest_wall * 1e3,
        "callback_cpu_ms": timer.longest_cpu * 1e3,
    }


def loop_lag(count: int) -> list[str]:
    rsa_signer = DKIM(
        domain="example.com",
        selector="rsa",
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    ed_signer = DKIM(domain="example.com", selector="ed", key=ed25519.Ed25519PrivateKey.generate())
    child = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        lines = [
            "| signing | delivered | msg/s | probe lateness p50 ms | p99 ms | max ms "
            "| longest callback, wall ms | its CPU ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for label, signers in (
            ("none", ()),
            ("Ed25519", (ed_signer,)),
            ("RSA-2048", (rsa_signer,)),
            ("RSA-2048 + Ed25519", (rsa_signer, ed_signer)),
            ("none (again)", ()),
        ):
            r = asyncio.run(lag_probe(port, count, signers))
            lines.append(
                f"| {label} | {r['delivered']:,.0f} | {r['msg_per_s']:,.0f} | "
                f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.2f} | "
                f"{r['callback_wall_ms']:.2f} | {r['callback_cpu_ms']:.2f} |"
            )
            print(lines[-1], file=sys.stderr)
        return lines
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=10)


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return (
        f'nproc = {os.cpu_count()}, CPU "{model}", Python {platform.python_version()}, '
        f"cryptography {_version('cryptography')}, dkimpy {_version('dkimpy')}, "
        f"PyNaCl {_version('pynacl')}; load average {load:.2f} at the start"
    )


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="a tenth of the iterations")
    args = parser.parse_args()
    print(f"Machine: {machine()}")
    print(f"Run at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("\n".join(signing(args.repeats, args.quick)))
    print()
    print("\n".join(loop_lag(args.messages // (10 if args.quick else 1))))


if __name__ == "__main__":
    main()
