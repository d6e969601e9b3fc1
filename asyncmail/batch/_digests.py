"""A compact table keyed by 64-bit digests: per-recipient state for lists of millions of rows.

A ``dict`` of Python ints costs about 100 bytes an entry, over a gigabyte for ten million
recipients. ``DigestTable`` keeps keys and values in two flat arrays (open addressing, linear
probing, at most two thirds full): 9 to 12 bytes a slot, under 200 MB for ten million entries.

Digests are Python's own ``hash`` of bytes (SipHash, 64 bits, keyed per process): fast, and
never stored, so that the key changes from one process to the next does not matter. Every
process recomputes them from the text of the journal.
"""

from __future__ import annotations

import sys
from array import array
from hashlib import blake2b
from typing import Literal

__all__ = ["DigestTable", "digest"]

INITIAL_SLOTS = 1024  # a power of two
ValueCode = Literal["B", "I"]
_MASK64 = (1 << 64) - 1


def _hash_digest(data: bytes) -> int:
    return (hash(data) & _MASK64) or 1


def _blake2b_digest(data: bytes) -> int:  # pragma: no cover - for 32-bit builds only
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little") or 1


#: A 64-bit digest of bytes, never 0 (0 marks an empty slot), stable within one process.
#: A 32-bit build's ``hash`` is too short for millions of keys: it gets BLAKE2b instead.
digest = _hash_digest if sys.hash_info.width >= 64 else _blake2b_digest


class DigestTable:
    """A map from digests (nonzero 64-bit ints) to small unsigned ints; a missing key reads 0.

    Args:
        typecode: The ``array`` typecode of the values: ``"B"`` (up to 255) or ``"I"``.
    """

    __slots__ = ("_keys", "_mask", "_used", "_values")

    def __init__(self, typecode: ValueCode = "B") -> None:
        self._keys, self._values = _arrays(INITIAL_SLOTS, typecode)
        self._mask = INITIAL_SLOTS - 1
        self._used = 0

    def __len__(self) -> int:
        return self._used

    def _slot(self, key: int) -> int:
        """The slot that holds ``key``, or the empty slot where it would go."""
        keys, mask = self._keys, self._mask
        slot = key & mask
        while (found := keys[slot]) != key and found:
            slot = (slot + 1) & mask
        return slot

    def get(self, key: int) -> int:
        """The value of ``key``, 0 if it has none."""
        return self._values[self._slot(key)]  # an empty slot's value is 0

    def set(self, key: int, value: int) -> int:
        """Give ``key`` the value ``value``; return its previous value (0 if it had none)."""
        slot = self._slot(key)
        values = self._values
        previous = values[slot]
        values[slot] = value
        if not self._keys[slot]:
            self._insert(slot, key)
        return previous

    def add(self, key: int, amount: int = 1) -> int:
        """Add ``amount`` to the value of ``key``; return the new value."""
        slot = self._slot(key)
        values = self._values
        value = values[slot] = values[slot] + amount
        if not self._keys[slot]:
            self._insert(slot, key)
        return value

    def _insert(self, slot: int, key: int) -> None:
        self._keys[slot] = key
        self._used += 1
        if 3 * self._used > 2 * len(self._keys):
            self._grow()

    def _grow(self) -> None:
        old_keys, old_values = self._keys, self._values
        slots = 2 * len(old_keys)
        self._keys, self._values = _arrays(slots, old_values.typecode)
        self._mask = slots - 1
        keys, values, find = self._keys, self._values, self._slot
        for key, value in zip(old_keys, old_values, strict=True):
            if key:
                slot = find(key)
                keys[slot] = key
                values[slot] = value


def _arrays(slots: int, typecode: str) -> tuple[array[int], array[int]]:
    values = array(typecode)
    values.frombytes(bytes(values.itemsize * slots))
    return array("Q", bytes(8 * slots)), values
