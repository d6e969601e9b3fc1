"""Chaos: workers are SIGKILLed while they deliver, and nothing is lost or doubled.

Workers deliver a few thousand messages from one outbox to the capture server, which
refuses 5% of them with 4xx (some for good, some once) and drops 1% of connections right
after storing the message (the client cannot know it arrived). Every few seconds one
worker is killed with SIGKILL and a new one started. Then:

- every message has exactly one final state;
- the server stored exactly one copy of each DELIVERED message, none of each FAILED one,
  and at most one of each UNKNOWN one;
- over any 1 s window the server saw at most the shared rate plus one per worker.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from asyncmail import Message, Outbox, OutboxState
from asyncmail.testing import CapturedMessage, CaptureServer, Fault

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
RATE = 300  # messages per second, shared by every worker (below what they could do)
LEASE_SECONDS = 1.5
KILL_EVERY = (2.5, 4.5)


def _message(i: int) -> Message:
    if i % 20 == 0:
        local = f"gone4xx-{i}"  # 2.5%: a 4xx every time: retried, then FAILED
    elif i % 20 == 10:
        local = f"flaky-{i}"  # 2.5%: a 4xx the first time (while the fault lasts)
    elif i % 100 == 1:
        local = f"drop-{i}"  # 1%: the connection drops right after the message is stored
    else:
        local = f"user-{i}"
    return Message(
        sender="shop@example.com",
        to=f"{local}@example.net",
        subject=f"Chaos #{i}",
        text=f"Message {i}\n.\nwith a lone dot",
    )


class _Arrivals:
    """What the server stored, by recipient, and when (server side, monotonic)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.copies: Counter[str] = Counter()
        self.times: list[float] = []

    def __call__(self, message: CapturedMessage) -> None:
        now = time.monotonic()
        with self.lock:
            self.times.append(now)
            for rcpt in message.recipients:
                self.copies[rcpt] += 1


def _max_in_any_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


class _Workers:
    def __init__(self, outbox_url: str, smtp_url: str, count: int) -> None:
        self.args = [outbox_url, smtp_url, f"{RATE}/s", str(LEASE_SECONDS)]
        self.procs = [self._start() for _ in range(count)]
        self.kills = 0

    def _start(self) -> subprocess.Popen[bytes]:
        # (not measured for coverage: a worker killed with SIGKILL writes no data anyway)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
        return subprocess.Popen(
            [sys.executable, "-m", "tests._outbox_worker", *self.args],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env=env,
        )

    def kill_one(self, rng: random.Random) -> None:
        i = rng.randrange(len(self.procs))
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        self.kills += 1
        self.procs[i] = self._start()

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


async def _chaos(outbox_url: str, workers: int, total: int) -> None:
    arrivals = _Arrivals()
    faults = [
        Fault.reply("rcpt", 451, "4.2.1 Mailbox busy", match="gone4xx-"),
        Fault.reply("rcpt", 451, "4.2.1 Try again", match="flaky-", times=total // 40),
        Fault.disconnect("dot", match="drop-"),
    ]
    server = CaptureServer(faults=faults, record=False, on_message=arrivals)
    with server.run_in_thread():
        async with Outbox(outbox_url) as outbox:
            keys = [f"chaos:{i}" for i in range(total)]
            crew = _Workers(outbox_url, server.url, workers)
            try:
                began = time.monotonic()
                async with anyio.create_task_group() as tg:
                    for start in range(0, total, total // 8):
                        tg.start_soon(
                            _enqueue, outbox, range(start, min(total, start + total // 8))
                        )
                print(f"\nenqueued {total} in {time.monotonic() - began:.1f} s")
                rng = random.Random(1)
                with anyio.fail_after(420):
                    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
                    while True:
                        stats = await outbox.statistics()
                        open_ = sum(
                            stats.counts[s]
                            for s in (OutboxState.QUEUED, OutboxState.LEASED, OutboxState.SENDING)
                        )
                        if open_ == 0:
                            break
                        if time.monotonic() >= next_kill:
                            crew.kill_one(rng)
                            next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
                        await anyio.sleep(0.2)
            finally:
                crew.stop()
            assert crew.kills >= 3, "the run was too short to kill anything"
            by_state: Counter[OutboxState] = Counter()
            for i, key in enumerate(keys):
                status = await outbox.status(key)
                assert status is not None and status.final, key
                by_state[status.state] += 1
                rcpt = _message(i).to[0].addr
                copies = arrivals.copies[rcpt]
                if status.state is OutboxState.DELIVERED:
                    assert copies == 1, (key, status)
                elif status.state is OutboxState.FAILED:
                    assert copies == 0, (key, status)
                else:
                    assert copies <= 1, (key, status)
            assert by_state[OutboxState.DELIVERED] >= total * 0.9
            assert by_state[OutboxState.FAILED] >= total // 20 // 2  # the 4xx-for-good ones
            busiest = _max_in_any_window(arrivals.times)
            print(
                f"\nchaos {outbox_url.partition(':')[0]}: {dict(by_state)} kills={crew.kills} "
                f"busiest 1 s window={busiest} (limit {RATE} + {workers} workers)"
            )
            assert busiest <= RATE + workers, (busiest, by_state)


async def _enqueue(outbox: Outbox, indices: range) -> None:
    for i in indices:
        await outbox.enqueue(_message(i), key=f"chaos:{i}")


def test_sqlite_outbox_survives_sigkill_of_its_workers(tmp_path: Path) -> None:
    anyio.run(_chaos, f"sqlite:///{tmp_path / 'chaos.db'}", 2, 20_000)


def test_redis_outbox_survives_sigkill_of_its_workers(redis_url: str) -> None:
    anyio.run(_chaos, redis_url, 3, 20_000)
