"""DKIM end to end: what the server receives verifies with dkimpy, through every path.

``send()``, ``send_many()``, a retry after a 451 at the final dot, a server without
8BITMIME (the 7-bit rendering is what is signed), SMTPUTF8, and the outbox (signed at
enqueue, or by the worker).
"""

from __future__ import annotations

import email.message
import re
from pathlib import Path

import anyio
import pytest

from asyncmail import (
    DKIM,
    Mailer,
    MessageError,
    NotSupportedError,
    Outbox,
    OutboxState,
    RetryPolicy,
    Status,
)
from asyncmail.dkim._signer import signers_of
from asyncmail.engine._job import Job
from asyncmail.outbox._codec import encode, read
from asyncmail.outbox._deliver import StoredJob
from asyncmail.testing import CaptureServer, Fault

from ._dkim import DOMAIN, both, ed25519_key, ed25519_signer, rsa_signer, unstuff, verdicts
from ._support import mailer_for, message, serve_without_8bitmime

SIGNATURE = re.compile(rb"DKIM-Signature:.*?\r\n(?! )", re.DOTALL)


def all_verified(data: bytes, signers: tuple[DKIM, ...] | None = None) -> None:
    chosen = signers if signers is not None else both()
    assert verdicts(data, chosen) == [(s.domain, s.selector, True) for s in chosen]


def eight_bit_stdlib() -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    msg["From"] = "Shop <shop@example.com>"
    msg["To"] = "ann@example.net"
    msg["Subject"] = "héllo"
    msg["Message-ID"] = "<eight@example.com>"
    msg["Date"] = "Wed, 02 Dec 2026 05:00:00 +0000"
    msg.set_content("héllo wörld\n.\nlone dot above\n", cte="8bit")
    return msg


async def test_send_signs_with_both_keys_and_dkimpy_verifies_what_arrived() -> None:
    async with CaptureServer() as server, mailer_for(server, dkim=both()) as mailer:
        result = await mailer.send(message(1, headers={"Feedback-ID": "c:1:shop"}))
    assert result.status is Status.DELIVERED
    [stored] = server.messages
    all_verified(stored.data)
    size = next(o for o in stored.mail_options if o.startswith("SIZE="))
    assert int(size.removeprefix("SIZE=")) == len(stored.data)


async def test_send_many_signs_every_message() -> None:
    async with CaptureServer() as server, mailer_for(server, dkim=both()) as mailer:
        results = [r async for r in mailer.send_many(message(i) for i in range(30))]
    assert [r.status for r in results] == [Status.DELIVERED] * 30
    assert len(server.messages) == 30
    for stored in server.messages:
        all_verified(stored.data)


async def test_send_many_with_dkim_still_ends_an_invalid_message_failed_on_its_own() -> None:
    broken = email.message.EmailMessage()
    broken["From"] = "shop@example.com"
    broken["To"] = "ann@example.net"
    broken.set_content("NUL \x00 inside\n", cte="8bit")
    inputs: list[object] = [message(1), broken, "not a message", message(2)]
    async with CaptureServer() as server, mailer_for(server, dkim=both()) as mailer:
        results = [r async for r in mailer.send_many(inputs)]  # type: ignore[type-var]
    by_input = {id(r.message): r for r in results}
    assert [by_input[id(m)].status for m in inputs] == [
        Status.DELIVERED,
        Status.FAILED,
        Status.FAILED,
        Status.DELIVERED,
    ]
    assert isinstance(by_input[id(broken)].error, MessageError)
    assert len(server.messages) == 2
    for stored in server.messages:
        all_verified(stored.data)


async def test_a_retry_after_451_at_the_final_dot_sends_the_same_signature() -> None:
    fault = Fault.reply("dot", 451, "4.3.0 Queue full", times=1)
    async with (
        CaptureServer(faults=[fault], record_chunks=True) as server,
        mailer_for(server, dkim=both()) as mailer,
    ):
        result = await mailer.send(message(1))
    assert result.attempts == 2
    sent = b"".join(chunk for session in server.sessions for chunk in session.chunks)
    signatures = SIGNATURE.findall(sent)
    assert len(signatures) == 4  # two attempts, two signatures each
    assert signatures[:2] == signatures[2:]
    [stored] = server.messages
    assert SIGNATURE.findall(stored.data) == signatures[:2]
    all_verified(stored.data)


async def test_a_non_ascii_mailbox_goes_smtputf8_and_verifies() -> None:
    signer = DKIM(domain="例子.中国", selector="s1", key=ed25519_key())
    async with CaptureServer() as server, mailer_for(server, dkim=signer) as mailer:
        await mailer.send(message(1, sender="商店 <店主@例子.中国>", to=["用户@例子.中国"]))
    [stored] = server.messages
    assert "SMTPUTF8" in stored.mail_options
    assert "店主@例子.中国".encode() in stored.data
    assert verdicts(stored.data, (signer,)) == [("xn--fsqu00a.xn--fiqs8s", "s1", True)]


async def test_a_server_without_8bitmime_gets_the_7bit_rendering_signed() -> None:
    async with serve_without_8bitmime() as (server, handler), Mailer(server, dkim=both()) as mailer:
        await mailer.send(eight_bit_stdlib())
    [(options, data)] = handler.messages
    assert "BODY=8BITMIME" not in options
    assert data.isascii()
    all_verified(data)


# -- the outbox ------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


async def _deliver_all(outbox: Outbox, mailer: Mailer, keys: list[str]) -> None:
    async with outbox.deliver(mailer):
        with anyio.fail_after(20):
            while True:
                statuses = [await outbox.status(k) for k in keys]
                if all(s is not None and s.final for s in statuses):
                    break
                await anyio.sleep(0.02)
    for key in keys:
        status = await outbox.status(key)
        assert status is not None and status.state is OutboxState.DELIVERED


async def test_an_outbox_signs_at_enqueue_and_every_retry_sends_the_stored_signature(
    url: str,
) -> None:
    fault = Fault.reply("dot", 451, "4.3.0 Queue full", times=1)
    retry = RetryPolicy(attempts=3, base_delay=0.0, jitter=False)
    async with (
        CaptureServer(faults=[fault], record_chunks=True) as server,
        Outbox(url, dkim=both(), retry=retry) as outbox,
    ):
        await outbox.enqueue(message(1), key="k")
        async with mailer_for(server) as mailer:  # the worker has no key
            await _deliver_all(outbox, mailer, ["k"])
    sent = b"".join(chunk for session in server.sessions for chunk in session.chunks)
    signatures = SIGNATURE.findall(sent)
    assert len(signatures) == 4 and signatures[:2] == signatures[2:]
    [stored] = server.messages
    all_verified(stored.data)


async def test_a_worker_with_a_key_signs_what_was_stored_unsigned_and_never_twice(
    url: str,
) -> None:
    async with CaptureServer() as server:
        async with Outbox(url) as web_app:  # no key in the web app
            await web_app.enqueue(message(1), key="unsigned")
        async with Outbox(url, dkim=ed25519_signer()) as web_app:
            await web_app.enqueue(message(2), key="half-signed")
        async with Outbox(url) as worker, mailer_for(server, dkim=both()) as mailer:
            await _deliver_all(worker, mailer, ["unsigned", "half-signed"])
    assert len(server.messages) == 2
    for stored in server.messages:
        assert stored.data.count(b"DKIM-Signature:") == 2
        all_verified(stored.data, (rsa_signer(), ed25519_signer()))


def test_a_stored_message_rendered_again_for_7bit_is_signed_by_the_workers_keys() -> None:
    msg = eight_bit_stdlib()
    signers = signers_of(both())
    job = Job.of(msg, sign=signers)
    content = job.content_for(smtputf8=False, eightbitmime=True)
    payload = encode(msg, job.envelope, content)
    with_keys = StoredJob(read(payload), signers)
    assert with_keys.content_for(smtputf8=False, eightbitmime=True).data == content.data
    seven = with_keys.content_for(smtputf8=False, eightbitmime=False)
    assert seven.data.isascii()
    all_verified(unstuff(seven.data))
    other = signers_of(DKIM(domain=DOMAIN, selector="other", key=ed25519_key()))
    for lacking in (None, other):
        without = StoredJob(read(payload), lacking)
        with pytest.raises(NotSupportedError, match="rsa2048") as caught:
            without.content_for(smtputf8=False, eightbitmime=False)
        assert "dkim=" in str(caught.value)
