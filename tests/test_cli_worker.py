"""``asyncmail worker`` in a subprocess: it delivers an outbox, and stops well on SIGTERM.

The outbox is read back through its API once the process is gone (or while it runs, to see
that a graceful stop hands messages back at once).
"""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asyncmail import Message, Outbox, OutboxStatistics
from asyncmail.testing import CaptureServer, Fault

PASSWORD = "s3cret-Pa55"
#: Seconds any one wait in these tests may take before it fails.
PATIENCE = 20.0


def message(i: int) -> Message:
    return Message(
        sender="shop@example.com", to=f"user{i}@example.net", subject=f"#{i}", text="hello"
    )


def enqueue(url: str, count: int) -> None:
    async def go() -> None:
        async with Outbox(url) as outbox:
            for i in range(count):
                await outbox.enqueue(message(i), key=f"order:{i}")

    asyncio.run(go())


def statistics(url: str) -> OutboxStatistics:
    async def go() -> OutboxStatistics:
        async with Outbox(url) as outbox:
            return await outbox.statistics()

    return asyncio.run(go())


def counts(url: str) -> dict[str, int]:
    return {state.value: n for state, n in statistics(url).counts.items() if n}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Worker:
    """An ``asyncmail worker`` process, its output read line by line on a thread."""

    def __init__(self, *args: str) -> None:
        code = "from asyncmail.cli import main; main()"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, "worker", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout:
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first line from now on that matches ``pattern``."""
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))
            if line is None:
                pytest.fail(f"exited before {pattern!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if m := re.search(pattern, line):
                return m

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> tuple[int, str]:
        """Wait for the exit; the code and the whole output."""
        code = self.process.wait(timeout=PATIENCE)
        while (line := self._queue.get(timeout=PATIENCE)) is not None:
            self.lines.append(line)
        return code, "\n".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def outbox_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def start(workers: list[Worker], *args: str) -> Worker:
    worker = Worker(*args)
    workers.append(worker)
    worker.wait_for_line(r"^worker .*: delivering ")
    return worker


def test_worker_delivers_and_exits_0_on_sigterm_with_a_summary(
    outbox_url: str, workers: list[Worker]
) -> None:
    enqueue(outbox_url, 5)
    auth = {"shop": PASSWORD}
    with CaptureServer(auth=auth, auth_require_tls=False).run_in_thread() as server:
        smtp = f"smtp://shop:{PASSWORD}@{server.host}:{server.port}?allow_plaintext_auth=true"
        worker = start(workers, "--outbox", outbox_url, "--url", smtp, "--rate", "100/s")
        server.wait_for_messages_sync(5, timeout=PATIENCE)
        wait_for(lambda: counts(outbox_url) == {"delivered": 5}, "5 delivered")
        worker.signal(signal.SIGTERM)
        code, output = worker.finish()
    assert code == 0, output
    first, last = output.splitlines()[0], output.splitlines()[-1]
    assert f"delivering {outbox_url} through opportunistic://shop@127.0.0.1:" in first
    assert last == "worker stopped: 5 delivered, 0 failed, 0 unknown, 0 retried"
    assert PASSWORD not in output
    assert sorted(r for m in server.messages for r in m.recipients) == sorted(
        f"user{i}@example.net" for i in range(5)
    )


def test_sigterm_lets_slow_sends_finish_and_hands_the_others_back_at_once(
    outbox_url: str, workers: list[Worker]
) -> None:
    """Two sends wait on a slow final reply; the four leased behind them go back at once."""
    enqueue(outbox_url, 8)
    slow = CaptureServer(faults=[Fault.delay("dot", 2.0)], pipelining=False)
    with slow.run_in_thread() as server:
        worker = start(workers, "--outbox", outbox_url, "--url", server.url, "--concurrency", "2")
        server.wait_for_messages_sync(2, timeout=PATIENCE)  # (stored; their 250 comes later)
        # (a worker holds up to 3 messages per unit of concurrency: 2 sending, 4 leased)
        wait_for(lambda: counts(outbox_url) == {"queued": 2, "leased": 4, "sending": 2}, "leases")
        worker.signal(signal.SIGTERM)
        worker.wait_for_line(r"^SIGTERM: stopping")
        # while the two sends still wait for their reply, the other six are queued again
        wait_for(lambda: counts(outbox_url) == {"queued": 6, "sending": 2}, "6 queued")
        code, output = worker.finish()
    assert code == 0, output
    assert output.splitlines()[-1] == "worker stopped: 2 delivered, 0 failed, 0 unknown, 0 retried"
    assert counts(outbox_url) == {"queued": 6, "delivered": 2}
    assert len(server.messages) == 2


def test_second_sigterm_stops_at_once_and_leaves_nothing_leased(
    outbox_url: str, workers: list[Worker]
) -> None:
    """The sends whose dot is out end UNKNOWN; every other message is queued again."""
    enqueue(outbox_url, 6)
    stalled = CaptureServer(faults=[Fault.stall("dot")], pipelining=False)
    with stalled.run_in_thread() as server:
        worker = start(
            workers,
            *("--outbox", outbox_url, "--url", server.url, "--concurrency", "2"),
            *("--lease-seconds", "2", "--grace", "60"),
        )
        server.wait_for_messages_sync(2, timeout=PATIENCE)  # (never answered)
        worker.signal(signal.SIGTERM)
        worker.wait_for_line(r"^SIGTERM: stopping")
        worker.signal(signal.SIGTERM)
        code, output = worker.finish()
    assert code == 130, output
    assert "SIGTERM again: stopping at once" in output
    assert output.splitlines()[-1] == "worker cut off: 0 delivered, 0 failed, 2 unknown, 0 retried"
    assert counts(outbox_url) == {"queued": 4, "unknown": 2}


def test_metrics_endpoint_counts_what_the_worker_delivered(
    outbox_url: str, workers: list[Worker]
) -> None:
    enqueue(outbox_url, 4)
    refusing = CaptureServer(
        faults=[Fault.reply("rcpt", 550, "5.1.1 no such user", match="user3@")]
    )
    with refusing.run_in_thread() as server:
        worker = Worker(
            *("--outbox", outbox_url, "--url", server.url),
            *("--metrics-port", "0", "--metrics-interval", "0.1"),
        )
        workers.append(worker)
        port = worker.wait_for_line(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1)
        expected = [
            'asyncmail_outbox_messages_total{outcome="delivered"} 3.0',
            'asyncmail_outbox_messages_total{outcome="failed"} 1.0',
            'asyncmail_outbox_messages_total{outcome="unknown"} 0.0',
            'asyncmail_outbox_messages_total{outcome="retried"} 0.0',
            "asyncmail_outbox_retries_total 0.0",
            "asyncmail_outbox_send_seconds_count 4.0",
            "asyncmail_outbox_queue_depth 0.0",
        ]

        def scraped() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                lines = r.read().decode().splitlines()
            return all(line in lines for line in expected)

        wait_for(scraped, "the metrics")
        worker.signal(signal.SIGINT)
        code, output = worker.finish()
    assert code == 0, output
    assert output.splitlines()[-1] == "worker stopped: 3 delivered, 1 failed, 0 unknown, 0 retried"


def test_worker_with_dkim_signs_what_the_application_stored_unsigned(
    outbox_url: str, workers: list[Worker], tmp_path: Path
) -> None:
    """The key can live with the worker only: ``--dkim`` signs each stored message."""
    from cryptography.hazmat.primitives import serialization

    from ._dkim import DOMAIN, ed25519_key, ed25519_signer, verdicts

    key = ed25519_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "ed.pem").write_bytes(key)
    enqueue(outbox_url, 2)
    with CaptureServer().run_in_thread() as server:
        smtp = f"smtp://{server.host}:{server.port}?tls=none"
        dkim = f"{DOMAIN}:ed:{tmp_path / 'ed.pem'}"
        worker = start(workers, "--outbox", outbox_url, "--url", smtp, "--dkim", dkim)
        server.wait_for_messages_sync(2, timeout=PATIENCE)
        wait_for(lambda: counts(outbox_url) == {"delivered": 2}, "2 delivered")
        worker.signal(signal.SIGTERM)
        code, output = worker.finish()
    assert code == 0, output
    assert [verdicts(m.data, (ed25519_signer(),)) for m in server.messages] == [
        [(DOMAIN, "ed", True)]
    ] * 2
    assert key.decode() not in output
