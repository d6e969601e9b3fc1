"""``RedisStore``: the outbox in Redis Streams, shared by workers on many machines.

Keys, all under one hash tag (``asyncmail:{QUEUE}:``) so that one outbox lives in one slot
of a Redis Cluster or Valkey: ``meta`` (marker and schema version), ``lane:0..2`` (one
stream per priority lane, consumer group ``workers``), ``delayed`` (a sorted set of the
messages due later, by due time), ``msg:<key>`` (one hash per message, see
``_redis_scripts``), ``counts`` (a hash of counters by state), ``idx:<state>`` (a sorted set
per state, by last change), ``done`` (final outcomes of the last minute) and ``ratelimit``.

A lease is a stream entry in a worker's pending list plus a fresh token in the record;
every write under a lease is a Lua script that compares the token first. A lease runs out
when its entry has been idle (not renewed) for the lease's seconds, measured by Redis:
``lease`` takes such entries over with XAUTOCLAIM (its min-idle-time: the caller's lease
seconds), checking the record's own deadline so that a worker with shorter leases never takes
a longer live one. Workers of one outbox should use the same lease seconds: a worker with
longer ones sees a shorter lease run out only after its own term. ``release`` leaves the
entry in place and sets its idle time to decades, so the next XAUTOCLAIM of any worker takes
it at once, ahead of newer messages of its lane.

``statistics().oldest_queued_age`` is approximate: the age of the oldest stream entry not
yet delivered (or released) in any lane, read from the entry id (its time on the server's
clock: when the message was enqueued, or became due), or of the earliest due time still in
``delayed``. ``rate`` counts messages that reached a final state in the last 60 s.

The keys are laid out for a cluster, but ``from_url`` connects redis-py's single-node client.

Durability: ``enqueue`` returns once Redis has the write; with ``appendonly yes`` it is in
the AOF before the reply. With ``appendfsync everysec`` (Redis's default) a crash of the
Redis process loses nothing, but a crash of the machine may lose the last second; with
``appendfsync always`` nothing is lost, at the cost of an fsync per write. (Redis 7.0 has no
WAITAOF to ask for it per command.) Without AOF, ``open`` logs a warning.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import anyio

from .._exceptions import ConfigError, OutboxError
from ..engine._ratelimit import RateLimit
from ..suppression._model import Suppression
from . import _redis_scripts as scripts
from ._model import (
    DIED_AFTER_DOT,
    FINAL_STATES,
    SCHEMA_VERSION,
    Lease,
    NewEntry,
    OutboxStatistics,
    OutboxStatus,
    Outcome,
    State,
    redact_url,
    when,
)
from ._redis_scripts import (
    STATUS_FIELDS,
    as_list,
    as_text,
    delivered,
    lease_of,
    optional_float,
    status_of,
)

__all__ = ["RedisLimiter", "RedisStore"]

logger = logging.getLogger("asyncmail")

DEFAULT_QUEUE = "asyncmail"
#: What ``meta`` says of an asyncmail outbox.
MARKER = "asyncmail-outbox"
GROUP = "workers"
#: The longest one blocking read waits before expired leases and due messages are looked at.
POLL_SECONDS = 1.0
MIN_POLL_SECONDS = 0.01
CONNECT_TIMEOUT = 10.0
_CHUNK = 500

Arg = str | bytes | int | float


class _Pipeline(Protocol):
    def execute_command(self, *args: Arg) -> object: ...

    async def execute(self, raise_on_error: bool) -> object: ...


class _Script(Protocol):
    def __call__(self, keys: Sequence[str], args: Sequence[Arg]) -> Awaitable[object]: ...


class _Client(Protocol):
    """What the store uses of ``redis.asyncio.Redis`` (whose own types are loose)."""

    async def execute_command(self, *args: Arg) -> object: ...

    def register_script(self, script: str) -> _Script: ...

    def pipeline(self, transaction: bool) -> _Pipeline: ...

    async def aclose(self) -> None: ...


class _Redis:
    """The parts of redis-py the store uses, imported on demand (the ``redis`` extra)."""

    def __init__(self) -> None:
        from redis.asyncio import Redis, RedisError
        from redis.asyncio.connection import parse_url
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.Redis, self.RedisError, self.parse_url = Redis, RedisError, parse_url
        self.no_retry = Retry(NoBackoff(), 0)


def _import_redis() -> _Redis:
    try:
        return _Redis()
    except ImportError as exc:
        raise ConfigError(
            "the Redis outbox needs redis-py: pip install 'asyncmail[redis]'"
        ) from exc


class RedisStore:
    """The outbox's store in Redis (``redis://[:password@]host:port/db?queue=NAME``)."""

    def __init__(self, *, url: str, client_url: str, queue: str) -> None:
        self.url = redact_url(url)
        self.queue = queue
        self._client_url = client_url
        self._password = unquote(urlsplit(url).password or "")
        self._prefix = f"asyncmail:{{{queue}}}:"
        self._fixed = [self._prefix + name for name in scripts.FIXED_KEYS]
        self._lanes = [self._prefix + f"lane:{lane}" for lane in range(3)]
        self._redis: _Client | None = None
        self._scripts: dict[str, _Script] = {}
        self._finish_sha: str | None = None
        self._closed = False
        self._errors: tuple[type[BaseException], ...] = (OSError,)

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """The store a ``redis://`` or ``rediss://`` URL names (not yet opened).

        Raises:
            ConfigError: Not such a URL, a bad queue name, or redis-py is not installed.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ConfigError(f"not a Redis URL: {redact_url(url)!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        queues = [value for name, value in query if name == "queue"] or [DEFAULT_QUEUE]
        queue = queues[-1]
        if not queue or "{" in queue or "}" in queue:
            raise ConfigError(f"a queue name must be non-empty, without braces: {queue!r}")
        rest = urlencode([(name, value) for name, value in query if name != "queue"])
        client_url = urlunsplit(parts._replace(query=rest))
        try:  # a missing extra or a bad option is a ConfigError now, not at the first use
            _import_redis().parse_url(client_url)
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from exc
        return cls(url=url, client_url=client_url, queue=queue)

    def _connect(self) -> _Client:
        redis = _import_redis()
        self._errors = (redis.RedisError, OSError)
        # No retry inside redis-py: a script sent twice could be a write done twice.
        client: _Client = redis.Redis.from_url(
            self._client_url, retry=redis.no_retry, socket_connect_timeout=CONNECT_TIMEOUT
        )
        return client

    @contextmanager
    def _boundary(self, doing: str) -> Iterator[None]:
        """Where redis-py's errors become OutboxError, without the password."""
        try:
            yield
        except self._errors as exc:
            text = str(exc) or type(exc).__name__
            if self._password:
                text = text.replace(self._password, "***")
            raise OutboxError(f"outbox {self.url}: {doing} failed: {text}") from exc

    @property
    def _db(self) -> _Client:
        if self._redis is None:
            state = "closed" if self._closed else "not open"
            raise OutboxError(f"outbox {self.url} is {state}")
        return self._redis

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> object:
        """Run one of ``_redis_scripts`` with the fixed keys and arguments first."""
        fixed_args = [self._prefix, GROUP, repr(time.time())]
        return await self._eval(name, [*self._fixed, *keys], [*fixed_args, *args])

    async def _slim(self, name: str, key: str, args: Sequence[Arg]) -> object:
        """Run a script that takes only the record's key (``_redis_scripts._slim``)."""
        fixed_args = [self._prefix, GROUP, repr(time.time())]
        return await self._eval(name, [self._msg(key)], [*fixed_args, *args])

    def _script(self, name: str) -> _Script:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._db.register_script(getattr(scripts, name))
        return script

    async def _eval(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> object:
        script = self._script(name)
        with self._boundary(name.lower()):
            return await script(keys, args)

    def _msg(self, key: str) -> str:
        return f"{self._prefix}msg:{key}"

    def _idx(self, state: State) -> str:
        return f"{self._prefix}idx:{state.value}"

    async def open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.url} is closed")
        if self._redis is not None:
            return
        self._redis = client = self._connect()
        try:
            await self._check()
        except BaseException:
            self._redis = None
            with anyio.CancelScope(shield=True):
                await client.aclose()
            raise

    async def _check(self) -> None:
        """Create the outbox on an empty namespace, or check that it is one of ours."""
        try:
            with self._boundary("connecting"):
                info = await self._db.execute_command("INFO", "persistence")
        except (TypeError, ValueError) as exc:  # an option of the URL redis-py refused
            raise ConfigError(f"bad Redis URL {self.url!r}: {exc}") from exc
        verdict = [
            as_text(v) for v in as_list(await self._run("OPEN", [], [MARKER, SCHEMA_VERSION]))
        ]
        if verdict[0] not in ("ok", "created"):
            raise OutboxError(f"outbox {self.url}: {self._refusal(verdict)}")
        if isinstance(info, dict) and str(info.get("aof_enabled", "1")) == "0":
            logger.warning("outbox %s: Redis has appendonly off: enqueue is not durable", self.url)

    def _refusal(self, verdict: list[str]) -> str:
        what = verdict[0]
        if what == "schema":
            return f"schema version {verdict[1]}, this asyncmail reads {SCHEMA_VERSION}; not opened"
        if what == "type":
            return f"key {verdict[1]} is a Redis {verdict[2]}, not an outbox's; not touched"
        return f"key {verdict[1]} belongs to something else, not an asyncmail outbox; not touched"

    async def aclose(self) -> None:
        client, self._redis, self._closed = self._redis, None, True
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.aclose()

    async def enqueue(self, entry: NewEntry) -> tuple[bool, OutboxStatus]:
        refused = {r: [v.code, v.text, v.retryable] for r, v in entry.refused.items()}
        args: list[Arg] = [
            entry.key, entry.lane, repr(entry.due), entry.payload, entry.message_id,
            json.dumps(entry.recipients), repr(entry.enqueued_at), json.dumps(refused),
            entry.error or "", *STATUS_FIELDS,
        ]  # fmt: skip
        reply = as_list(await self._run("ENQUEUE", [self._msg(entry.key)], args))
        return reply[0] == 1, status_of(as_list(reply[1]))

    async def lease(
        self, worker: str, count: int, seconds: float, *, wait: float, resend_unknown: bool
    ) -> list[Lease]:
        if count < 1:
            return []
        lease_ms = max(1, math.ceil(seconds * 1000))
        give_up = anyio.current_time() + wait
        adopt: list[tuple[int, str]] = []
        while True:
            leases, due = await self._lease_once(worker, count, lease_ms, resend_unknown, adopt)
            remaining = give_up - anyio.current_time()
            if leases or remaining <= 0:
                return leases
            # Block on the lanes' streams, but look again for expired leases and due messages.
            block = min(remaining, POLL_SECONDS, max(seconds, MIN_POLL_SECONDS))
            if due is not None:
                block = min(block, due - time.time())
            adopt = await self._block(worker, count, block) if block >= 0.001 else []

    async def _lease_once(
        self, worker: str, count: int, lease_ms: int, resend: bool, adopt: list[tuple[int, str]]
    ) -> tuple[list[Lease], float | None]:
        args: list[Arg] = [worker, count, lease_ms, int(resend), DIED_AFTER_DOT, len(adopt)]
        args += [part for lane, entry in adopt for part in (lane, entry)]
        args += [secrets.token_urlsafe(16) for _ in range(count)]
        rows, next_due = as_list(await self._run("LEASE", [], args))
        return [lease_of(as_list(row)) for row in as_list(rows)], optional_float(next_due)

    async def _block(self, worker: str, count: int, seconds: float) -> list[tuple[int, str]]:
        """Wait for new stream entries (delivered to this worker, to be adopted by LEASE)."""
        with self._boundary("waiting for work"):
            reply = await self._db.execute_command(
                "XREADGROUP", "GROUP", GROUP, worker, "COUNT", count,
                "BLOCK", max(1, round(seconds * 1000)), "STREAMS", *self._lanes, ">", ">", ">",
            )  # fmt: skip
        return delivered(reply)

    async def renew(self, leases: Sequence[tuple[str, str]], seconds: float) -> set[str]:
        if not leases:
            return set()
        keys = [self._msg(key) for key, _ in leases]
        args: list[Arg] = [max(1, math.ceil(seconds * 1000)), *(token for _, token in leases)]
        lost = as_list(await self._run("RENEW", keys, args))
        return {leases[int(as_text(i)) - 1][0] for i in lost}

    async def mark_sending(self, key: str, token: str) -> bool:
        return await self._slim("MARK_SLIM", key, [token, key]) == 1

    async def finish(self, key: str, token: str, outcome: Outcome) -> bool:
        return await self._slim("FINISH_SLIM", key, _finish_args(key, token, outcome)) == 1

    async def finish_many(self, items: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        if len(items) == 1:
            key, token, outcome = items[0]
            return [await self.finish(key, token, outcome)]
        fixed_args = [self._prefix, GROUP, repr(time.time())]
        calls = [
            [self._msg(key), *fixed_args, *_finish_args(key, token, outcome)]
            for key, token, outcome in items
        ]
        with self._boundary("finish"):
            for attempt in range(2):  # (a restarted server has forgotten the script)
                if self._finish_sha is None or attempt:
                    text = scripts.FINISH_SLIM
                    self._finish_sha = as_text(
                        await self._db.execute_command("SCRIPT", "LOAD", text)
                    )
                pipe = self._db.pipeline(transaction=False)
                for call in calls:
                    pipe.execute_command("EVALSHA", self._finish_sha, 1, *call)
                replies = as_list(await pipe.execute(raise_on_error=False))
                if not any("NOSCRIPT" in str(r) for r in replies if isinstance(r, Exception)):
                    break
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return [reply == 1 for reply in replies]

    async def release(self, key: str, token: str) -> bool:
        """Give a LEASED message back; False if the lease was lost or it may have been sent."""
        return await self._run("RELEASE", [self._msg(key)], [token, key]) == 1

    async def status(self, key: str) -> OutboxStatus | None:
        with self._boundary("status"):
            values = as_list(
                await self._db.execute_command("HMGET", self._msg(key), *STATUS_FIELDS)
            )
        return None if values[1] is None else status_of(values)

    async def statistics(self) -> OutboxStatistics:
        counts, done, server_ms, oldest_ms, due = as_list(await self._run("STATS", [], []))
        flat = [as_text(v) for v in as_list(counts)]
        by_state = dict(zip(flat[::2], flat[1::2], strict=True))
        ages: list[float] = []  # since the oldest due message became due, on either clock
        if oldest_ms is not None:
            ages.append((int(as_text(server_ms)) - int(as_text(oldest_ms))) / 1000)
        if due is not None:
            ages.append(time.time() - float(as_text(due)))
        return OutboxStatistics(
            counts={state: int(by_state.get(state.value, 0)) for state in State},
            oldest_queued_age=max(0.0, *ages) if ages else None,
            rate=int(as_text(done)) / 60,
        )

    async def entries(self, state: State | None, limit: int) -> list[OutboxStatus]:
        if limit <= 0:
            return []
        args = ["" if state is None else state.value, limit, *STATUS_FIELDS]
        rows = as_list(await self._run("ENTRIES", [], args))
        return [status_of(as_list(row)) for row in rows if as_list(row)[1] is not None]

    async def retry(self, keys: Sequence[str] | None) -> int:
        if keys is None:
            keys = []
            for state in (State.FAILED, State.UNKNOWN):
                with self._boundary("retry"):
                    found = await self._db.execute_command("ZRANGE", self._idx(state), 0, -1)
                keys += map(as_text, as_list(found))
        queued = 0
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            queued += int(as_text(await self._run("RETRY", [self._msg(k) for k in chunk], chunk)))
        return queued

    async def purge(self, states: Sequence[State], older_than: float) -> int:
        if not set(states) <= FINAL_STATES:
            raise ConfigError("purge deletes final messages only (delivered, failed, unknown)")
        cutoff = repr(time.time() - older_than)
        deleted = 0
        for state in set(states):
            while True:
                n = int(as_text(await self._run("PURGE", [], [state.value, cutoff, _CHUNK])))
                deleted += n
                if n < _CHUNK:
                    break
        return deleted

    # -- the suppression list: one hash, normalised address -> the entry as JSON --------------

    @property
    def _suppressions(self) -> str:
        return self._prefix + "suppressed"

    async def suppressed(self, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            with self._boundary("suppressed"):
                values = as_list(
                    await self._db.execute_command("HMGET", self._suppressions, *chunk)
                )
            found.update(k for k, v in zip(chunk, values, strict=True) if v is not None)
        return found

    async def suppress(self, entries: Sequence[Suppression]) -> int:
        if not entries:
            return 0
        with self._boundary("suppress"):
            pipe = self._db.pipeline(transaction=False)
            for e in entries:
                value = [e.address, e.reason, e.status, e.diagnostic, e.added_at.timestamp()]
                value.append(e.source)
                pipe.execute_command("HSETNX", self._suppressions, e.key, json.dumps(value))
            replies = as_list(await pipe.execute(raise_on_error=True))
        return sum(1 for reply in replies if reply == 1)

    async def unsuppress(self, keys: Sequence[str]) -> int:
        if not keys:
            return 0
        removed = 0
        for start in range(0, len(keys), _CHUNK):
            with self._boundary("unsuppress"):
                n = await self._db.execute_command(
                    "HDEL", self._suppressions, *keys[start : start + _CHUNK]
                )
            removed += int(as_text(n))
        return removed

    async def suppressions(self) -> list[Suppression]:
        found: list[Suppression] = []
        cursor = "0"
        while True:
            with self._boundary("suppressions"):
                reply = as_list(
                    await self._db.execute_command(
                        "HSCAN", self._suppressions, cursor, "COUNT", _CHUNK
                    )
                )
            # (redis-py turns HSCAN's reply into a cursor and a dict)
            cursor, pairs = as_text(reply[0]), reply[1]
            values = list(pairs.values()) if isinstance(pairs, dict) else as_list(pairs)[1::2]
            for value in values:
                address, reason, status, diagnostic, added_at, source = json.loads(as_text(value))
                found.append(
                    Suppression(
                        address=address,
                        reason=reason,
                        status=status,
                        diagnostic=diagnostic,
                        added_at=when(added_at),
                        source=source,
                    )
                )
            if cursor == "0":
                return found

    def limiter(self, limit: RateLimit) -> RedisLimiter:
        return RedisLimiter(limit, self._reserve)

    async def _reserve(self, limit: RateLimit) -> float:
        interval_us = math.ceil(limit.interval * 1_000_000)
        key = self._prefix + "ratelimit"
        wait_us = await self._eval("LIMIT", [key], [interval_us, limit.burst])
        return int(as_text(wait_us)) / 1_000_000

    def __repr__(self) -> str:
        state = "open" if self._redis is not None else "closed" if self._closed else "not open"
        return f"<RedisStore {self.url!r} queue={self.queue!r} {state}>"


class RedisLimiter:
    """One rate limit shared by every worker of an outbox, kept in Redis (a GCRA on its clock)."""

    def __init__(self, limit: RateLimit, reserve: Callable[[RateLimit], Awaitable[float]]) -> None:
        self.limit = limit
        self._reserve = reserve

    async def reserve(self) -> float:
        """Take the next slot and return how long to wait for it (seconds)."""
        return await self._reserve(self.limit)

    async def acquire(self) -> None:
        """Wait until the caller may start one transaction."""
        wait = await self.reserve()
        if wait > 0:
            await anyio.sleep(wait)

    def __repr__(self) -> str:
        return f"<RedisLimiter {self.limit}>"


def _finish_args(key: str, token: str, outcome: Outcome) -> list[Arg]:
    """FINISH's arguments after the fixed ones.

    Raises:
        ConfigError: The outcome is neither final nor QUEUED.
    """
    if outcome.state not in FINAL_STATES and outcome.state is not State.QUEUED:
        raise ConfigError(f"an outcome is final or QUEUED, not {outcome.state}")
    refused = {r: [v.code, v.text, v.retryable] for r, v in outcome.refused.items()}
    first = outcome.first_attempt_at
    return [
        token, key, outcome.state.value, json.dumps(outcome.pending),
        json.dumps(outcome.accepted), json.dumps(refused), json.dumps(outcome.unknown),
        outcome.attempts, "" if first is None else repr(first), repr(outcome.due),
        outcome.error or "", outcome.reply or "",
    ]  # fmt: skip
