"""One benchmark peer in one process: ``python benchmarks/_peers.py PEER --port N ...``.

benchmarks/run.py starts this once per (scenario, peer, loop) so each peer's CPU time and peak RSS
are its own. It writes one JSON object to ``--out``: how many messages were sent and delivered,
the send-phase wall and CPU seconds, and, in ``--mode latency``, every request's latency.

Every loop is bounded twice: by ``--count`` and by ``--time-cap`` (no new message is started after
the cap; what completed is what is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from email.message import EmailMessage
from typing import Any

SENDER = "news@bench.example.com"
PEERS = ("smtplib", "aiosmtplib-send", "fastapi-mail", "aiosmtplib-pool", "asyncmail")

_FILLER = (
    "This week in the project: the pool learned to pipeline, the renderer got faster, and the "
    "docs grew a page on bounces. Thank you for reading and for every report you sent us. "
)


def fields(i: int) -> tuple[str, str, str, str]:
    """The personalised parts of message ``i``: recipient, subject, text (~1 KB), html (~1 KB)."""
    name = f"Reader {i}"
    to = f"reader{i}@bench.example.com"
    subject = f"Your weekly digest, {name} (#{i})"
    text = f"Hello {name},\n\n" + (_FILLER + "\n") * 6 + f"\nUnsubscribe: https://x.invalid/u/{i}\n"
    html = (
        f"<html><body><p>Hello <b>{name}</b>,</p>"
        + f"<p>{_FILLER}</p>" * 5
        + f'<p><a href="https://x.invalid/u/{i}">Unsubscribe</a></p></body></html>'
    )
    return to, subject, text, html


def email_message(i: int) -> EmailMessage:
    """Message ``i`` rendered with the standard library, as the smtplib/aiosmtplib peers do."""
    to, subject, text, html = fields(i)
    msg = EmailMessage()
    msg["From"] = SENDER
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


class Budget:
    """Hands out message numbers until ``count`` are out or ``deadline`` has passed."""

    def __init__(self, count: int, time_cap: float) -> None:
        self.count = count
        self.time_cap = time_cap
        self._next = itertools.count()
        self.capped = False
        self.restart()

    def restart(self) -> None:
        """Start the clock (and the CPU clock) now: imports and connecting are not measured."""
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()
        self.deadline = self.start + self.time_cap

    def take(self) -> int | None:
        i = next(self._next)
        if i >= self.count:
            return None
        if time.perf_counter() >= self.deadline:
            self.capped = True
            return None
        return i

    def __iter__(self) -> Iterator[int]:
        while (i := self.take()) is not None:
            yield i


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.errors: dict[str, int] = {}
        self.latencies: list[float] = []

    def error(self, exc: BaseException | str) -> None:
        key = exc if isinstance(exc, str) else type(exc).__name__ + ": " + str(exc)[:120]
        self.errors[key] = self.errors.get(key, 0) + 1


# -- peers: each takes (args, budget, tally) and sends until the budget runs out ------------------


def run_smtplib(args: argparse.Namespace, budget: Budget, tally: Tally) -> None:
    import smtplib

    with smtplib.SMTP(args.host, args.port, timeout=30) as smtp:
        if args.mode == "latency":
            smtp.send_message(email_message(0))
        budget.restart()
        for i in budget:
            t0 = time.perf_counter()
            tally.sent += 1
            try:
                smtp.send_message(email_message(i))
                tally.delivered += 1
            except smtplib.SMTPException as exc:
                tally.error(exc)
            tally.latencies.append(time.perf_counter() - t0)


async def _workers(
    budget: Budget, tally: Tally, concurrency: int, one: Callable[[int], Awaitable[None]]
) -> None:
    """``concurrency`` tasks each sending sequentially; one task when measuring latency."""

    async def worker() -> None:
        for i in budget:
            t0 = time.perf_counter()
            tally.sent += 1
            try:
                await one(i)
                tally.delivered += 1
            except Exception as exc:
                tally.error(exc)
            tally.latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def run_aiosmtplib_send(args: argparse.Namespace, budget: Budget, tally: Tally) -> None:
    import aiosmtplib

    async def one(i: int) -> None:
        await aiosmtplib.send(
            email_message(i),
            hostname=args.host,
            port=args.port,
            use_tls=False,
            start_tls=False,
            timeout=30,
        )

    if args.mode == "latency":
        await one(0)
    budget.restart()
    await _workers(budget, tally, args.concurrency, one)


async def run_fastapi_mail(args: argparse.Namespace, budget: Budget, tally: Tally) -> None:
    from fastapi_mail import ConnectionConfig, FastMail, MessageSchema, MessageType
    from fastapi_mail.schemas import MultipartSubtypeEnum

    conf = ConnectionConfig(
        MAIL_USERNAME="",
        MAIL_PASSWORD="",
        MAIL_FROM=SENDER,
        MAIL_PORT=args.port,
        MAIL_SERVER=args.host,
        MAIL_STARTTLS=False,
        MAIL_SSL_TLS=False,
        USE_CREDENTIALS=False,
        VALIDATE_CERTS=False,
        TIMEOUT=30,
    )
    fm = FastMail(conf)

    async def one(i: int) -> None:
        to, subject, text, html = fields(i)
        await fm.send_message(
            MessageSchema(
                subject=subject,
                recipients=[to],
                body=html,
                alternative_body=text,
                subtype=MessageType.html,
                multipart_subtype=MultipartSubtypeEnum.alternative,
            )
        )

    if args.mode == "latency":
        await one(0)
    budget.restart()
    await _workers(budget, tally, args.concurrency, one)


async def run_aiosmtplib_pool(args: argparse.Namespace, budget: Budget, tally: Tally) -> None:
    """``concurrency`` hand-held, long-lived aiosmtplib.SMTP connections, each sequential."""
    import aiosmtplib

    n = 1 if args.mode == "latency" else args.concurrency
    clients = [
        aiosmtplib.SMTP(hostname=args.host, port=args.port, use_tls=False, start_tls=False)
        for _ in range(n)
    ]
    await asyncio.gather(*(c.connect() for c in clients))
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)

    async def one(i: int) -> None:
        client = await free.get()
        try:
            await client.send_message(email_message(i))
        finally:
            free.put_nowait(client)

    try:
        if args.mode == "latency":
            await one(0)
        budget.restart()
        await _workers(budget, tally, n, one)
    finally:
        for c in clients:
            try:
                await c.quit()
            except Exception:
                c.close()


async def run_asyncmail(args: argparse.Namespace, budget: Budget, tally: Tally) -> None:
    from asyncmail import Mailer, Message, Status

    def message(i: int) -> Message:
        to, subject, text, html = fields(i)
        return Message(sender=SENDER, to=to, subject=subject, text=text, html=html)

    url = f"smtp://{args.host}:{args.port}?tls=none"
    async with Mailer(url, max_connections=args.concurrency) as mailer:
        if args.mode == "latency":
            await mailer.send(message(0))  # warm the pool
            budget.restart()
            for i in budget:
                t0 = time.perf_counter()
                tally.sent += 1
                result = await mailer.send(message(i))
                tally.latencies.append(time.perf_counter() - t0)
                if result.status == Status.DELIVERED:
                    tally.delivered += 1
                else:
                    tally.error(f"{result.status}: {result.error}")
            return

        async def messages() -> AsyncIterator[Any]:
            for i in budget:
                tally.sent += 1
                yield message(i)

        budget.restart()
        async for result in mailer.send_many(messages(), concurrency=args.send_concurrency):
            if result.status == Status.DELIVERED:
                tally.delivered += 1
            else:
                tally.error(f"{result.status}: {result.error}")


def vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it does not include the parent's)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


RUNNERS: dict[str, Callable[..., Any]] = {
    "smtplib": run_smtplib,
    "aiosmtplib-send": run_aiosmtplib_send,
    "fastapi-mail": run_fastapi_mail,
    "aiosmtplib-pool": run_aiosmtplib_pool,
    "asyncmail": run_asyncmail,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("peer", choices=PEERS)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--time-cap", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--send-concurrency", type=int, default=100)
    p.add_argument("--mode", choices=("throughput", "latency"), default="throughput")
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    runner = RUNNERS[args.peer]
    budget = Budget(args.count, args.time_cap)
    tally = Tally()
    if asyncio.iscoroutinefunction(runner):
        if args.uvloop:
            import uvloop

            uvloop.run(runner(args, budget, tally))
        else:
            asyncio.run(runner(args, budget, tally))
    else:
        runner(args, budget, tally)
    wall = time.perf_counter() - budget.start
    cpu = time.process_time() - budget.cpu_start
    with open(args.out, "w") as f:
        json.dump(
            {
                "sent": tally.sent,
                "delivered": tally.delivered,
                "errors": tally.errors,
                "wall_s": wall,
                "cpu_s": cpu,
                "capped": budget.capped,
                "latencies": tally.latencies if args.mode == "latency" else [],
                "vm_hwm_mb": vm_hwm_mb(),
                "imported_from": {
                    m: getattr(sys.modules[m], "__file__", None)
                    for m in ("asyncmail", "aiosmtplib", "uvloop")
                    if m in sys.modules
                },
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
