"""Message and Attachment: immutable, keyword-only values validated at construction."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from asyncmail import Address, Attachment, Message, MessageError


def make(**kwargs: object) -> Message:
    fields: dict[str, object] = {"sender": "shop@example.com", "to": "bob@example.org"}
    fields.update(kwargs)
    return Message(**fields)  # type: ignore[arg-type]


def test_contract_example_builds_and_exposes_envelope_fields() -> None:
    msg = Message(
        sender="商店 <shop@example.com>",
        to=["张三 <zhang@example.net>", "bob@example.org"],
        cc=[],
        bcc=["audit@example.com"],
        reply_to="help@example.com",
        subject="订单确认 #1024",
        text="plain body",
        html="<p>html body</p>",
        attachments=[
            Attachment(filename="发票.pdf", content=b"%PDF...", content_type="application/pdf"),
            Attachment(filename="logo.png", content=b"png", inline=True, content_id="logo"),
        ],
        headers={"X-Campaign": "spring"},
    )
    assert msg.sender == Address("商店", "shop@example.com")
    assert msg.envelope_sender == "shop@example.com"
    assert msg.recipients == ("zhang@example.net", "bob@example.org", "audit@example.com")
    assert msg.reply_to == (Address("", "help@example.com"),)
    assert msg.headers == (("X-Campaign", "spring"),)
    assert isinstance(msg.to_bytes(), bytes)


def test_message_is_immutable() -> None:
    msg = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.subject = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("subclass", [False, True])
def test_a_message_that_fails_validation_is_never_seen_half_made(subclass: bool) -> None:
    # __init__ fills the fields on a mutable twin class; an error must not leave one behind
    cls: type[Message] = type("Sub", (Message,), {"__slots__": ()}) if subclass else Message
    with pytest.raises(MessageError) as caught:
        cls(sender="a@example.com", to="b@example.com", subject="two\nlines")
    tb = caught.value.__traceback__
    selves = []
    while tb is not None:
        if "self" in tb.tb_frame.f_locals:
            selves.append(tb.tb_frame.f_locals["self"])
        tb = tb.tb_next
    assert selves, "the half-made message should be in the traceback"
    assert all(type(s) is cls for s in selves)
    made = cls(sender="a@example.com", to="b@example.com", subject="one line")
    assert type(made) is cls
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.subject = "changed"  # type: ignore[misc]


def test_message_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Message("shop@example.com", "bob@example.org")  # type: ignore[call-arg]


def test_recipients_are_deduplicated_case_insensitively_on_domain_keeping_first_spelling() -> None:
    msg = make(to=["Bob@Example.org", "x@example.com"], cc="Bob@example.ORG", bcc="x@example.com")
    assert msg.recipients == ("Bob@Example.org", "x@example.com")


def test_local_parts_stay_case_sensitive_in_recipients() -> None:
    assert make(to=["bob@example.org", "BOB@example.org"]).recipients == (
        "bob@example.org",
        "BOB@example.org",
    )


def test_message_id_is_generated_once_at_the_idna_encoded_sender_domain() -> None:
    msg = make(sender="店 <shop@例え.jp>")
    assert re.fullmatch(r"<[0-9a-f]{32}@xn--r8jz45g\.jp>", msg.message_id)
    for _ in range(2):
        assert f"Message-ID: {msg.message_id}\r\n".encode() in msg.to_bytes()


def test_each_message_gets_its_own_message_id() -> None:
    assert make().message_id != make().message_id


@pytest.mark.parametrize(
    "kwargs",
    [{"message_id": "<abc.1@example.com>"}, {"headers": {"Message-ID": "<abc.1@example.com>"}}],
)
def test_given_message_id_is_used(kwargs: dict[str, object]) -> None:
    msg = make(**kwargs)
    assert msg.message_id == "<abc.1@example.com>"
    assert b"Message-ID: <abc.1@example.com>\r\n" in msg.to_bytes()


def test_message_id_without_brackets_gets_them() -> None:
    assert make(message_id="abc@example.com").message_id == "<abc@example.com>"


@pytest.mark.parametrize("bad", ["<a b@x>", "<noat>", "<a@x> <b@y>", "<>", f"<{'a' * 950}@x>"])
def test_invalid_message_id_raises(bad: str) -> None:
    with pytest.raises(MessageError, match=r"^message_id"):
        make(message_id=bad)


def test_return_path_overrides_envelope_sender_and_empty_means_null_path() -> None:
    assert make(return_path="bounces@example.com").envelope_sender == "bounces@example.com"
    assert make(return_path="").envelope_sender == ""


def test_date_defaults_to_now_and_can_be_given() -> None:
    before = datetime.now(UTC)
    assert before - timedelta(seconds=1) <= make().date <= datetime.now(UTC)
    given = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert make(date=given).date == given


def test_date_header_is_parsed_into_the_date() -> None:
    msg = make(headers={"Date": "Sun, 01 Mar 2026 12:00:00 +0000"})
    assert msg.date == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(MessageError, match=r"Date"):
        make(headers={"Date": "yesterday"})


def test_reply_to_header_is_parsed_into_reply_to() -> None:
    msg = make(headers={"Reply-To": '"Doe, John" <j@example.com>, help@example.com'})
    assert msg.reply_to == (Address("Doe, John", "j@example.com"), Address("", "help@example.com"))


def test_no_recipients_raises_naming_the_field() -> None:
    with pytest.raises(MessageError, match=r"^to: .*recipient"):
        make(to=[])


def test_invalid_recipient_raises_naming_field_and_index() -> None:
    with pytest.raises(MessageError, match=r"^to\[1\]: invalid address 'bob@'"):
        make(to=["ok@example.com", "bob@"])
    with pytest.raises(MessageError, match=r"^cc: invalid address"):
        make(cc="not an address")
    with pytest.raises(MessageError, match=r"^sender: invalid address"):
        make(sender="nobody")


@pytest.mark.parametrize(
    "name",
    [
        *("From", "to", "CC", "Bcc", "Subject", "MIME-Version", "Content-Type", "content-x"),
        *("List-Unsubscribe", "list-unsubscribe-post", "List-ID"),
    ],
)
def test_managed_headers_cannot_be_set_through_headers(name: str) -> None:
    with pytest.raises(MessageError, match=r"sets .* itself"):
        make(headers={name: "x"})


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "", "Ünicode", "X\x7f"])
def test_invalid_header_names_raise(name: str) -> None:
    with pytest.raises(MessageError, match=r"invalid header name"):
        make(headers={name: "x"})


def test_list_unsubscribe_comes_from_its_field_and_other_headers_are_allowed() -> None:
    msg = make(unsubscribe_mailto="u@example.com", headers={"X-A": "1"})
    raw = msg.to_bytes()
    assert b"List-Unsubscribe: <mailto:u@example.com>\r\nX-A: 1\r\n" in raw


def test_bodies_must_be_text() -> None:
    with pytest.raises(MessageError, match=r"^text"):
        make(text=b"bytes")
    with pytest.raises(MessageError, match=r"^html"):
        make(html="\ud800")


def test_lone_surrogates_in_headers_raise() -> None:
    with pytest.raises(MessageError, match=r"^subject: not encodable as UTF-8"):
        make(subject="\udcff")
    with pytest.raises(MessageError, match=r"^to: not encodable as UTF-8"):
        make(to=("Zh\ud800ang", "zhang@example.net"))
    with pytest.raises(MessageError, match=r"^headers\['X-Tag'\]: not encodable"):
        make(headers={"X-Tag": "a\udfffb"})


def test_attachment_type_is_guessed_from_filename() -> None:
    assert Attachment(filename="a.pdf", content=b"").content_type == "application/pdf"
    assert Attachment(filename="data.weird", content=b"").content_type == (
        "application/octet-stream"
    )
    assert Attachment(filename="a", content=b"", content_type="Text/Plain").content_type == (
        "text/plain"
    )


def test_attachment_from_path_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "报告.csv"
    path.write_bytes(b"a,b\n")
    attachment = Attachment.from_path(path, inline=True, content_id="r")
    assert (attachment.filename, attachment.content, attachment.content_type) == (
        "报告.csv",
        b"a,b\n",
        "text/csv",
    )
    assert attachment.inline
    assert attachment.content_id == "r"


def test_attachment_content_id_loses_angle_brackets() -> None:
    assert Attachment(filename="a.png", content=b"", content_id="<logo>").content_id == "logo"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"filename": ""},
        {"filename": "a\tb"},
        {"content_type": "text"},
        {"content_type": "text/plain; charset=x"},
        {"content_id": "a b"},
        {"content": "not bytes"},
    ],
)
def test_invalid_attachments_raise(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"filename": "a.txt", "content": b""}
    fields.update(kwargs)
    with pytest.raises(MessageError):
        Attachment(**fields)  # type: ignore[arg-type]


def test_attachment_repr_does_not_dump_content() -> None:
    assert "size=100000" in repr(Attachment(filename="a.bin", content=b"x" * 100000))


def test_replace_keeps_message_id_for_retries() -> None:
    msg = make()
    assert dataclasses.replace(msg, subject="again").message_id == msg.message_id


def test_message_repr_is_short_and_shows_the_message_id() -> None:
    msg = make(subject="Hi", text="x" * 10000, bcc="b@example.com")
    text = repr(msg)
    assert msg.message_id in text
    assert "recipients=2" in text
    assert len(text) < 200
