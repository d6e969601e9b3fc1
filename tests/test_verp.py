"""VERP templates: validation, expansion per recipient, and decoding back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import MessageError
from asyncmail.message._verp import check_template, decode, expand, is_template

TEMPLATE = "bounces+{local}={domain}@example.com"


def test_expand_puts_the_recipient_into_the_local_part() -> None:
    assert expand(TEMPLATE, "alice@example.org") == "bounces+alice=example.org@example.com"


def test_decode_gives_back_the_recipient() -> None:
    assert decode(TEMPLATE, "bounces+alice=example.org@example.com") == "alice@example.org"


def test_decode_ignores_case_in_the_fixed_parts() -> None:
    assert decode(TEMPLATE, "Bounces+alice=example.org@EXAMPLE.com") == "alice@example.org"


def test_decode_of_an_address_that_does_not_fit_is_none() -> None:
    assert decode(TEMPLATE, "postmaster@example.com") is None
    assert decode(TEMPLATE, "bounces+alice@example.com") is None


def test_a_local_part_with_the_separator_still_decodes() -> None:
    address = expand(TEMPLATE, "a=b+c@mail.example.org")
    assert decode(TEMPLATE, address) == "a=b+c@mail.example.org"


def test_a_unicode_recipient_round_trips() -> None:
    address = expand(TEMPLATE, "用户@例え.jp")
    assert decode(TEMPLATE, address) == "用户@例え.jp"


def test_is_template_sees_either_placeholder() -> None:
    assert is_template(TEMPLATE)
    assert is_template("b+{local}@example.com")
    assert not is_template("bounces@example.com")


@pytest.mark.parametrize(
    "template",
    [
        "bounces+{local}@example.com",  # no {domain}
        "bounces+{domain}@example.com",  # no {local}
        "b+{local}={domain}={local}@example.com",  # twice
        "bounces@{local}.{domain}",  # in the domain
        "bounces {local}={domain}@example.com",  # not an address
        "{local}={domain}",  # no @
    ],
)
def test_a_template_without_both_placeholders_in_the_local_part_is_refused(
    template: str,
) -> None:
    with pytest.raises(MessageError, match="return_path"):
        check_template(template)


def test_a_quoted_local_part_cannot_be_expanded() -> None:
    with pytest.raises(MessageError, match="quoted"):
        expand(TEMPLATE, '"a.b"@example.org')


_atext = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-")
_local = st.lists(st.text(_atext, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join)
_label = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789"), min_size=1, max_size=10)
_domain = st.lists(_label, min_size=1, max_size=3).map(".".join)


@given(local=_local, domain=_domain)
def test_decode_inverts_expand(local: str, domain: str) -> None:
    recipient = f"{local}@{domain}"
    assert decode(TEMPLATE, expand(TEMPLATE, recipient)) == recipient
