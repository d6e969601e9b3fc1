"""An outbox's suppression list: kept in its store, shared by every process that opens it.

In SQLite it is the table ``asyncmail_suppression`` (created in an existing outbox when
first opened by a version that has it); in Redis the hash ``asyncmail:{QUEUE}:suppressed``
(normalised address -> the entry as JSON). Both are read and written like the rest of the
store: atomically, by any number of processes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from ..suppression._model import Suppression, normalize
from ._store import Store

__all__ = ["StoreSuppressions"]


class StoreSuppressions:
    """The ``Suppressions`` of an outbox's store (``outbox.suppressions``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"<StoreSuppressions {self.store.url}>"

    async def suppressed(self, addresses: Iterable[str]) -> set[str]:
        by_key: dict[str, list[str]] = {}
        for address in addresses:
            by_key.setdefault(normalize(address), []).append(address)
        found = await self.store.suppressed(list(by_key))
        return {address for key in found for address in by_key[key]}

    async def add(self, entries: Iterable[Suppression]) -> int:
        return await self.store.suppress(list(entries))

    async def remove(self, addresses: Iterable[str]) -> int:
        return await self.store.unsuppress(sorted({normalize(a) for a in addresses}))

    async def entries(self) -> AsyncIterator[Suppression]:
        for entry in await self.store.suppressions():
            yield entry
