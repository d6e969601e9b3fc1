"""A list of sent messages with assertions, like Django's ``mail.outbox``.

``MailOutbox`` is what ``memory://`` Mailers append to (the process-wide ``MEMORY_OUTBOX``,
public as ``asyncmail.testing.outbox``) and what a ``CaptureServer`` records into. It is a
plain ``list`` (index it, ``len`` it, iterate it) whose ``append``, ``pop``, ``clear`` and
``find`` hold a lock, so a Mailer in another thread can add to it while a test reads it.
Its assertions fail with a listing of what *was* sent.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from typing import SupportsIndex, TypeVar

from ..message._parsed import ParsedMail, SentMessage

__all__ = ["MEMORY_OUTBOX", "MailOutbox"]

M = TypeVar("M", bound=ParsedMail)

#: How many messages an assertion's listing shows at most.
LISTED = 20


class MailOutbox(list[M]):
    """Sent messages in order, with assertion helpers for tests.

    Each filter of ``find``, ``assert_sent`` and ``assert_not_sent`` narrows the match;
    give any of them:

    - ``to``: an address that received the message: any envelope recipient (To, Cc or
      Bcc), compared without regard to case.
    - ``subject``: the exact Subject, or a compiled ``re`` pattern to search it with.
    - ``contains``: text found in the plain-text or the HTML body.
    - ``sender``: the address in From.
    - ``where``: a function of the message that returns True for a match.
    """

    def __init__(self, messages: Iterable[M] = ()) -> None:
        super().__init__(messages)
        self._lock = threading.Lock()

    def append(self, message: M) -> None:
        """Add a message (under the lock: safe from any thread)."""
        with self._lock:
            super().append(message)

    def clear(self) -> None:
        """Forget every message, in place: references to this list stay valid."""
        with self._lock:
            super().clear()

    def pop(self, index: SupportsIndex = -1) -> M:
        with self._lock:
            return super().pop(index)

    @property
    def last(self) -> M:
        """The latest message.

        Raises:
            AssertionError: No message was sent.
        """
        with self._lock:
            if not self:
                raise AssertionError("no message was sent")
            return self[-1]

    def find(
        self,
        *,
        to: str | None = None,
        subject: str | re.Pattern[str] | None = None,
        contains: str | None = None,
        sender: str | None = None,
        where: Callable[[M], bool] | None = None,
    ) -> list[M]:
        """The messages that match every filter given, in order (all of them for none)."""
        with self._lock:
            messages = list(self)
        return [
            m
            for m in messages
            if _matches(m, to, subject, contains, sender) and (where is None or where(m))
        ]

    def assert_count(self, count: int) -> None:
        """Assert that exactly ``count`` messages were sent.

        Raises:
            AssertionError: Another number was, listed in the message.
        """
        messages = list(self)
        if len(messages) != count:
            raise AssertionError(
                f"expected {_messages(count)} sent, {len(messages)} were{listing(messages)}"
            )

    def assert_sent(
        self,
        *,
        to: str | None = None,
        subject: str | re.Pattern[str] | None = None,
        contains: str | None = None,
        sender: str | None = None,
        where: Callable[[M], bool] | None = None,
    ) -> M:
        """Assert that a message matching every filter given was sent.

        Returns:
            The latest matching message, for further checks.

        Raises:
            AssertionError: None matches; the message lists what was sent.
        """
        found = self.find(to=to, subject=subject, contains=contains, sender=sender, where=where)
        if found:
            return found[-1]
        wanted = _wanted(to, subject, contains, sender, where)
        raise AssertionError(f"no message was sent {wanted}; sent{listing(list(self))}")

    def assert_not_sent(
        self,
        *,
        to: str | None = None,
        subject: str | re.Pattern[str] | None = None,
        contains: str | None = None,
        sender: str | None = None,
        where: Callable[[M], bool] | None = None,
    ) -> None:
        """Assert that no message matching every filter given was sent.

        Raises:
            AssertionError: Some did; the message lists them.
        """
        found = self.find(to=to, subject=subject, contains=contains, sender=sender, where=where)
        if found:
            wanted = _wanted(to, subject, contains, sender, where)
            raise AssertionError(
                f"expected no message {wanted}, but {len(found)} matched{listing(found)}"
            )

    def __repr__(self) -> str:
        return f"MailOutbox({super().__repr__()})"


#: Where every ``memory://`` Mailer of this process puts its messages.
MEMORY_OUTBOX: MailOutbox[SentMessage] = MailOutbox()


def listing(messages: list[M]) -> str:
    """``:`` and one line per message (subject and recipients), or `` none``."""
    if not messages:
        return ": none"
    lines = [
        f"  {n}. {m.subject!r} from {m.envelope_sender or '<>'} to {', '.join(m.recipients)}"
        for n, m in enumerate(messages[:LISTED], 1)
    ]
    if len(messages) > LISTED:
        lines.append(f"  ... and {len(messages) - LISTED} more")
    return ":\n" + "\n".join(lines)


def _messages(count: int) -> str:
    return f"{count} message" + ("" if count == 1 else "s")


def _matches(
    message: ParsedMail,
    to: str | None,
    subject: str | re.Pattern[str] | None,
    contains: str | None,
    sender: str | None,
) -> bool:
    if to is not None and to.lower() not in {r.lower() for r in message.recipients}:
        return False
    if subject is not None:
        if isinstance(subject, re.Pattern):
            if subject.search(message.subject) is None:
                return False
        elif message.subject != subject:
            return False
    if sender is not None and message.from_.lower() != sender.lower():
        return False
    if contains is not None:
        bodies = (message.text or "", message.html or "")
        if not any(contains in body for body in bodies):
            return False
    return True


def _wanted(
    to: str | None,
    subject: str | re.Pattern[str] | None,
    contains: str | None,
    sender: str | None,
    where: object,
) -> str:
    parts = []
    if to is not None:
        parts.append(f"to {to}")
    if subject is not None:
        shown = subject.pattern if isinstance(subject, re.Pattern) else subject
        parts.append(f"with subject {shown!r}")
    if contains is not None:
        parts.append(f"containing {contains!r}")
    if sender is not None:
        parts.append(f"from {sender}")
    if where is not None:
        parts.append("matching where=")
    return " ".join(parts) if parts else "at all"
