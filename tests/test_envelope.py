"""The envelope and DATA bytes, for asyncmail Messages and stdlib EmailMessages alike."""

from __future__ import annotations

import email
import email.message
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmail import Message, MessageError
from asyncmail.message._content import content_bytes as message_bytes
from asyncmail.message._envelope import Envelope, envelope_of, smtp_address
from asyncmail.testing import CaptureServer

from ._support import mailer_for


def stdlib(**headers: str) -> email.message.EmailMessage:
    msg = email.message.EmailMessage()
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content("body\n")
    return msg


def test_envelope_of_a_message_uses_its_sender_recipients_and_id() -> None:
    msg = Message(
        sender="商店 <shop@例え.jp>",
        to=["a@example.com", "A@EXAMPLE.com"],
        cc="c@example.com",
        bcc="a@Example.com",
        return_path="bounce@example.com",
    )
    assert envelope_of(msg) == Envelope(
        sender="bounce@example.com",
        recipients=("a@example.com", "A@EXAMPLE.com", "c@example.com"),
        message_id=msg.message_id,
        needs_smtputf8=False,
    )


def test_idn_domains_alone_do_not_need_smtputf8() -> None:
    msg = Message(sender="shop@例え.jp", to="user@例え.jp")
    assert not envelope_of(msg).needs_smtputf8


def test_a_non_ascii_local_part_needs_smtputf8() -> None:
    assert envelope_of(Message(sender="shop@example.com", to="用户@example.com")).needs_smtputf8
    assert envelope_of(Message(sender="店@example.com", to="a@example.com")).needs_smtputf8


def test_message_bytes_of_a_message_is_its_rendering() -> None:
    msg = Message(sender="shop@example.com", to="a@example.com", bcc="b@example.com", text="x")
    raw = message_bytes(msg, smtputf8=False)
    assert raw.split(b"\r\n\r\n")[-1] == b"x\r\n"
    # (the random Message-ID may end in "...b@example.com": look for the address alone)
    assert re.search(rb"(?<![\w.])b@example\.com", raw) is None


@pytest.mark.parametrize(
    ("address", "smtputf8", "expected"),
    [
        ("user@例え.jp", False, "user@xn--r8jz45g.jp"),
        ("user@例え.jp", True, "user@例え.jp"),
        ("用户@例え.jp", True, "用户@例え.jp"),
        ("a@example.com", False, "a@example.com"),
        ("", False, ""),
    ],
)
def test_smtp_address_forms(address: str, smtputf8: bool, expected: str) -> None:
    assert smtp_address(address, smtputf8=smtputf8) == expected


def test_smtp_address_refuses_a_non_ascii_local_part_without_smtputf8() -> None:
    with pytest.raises(MessageError, match=r"用户@example.com"):
        smtp_address("用户@example.com", smtputf8=False)


@pytest.mark.parametrize("bad", ["<a@example.com>", "a@example.com SIZE=1", "a b@x.com", "a\r\n@x"])
def test_smtp_address_refuses_anything_but_an_addr_spec(bad: str) -> None:
    with pytest.raises(MessageError):
        smtp_address(bad, smtputf8=True)


def test_stdlib_envelope_comes_from_from_to_cc_bcc_like_smtplib() -> None:
    msg = stdlib(
        From="Shop <shop@example.com>",
        To="A <a@example.com>, b@example.com",
        Cc="a@EXAMPLE.com, c@例え.jp",
        Bcc="hidden@example.com",
        Message_ID="<id1@example.com>",
    )
    assert envelope_of(msg) == Envelope(
        sender="shop@example.com",
        recipients=("a@example.com", "b@example.com", "c@例え.jp", "hidden@example.com"),
        message_id="<id1@example.com>",
        needs_smtputf8=False,
    )


def test_stdlib_sender_header_wins_over_from() -> None:
    msg = stdlib(From="a@example.com, b@example.com", Sender="s@example.com", To="t@example.com")
    assert envelope_of(msg).sender == "s@example.com"


def test_stdlib_resent_headers_replace_the_original_envelope() -> None:
    msg = stdlib(From="orig@example.com", To="orig-to@example.com")
    msg["Resent-Date"] = "Sun, 01 Mar 2026 12:00:00 +0000"
    msg["Resent-From"] = "fwd@example.com"
    msg["Resent-To"] = "new@example.com"
    msg["Resent-Bcc"] = "hidden@example.com"
    envelope = envelope_of(msg)
    assert envelope.sender == "fwd@example.com"
    assert envelope.recipients == ("new@example.com", "hidden@example.com")
    raw = message_bytes(msg, smtputf8=False)
    assert b"hidden@example.com" not in raw
    assert b"Resent-To: new@example.com\r\n" in raw


def test_stdlib_with_two_resent_blocks_is_refused() -> None:
    msg = stdlib(From="a@example.com", To="b@example.com")
    msg["Resent-Date"] = "Sun, 01 Mar 2026 12:00:00 +0000"
    msg["Resent-Date"] = "Mon, 02 Mar 2026 12:00:00 +0000"
    with pytest.raises(MessageError, match=r"Resent"):
        envelope_of(msg)


def test_stdlib_message_without_sender_or_recipients_is_refused() -> None:
    with pytest.raises(MessageError, match=r"From"):
        envelope_of(stdlib(To="a@example.com"))
    with pytest.raises(MessageError, match=r"To"):
        envelope_of(stdlib(From="a@example.com"))


def test_stdlib_malformed_or_invalid_recipient_is_refused_naming_the_header() -> None:
    for cc in (
        b"oops@",
        b"a@b.com <x@y.com>",
        b"x@exa mple.com",
        b'"a b"@example.com',
        b"x@y.com)<a@b.com>",
        b"a@b.com, <c@d.com>junk",
    ):
        raw = b"From: a@example.com\r\nTo: b@example.com\r\nCc: " + cc + b"\r\n\r\nx\r\n"
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        with pytest.raises(MessageError, match=r"Cc"):
            envelope_of(msg)


def test_stdlib_non_ascii_local_part_needs_smtputf8() -> None:
    msg = stdlib(From="a@example.com", To="用户@example.com")
    assert envelope_of(msg).needs_smtputf8
    assert "To: 用户@example.com".encode() in message_bytes(msg, smtputf8=True)


def test_stdlib_bytes_drop_bcc_and_use_crlf_only() -> None:
    msg = stdlib(From="a@example.com", To="b@example.com", Bcc="secret@example.com")
    msg.set_content("line1\nline2\rline3\r\n")
    raw = message_bytes(msg, smtputf8=False)
    assert b"Bcc" not in raw
    assert b"secret" not in raw
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None
    assert "Bcc" in msg  # the caller's message is untouched


def test_stdlib_header_injection_through_compat32_is_refused() -> None:
    msg = email.message.Message()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = "hello\r\nBcc: victim@example.com"
    msg.set_payload("x")
    with pytest.raises(MessageError, match=r"Subject"):
        envelope_of(msg)
    with pytest.raises(MessageError, match=r"Subject"):
        message_bytes(msg, smtputf8=False)


def test_stdlib_header_injection_through_an_encoded_word_is_refused() -> None:
    msg = stdlib(From="a@example.com", To="b@example.com")
    msg["Subject"] = "=?utf-8?q?hi=0D=0ABcc:_victim@example.com?="
    with pytest.raises(MessageError, match=r"Subject"):
        message_bytes(msg, smtputf8=False)


def test_stdlib_nul_and_bad_header_names_are_refused() -> None:
    msg = email.message.Message()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["X-Evil"] = "a\x00b"
    with pytest.raises(MessageError):
        envelope_of(msg)
    msg2 = email.message.Message()
    msg2["From"] = "a@example.com"
    msg2["To"] = "b@example.com"
    msg2["Bad Name"] = "x"
    with pytest.raises(MessageError, match=r"header name"):
        message_bytes(msg2, smtputf8=False)


def test_stdlib_injection_in_a_nested_part_is_refused() -> None:
    msg = stdlib(From="a@example.com", To="b@example.com")
    msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename="a.bin")
    inner = next(iter(msg.iter_attachments()))
    inner.set_raw("X-Evil", "a\nContent-Type: text/html")  # as a parser would, unchecked
    with pytest.raises(MessageError, match=r"X-Evil"):
        message_bytes(msg, smtputf8=False)


def test_folded_headers_of_a_parsed_message_are_not_mistaken_for_injection() -> None:
    raw = (
        b"From: a@example.com\r\nTo: b@example.com,\r\n c@example.com\r\n"
        b"Subject: a long\r\n folded subject\r\n\r\nbody\r\n"
    )
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert envelope_of(msg).recipients == ("b@example.com", "c@example.com")
    assert message_bytes(msg, smtputf8=False).endswith(b"\r\n\r\nbody\r\n")


def test_stdlib_line_over_998_octets_is_refused() -> None:
    msg = email.message.Message()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg.set_payload("x" * 1200)
    with pytest.raises(MessageError, match=r"998"):
        message_bytes(msg, smtputf8=False)


def test_anything_else_is_refused() -> None:
    with pytest.raises(MessageError):
        envelope_of("From: a@example.com")  # type: ignore[arg-type]


def test_stdlib_idn_domains_in_headers_become_idna_without_smtputf8() -> None:
    """Python itself would write ``user@=?utf-8?...?=.jp``: an address nobody can reply to."""
    msg = stdlib(From="店 <a@例え.jp>", To="张三 <user@例え.jp>, b@bücher.de", Cc="g: x@例え.jp;")
    raw = message_bytes(msg, smtputf8=False)
    assert raw.isascii()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == [
        "user@xn--r8jz45g.jp",
        "b@xn--bcher-kva.de",
    ]
    assert parsed["To"].addresses[0].display_name == "张三"
    assert parsed["Cc"].groups[0].display_name == "g"
    assert list(parsed.keys())[:3] == ["From", "To", "Cc"]
    assert str(msg["To"]) == "张三 <user@例え.jp>, b@bücher.de"  # the caller's message is untouched


def test_stdlib_non_ascii_local_part_in_headers_without_smtputf8_is_refused() -> None:
    with pytest.raises(MessageError, match=r"用户@example\.com"):
        message_bytes(stdlib(From="a@example.com", To="用户@example.com"), smtputf8=False)


def test_one_mailbox_spelt_as_unicode_and_as_idna_is_one_recipient() -> None:
    """例え.jp and XN--R8JZ45G.jp are one domain: the server must not get two RCPT TOs."""
    spellings = ["user@例え.jp", "user@XN--R8JZ45G.jp", "user@xn--r8jz45g.JP", "other@例え.jp"]
    message = Message(sender="a@example.com", to=spellings[:2], cc=spellings[2], bcc=spellings[3])
    assert envelope_of(message).recipients == ("user@例え.jp", "other@例え.jp")
    stdlib_message = stdlib(
        From="a@example.com", To=", ".join(spellings[:2]), Cc=spellings[2], Bcc=spellings[3]
    )
    assert envelope_of(stdlib_message).recipients == ("user@例え.jp", "other@例え.jp")


_MAILBOX = st.sampled_from(
    [
        *("a@example.com", "A@example.com", "a@EXAMPLE.com"),
        *("b@例え.jp", "b@XN--R8JZ45G.jp", "用户@例子.中国", "c@[192.0.2.1]"),
    ]
)


@settings(max_examples=100, deadline=None)
@given(to=st.lists(_MAILBOX, min_size=1, max_size=5), bcc=st.lists(_MAILBOX, max_size=3))
def test_a_message_and_a_stdlib_message_agree_on_the_recipients(
    to: list[str], bcc: list[str]
) -> None:
    ours = envelope_of(Message(sender="s@example.com", to=to, bcc=bcc)).recipients
    headers = {"From": "s@example.com", "To": ", ".join(to)}
    if bcc:
        headers["Bcc"] = ", ".join(bcc)
    theirs = envelope_of(stdlib(**headers)).recipients
    assert ours == theirs
    assert set(ours) <= {*to, *bcc} and to[0] in ours


def test_a_nul_octet_in_a_stdlib_body_is_refused_before_io() -> None:
    """SMTP carries no NUL (RFC 5321 2.3.8); message_bytes, as the engine calls it, refuses."""
    msg = email.message.EmailMessage()
    msg["From"], msg["To"] = "a@example.com", "b@example.com"
    msg.set_content("a\x00b\n", cte="7bit")
    with pytest.raises(MessageError, match="NUL"):
        message_bytes(msg, smtputf8=False)


@pytest.mark.parametrize(
    "message",
    [
        Message(sender="a@example.com", to="b@example.com", reply_to="用户@example.com"),
        Message(sender="店@example.com", return_path="bounce@example.com", to="b@example.com"),
        Message(sender="店@example.com", return_path="", to="b@example.com"),
        stdlib(From="a@example.com", To="b@example.com", Reply_To="用户@example.com"),
        stdlib(From="店 <店@example.com>", Sender="s@example.com", To="b@example.com"),
    ],
    ids=[
        "reply-to",
        "from-with-return-path",
        "from-with-null-return-path",
        "stdlib-reply-to",
        "stdlib-from-with-sender",
    ],
)
async def test_a_non_ascii_local_part_only_in_a_header_is_sent_with_smtputf8(
    message: Message | email.message.EmailMessage,
) -> None:
    """Headers with such an address have no ASCII form: the transaction needs SMTPUTF8."""
    assert envelope_of(message).needs_smtputf8
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(message)
    [stored] = server.messages
    assert "SMTPUTF8" in stored.mail_options


def test_a_non_ascii_display_name_alone_needs_no_smtputf8() -> None:
    assert not envelope_of(Message(sender="店 <a@example.com>", to="b@例え.jp")).needs_smtputf8
    assert not envelope_of(stdlib(From="店 <a@example.com>", To="b@例え.jp")).needs_smtputf8
