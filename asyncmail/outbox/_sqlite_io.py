"""One SQLite connection per process and file, on its own thread, committing in groups.

Every operation is a function of the connection, run on the connection's thread. The
thread takes all the operations waiting, runs the writes in one ``BEGIN IMMEDIATE``
transaction (each in its own savepoint, so one failing does not undo the others) and
commits once: concurrent callers share one fsync (group commit). A busy database (another
process writing) is waited out (``busy_timeout``), so "database is locked" never reaches
a caller; anything SQLite still refuses becomes ``OutboxError``.

This module is the outbox's one thread boundary: results come back to the event loop
with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._exceptions import OutboxError

__all__ = ["Connection", "connection_for", "release_connection"]

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]

#: How long a write waits for another process's transaction before giving up.
BUSY_TIMEOUT_MS = 60_000


@dataclass(slots=True)
class _Call:
    op: Op
    write: bool
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_Result = tuple[_Call, Any, BaseException | None]


def _deliver_all(results: list[_Result]) -> None:
    for call, value, error in results:
        future = call.future
        if future.done():  # the caller was cancelled; the write happened (or not) regardless
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


class Connection:
    """A connection's thread; shared by every store of one file in this process."""

    def __init__(
        self,
        path: str,
        *,
        synchronous: str,
        label: str,
        check: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.check = check
        self.path = path
        self.label = label
        self.synchronous = synchronous
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self.users = 0

    def start(self) -> None:
        """Open the database (on the calling thread, to report errors at once) and serve."""
        try:
            db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.check is not None:  # before anything is written to a file not ours
                try:
                    self.check(db)
                except OutboxError as exc:
                    db.close()
                    raise OutboxError(f"{self.label}: {exc}") from None
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open the outbox {self.label}: {exc}") from exc
        if str(mode).lower() != "wal":
            db.close()
            raise OutboxError(f"the outbox {self.label} cannot use WAL mode (got {mode})")
        self._db = db
        self._thread = threading.Thread(target=self._serve, name="asyncmail-sqlite", daemon=True)
        self._thread.start()

    async def call(self, op: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run ``op`` on the connection's thread (in a transaction when it writes)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put(_Call(op, write, future, loop))
        return await future

    def stop(self) -> None:
        """Finish the calls already queued, then close the connection."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(None)
            thread.join()
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- the thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        db = self._db
        assert db is not None
        while True:
            first = self._calls.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while True:
                try:
                    more = self._calls.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._run(db, [c for c in batch if not c.write], transaction=False)
            self._run(db, [c for c in batch if c.write], transaction=True)
            if stop:
                return

    def _run(self, db: sqlite3.Connection, calls: list[_Call], *, transaction: bool) -> None:
        if not calls:
            return
        results: list[_Result] | None = None
        if transaction and len(calls) > 1:
            results = self._together(db, calls)
        if results is None:  # (one failed: each again on its own, so that only it fails)
            results = [self._alone(db, call, transaction=transaction) for call in calls]
        loop = calls[0].loop
        if all(call.loop is loop for call in calls):  # one wake-up of the loop per batch
            loop.call_soon_threadsafe(_deliver_all, results)
        else:
            for result in results:
                result[0].loop.call_soon_threadsafe(_deliver_all, [result])

    def _together(self, db: sqlite3.Connection, calls: list[_Call]) -> list[_Result] | None:
        """All the writes in one transaction and one commit; None if any of them failed."""
        try:
            db.execute("BEGIN IMMEDIATE")
            results: list[_Result] = [(call, call.op(db), None) for call in calls]
            db.execute("COMMIT")
        except Exception:  # (each is run again alone, and its error reported then)
            if db.in_transaction:
                db.execute("ROLLBACK")
            return None
        return results

    def _alone(self, db: sqlite3.Connection, call: _Call, *, transaction: bool) -> _Result:
        try:
            if transaction:
                db.execute("BEGIN IMMEDIATE")
            value = call.op(db)
            if transaction:
                db.execute("COMMIT")
        except Exception as exc:  # handed to the caller
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                exc = OutboxError(f"the outbox {self.label} refused {call.op.__name__}: {exc}")
            return call, None, exc
        return call, value, None


_OPEN: dict[tuple[str, str], Connection] = {}
_LOCK = threading.Lock()


def connection_for(
    path: str,
    *,
    synchronous: str,
    label: str,
    check: Callable[[sqlite3.Connection], None] | None = None,
) -> Connection:
    """This process's connection to ``path`` in this durability mode; started, counted.

    ``check`` runs on a new connection before anything is written (it may raise).
    """
    with _LOCK:
        conn = _OPEN.get((path, synchronous))
        if conn is None:
            conn = Connection(path, synchronous=synchronous, label=label, check=check)
            conn.start()
            _OPEN[(path, synchronous)] = conn
        conn.users += 1
        return conn


def release_connection(conn: Connection) -> None:
    """One user less; the last one stops the thread and closes the connection."""
    with _LOCK:
        conn.users -= 1
        if conn.users > 0:
            return
        _OPEN.pop((conn.path, conn.synchronous), None)
    conn.stop()
