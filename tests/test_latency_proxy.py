"""LatencyProxy adds at least the configured round trip and forwards bytes intact and in order."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from asyncmail.testing._proxy import LatencyProxy

RTT = 0.05


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield "127.0.0.1", server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_round_trip_takes_at_least_the_configured_rtt(echo_server: tuple[str, int]) -> None:
    async with LatencyProxy(*echo_server, rtt=RTT) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        for i in range(3):
            started = time.perf_counter()
            writer.write(b"ping %d\n" % i)
            assert await reader.readline() == b"ping %d\n" % i
            assert time.perf_counter() - started >= RTT
        writer.close()
        await writer.wait_closed()


async def test_bytes_arrive_intact_and_in_order(echo_server: tuple[str, int]) -> None:
    """Many small writes and one large one come back exactly as sent."""
    payload = b"".join(b"%06d," % i for i in range(20_000)) + bytes(range(256)) * 4096
    async with LatencyProxy(*echo_server, rtt=0.01) as proxy:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)

        async def send() -> None:
            for start in range(0, len(payload), 1000):
                writer.write(payload[start : start + 1000])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        received = await reader.read(-1)
        await sender
        writer.close()
        assert received == payload


async def test_delay_does_not_serialise_concurrent_connections(
    echo_server: tuple[str, int],
) -> None:
    """Ten connections each doing one round trip take about one RTT, not ten (loose bound)."""

    async def one(proxy: LatencyProxy) -> None:
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(b"x\n")
        assert await reader.readline() == b"x\n"
        writer.close()

    async with LatencyProxy(*echo_server, rtt=0.2) as proxy:
        await one(proxy)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(one(proxy) for _ in range(10)))
        elapsed = time.perf_counter() - started
    # A serialising proxy would need >= 2 s; this is a correctness bound, not a speed target.
    assert 0.2 <= elapsed < 2.0


def test_run_in_thread_serves_blocking_clients() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with LatencyProxy("127.0.0.1", port, rtt=RTT).run_in_thread() as proxy:
        sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
        with sock:
            started = time.perf_counter()
            sock.sendall(b"hello")
            got = b""
            while len(got) < 5:
                got += sock.recv(100)
            assert got == b"hello"
            assert time.perf_counter() - started >= RTT
    listener.close()
    thread.join(timeout=5)


async def test_closed_proxy_refuses_restart(echo_server: tuple[str, int]) -> None:
    proxy = LatencyProxy(*echo_server, rtt=0)
    async with proxy:
        pass
    with pytest.raises(RuntimeError):
        await proxy.start()


def test_negative_rtt_is_rejected() -> None:
    with pytest.raises(ValueError, match="rtt"):
        LatencyProxy("127.0.0.1", 1, rtt=-1)


async def test_close_drops_open_connections_quietly(echo_server: tuple[str, int]) -> None:
    """Closing with a client still connected ends that connection and logs no loop error."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    proxy = LatencyProxy(*echo_server, rtt=0.01)
    await proxy.start()
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(b"x\n")
    assert await reader.readline() == b"x\n"
    await proxy.aclose()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await asyncio.sleep(0)
    assert errors == []
