"""The Store contract: every outbox store (SQLite, Redis) passes the same tests.

``new_store`` opens another store on the same outbox (another worker, maybe on another
machine); ``store`` is the first one. Leases that must run out last a fraction of a second.
The tests at the end are about the Redis store alone: its shared rate limiter, its schema
and foreign keys, an unreachable server, and a restart of redis-server.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import pytest

from asyncmail import ConfigError, RateLimit
from asyncmail._exceptions import OutboxError
from asyncmail.outbox._model import Lease, NewEntry, Outcome, Refusal, State
from asyncmail.outbox._open import open_store
from asyncmail.outbox._redis import RedisStore
from asyncmail.outbox._store import SCHEMA_VERSION, Store

from ._redis import RedisServer, free_port, redis_client

NewStore = Callable[[], Awaitable[Store]]

#: A lease that outlives every test unless it is meant to run out.
LONG = 30.0
#: A lease meant to run out during the test.
SHORT = 0.3
HIGH, NORMAL, LOW = 0, 1, 2


@pytest.fixture(params=["sqlite", "redis"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[NewStore]:
    """Opens stores on one fresh outbox of the backend under test; closes them afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/outbox.db"
    else:
        url = request.getfixturevalue("redis_url")
    opened: list[Store] = []

    async def make() -> Store:
        store = open_store(url)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.aclose()


@pytest.fixture
async def store(new_store: NewStore) -> Store:
    return await new_store()


def entry(
    key: str,
    *,
    lane: int = NORMAL,
    due: float | None = None,
    recipients: tuple[str, ...] = ("a@example.com",),
    payload: bytes | None = None,
) -> NewEntry:
    now = time.time()
    return NewEntry(
        key=key,
        payload=payload if payload is not None else f"message {key}".encode(),
        message_id=f"<{key}@example.com>",
        recipients=recipients,
        lane=lane,
        due=now if due is None else due,
        enqueued_at=now,
    )


def outcome(
    state: State,
    *,
    pending: tuple[str, ...] = (),
    accepted: tuple[str, ...] = (),
    refused: Mapping[str, Refusal] | None = None,
    unknown: tuple[str, ...] = (),
    attempts: int = 1,
    first_attempt_at: float | None = None,
    due: float = 0.0,
    error: str | None = None,
    reply: str | None = None,
) -> Outcome:
    return Outcome(
        state=state,
        pending=pending,
        accepted=accepted,
        refused=refused or {},
        unknown=unknown,
        attempts=attempts,
        first_attempt_at=first_attempt_at,
        due=due,
        error=error,
        reply=reply,
    )


async def lease(
    store: Store,
    count: int = 10,
    *,
    worker: str = "w1",
    seconds: float = LONG,
    wait: float = 0.0,
    resend_unknown: bool = False,
) -> list[Lease]:
    return await store.lease(worker, count, seconds, wait=wait, resend_unknown=resend_unknown)


async def counts(store: Store) -> dict[State, int]:
    """The non-zero counts by state."""
    return {state: n for state, n in (await store.statistics()).counts.items() if n}


async def test_an_enqueued_message_is_leased_with_its_payload_and_recipients(store: Store) -> None:
    created, status = await store.enqueue(entry("m1", recipients=("a@x.org", "b@x.org")))
    assert created and status.state is State.QUEUED and status.priority == "normal"
    [got] = await lease(store)
    assert (got.key, got.payload, got.message_id) == ("m1", b"message m1", "<m1@example.com>")
    assert got.pending == ("a@x.org", "b@x.org") and got.accepted == () and not got.refused
    assert (got.attempts, got.first_attempt_at, got.lane) == (0, None, NORMAL)
    assert got.token


async def test_enqueue_under_a_taken_key_changes_nothing_and_returns_the_first_status(
    store: Store,
) -> None:
    await store.enqueue(entry("m1", recipients=("a@x.org",)))
    [held] = await lease(store)
    created, status = await store.enqueue(entry("m1", recipients=("z@x.org",), payload=b"other"))
    assert not created
    assert status.state is State.LEASED and status.pending == ("a@x.org",)
    assert await lease(store, worker="w2") == []
    assert await counts(store) == {State.LEASED: 1}
    assert held.payload == b"message m1"


async def test_a_higher_lane_is_leased_first_even_when_enqueued_later(store: Store) -> None:
    await store.enqueue(entry("low", lane=LOW))
    await store.enqueue(entry("normal", lane=NORMAL))
    await store.enqueue(entry("high", lane=HIGH))
    assert [got.key for got in await lease(store, 1)] == ["high"]
    assert [got.key for got in await lease(store, 5)] == ["normal", "low"]


async def test_a_message_due_later_is_not_leased_before_its_due_time(store: Store) -> None:
    due = time.time() + 0.3
    await store.enqueue(entry("later", due=due))
    assert await lease(store) == []
    [got] = await lease(store, wait=5.0)  # waits for the due time, then leases it
    assert got.key == "later"
    assert time.time() >= due


async def test_a_waiting_lease_gets_a_message_enqueued_while_it_waits(
    new_store: NewStore,
) -> None:
    worker, producer = await new_store(), await new_store()
    got: list[Lease] = []

    async def wait_for_work() -> None:
        got.extend(await lease(worker, wait=10.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_work)
        await anyio.sleep(0.05)
        await producer.enqueue(entry("m1"))
    assert [g.key for g in got] == ["m1"]


async def test_concurrent_leasers_never_get_the_same_message(new_store: NewStore) -> None:
    stores = [await new_store() for _ in range(3)]
    for i in range(60):
        await stores[0].enqueue(entry(f"m{i}", lane=i % 3))
    taken: list[str] = []

    async def leaser(store: Store, name: str) -> None:
        while batch := await lease(store, 3, worker=name):
            taken.extend(got.key for got in batch)

    async with anyio.create_task_group() as tg:
        for n, store in enumerate(stores):
            for k in range(4):
                tg.start_soon(leaser, store, f"w{n}-{k}")
    assert sorted(taken) == sorted(f"m{i}" for i in range(60))


async def test_an_expired_lease_is_taken_over_under_a_new_token_and_the_old_one_is_refused(
    new_store: NewStore,
) -> None:
    first, second = await new_store(), await new_store()
    await first.enqueue(entry("m1"))
    [old] = await lease(first, seconds=SHORT)
    await anyio.sleep(SHORT * 1.5)
    [new] = await lease(second, worker="w2", seconds=SHORT)  # every worker, the same term
    assert new.key == "m1" and new.token != old.token
    assert not await first.mark_sending("m1", old.token)
    assert not await first.finish("m1", old.token, outcome(State.DELIVERED, accepted=new.pending))
    assert not await first.release("m1", old.token)
    assert await first.renew([("m1", old.token)], LONG) == {"m1"}
    assert await second.mark_sending("m1", new.token)
    status = await second.status("m1")
    assert status is not None and status.state is State.SENDING
    assert await counts(second) == {State.SENDING: 1}


async def test_a_renewed_lease_is_not_taken_over(new_store: NewStore) -> None:
    holder, other = await new_store(), await new_store()
    await holder.enqueue(entry("m1"))
    [held] = await lease(holder, seconds=SHORT)
    for _ in range(3):  # 0.45 s in all: longer than the lease, renewed every 0.15 s
        await anyio.sleep(SHORT / 2)
        assert await holder.renew([(held.key, held.token)], SHORT) == set()
        assert await lease(other, worker="w2", seconds=SHORT) == []
    assert await holder.mark_sending("m1", held.token)


async def test_an_expired_sending_message_ends_unknown_and_is_not_leased_again(
    new_store: NewStore,
) -> None:
    first, second = await new_store(), await new_store()
    await first.enqueue(entry("m1", recipients=("a@x.org", "b@x.org")))
    [held] = await lease(first, seconds=SHORT)
    assert await first.mark_sending("m1", held.token)
    await anyio.sleep(SHORT * 1.5)
    assert await lease(second, worker="w2", seconds=SHORT) == []
    status = await second.status("m1")
    assert status is not None and status.state is State.UNKNOWN and status.final
    assert status.unknown == ("a@x.org", "b@x.org") and status.error
    assert status.next_attempt_at is None
    assert await lease(second, worker="w2", seconds=SHORT) == []
    assert not await first.finish("m1", held.token, outcome(State.DELIVERED))
    assert await counts(second) == {State.UNKNOWN: 1}


async def test_an_expired_sending_message_is_leased_again_with_resend_unknown(
    new_store: NewStore,
) -> None:
    first, second = await new_store(), await new_store()
    await first.enqueue(entry("m1", recipients=("a@x.org", "b@x.org")))
    [held] = await lease(first, seconds=SHORT)
    assert await first.mark_sending("m1", held.token)
    await anyio.sleep(SHORT * 1.5)
    [again] = await lease(second, worker="w2", seconds=SHORT, resend_unknown=True)
    assert again.key == "m1" and again.token != held.token
    assert again.pending == ("a@x.org", "b@x.org")
    assert await counts(second) == {State.LEASED: 1}


async def test_a_retry_later_outcome_reschedules_only_the_pending_recipients_at_its_due_time(
    store: Store,
) -> None:
    await store.enqueue(entry("m1", recipients=("a@x.org", "b@x.org")))
    [held] = await lease(store)
    assert await store.mark_sending("m1", held.token)
    first_attempt, due = time.time(), time.time() + 0.3
    later = outcome(
        State.QUEUED,
        pending=("b@x.org",),
        accepted=("a@x.org",),
        first_attempt_at=first_attempt,
        due=due,
        error="451 try later",
    )
    assert await store.finish("m1", held.token, later)
    status = await store.status("m1")
    assert status is not None and status.state is State.QUEUED
    assert status.next_attempt_at is not None
    assert status.next_attempt_at.timestamp() == pytest.approx(due)
    assert (status.pending, status.accepted, status.attempts) == (("b@x.org",), ("a@x.org",), 1)
    assert await lease(store) == []
    [again] = await lease(store, wait=5.0)
    assert time.time() >= due
    assert (again.pending, again.accepted, again.attempts) == (("b@x.org",), ("a@x.org",), 1)
    assert again.first_attempt_at == pytest.approx(first_attempt)
    assert again.token != held.token


async def test_a_released_message_is_leasable_at_once_by_another_worker(
    new_store: NewStore,
) -> None:
    first, second = await new_store(), await new_store()
    await first.enqueue(entry("m1"))
    [held] = await lease(first)
    assert await first.release("m1", held.token)
    assert not await first.release("m1", held.token)
    assert await counts(first) == {State.QUEUED: 1}
    [again] = await lease(second, worker="w2")
    assert again.key == "m1" and again.token != held.token
    assert not await first.mark_sending("m1", held.token)


async def test_status_and_statistics_count_each_state_exactly(store: Store) -> None:
    for i in range(6):
        await store.enqueue(entry(f"m{i}"))
    stats = await store.statistics()
    assert stats.queued == 6 and stats.rate == 0
    assert stats.oldest_queued_age is not None and stats.oldest_queued_age >= 0
    held = {got.key: got.token for got in await lease(store, 5)}
    assert sorted(held) == ["m0", "m1", "m2", "m3", "m4"]
    for key in ("m1", "m2", "m3"):
        assert await store.mark_sending(key, held[key])
    assert await store.finish("m2", held["m2"], outcome(State.DELIVERED, accepted=("a@x",)))
    refused = {"a@example.com": Refusal(550, "no such user", False)}
    assert await store.finish("m3", held["m3"], outcome(State.FAILED, refused=refused))
    assert await store.release("m0", held["m0"])
    assert await counts(store) == {
        State.QUEUED: 2,  # m5, and m0 given back
        State.LEASED: 1,
        State.SENDING: 1,
        State.DELIVERED: 1,
        State.FAILED: 1,
    }
    expected = {"m0": State.QUEUED, "m1": State.SENDING, "m2": State.DELIVERED}
    expected |= {"m3": State.FAILED, "m4": State.LEASED, "m5": State.QUEUED}
    for key, state in expected.items():
        status = await store.status(key)
        assert status is not None and status.state is state
    failed = await store.status("m3")
    assert failed is not None and failed.refused == refused
    assert await store.status("nothing") is None
    stats = await store.statistics()
    assert stats.rate == pytest.approx(2 / 60)  # two messages ended in the last minute
    assert stats.oldest_queued_age is not None and stats.oldest_queued_age >= 0


async def test_entries_list_newest_change_first(store: Store) -> None:
    for key in ("a", "b", "c"):
        await store.enqueue(entry(key))
        await anyio.sleep(0.01)
    assert [s.key for s in await store.entries(None, 10)] == ["c", "b", "a"]
    [held] = await lease(store, 1)
    assert held.key == "a"
    assert [s.key for s in await store.entries(None, 10)] == ["a", "c", "b"]
    assert [s.key for s in await store.entries(None, 2)] == ["a", "c"]
    assert [s.key for s in await store.entries(State.QUEUED, 10)] == ["c", "b"]
    assert [s.key for s in await store.entries(State.LEASED, 10)] == ["a"]
    assert await store.entries(State.DELIVERED, 10) == []


async def test_retry_queues_failed_and_unknown_messages_to_the_recipients_not_accepted(
    store: Store,
) -> None:
    await store.enqueue(entry("failed", recipients=("a@x", "b@x")))
    await store.enqueue(entry("unknown", recipients=("a@x", "b@x", "c@x")))
    await store.enqueue(entry("delivered", recipients=("a@x",)))
    held = {got.key: got.token for got in await lease(store)}
    no = Refusal(550, "no", False)
    failed = outcome(State.FAILED, refused={"a@x": no, "b@x": no}, error="550 no")
    assert await store.finish("failed", held["failed"], failed)
    assert await store.mark_sending("unknown", held["unknown"])
    unknown = outcome(State.UNKNOWN, accepted=("a@x",), unknown=("b@x", "c@x"), attempts=3)
    assert await store.finish("unknown", held["unknown"], unknown)
    assert await store.finish("delivered", held["delivered"], outcome(State.DELIVERED))
    assert await store.retry(["delivered", "nothing"]) == 0
    assert await store.retry(["failed"]) == 1
    assert await store.retry(None) == 1
    assert await counts(store) == {State.QUEUED: 2, State.DELIVERED: 1}
    again = {got.key: got for got in await lease(store)}
    assert again["failed"].pending == ("a@x", "b@x") and not again["failed"].refused
    assert again["unknown"].pending == ("b@x", "c@x")
    assert again["unknown"].accepted == ("a@x",)
    assert [got.attempts for got in again.values()] == [0, 0]


async def test_purge_deletes_final_messages_old_enough(store: Store) -> None:
    await store.enqueue(entry("delivered"))
    await store.enqueue(entry("failed"))
    await store.enqueue(entry("queued"))
    held = {got.key: got.token for got in await lease(store, 2)}
    assert await store.finish("delivered", held["delivered"], outcome(State.DELIVERED))
    assert await store.finish("failed", held["failed"], outcome(State.FAILED))
    assert await store.purge([State.DELIVERED, State.FAILED], older_than=3600) == 0
    assert await store.purge([State.DELIVERED], older_than=0) == 1
    assert await store.status("delivered") is None
    assert await store.status("failed") is not None
    assert await counts(store) == {State.FAILED: 1, State.QUEUED: 1}
    assert [s.key for s in await store.entries(None, 10)] == ["failed", "queued"]


async def test_the_oldest_queued_age_counts_only_messages_that_are_due(store: Store) -> None:
    due = time.time() + 0.2
    await store.enqueue(entry("later", due=due))
    assert (await store.statistics()).oldest_queued_age is None
    await anyio.sleep(max(0.0, due - time.time()) + 0.05)
    age = (await store.statistics()).oldest_queued_age
    assert age is not None and age >= 0


async def test_requests_for_nothing_do_nothing(store: Store) -> None:
    await store.enqueue(entry("m1"))
    assert await lease(store, 0) == []
    assert await store.renew([], LONG) == set()
    assert await store.entries(None, 0) == []
    assert await store.retry([]) == 0
    assert await store.purge([], older_than=0) == 0
    assert await counts(store) == {State.QUEUED: 1}


# The Redis store alone.


@pytest.fixture
async def redis_store(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_url)
    await store.open()
    yield store
    await store.aclose()


async def test_the_shared_limiter_paces_every_workers_reservations_to_the_rate(
    redis_url: str,
) -> None:
    stores = [RedisStore.from_url(redis_url) for _ in range(3)]
    limit = RateLimit(1, per=10.0)  # one slot every 10 s: the calls below take far less
    waits: list[float] = []

    async def worker(store: RedisStore) -> None:
        limiter = store.limiter(limit)
        for _ in range(4):
            waits.append(await limiter.reserve())

    for store in stores:
        await store.open()
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(worker, store)
    finally:
        for store in stores:
            await store.aclose()
    waits.sort()
    assert len(waits) == 12 and waits[0] == 0
    # each slot is one interval after the one before, less the time between the two calls
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert all(9.0 < gap <= 10.0 + 1e-6 for gap in gaps), gaps


async def test_the_shared_limiter_lets_a_burst_through_then_paces(redis_store: RedisStore) -> None:
    limiter = redis_store.limiter(RateLimit(1, per=10.0, burst=3))
    waits = [await limiter.reserve() for _ in range(5)]
    assert waits[:3] == [0, 0, 0]
    assert 9.0 < waits[3] <= 10.0 and 19.0 < waits[4] <= 20.0


async def test_acquire_sleeps_until_its_slot(redis_store: RedisStore) -> None:
    limiter = redis_store.limiter(RateLimit(50, per=1.0))
    for _ in range(3):
        await limiter.acquire()
    assert await limiter.reserve() > 0  # the slots taken are still ahead of this one


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        (["SET", "{p}meta", "not a hash"], "is a Redis string"),
        (["XADD", "{p}lane:0", "*", "job", "1"], "belongs to something else"),
        (["HSET", "{p}meta", "kind", "celery"], "belongs to something else"),
        (["HSET", "{p}meta", "kind", "asyncmail-outbox", "schema", "99"], "schema version 99"),
    ],
)
async def test_keys_of_something_else_or_another_schema_are_refused_and_left_untouched(
    redis_url: str, setup: list[str], words: str
) -> None:
    store = RedisStore.from_url(redis_url)
    prefix = f"asyncmail:{{{store.queue}}}:"
    command = [part.replace("{p}", prefix) for part in setup]
    async with redis_client(redis_url.partition("?")[0]) as client:
        await client.execute_command(*command)
        before = await client.execute_command("DUMP", command[1])
        with pytest.raises(OutboxError, match=words):
            await store.open()
        assert await client.execute_command("DUMP", command[1]) == before
        assert await client.execute_command("EXISTS", prefix + "lane:1") == 0
    await store.aclose()


async def test_an_outbox_opened_twice_keeps_its_schema(redis_url: str) -> None:
    for _ in range(2):
        store = RedisStore.from_url(redis_url)
        await store.open()
        await store.aclose()
    async with redis_client(redis_url.partition("?")[0]) as client:
        meta = f"asyncmail:{{{store.queue}}}:meta"
        schema = await client.execute_command("HGET", meta, "schema")
    assert schema == str(SCHEMA_VERSION).encode()


async def test_an_unreachable_server_is_an_outbox_error_naming_it_without_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0?queue=q"
    store = RedisStore.from_url(url)
    assert "s3cret" not in repr(store) and "***" in store.url
    with pytest.raises(OutboxError) as caught:
        await store.open()
    assert "s3cret" not in str(caught.value)
    assert f"redis://:***@127.0.0.1:{port}/0" in str(caught.value)


async def test_a_password_the_server_refuses_is_not_in_the_error(redis_server: RedisServer) -> None:
    async with redis_client(redis_server.url) as client:
        await client.execute_command("ACL", "SETUSER", "tester", "on", ">right-pw", "~*", "+@all")
    store = RedisStore.from_url(f"redis://tester:s3cret-pw@127.0.0.1:{redis_server.port}/0")
    try:
        with pytest.raises(OutboxError) as caught:
            await store.open()
    finally:
        await store.aclose()
    assert "s3cret" not in str(caught.value) and "tester:***@" in str(caught.value)


async def test_an_enqueued_message_survives_a_kill_and_restart_of_redis_server(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore.from_url(redis_url)
    await store.open()
    await store.enqueue(entry("m1", recipients=("a@x.org",)))
    await store.aclose()
    redis_server.restart()  # SIGKILL right after enqueue returned, then the same --dir
    store = RedisStore.from_url(redis_url)
    await store.open()
    try:
        status = await store.status("m1")
        assert status is not None and status.state is State.QUEUED
        [got] = await lease(store)
        assert (got.key, got.pending) == ("m1", ("a@x.org",))
    finally:
        await store.aclose()


def test_without_redis_py_a_redis_url_asks_for_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(ConfigError, match=r"pip install 'asyncmail\[redis\]'"):
        open_store("redis://127.0.0.1:6379/0?queue=mail")


@pytest.mark.parametrize("url", ["redis://127.0.0.1/0?queue=", "redis://127.0.0.1/0?queue=a}b"])
def test_a_queue_name_that_breaks_the_hash_tag_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="queue"):
        RedisStore.from_url(url)


@pytest.mark.parametrize("query", ["socket_timeout=abc", "no_such_option=1"])
async def test_a_connection_option_redis_py_refuses_is_a_config_error(
    redis_server: RedisServer, query: str
) -> None:
    async def open_and_close() -> None:  # from_url refuses the first, open() the second
        store = RedisStore.from_url(f"{redis_server.url}?{query}&queue=q")
        await store.open()
        await store.aclose()

    with pytest.raises(ConfigError, match="bad Redis URL"):
        await open_and_close()


async def test_a_store_is_usable_only_between_open_and_aclose(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    assert repr(store).endswith("not open>")
    with pytest.raises(OutboxError, match="not open"):
        await store.status("m1")
    await store.open()
    await store.open()  # already open: nothing to do
    assert repr(store).endswith(" open>")
    assert repr(store.limiter(RateLimit(14))) == "<RedisLimiter 14/1s>"
    await store.aclose()
    assert repr(store).endswith("closed>")
    with pytest.raises(OutboxError, match="closed"):
        await store.status("m1")
    with pytest.raises(OutboxError, match="closed"):
        await store.open()


async def test_an_outcome_that_is_not_final_or_queued_and_a_purge_of_live_states_are_refused(
    redis_store: RedisStore,
) -> None:
    await redis_store.enqueue(entry("m1"))
    [held] = await lease(redis_store)
    with pytest.raises(ConfigError, match="final or QUEUED"):
        await redis_store.finish("m1", held.token, outcome(State.LEASED))
    with pytest.raises(ConfigError, match="final messages only"):
        await redis_store.purge([State.QUEUED], older_than=0)
    assert await counts(redis_store) == {State.LEASED: 1}


def test_a_url_of_another_scheme_is_not_a_redis_store() -> None:
    with pytest.raises(ConfigError, match="not a Redis URL"):
        RedisStore.from_url("sqlite:////tmp/outbox.db")


async def test_outcomes_stored_together_keep_each_lease_fenced(new_store: NewStore) -> None:
    """``finish_many``: one commit or round trip, and a lost lease is still refused alone."""
    first, second = await new_store(), await new_store()
    await first.enqueue(entry("lost"))
    [old] = await lease(first, 1, seconds=SHORT)
    await anyio.sleep(SHORT * 1.5)
    [new] = await lease(second, 1, worker="w2", seconds=SHORT)  # taken over: old is stale
    await first.enqueue(entry("kept"))
    [kept] = await lease(first, 1)
    delivered = outcome(State.DELIVERED, accepted=("a@example.com",))
    stored = await first.finish_many(
        [("kept", kept.token, delivered), ("lost", old.token, delivered)]
    )
    assert stored == [True, False]
    assert (await counts(first)) == {State.DELIVERED: 1, State.LEASED: 1}
    assert await second.finish_many([("lost", new.token, delivered)]) == [True]
    assert (await counts(first)) == {State.DELIVERED: 2}
