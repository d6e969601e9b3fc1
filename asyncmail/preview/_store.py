"""The messages the preview shows: the newest ones in memory, bounded, with change events."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio

from ._parse import Summary, parse, summary

__all__ = ["MAX_MESSAGES", "MessageStore", "StoredMessage"]

#: How many messages the preview keeps unless told otherwise; the oldest go first.
MAX_MESSAGES = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """One captured message as the preview keeps it."""

    id: int
    received: datetime
    envelope_sender: str
    recipients: tuple[str, ...]
    data: bytes
    tls: bool
    authenticated_as: str | None
    summary: Summary

    @property
    def size(self) -> int:
        """The message's size in bytes, as received."""
        return len(self.data)


class MessageStore:
    """The newest ``max_messages`` messages, by id; ``wait_for_change`` wakes on every change.

    Args:
        max_messages: How many messages to keep; adding one more drops the oldest.
    """

    def __init__(self, *, max_messages: int = MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        self.max_messages = max_messages
        self._messages: collections.OrderedDict[int, StoredMessage] = collections.OrderedDict()
        self._next_id = 1
        self._version = 0
        self._changed: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<MessageStore messages={len(self._messages)} max={self.max_messages}>"

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def version(self) -> int:
        """Grows by one on every change (a message added, the store cleared)."""
        return self._version

    def add(
        self,
        data: bytes,
        *,
        envelope_sender: str = "",
        recipients: tuple[str, ...] = (),
        tls: bool = False,
        authenticated_as: str | None = None,
    ) -> StoredMessage:
        """Keep one message (dropping the oldest beyond the bound) and return it."""
        message = StoredMessage(
            id=self._next_id,
            received=datetime.now(UTC),
            envelope_sender=envelope_sender,
            recipients=recipients,
            data=data,
            tls=tls,
            authenticated_as=authenticated_as,
            summary=summary(parse(data)),
        )
        self._next_id += 1
        self._messages[message.id] = message
        while len(self._messages) > self.max_messages:
            self._messages.popitem(last=False)
        self._changed_now()
        return message

    def get(self, message_id: int) -> StoredMessage | None:
        """The message with this id, or None if there is none (or it was dropped)."""
        return self._messages.get(message_id)

    def newest_first(self) -> list[StoredMessage]:
        """Every message kept, the newest first."""
        return list(reversed(self._messages.values()))

    def clear(self) -> None:
        """Forget every message (ids keep growing)."""
        self._messages.clear()
        self._changed_now()

    async def wait_for_change(self, seen: int) -> int:
        """Wait until ``version`` differs from ``seen``; return the new version."""
        while self._version == seen:
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()
        return self._version

    def _changed_now(self) -> None:
        self._version += 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None
