"""SRS: forwarded senders rewritten to our domain, and reversed for bounces.

Held to libsrs2's published vector (PostSRSd's tests/unit/test_srs2.c) and to srslib, an
independent implementation of the same scheme.
"""

from __future__ import annotations

import pytest
import srslib
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import SRS, InvalidToken, MessageError

# libsrs2's vector: secret "tops3cr3t", 2020-01-01 00:01:00 UTC, forwarder example.com
LIBSRS2_TIME = 1577836860
LIBSRS2 = ("test@otherdomain.com", "SRS0=vmyz=2W=otherdomain.com=test@example.com")
DAY = 86400


def _srslib(secret: str, now: float) -> srslib.SRS:
    other = srslib.SRS(secret)
    other._time_fn = lambda: now  # noqa: SLF001 (srslib's way to fix its clock)
    return other


def test_the_published_libsrs2_vector_forwards_and_reverses() -> None:
    srs = SRS("tops3cr3t", "example.com")
    sender, rewritten = LIBSRS2
    assert srs.forward(sender, now=LIBSRS2_TIME) == rewritten
    assert srs.reverse(rewritten, now=LIBSRS2_TIME) == sender


@pytest.mark.parametrize(
    "sender",
    [
        "alice@a.example",
        "Alice.Smith+tag@Sub.A.Example",
        "SRS0=vmyz=2W=otherdomain.com=test@first.example",  # becomes SRS1
        "SRS1=JO9m=first.example==vmyz=2W=otherdomain.com=test@second.example",  # stays SRS1
    ],
)
@pytest.mark.parametrize("now", [LIBSRS2_TIME, 1_800_000_000.0])
def test_forward_agrees_with_srslib_and_each_reverses_the_others(sender: str, now: float) -> None:
    ours = SRS("a secret", "forwarder.example")
    theirs = _srslib("a secret", now)
    rewritten = ours.forward(sender, now=now)
    assert rewritten == theirs.forward(sender, "forwarder.example")
    assert ours.reverse(rewritten, now=now) == theirs.reverse(rewritten)


def test_a_bounce_to_an_srs1_address_goes_back_to_the_first_forwarder() -> None:
    first = SRS("first secret", "first.example")
    second = SRS("second secret", "second.example")
    hop1 = first.forward("alice@a.example", now=LIBSRS2_TIME)
    hop2 = second.forward(hop1, now=LIBSRS2_TIME)
    assert hop2.startswith("SRS1=") and hop2.endswith("@second.example")
    assert second.reverse(hop2, now=LIBSRS2_TIME) == hop1
    assert first.reverse(hop1, now=LIBSRS2_TIME) == "alice@a.example"


def test_the_null_sender_and_our_own_domain_are_not_rewritten() -> None:
    srs = SRS("s", "forwarder.example")
    assert srs.forward("") == ""
    assert srs.forward("desk@Forwarder.Example") == "desk@Forwarder.Example"


def test_a_reversed_address_is_checked_without_regard_to_case() -> None:
    """Some servers lower-case the local part of a bounce's recipient (libsrs2 allows it)."""
    srs = SRS("tops3cr3t", "example.com")
    assert srs.reverse(LIBSRS2[1].lower(), now=LIBSRS2_TIME) == "test@otherdomain.com"


@pytest.mark.parametrize(
    "address",
    [
        "SRS0=xxxx=2W=otherdomain.com=test@example.com",  # another hash
        "SRS0=vmyz=2W=otherdomain.com=eve@example.com",  # another sender, same hash
        "SRS0=vmyz=2X=otherdomain.com=test@example.com",  # another day, same hash
        "SRS0=vm=2W=otherdomain.com=test@example.com",  # a hash too short to mean anything
    ],
)
def test_a_forged_or_damaged_address_is_refused(address: str) -> None:
    with pytest.raises(InvalidToken, match="not made with our secret"):
        SRS("tops3cr3t", "example.com").reverse(address, now=LIBSRS2_TIME)


def test_a_previous_secret_still_reverses_and_another_does_not() -> None:
    rotated = SRS("new secret", "example.com", previous_secrets=["tops3cr3t"])
    assert rotated.reverse(LIBSRS2[1], now=LIBSRS2_TIME) == "test@otherdomain.com"
    with pytest.raises(InvalidToken):
        SRS("new secret", "example.com").reverse(LIBSRS2[1], now=LIBSRS2_TIME)


def test_an_address_older_than_max_age_days_has_expired() -> None:
    srs = SRS("tops3cr3t", "example.com", max_age_days=21)
    assert srs.reverse(LIBSRS2[1], now=LIBSRS2_TIME + 21 * DAY) == "test@otherdomain.com"
    with pytest.raises(InvalidToken, match="expired"):
        srs.reverse(LIBSRS2[1], now=LIBSRS2_TIME + 22 * DAY)


@pytest.mark.parametrize("address", ["alice@example.com", "SRS0=broken@example.com", "x"])
def test_an_address_that_is_not_srs_is_a_message_error(address: str) -> None:
    with pytest.raises(MessageError, match="not an SRS address"):
        SRS("s", "example.com").reverse(address)
    assert not SRS.is_srs(address)


def test_a_rewrite_over_64_octets_before_the_at_is_refused() -> None:
    with pytest.raises(MessageError, match="over SMTP's 64"):
        SRS("s", "f.example").forward(f"{'a' * 40}@{'b' * 30}.example")


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"secret": "", "domain": "f.example"}, "non-empty"),
        ({"secret": "s", "domain": "a@f.example"}, "domain name"),
        ({"secret": "s", "domain": "f.example", "max_age_days": 0}, "max_age_days"),
        ({"secret": "s", "domain": "f.example", "hash_length": 2}, "hash_length"),
    ],
)
def test_bad_settings_are_refused(arguments: dict[str, object], words: str) -> None:
    with pytest.raises(MessageError, match=words):
        SRS(**arguments)  # type: ignore[arg-type]


def test_the_secret_is_never_in_the_repr() -> None:
    text = repr(SRS("hunter2-secret", "f.example", previous_secrets=["older-secret"]))
    assert "hunter2" not in text and "older" not in text and "f.example" in text


_local = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9._+-]{0,20}", fullmatch=True).filter(
    lambda s: ".." not in s and not s.endswith(".")
)
_domain = st.from_regex(r"[a-z]([a-z0-9-]{0,9}[a-z0-9])?\.(org|example|cn)", fullmatch=True)


@given(local=_local, domain=_domain, day=st.integers(0, 40_000))
def test_any_sender_comes_back_from_a_bounce(local: str, domain: str, day: int) -> None:
    srs = SRS("k", "fwd.example")
    now = day * DAY + 3600.0
    sender = f"{local}@{domain}"
    assert srs.reverse(srs.forward(sender, now=now), now=now + 5 * DAY) == sender
