"""The outbox honours a suppression list: at enqueue, and by adding what workers learn.

Run on both stores (SQLite, a real redis-server) against a real capture server.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from asyncmail import (
    ConfigError,
    CsvSuppressions,
    Outbox,
    OutboxState,
    Suppression,
)
from asyncmail.testing import CaptureServer, Fault

from ._support import copies, mailer_for, message
from .test_outbox import _wait_final

WHEN = datetime(2026, 12, 2, 5, 43, 55, tzinfo=UTC)
GONE = "gone@example.net"


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'outbox.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


def listed(address: str) -> Suppression:
    return Suppression(address=address, reason="hard-bounce", status="5.1.1", added_at=WHEN)


async def test_suppressed_recipients_are_left_out_and_the_others_get_the_message(
    url: str,
) -> None:
    msg = message(1, to=["ann@example.net", "Gone <GONE@Example.NET>"], cc=["cc@example.net"])
    async with CaptureServer() as server, Outbox(url, suppression=True) as outbox:
        await outbox.suppressions.add([listed(GONE)])
        status = await outbox.enqueue(msg, key="k1")
        assert status.state is OutboxState.QUEUED
        assert status.suppressed == ("GONE@Example.NET",)
        assert status.pending == ("ann@example.net", "cc@example.net")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["k1"])
        done = await outbox.status("k1")
        assert done is not None
        assert done.state is OutboxState.DELIVERED
        assert set(done.accepted) == {"ann@example.net", "cc@example.net"}
        assert done.suppressed == ("GONE@Example.NET",)
        assert copies(server, "GONE@Example.NET") == copies(server, GONE) == 0
        assert copies(server, "ann@example.net") == 1


async def test_a_message_whose_every_recipient_is_suppressed_is_stored_failed_never_sent(
    url: str,
) -> None:
    async with CaptureServer() as server, Outbox(url, suppression=True) as outbox:
        await outbox.suppressions.add([listed(GONE)])
        status = await outbox.enqueue(message(1, to=[GONE]), key="k1")
        assert status.state is OutboxState.FAILED
        assert status.final and status.next_attempt_at is None
        assert status.suppressed == (GONE,)
        assert status.error is not None and status.error.startswith("suppressed:")
        assert await outbox.status("k1") == status
        stats = await outbox.statistics()
        assert stats.counts[OutboxState.FAILED] == 1 and stats.queued == 0
        assert [s.key for s in await outbox.entries("failed")] == ["k1"]
        # a retry has no one to send it to: it stays failed
        assert await outbox.retry_failed() == 0
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await anyio.sleep(0.3)
        assert server.messages == []
        assert (await outbox.status("k1")) == status


async def test_without_suppression_the_list_is_kept_but_not_honoured(url: str) -> None:
    async with Outbox(url) as outbox:
        await outbox.suppressions.add([listed(GONE)])
        status = await outbox.enqueue(message(1, to=[GONE]), key="k1")
        assert status.state is OutboxState.QUEUED
        assert status.suppressed == ()
        assert status.pending == (GONE,)


async def test_a_worker_adds_a_recipient_refused_as_unknown_and_the_next_enqueue_skips_it(
    url: str,
) -> None:
    faults = [
        Fault.reply("rcpt", 550, "5.1.1 <gone@example.net>: no such user", match=GONE),
        Fault.reply("rcpt", 550, "5.7.1 refused by policy", match="policy@"),
    ]
    async with CaptureServer(faults=faults) as server, Outbox(url, suppression=True) as outbox:
        await outbox.enqueue(message(1, to=["ann@example.net", GONE]), key="k1")
        await outbox.enqueue(message(2, to=["policy@example.net"]), key="k2")
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["k1", "k2"])
        [added] = [e async for e in outbox.suppressions.entries()]
        assert added.address == GONE
        assert added.reason == "hard-bounce" and added.status == "5.1.1"
        assert added.diagnostic == "550 5.1.1 <gone@example.net>: no such user"
        assert added.source.startswith("worker ")
        again = await outbox.enqueue(message(3, to=[GONE.upper()]), key="k3")
        assert again.state is OutboxState.FAILED
        assert again.suppressed == (GONE.upper(),)
        assert copies(server, GONE) == 0


async def test_an_outbox_can_honour_a_csv_list(tmp_path: Path) -> None:
    lst = CsvSuppressions(tmp_path / "suppressed.csv")
    await lst.add([listed(GONE)])
    faults = [Fault.reply("rcpt", 550, "5.1.1 no such user", match="bob@")]
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    async with CaptureServer(faults=faults) as server, Outbox(url, suppression=lst) as outbox:
        assert outbox.suppression is lst
        status = await outbox.enqueue(message(1, to=[GONE, "bob@example.net"]), key="k1")
        assert status.suppressed == (GONE,)
        async with mailer_for(server) as mailer, outbox.deliver(mailer):
            await _wait_final(outbox, ["k1"])
        assert [e async for e in outbox.suppressions.entries()] == []  # the store's: unused
    assert await CsvSuppressions(lst.path).suppressed(["bob@example.net"]) == {"bob@example.net"}


def test_a_bad_suppression_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="suppression must be"):
        Outbox(f"sqlite:///{tmp_path / 'o.db'}", suppression="yes")  # type: ignore[arg-type]


async def test_an_outbox_made_before_the_suppression_table_gets_it_when_opened(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    url = f"sqlite:///{path}"
    async with Outbox(url) as outbox:
        await outbox.enqueue(message(1), key="old")
    db = sqlite3.connect(path)
    db.execute("DROP TABLE asyncmail_suppression")  # as an outbox made by the last release
    db.commit()
    db.close()
    async with Outbox(url, suppression=True) as outbox:
        assert (await outbox.status("old")) is not None
        await outbox.suppressions.add([listed(GONE)])
        status = await outbox.enqueue(message(2, to=[GONE]), key="new")
        assert status.state is OutboxState.FAILED
