"""Random tokens for Message-IDs and MIME boundaries, from a buffered pool of ``os.urandom``.

Every message needs two (its Message-ID and its MIME boundary), and ``os.urandom(16)``
is a system call: about 460 ns here, against 135 ns for a token from the pool (the
instructions in user space are about the same; the kernel's share is what goes). So one
``os.urandom`` call fills a pool of tokens and each message takes from it: the tokens are
still the operating system's cryptographic random bytes, only read in bulk.

Two rules keep them unique:

- ``list.pop`` hands each token out once, atomically, even between threads.
- A forked child empties its copy of the pool (``os.register_at_fork``), so a worker
  process never repeats the tokens its parent or a sibling got from the same pool.
"""

from __future__ import annotations

import os
import struct

__all__ = ["random_hex"]

_TOKEN_BYTES = 16
_TOKENS = 256  # one os.urandom call of 4 KiB a refill
_SPLIT = struct.Struct(f"{_TOKEN_BYTES}s" * _TOKENS)  # the refill cut into tokens in C
_pool: list[bytes] = []


def random_hex() -> str:
    """A fresh random token: 32 lowercase hex digits (128 bits from ``os.urandom``)."""
    while True:  # (another thread may empty a fresh pool first: then refill again)
        try:
            return _pool.pop().hex()
        except IndexError:  # (extend, not assign: other threads may be popping this list)
            _pool.extend(_SPLIT.unpack(os.urandom(_TOKEN_BYTES * _TOKENS)))


if hasattr(os, "register_at_fork"):  # (not on Windows, which has no fork)
    os.register_at_fork(after_in_child=_pool.clear)
