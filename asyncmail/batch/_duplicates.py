"""Addresses listed more than once in a recipient list, found before a batch starts.

Addresses compare as the journal compares them (``_journal.address_id``: ASCII letters
lower-cased, the whole address), so what is reported here as a duplicate is exactly what a
batch would send a second copy to, and what ``--dedupe`` leaves out. One pass, with memory
for a digest and a row number per address (see ``_digests``), whatever the list's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._digests import DigestTable, digest
from ._journal import address_id
from ._recipients import Recipient, read_recipients

__all__ = ["Duplicate", "Duplicates", "FirstRows", "find_duplicates"]

EXAMPLES = 5


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A row whose address an earlier row already has."""

    row: int
    email: str
    first_row: int


@dataclass(frozen=True, slots=True)
class Duplicates:
    """How many rows repeat an earlier row's address, and the first few of them."""

    count: int
    examples: tuple[Duplicate, ...]


class FirstRows:
    """The first row of each address seen so far."""

    def __init__(self) -> None:
        self._rows = DigestTable("I")

    def first(self, email: str, row: int) -> int:
        """The first row of ``email``: ``row`` itself when it is the first."""
        key = digest(address_id(email).encode())
        seen = self._rows.get(key)
        if seen:
            return seen
        self._rows.set(key, row)
        return row


def find_duplicates(
    path: str | Path, *, delimiter: str | None = None, examples: int = EXAMPLES
) -> Duplicates:
    """Scan a recipient list for addresses on more than one row (rows that cannot be sent
    to are left out).

    Raises:
        ConfigError: The list cannot be read (see ``read_recipients``).
    """
    first_rows = FirstRows()
    count, found = 0, list[Duplicate]()
    for item in read_recipients(path, delimiter=delimiter):
        if not isinstance(item, Recipient):
            continue
        first = first_rows.first(item.email, item.row)
        if first != item.row:
            count += 1
            if len(found) < examples:
                found.append(Duplicate(item.row, item.email, first))
    return Duplicates(count, tuple(found))
