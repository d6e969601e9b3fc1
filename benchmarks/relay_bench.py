"""``asyncmail relay`` against Postfix doing the same job: accept, queue durably, relay on.

    python benchmarks/relay_bench.py [--count 3000] [--clients 10] [--rounds 1]

Both relays accept on 127.0.0.1 and deliver to one Postfix ``smtp-sink``:

- asyncmail: ``asyncmail relay`` (a process), the outbox in SQLite (``synchronous=FULL``:
  the 250 to a final dot comes after the commit reached the disk), ``--concurrency 10``;
- Postfix: a null client (benchmarks/interop/run_postfix_nullclient.sh: smtpd, its queue,
  ``relayhost`` the sink; Postfix fsyncs a queue file before its 250). Needs root; skipped
  otherwise.

The client is asyncmail's ``Mailer.send_many`` (pipelining, ``--clients`` connections),
sending ``--count`` RawMessages of about 2 KB. Per system it prints: accepted/s (the last
250 read) and end to end/s (the sink counted the last one); the row "no relay" is the same
client straight into the sink, the most the client can do here. Client, relays and sink share
the machine: read the numbers as one run on this machine, with its load shown. Run by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
from run import Sink, machine  # noqa: E402

from asyncmail import Mailer, RawMessage, Status  # noqa: E402

NULLCLIENT = HERE / "interop" / "run_postfix_nullclient.sh"
BODY = ("All work and no play makes Jack a dull boy. " * 2 + "\r\n") * 20


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def messages(count: int, tag: str) -> list[RawMessage]:
    return [
        RawMessage(
            (
                f"From: app@example.com\r\nTo: user{i}@example.net\r\nSubject: bench {i}\r\n"
                f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
                f"Message-ID: <{tag}-{i}@example.com>\r\n\r\n{BODY}"
            ).encode(),
            sender="app@example.com",
            recipients=f"user{i}@example.net",
        )
        for i in range(count)
    ]


async def send_all(port: int, batch: list[RawMessage], clients: int) -> tuple[float, int]:
    """Send ``batch``; seconds until the last 250, and how many got one."""
    began = time.perf_counter()
    delivered = 0
    async with Mailer(f"smtp://127.0.0.1:{port}?tls=none", max_connections=clients) as mailer:
        async for result in mailer.send_many(batch):
            delivered += result.status is Status.DELIVERED
    return time.perf_counter() - began, delivered


def wait_for_sink(sink: Sink, target: int, began: float, limit: float = 600) -> float:
    while sink.messages() < target:
        if time.perf_counter() - began > limit:
            raise SystemExit(f"the sink has {sink.messages()} of {target} after {limit} s")
    return time.perf_counter() - began


def measure(name: str, port: int, sink: Sink, batch: list[RawMessage], clients: int) -> str:
    before = sink.messages()
    began = time.perf_counter()
    accepted_s, accepted = anyio.run(send_all, port, batch, clients)
    e2e_s = wait_for_sink(sink, before + len(batch), began)
    n = len(batch)
    return (
        f"{name:10} {n} messages, {accepted} accepted: accepted {n / accepted_s:7.0f}/s "
        f"({accepted_s:.2f} s), end to end to smtp-sink {n / e2e_s:7.0f}/s ({e2e_s:.2f} s)"
    )


def start_relay(tmp: Path, sink: Sink) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    code = "from asyncmail.cli import main; main()"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            "relay",
            f"--listen=127.0.0.1:{port}",
            f"--outbox=sqlite:///{tmp / 'relay.db'}",
            f"--url=smtp://127.0.0.1:{sink.port}?tls=none",
            "--relay-domains=example.net",
            "--concurrency=10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening" not in line:
        raise SystemExit(f"the relay did not start: {line}{proc.stdout.read()}")
    return proc, port


def start_postfix(tmp: Path, sink: Sink) -> int | None:
    if os.geteuid() != 0 or shutil.which("postfix", path="/usr/sbin:/usr/bin") is None:
        print("postfix: skipped (needs root and the postfix package)")
        return None
    port = free_port()
    env = {
        **os.environ,
        "BASE": str(tmp),
        "PORT": str(port),
        "RELAYHOST": f"[127.0.0.1]:{sink.port}",
    }
    subprocess.run([str(NULLCLIENT), "start"], env=env, check=True, capture_output=True)
    return port


def stop_postfix(tmp: Path) -> None:
    subprocess.run([str(NULLCLIENT), "clean"], env={**os.environ, "BASE": str(tmp)}, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    ns = parser.parse_args()
    binary = shutil.which("smtp-sink") or shutil.which("smtp-sink", path="/usr/sbin")
    if binary is None:
        raise SystemExit("smtp-sink not found: apt-get install -y postfix")
    print(" ".join(f"{k}={v}" for k, v in machine().items()))
    sink = Sink(binary)
    tmp = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    tmp.chmod(0o755)  # (Postfix's daemons run as postfix: they must reach its queue)
    relay, relay_port = start_relay(tmp, sink)
    postfix_port = start_postfix(tmp, sink)
    try:
        for round_ in range(ns.rounds):
            print(f"round {round_ + 1}:")
            batch = messages(ns.count, f"r{round_}")
            # the client alone, straight into the sink: what the client can do at most here
            print(measure("no relay", sink.port, sink, batch, ns.clients), flush=True)
            print(measure("asyncmail", relay_port, sink, batch, ns.clients), flush=True)
            if postfix_port is not None:
                print(measure("postfix", postfix_port, sink, batch, ns.clients), flush=True)
        print(f"loadavg at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.wait(60)
        if postfix_port is not None:
            stop_postfix(tmp)
        sink.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
