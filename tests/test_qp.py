"""The quoted-printable encoder, held to the stdlib decoders and to RFC 2045 section 6.7."""

from __future__ import annotations

import binascii
import email
import email.policy
import os
import quopri
import re
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncmail.message._qp import encode_qp
from asyncmail.message._render import crlf_lines

PROPERTY = settings(
    max_examples=int(os.environ.get("ASYNCMAIL_PROPERTY_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_ESCAPE_OR_SOFT_BREAK = re.compile(rb"=(?:[0-9A-F]{2}|\r\n)")

# Pieces that make the hard cases likely: escapes near a cut, white space at line ends,
# lone dots, CJK, long runs with no line end.
_PIECES = st.sampled_from(
    ["=", " ", "\t", ".", "\r\n", "\n", "\r", "a", "张三", "é", "\x00", "\x7f", "=" * 5, "x" * 70]
)
texts = st.one_of(
    st.text(),
    st.lists(_PIECES | st.text(max_size=5), max_size=80).map("".join),
    st.builds(
        lambda a, n, b: a + "x" * n + b,
        st.text(max_size=4),
        st.integers(60, 240),
        st.text(max_size=4),
    ),
)

# One long line (minified HTML, template output) with escapes, white space and dots put at
# any offset, so that escapes land on and around every cut of the 75-character grid.
_SPRINKLES = st.sampled_from(["=", "é", "张", "张三", " ", "\t", ".", "\x00", "==", "=" * 30])


def _sprinkle(length: int, inserts: list[tuple[int, str]], end: str) -> str:
    line = ["x"] * length
    for at, piece in inserts:
        line[at % length] = piece
    return "".join(line) + end


long_lines = st.builds(
    _sprinkle,
    st.integers(1, 1200),
    st.lists(st.tuples(st.integers(0, 10**6), _SPRINKLES), max_size=40),
    st.sampled_from(["", "\r\n", " ", "\t", " \r\n", "=", "张"]),
)
texts = st.one_of(texts, long_lines, st.lists(long_lines, max_size=4).map("\r\n".join))
octets = st.one_of(st.binary(), texts.map(lambda t: t.encode("utf-8")))


def assert_well_formed(encoded: bytes) -> None:
    """Printable ASCII in CRLF lines of at most 76, no trailing white space, whole escapes."""
    assert encoded.isascii()
    lines = encoded.split(b"\r\n")
    for line in lines:
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 76, line
        assert not line.endswith((b" ", b"\t")), line
        assert all(32 <= octet < 127 or octet == 9 for octet in line), line
    # Every "=" starts an escape of two upper-case hex digits or a soft line break.
    assert encoded.count(b"=") == len(_ESCAPE_OR_SOFT_BREAK.findall(encoded))
    assert lines[-1] == b"" or not lines[-1].endswith(b"=")


def assert_cut_late(encoded: bytes) -> None:
    """A soft break comes as late as it may: no more lines than folding needs."""
    assert b"=\r\n\r\n" not in encoded and not encoded.endswith(b"=\r\n")  # nothing left over
    for line, after in pairwise(encoded.split(b"\r\n")):
        if line.endswith(b"="):  # the last character of a line before a soft break
            assert len(line) >= 74, line  # an escape moves the cut at most 2 earlier
            assert len(line) - 1 + len(after) > 76, (line, after)  # one line would not do


@PROPERTY
@given(octets)
def test_any_octets_encode_well_formed_and_decode_back_exactly(data: bytes) -> None:
    encoded = encode_qp(data)
    assert_well_formed(encoded)
    assert_cut_late(encoded)
    assert binascii.a2b_qp(encoded) == data
    assert quopri.decodestring(encoded) == data


@PROPERTY
@given(texts)
def test_a_text_body_parses_back_through_the_email_package(text: str) -> None:
    body = crlf_lines(text.encode("utf-8"))
    encoded = encode_qp(body, crlf_only=True)
    assert_well_formed(encoded)
    raw = (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded
    )
    for policy in (email.policy.compat32, email.policy.default):
        parsed = email.message_from_bytes(raw, policy=policy)
        assert parsed.get_payload(decode=True) == body


@PROPERTY
@given(octets)
def test_the_crlf_only_shortcut_gives_the_same_octets(data: bytes) -> None:
    body = crlf_lines(data)
    assert encode_qp(body, crlf_only=True) == encode_qp(body)


@PROPERTY
@given(texts)
def test_it_means_what_binascii_means(text: str) -> None:
    """Same decoded content as ``b2a_qp(istext=True)`` on CRLF text (not the same octets)."""
    body = crlf_lines(text.encode("utf-8"))
    assert binascii.a2b_qp(encode_qp(body)) == binascii.a2b_qp(binascii.b2a_qp(body, istext=True))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a=b\r\n", b"a=3Db\r\n"),
        (b"end \r\ntab\t\r\n", b"end=20\r\ntab=09\r\n"),
        (b"last ", b"last=20"),
        (b".\r\n.\r\n.a\r\n", b"=2E\r\n=2E\r\n.a\r\n"),  # a lone dot as b2a_qp writes it
        (b"a\rb\nc", b"a=0Db=0Ac"),
        ("张".encode(), b"=E5=BC=A0"),
        (b"x" * 76 + b"\r\n", b"x" * 76 + b"\r\n"),
        (b"x" * 77 + b"\r\n", b"x" * 75 + b"=\r\nxx\r\n"),
        (b"x" * 73 + b"==", b"x" * 73 + b"=\r\n=3D=3D"),  # the cut moves before an escape
        (b"x" * 74 + b"==", b"x" * 74 + b"=\r\n=3D=3D"),
    ],
)
def test_examples(data: bytes, expected: bytes) -> None:
    assert encode_qp(data) == expected


@pytest.mark.parametrize("piece", ["=", "é", "张", " ", "\t", "==", "张三"])
@pytest.mark.parametrize("at", range(66, 84))
@pytest.mark.parametrize("end", ["", "\r\n", " \r\n", "x"])
def test_an_escape_at_every_offset_around_a_cut_stays_whole(piece: str, at: int, end: str) -> None:
    for length in (at + 1, 150, 151, 226, 400):
        line = ("y" * at + piece + "y" * (length - at) + end).encode()
        for data in (line, b"a\r\n" + line, line + b"\r\n" + line):  # one line, many lines
            encoded = encode_qp(data)
            assert_well_formed(encoded)
            assert_cut_late(encoded)
            assert binascii.a2b_qp(encoded) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n",
        b"=" * 3000,  # every character escaped: the cuts move on most pieces
        "张".encode() * 1000 + b"\r\n",
        bytes(range(256)) * 8,
        b"x" * 75 * 300 + b"=\r\n",  # more pieces than one cached grid slices
        (b"y" * 70 + b"==" + b"z" * 3) * 400,  # escapes on the cut, dense then sparse
        b"x " * 2000 + b" \r\n" + b"\t" * 200,
    ],
    ids=["empty", "crlf", "all-equals", "all-cjk", "all-octets", "long", "cut", "spaces"],
)
def test_hard_inputs_encode_well_formed_and_decode_back(data: bytes) -> None:
    for encoded in (encode_qp(data), encode_qp(crlf_lines(data), crlf_only=True)):
        assert_well_formed(encoded)
        assert_cut_late(encoded)
    assert binascii.a2b_qp(encode_qp(data)) == data
    assert quopri.decodestring(encode_qp(data)) == data
