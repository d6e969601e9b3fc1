"""A real redis-server for the outbox tests (never a fake): one per session, on a free port.

``redis_server`` starts ``redis-server --appendonly yes --save ''`` in a temporary directory
on 127.0.0.1 and kills it after the session; ``RedisServer.restart()`` kills it (-9) and
starts it again on the same port and directory, for durability tests. ``redis_url`` is its
URL with a queue name of its own for each test. Without redis-server the tests that use it
are skipped, except in CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Protocol

import pytest

MISSING = "redis-server is not installed: apt-get install redis-server"
#: Seconds a starting server has to answer PING.
START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server on 127.0.0.1 that keeps an append-only file in ``directory``."""

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and return once it answers PING."""
        log = (self.directory / "redis.log").open("ab")
        command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--appendonly", "yes", "--save", "", "--dir", str(self.directory)]
        with log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                text = (self.directory / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{text}")
            time.sleep(0.02)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): no shutdown, no last save."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def restart(self) -> None:
        """Kill the server and start it again on the same port and directory."""
        self.kill()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with AOF on, for the whole session (killed at the end)."""
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING, pytrace=False)
        pytest.skip(MISSING)
    server = RedisServer(executable, tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's server, with a fresh queue (a namespace of keys) for this test."""
    return f"{redis_server.url}?queue=t-{uuid.uuid4().hex[:12]}"


class Commands(Protocol):
    """The raw commands a test sends (redis-py's own types are loose)."""

    async def execute_command(self, *args: str | int) -> object: ...

    async def aclose(self) -> None: ...


@asynccontextmanager
async def redis_client(url: str) -> AsyncIterator[Commands]:
    """A plain redis-py client, for a test that writes keys behind the store's back."""
    from redis.asyncio import Redis

    client: Commands = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()
