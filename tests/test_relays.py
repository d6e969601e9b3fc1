"""Several relays against real capture servers: failover, round-robin, retry period, stats.

A relay that cannot take a connection (refused, no TLS, AUTH refused, 421 greeting, a stall
before MAIL) hands the message to the next one at once; a relay that answered the
transaction, or accepted a recipient, keeps it.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from asyncmail import (
    AuthenticationError,
    ConfigError,
    ConnectError,
    DeliveryError,
    Mailer,
    Outbox,
    OutboxState,
    RateLimit,
    Relay,
    RetryPolicy,
    SendResult,
    Server,
    Status,
    TemporaryFailure,
    TLSError,
    TLSMode,
)
from asyncmail.engine._job import BeforeSend, Job
from asyncmail.engine._ratelimit import Limiter
from asyncmail.engine._relays import Relays, RelayState, fails_over
from asyncmail.testing import CaptureServer, Fault

from ._support import NO_WAIT_RETRY, SHORT_TIMEOUTS, copies, message

ONE_ATTEMPT = RetryPolicy(attempts=1)


def target(server: CaptureServer, **overrides: object) -> Server:
    """A Server for the capture server (plaintext unless it speaks TLS)."""
    fields: dict[str, object] = {"host": server.host, "port": server.port, "tls": TLSMode.NONE}
    fields.update(overrides)
    return Server(**fields)  # type: ignore[arg-type]


def dead_port() -> int:
    """A loopback port nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def dead_relay() -> Server:
    return Server(host="127.0.0.1", port=dead_port(), tls=TLSMode.NONE)


class FakeClock:
    """The relays' clock, moved forward by hand (the real one plus an offset)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


# -- failover --------------------------------------------------------------------------------


async def test_a_relay_refusing_connections_fails_over_at_once_to_the_next() -> None:
    dead = dead_relay()
    async with CaptureServer() as good:
        async with Mailer([dead, target(good)], retry=ONE_ATTEMPT) as mailer:
            result = await mailer.send(message(1))
            stats = mailer.statistics()
    assert result.status is Status.DELIVERED
    assert result.relay == target(good).display
    assert result.attempts == 1  # the failover is part of the attempt, not a retry
    assert copies(good, "user1@example.net") == 1
    first, second = stats.relays
    assert (first.relay, first.up, first.delivered) == (dead.display, False, 0)
    assert (second.up, second.delivered, second.failed) == (True, 1, 0)


@pytest.mark.parametrize(
    "case",
    ["no-starttls", "auth-refused", "greeting-421", "greeting-554", "stall-before-mail"],
)
async def test_a_relay_that_fails_before_mail_hands_the_message_to_the_next(case: str) -> None:
    faults: list[Fault] = []
    overrides: dict[str, object] = {}
    auth = None
    if case == "no-starttls":
        overrides["tls"] = TLSMode.STARTTLS  # required, and this server does not offer it
    elif case == "auth-refused":
        auth = {"shop": "right"}
        overrides |= {"username": "shop", "password": "wrong", "allow_plaintext_auth": True}
    elif case == "greeting-421":
        faults.append(Fault.reply("greeting", 421, "4.3.2 Service not available"))
    elif case == "greeting-554":
        faults.append(Fault.reply("greeting", 554, "5.7.1 No service for you"))
    else:
        faults.append(Fault.stall("ehlo"))
    async with (
        CaptureServer(faults=faults, auth=auth, auth_require_tls=False) as bad,
        CaptureServer() as good,
    ):
        relays = [target(bad, **overrides), target(good)]
        async with Mailer(relays, retry=ONE_ATTEMPT, timeouts=SHORT_TIMEOUTS) as mailer:
            result = await mailer.send(message(1))
            stats = mailer.statistics()
    assert result.status is Status.DELIVERED
    assert result.relay == target(good).display
    assert copies(good, "user1@example.net") == 1
    assert not bad.messages
    assert not stats.relays[0].up


async def test_when_every_relay_fails_the_result_names_the_last_one_and_its_error() -> None:
    first, second = dead_relay(), dead_relay()
    async with Mailer([first, second], retry=ONE_ATTEMPT) as mailer:
        with pytest.raises(ConnectError) as caught:
            await mailer.send(message(1))
        stats = mailer.statistics()
    result = caught.value.result
    assert result is not None
    assert result.status is Status.FAILED
    assert result.relay == second.display
    assert result.attempts == 1
    assert [r.failed for r in stats.relays] == [0, 1]  # counted once, on the last one tried


async def test_each_retry_of_the_policy_sweeps_the_relays_again() -> None:
    async with CaptureServer(faults=[Fault.reply("greeting", 421, times=2)]) as flaky:
        # attempt 1: the dead relay, then flaky (421); attempt 2: both again (421);
        # attempt 3: flaky takes it (the dead relay is still down and tried last)
        async with Mailer([dead_relay(), target(flaky)], retry=NO_WAIT_RETRY) as mailer:
            result = await mailer.send(message(1))
    assert result.status is Status.DELIVERED
    assert result.attempts == 3
    assert result.relay == target(flaky).display


async def test_a_refusal_at_mail_is_the_relay_answering_not_a_failover() -> None:
    faults = [Fault.reply("mail", 451, "4.3.0 Temporary local problem")]
    async with CaptureServer(faults=faults) as busy, CaptureServer() as other:
        async with Mailer([target(busy), target(other)], retry=ONE_ATTEMPT) as mailer:
            with pytest.raises(TemporaryFailure):
                await mailer.send(message(1))
            stats = mailer.statistics()
    assert not other.messages and not other.sessions  # never even connected
    assert stats.relays[0].up
    assert stats.relays[0].failed == 1


async def test_a_job_a_relay_accepted_a_recipient_of_never_moves_to_another() -> None:
    """user1 is accepted; user2 gets 451 and is retried. Then the relay goes away: the rest
    of the message stays on it (and fails) rather than a second copy going elsewhere."""
    msg = message(1, to=["user1@example.net", "user2@example.net"])
    retry = RetryPolicy(attempts=3, base_delay=0.5, jitter=False)
    faults = [Fault.reply("rcpt", 451, "4.2.0 Mailbox busy", match="user2@")]
    async with CaptureServer() as other:
        first = CaptureServer(faults=faults)
        await first.__aenter__()
        try:
            async with Mailer([target(first), target(other)], retry=retry) as mailer:
                async with anyio.create_task_group() as tg:

                    async def break_first_after_the_copy() -> None:
                        await first.wait_for_messages(1)
                        await first.aclose()

                    tg.start_soon(break_first_after_the_copy)
                    result = await mailer.send(msg)
        finally:
            await first.aclose()
    assert result.status is Status.DELIVERED
    assert result.accepted == ("user1@example.net",)
    assert isinstance(result.refused["user2@example.net"], ConnectError)
    assert result.relay == target(first).display
    assert not other.messages  # no second copy anywhere
    assert result.attempts == 3


# -- round-robin and the retry period -------------------------------------------------------


async def test_round_robin_takes_turns_among_the_relays() -> None:
    async with CaptureServer() as a, CaptureServer() as b, CaptureServer() as c:
        relays = [target(a), target(b), target(c)]
        async with Mailer(relays, strategy="round-robin", retry=ONE_ATTEMPT) as mailer:
            results = [await mailer.send(message(i)) for i in range(9)]
            stats = mailer.statistics()
    assert [len(s.messages) for s in (a, b, c)] == [3, 3, 3]
    assert [r.relay for r in results[:3]] == [r.display for r in relays]
    assert [s.delivered for s in stats.relays] == [3, 3, 3]
    assert stats.delivered == 9


async def test_round_robin_spreads_a_send_many_over_the_relays_and_skips_a_dead_one() -> None:
    async with CaptureServer() as a, CaptureServer() as b:
        relays = [target(a), dead_relay(), target(b)]
        async with Mailer(
            relays, strategy="round-robin", max_connections=2, retry=ONE_ATTEMPT
        ) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(200))]
    assert all(r.status is Status.DELIVERED for r in results)
    assert len(a.messages) + len(b.messages) == 200
    assert a.messages and b.messages  # both took a share
    by_relay = {r.relay for r in results}
    assert by_relay == {target(a).display, target(b).display}


async def test_failover_prefers_the_first_relay_while_it_is_up() -> None:
    async with CaptureServer() as a, CaptureServer() as b:
        async with Mailer([target(a), target(b)]) as mailer:
            for i in range(5):
                await mailer.send(message(i))
    assert (len(a.messages), len(b.messages)) == (5, 0)


async def test_a_down_relay_is_skipped_for_the_retry_period_then_probed_again() -> None:
    clock = FakeClock()
    faults = [Fault.reply("greeting", 421, "4.3.2 Down for maintenance", times=1)]
    async with CaptureServer(faults=faults) as first, CaptureServer() as second:
        relays = [target(first), target(second)]
        async with Mailer(relays, retry_period=60, retry=ONE_ATTEMPT) as mailer:
            mailer._relays.clock = clock  # noqa: SLF001
            one = await mailer.send(message(1))  # first refuses: second takes it
            clock.offset = 30.0
            two = await mailer.send(message(2))  # first is skipped: not even a connection
            assert first.connections_opened == 1
            assert not mailer.statistics().relays[0].up
            clock.offset = 61.0
            three = await mailer.send(message(3))  # probed again, and it answers
            stats = mailer.statistics()
    assert [one.relay, two.relay] == [target(second).display] * 2
    assert three.relay == target(first).display
    assert first.connections_opened == 2
    assert stats.relays[0].up


def _members(count: int, clock: Callable[[], float]) -> list[RelayState]:
    relays = [Relay(f"smtp://relay{i}.example.com") for i in range(count)]
    from asyncmail._config import PoolLimits, Timeouts

    return [RelayState(r, PoolLimits(), Timeouts(), None, clock=clock) for r in relays]


def test_with_every_relay_down_the_one_due_back_first_is_tried() -> None:
    now = [0.0]
    members = _members(3, lambda: now[0])
    relays = Relays(members, strategy="failover", retry_period=60, clock=lambda: now[0])
    error = ConnectError("refused")
    for i in (1, 2, 0):  # down in this order: relay1 is due back first
        now[0] = float(i)
        relays.mark_down(members[i], error)
    now[0] = 10.0
    assert relays.pick() is members[0]
    now[0] = 3.0
    relays.mark_down(members[0], error)
    now[0] = 4.0
    assert relays.pick() is members[1]  # down at 1 s: due back at 61 s, before the others
    assert relays.pick(exclude=members) is None
    now[0] = 61.5
    assert relays.pick() is members[1]  # its period is over: probed before the others


def test_round_robin_skips_down_relays_and_keeps_its_turn() -> None:
    now = [0.0]
    members = _members(3, lambda: now[0])
    relays = Relays(members, strategy="round-robin", retry_period=60, clock=lambda: now[0])
    relays.mark_down(members[1], ConnectError("refused"))
    picks = [relays.pick() for _ in range(4)]
    assert picks == [members[0], members[2], members[0], members[2]]


def test_only_failures_before_mail_fail_over() -> None:
    from asyncmail import Phase, PoolTimeout, Rejected

    assert fails_over(ConnectError("refused", phase=Phase.CONNECT))
    assert fails_over(TLSError("no STARTTLS", phase=Phase.STARTTLS))
    assert fails_over(AuthenticationError("535", code=535, phase=Phase.AUTH))
    assert fails_over(TemporaryFailure("busy", code=421, phase=Phase.GREETING))
    assert not fails_over(PoolTimeout("full", phase=Phase.POOL))
    assert not fails_over(TemporaryFailure("busy", code=451, phase=Phase.MAIL))
    assert not fails_over(Rejected("no", code=550, phase=Phase.RCPT))
    assert not fails_over(DeliveryError("?"))


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "options", "says"),
    [
        ([], {}, "empty"),
        (["smtp://a.example.com", "smtp://a.example.com:587"], {}, "twice"),
        (["smtp://a.example.com"], {"strategy": "random"}, "strategy"),
        (["smtp://a.example.com"], {"retry_period": 0}, "retry_period"),
        (["smtp://a.example.com"], {"retry_period": -1.0}, "retry_period"),
        (["smtp://a.example.com"], {"retry_period": float("nan")}, "retry_period"),
        (["smtp://a.example.com"], {"retry_period": True}, "retry_period"),
        ([42], {}, "URL or a Server"),
        ({"smtp://a.example.com"}, {}, "list"),
    ],
)
def test_bad_relay_configuration_is_refused_at_construction(
    servers: object, options: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Mailer(servers, **options)  # type: ignore[arg-type]


def test_a_relay_with_bad_limits_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_connections"):
        Relay("smtp://a.example.com", max_connections=0)
    with pytest.raises(ConfigError, match="rate"):
        Relay("smtp://a.example.com", rate_limit="fast")
    with pytest.raises(ConfigError, match="URL or a Server"):
        Relay(42)  # type: ignore[arg-type]


def test_passwords_never_show_in_reprs_or_errors() -> None:
    urls = ["smtps://shop:s3cret@a.example.com", "smtps://shop:s3cret@b.example.com"]
    mailer = Mailer([Relay(urls[0], rate_limit="5/s"), urls[1]])
    assert "s3cret" not in repr(mailer)
    assert "s3cret" not in repr(mailer.relays)
    assert "(+1 relays)" in repr(mailer)
    with pytest.raises(ConfigError) as caught:
        Mailer([urls[0], urls[0]])
    assert "s3cret" not in str(caught.value)


async def test_a_relay_keeps_its_own_limits() -> None:
    async with CaptureServer() as a, CaptureServer() as b:
        relays: list[Relay | Server] = [
            Relay(target(a), max_connections=1, rate_limit="1000/s"),
            target(b),
        ]
        async with Mailer(relays, strategy="round-robin", max_connections=3) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(300))]
            stats = mailer.statistics()
    assert all(r.ok for r in results)
    assert a.max_concurrent_connections == 1
    first, second = stats.relays
    assert (first.pool.max_connections, first.rate) == (1, 1000.0)
    assert (second.pool.max_connections, second.rate) == (3, None)
    assert stats.pool.max_connections == 4  # the pools added up


async def test_a_single_server_result_names_it_as_the_relay() -> None:
    async with CaptureServer() as server:
        async with Mailer(target(server)) as mailer:
            result = await mailer.send(message(1))
            stats = mailer.statistics()
    assert result.relay == target(server).display
    assert len(stats.relays) == 1 and stats.relays[0].delivered == 1
    assert stats.pool == stats.relays[0].pool


# -- adaptive throttling ---------------------------------------------------------------------

BUSY = "4.7.500 Server busy. Please try again later from [127.0.0.1]. (S77714)"


def throttle_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "throttled by the server" in r.getMessage()]


async def test_a_burst_of_too_fast_replies_halves_the_rate_and_connections_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    faults = [Fault.reply("rcpt", 451, BUSY, times=100)]
    async with CaptureServer(faults=faults) as server:
        async with Mailer(
            target(server), rate_limit="1000/s", max_connections=4, retry=ONE_ATTEMPT
        ) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(100))]
            stats = mailer.statistics().relays[0]
    assert [r.status for r in results] == [Status.FAILED] * 100
    assert stats.throttled == 100
    assert stats.rate == 500.0
    assert stats.max_connections < 4
    assert stats.pool.open <= stats.max_connections  # the ones over the cap were closed
    lines = throttle_lines(caplog)
    assert len(lines) == 1, lines  # one line per change, not per message
    assert f"relay {target(server).display}: throttled by the server (451 4.7.500" in lines[0]
    assert "rate 1000/s -> 500/s, connections 4 -> " in lines[0]


async def test_a_throttled_relay_is_raised_back_after_a_quiet_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    clock = FakeClock()
    faults = [Fault.reply("rcpt", 451, BUSY, times=1)]
    async with CaptureServer(faults=faults) as server:
        async with Mailer(target(server), max_connections=4, retry=NO_WAIT_RETRY) as mailer:
            relay = mailer._relays.members[0]  # noqa: SLF001
            relay.pool.clock = clock
            mailer._driver.clock = clock  # noqa: SLF001
            results = [r async for r in mailer.send_many(message(i) for i in range(8))]
            throttled = mailer.statistics().relays[0]
            clock.offset = 31.0
            await mailer.send(message(100))
            raised = mailer.statistics().relays[0]
    assert all(r.ok for r in results)  # the throttled message was retried as usual
    assert throttled.throttled == 1
    assert throttled.rate is not None  # it had no limit; now it has one
    assert throttled.max_connections < 4
    assert raised.rate is not None and raised.rate > throttled.rate
    assert raised.max_connections == throttled.max_connections + 1
    raised_lines = [r for r in caplog.records if "not throttled for a while" in r.getMessage()]
    assert len(raised_lines) == 1 and raised_lines[0].levelno == logging.INFO


async def test_a_plain_temporary_failure_does_not_slow_the_relay() -> None:
    faults = [Fault.reply("rcpt", 451, "4.3.0 Temporary local problem", times=20)]
    async with CaptureServer(faults=faults) as server:
        async with Mailer(target(server), retry=ONE_ATTEMPT) as mailer:
            _ = [r async for r in mailer.send_many(message(i) for i in range(20))]
            stats = mailer.statistics().relays[0]
    assert (stats.throttled, stats.rate, stats.max_connections) == (0, None, 10)


# -- feeds above the engine: the outbox --------------------------------------------------------


async def test_the_outbox_fails_over_between_relays_through_the_mailers_driver(
    tmp_path: Path,
) -> None:
    keys = [f"k{i}" for i in range(10)]
    async with CaptureServer() as good, Outbox(f"sqlite:///{tmp_path / 'o.db'}") as outbox:
        for i, key in enumerate(keys):
            await outbox.enqueue(message(i), key=key)
        async with (
            Mailer([dead_relay(), target(good)], retry=ONE_ATTEMPT) as mailer,
            outbox.deliver(mailer, concurrency=2, rate="200/s"),
        ):
            with anyio.fail_after(20):
                while True:
                    statuses = [await outbox.status(k) for k in keys]
                    if all(s is not None and s.final for s in statuses):
                        break
                    await anyio.sleep(0.02)
            stats = mailer.statistics()
    assert all(s is not None and s.state is OutboxState.DELIVERED for s in statuses)
    assert all(copies(good, f"user{i}@example.net") == 1 for i in range(10))
    assert stats.relays[1].delivered == 10


class _CountingLimiter:
    def __init__(self) -> None:
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1


class _ListFeed:
    """A feed of a few jobs with its own limiter, as the outbox's workers have."""

    def __init__(self, jobs: list[Job], limiter: Limiter) -> None:
        self.before_send: BeforeSend | None = None
        self.retry: RetryPolicy | None = ONE_ATTEMPT
        self.jobs = jobs
        self.limiter: Limiter | None = limiter
        self.results: list[SendResult[Any]] = []

    async def next(self) -> Job | None:
        return self.ready()

    def ready(self) -> Job | None:
        return self.jobs.pop(0) if self.jobs else None

    async def emit(self, result: SendResult[Any]) -> None:
        self.results.append(result)


async def test_a_feeds_shared_limiter_and_a_relays_own_rate_both_apply() -> None:
    async with CaptureServer() as a:
        relays = [Relay(target(a), rate_limit="1000/s")]
        async with Mailer(relays, rate_limit="1/s") as mailer:
            shared = _CountingLimiter()
            jobs = [Job.of(message(i)) for i in range(5)]
            feed = _ListFeed(jobs, shared)
            for _ in jobs:
                mailer.driver.ledger.admit()
            await mailer.driver.serve(feed)
            pace = mailer._relays.members[0].pace  # noqa: SLF001
    assert [r.status for r in feed.results] == [Status.DELIVERED] * 5
    assert shared.acquired == 5  # the feed's limiter paced every transaction
    assert pace.started == 5
    assert pace.limiter is not None and pace.limiter.limit == RateLimit(1000)


async def test_a_dead_relay_is_logged_down_once_however_many_sends_find_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asyncmail")
    dead = dead_relay()
    async with CaptureServer() as good:
        async with Mailer([dead, target(good)], retry=ONE_ATTEMPT) as mailer:
            results = [r async for r in mailer.send_many(message(i) for i in range(50))]
    assert all(r.relay == target(good).display for r in results)
    down = [r for r in caplog.records if "is down" in r.getMessage()]
    assert len(down) == 1 and down[0].levelno == logging.WARNING
    assert dead.display in down[0].getMessage()


async def test_a_too_many_connections_greeting_fails_over_and_slows_that_relay() -> None:
    faults = [Fault.reply("greeting", 421, "4.7.0 Error: too many connections from 127.0.0.1")]
    async with CaptureServer(faults=faults) as crowded, CaptureServer() as other:
        async with Mailer([target(crowded), target(other)], retry=ONE_ATTEMPT) as mailer:
            result = await mailer.send(message(1))
            first = mailer.statistics().relays[0]
    assert result.relay == target(other).display
    assert (first.up, first.throttled, first.max_connections) == (False, 1, 1)
