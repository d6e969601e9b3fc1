"""The outbox when its own store fails: nothing is sent twice, nothing is lost, nothing raises.

The store is the real SQLite store with faults injected in front of it: an ``OutboxError``
from a chosen call, a chosen number of times. The tests about the moment the content leaves
run on DATA and on BDAT (``by_body``: a server that offers CHUNKING, where the LAST chunk's
reply is the final dot's).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from asyncmail import Outbox, OutboxError, OutboxState, RateLimit
from asyncmail.engine._ratelimit import Limiter
from asyncmail.outbox._model import Lease, NewEntry, Outcome
from asyncmail.outbox._sqlite import SQLiteStore
from asyncmail.testing import CaptureServer, Fault
from asyncmail.testing._faults import Phase as FaultPhase

from ._support import mailer_for, message

#: The content goes by DATA, or by BDAT to a server that offers CHUNKING.
by_body = pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])


def dot(chunking: bool) -> FaultPhase:
    """The reply that ends the content: the final dot's, or the LAST chunk's."""
    return "bdat_last" if chunking else "dot"


def went_by_bdat(server: CaptureServer) -> bool:
    """Whether the server was sent content by BDAT."""
    return any(c.upper().startswith("BDAT") for s in server.sessions for c in s.commands)


class FlakyStore(SQLiteStore):
    """A SQLite store whose named calls fail the given number of times first."""

    def __init__(self, path: str, failures: dict[str, int]) -> None:
        super().__init__(path)
        self.failures = Counter(failures)
        self.calls: Counter[str] = Counter()

    def fail(self, name: str) -> None:
        self.calls[name] += 1
        if self.failures[name] > 0:
            self.failures[name] -= 1
            raise OutboxError(f"injected: {name} failed")

    async def lease(
        self, worker: str, count: int, seconds: float, *, wait: float, resend_unknown: bool
    ) -> list[Lease]:
        self.fail("lease")
        return await super().lease(worker, count, seconds, wait=wait, resend_unknown=resend_unknown)

    async def renew(self, leases: Sequence[tuple[str, str]], seconds: float) -> set[str]:
        self.fail("renew")
        return await super().renew(leases, seconds)

    async def mark_sending(self, key: str, token: str) -> bool:
        self.fail("mark_sending")
        return await super().mark_sending(key, token)

    async def finish(self, key: str, token: str, outcome: Outcome) -> bool:
        self.fail("finish")
        return await super().finish(key, token, outcome)

    async def finish_many(self, items: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        self.fail("finish")
        return await super().finish_many(items)

    def limiter(self, limit: RateLimit) -> Limiter:
        shared = super().limiter(limit)
        store = self

        class Flaky:
            async def acquire(self) -> None:
                store.fail("limit")
                await shared.acquire()

        return Flaky()


async def _outbox_with(tmp_path: Path, failures: dict[str, int], **kw: float) -> Outbox:
    outbox = Outbox(f"sqlite:///{tmp_path / 'o.db'}", **kw)  # type: ignore[arg-type]
    outbox.store = FlakyStore(str(tmp_path / "o.db"), failures)
    return outbox


async def _until_final(outbox: Outbox, key: str, limit: float = 15.0) -> OutboxState:
    with anyio.fail_after(limit):
        while True:
            status = await outbox.status(key)
            if status is not None and status.final:
                return status.state
            await anyio.sleep(0.02)


async def test_a_failed_lease_call_is_retried_and_the_message_still_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await _outbox_with(tmp_path, {"lease": 1})
    async with CaptureServer() as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            assert await _until_final(outbox, "k") is OutboxState.DELIVERED
    assert len(server.messages) == 1
    assert "leasing from" in caplog.text and "injected: lease failed" in caplog.text


@by_body
async def test_a_send_the_store_could_not_record_is_withheld_and_sent_later_once(
    tmp_path: Path, chunking: bool
) -> None:
    """No "dot may be out" record, no dot: the content is withheld, the lease given back."""
    outbox = await _outbox_with(tmp_path, {"mark_sending": 1})
    async with CaptureServer(chunking=chunking) as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            assert await _until_final(outbox, "k") is OutboxState.DELIVERED
        assert len(server.messages) == 1
        assert went_by_bdat(server) is chunking
        assert outbox.store.calls["mark_sending"] == 2  # type: ignore[attr-defined]
        status = await outbox.status("k")
        assert status is not None and status.attempts == 1  # the withheld one was no attempt


async def test_an_outcome_the_store_refused_at_first_is_stored_on_a_later_try(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = await _outbox_with(tmp_path, {"finish": 2})
    async with CaptureServer() as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer) as delivery:
            assert await _until_final(outbox, "k") is OutboxState.DELIVERED
        assert delivery.delivered == 1
    assert len(server.messages) == 1
    assert caplog.text.count("injected: finish failed") == 2


@by_body
async def test_failed_lease_renewals_are_logged_and_the_send_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, chunking: bool
) -> None:
    outbox = await _outbox_with(tmp_path, {"renew": 3}, lease_seconds=0.3)
    slow = Fault.delay(dot(chunking), 0.6)
    async with CaptureServer(chunking=chunking, faults=[slow]) as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            assert await _until_final(outbox, "k") in (
                OutboxState.DELIVERED,
                OutboxState.UNKNOWN,  # (a lease that ran out while the dot was out)
            )
    assert len(server.messages) == 1
    assert went_by_bdat(server) is chunking
    assert "renewing leases" in caplog.text


async def test_a_payload_that_cannot_be_read_ends_failed_without_any_io(tmp_path: Path) -> None:
    async with CaptureServer() as server, Outbox(f"sqlite:///{tmp_path / 'o.db'}") as outbox:
        entry = NewEntry(
            key="garbage",
            payload=b"not a payload this asyncmail wrote",
            message_id="<x@example.com>",
            recipients=("a@example.net",),
            lane=1,
            due=0.0,
            enqueued_at=0.0,
        )
        await outbox.store.enqueue(entry)
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            assert await _until_final(outbox, "garbage") is OutboxState.FAILED
        status = await outbox.status("garbage")
        assert status is not None
        assert "cannot be read back" in (status.refused["a@example.net"].text or "")
        assert server.sessions == []


@by_body
async def test_stopping_at_once_ends_a_send_whose_dot_may_be_out_unknown(
    tmp_path: Path, chunking: bool
) -> None:
    async with (
        CaptureServer(chunking=chunking, faults=[Fault.stall(dot(chunking))]) as server,
        Outbox(f"sqlite:///{tmp_path / 'o.db'}") as outbox,
    ):
        for i in range(4):
            await outbox.enqueue(message(i), key=f"k{i}")
        async with mailer_for(server) as mailer:
            delivering = outbox.deliver(mailer, concurrency=1, grace=60)
            async with delivering as delivery:
                await server.wait_for_messages(1, timeout=10)  # stored; its reply never comes
                delivery.stop(now=True)
        states = [(await outbox.status(f"k{i}")).state for i in range(4)]  # type: ignore[union-attr]
        assert states[0] is OutboxState.UNKNOWN
        if chunking:  # the messages in the window behind it had left too: as many as got in
            assert set(states) <= {OutboxState.UNKNOWN, OutboxState.QUEUED}
        else:
            assert Counter(states) == {OutboxState.UNKNOWN: 1, OutboxState.QUEUED: 3}
        assert len(server.messages) == 1
        assert went_by_bdat(server) is chunking


@by_body
async def test_with_resend_unknown_a_send_cut_off_after_its_dot_is_queued_again(
    tmp_path: Path, chunking: bool
) -> None:
    """At least once: the cut-off copy may have arrived, so another worker sends it again."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    async with (
        CaptureServer(chunking=chunking, faults=[Fault.stall(dot(chunking), times=1)]) as server,
        Outbox(url, resend_unknown=True) as outbox,
    ):
        await outbox.enqueue(message(0), key="k0")
        async with mailer_for(server) as mailer:
            async with outbox.deliver(mailer, concurrency=1, grace=60) as delivery:
                await server.wait_for_messages(1, timeout=10)  # stored; its reply never comes
                delivery.stop(now=True)
        status = await outbox.status("k0")
        assert status is not None and status.state is OutboxState.QUEUED
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await server.wait_for_messages(2, timeout=10)
        status = await outbox.status("k0")  # (a graceful stop let the send finish)
        assert status is not None and status.state is OutboxState.DELIVERED
        assert len(server.messages) == 2  # the cut-off copy and the one sent again


@pytest.mark.allow_error_logs
async def test_no_error_reaches_the_caller_when_the_store_keeps_failing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "asyncmail")
    outbox = await _outbox_with(tmp_path, {"finish": 100})
    async with CaptureServer() as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer, grace=0.5):
            await server.wait_for_messages(1, timeout=10)
            with anyio.fail_after(15):
                while True:
                    if caplog.text.count("injected: finish failed") >= 5:
                        break
                    await anyio.sleep(0.05)
        status = await outbox.status("k")
        assert status is not None
        assert status.state is OutboxState.SENDING  # its lease runs out: then it ends UNKNOWN


async def test_a_shared_rate_limit_the_store_cannot_answer_is_waited_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No slot, no transaction: the send waits for the store instead of failing."""
    outbox = await _outbox_with(tmp_path, {"limit": 2})
    async with CaptureServer() as server, outbox:
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer, outbox.deliver(mailer, rate="100/s"):
            assert await _until_final(outbox, "k") is OutboxState.DELIVERED
    assert len(server.messages) == 1
    assert caplog.text.count("the shared rate limit in") == 2


async def test_a_store_that_hangs_does_not_hang_the_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store calls a cut-off must not interrupt are shielded, but only for so long."""
    from asyncmail.outbox import _deliver

    monkeypatch.setattr(_deliver, "STORE_TIMEOUT", 0.3)

    class Hung(FlakyStore):
        async def finish_many(self, items: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    outbox = Outbox(f"sqlite:///{tmp_path / 'o.db'}")
    outbox.store = Hung(str(tmp_path / "o.db"), {})
    async with CaptureServer() as server, outbox:
        await outbox.enqueue(message(1), key="k")
        with anyio.fail_after(15):
            async with mailer_for(server) as mailer, outbox.deliver(mailer, grace=0.5):
                await server.wait_for_messages(1, timeout=10)
        status = await outbox.status("k")
        assert status is not None and status.state is OutboxState.SENDING  # the lease decides
    assert "did not answer within 0.3 s" in caplog.text
