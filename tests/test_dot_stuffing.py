"""What goes on the wire after DATA can never end the message early or smuggle a second one."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmail.message._content import dot_stuff, wire_content


def _unstuff(wire: bytes) -> bytes:
    """What an RFC 5321 server stores: up to the first CRLF.CRLF, dots un-doubled."""
    padded = b"\r\n" + wire
    end = padded.find(b"\r\n.\r\n")
    content = padded[2 : end + 2]  # up to and including the CRLF that ends the last line
    lines = content.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_leading_dots_are_doubled() -> None:
    assert dot_stuff(b".hidden\r\n..two\r\n") == b"..hidden\r\n...two\r\n.\r\n"


def test_a_lone_dot_line_in_the_content_does_not_end_the_message() -> None:
    assert dot_stuff(b"a\r\n.\r\nb\r\n") == b"a\r\n..\r\nb\r\n.\r\n"


def test_bare_lf_and_cr_smuggling_sequences_become_plain_crlf_lines() -> None:
    wire = dot_stuff(b"a\n.\nMAIL FROM:<evil@x>\r.\rb")
    assert wire.count(b"\r\n.\r\n") == 1 and wire.endswith(b"\r\n.\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", wire) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet="\r\n.ab", max_size=80).map(str.encode))
def test_exactly_one_terminator_and_no_bare_line_endings(data: bytes) -> None:
    wire = dot_stuff(data)
    assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1
    assert wire.endswith(b"\r\n.\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", wire) is None
    normalised = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert _unstuff(wire) == normalised


_PIECES = ["\r", "\n", ".", "a", " ", "é", "\r\n.\r\n", "\n.\n", "\r.\r"]
_HOSTILE = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=_HOSTILE, html=st.none() | _HOSTILE, name=st.text(alphabet="a. é", max_size=8))
def test_a_message_reaches_the_wire_with_one_terminator_and_crlf_only(
    text: str, html: str | None, name: str
) -> None:
    # The wire content of our own Message skips the bare CR/LF pass (its renderer is
    # CRLF-only by construction): this holds that to the same standard as dot_stuff.
    from asyncmail import Message

    message = Message(
        sender="a@example.com", to=(name, "b@example.net"), subject=name, text=text, html=html
    )
    for smtputf8 in (False, True):
        content = wire_content(message, message_id=None, smtputf8=smtputf8, eightbitmime=True)
        wire = content.data
        assert (b"\r\n" + wire).count(b"\r\n.\r\n") == 1
        assert wire.endswith(b"\r\n.\r\n")
        assert re.search(rb"(?<!\r)\n|\r(?!\n)", wire) is None
        boundary = re.compile(rb"=_[amr][0-9a-f]{24}")  # random per rendering
        stored = boundary.sub(b"B", _unstuff(wire))
        assert stored == boundary.sub(b"B", message.to_bytes(smtputf8=smtputf8))
