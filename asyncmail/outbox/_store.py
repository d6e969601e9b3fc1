"""What an outbox needs of its store, and how a URL picks one.

A store keeps each message's record and its place in the queue, and makes every state
change atomic: two workers can never both hold a lease on one message, and a write made
under a lease that another worker has since taken over is refused (fencing by token).
``SQLiteStore`` (one machine, many processes) and ``RedisStore`` (many machines) are the
two; a test suite (``tests/test_outbox_store.py``) holds both to the same contract.

All times are epoch seconds of the process's wall clock, except lease expiry, which each
store measures on its own clock (SQLite: the wall clock; Redis: the server's idle times).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..engine._ratelimit import Limiter, RateLimit
from ..suppression._model import Suppression
from ._model import (
    SCHEMA_VERSION,
    Lease,
    NewEntry,
    OutboxStatistics,
    OutboxStatus,
    Outcome,
    State,
    redact_url,
)

__all__ = ["SCHEMA_VERSION", "Store", "redact_url"]


class Store(Protocol):
    """The durable half of an outbox. Every method may raise ``OutboxError``."""

    url: str
    """The store's URL with any password replaced by ``***``."""

    async def open(self) -> None:
        """Connect, and create or check the schema.

        Raises:
            OutboxError: Unreachable, corrupt, foreign, or of another schema version.
        """

    async def aclose(self) -> None:
        """Release the connections."""

    async def enqueue(self, entry: NewEntry) -> tuple[bool, OutboxStatus]:
        """Store a new message, durably, unless its key is taken.

        Returns:
            True and the new status, or False and the status of the message already
            stored under that key (nothing is changed then).
        """

    async def lease(
        self, worker: str, count: int, seconds: float, *, wait: float, resend_unknown: bool
    ) -> list[Lease]:
        """Lease up to ``count`` due messages, most urgent lane first.

        Also takes over the messages whose lease ran out (their worker died): a LEASED one
        is leased again; a SENDING one ends UNKNOWN (or, with ``resend_unknown``, is
        leased again with its accepted-or-unknown recipients still pending).

        Args:
            worker: A name for this worker (for operators).
            count: Leases at most.
            seconds: How long a lease lasts unless renewed.
            wait: Seconds to wait for work when none is due (0: return at once).
            resend_unknown: Send a message found SENDING again instead of ending it UNKNOWN.
        """

    async def renew(self, leases: Sequence[tuple[str, str]], seconds: float) -> set[str]:
        """Extend the leases ``(key, token)``; returns the keys whose lease was lost."""

    async def mark_sending(self, key: str, token: str) -> bool:
        """Record "the final dot may be out", durably; False when the lease was lost."""

    async def finish(self, key: str, token: str, outcome: Outcome) -> bool:
        """Record an attempt's outcome (a final state, or QUEUED to retry at its due time).

        Returns:
            False when the lease was lost (nothing is written then).
        """

    async def finish_many(self, items: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        """``finish`` for each ``(key, token, outcome)``, in one commit or round trip."""

    async def release(self, key: str, token: str) -> bool:
        """Give a leased message back, untried, for any worker to take at once."""

    async def status(self, key: str) -> OutboxStatus | None:
        """The status of the message stored under ``key``, or None."""

    async def statistics(self) -> OutboxStatistics:
        """Counts by state, the age of the oldest due message, and the current rate."""

    async def entries(self, state: State | None, limit: int) -> list[OutboxStatus]:
        """Up to ``limit`` messages in ``state`` (any state when None), newest change first."""

    async def retry(self, keys: Sequence[str] | None) -> int:
        """Queue FAILED and UNKNOWN messages again, now (those of ``keys``, or all).

        Each goes to the recipients that did not accept it, with a fresh attempt count.
        Returns how many were queued.
        """

    async def purge(self, states: Sequence[State], older_than: float) -> int:
        """Delete messages in final ``states`` that ended at least ``older_than`` s ago."""

    def limiter(self, limit: RateLimit) -> Limiter:
        """A rate limiter shared by every worker of this store, on every machine."""

    # The suppression list (``outbox.suppressions``), by normalised address
    # (``asyncmail.suppression._model.normalize``).

    async def suppressed(self, keys: Sequence[str]) -> set[str]:
        """Which of these normalised addresses are on the list."""

    async def suppress(self, entries: Sequence[Suppression]) -> int:
        """Add the entries whose address is not listed yet; how many were added."""

    async def unsuppress(self, keys: Sequence[str]) -> int:
        """Take these normalised addresses off the list; how many were on it."""

    async def suppressions(self) -> list[Suppression]:
        """Every entry of the list."""
