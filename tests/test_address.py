"""Addresses: parsing the forms users write, validating addr-specs, and their wire forms."""

from __future__ import annotations

import pytest

from asyncmail import Address, MessageError
from asyncmail.message._address import (
    _MAX_KNOWN_DOMAINS,
    _ascii_domains,
    ascii_domain,
    format_address,
    parse_address,
    parse_addresses,
    split_address_list,
    validate_addr_spec,
    wire_addr_spec,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bob@example.org", Address("", "bob@example.org")),
        ("  bob@example.org ", Address("", "bob@example.org")),
        ("张三 <zhang@example.net>", Address("张三", "zhang@example.net")),
        ('"Doe, John" <john@example.com>', Address("Doe, John", "john@example.com")),
        (r'"A \"quoted\" name" <a@example.com>', Address('A "quoted" name', "a@example.com")),
        ("<only@example.com>", Address("", "only@example.com")),
        (("Shop", "shop@example.com"), Address("Shop", "shop@example.com")),
        (Address("X", "x@example.com"), Address("X", "x@example.com")),
    ],
)
def test_every_address_form_parses_to_name_and_addr_spec(value: object, expected: Address) -> None:
    assert parse_address(value, "to") == expected


def test_display_name_is_stripped_and_whitespace_runs_collapse() -> None:
    assert parse_address((" Ann \t  Lee ", "a@example.com"), "to").name == "Ann Lee"


@pytest.mark.parametrize(
    "pair",
    [
        ("a@example.org", "b@example.org"),
        ("a@example.org", "a@example.org"),
        (" a@example.org ", "b@example.org"),
        ("用户@例え.jp", "b@example.org"),
    ],
)
def test_a_pair_whose_name_is_an_address_is_refused_as_ambiguous(pair: tuple[str, str]) -> None:
    """("a@…", "b@…") reads as two recipients to a person and as one named one to the
    parser: silently dropping a recipient is the worst outcome, so it is an error."""
    with pytest.raises(MessageError, match="ambiguous") as caught:
        parse_addresses(pair, "to")
    assert "pass a list" in str(caught.value)
    assert "Address(name, address)" in str(caught.value)
    with pytest.raises(MessageError, match="ambiguous"):
        parse_addresses([pair], "cc")


@pytest.mark.parametrize("name", ["Bob", "Bob at example.org", "@bob", "张三", "bob@"])
def test_a_pair_whose_name_is_not_an_address_stays_one_named_recipient(name: str) -> None:
    assert parse_addresses((name, "b@example.org"), "to") == (Address(name, "b@example.org"),)


def test_an_address_named_with_itself_is_written_with_address() -> None:
    named = Address("bob@example.org", "bob@example.org")
    assert parse_addresses(named, "to") == (named,)
    assert parse_addresses([named, "c@example.org"], "to")[0] == named


def test_a_list_keeps_order_and_a_tuple_is_one_pair() -> None:
    assert [a.addr for a in parse_addresses(["a@x.com", ("B", "b@x.com")], "to")] == [
        "a@x.com",
        "b@x.com",
    ]
    assert parse_addresses(("B", "b@x.com"), "to") == (Address("B", "b@x.com"),)


@pytest.mark.parametrize(
    "addr",
    [
        "bob@",
        "@example.com",
        "bob",
        "a b@example.com",
        "a@exa mple.com",
        "a@example..com",
        "a@-example.com",
        "a@example.com.",
        "a@example.com;x=1",
        "a@example.com>",
        "<a@example.com",
        "a\x01@example.com",
        "a\u3000b@example.com",
        ".a@example.com",
        "a..b@example.com",
        '"a b"@example.com',
        "a@[300.1.1.1]",
        "a@" + "x" * 64 + ".com",
        "x" * 65 + "@example.com",
    ],
)
def test_invalid_addr_specs_raise_message_error_naming_field_and_address(addr: str) -> None:
    with pytest.raises(MessageError, match=r"^to\[1\]: invalid"):
        validate_addr_spec(addr, "to[1]")


@pytest.mark.parametrize(
    "addr",
    [
        "a.b+tag@mail.example.com",
        '"john..doe"@example.com',
        "user@例え.jp",
        "用户@例子.广告",
        "a@[192.0.2.1]",
        "a@[IPv6:2001:db8::1]",
        "postmaster@localhost",
    ],
)
def test_valid_addr_specs_are_accepted_unchanged(addr: str) -> None:
    assert validate_addr_spec(addr, "to") == addr


def test_error_message_names_the_list_position() -> None:
    with pytest.raises(MessageError, match=r"^to\[1\]: invalid address 'bob@'"):
        parse_addresses(["ok@example.com", "bob@"], "to")


def test_idn_domain_is_idna_encoded_unless_smtputf8() -> None:
    assert ascii_domain("例え.jp") == "xn--r8jz45g.jp"
    assert wire_addr_spec("user@例え.jp", smtputf8=False) == "user@xn--r8jz45g.jp"
    assert wire_addr_spec("user@例え.jp", smtputf8=True) == "user@例え.jp"


def test_non_ascii_local_part_without_smtputf8_raises_naming_the_address() -> None:
    with pytest.raises(MessageError, match=r"用户@example.com"):
        wire_addr_spec("用户@example.com", smtputf8=False)


def test_display_names_with_specials_are_quoted_and_non_ascii_ones_encoded() -> None:
    assert format_address(Address("Doe, John", "j@x.com"), smtputf8=False) == (
        '"Doe, John" <j@x.com>'
    )
    assert format_address(Address('a"b\\c', "j@x.com"), smtputf8=False) == r'"a\"b\\c" <j@x.com>'
    assert format_address(Address("张三", "j@x.com"), smtputf8=False) == (
        "=?utf-8?b?5byg5LiJ?= <j@x.com>"
    )
    assert format_address(Address("Ann Lee", "j@x.com"), smtputf8=False) == "Ann Lee <j@x.com>"


def test_address_list_splits_only_on_commas_outside_quotes_and_brackets() -> None:
    assert split_address_list('"Doe, John" <j@x.com>, b@x.com') == [
        '"Doe, John" <j@x.com>',
        " b@x.com",
    ]


def test_a_parsed_address_equals_and_hashes_as_one_made_by_its_constructor() -> None:
    """The parser builds Address without __init__; it must be the same value."""
    parsed = parse_addresses("Bob <bob@example.org>", "to")[0]
    made = Address("Bob", "bob@example.org")
    assert parsed == made and hash(parsed) == hash(made) and type(parsed) is Address
    assert {parsed: 1}[made] == 1


@pytest.mark.parametrize(
    "addr",
    ["a..b@known.example", ".ab@known.example", "a b@known.example", "x" * 65 + "@known.example"],
)
def test_a_known_domain_never_lets_a_bad_local_part_through(addr: str) -> None:
    validate_addr_spec("ok@known.example", "to")  # the domain is now known
    with pytest.raises(MessageError, match=r"^to: invalid address"):
        validate_addr_spec(addr, "to")


@pytest.mark.parametrize("domain", ["-bad.example", "bad_.example", "[300.1.1.1]", "a" * 64 + ".x"])
def test_an_invalid_domain_is_refused_every_time_and_never_learned(domain: str) -> None:
    for _ in range(2):
        with pytest.raises(MessageError, match=r"^to: invalid address"):
            validate_addr_spec(f"user1@{domain}", "to")
    assert domain not in _ascii_domains


def test_the_known_domains_stay_bounded() -> None:
    for i in range(_MAX_KNOWN_DOMAINS + 10):
        assert validate_addr_spec(f"u{i}@d{i}.example", "to") == f"u{i}@d{i}.example"
    assert 0 < len(_ascii_domains) <= _MAX_KNOWN_DOMAINS


@pytest.mark.parametrize("addr", ["user١@example.com", "用户@example.com", "a@[192.0.2.1]"])
def test_unusual_but_valid_addresses_still_pass_beside_the_fast_path(addr: str) -> None:
    assert validate_addr_spec(addr, "to") == addr
