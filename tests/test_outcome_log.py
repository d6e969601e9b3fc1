"""A message that did not fully arrive is logged at WARNING with the server's code and the
recipient, so an operator sees it without turning on DEBUG."""

from __future__ import annotations

import logging

import pytest

from asyncmail import DeliveryError, Mailer, Message, RetryPolicy, Status
from asyncmail.testing import CaptureServer, Fault


def _message(*to: str) -> Message:
    return Message(sender="app@example.com", to=list(to), subject="Hi", text="hello")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("asyncmail") and r.levelno == logging.WARNING
    ]


async def test_a_recipient_refused_in_a_delivered_message_is_logged_with_its_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncmail")
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user", match="nobody@")
    async with CaptureServer(faults=[fault]) as server, Mailer(server.url) as mailer:
        result = await mailer.send(_message("ok@example.org", "nobody@example.org"))
    assert result.status is Status.DELIVERED
    [line] = _warnings(caplog)
    assert result.message_id is not None and result.message_id in line
    assert "delivered to ok@example.org" in line
    assert "refused for nobody@example.org: 550 5.1.1 No such user" in line


async def test_a_failed_message_is_logged_once_with_every_recipient_and_the_code(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncmail")
    fault = Fault.reply("mail", 553, "5.7.1 Sender not allowed")
    async with CaptureServer(faults=[fault]) as server, Mailer(server.url) as mailer:
        with pytest.raises(DeliveryError):
            await mailer.send(_message("a@example.org", "b@example.org"))
    [line] = _warnings(caplog)
    assert "failed for a@example.org, b@example.org: 553 5.7.1 Sender not allowed" in line


async def test_an_unknown_outcome_is_logged_with_its_recipients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncmail")
    async with (
        CaptureServer(faults=[Fault.disconnect("dot")]) as server,
        Mailer(server.url, retry=RetryPolicy(attempts=1)) as mailer,
    ):
        with pytest.raises(DeliveryError) as caught:
            await mailer.send(_message("a@example.org"))
    assert caught.value.result is not None
    assert caught.value.result.status is Status.UNKNOWN
    [line] = _warnings(caplog)
    assert "outcome unknown for a@example.org" in line


async def test_a_message_every_recipient_took_logs_no_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="asyncmail")
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        await mailer.send(_message("a@example.org", "b@example.org"))
    assert _warnings(caplog) == []
