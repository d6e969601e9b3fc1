"""A profiling target: send_many of personalised messages into smtp-sink on loopback.

    apt-get install -y postfix            # for /usr/sbin/smtp-sink (see benchmarks/README.md)
    python benchmarks/profile_send_many.py 20000          # prints msg/s and CPU seconds
    py-spy record --gil -f raw -o benchmarks/out/profile.txt -- \\
        python benchmarks/profile_send_many.py 20000      # where the CPU goes
    python benchmarks/profile_send_many.py --summarise benchmarks/out/profile.txt
    python benchmarks/profile_send_many.py 20000 --cprofile benchmarks/out/send_many.prof

``--gil`` samples only while Python holds the GIL, so time spent blocked in a system call or
waiting for the sink is not counted as Python work. Set UVLOOP=1 to run on uvloop.

The CPU time is this process's only (``time.process_time``): smtp-sink runs in a process of
its own. It covers building the messages too, since ``send_many`` pulls them from a
generator. ``--cprofile FILE`` runs the send under cProfile (which slows it several times,
so its CPU figure is not the one to quote), saves the stats and prints the top entries by
own time and by cumulative time (in CPU seconds of this process: a wall-clock profile
would charge a write to loopback with the time the sink runs in between).

On a shared machine the CPU per message moves by a quarter from run to run. To compare two
versions, count the instructions of this process instead (deterministic to about 0.3 %),
and take the slope between two counts, which cancels start-up:

    UVLOOP=1 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        python benchmarks/profile_send_many.py 1000      # then 3000: (I3000 - I1000) / 2000
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import os
import pstats
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

from asyncmail import Mailer, Message, RetryPolicy, Status

TEXT = "\n".join(["Hello {name}, your order has shipped and will arrive soon. Thanks!"] * 30)
HTML = "\n".join(["<p>Hello {name}, your order has <b>shipped</b>.</p>"] * 60)


def messages(count: int) -> Iterator[Message]:
    for i in range(count):
        yield Message(
            sender="商店 <shop@example.com>",
            to=f"用户{i} <u{i}@example.net>",
            subject=f"订单 {i}",
            text=TEXT.format(name=i),
            html=HTML.format(name=i),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def main(count: int, port: int, profile: cProfile.Profile | None = None) -> None:
    await asyncio.sleep(0.3)  # let the sink start listening
    url = f"smtp://127.0.0.1:{port}?tls=none"
    async with Mailer(url, max_connections=10, retry=RetryPolicy(attempts=1)) as mailer:
        started, cpu = time.perf_counter(), time.process_time()
        delivered = 0
        if profile is not None:
            profile.enable()
        async for result in mailer.send_many(messages(count)):
            delivered += result.status is Status.DELIVERED
        if profile is not None:
            profile.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"{delivered}/{count} delivered in {wall:.2f} s: {count / wall:,.0f} msg/s, "
        f"{cpu / count * 1e6:.0f} µs CPU per message "
        f"(process user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s)"
    )


def summarise(path: str, top: int = 40) -> None:
    """Inclusive share of samples per function, from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            total += int(count)
            for frame in set(stack.split(";")):
                inclusive[frame.split(":")[0]] += int(count)
    for frame, samples in inclusive.most_common(top):
        print(f"{100 * samples / total:5.1f}%  {frame}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summarise"]:
        summarise(sys.argv[2])
    else:
        if os.environ.get("UVLOOP"):
            import uvloop

            uvloop.install()
        args = sys.argv[1:]
        profile, out = None, None
        if "--cprofile" in args:
            at = args.index("--cprofile")
            out = args[at + 1]
            del args[at : at + 2]
            profile = cProfile.Profile(time.process_time)  # CPU, not wall time
        port = free_port()
        sink = subprocess.Popen(["/usr/sbin/smtp-sink", "-u", "root", f"127.0.0.1:{port}", "1000"])
        try:
            asyncio.run(main(int(args[0]) if args else 20_000, port, profile))
        finally:
            sink.terminate()
            sink.wait()
        if profile is not None and out is not None:
            profile.dump_stats(out)
            for key in ("tottime", "cumulative"):
                pstats.Stats(out).strip_dirs().sort_stats(key).print_stats(30)
