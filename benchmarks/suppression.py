"""What honouring a suppression list costs ``Outbox.enqueue``: sequential enqueue latency.

    python benchmarks/suppression.py [--count N] [--listed N] [--modes off,store,csv]

For each store (SQLite in a temp dir; Redis when ``redis-server`` is on PATH, started on a
free port with AOF on) and each mode (``off``: no list; ``store``: the outbox's own list,
``suppression=True``; ``csv``: a ``CsvSuppressions``), with ``--listed`` addresses on the
list, times ``--count`` sequential enqueues of a one-recipient message not on the list and
prints p50/p99 in milliseconds. Modes are interleaved in rounds so that a machine's load
drifts over all of them alike. ``--modes off`` also runs on an asyncmail without the
suppression list (for a before/after). Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from asyncmail import Message, Outbox  # noqa: E402

ROUNDS = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _fill(url: str, mode: str, listed: int, csv_path: Path) -> Any:  # noqa: ANN401
    """The ``suppression`` argument for ``mode``, with ``listed`` addresses on the list."""
    if mode == "off":
        return None
    from asyncmail import CsvSuppressions, Suppression

    when = datetime.now(UTC)
    entries = [
        Suppression(address=f"gone{i}@example.org", reason="hard-bounce", added_at=when)
        for i in range(listed)
    ]
    if mode == "csv":
        lst = CsvSuppressions(csv_path)
        await lst.add(entries)
        return lst
    async with Outbox(url) as outbox:
        await outbox.suppressions.add(entries)
    return True


async def _time(url: str, suppression: Any, count: int, tag: str) -> list[float]:  # noqa: ANN401
    kwargs = {} if suppression is None else {"suppression": suppression}
    samples = []
    async with Outbox(url, **kwargs) as outbox:
        for i in range(count + 20):
            msg = Message(sender="shop@example.com", to=[f"u{i}@example.net"], text="hi")
            started = time.perf_counter()
            await outbox.enqueue(msg, key=f"{tag}:{i}")
            if i >= 20:  # (warm-up)
                samples.append(time.perf_counter() - started)
        await outbox.purge(["failed", "delivered", "unknown"])
    return samples


def _report(store: str, mode: str, samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[int(len(ms) * 0.99) - 1]
    return f"{store:7} {mode:6} n={len(ms):6}  p50 {statistics.median(ms):.3f} ms  p99 {p99:.3f} ms"


async def run(args: argparse.Namespace, urls: dict[str, str], tmp: Path) -> None:
    modes = args.modes.split(",")
    for store, url in urls.items():
        found: dict[str, list[float]] = {m: [] for m in modes}
        setup = {m: await _fill(url, m, args.listed, tmp / f"{store}.csv") for m in modes}
        for r in range(ROUNDS):
            for m in modes:
                found[m] += await _time(url, setup[m], args.count // ROUNDS, f"{m}{r}")
        for m in modes:
            print(_report(store, m, found[m]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--count", type=int, default=5000, help="enqueues timed per store and mode")
    p.add_argument("--listed", type=int, default=10_000, help="addresses on the list")
    p.add_argument("--modes", default="off,store,csv")
    p.add_argument("--stores", default="sqlite,redis")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        urls = {}
        redis: subprocess.Popen[bytes] | None = None
        if "sqlite" in args.stores:
            urls["sqlite"] = f"sqlite:///{tmp / 'outbox.db'}"
        server = shutil.which("redis-server")
        if "redis" in args.stores and server:
            port = _free_port()
            redis = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp_dir,
                 "--appendonly", "yes", "--save", ""],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)
            urls["redis"] = f"redis://127.0.0.1:{port}/0?queue=bench"
        try:
            asyncio.run(run(args, urls, tmp))
        finally:
            if redis is not None:
                redis.kill()
                redis.wait()


if __name__ == "__main__":
    main()
