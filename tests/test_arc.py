"""ARC sealing of forwarded mail: the set verifies with dkimpy, the author's DKIM signature
still does, and nothing below the new header fields changes."""

from __future__ import annotations

import dkim
import pytest

from asyncmail import ARC, DKIM, ConfigError, Mailer, MessageError
from asyncmail.dkim._signer import sign
from asyncmail.testing import CaptureServer

from ._dkim import DOMAIN, dns_of, ed25519_key, rsa_key, rsa_signer, verdicts

ORIGINAL = b"From: alice@a.example\r\nTo: list@example.com\r\nSubject: hello\r\n\r\nhi all\r\n"
RESULTS = "dkim=pass header.d=example.com; spf=pass smtp.mailfrom=a.example"


def _sealer(selector: str = "rsa2048") -> ARC:
    return ARC(domain=DOMAIN, selector=selector, key=rsa_key(), authserv_id="fwd.example")


def _arc(data: bytes) -> tuple[bytes, list[dict[str, object]]]:
    # the sealer's key is the rsa2048 DKIM test key: the same DNS record
    result, sets, _ = dkim.arc_verify(data, dnsfunc=dns_of([rsa_signer()]))
    return result, sets


def _signed() -> bytes:
    """The author's message, DKIM-signed by asyncmail (example.com, rsa2048)."""
    return sign(ORIGINAL, [rsa_signer()]) + ORIGINAL


def test_a_sealed_message_verifies_and_its_dkim_signature_still_does() -> None:
    original = _signed()
    sealed = _sealer().seal(original, RESULTS)
    assert sealed.endswith(original)  # only header fields on top
    result, sets = _arc(sealed)
    assert result == b"pass"
    assert sets[0]["cv"] == b"none" and sets[0]["instance"] == 1
    assert verdicts(sealed, [rsa_signer()]) == [(DOMAIN, "rsa2048", True)]
    assert b"Authentication-Results: fwd.example; dkim=pass" in sealed


def test_a_second_forwarder_extends_the_chain() -> None:
    once = _sealer().seal(_signed(), RESULTS)
    twice = _sealer().seal(once, "arc=pass; dkim=pass header.d=example.com")
    result, sets = _arc(twice)
    assert result == b"pass"
    assert [s["instance"] for s in sets] == [2, 1]


def test_a_chain_without_its_validation_result_is_refused() -> None:
    once = _sealer().seal(_signed(), RESULTS)
    with pytest.raises(MessageError, match="arc=pass or arc=fail"):
        _sealer().seal(once, "dkim=pass header.d=example.com")


def test_results_with_a_line_break_cannot_inject_a_field() -> None:
    with pytest.raises(MessageError, match="inject"):
        _sealer().seal(ORIGINAL, "dkim=pass\r\nBcc: eve@example.net")


def test_an_altered_body_breaks_the_seal() -> None:
    sealed = _sealer().seal(_signed(), RESULTS)
    result, _ = _arc(sealed.replace(b"hi all", b"hi ALL"))
    assert result == b"fail"


async def test_a_sealed_message_goes_out_unchanged_by_send_raw() -> None:
    sealed = _sealer().seal(_signed(), RESULTS)
    async with CaptureServer() as server, Mailer(server.url) as mailer:
        await mailer.send_raw(sealed, sender="fwd@example.com", recipients="bob@example.org")
    [stored] = server.messages
    assert stored.data == sealed
    assert _arc(stored.data)[0] == b"pass"


def test_an_ed25519_key_is_refused_and_the_key_never_shows() -> None:
    with pytest.raises(ConfigError, match="RSA only"):
        ARC(domain=DOMAIN, selector="ed", key=ed25519_key())
    text = repr(_sealer())
    assert "PRIVATE" not in text and "fwd.example" in text


def test_an_unreadable_key_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ARC(domain=DOMAIN, selector="s", key="/nonexistent/arc.pem")


def test_the_dkim_signer_key_type_is_accepted_as_pem() -> None:
    from cryptography.hazmat.primitives import serialization

    pem = rsa_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    sealed = ARC(domain=DOMAIN, selector="rsa2048", key=pem.decode()).seal(ORIGINAL, RESULTS)
    assert _arc(sealed)[0] == b"pass"
    assert isinstance(rsa_signer(), DKIM)
