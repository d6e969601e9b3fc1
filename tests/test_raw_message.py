"""Existing messages go out byte for byte: ``send_raw`` and ``RawMessage`` (forwarding).

The only changes allowed are CRLF for bare LF and, on the wire, DATA's dot-stuffing; the
capture server reads the content back, so what it stored must equal the input.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from asyncmail import (
    DKIM,
    Mailer,
    MessageError,
    NotSupportedError,
    Outbox,
    Phase,
    RawMessage,
    Status,
)
from asyncmail.testing import CaptureServer, Fault

from ._dkim import DOMAIN, rsa_key, rsa_signer, verdicts
from ._support import SendPath, serve_without_8bitmime

SENDER = "forwarder@example.com"

DOTS = (
    b"From: Ann <ann@example.com>\r\nTo: bob@example.org\r\nSubject: dots\r\n"
    b"Message-ID: <dots@example.com>\r\n\r\n"
    b".a line that starts with a dot\r\n..two dots\r\n.\r\nthe end\r\n"
)
EIGHT_BIT = (
    "From: ann@example.com\r\nTo: bob@example.org\r\nSubject: =?utf-8?b?5L2g5aW9?=\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\nhéllo 你好\r\n"
).encode()
LONG_LINE = (
    b"From: ann@example.com\r\nTo: bob@example.org\r\nSubject: long\r\n\r\n"
    + b"x" * 998
    + b"\r\nshort\r\n"
)
UTF8_HEADERS = (
    "From: 用户 <用户@example.com>\r\nTo: bob@example.org\r\nSubject: 你好\r\n\r\nhi\r\n"
).encode()
# Header fields the way another program wrote them: no space after the colon, odd case,
# folded; a renderer would normalise every one of these.
ODD_HEADERS = (
    b"from:ann@example.com\r\nTO:   bob@example.org\r\nSubject: folded\r\n\tsubject\r\n"
    b"X-Custom:  two  spaces  \r\n\r\nbody\r\n"
)


def _signed(data: bytes) -> bytes:
    """``data`` signed by dkimpy (not by asyncmail), as an author's server would sign it."""
    pem = rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    signature: bytes = dkim.sign(
        data, b"rsa2048", DOMAIN.encode(), pem, include_headers=[b"from", b"to", b"subject"]
    )
    return signature.replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n") + data


CORPUS = {
    "dots": DOTS,
    "eight-bit": EIGHT_BIT,
    "998-octet line": LONG_LINE,
    "odd headers": ODD_HEADERS,
}


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_send_raw_stores_the_input_byte_for_byte(send_path: SendPath, name: str) -> None:
    data = CORPUS[name]
    async with send_path.server() as server, Mailer(server.url) as mailer:
        result = await mailer.send_raw(data, sender=SENDER, recipients=["bob@example.org"])
    assert result.status is Status.DELIVERED
    [stored] = server.messages
    assert stored.data == data
    assert stored.envelope_sender == SENDER
    assert stored.recipients == ("bob@example.org",)


async def test_a_dkim_signature_made_elsewhere_still_verifies_after_send_raw(
    send_path: SendPath,
) -> None:
    data = _signed(DOTS)
    assert verdicts(data, [rsa_signer()]) == [(DOMAIN, "rsa2048", True)]  # (signed right)
    async with send_path.server() as server, Mailer(server.url) as mailer:
        await mailer.send_raw(data, sender=SENDER, recipients="carol@example.net")
    [stored] = server.messages
    assert stored.data == data
    assert verdicts(stored.data, [rsa_signer()]) == [(DOMAIN, "rsa2048", True)]


async def test_the_mailers_dkim_signer_leaves_a_raw_message_alone_unless_asked() -> None:
    signer = DKIM(domain=DOMAIN, selector="rsa2048", key=rsa_key())
    async with CaptureServer() as server, Mailer(server.url, dkim=signer) as mailer:
        await mailer.send_raw(DOTS, sender=SENDER, recipients="bob@example.org")
        await mailer.send_raw(DOTS, sender=SENDER, recipients="bob@example.org", dkim=True)
    unsigned, signed = server.messages
    assert unsigned.data == DOTS
    assert signed.data.endswith(DOTS) and signed.data.startswith(b"DKIM-Signature:")
    assert verdicts(signed.data, [signer]) == [(DOMAIN, "rsa2048", True)]


async def test_bare_lf_line_ends_become_crlf_and_nothing_else_changes() -> None:
    unix = DOTS.replace(b"\r\n", b"\n")
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        await mailer.send_raw(unix, sender=SENDER, recipients="bob@example.org")
    assert server.messages[0].data == DOTS


async def test_content_without_a_final_line_end_gets_one(send_path: SendPath) -> None:
    async with send_path.server() as server, Mailer(server.url) as mailer:
        await mailer.send_raw(DOTS[:-2], sender=SENDER, recipients="bob@example.org")
    assert server.messages[0].data == DOTS


async def test_the_envelope_is_what_was_given_not_the_header_fields() -> None:
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        result = await mailer.send_raw(
            DOTS, sender="", recipients=["x@example.net", "y@example.net", "X@EXAMPLE.NET"]
        )
    [stored] = server.messages
    assert stored.envelope_sender == ""  # the null sender, as a bounce uses
    assert stored.recipients == ("x@example.net", "y@example.net", "X@EXAMPLE.NET")
    assert result.message_id == "<dots@example.com>"
    assert result.accepted == ("x@example.net", "y@example.net", "X@EXAMPLE.NET")


async def test_utf8_header_fields_go_with_smtputf8_where_offered() -> None:
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        await mailer.send_raw(UTF8_HEADERS, sender=SENDER, recipients="bob@example.org")
    [stored] = server.messages
    assert stored.data == UTF8_HEADERS
    assert "SMTPUTF8" in stored.mail_options


async def test_utf8_header_fields_go_as_8bit_content_where_smtputf8_is_not_offered() -> None:
    async with CaptureServer(smtputf8=False) as server, Mailer(server.url) as mailer:
        await mailer.send_raw(UTF8_HEADERS, sender=SENDER, recipients="bob@example.org")
    [stored] = server.messages
    assert stored.data == UTF8_HEADERS
    assert "SMTPUTF8" not in stored.mail_options
    assert "BODY=8BITMIME" in stored.mail_options


async def test_eight_bit_content_and_a_server_without_8bitmime_is_refused_before_mail() -> None:
    async with serve_without_8bitmime() as (server, handler), Mailer(server) as mailer:
        with pytest.raises(NotSupportedError, match="8BITMIME") as caught:
            await mailer.send_raw(EIGHT_BIT, sender=SENDER, recipients="bob@example.org")
        await mailer.send_raw(DOTS, sender=SENDER, recipients="bob@example.org")  # ASCII: fine
    assert caught.value.phase is Phase.MAIL
    assert [data for _, data in handler.messages] == [DOTS]  # never the 8-bit one


async def test_a_non_ascii_address_and_a_server_without_smtputf8_is_refused_before_mail() -> None:
    async with CaptureServer(smtputf8=False) as server, Mailer(server.url) as mailer:
        with pytest.raises(NotSupportedError, match="SMTPUTF8"):
            await mailer.send_raw(DOTS, sender=SENDER, recipients="用户@example.org")
    assert server.messages == []
    assert not any(c.startswith("MAIL") for s in server.sessions for c in s.commands)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (DOTS.replace(b"the end", b"the\rend"), "bare CR"),
        (DOTS.replace(b"the end", b"the\x00end"), "NUL"),
        (LONG_LINE.replace(b"x" * 998, b"x" * 999), "999 octets"),
        (b"From ann@example.com Mon Jan  1 00:00:00 2026\n" + DOTS, "mbox"),
        (b"\r\n\r\n", "empty"),
        (b"just a body\r\n", "header field"),
    ],
    ids=["bare CR", "NUL", "line over 998", "mbox From_ line", "empty", "no header"],
)
def test_bytes_that_cannot_go_unchanged_are_refused_when_made(data: bytes, words: str) -> None:
    with pytest.raises(MessageError, match=words):
        RawMessage(data, sender=SENDER, recipients="bob@example.org")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"sender": "not an address"}, "sender: invalid address"),
        ({"recipients": []}, "at least one recipient"),
        ({"recipients": ["bob@example.org", "a b@example.org"]}, r"recipients\[1\]"),
        ({"data": "a str"}, "expected bytes"),
    ],
)
def test_a_bad_envelope_or_data_type_is_a_message_error(fields: dict[str, Any], words: str) -> None:
    arguments: dict[str, Any] = {"data": DOTS, "sender": SENDER, "recipients": "b@example.org"}
    arguments.update(fields)
    data = arguments.pop("data")
    with pytest.raises(MessageError, match=words):
        RawMessage(data, **arguments)


async def test_resending_prepends_the_resent_fields_and_changes_nothing_else() -> None:
    recipients = [f"reader{i}@example.net" for i in range(8)]
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        result = await mailer.send_raw(
            DOTS, sender=SENDER, recipients=recipients, resent_from="Desk <desk@example.com>"
        )
    [stored] = server.messages
    head, original = stored.data[: -len(DOTS)], stored.data[-len(DOTS) :]
    assert original == DOTS
    assert max(map(len, head.split(b"\r\n"))) <= 78  # Resent-To folded
    parsed = email.message_from_bytes(stored.data, policy=email.policy.default)
    assert [name for name, _ in parsed.items()][:4] == [
        "Resent-Date",
        "Resent-From",
        "Resent-To",
        "Resent-Message-ID",
    ]
    assert parsed["Resent-From"].addresses[0].addr_spec == "desk@example.com"
    assert [a.addr_spec for a in parsed["Resent-To"].addresses] == recipients
    assert parsed["Resent-Message-ID"] != parsed["Message-ID"]
    assert result.message_id == "<dots@example.com>"  # the message's own, unchanged


async def test_raw_messages_go_through_send_many_each_with_its_own_result() -> None:
    raws = [RawMessage(DOTS, sender=SENDER, recipients=f"r{i}@example.org") for i in range(20)]
    fault = Fault.reply("rcpt", 550, "5.1.1 No such user", match="r7@")
    async with CaptureServer(faults=[fault]) as server, Mailer(server.url) as mailer:
        results = [r async for r in mailer.send_many(raws)]
    by_rcpt = {r.message.recipients[0]: r for r in results}
    assert len(by_rcpt) == 20
    assert by_rcpt["r7@example.org"].status is Status.FAILED
    assert sum(r.status is Status.DELIVERED for r in results) == 19
    assert all(m.data == DOTS for m in server.messages) and len(server.messages) == 19


async def test_a_raw_message_survives_the_outbox_byte_for_byte(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    async with Outbox(url) as outbox:
        raw = RawMessage(EIGHT_BIT, sender=SENDER, recipients=["bob@example.org"])
        await outbox.enqueue(raw, key="raw-1")
        async with CaptureServer() as server, Mailer(server.url) as mailer:
            async with outbox.deliver(mailer):
                await server.wait_for_messages(1)
    [stored] = server.messages
    assert stored.data == EIGHT_BIT
    assert stored.envelope_sender == SENDER
