"""to_bytes(): MIME structure follows content, encodings fit the text, lines stay legal."""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from asyncmail import Address, Attachment, Message, MessageError
from asyncmail.message._render import format_date


def make(**kwargs: object) -> Message:
    fields: dict[str, object] = {"sender": "shop@example.com", "to": "bob@example.org"}
    fields.update(kwargs)
    return Message(**fields)  # type: ignore[arg-type]


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def head(raw: bytes) -> str:
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")


def structure(raw: bytes) -> list[str]:
    return [part.get_content_type() for part in parse(raw).walk()]


def test_text_only_is_a_single_text_plain_part() -> None:
    raw = make(text="hi").to_bytes()
    assert structure(raw) == ["text/plain"]
    assert "Content-Type: text/plain; charset=utf-8" in head(raw)


def test_html_only_is_a_single_text_html_part() -> None:
    assert structure(make(html="<p>hi</p>").to_bytes()) == ["text/html"]


def test_text_and_html_become_multipart_alternative_text_first() -> None:
    raw = make(text="hi", html="<p>hi</p>").to_bytes()
    assert structure(raw) == ["multipart/alternative", "text/plain", "text/html"]


def test_inline_attachments_wrap_the_html_in_multipart_related() -> None:
    logo = Attachment(filename="logo.png", content=b"\x89PNG", inline=True, content_id="logo")
    raw = make(text="hi", html='<img src="cid:logo">', attachments=[logo]).to_bytes()
    assert structure(raw) == [
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
    ]
    part = list(parse(raw).walk())[-1]
    assert part["Content-ID"] == "<logo>"
    assert part.get_content_disposition() == "inline"


def test_regular_attachments_go_in_multipart_mixed_around_everything() -> None:
    files = [
        Attachment(filename="logo.png", content=b"p", inline=True, content_id="logo"),
        Attachment(filename="a.pdf", content=b"%PDF"),
    ]
    raw = make(text="hi", html="<p>", attachments=files).to_bytes()
    assert structure(raw) == [
        "multipart/mixed",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "application/pdf",
    ]


def test_inline_attachment_without_html_is_an_inline_part_of_mixed() -> None:
    logo = Attachment(filename="logo.png", content=b"p", inline=True)
    raw = make(text="hi", attachments=[logo]).to_bytes()
    assert structure(raw) == ["multipart/mixed", "text/plain", "image/png"]


def test_attachments_only_message_has_no_empty_body_part() -> None:
    raw = make(attachments=[Attachment(filename="a.pdf", content=b"x")]).to_bytes()
    assert structure(raw) == ["multipart/mixed", "application/pdf"]


def test_required_headers_are_always_present() -> None:
    msg = make(text="x")
    h = head(msg.to_bytes())
    assert "\r\nMIME-Version: 1.0\r\n" in h
    assert f"\r\nMessage-ID: {msg.message_id}\r\n" in h
    assert re.search(r"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n", h)


def test_bcc_never_appears_in_the_bytes() -> None:
    msg = make(bcc=["Secret Person <secret@hidden.example>"], text="x")
    raw = msg.to_bytes()
    assert b"Bcc" not in raw
    assert b"hidden.example" not in raw
    assert "secret@hidden.example" in msg.recipients


def test_ascii_text_is_sent_7bit() -> None:
    raw = make(text="Hello\nworld").to_bytes()
    assert "Content-Transfer-Encoding: 7bit" in head(raw)
    assert raw.endswith(b"\r\n\r\nHello\r\nworld\r\n")


def test_chinese_text_is_sent_base64() -> None:
    raw = make(text="您好，这是一封测试邮件。" * 20).to_bytes()
    assert parse(raw)["Content-Transfer-Encoding"] == "base64"


def test_mostly_ascii_text_with_accents_is_sent_quoted_printable() -> None:
    raw = make(text="Café au lait, crème brûlée, and a long ASCII sentence. " * 5).to_bytes()
    assert parse(raw)["Content-Transfer-Encoding"] == "quoted-printable"


def test_ascii_text_with_an_overlong_line_is_not_sent_7bit() -> None:
    raw = make(text="x" * 2000).to_bytes()
    assert parse(raw)["Content-Transfer-Encoding"] == "quoted-printable"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize("longest", [997, 998, 999, 1000, 2500])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_7bit_only_when_every_line_fits_998_octets(longest: int, where: str) -> None:
    lines = ["short", "y" * 600, "z" * 998, "w" * 40] * 3
    lines.insert({"first": 0, "middle": 5, "last": len(lines)}[where], "x" * longest)
    cte = parse(make(text="\n".join(lines)).to_bytes())["Content-Transfer-Encoding"]
    assert cte == ("7bit" if longest <= 998 else "quoted-printable")


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\r\nb", "a\n\rb\r"])
def test_any_line_end_in_a_body_becomes_crlf(text: str) -> None:
    raw = make(text=text, html=text).to_bytes()
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", raw) is None


def test_body_round_trips_with_a_final_newline_added() -> None:
    parsed = parse(make(text="one\ntwo", html="<p>x</p>\n").to_bytes())
    plain = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert plain is not None and plain.get_content() == "one\r\ntwo\r\n"
    assert html is not None and html.get_content() == "<p>x</p>\r\n"


def test_attachments_are_base64_in_76_char_lines() -> None:
    raw = make(attachments=[Attachment(filename="a.bin", content=bytes(range(256)) * 4)]).to_bytes()
    body = raw.rsplit(b"\r\n\r\n", 2)[1]
    lines = body.split(b"\r\n")
    assert {len(line) for line in lines[:-1]} == {76}
    assert b"Content-Transfer-Encoding: base64" in raw


def test_non_ascii_filename_gets_rfc2231_and_an_ascii_fallback() -> None:
    raw = make(attachments=[Attachment(filename="发票.pdf", content=b"x")]).to_bytes()
    text = raw.decode("ascii")
    assert "filename*=utf-8''%E5%8F%91%E7%A5%A8.pdf" in text
    assert 'filename="__.pdf"' in text
    assert "name*=utf-8''%E5%8F%91%E7%A5%A8.pdf" in text
    assert [p.get_filename() for p in parse(raw).iter_attachments()] == ["发票.pdf"]


def test_accented_filename_fallback_keeps_the_letters() -> None:
    raw = make(attachments=[Attachment(filename="résumé.pdf", content=b"x")]).to_bytes()
    assert b'filename="resume.pdf"' in raw


def test_long_filename_uses_rfc2231_continuations_within_line_limits() -> None:
    name = "很长的文件名" * 12 + ".txt"
    raw = make(attachments=[Attachment(filename=name, content=b"x")]).to_bytes()
    assert b"filename*1*=" in raw
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert [p.get_filename() for p in parse(raw).iter_attachments()] == [name]


def test_non_ascii_subject_is_encoded_words_of_at_most_75_chars() -> None:
    subject = "订单确认 #1024 " * 10
    raw = make(subject=subject).to_bytes()
    h = head(raw)
    words = re.findall(r"=\?utf-8\?[bq]\?[^?]*\?=", h)
    assert words
    assert all(len(word) <= 75 for word in words)
    assert parse(raw)["Subject"] == subject


def test_long_ascii_subject_is_folded_at_spaces() -> None:
    subject = "word " * 60 + "end"
    raw = make(subject=subject).to_bytes()
    assert all(len(line) <= 78 for line in head(raw).split("\r\n"))
    assert parse(raw)["Subject"] == subject


def test_ascii_text_that_looks_like_an_encoded_word_stays_literal() -> None:
    subject = "=?utf-8?q?hi?= is not decoded"
    assert parse(make(subject=subject).to_bytes())["Subject"] == subject


def test_without_smtputf8_output_is_ascii_with_idna_domains() -> None:
    raw = make(sender="商店 <shop@例え.jp>", to="user@bücher.de", subject="ü").to_bytes()
    assert raw.isascii()
    assert b"<shop@xn--r8jz45g.jp>" in raw
    assert b"To: user@xn--bcher-kva.de\r\n" in raw


def test_with_smtputf8_addresses_are_raw_utf8() -> None:
    raw = make(to="用户@例子.广告").to_bytes(smtputf8=True)
    assert "To: 用户@例子.广告\r\n".encode() in raw


def test_non_ascii_local_part_without_smtputf8_raises_naming_the_address() -> None:
    msg = make(to="用户@example.com")
    with pytest.raises(MessageError, match=r"用户@example.com"):
        msg.to_bytes()


def test_many_recipients_fold_one_address_per_line() -> None:
    raw = make(to=[f"user{i}@example.com" for i in range(30)]).to_bytes()
    assert all(len(line) <= 78 for line in head(raw).split("\r\n"))
    assert len(parse(raw)["To"].addresses) == 30


def test_boundaries_do_not_occur_in_the_content() -> None:
    raw = make(text="--=_a\r\n--", html="<p>", attachments=[Attachment(filename="a", content=b"")])
    data = raw.to_bytes()
    boundaries = re.findall(rb'boundary="([^"]+)"', data)
    assert len(set(boundaries)) == 2
    for boundary in boundaries:
        assert data.count(b"--" + boundary + b"--") == 1


def test_custom_non_ascii_header_value_is_encoded() -> None:
    raw = make(headers={"X-Note": "注意 note"}).to_bytes()
    assert raw.isascii()
    assert parse(raw)["X-Note"] == "注意 note"


def test_date_is_formatted_per_rfc5322_in_its_own_offset() -> None:
    cet = timezone(timedelta(hours=1))
    assert format_date(datetime(2026, 3, 1, 12, 5, 9, tzinfo=cet)) == (
        "Sun, 01 Mar 2026 12:05:09 +0100"
    )
    assert format_date(datetime(2026, 3, 1, 12, 5, 9, tzinfo=UTC)) == (
        "Sun, 01 Mar 2026 12:05:09 +0000"
    )
    assert format_date(datetime(2026, 3, 1, 12, 5, 9)) == "Sun, 01 Mar 2026 12:05:09 -0000"


def test_same_message_renders_same_message_id_and_date_every_time() -> None:
    msg = make(text="x")
    first, second = parse(msg.to_bytes()), parse(msg.to_bytes())
    assert first["Message-ID"] == second["Message-ID"] == msg.message_id
    assert first["Date"] == second["Date"]


def test_the_from_line_follows_the_sender_whatever_was_rendered_before() -> None:
    """The From line is reused by sender identity; equal, other and IDN senders still get theirs."""
    first = Message(sender="Shop <shop@example.com>", to="a@example.org")
    same = Message(sender=Address("Shop", "shop@example.com"), to="a@example.org")
    other = Message(sender="Other <other@example.net>", to="a@example.org")
    idn = Message(sender="shop@例え.jp", to="a@example.org")
    for _ in range(2):
        assert first.to_bytes().startswith(b"From: Shop <shop@example.com>\r\n")
        assert same.to_bytes().startswith(b"From: Shop <shop@example.com>\r\n")
        assert other.to_bytes().startswith(b"From: Other <other@example.net>\r\n")
        assert idn.to_bytes().startswith(b"From: shop@xn--r8jz45g.jp\r\n")
        assert idn.to_bytes(smtputf8=True).startswith("From: shop@例え.jp\r\n".encode())
        assert idn.to_bytes().startswith(b"From: shop@xn--r8jz45g.jp\r\n")
