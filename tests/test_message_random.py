"""Message-IDs and MIME boundaries come from a pool of os.urandom bytes: unique, fork-safe."""

from __future__ import annotations

import os
import re
import threading

import pytest

from asyncmail import Message
from asyncmail.message._random import _TOKENS, random_hex

_BOUNDARY = re.compile(rb'boundary="=_a([0-9a-f]{24})"')


def _ids(count: int) -> list[str]:
    return [Message(sender="a@example.com", to="b@example.org").message_id for _ in range(count)]


def test_message_ids_stay_unique_across_many_pool_refills() -> None:
    ids = _ids(10 * _TOKENS + 7)
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"<[0-9a-f]{32}@example\.com>", mid) for mid in ids)


def test_boundaries_are_random_and_differ_from_the_message_id() -> None:
    made = [Message(sender="a@example.com", to="b@example.org", text="t", html="h") for _ in "ab"]
    found = [_BOUNDARY.search(message.to_bytes()) for message in made]
    assert found[0] is not None and found[1] is not None
    boundaries = {found[0].group(1), found[1].group(1)}
    assert len(boundaries) == 2
    assert not any(token.decode() in made[0].message_id for token in boundaries)


def test_threads_taking_tokens_at_once_never_share_one() -> None:
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        into.extend(random_hex() for _ in range(3 * _TOKENS))

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tokens = [token for into in taken for token in into]
    assert len(set(tokens)) == len(tokens) == 12 * _TOKENS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_never_repeats_the_parents_message_ids() -> None:
    """The child empties the pool it inherited, so it cannot hand out the parent's next ids."""
    _ids(1)  # the pool is filled, with tokens left in it for both sides of the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; coverage does not follow it
        try:
            os.close(read_end)
            os.write(write_end, "\n".join(_ids(50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent = _ids(50)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split("\n")
    os.waitpid(pid, 0)
    assert len(child) == 50
    assert not set(child) & set(parent)
