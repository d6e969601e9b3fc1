"""The one place where messages in flight and outcomes are counted, and where closing is signalled.

A message is admitted when a send takes it, and leaves exactly once: finished with its
result, or abandoned when the caller's task is cancelled (then there is no result to count).
"""

from __future__ import annotations

from typing import Any

import anyio

from .._exceptions import SendResult, Status

__all__ = ["Ledger", "Signal"]


class Signal:
    """A flag that tasks can wait for; usable before any event loop runs."""

    __slots__ = ("_event", "fired")

    def __init__(self) -> None:
        self.fired = False
        """Set, for good (a plain attribute: it is read for every message)."""
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self.fired = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self.fired:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


class Ledger:
    """Counts in flight and by outcome; wakes ``wait_idle`` when the last send leaves."""

    __slots__ = ("_idle", "counts", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.counts = dict.fromkeys(Status, 0)
        self._idle: anyio.Event | None = None

    def admit(self) -> None:
        self.in_flight += 1

    def finish(self, result: SendResult[Any]) -> SendResult[Any]:
        """Count a final result and let its message leave."""
        self.counts[result.status] += 1
        self._leave()
        return result

    def abandon(self) -> None:
        """A message leaves without a result (its send was cancelled)."""
        self._leave()

    def _leave(self) -> None:
        self.in_flight -= 1
        if not self.in_flight and self._idle is not None:
            self._idle.set()

    async def wait_idle(self, limit: float) -> bool:
        """Wait until nothing is in flight, up to ``limit`` seconds; True if so."""
        if self.in_flight:
            self._idle = anyio.Event()
            with anyio.move_on_after(limit):
                await self._idle.wait()
            self._idle = None
        return not self.in_flight
