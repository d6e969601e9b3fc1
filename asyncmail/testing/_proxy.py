"""A TCP proxy on 127.0.0.1 that adds a round-trip time, for tests and benchmarks at "real" latency.

Each chunk read from one side is written to the other ``rtt / 2`` seconds later, in order and with
its boundaries kept. Delivery is scheduled on the loop (one timer per direction at a time), so a
connection never sleeps: throughput is not serialised by the delay, only shifted by it, as on a
real long link.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from types import TracebackType

__all__ = ["LatencyProxy"]

#: Bytes read but not yet delivered, per direction, above which reading pauses (back-pressure).
MAX_IN_FLIGHT = 4 * 1024 * 1024
#: Size of one read.
READ_SIZE = 64 * 1024


class _Pipe:
    """One direction of one connection: read, hold for ``delay``, write, in order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
    ) -> None:
        self._loop = loop
        self._reader = reader
        self._writer = writer
        self._delay = delay
        self._queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self.done = loop.create_future()

    async def run(self) -> None:
        """Read until EOF or error; the matching writes happen later, from timers."""
        try:
            while True:
                data = await self._reader.read(READ_SIZE)
                self._push(data)
                if not data:
                    break
                if self._in_flight > MAX_IN_FLIGHT:
                    self._room.clear()
                    await self._room.wait()
        except (ConnectionError, OSError):
            self._finish()

    def _push(self, data: bytes) -> None:
        self._queue.append((self._loop.time() + self._delay, data))
        self._in_flight += len(data)
        if self._timer is None:
            self._timer = self._loop.call_at(self._queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            self._in_flight -= len(data)
            if not data:
                self._finish(eof=True)
                return
            try:
                self._writer.write(data)
            except (ConnectionError, OSError, RuntimeError):
                self._finish()
                return
        if self._in_flight <= MAX_IN_FLIGHT:
            self._room.set()
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._deliver)

    def _finish(self, *, eof: bool = False) -> None:
        if eof and self._writer.can_write_eof() and not self._writer.is_closing():
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write_eof()
        if not self.done.done():
            self.done.set_result(None)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._room.set()
        if not self.done.done():
            self.done.set_result(None)


class LatencyProxy:
    """Forward TCP connections to ``target_host:target_port`` with ``rtt`` seconds of round trip.

    Listens on 127.0.0.1, port 0 (the OS picks; read ``.port``). Use it as an async context
    manager in the loop that owns it, or through ``run_in_thread()`` from synchronous code or other
    loops. A closed proxy cannot be restarted.

    Args:
        target_host: Where connections are forwarded.
        target_port: Port there.
        rtt: Round-trip time to add, in seconds; each direction is delayed by half of it.
    """

    def __init__(self, target_host: str, target_port: int, *, rtt: float) -> None:
        if rtt < 0:
            raise ValueError(f"rtt must be >= 0, got {rtt!r}")
        self.target_host = target_host
        self.target_port = target_port
        self.rtt = rtt
        self.host = "127.0.0.1"
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.connections_total = 0

    @property
    def port(self) -> int:
        """The listening port (after start)."""
        if self._port is None:
            raise RuntimeError("LatencyProxy is not started")
        return self._port

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not started"
        return (
            f"<LatencyProxy {where} -> {self.target_host}:{self.target_port} rtt={self.rtt}s "
            f"open={len(self._tasks)} total={self.connections_total}>"
        )

    async def start(self) -> None:
        """Start listening."""
        if self._closed or self._server is not None:
            raise RuntimeError("LatencyProxy can be started once")
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        """Stop listening and drop every open connection."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> LatencyProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_total += 1
        pipes: list[_Pipe] = []
        s_writer: asyncio.StreamWriter | None = None
        try:
            s_reader, s_writer = await asyncio.open_connection(self.target_host, self.target_port)
            loop = asyncio.get_running_loop()
            half = self.rtt / 2
            pipes = [
                _Pipe(loop, c_reader, s_writer, half),
                _Pipe(loop, s_reader, c_writer, half),
            ]
            readers = [asyncio.create_task(p.run()) for p in pipes]
            try:
                # Done when both directions have delivered their EOF, or one side broke.
                await asyncio.gather(*(p.done for p in pipes))
            finally:
                for r in readers:
                    r.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # aclose() cancels us; asyncio's stream callback would log a cancelled handler.
            if not self._closed:
                raise
        finally:
            for p in pipes:
                p.cancel()
            for w in (c_writer, s_writer):
                if w is not None:
                    w.close()
            self._tasks.discard(task)

    @contextlib.contextmanager
    def run_in_thread(
        self, *, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    ) -> Iterator[LatencyProxy]:
        """Run the proxy on its own event loop in a daemon thread, for the ``with`` block.

        Args:
            loop_factory: Makes the thread's loop (for example ``uvloop.new_event_loop``);
                the default is ``asyncio.new_event_loop``.

        Yields:
            The started proxy; ``.host`` and ``.port`` are ready.
        """
        loop = (loop_factory or asyncio.new_event_loop)()
        started = threading.Event()
        thread = threading.Thread(
            target=self._thread_main, args=(loop, started), name="LatencyProxy", daemon=True
        )
        thread.start()
        started.wait()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout=10)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.aclose(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)

    @staticmethod
    def _thread_main(loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop.close()
