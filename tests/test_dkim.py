"""DKIM signing, checked by dkimpy: keys and configuration, canonicalisation, every message shape.

The signatures are verified with dkimpy's ``dkim.verify`` (and ``DKIM.verify`` per signature
for dual signing), a verifier asyncmail did not write, over the bytes a server reads back.
"""

from __future__ import annotations

import email.message
import email.policy
import sys
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import DKIM, Attachment, ConfigError, Message, NotSupportedError
from asyncmail.dkim._canon import relaxed_body, relaxed_header, split_message
from asyncmail.dkim._signer import Signers, sign, signers_of
from asyncmail.message._content import WireContent, wire_content

from ._dkim import DOMAIN, both, dns_of, ed25519_key, ed25519_signer, rsa_key, unstuff, verdicts

PKCS1_BEGIN = "-----BEGIN RSA PRIVATE KEY-----"


def pem(key: object, form: serialization.PrivateFormat) -> bytes:
    assert isinstance(key, ed25519.Ed25519PrivateKey) or hasattr(key, "key_size")
    return key.private_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.PEM, form, serialization.NoEncryption()
    )


def signed_wire(
    message: Message | email.message.Message,
    *,
    smtputf8: bool = False,
    eightbitmime: bool = True,
    signers: tuple[DKIM, ...] | None = None,
) -> tuple[WireContent, bytes]:
    """The content for the wire, signed, and what a server reads back from it."""
    chosen = signers_of(signers if signers is not None else both())
    assert chosen is not None
    content = wire_content(
        message, message_id=None, smtputf8=smtputf8, eightbitmime=eightbitmime, sign=chosen
    )
    return content, unstuff(content.data)


def all_verified(data: bytes, signers: tuple[DKIM, ...] | None = None) -> None:
    chosen = signers if signers is not None else both()
    expected = [(s.domain, s.selector, True) for s in chosen]
    assert verdicts(data, chosen) == expected


def shop_message(**fields: object) -> Message:
    base: dict[str, object] = {
        "sender": "Shop <shop@example.com>",
        "to": ["Ann <ann@example.net>"],
        "subject": "Your order",
        "text": "Hello Ann,\n\nyour order has shipped.\n.\nA line with a lone dot above.\n",
    }
    base.update(fields)
    return Message(**base)  # type: ignore[arg-type]


def stdlib_message(body: str = "héllo wörld\n", cte: str = "8bit") -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = "Shop <shop@example.com>"
    message["To"] = "ann@example.net"
    message["Subject"] = "stdlib"
    message["Message-ID"] = "<stdlib-1@example.com>"
    message["Date"] = "Wed, 02 Dec 2026 05:00:00 +0000"
    message.set_content(body, cte=cte)
    return message


# -- every message shape, both key types ------------------------------------------------

SHAPES = {
    "text only": lambda: shop_message(),
    "text and html": lambda: shop_message(html="<p>Hello <b>Ann</b></p>\n<p>shipped</p>"),
    "attachments and inline": lambda: shop_message(
        html='<p>logo: <img src="cid:logo@shop"></p>',
        attachments=[
            Attachment(filename="invoice.pdf", content=b"%PDF-1.4 " + bytes(range(256)) * 40),
            Attachment(
                filename="logo.png",
                content=b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 500,
                inline=True,
                content_id="logo@shop",
            ),
            Attachment(filename="发票 2026.txt", content="第一行\n第二行\n".encode()),
        ],
    ),
    "CJK subject and names": lambda: shop_message(
        sender="商店 <shop@example.com>",
        to=["张三 <zhang@example.net>", "李四 <li@example.net>"],
        subject="订单确认：您的订单已发货，感谢您的惠顾",
        text="您好，\n\n您的订单已发货。\n",
    ),
    "long folded headers": lambda: shop_message(
        subject="A very long subject line " * 12,
        to=[f"Recipient Number {i} <user{i}@example.net>" for i in range(60)],
        cc=[f"cc{i}@example.org" for i in range(20)],
    ),
    "headers given": lambda: shop_message(
        headers={
            "Feedback-ID": "campaign42:newsletter:shop",
            "X-Mailer-Id": "  spaced   out\tvalue  ",
        },
        unsubscribe="https://example.com/u/abc",
        unsubscribe_mailto="u@example.com",
        list_id="Shop news <news.example.com>",
    ),
    "trailing whitespace and blank lines": lambda: shop_message(
        text="line with trailing spaces   \n\ttabbed\t\tline\t\n\n\n\n"
    ),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("which", ["rsa", "ed25519", "both"])
def test_each_message_shape_is_verified_by_dkimpy(shape: str, which: str) -> None:
    rsa_one, ed_one = both()
    signers = {"rsa": (rsa_one,), "ed25519": (ed_one,), "both": (rsa_one, ed_one)}[which]
    content, received = signed_wire(SHAPES[shape](), signers=signers)
    all_verified(received, signers)
    assert content.size == len(received)  # SIZE= counts the signature header too


def test_dkimpy_verify_accepts_the_first_signature_and_rejects_a_changed_body() -> None:
    _, received = signed_wire(shop_message())
    assert dkim.verify(received, dnsfunc=dns_of(both()))
    tampered = received.replace(b"has shipped", b"was lost")
    assert verdicts(tampered) == [(s.domain, s.selector, False) for s in both()]


def test_from_is_over_signed_so_a_second_from_breaks_the_signature() -> None:
    _, received = signed_wire(shop_message())
    h_tag = dkim.DKIM(received).headers[0][1]
    assert b"from" in h_tag and h_tag.count(b"from") == 2
    head, _, body = received.partition(b"\r\n\r\n")
    forged = head + b"\r\nFrom: Mallory <ceo@example.com>\r\n\r\n" + body
    assert [ok for _, _, ok in verdicts(forged)] == [False, False]


def test_the_signed_header_list_names_what_is_present_and_from_once_more() -> None:
    message = shop_message(cc=["c@example.org"], headers={"Feedback-ID": "a:b:c"})
    _, received = signed_wire(message, signers=(ed25519_signer(),))
    sig = dkim.util.parse_tag_value(dkim.DKIM(received).headers[0][1])
    names = [n.strip() for n in sig[b"h"].decode().split(":")]
    assert names == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "feedback-id",
        "from",
    ]
    assert sig[b"c"] == b"relaxed/relaxed"
    assert sig[b"a"] == b"ed25519-sha256"
    assert b"t" in sig and b"l" not in sig


def test_the_one_click_unsubscribe_headers_of_a_message_are_signed() -> None:
    """Gmail and Yahoo want List-Unsubscribe and List-Unsubscribe-Post under the signature."""
    message = shop_message(unsubscribe="https://example.com/u/abc", list_id="news.example.com")
    _, received = signed_wire(message, signers=(ed25519_signer(),))
    sig = dkim.util.parse_tag_value(dkim.DKIM(received).headers[0][1])
    names = {n.strip() for n in sig[b"h"].decode().split(":")}
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= names
    all_verified(received, (ed25519_signer(),))
    forged = received.replace(b"https://example.com/u/abc", b"https://evil.example/u/abc")
    assert [ok for _, _, ok in verdicts(forged, (ed25519_signer(),))] == [False]


def test_signature_lines_are_folded_within_78_columns() -> None:
    header = sign(shop_message().to_bytes(smtputf8=False), both())
    lines = header.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 78 for line in lines)
    assert header.count(b"DKIM-Signature:") == 2


def test_a_stdlib_email_message_is_signed() -> None:
    _, received = signed_wire(stdlib_message(cte="quoted-printable"))
    all_verified(received)


def test_the_seven_bit_rendering_is_signed_over_the_bytes_actually_sent() -> None:
    """A server without 8BITMIME gets the message re-encoded: the signature covers that."""
    message = stdlib_message(cte="8bit")
    content, received = signed_wire(message, eightbitmime=False)
    assert received.isascii() and not content.eight_bit
    all_verified(received)
    eight, received_8 = signed_wire(message, eightbitmime=True)
    assert eight.eight_bit and not received_8.isascii()
    all_verified(received_8)


def test_smtputf8_utf8_headers_are_signed_with_an_a_label_domain() -> None:
    """RFC 8616: UTF-8 headers are signed as they are; d= stays the A-label form."""
    signer = DKIM(domain="例子.中国", selector="s1", key=ed25519_key())
    assert signer.domain == "xn--fsqu00a.xn--fiqs8s"
    message = shop_message(sender="商店 <店主@例子.中国>", to=["用户@例子.中国"])
    content, received = signed_wire(message, smtputf8=True, signers=(signer,))
    assert content.smtputf8 and content.eight_bit
    assert "店主@例子.中国".encode() in received  # raw UTF-8, not encoded-words
    assert b"d=xn--fsqu00a.xn--fiqs8s;" in received
    assert verdicts(received, (signer,)) == [("xn--fsqu00a.xn--fiqs8s", "s1", True)]


def test_a_message_signed_by_the_same_domain_and_selector_is_not_signed_again() -> None:
    raw = shop_message().to_bytes(smtputf8=False)
    once = sign(raw, both()) + raw
    assert sign(once, both()) == b""
    other = DKIM(domain="example.org", selector="ed", key=ed25519_key())
    again = sign(once, (*both(), other))
    assert again.count(b"DKIM-Signature:") == 1 and b"d=example.org" in again


def test_timestamp_expiry_and_identity_tags() -> None:
    signer = DKIM(
        domain=DOMAIN,
        selector="ed",
        key=ed25519_key(),
        identity="news@mail.example.com",
        expire_after=3600,
    )
    raw = shop_message().to_bytes(smtputf8=False)
    header = sign(raw, [signer], now=1_800_000_000.5)
    sig = dkim.util.parse_tag_value(header.split(b":", 1)[1])
    assert (sig[b"t"], sig[b"x"], sig[b"i"]) == (
        b"1800000000",
        b"1800003600",
        b"news@mail.example.com",
    )
    untimed = DKIM(domain=DOMAIN, selector="ed", key=ed25519_key(), timestamp=False)
    assert b"t=" not in sign(raw, [untimed])
    # (dkimpy checks x= against its clock: a signature that expired in 2027 fails now)
    fresh = sign(raw, [signer]) + raw
    assert verdicts(fresh, (signer,)) == [(DOMAIN, "ed", True)]


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8],
    ids=["pkcs1", "pkcs8"],
)
def test_rsa_keys_load_from_pem_text_bytes_and_files(
    form: serialization.PrivateFormat, tmp_path: Path
) -> None:
    data = pem(rsa_key(), form)
    path = tmp_path / "dkim.pem"
    path.write_bytes(data)
    raw = shop_message().to_bytes(smtputf8=False)
    for key in (data, data.decode(), path, str(path)):
        signer = DKIM(domain=DOMAIN, selector="rsa2048", key=key)
        assert signer.algorithm == "rsa-sha256"
        assert verdicts(sign(raw, [signer]) + raw, (signer,)) == [(DOMAIN, "rsa2048", True)]


def test_ed25519_keys_load_from_pem_and_from_a_base64_seed(tmp_path: Path) -> None:
    import base64

    key = ed25519_key()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    seed_text = base64.b64encode(seed).decode()
    path = tmp_path / "ed.key"
    path.write_text(seed_text + "\n")  # what dkimpy's dknewkey writes
    reference = DKIM(domain=DOMAIN, selector="ed", key=key)
    for given_key in (pem(key, serialization.PrivateFormat.PKCS8), seed_text, path):
        signer = DKIM(domain=DOMAIN, selector="ed", key=given_key)
        assert signer.algorithm == "ed25519-sha256"
        assert signer.dns_record == reference.dns_record
    assert reference.dns_record.startswith("v=DKIM1; k=ed25519; p=")
    assert reference.dns_name == "ed._domainkey.example.com"


def test_small_rsa_keys_and_other_key_types_are_refused() -> None:
    with pytest.raises(ConfigError, match="1024 bits"):
        DKIM(domain=DOMAIN, selector="s", key=rsa_key(512))
    with pytest.raises(ConfigError, match=r"RSA .* or Ed25519"):
        DKIM(
            domain=DOMAIN,
            selector="s",
            key=pem(ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.PKCS8),
        )
    with pytest.raises(ConfigError, match="expected PEM text"):
        DKIM(domain=DOMAIN, selector="s", key=12345)  # type: ignore[arg-type]
    assert DKIM(domain=DOMAIN, selector="s", key=rsa_key(1024)).algorithm == "rsa-sha256"


@pytest.mark.parametrize("selector", ["", "a b", "s1;x=y", "-s", "s_1", "s1.", "ünï"])
def test_bad_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ConfigError, match="selector"):
        DKIM(domain=DOMAIN, selector=selector, key=ed25519_key())


@pytest.mark.parametrize("domain", ["", "exa mple.com", "example.com;s=x", "[127.0.0.1]", "-x.com"])
def test_bad_domains_are_refused(domain: str) -> None:
    with pytest.raises(ConfigError, match="domain"):
        DKIM(domain=domain, selector="s1", key=ed25519_key())


@pytest.mark.parametrize(
    ("identity", "match"),
    [
        ("news@example.org", "subdomain"),
        ("no-at-sign", "ASCII address"),
        ("a=b@example.com", "local part"),
        ("ü@example.com", "ASCII"),
    ],
)
def test_bad_identities_are_refused(identity: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        DKIM(domain=DOMAIN, selector="s1", key=ed25519_key(), identity=identity)


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), "3600"])
def test_bad_expiry_is_refused(seconds: object) -> None:
    with pytest.raises(ConfigError, match="expire_after"):
        DKIM(domain=DOMAIN, selector="s1", key=ed25519_key(), expire_after=seconds)  # type: ignore[arg-type]


def test_the_private_key_never_shows_in_a_repr_or_an_error(tmp_path: Path) -> None:
    data = pem(rsa_key(), serialization.PrivateFormat.TraditionalOpenSSL).decode()
    secret_lines = [line for line in data.splitlines() if not line.startswith("-----")]
    signer = DKIM(domain=DOMAIN, selector="s1", key=data)
    shown = [repr(signer), str(signer), repr(signers_of(signer))]
    # a key file that holds key material but does not parse: cut short, and corrupted
    broken = tmp_path / "broken.pem"
    broken.write_text("\n".join(data.splitlines()[:12]) + "\n-----END RSA PRIVATE KEY-----\n")
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_text(data.replace(secret_lines[3], secret_lines[3][::-1]))
    for bad in (broken, corrupt, data[:400], data.replace(PKCS1_BEGIN, PKCS1_BEGIN + "x")):
        with pytest.raises(ConfigError) as caught:
            DKIM(domain=DOMAIN, selector="s1", key=bad)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        shown.append(str(caught.value))
        shown.append(repr(caught.value))
    for text in shown:
        assert not any(line[:20] in text for line in secret_lines), text
    assert "broken.pem" in shown[3]


def test_an_encrypted_or_missing_key_file_says_so(tmp_path: Path) -> None:
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    with pytest.raises(ConfigError, match="encrypted"):
        DKIM(domain=DOMAIN, selector="s1", key=encrypted)
    with pytest.raises(ConfigError, match="cannot read"):
        DKIM(domain=DOMAIN, selector="s1", key=tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="neither a PEM"):
        DKIM(domain=DOMAIN, selector="s1", key=b"not a key")


def test_without_cryptography_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(ConfigError, match=r"pip install 'asyncmail\[dkim\]'"):
        DKIM(domain=DOMAIN, selector="s1", key="x")


def test_signers_take_a_dkim_or_a_sequence_and_drop_repeats() -> None:
    rsa_one, ed_one = both()
    assert signers_of(None) is None
    single = signers_of(ed_one)
    assert isinstance(single, Signers) and single.dkim == (ed_one,)
    assert signers_of([rsa_one, ed_one], (ed_one,)).dkim == (rsa_one, ed_one)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="expected a DKIM"):
        signers_of(["not a signer"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="expected a DKIM"):
        signers_of("example.com")  # type: ignore[arg-type]


def test_a_seven_bit_rendering_of_a_user_signed_message_is_still_refused() -> None:
    """A message the user signed cannot be re-encoded; signing it ourselves changes nothing."""
    message = stdlib_message(cte="8bit")
    message["DKIM-Signature"] = "v=1; a=rsa-sha256; d=example.org; s=x; h=from; bh=; b="
    with pytest.raises(NotSupportedError, match="signed"):
        signed_wire(message, eightbitmime=False)


# -- canonicalisation against dkimpy's ----------------------------------------------------

_LINE = st.text(alphabet=" \tab.é=:", max_size=20).map(lambda s: s.encode())


@given(st.lists(_LINE, max_size=8))
def test_relaxed_body_matches_dkimpy(lines: list[bytes]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


@given(
    st.lists(_LINE, min_size=1, max_size=4), st.sampled_from([b"Subject", b"X-Long-Name", b"TO "])
)
def test_relaxed_header_matches_dkimpy(value_lines: list[bytes], name: bytes) -> None:
    value = b"\r\n ".join(value_lines)
    [(dk_name, dk_value)] = Relaxed.canonicalize_headers([(name, value)])
    assert relaxed_header(name + b":" + value) == dk_name + b":" + dk_value


@given(
    st.lists(
        st.tuples(
            st.sampled_from([b"From", b"To", b"X-A"]), st.lists(_LINE, min_size=1, max_size=3)
        ),
        max_size=6,
    ),
    _LINE,
)
def test_split_message_reads_the_fields_as_dkimpy_does(
    fields: list[tuple[bytes, list[bytes]]], body: bytes
) -> None:
    head = b"".join(name + b":" + b"\r\n ".join(lines) + b"\r\n" for name, lines in fields)
    data = head + b"\r\n" + body + b"\r\n"
    ours, our_body = split_message(data)
    theirs, their_body = dkim.rfc822_parse(data)
    assert [(n, t + b"\r\n") for n, t in ours] == [(n.lower(), n + b":" + v) for n, v in theirs]
    assert our_body == their_body
