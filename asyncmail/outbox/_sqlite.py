"""The SQLite store: the embedded default, for one machine and any number of processes on it.

``sqlite:////var/lib/shop/mail.db`` (four slashes: an absolute path). The database is in
WAL mode with ``synchronous = FULL``: ``enqueue`` returns after its commit reached the disk,
so a message survives ``kill -9`` and power loss alike. Each process writes through one
connection on one thread (``_sqlite_io``), committing concurrent writes together. The
shared rate limit lives in the same file, written with ``synchronous = OFF``: losing its
last slot in a power cut costs nothing.

Leases are rows with a token and an expiry on the wall clock: a lease that runs out (its
worker died) is taken over by the next ``lease`` of any process.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio

from .._exceptions import ConfigError, OutboxError
from ..engine._ratelimit import Limiter, RateLimit
from ..suppression._model import Suppression
from ._model import (
    DIED_AFTER_DOT,
    FINAL_STATES,
    SCHEMA_VERSION,
    Lease,
    NewEntry,
    OutboxStatistics,
    OutboxStatus,
    Outcome,
    Refusal,
    State,
    lane_name,
    when,
)
from ._sqlite_io import Connection, connection_for, release_connection

__all__ = ["SQLiteStore"]

T = TypeVar("T")

KIND = "asyncmail-outbox"
#: How often a waiting ``lease`` looks again for work enqueued by another process.
POLL_INTERVAL = 0.05
#: Expired leases taken over per ``lease`` call at most.
TAKEOVER_BATCH = 200
#: Addresses looked up in one query at most (SQLite allows 32766 parameters).
_CHUNK = 500

_SCHEMA = f"""
CREATE TABLE asyncmail_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO asyncmail_meta VALUES ('kind', '{KIND}'), ('schema', '{SCHEMA_VERSION}');
CREATE TABLE asyncmail_outbox (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    lane INTEGER NOT NULL,
    due REAL NOT NULL,
    token TEXT,
    lease_until REAL,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    message_id TEXT NOT NULL,
    recipients TEXT NOT NULL,
    pending TEXT NOT NULL,
    accepted TEXT NOT NULL DEFAULT '[]',
    refused TEXT NOT NULL DEFAULT '{{}}',
    unknown TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    reply TEXT,
    enqueued_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE asyncmail_payload (key TEXT PRIMARY KEY, payload BLOB NOT NULL);
CREATE INDEX asyncmail_outbox_queue ON asyncmail_outbox (lane, due) WHERE state = 'queued';
CREATE INDEX asyncmail_outbox_leases ON asyncmail_outbox (lease_until)
    WHERE state IN ('leased', 'sending');
CREATE INDEX asyncmail_outbox_changed ON asyncmail_outbox (state, updated_at);
CREATE TABLE asyncmail_rate (name TEXT PRIMARY KEY, tat REAL NOT NULL);
"""

# The suppression list (added after schema version 1 shipped: created where it is missing,
# which an asyncmail without it ignores, so the schema version stays 1).
_SUPPRESSION_SCHEMA = """
CREATE TABLE IF NOT EXISTS asyncmail_suppression (
    address TEXT PRIMARY KEY,
    given TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    diagnostic TEXT NOT NULL,
    added_at REAL NOT NULL,
    source TEXT NOT NULL
)
"""

_STATUS_COLUMNS = (
    "key, state, message_id, lane, attempts, enqueued_at, updated_at, due, accepted, "
    "refused, unknown, pending, error, reply"
)


def _refusals(text: str) -> dict[str, Refusal]:
    return {r: Refusal(c, t, bool(x)) for r, (c, t, x) in json.loads(text).items()}


def _refusals_json(refused: Mapping[str, Refusal]) -> str:
    return json.dumps({r: [e.code, e.text, e.retryable] for r, e in refused.items()})


def _status(row: sqlite3.Row | tuple[Any, ...]) -> OutboxStatus:
    key, state, message_id, lane, attempts, enq, upd, due = row[:8]
    accepted, refused, unknown, pending, error, reply = row[8:]
    state = State(state)
    return OutboxStatus(
        key=key,
        state=state,
        message_id=message_id,
        priority=lane_name(lane),
        attempts=attempts,
        enqueued_at=when(enq),
        updated_at=when(upd),
        next_attempt_at=None if state in FINAL_STATES else when(due),
        accepted=tuple(json.loads(accepted)),
        refused=_refusals(refused),
        unknown=tuple(json.loads(unknown)),
        pending=tuple(json.loads(pending)),
        error=error,
        reply=reply,
    )


def _new_status(entry: NewEntry) -> OutboxStatus:
    """The status of a message just enqueued (what reading it back would say)."""
    state = entry.state
    return OutboxStatus(
        key=entry.key,
        state=state,
        message_id=entry.message_id,
        priority=lane_name(entry.lane),
        attempts=0,
        enqueued_at=when(entry.enqueued_at),
        updated_at=when(entry.enqueued_at),
        next_attempt_at=None if state in FINAL_STATES else when(entry.due),
        refused=dict(entry.refused),
        pending=entry.recipients,
        error=entry.error,
    )


def _get_status(db: sqlite3.Connection, key: str) -> OutboxStatus | None:
    row = db.execute(
        f"SELECT {_STATUS_COLUMNS} FROM asyncmail_outbox WHERE key = ?", (key,)
    ).fetchone()
    return None if row is None else _status(row)


class _SharedLimiter:
    """A GCRA whose state is one row of the store, so every process shares the limit."""

    def __init__(self, conn: Connection, limit: RateLimit) -> None:
        self.conn = conn
        self.limit = limit

    async def acquire(self) -> None:
        interval = self.limit.interval
        burst = self.limit.burst

        def reserve(db: sqlite3.Connection) -> float:
            now = time.time()
            row = db.execute("SELECT tat FROM asyncmail_rate WHERE name = 'send'").fetchone()
            tat = now if row is None or row[0] < now else float(row[0])
            db.execute(
                "INSERT INTO asyncmail_rate VALUES ('send', ?) "
                "ON CONFLICT (name) DO UPDATE SET tat = excluded.tat",
                (tat + interval,),
            )
            return max(0.0, tat - (burst - 1) * interval - now)

        wait = await self.conn.call(reserve, write=True)
        if wait > 0:
            await anyio.sleep(wait)

    def __repr__(self) -> str:
        return f"<shared RateLimiter {self.limit} in {self.conn.label}>"


class SQLiteStore:
    """The outbox in one SQLite file (see the module documentation)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._conn: Connection | None = None
        self._rate_conn: Connection | None = None
        self._work = anyio.Event()  # set when this process enqueued something
        self._busy = False  # the last lease took all it asked for: more is likely waiting

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """``sqlite:////absolute/path.db`` or ``sqlite:///relative/path.db``.

        Raises:
            ConfigError: Not a SQLite URL with a path.
        """
        scheme, sep, rest = url.partition(":///")
        if scheme.lower() != "sqlite" or not sep or not rest or "?" in rest:
            raise ConfigError(
                f"invalid SQLite outbox URL {url!r}: use sqlite:////absolute/path.db "
                "(four slashes) or sqlite:///relative/path.db"
            )
        return cls(rest)

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.url}>"

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        conn = await anyio.to_thread.run_sync(self._connect, "FULL")
        try:
            await conn.call(_create_schema, write=True)
        except BaseException:
            await anyio.to_thread.run_sync(release_connection, conn)
            raise
        self._conn = conn
        self._rate_conn = await anyio.to_thread.run_sync(self._connect, "OFF")

    def _connect(self, synchronous: str) -> Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise OutboxError(f"cannot open the outbox {self.url}: {directory} does not exist")
        return connection_for(
            self.path, synchronous=synchronous, label=self.url, check=_check_schema
        )

    async def aclose(self) -> None:
        for conn in (self._conn, self._rate_conn):
            if conn is not None:
                await anyio.to_thread.run_sync(release_connection, conn)
        self._conn = self._rate_conn = None

    def _db(self) -> Connection:
        if self._conn is None:
            raise OutboxError(f"the outbox {self.url} is not open")
        return self._conn

    async def _write(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db().call(op, write=True)

    async def _read(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self._db().call(op, write=False)

    # -- the queue ------------------------------------------------------------------------

    async def enqueue(self, entry: NewEntry) -> tuple[bool, OutboxStatus]:
        def enqueue(db: sqlite3.Connection) -> tuple[bool, OutboxStatus]:
            done = db.execute(
                "INSERT INTO asyncmail_outbox (key, state, lane, due, message_id, recipients, "
                "pending, refused, error, enqueued_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (
                    entry.key,
                    entry.state.value,
                    entry.lane,
                    entry.due,
                    entry.message_id,
                    json.dumps(entry.recipients),
                    json.dumps(entry.recipients),
                    _refusals_json(entry.refused),
                    entry.error,
                    entry.enqueued_at,
                    entry.enqueued_at,
                ),
            )
            if done.rowcount == 1:  # (kept apart: a state change never rewrites the message)
                db.execute(
                    "INSERT INTO asyncmail_payload VALUES (?, ?)", (entry.key, entry.payload)
                )
                return True, _new_status(entry)
            status = _get_status(db, entry.key)
            assert status is not None
            return done.rowcount == 1, status

        created, status = await self._write(enqueue)
        if created:
            self._work.set()
        return created, status

    async def lease(
        self, worker: str, count: int, seconds: float, *, wait: float, resend_unknown: bool
    ) -> list[Lease]:
        deadline = time.monotonic() + wait
        while True:
            self._work = anyio.Event()
            # (a cheap read first, unless the last lease found more than it could take)
            if self._busy or await self._read(_has_work):
                leases: list[Lease] = await self._write(
                    lambda db: _lease(db, worker, count, seconds, resend_unknown)
                )
                self._busy = len(leases) == count
                if leases:
                    return leases
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            with anyio.move_on_after(min(left, POLL_INTERVAL)):
                await self._work.wait()

    async def renew(self, leases: Sequence[tuple[str, str]], seconds: float) -> set[str]:
        def renew(db: sqlite3.Connection) -> set[str]:
            until = time.time() + seconds
            lost = set()
            for key, token in leases:
                cur = db.execute(
                    "UPDATE asyncmail_outbox SET lease_until = ? WHERE key = ? AND token = ? "
                    "AND state IN ('leased', 'sending')",
                    (until, key, token),
                )
                if cur.rowcount != 1:
                    lost.add(key)
            return lost

        if not leases:
            return set()
        return await self._write(renew)

    async def mark_sending(self, key: str, token: str) -> bool:
        def mark_sending(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE asyncmail_outbox SET state = 'sending', updated_at = ? "
                "WHERE key = ? AND token = ? AND state IN ('leased', 'sending')",
                (time.time(), key, token),
            )
            return cur.rowcount == 1

        return await self._write(mark_sending)

    async def finish(self, key: str, token: str, outcome: Outcome) -> bool:
        [done] = await self.finish_many([(key, token, outcome)])
        return done

    async def finish_many(self, items: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        def finish(db: sqlite3.Connection) -> list[bool]:
            now = time.time()
            return [_finish(db, key, token, outcome, now) for key, token, outcome in items]

        return await self._write(finish)

    async def release(self, key: str, token: str) -> bool:
        def release(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE asyncmail_outbox SET state = 'queued', token = NULL, lease_until = NULL, "
                "worker = NULL, updated_at = ? WHERE key = ? AND token = ? AND state = 'leased'",
                (time.time(), key, token),
            )
            return cur.rowcount == 1

        done: bool = await self._write(release)
        if done:
            self._work.set()
        return done

    # -- for operators --------------------------------------------------------------------

    async def status(self, key: str) -> OutboxStatus | None:
        return await self._read(lambda db: _get_status(db, key))

    async def statistics(self) -> OutboxStatistics:
        def statistics(db: sqlite3.Connection) -> OutboxStatistics:
            now = time.time()
            counts = dict.fromkeys(State, 0)
            for state, n in db.execute(
                "SELECT state, COUNT(*) FROM asyncmail_outbox GROUP BY state"
            ):
                counts[State(state)] = n
            oldest = db.execute(
                "SELECT MIN(enqueued_at) FROM asyncmail_outbox WHERE state = 'queued' AND due <= ?",
                (now,),
            ).fetchone()[0]
            recent = sum(
                db.execute(
                    "SELECT COUNT(*) FROM asyncmail_outbox WHERE state = ? AND updated_at > ?",
                    (state.value, now - 60.0),
                ).fetchone()[0]
                for state in FINAL_STATES
            )
            age = None if oldest is None else max(0.0, now - oldest)
            return OutboxStatistics(counts=counts, oldest_queued_age=age, rate=recent / 60.0)

        return await self._read(statistics)

    async def entries(self, state: State | None, limit: int) -> list[OutboxStatus]:
        def entries(db: sqlite3.Connection) -> list[OutboxStatus]:
            where, args = ("WHERE state = ?", (state.value,)) if state else ("", ())
            rows = db.execute(
                f"SELECT {_STATUS_COLUMNS} FROM asyncmail_outbox {where} "
                "ORDER BY updated_at DESC LIMIT ?",
                (*args, limit),
            )
            return [_status(row) for row in rows]

        return await self._read(entries)

    async def retry(self, keys: Sequence[str] | None) -> int:
        def retry(db: sqlite3.Connection) -> int:
            query = (
                "SELECT key, recipients, accepted FROM asyncmail_outbox "
                "WHERE state IN ('failed', 'unknown')"
            )
            rows = (
                db.execute(query).fetchall()
                if keys is None
                else [r for k in keys for r in db.execute(f"{query} AND key = ?", (k,))]
            )
            now = time.time()
            queued = 0
            for key, recipients, accepted in rows:
                done = set(json.loads(accepted))
                pending = [r for r in json.loads(recipients) if r not in done]
                if not pending:  # (every recipient was suppressed at enqueue)
                    continue
                queued += 1
                db.execute(
                    "UPDATE asyncmail_outbox SET state = 'queued', due = ?, attempts = 0, "
                    "first_attempt_at = NULL, pending = ?, refused = '{}', unknown = '[]', "
                    "error = NULL, token = NULL, updated_at = ? WHERE key = ?",
                    (now, json.dumps(pending), now, key),
                )
            return queued

        n: int = await self._write(retry)
        if n:
            self._work.set()
        return n

    async def purge(self, states: Sequence[State], older_than: float) -> int:
        final = [s.value for s in states if s in FINAL_STATES]
        if not final:
            return 0

        def purge(db: sqlite3.Connection) -> int:
            marks = ", ".join("?" for _ in final)
            where = f"state IN ({marks}) AND updated_at <= ?"
            args = (*final, time.time() - older_than)
            db.execute(
                "DELETE FROM asyncmail_payload WHERE key IN "
                f"(SELECT key FROM asyncmail_outbox WHERE {where})",
                args,
            )
            return db.execute(f"DELETE FROM asyncmail_outbox WHERE {where}", args).rowcount

        return await self._write(purge)

    # -- the suppression list -------------------------------------------------------------

    async def suppressed(self, keys: Sequence[str]) -> set[str]:
        def suppressed(db: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                marks = ", ".join("?" for _ in chunk)
                found.update(
                    row[0]
                    for row in db.execute(
                        f"SELECT address FROM asyncmail_suppression WHERE address IN ({marks})",
                        chunk,
                    )
                )
            return found

        if not keys:
            return set()
        return await self._read(suppressed)

    async def suppress(self, entries: Sequence[Suppression]) -> int:
        def suppress(db: sqlite3.Connection) -> int:
            return sum(
                db.execute(
                    "INSERT INTO asyncmail_suppression VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (address) DO NOTHING",
                    (
                        e.key,
                        e.address,
                        e.reason,
                        e.status,
                        e.diagnostic,
                        e.added_at.timestamp(),
                        e.source,
                    ),
                ).rowcount
                for e in entries
            )

        if not entries:
            return 0
        return await self._write(suppress)

    async def unsuppress(self, keys: Sequence[str]) -> int:
        def unsuppress(db: sqlite3.Connection) -> int:
            return sum(
                db.execute("DELETE FROM asyncmail_suppression WHERE address = ?", (k,)).rowcount
                for k in keys
            )

        if not keys:
            return 0
        return await self._write(unsuppress)

    async def suppressions(self) -> list[Suppression]:
        def suppressions(db: sqlite3.Connection) -> list[Suppression]:
            rows = db.execute(
                "SELECT given, reason, status, diagnostic, added_at, source "
                "FROM asyncmail_suppression ORDER BY added_at"
            )
            return [
                Suppression(
                    address=given,
                    reason=reason,
                    status=status,
                    diagnostic=diagnostic,
                    added_at=when(added_at),
                    source=source,
                )
                for given, reason, status, diagnostic, added_at, source in rows
            ]

        return await self._read(suppressions)

    def limiter(self, limit: RateLimit) -> Limiter:
        if self._rate_conn is None:
            raise OutboxError(f"the outbox {self.url} is not open")
        return _SharedLimiter(self._rate_conn, limit)


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _create_schema(db: sqlite3.Connection) -> None:
    """Create the schema in an empty database (checked, in a write transaction)."""
    if _tables(db):
        _check_schema(db)
    else:
        for statement in _SCHEMA.split(";"):  # (executescript would COMMIT first)
            if statement.strip():
                db.execute(statement)
    db.execute(_SUPPRESSION_SCHEMA)


def _check_schema(db: sqlite3.Connection) -> None:
    """Refuse a foreign or other-version database, before anything is written to it."""
    try:
        tables = _tables(db)
    except sqlite3.DatabaseError as exc:
        raise OutboxError(f"this file is not an asyncmail outbox: {exc}") from exc
    if not tables:
        return
    if "asyncmail_meta" not in tables:
        raise OutboxError(
            "this database is not an asyncmail outbox (it holds other tables); "
            "refusing to touch it: give the outbox a file of its own"
        )
    meta = dict(db.execute("SELECT name, value FROM asyncmail_meta").fetchall())
    if meta.get("kind") != KIND:
        raise OutboxError("this database is not an asyncmail outbox; refusing to touch it")
    if meta.get("schema") != str(SCHEMA_VERSION):
        raise OutboxError(
            f"this outbox has schema version {meta.get('schema')}, but this asyncmail "
            f"reads version {SCHEMA_VERSION}: use the matching asyncmail version"
        )


def _has_work(db: sqlite3.Connection) -> bool:
    now = time.time()
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM asyncmail_outbox INDEXED BY asyncmail_outbox_queue "
        "WHERE state = 'queued' AND due <= ?) "
        "OR EXISTS (SELECT 1 FROM asyncmail_outbox INDEXED BY asyncmail_outbox_leases "
        "WHERE state IN ('leased', 'sending') AND lease_until < ?)",
        (now, now),
    ).fetchone()
    return bool(row[0])


def _take_over(db: sqlite3.Connection, now: float, resend_unknown: bool) -> None:
    """Leases that ran out: LEASED ones go back to the queue, SENDING ones end UNKNOWN."""
    expired = db.execute(
        "SELECT key, state, pending, accepted FROM asyncmail_outbox "
        "INDEXED BY asyncmail_outbox_leases "
        "WHERE state IN ('leased', 'sending') AND lease_until < ? LIMIT ?",
        (now, TAKEOVER_BATCH),
    ).fetchall()
    for key, state, pending, accepted in expired:
        if state == "leased" or resend_unknown:
            db.execute(
                "UPDATE asyncmail_outbox SET state = 'queued', token = NULL, "
                "lease_until = NULL, worker = NULL, due = ?, updated_at = ? WHERE key = ?",
                (now, now, key),
            )
        else:
            # (recipients an earlier attempt reached make it DELIVERED, as in send())
            final = "delivered" if json.loads(accepted) else "unknown"
            db.execute(
                "UPDATE asyncmail_outbox SET state = ?, unknown = ?, pending = '[]', "
                "lease_until = NULL, worker = NULL, error = ?, updated_at = ? WHERE key = ?",
                (final, pending, DIED_AFTER_DOT, now, key),
            )


def _lease(
    db: sqlite3.Connection, worker: str, count: int, seconds: float, resend_unknown: bool
) -> list[Lease]:
    now = time.time()
    _take_over(db, now, resend_unknown)
    rows = db.execute(
        "SELECT o.key, p.payload, message_id, pending, accepted, refused, attempts, "
        "first_attempt_at, lane FROM asyncmail_outbox AS o INDEXED BY asyncmail_outbox_queue "
        "JOIN asyncmail_payload AS p "
        "ON p.key = o.key WHERE state = 'queued' AND due <= ? ORDER BY lane, due LIMIT ?",
        (now, count),
    ).fetchall()
    leases = []
    for key, payload, message_id, pending, accepted, refused, attempts, first, lane in rows:
        token = secrets.token_hex(12)
        db.execute(
            "UPDATE asyncmail_outbox SET state = 'leased', token = ?, lease_until = ?, "
            "worker = ?, updated_at = ? WHERE key = ?",
            (token, now + seconds, worker, now, key),
        )
        leases.append(
            Lease(
                key=key,
                token=token,
                payload=bytes(payload),
                message_id=message_id,
                pending=tuple(json.loads(pending)),
                accepted=tuple(json.loads(accepted)),
                refused=_refusals(refused),
                attempts=attempts,
                first_attempt_at=first,
                lane=lane,
            )
        )
    return leases


def _finish(db: sqlite3.Connection, key: str, token: str, outcome: Outcome, now: float) -> bool:
    """Write an attempt's outcome under its lease; False when the lease was lost."""
    final = outcome.state in FINAL_STATES
    cur = db.execute(
        "UPDATE asyncmail_outbox SET state = ?, token = ?, lease_until = NULL, "
        "worker = NULL, due = ?, attempts = ?, first_attempt_at = ?, pending = ?, "
        "accepted = ?, refused = ?, unknown = ?, error = ?, reply = ?, updated_at = ? "
        "WHERE key = ? AND token = ? AND state IN ('leased', 'sending')",
        (
            outcome.state.value,
            token if final else None,
            outcome.due,
            outcome.attempts,
            outcome.first_attempt_at,
            json.dumps(outcome.pending),
            json.dumps(outcome.accepted),
            _refusals_json(outcome.refused),
            json.dumps(outcome.unknown),
            outcome.error,
            outcome.reply,
            now,
            key,
            token,
        ),
    )
    return cur.rowcount == 1
