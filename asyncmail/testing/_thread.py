"""Thread mode: a CaptureServer on its own event loop in a daemon thread, for any caller."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._server import CaptureServer

__all__ = ["ServerThread"]

#: How long starting or stopping the server thread may take, in seconds.
THREAD_TIMEOUT = 30.0


class ServerThread:
    """Sync context manager: starts the server in a thread on enter, stops it on exit.

    Example::

        with CaptureServer().run_in_thread() as server:
            smtplib.SMTP(server.host, server.port).sendmail(...)
            server.wait_for_messages_sync(1)
    """

    def __init__(self, server: CaptureServer) -> None:
        self._server = server
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="asyncmail-capture", daemon=True)

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        if not self._ready.wait(THREAD_TIMEOUT):  # pragma: no cover
            raise TimeoutError("the capture server thread did not start")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._server

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(THREAD_TIMEOUT)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the thread that entered or exits
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._server:
            self._ready.set()
            await self._stop.wait()
