"""Reading bounces: RFC 3464 reports, RFC 5965 complaints, providers' text, and garbage."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncmail import Bounce, BouncedRecipient, MessageError
from asyncmail.bounces import parse
from asyncmail.bounces._text import infer_status, xtext_decode

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
VERP = "bounces+{local}={domain}@example.com"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parsed(name: str, verp: str | None = None) -> Bounce:
    bounce = parse(fixture(name), verp=verp)
    assert bounce is not None, name
    return bounce


# name -> kind, message id, [(recipient, action, status, hard)]
EXPECTED = {
    "postfix.eml": (
        "dsn",
        "<order-42.shipped@example.com>",
        [
            ("bob+news@example.org", "failed", "5.1.1", True),
            ("carol@example.org", "failed", "5.2.2", False),
        ],
    ),
    "postfix_delayed.eml": (
        "dsn",
        "<invoice-7@example.com>",
        [("dave@example.net", "delayed", "4.4.1", False)],
    ),
    "gmail.eml": (
        "dsn",
        "<welcome-erin@example.com>",
        [("erin@example.org", "failed", "5.1.1", True)],
    ),
    "outlook_dsn.eml": (
        "dsn",
        "<reset-frank@example.com>",
        [("frank@example.org", "failed", "5.1.10", True)],
    ),
    "ses.eml": (
        "dsn",
        "<news-grace@example.com>",
        [("grace@example.net", "failed", "5.7.1", False)],
    ),
    "qmail.eml": (
        "text",
        "<sale-1@example.com>",
        [
            ("heidi@example.net", "failed", "5.1.1", True),
            ("ivan@example.net", "failed", "5.2.2", False),
        ],
    ),
    "exim.eml": (
        "text",
        "<receipt-judy@example.com>",
        [("judy@example.org", "failed", "5.1.1", True)],
    ),
    "yahoo.eml": (
        "text",
        "<coupon-kim@example.com>",
        [("kim@example.net", "failed", "5.1.1", True)],
    ),
    "exchange_text.eml": (
        "text",
        "<notes-leo@example.com>",
        [("leo@corp.example.net", "failed", "5.1.1", True)],
    ),
    "qq_cn.eml": ("text", "<order-mei@example.com>", [("mei@example.cn", "failed", "5.1.1", True)]),
    "arf.eml": ("arf", "<news-nina@example.com>", [("nina@example.net", "complained", "", False)]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_format_gives_its_recipients_actions_and_statuses(name: str) -> None:
    kind, message_id, recipients = EXPECTED[name]
    bounce = parsed(name)
    assert bounce.kind == kind
    assert bounce.original_message_id == message_id
    got = [(r.original_recipient, r.action, r.status, r.hard) for r in bounce.recipients]
    assert got == recipients


def test_every_fixture_is_checked() -> None:
    names = {path.name for path in FIXTURES.glob("*.eml")}
    assert names == set(EXPECTED) | {"autoreply.eml", "normal.eml"}


@pytest.mark.parametrize("name", ["autoreply.eml", "normal.eml"])
def test_auto_replies_and_ordinary_mail_are_not_bounces(name: str) -> None:
    assert parse(fixture(name)) is None
    assert parse(fixture(name), verp=VERP) is None


def test_dsn_fields_are_decoded_and_unfolded() -> None:
    bounce = parsed("postfix.eml")
    bob = bounce.recipients[0]
    assert bounce.reporting_mta == "mx.example.com"
    assert bounce.envelope_id == "order+42-shipped"  # xtext "+2B" is "+"
    assert bob.original_recipient == "bob+news@example.org"  # from rfc822;bob+2Bnews@...
    assert bob.final_recipient == "bob+news@example.org"
    assert bob.remote_mta == "mx.example.org"
    assert bob.diagnostic == (
        "550 5.1.1 <bob+news@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )


def test_remote_mta_is_the_host_name_without_its_comment() -> None:
    assert parsed("gmail.eml").recipients[0].remote_mta == "gmail-smtp-in.l.google.example"


def test_text_bounces_name_their_reporting_host_when_they_say_it() -> None:
    assert parsed("exchange_text.eml").reporting_mta == "EXCH01.corp.example.net"
    assert parsed("exim.eml").recipients[0].remote_mta == "mx.example.org"


def test_verp_recipient_is_decoded_from_the_address_the_bounce_came_back_to() -> None:
    for name, recipient in [
        ("gmail.eml", "erin@example.org"),  # Delivered-To / To
        ("exim.eml", "judy@example.org"),  # Envelope-to
        ("ses.eml", "grace@example.net"),  # To
        ("arf.eml", "nina@example.net"),  # the returned message's Return-Path
    ]:
        assert parsed(name, VERP).recipients[0].verp_recipient == recipient, name
        assert parsed(name).recipients[0].verp_recipient is None


def test_verp_goes_only_on_the_matching_recipient_of_a_report_about_several() -> None:
    raw = fixture("postfix.eml").replace(
        b"To: shop@example.com", b"To: bounces+carol=example.org@example.com", 1
    )
    bob, carol = parsed_bytes(raw, VERP).recipients
    assert bob.verp_recipient is None
    assert carol.verp_recipient == "carol@example.org"


def parsed_bytes(raw: bytes, verp: str | None = None) -> Bounce:
    bounce = parse(raw, verp=verp)
    assert bounce is not None
    return bounce


def test_a_bounce_that_names_no_recipient_is_still_read_by_its_verp_address() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.example.net\r\n"
        b"To: bounces+zoe=example.org@example.com\r\n"
        b"Subject: Returned mail\r\n\r\n"
        b"Your message could not be delivered. We are sorry.\r\n"
    )
    assert parse(raw) is None
    (recipient,) = parsed_bytes(raw, VERP).recipients
    assert recipient.original_recipient == "zoe@example.org"
    assert recipient.verp_recipient == "zoe@example.org"
    assert recipient.action == "failed"
    assert not recipient.hard  # nothing says why


def test_an_out_of_office_reply_to_a_verp_address_is_not_a_bounce() -> None:
    raw = fixture("autoreply.eml")
    assert b"bounces+olga=example.org@example.com" in raw
    assert parse(raw, verp=VERP) is None


def test_a_forwarded_bounce_attached_to_a_letter_is_not_a_bounce() -> None:
    raw = (
        b"From: Pat <pat@example.org>\r\nTo: shop@example.com\r\nSubject: look at this\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nWhat does this mean?\r\n"
        b"--b\r\nContent-Type: message/rfc822\r\n\r\n" + fixture("postfix.eml") + b"\r\n--b--\r\n"
    )
    assert parse(raw) is None


def test_a_stdlib_message_is_read_like_its_bytes() -> None:
    message = email.message_from_bytes(fixture("gmail.eml"))
    assert parse(message) == parse(fixture("gmail.eml"))


def test_input_that_is_not_bytes_or_a_message_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"bytes or an email\.message\.Message"):
        parse(fixture("gmail.eml").decode())  # type: ignore[arg-type]


def test_a_verp_that_is_not_a_template_is_a_message_error() -> None:
    with pytest.raises(MessageError, match="verp"):
        parse(fixture("gmail.eml"), verp="bounces@example.com")


def test_results_are_frozen_values() -> None:
    recipient = parsed("gmail.eml").recipients[0]
    with pytest.raises(AttributeError):
        recipient.action = "delivered"  # type: ignore[misc]
    assert recipient.address == "erin@example.org"


def dsn(recipient_block: str, *, part_type: str = "message/delivery-status") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: shop@example.com\r\nSubject: report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
        f"--r\r\nContent-Type: {part_type}\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"{recipient_block}\r\n"
        "--r--\r\n"
    ).encode()


def test_a_class_only_status_is_refined_from_the_diagnostic() -> None:
    raw = dsn(
        "Final-Recipient: rfc822; amy@example.net\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        "Diagnostic-Code: smtp; 550 Requested action not taken: mailbox unavailable\r\n"
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.status, recipient.hard) == ("5.1.1", True)


def test_a_missing_action_is_implied_by_the_status() -> None:
    raw = dsn("Final-Recipient: rfc822; amy@example.net\r\nStatus: 4.2.2\r\n")
    assert parsed_bytes(raw).recipients[0].action == "delayed"


def test_a_success_notification_is_a_dsn_with_delivered_recipients() -> None:
    raw = dsn(
        "Final-Recipient: rfc822; amy@example.net\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        "Diagnostic-Code: smtp; 250 2.0.0 OK\r\n"
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.action, recipient.status, recipient.hard) == ("delivered", "2.0.0", False)


def test_global_delivery_status_of_smtputf8_mail_is_read() -> None:
    raw = dsn(
        "Final-Recipient: utf-8; j\\x{00FC}rgen@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n",
        part_type="message/global-delivery-status",
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert recipient.original_recipient == "jürgen@example.net"


def test_a_report_without_recipient_blocks_falls_back_to_its_text() -> None:
    raw = dsn("X-Nothing: here\r\n").replace(
        b"A report.", b"<amy@example.net>:\r\n550 5.1.1 no such user"
    )
    bounce = parsed_bytes(raw)
    assert bounce.kind == "text"
    assert bounce.recipients[0].status == "5.1.1"


def test_exim_deferred_addresses_are_delayed() -> None:
    raw = (
        fixture("exim.eml")
        .replace(b"The following address(es) failed:", b"The following address(es) deferred:")
        .replace(b"550 5.1.1", b"451 4.3.0")
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.action, recipient.status, recipient.hard) == ("delayed", "4.3.0", False)


def test_a_not_spam_feedback_report_is_not_a_complaint() -> None:
    raw = fixture("arf.eml").replace(b"Feedback-Type: abuse", b"Feedback-Type: not-spam")
    assert parse(raw) is None


def test_a_complaint_without_original_rcpt_to_names_the_returned_messages_recipient() -> None:
    raw = fixture("arf.eml").replace(b"Original-Rcpt-To: <nina@example.net>\n", b"")
    assert b"Original-Rcpt-To" not in raw
    assert parsed_bytes(raw).recipients[0].original_recipient == "nina@example.net"


def test_a_huge_returned_attachment_does_not_stop_the_reading() -> None:
    big = b"A" * (8 * 1024 * 1024)
    raw = fixture("postfix.eml").replace(b"Your order 42 is on its way.", big)
    bounce = parsed_bytes(raw)
    assert bounce.original_message_id == "<order-42.shipped@example.com>"
    assert len(bounce.recipients) == 2


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "hard"),
    [
        ("failed", "5.1.1", "", True),
        ("failed", "5.1.2", "", True),
        ("failed", "5.1.10", "", True),
        ("failed", "5.2.1", "account disabled", True),
        ("failed", "5.0.0", "550 user unknown", True),
        ("failed", "5.0.0", "550 rejected", False),
        ("failed", "5.2.2", "mailbox full", False),
        ("failed", "5.2.3", "", False),
        ("failed", "5.4.4", "", False),
        ("failed", "5.7.1", "550 5.7.1 user unknown? no: spam", False),
        ("delayed", "4.1.1", "", False),
        ("delayed", "5.1.1", "", False),
        ("complained", "", "abuse", False),
    ],
)
def test_hard_means_the_address_is_dead(
    action: str, status: str, diagnostic: str, hard: bool
) -> None:
    recipient = BouncedRecipient(
        original_recipient="a@example.net",
        final_recipient="a@example.net",
        action=action,
        status=status,
        diagnostic=diagnostic,
    )
    assert recipient.hard is hard


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("550 5.7.1 blocked", "5.7.1"),
        ("Sorry, no mailbox here by that name. (#5.1.1)", "5.1.1"),
        ("554 delivery error: dd This user doesn't have a yahoo.com account", "5.1.1"),
        ("552 mailbox is full", "5.2.2"),
        ("451 try again later", "4.0.0"),
        ("收件人不存在", "5.1.1"),
        ("connection refused", "5.0.0"),
        ("", ""),
    ],
)
def test_status_is_implied_by_the_reply_text(text: str, status: str) -> None:
    assert infer_status(text) == status


@pytest.mark.parametrize(
    ("xtext", "plain"),
    [
        ("bob+2Bnews@example.org", "bob+news@example.org"),
        ("a+3Db@example.org", "a=b@example.org"),
        ("j+C3+BCrgen@example.org", "jürgen@example.org"),
        ("bob+AB@example.org", "bob+AB@example.org"),  # not UTF-8 once decoded: as given
        ("plain@example.org", "plain@example.org"),
    ],
)
def test_xtext_is_decoded_only_when_it_decodes(xtext: str, plain: str) -> None:
    assert xtext_decode(xtext) == plain


def _check(result: Bounce | None) -> None:
    assert result is None or isinstance(result, Bounce)
    if result is not None:
        assert result.recipients
        for recipient in result.recipients:
            assert isinstance(recipient.hard, bool)


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_random_bytes_give_a_bounce_or_none(data: bytes) -> None:
    _check(parse(data, verp=VERP))


FIXTURE_BYTES = [fixture(path.name) for path in sorted(FIXTURES.glob("*.eml"))]


@given(
    st.sampled_from(FIXTURE_BYTES),
    st.lists(
        st.tuples(
            st.integers(min_value=0), st.integers(min_value=0, max_value=64), st.binary(max_size=16)
        ),
        max_size=8,
    ),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_fixtures_give_a_bounce_or_none(
    raw: bytes, edits: list[tuple[int, int, bytes]]
) -> None:
    data = bytearray(raw)
    for position, length, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + length] = replacement
    _check(parse(bytes(data), verp=VERP))


@given(st.text(max_size=2000))
@settings(max_examples=200, deadline=None)
def test_text_in_a_bounce_shaped_message_gives_a_bounce_or_none(body: str) -> None:
    message = Message()
    message["From"] = "MAILER-DAEMON@mx.example.net"
    message["Subject"] = "Undelivered Mail Returned to Sender"
    message.set_payload(body, "utf-8")
    _check(parse(message))
    _check(parse(message.as_bytes()))


def test_a_broken_encoded_word_in_the_subject_is_read_as_it_stands() -> None:
    raw = fixture("qmail.eml").replace(b"Subject: failure notice", b"Subject: =?utf-8?b?!x?=")
    assert parsed_bytes(raw).recipients[0].original_recipient == "heidi@example.net"


def test_an_html_only_bounce_is_read_from_its_text() -> None:
    raw = (
        b"From: Mail Delivery System <mailer-daemon@mx.example.net>\r\n"
        b"Subject: Undeliverable mail\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<html><body><p>Delivery failed.</p><p>&lt;amy@example.net&gt;: 550 5.1.1"
        b"<br>no such user</p></body></html>\r\n"
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.original_recipient, recipient.status) == ("amy@example.net", "5.1.1")


def test_an_unknown_system_saying_address_colon_reply_is_read() -> None:
    raw = (
        b"From: postmaster@mx.example.net\r\nSubject: Returned mail: see transcript\r\n\r\n"
        b"----- The following addresses had permanent fatal errors -----\r\n"
        b"amy@example.net: 550 Requested action not taken: mailbox unavailable\r\n"
        b"amy@example.net: 550 Requested action not taken: mailbox unavailable\r\n"
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.original_recipient, recipient.hard) == ("amy@example.net", True)


def test_a_complaint_returning_only_headers_names_their_recipient() -> None:
    raw = (
        fixture("arf.eml")
        .replace(b"Original-Rcpt-To: <nina@example.net>\n", b"")
        .replace(b"Content-Type: message/rfc822", b"Content-Type: text/rfc822-headers")
    )
    bounce = parsed_bytes(raw)
    assert bounce.recipients[0].original_recipient == "nina@example.net"
    assert bounce.original_message_id == "<news-nina@example.com>"


def test_a_part_with_an_impossible_charset_name_is_skipped_not_raised() -> None:
    raw = (
        fixture("postfix.eml")
        .replace(
            b"Content-Type: text/plain; charset=us-ascii",
            b'Content-Type: text/plain; charset="us\x00ascii"',
        )
        .replace(b"I'm sorry", b"I\xe2\x80\x99m sorry")
    )
    message = email.message_from_bytes(raw)
    human = message.get_payload()[0]  # type: ignore[index]
    assert isinstance(human, Message)
    with pytest.raises(ValueError, match="null"):
        human.get_payload()  # what the stdlib does with it
    assert len(parsed_bytes(raw, VERP).recipients) == 2


def test_a_redacted_complaint_is_still_a_complaint_with_an_empty_recipient() -> None:
    raw = (
        fixture("arf.eml")
        .replace(b"Original-Rcpt-To: <nina@example.net>\n", b"")
        .replace(b"To: nina@example.net", b"To: redacted@isp.example, other@isp.example")
    )
    (recipient,) = parsed_bytes(raw).recipients
    assert (recipient.action, recipient.original_recipient) == ("complained", "")
    assert parsed_bytes(raw, VERP).recipients[0].original_recipient == "nina@example.net"


def test_a_report_naming_thousands_of_recipients_gives_the_first_thousand() -> None:
    paragraphs = b"".join(b"<u%d@example.net>:\r\nno mailbox here\r\n\r\n" % i for i in range(3000))
    raw = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\n" + paragraphs
    recipients = parsed_bytes(raw).recipients
    assert len(recipients) == 1000
    assert recipients[-1].original_recipient == "u999@example.net"
