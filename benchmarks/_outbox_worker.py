"""One process of benchmarks/outbox.py: an outbox worker, or the ``send_many`` baseline.

    python benchmarks/_outbox_worker.py worker --outbox URL --smtp URL [--concurrency 10]
    python benchmarks/_outbox_worker.py send-many --smtp URL --count N [--offset I]

Both open what they need (Mailer, Outbox), print ``ready``, and wait for a line on stdin
before they start, so that the parent times delivery, not interpreter start-up and imports.

``worker`` delivers until it is killed (SIGTERM or SIGKILL), or, with ``--exit-after N``,
until it has settled N messages (or settled none for ``--idle-exit`` seconds); it then
prints one JSON line (its counts, seconds, CPU by thread, bytes written), and with
``--profile PATH`` writes cProfile stats of the delivery (every thread: the event loop's and
the SQLite store's) to PATH.

``send-many`` sends messages ``offset .. offset+count-1`` with ``Mailer.send_many`` and prints
one JSON line: delivered, failed, and the seconds (wall and CPU) from "go" to the last result.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the asyncmail next to this script, as run.py measures it

import anyio  # noqa: E402

from asyncmail import Mailer, Message, Outbox, Status  # noqa: E402

SENDER = "商店 <shop@example.com>"
TEXT = "\n".join(["Hello {name}, your order has shipped and will arrive soon. Thanks!"] * 30)
HTML = "\n".join(["<p>Hello {name}, your order has <b>shipped</b>.</p>"] * 60)


def message(i: int) -> Message:
    """Message ``i``: a Chinese display name, ~2 KB of text and ~3 KB of HTML, personalised."""
    name = f"用户{i}"
    return Message(
        sender=SENDER,
        to=f"{name} <u{i}@example.net>",
        subject=f"订单 {i} 已发货",
        text=TEXT.format(name=name),
        html=HTML.format(name=name),
    )


def messages(offset: int, count: int) -> Iterator[Message]:
    for i in range(offset, offset + count):
        yield message(i)


async def wait_for_go() -> None:
    print("ready", flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)


class ThreadProfiles:
    """cProfile in the calling thread and in every thread started after ``start()``."""

    def __init__(self, timer: str = "wall") -> None:
        # "cpu": each thread's CPU time (no waits for the disk, a lock or the GIL), slower.
        self.timer = time.thread_time if timer == "cpu" else time.perf_counter
        self.main = cProfile.Profile(self.timer)
        self.others: list[cProfile.Profile] = []

    def _in_new_thread(self, frame: FrameType, event: str, arg: object) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile(self.timer)
        self.others.append(profile)
        profile.enable()

    def start(self) -> None:
        threading.setprofile(self._in_new_thread)  # (before the store starts its thread)

    def enable_main(self) -> None:
        self.main.enable()

    def dump(self, path: str) -> None:
        self.main.disable()
        threading.setprofile(None)
        stats = pstats.Stats(self.main)
        for profile in self.others:
            # Not disabled from its own thread: its thread is idle by now (the store's waits
            # on its queue); create_stats() closes the frames still open at this moment.
            stats.add(profile)
        stats.dump_stats(path)


class Usage:
    """This process's CPU seconds (by thread: the event loop's, the others) and disk writes."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> dict[str, float]:
        import psutil

        me = psutil.Process()
        main = other = 0.0
        for t in me.threads():
            if t.id == me.pid:
                main += t.user_time + t.system_time
            else:
                other += t.user_time + t.system_time
        return {
            "cpu_s": time.process_time(),
            "main_thread_cpu_s": main,
            "other_threads_cpu_s": other,
            "write_bytes": float(me.io_counters().write_bytes),
        }

    def since(self) -> dict[str, float]:
        now = self._now()
        return {k: now[k] - self.start[k] for k in now}


async def worker(args: argparse.Namespace) -> None:
    profiles = ThreadProfiles(args.profile_timer) if args.profile else None
    if profiles is not None:
        profiles.start()
    mailer = Mailer(args.smtp, max_connections=args.concurrency)
    outbox = Outbox(args.outbox)
    async with mailer, outbox:
        await wait_for_go()
        if profiles is not None:
            profiles.enable_main()
        started, usage = time.perf_counter(), Usage()
        async with outbox.deliver(mailer, concurrency=args.concurrency) as delivery:
            if not args.exit_after:
                await anyio.sleep_forever()
            settled, last = 0, time.perf_counter()
            while settled < args.exit_after:
                await anyio.sleep(0.01)
                now = delivery.delivered + delivery.failed + delivery.unknown
                if now != settled:
                    settled, last = now, time.perf_counter()
                elif args.idle_exit and settled and time.perf_counter() - last > args.idle_exit:
                    break  # the other workers took the rest
            wall, used = last - started, usage.since()
    if profiles is not None:
        profiles.dump(args.profile)
    result = {"delivered": delivery.delivered, "settled": settled, "wall_s": wall, **used}
    print(json.dumps(result), flush=True)


async def send_many(args: argparse.Namespace) -> None:
    async with Mailer(args.smtp, max_connections=args.concurrency) as mailer:
        await wait_for_go()
        started, cpu = time.perf_counter(), time.process_time()
        delivered = failed = 0
        gen = messages(args.offset, args.count)
        async for result in mailer.send_many(gen, concurrency=args.concurrency):
            if result.status is Status.DELIVERED:
                delivered += 1
            else:
                failed += 1
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(json.dumps({"delivered": delivered, "failed": failed, "wall_s": wall, "cpu_s": cpu}))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("worker", help="deliver from an outbox until killed")
    w.add_argument("--outbox", required=True, help="sqlite:////path.db or redis://...")
    w.add_argument("--exit-after", type=int, default=0, help="stop after N settled messages")
    w.add_argument("--profile", help="with --exit-after: write cProfile stats here")
    w.add_argument("--profile-timer", choices=("wall", "cpu"), default="wall")
    w.add_argument(
        "--idle-exit", type=float, default=0.0, help="with --exit-after: or after S idle seconds"
    )
    s = sub.add_parser("send-many", help="the baseline: Mailer.send_many straight to the server")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--offset", type=int, default=0)
    for parser in (w, s):
        parser.add_argument("--smtp", required=True, help="smtp://127.0.0.1:PORT?tls=none")
        parser.add_argument("--concurrency", type=int, default=10)
    args = p.parse_args(argv)
    if args.mode == "worker":
        if args.profile and not args.exit_after:
            p.error("--profile needs --exit-after")
        anyio.run(worker, args)
    else:
        anyio.run(send_many, args)


if __name__ == "__main__":
    main()
