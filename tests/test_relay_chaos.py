"""Chaos: the relay is SIGKILLed while clients send through it, and no 250 is ever lost.

Clients (Python's smtplib, four threads) send 5,000 messages through ``asyncmail relay`` (a real
process) to a capture server. Every second or so the relay is killed with SIGKILL and a new
one started on the same port, on the same outbox. A client that loses its connection sends
that message again, as any SMTP client does. Then:

- every message whose 250 a client saw arrived upstream at least once;
- a message arrived twice only from the unknown windows: the client's (the relay committed
  it, then died before the client read the 250: the client sent it again), or the relay's
  (the relay was killed after the upstream took it, before the outbox recorded that: the
  next relay sends it again; at most the messages in flight at each kill).

It prints one line with the counts (pytest -s), such as: 5000 confirmed, 10 SIGKILLs, lost 0,
40 duplicated (7 the client sent again, 33 the relay sent again after a kill).
"""

from __future__ import annotations

import random
import re
import signal
import smtplib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from asyncmail.testing import CapturedMessage, CaptureServer

from ._relay_process import RelayProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOTAL = 5000
CLIENTS = 4
KILL_EVERY = (0.8, 1.6)
CONCURRENCY = 10
#: Messages a relay may hold (leased, in flight, or delivered but not yet recorded) at once.
HELD = 3 * CONCURRENCY
_ID = re.compile(rb"\r\nX-Chaos-Id: (\d+)\r\n")


def message(i: int) -> bytes:
    return (
        f"From: app@example.com\r\nTo: user-{i}@example.org\r\nSubject: chaos {i}\r\n"
        f"Message-ID: <chaos-{i}@example.com>\r\nX-Chaos-Id: {i}\r\n\r\n"
        f"message {i}\r\n.a line with a dot\r\n"
    ).encode()


class Arrivals:
    """What the upstream server stored, by chaos id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.copies: Counter[int] = Counter()

    def __call__(self, captured: CapturedMessage) -> None:
        found = _ID.search(captured.data)
        assert found is not None
        with self.lock:
            self.copies[int(found.group(1))] += 1


@dataclass
class Sent:
    """What the clients saw."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    confirmed: set[int] = field(default_factory=set)  # a 250 was read
    retried: set[int] = field(default_factory=set)  # an attempt failed with no answer
    attempts: int = 0


def client(port: int, indices: list[int], sent: Sent, stop: threading.Event) -> None:
    """Send each message until its 250 is read, reconnecting as often as it takes."""
    connection: smtplib.SMTP | None = None
    for i in indices:
        while not stop.is_set():
            try:
                if connection is None:
                    connection = smtplib.SMTP("127.0.0.1", port, local_hostname="chaos.test")
                with sent.lock:
                    sent.attempts += 1
                connection.sendmail("app@example.com", [f"user-{i}@example.org"], message(i))
            except (OSError, smtplib.SMTPException):
                with sent.lock:
                    sent.retried.add(i)
                if connection is not None:
                    connection.close()
                connection = None
                time.sleep(0.05)
                continue
            with sent.lock:
                sent.confirmed.add(i)
            break
    if connection is not None:
        connection.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_chaos(tmp: Path, total: int) -> tuple[Sent, Arrivals, int, float]:
    """Send ``total`` messages through a relay that is killed again and again."""
    arrivals = Arrivals()
    sent = Sent()
    port = free_port()
    outbox = f"sqlite:///{tmp / 'relay.db'}"
    with CaptureServer(record=False, on_message=arrivals).run_in_thread() as upstream:
        args = (
            f"--listen=127.0.0.1:{port}",
            f"--outbox={outbox}",
            f"--url={upstream.url}",
            "--relay-domains=example.org",
            f"--concurrency={CONCURRENCY}",
            "--lease-seconds=1.5",
        )
        relay = RelayProcess(*args, measured=False)
        relay.started()
        stop = threading.Event()
        threads = [
            threading.Thread(target=client, args=(port, list(range(k, total, CLIENTS)), sent, stop))
            for k in range(CLIENTS)
        ]
        rng = random.Random(13)
        kills = 0
        began = time.monotonic()
        try:
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                time.sleep(rng.uniform(*KILL_EVERY))
                if not any(t.is_alive() for t in threads):
                    break
                relay.process.send_signal(signal.SIGKILL)
                relay.process.wait()
                kills += 1
                relay = RelayProcess(*args, measured=False)
                relay.started()
                assert time.monotonic() - began < 240, "the clients are not getting through"
            deadline = time.monotonic() + 60
            while not sent.confirmed <= set(arrivals.copies) and time.monotonic() < deadline:
                time.sleep(0.1)
            relay.process.send_signal(signal.SIGTERM)
            assert relay.finish() == 0, relay.output
        finally:
            stop.set()
            relay.kill()
            for thread in threads:
                thread.join(10)
    return sent, arrivals, kills, time.monotonic() - began


def report(sent: Sent, arrivals: Arrivals, kills: int, seconds: float, total: int) -> str:
    doubled = {i for i, n in arrivals.copies.items() if n > 1}
    return (
        f"relay chaos: {total} messages, {len(sent.confirmed)} confirmed (250 read), "
        f"{sent.attempts} attempts, {kills} SIGKILLs in {seconds:.1f} s; upstream: "
        f"{len(arrivals.copies)} distinct, {sum(arrivals.copies.values())} copies; lost: "
        f"{len(sent.confirmed - set(arrivals.copies))}; duplicated: {len(doubled)} "
        f"({len(doubled & sent.retried)} the client sent again, "
        f"{len(doubled - sent.retried)} the relay sent again after a kill)"
    )


def test_a_250_from_the_relay_survives_sigkill(tmp_path: Path) -> None:
    sent, arrivals, kills, seconds = run_chaos(tmp_path, TOTAL)
    print("\n" + report(sent, arrivals, kills, seconds, TOTAL))
    assert kills >= 3, "the run was too short to kill anything"
    assert sent.confirmed == set(range(TOTAL))  # (the clients kept at it until each 250)
    lost = sent.confirmed - set(arrivals.copies)
    assert not lost, sorted(lost)[:20]
    doubled = {i for i, n in arrivals.copies.items() if n > 1}
    # a copy too many comes only from an unknown window: the client's, or one per message
    # the relay held when it was killed
    assert len(doubled - sent.retried) <= kills * HELD
    assert max(arrivals.copies.values()) <= 2 + kills
