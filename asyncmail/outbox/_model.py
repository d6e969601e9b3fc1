"""The outbox's values: a message's states, what a store keeps of it, and what it reports.

Every stored message moves through these states, and ends in exactly one final one::

    QUEUED ──lease──> LEASED ──mark──> SENDING ──finish──> DELIVERED | FAILED | UNKNOWN
      ^                 │                 │
      └──release/retry──┘<──retry later───┘ (transient: back to QUEUED with a due time)

A lease that runs out (its worker died) puts a LEASED message back in the queue. A
SENDING one ("the final dot may be out") is never sent again: it ends UNKNOWN, unless the
outbox was opened with ``resend_unknown=True``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigError

__all__ = [
    "DIED_AFTER_DOT",
    "FINAL_STATES",
    "SCHEMA_VERSION",
    "SUPPRESSED",
    "Lease",
    "NewEntry",
    "OutboxState",
    "OutboxStatistics",
    "OutboxStatus",
    "Outcome",
    "Refusal",
    "State",
    "lane_name",
    "lane_of",
    "redact_url",
]

#: The layout of the stored records; a store of another version is refused at open.
#: (Here rather than in ``_store``, which imports the stores: they import this module.)
SCHEMA_VERSION = 1


class OutboxState(enum.StrEnum):
    """Where a message in the outbox is."""

    QUEUED = "queued"
    """Waiting (maybe until a due time) for a worker."""
    LEASED = "leased"
    """A worker holds it; nothing has been sent under this lease yet."""
    SENDING = "sending"
    """The final dot may be out: the worker recorded this before writing the content."""
    DELIVERED = "delivered"
    """At least one recipient accepted it (final)."""
    FAILED = "failed"
    """No recipient accepted it and none will be tried again (final)."""
    UNKNOWN = "unknown"
    """The final dot left and no answer was recorded: it may have arrived (final)."""


State = OutboxState  # (the short name, inside this package)

#: The error of a message found SENDING after its worker stopped: it ends UNKNOWN.
DIED_AFTER_DOT = "the worker stopped after the final dot may have left; not sent again"
#: The same with ``resend_unknown``: the message is queued again (at least once).
CUT_OFF_AFTER_DOT = "the worker stopped after the final dot may have left; to be sent again"

FINAL_STATES = frozenset({State.DELIVERED, State.FAILED, State.UNKNOWN})

#: The priority lanes, most urgent first; a lower lane number is always leased first.
LANES = ("high", "normal", "low")
DEFAULT_LANE = 1


def lane_of(priority: str | int) -> int:
    """The lane number of ``"high"``, ``"normal"`` or ``"low"`` (or of 0, 1, 2).

    Raises:
        ConfigError: Not a priority.
    """
    if isinstance(priority, str) and priority in LANES:
        return LANES.index(priority)
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority < 3:
        return priority
    raise ConfigError(f"priority must be one of {', '.join(LANES)}, not {priority!r}")


def lane_name(lane: int) -> str:
    return LANES[lane]


#: How a suppressed recipient's refusal begins (``Refusal.suppressed``).
SUPPRESSED = "suppressed: "


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a recipient was not reached: the server's code and text, and whether to retry."""

    code: int | None
    text: str
    retryable: bool

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text

    @property
    def suppressed(self) -> bool:
        """The recipient is on the suppression list: it was never sent to."""
        return self.code is None and self.text.startswith(SUPPRESSED)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A message as ``enqueue`` stores it."""

    key: str
    payload: bytes
    """The message, encoded by ``asyncmail.outbox._codec``."""
    message_id: str
    recipients: tuple[str, ...]
    lane: int
    due: float
    """Epoch seconds before which it is not sent."""
    enqueued_at: float
    refused: Mapping[str, Refusal] = field(default_factory=dict)
    """Recipients refused before any attempt (suppressed); not in ``recipients``."""
    error: str | None = None
    """Why, when no recipient is left: the message is stored FAILED and never sent."""

    @property
    def state(self) -> State:
        """QUEUED, or FAILED when every recipient was refused before any attempt."""
        return State.QUEUED if self.recipients else State.FAILED


@dataclass(frozen=True, slots=True)
class Lease:
    """A message a worker holds, with what earlier attempts achieved."""

    key: str
    token: str
    """Names this lease; every write under it is refused once another worker took over."""
    payload: bytes
    message_id: str
    pending: tuple[str, ...]
    """The recipients still to try (after a 4xx, only those)."""
    accepted: tuple[str, ...]
    refused: Mapping[str, Refusal]
    """Final refusals of earlier attempts."""
    attempts: int
    first_attempt_at: float | None
    lane: int
    unknown: tuple[str, ...] = ()
    """Recipients of earlier attempts whose outcome is unknown."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker records after an attempt: the whole new record, written under its lease.

    ``state`` is QUEUED for a retry at ``due`` (of ``pending`` only), else a final state.
    """

    state: State
    pending: tuple[str, ...]
    accepted: tuple[str, ...]
    refused: Mapping[str, Refusal]
    unknown: tuple[str, ...]
    attempts: int
    first_attempt_at: float | None
    due: float
    error: str | None
    reply: str | None


@dataclass(frozen=True, slots=True)
class OutboxStatus:
    """What the outbox knows of one message (``await outbox.status(key)``)."""

    key: str
    state: State
    message_id: str
    priority: str
    attempts: int
    enqueued_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None
    """When a queued message may go next; None once final."""
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, Refusal] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    error: str | None = None
    """The server's words (or the local reason) when not delivered."""
    reply: str | None = None
    """The server's reply to the final dot, when it gave one."""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def suppressed(self) -> tuple[str, ...]:
        """The recipients left out at enqueue because they are on the suppression list."""
        return tuple(r for r, refusal in self.refused.items() if refusal.suppressed)


@dataclass(frozen=True, slots=True)
class OutboxStatistics:
    """A snapshot of an outbox, for operators and metrics."""

    counts: Mapping[State, int]
    oldest_queued_age: float | None
    """Seconds the oldest message due now has waited; None when nothing waits."""
    rate: float
    """Messages finished per second over the last minute, across every worker."""

    @property
    def queued(self) -> int:
        return self.counts.get(State.QUEUED, 0)


def when(epoch: float) -> datetime:
    """An epoch time as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<an unparseable URL>"
