"""What a suppression is, how addresses are compared, and which refusals add one.

Two addresses are the same entry when they are equal ignoring case, with the domain in its
ASCII (A-label) form: ``Ann@Bücher.example`` and ``ann@xn--bcher-kva.example`` match.
RFC 5321 lets a receiving system treat local parts case-sensitively, but practically every
provider does not; and a wrong match only costs one mail not sent to someone who once
bounced, while sending to a dead mailbox again is what raises a sender's bounce rate.

A refusal adds an address (``hard_bounces``) only when it is certain to be about the
mailbox: a permanent (5xx) reply to RCPT TO with an RFC 3463 "address status" code 5.1.x
that concerns the recipient (5.1.0-5.1.6, 5.1.9, 5.1.10; not 5.1.7/5.1.8, which are about
the sender). A bare ``550`` with no enhanced code is not enough: servers use it for policy
and spam refusals as well, and suppressing on those would drop good addresses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from .._exceptions import ConfigError, DeliveryError, MessageError, Phase, SendResult
from ..message._address import ascii_domain

__all__ = [
    "REASONS",
    "Suppression",
    "Suppressions",
    "hard_bounces",
    "normalize",
]

#: Why an address is suppressed.
REASONS = ("hard-bounce", "complaint", "unsubscribed", "manual")
#: The 5.1.x codes that speak of the sender, not of the recipient (RFC 3463).
_SENDER_CODES = frozenset({"5.1.7", "5.1.8"})


def normalize(address: str) -> str:
    """The form in which a suppression list compares ``address``.

    The whole address lower-cased, the domain as its A-label. A domain that is not a valid
    host name is compared as given (lower-cased), so that any string can be listed.

    Raises:
        ConfigError: Not an address (no ``@``, or empty on either side).
    """
    if not isinstance(address, str):
        raise ConfigError(f"an address must be a string, not {type(address).__name__}")
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ConfigError(f"not an email address: {address!r}")
    with contextlib.suppress(MessageError):  # (any string can be listed)
        domain = ascii_domain(domain)
    return f"{local}@{domain}".lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Suppression:
    """One address on a suppression list, with why and since when.

    Attributes:
        address: The address as it was added (compared as ``normalize`` says).
        reason: ``"hard-bounce"``, ``"complaint"``, ``"unsubscribed"`` or ``"manual"``.
        status: The RFC 3463 code that caused it, such as ``"5.1.1"`` ("" if none).
        diagnostic: The server's words (or a note), on one line.
        added_at: When it was added (timezone-aware).
        source: Where it came from: a worker, a batch, a bounce report, a person.
    """

    address: str
    reason: str = "manual"
    status: str = ""
    diagnostic: str = ""
    added_at: datetime
    source: str = ""

    def __post_init__(self) -> None:
        normalize(self.address)  # (raises for a non-address)
        if self.reason not in REASONS:
            raise ConfigError(f"reason must be one of {', '.join(REASONS)}, not {self.reason!r}")
        if not isinstance(self.added_at, datetime) or self.added_at.utcoffset() is None:
            raise ConfigError("added_at must be a timezone-aware datetime")
        for name in ("status", "diagnostic", "source"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, not {type(value).__name__}")
            if "\n" in value or "\r" in value:
                object.__setattr__(self, name, " ".join(value.split()))

    @property
    def key(self) -> str:
        """The address as the list compares it."""
        return normalize(self.address)

    @classmethod
    def now(cls, address: str, reason: str = "manual", **fields: str) -> Suppression:
        """A suppression added now (``status``, ``diagnostic`` and ``source`` by keyword)."""
        return cls(address=address, reason=reason, added_at=datetime.now(UTC), **fields)


class Suppressions(Protocol):
    """A suppression list: ``CsvSuppressions``, or an outbox's (``outbox.suppressions``).

    Every method may raise ``MailError`` (``OutboxError`` for a store, ``ConfigError`` for a
    file) or ``OSError``.
    """

    async def suppressed(self, addresses: Iterable[str]) -> set[str]:
        """Which of ``addresses`` are on the list (returned as given)."""
        ...

    async def add(self, entries: Iterable[Suppression]) -> int:
        """Add these entries; an address already listed keeps its entry. How many are new."""
        ...

    async def remove(self, addresses: Iterable[str]) -> int:
        """Take these addresses off the list; how many were on it."""
        ...

    def entries(self) -> AsyncIterator[Suppression]:
        """Every entry, in no particular order."""
        ...


def _hard(error: DeliveryError) -> bool:
    code, status = error.code, error.enhanced_code or ""
    return (
        code is not None
        and 500 <= code < 600
        and error.phase is Phase.RCPT
        and status.startswith("5.1.")
        and status not in _SENDER_CODES
    )


def hard_bounces(result: SendResult[Any], *, source: str) -> list[Suppression]:
    """The recipients of ``result`` that a 5.1.x RCPT refusal says do not exist."""
    now = datetime.now(UTC)
    found = []
    for rcpt, error in result.refused.items():
        if isinstance(error, DeliveryError) and _hard(error):
            found.append(
                Suppression(
                    address=rcpt,
                    reason="hard-bounce",
                    status=error.enhanced_code or "",
                    diagnostic=f"{error.code} {error.text}",
                    added_at=now,
                    source=source,
                )
            )
    return found
