"""DSN values and their encodings (RFC 3461 xtext, RFC 6533 utf-8-addr-xtext), without I/O."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import DSN, ConfigError, Mailer, Message, MessageError
from asyncmail.message._dsn import (
    orcpt,
    utf8_addr_xtext,
    utf8_addr_xtext_decode,
    xtext,
    xtext_decode,
)
from asyncmail.message._envelope import envelope_of

#: RFC 3461 section 4: xchar (printable ASCII but "+" and "=") or "+" and two upper hex digits.
XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
#: RFC 6533 section 3: QCHAR or "\x{HEXPOINT}".
UTF8_ADDR_XTEXT = re.compile(r"(?:[!-*,-<>-\[\]-~]|\\x\{[0-9A-F]{2,6}\})*")

text = st.text(st.characters(codec="utf-8"), max_size=60)


@given(text)
def test_xtext_decodes_back_to_the_text(value: str) -> None:
    assert xtext_decode(xtext(value)) == value


@given(text)
def test_xtext_is_printable_ascii_without_spaces(value: str) -> None:
    encoded = xtext(value)
    assert XTEXT.fullmatch(encoded)
    assert encoded.isascii() and " " not in encoded


@given(text)
def test_utf8_addr_xtext_decodes_back_and_is_also_valid_xtext(value: str) -> None:
    encoded = utf8_addr_xtext(value)
    assert utf8_addr_xtext_decode(encoded) == value
    assert UTF8_ADDR_XTEXT.fullmatch(encoded)
    assert XTEXT.fullmatch(encoded)  # so it can stand in ORCPT as it is


def test_xtext_encodes_plus_equals_space_and_non_ascii() -> None:
    assert xtext("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext("é") == "+C3+A9"
    assert xtext("plain@example.com") == "plain@example.com"


def test_utf8_addr_xtext_escapes_code_points_not_octets() -> None:
    assert utf8_addr_xtext("josé@bücher.de") == "jos\\x{E9}@b\\x{FC}cher.de"
    assert utf8_addr_xtext("用户@例え.jp") == "\\x{7528}\\x{6237}@\\x{4F8B}\\x{3048}.jp"
    assert utf8_addr_xtext("a\\b+c") == "a\\x{5C}b\\x{2B}c"


def test_orcpt_is_rfc822_for_ascii_and_utf8_for_a_unicode_address() -> None:
    assert orcpt("a+b=c@example.com") == "rfc822;a+2Bb+3Dc@example.com"
    assert orcpt("josé@example.com") == "utf-8;jos\\x{E9}@example.com"


def test_orcpt_is_left_out_when_it_would_exceed_500_characters() -> None:
    assert orcpt("+" * 64 + "@" + "a" * 60 + ".com") is not None
    assert orcpt('"' + "+" * 62 + '"@' + ("a" * 63 + ".") * 3 + "com") is not None
    assert orcpt("é" * 50 + "@" + ("a" * 63 + ".") * 3 + "com") is None


def test_dsn_builds_the_parameters_once() -> None:
    dsn = DSN(notify=("delay", "failure"), ret="headers", envid="campaign 7+x")
    assert dsn.notify == ("failure", "delay")
    assert dsn.mail_params == " RET=HDRS ENVID=campaign+207+2Bx"
    assert dsn.notify_param == " NOTIFY=FAILURE,DELAY"
    assert DSN().mail_params == ""
    assert DSN().notify_param == " NOTIFY=FAILURE"
    assert DSN(notify="never").notify == ("never",)
    assert DSN(notify="SUCCESS", ret="full").mail_params == " RET=FULL"


def test_dsns_compare_by_what_they_ask() -> None:
    assert DSN(notify=["delay", "failure"]) == DSN(notify=("failure", "delay"))
    assert "mail_params" not in repr(DSN())


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"notify": ("never", "failure")}, "'never' cannot be combined"),
        ({"notify": ()}, "at least one"),
        ({"notify": "bounce"}, "unknown event"),
        ({"notify": 3}, "notify must be"),
        ({"ret": "hdrs"}, "ret must be"),
        ({"envid": ""}, "non-empty"),
        ({"envid": "x" * 101}, "101 characters"),
        ({"envid": "+" * 34}, "102 characters"),
        ({"envid": "id\r\nRCPT TO:<x@y>"}, "printable US-ASCII"),
        ({"envid": "ünicode"}, "printable US-ASCII"),
        ({"required": "yes"}, "required must be"),
    ],
)
def test_invalid_dsn_options_raise_config_error(options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        DSN(**options)  # type: ignore[arg-type]


def test_an_envid_of_100_characters_is_accepted() -> None:
    assert DSN(envid="x" * 100).mail_params == " ENVID=" + "x" * 100


def test_message_takes_a_dsn_and_the_envelope_carries_it() -> None:
    dsn = DSN(ret="headers")
    msg = Message(sender="a@example.com", to="b@example.org", dsn=dsn)
    assert msg.dsn is dsn
    assert envelope_of(msg).dsn is dsn
    assert envelope_of(Message(sender="a@example.com", to="b@example.org")).dsn is None


def test_message_refuses_a_dsn_that_is_not_a_dsn() -> None:
    with pytest.raises(MessageError, match="dsn: expected a DSN"):
        Message(sender="a@example.com", to="b@example.org", dsn="failure")  # type: ignore[arg-type]


def test_mailer_refuses_a_dsn_that_is_not_a_dsn() -> None:
    with pytest.raises(ConfigError, match="dsn must be a DSN"):
        Mailer("smtp://127.0.0.1:25?tls=none", dsn={"notify": "never"})  # type: ignore[arg-type]
    assert Mailer("smtp://127.0.0.1:25?tls=none", dsn=DSN()).dsn == DSN()
