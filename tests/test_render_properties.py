"""Property tests: whatever the input, to_bytes() is well-formed and parses back exactly.

What round-trips, precisely:

- the subject and custom header values: identical;
- display names: stripped, whitespace runs collapsed to one space (done at construction);
  see ``stdlib_name`` for the one stdlib parser quirk, checked exactly per RFC 2047 instead;
- addresses: identical, with the IDNA domain when rendered without SMTPUTF8;
- a text or html body: the given text with every line end (CRLF, CR or LF) as ``\\n``, and a
  final ``\\n`` added when it did not end with one;
- attachments: their filename (stripped at construction) and exact bytes.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import re
import string
from email.header import decode_header, make_header

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from asyncmail import Attachment, Message, MessageError
from asyncmail.message._address import Address, ascii_domain, format_address
from asyncmail.message._headers import encode_words, needs_encoding

# ASYNCMAIL_PROPERTY_EXAMPLES=5000 for a deeper run; 200 keeps the suite quick.
PROPERTY = settings(
    max_examples=int(os.environ.get("ASYNCMAIL_PROPERTY_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BCC = "hidden.auditor@bcc.example"

# Header text: any Unicode a person might type, with CR, LF and NUL left to the injection test.
header_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"), max_size=120
)
cjk = st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=40)
subjects = st.one_of(
    header_text, cjk, st.text(string.printable.replace("\r", "").replace("\n", ""))
)
display_names = st.one_of(header_text, cjk)
local_parts = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10}){0,2}", fullmatch=True
)
domains = st.sampled_from(
    ["example.com", "mail.example.org", "例え.jp", "bücher.de", "xn--r8jz45g.jp"]
)
addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)
# Bodies may hold anything that is valid Unicode, including every kind of line end and NUL.
bodies = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=3000),
    st.text(st.sampled_from("ab \t.=\r\n\x00é中"), max_size=3000),
    st.builds(lambda n: "x" * n, st.integers(990, 2100)),
    # One long line, as minified HTML and template output come, escapes anywhere in it.
    st.lists(
        st.sampled_from(['<p style="m:0">', "Thank you ", "张三", "=", "é", " ", "\t", "."]),
        max_size=400,
    ).map("".join),
)
filenames = st.text(
    st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), min_size=1, max_size=90
).filter(lambda name: squash(name) != "" and name.isprintable())
cjk_filenames = st.builds(lambda stem, ext: stem + ext, cjk, st.sampled_from([".pdf", ".png", ""]))
attachments = st.lists(
    st.builds(
        Attachment,
        filename=st.one_of(filenames, cjk_filenames),
        content=st.binary(max_size=600),
        inline=st.booleans(),
        content_id=st.one_of(st.none(), st.from_regex(r"[a-z0-9.]{1,20}@x", fullmatch=True)),
    ),
    max_size=3,
)
header_names = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)


def parse(raw: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def expected_body(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def body_parts(parsed: email.message.EmailMessage) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in parsed.walk():
        if not part.is_multipart() and part.get("Content-Disposition") is None:
            assert isinstance(part, email.message.EmailMessage)
            content = part.get_content()
            assert part.get_content_subtype() not in found
            found[part.get_content_subtype()] = content.replace("\r\n", "\n")
    return found


def assert_well_formed(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    for line in raw.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line
        assert len(line) <= 998
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n"))
    assert BCC.encode() not in raw


def squash(name: str) -> str:
    """Display names are stripped and their whitespace runs collapsed, at construction."""
    return " ".join(name.split())


def stdlib_name(name: str) -> str:
    """The display name as Python 3.11's parser reads it back.

    A name too long for one encoded-word is split into several, separated by folding
    whitespace; RFC 2047 (6.2) says readers drop that whitespace, but the stdlib's phrase
    parser keeps one space there. Every other name comes back exactly.
    """
    name = squash(name)
    words = encode_words(name) if needs_encoding(name) or len(name) > 70 else [name]
    if len(words) == 1:
        return name
    return " ".join(str(make_header(decode_header(word))) for word in words)


def rfc2047_name(raw: bytes, name: str, addr: str) -> str:
    """Find the rendered display name of ``addr`` in ``raw`` and decode it per RFC 2047."""
    rendered = format_address(Address(squash(name), addr), smtputf8=False)
    assert rendered.encode("ascii") in raw
    phrase = rendered.rpartition(" <")[0] if squash(name) else ""
    if phrase.startswith("=?"):
        return str(make_header(decode_header(phrase)))
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return phrase


def wire(addr: str, smtputf8: bool) -> str:
    if smtputf8:
        return addr
    local, _, domain = addr.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


@PROPERTY
@given(
    subject=subjects,
    names=st.lists(display_names, min_size=1, max_size=3),
    addrs=st.lists(addresses, min_size=3, max_size=3),
    text=st.one_of(st.none(), bodies),
    html=st.one_of(st.none(), bodies),
    files=attachments,
    # names unique regardless of case: parsed["X-g"] would find an "X-G" given before it
    custom=st.lists(
        st.tuples(header_names, header_text), max_size=3, unique_by=lambda h: h[0].lower()
    ).map(dict),
)
def test_rendered_message_parses_back_to_exactly_what_was_given(
    subject: str,
    names: list[str],
    addrs: list[str],
    text: str | None,
    html: str | None,
    files: list[Attachment],
    custom: dict[str, str],
) -> None:
    to = [(name, addr) for name, addr in zip(names, addrs, strict=False)]
    msg = Message(
        sender=(names[0], addrs[-1]),
        to=to,
        bcc=BCC,
        subject=subject,
        text=text,
        html=html,
        attachments=files,
        headers=custom,
    )
    raw = msg.to_bytes()
    assert raw.isascii()
    assert_well_formed(raw)
    parsed = parse(raw)

    assert parsed["Subject"] == subject
    assert parsed["Message-ID"] == msg.message_id
    assert [(a.display_name, a.addr_spec) for a in parsed["To"].addresses] == [
        (stdlib_name(name), wire(addr, False)) for name, addr in to
    ]
    (sender,) = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (
        stdlib_name(names[0]),
        wire(addrs[-1], False),
    )
    for name, addr in to:
        assert rfc2047_name(raw, name, addr) == squash(name)
    for name, value in custom.items():
        assert parsed[name] == value

    bodies_back = body_parts(parsed)
    expected = {}
    if text is not None or (html is None and not files):
        expected["plain"] = expected_body(text or "")
    if html is not None:
        expected["html"] = expected_body(html)
    assert bodies_back == expected

    back = [
        (part.get_filename(), part.get_payload(decode=True))
        for part in parsed.walk()
        if part.get("Content-Disposition") is not None
    ]
    assert back == [(f.filename, f.content) for f in msg_order(msg)]


def msg_order(msg: Message) -> list[Attachment]:
    """Inline files embedded in the HTML come first (multipart/related), then the rest."""
    if msg.html is not None:
        inline = [f for f in msg.attachments if f.inline]
        return inline + [f for f in msg.attachments if not f.inline]
    return list(msg.attachments)


utf8_local_parts = st.text(  # at most 64 octets, the local-part limit
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=21
)
utf8_addresses = st.one_of(
    addresses, st.builds(lambda local, domain: f"{local}@{domain}", utf8_local_parts, domains)
)


@PROPERTY
@given(name=display_names, addr=utf8_addresses, subject=subjects, text=bodies)
def test_smtputf8_rendering_is_well_formed_utf8_with_raw_addresses(
    name: str, addr: str, subject: str, text: str
) -> None:
    msg = Message(sender="shop@example.com", to=(name, addr), bcc=BCC, subject=subject, text=text)
    raw = msg.to_bytes(smtputf8=True)
    assert_well_formed(raw)
    raw.decode("utf-8")
    assert addr.encode("utf-8") in raw
    parsed = parse(raw)
    assert parsed["Subject"] == subject
    assert body_parts(parsed) == {"plain": expected_body(text)}


fields = st.sampled_from(
    ["subject", "name", "addr", "header_value", "header_name", "filename", "content_id"]
)


@PROPERTY
@given(field=fields, before=header_text, after=header_text, bad=st.sampled_from("\r\n\x00"))
def test_cr_lf_or_nul_in_any_header_field_raises_message_error(
    field: str, before: str, after: str, bad: str
) -> None:
    poison = before + bad + after
    kwargs: dict[str, object] = {"sender": "a@example.com", "to": "b@example.com"}
    if field == "subject":
        kwargs["subject"] = poison
    elif field == "name":
        kwargs["to"] = (poison, "b@example.com")
    elif field == "addr":
        kwargs["to"] = f"b{poison}@example.com"
    elif field == "header_value":
        kwargs["headers"] = {"X-Test": poison}
    elif field == "header_name":
        kwargs["headers"] = {f"X-{poison}": "v"}

    def build() -> object:
        if field == "filename":
            return Attachment(filename=poison, content=b"")
        if field == "content_id":
            return Attachment(filename="a.txt", content=b"", content_id=poison)
        return Message(**kwargs)  # type: ignore[arg-type]

    with pytest.raises(MessageError):
        build()


@PROPERTY
@given(text=header_text)
def test_non_ascii_subject_becomes_encoded_words_of_at_most_75_chars(text: str) -> None:
    assume(text.strip())
    raw = Message(sender="a@example.com", to="b@example.com", subject=text).to_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    for word in head.replace("\r\n", " ").split(" "):
        if word.startswith("=?"):
            assert len(word) <= 75
