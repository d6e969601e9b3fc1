"""The interop DKIM keys: made once under $BASE/dkim, published to OpenDKIM without DNS.

    python benchmarks/interop/_dkim_keys.py    # create the keys if missing, print the paths

Two selectors at ``example.com``: ``rsa1`` (RSA-2048) and ``ed1`` (Ed25519, RFC 8463).
Files (all under ``$BASE/dkim``):

- ``rsa1.pem``, ``ed1.pem``: PKCS#8 PEM private keys (what ``asyncmail.DKIM(key=...)`` takes);
- ``ed1.seed``: the Ed25519 private key as base64 of the raw 32-byte seed (what dkimpy takes);
- ``keys.txt``: one line per selector, ``<selector>._domainkey.<domain> <TXT record>``, the
  file OpenDKIM's ``TestPublicKeys`` option reads instead of asking DNS.

``txt_lookup`` is the same table as a dkimpy ``dnsfunc``, so both verifiers see the same keys;
``dkimpy_sign`` and ``dkimpy_verify`` sign and check with dkimpy (the ``interop`` extra).
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

BASE = Path(os.environ.get("BASE", "/tmp/interop"))
KEYDIR = BASE / "dkim"
DOMAIN = "example.com"
RSA_SELECTOR = "rsa1"
ED_SELECTOR = "ed1"


def _pkcs8(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_keys(keydir: Path = KEYDIR) -> Path:
    """Create both key pairs and the public-key table unless they exist; returns keys.txt."""
    table = keydir / "keys.txt"
    if table.exists():
        return table
    keydir.mkdir(parents=True, exist_ok=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ed_pub = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    ed_seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    (keydir / f"{RSA_SELECTOR}.pem").write_bytes(_pkcs8(rsa_key))
    (keydir / f"{ED_SELECTOR}.pem").write_bytes(_pkcs8(ed_key))
    (keydir / f"{ED_SELECTOR}.seed").write_bytes(base64.b64encode(ed_seed))
    records = {
        RSA_SELECTOR: f"v=DKIM1; k=rsa; p={base64.b64encode(rsa_pub).decode()}",
        ED_SELECTOR: f"v=DKIM1; k=ed25519; p={base64.b64encode(ed_pub).decode()}",
    }
    lines = "".join(f"{sel}._domainkey.{DOMAIN} {txt}\n" for sel, txt in records.items())
    table.write_text(lines, encoding="ascii")
    for f in keydir.iterdir():
        f.chmod(0o644)  # test keys; opendkim (user opendkim) must read keys.txt
    return table


def records(keydir: Path = KEYDIR) -> dict[str, str]:
    """``{"rsa1._domainkey.example.com": "v=DKIM1; ...", ...}`` from keys.txt."""
    out: dict[str, str] = {}
    for line in (keydir / "keys.txt").read_text(encoding="ascii").splitlines():
        name, _, txt = line.partition(" ")
        out[name] = txt
    return out


def txt_lookup(name: bytes, timeout: int = 5) -> bytes | None:
    """A dkimpy ``dnsfunc`` answering from keys.txt (no DNS)."""
    del timeout
    txt = records().get(name.decode("ascii").rstrip("."))
    return None if txt is None else txt.encode("ascii")


def dkimpy_sign(raw: bytes, selector: str, include_headers: list[bytes] | None = None) -> bytes:
    """``raw`` with a relaxed/relaxed DKIM-Signature by ``selector`` prepended (dkimpy)."""
    import dkim

    if selector == RSA_SELECTOR:
        key, algo = (KEYDIR / f"{RSA_SELECTOR}.pem").read_bytes(), b"rsa-sha256"
    else:
        key, algo = (KEYDIR / f"{ED_SELECTOR}.seed").read_bytes(), b"ed25519-sha256"
    sig: bytes = dkim.sign(
        raw,
        selector.encode(),
        DOMAIN.encode(),
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=algo,
        include_headers=include_headers,
    )
    return sig + raw


def dkimpy_verify(raw: bytes) -> list[bool]:
    """dkimpy's verdict on every DKIM-Signature of ``raw``, top first (keys from keys.txt)."""
    import dkim

    d = dkim.DKIM(raw)
    count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    verdicts = []
    for i in range(count):
        try:
            verdicts.append(bool(d.verify(idx=i, dnsfunc=txt_lookup)))
        except dkim.DKIMException:  # a body hash mismatch raises instead of returning False
            verdicts.append(False)
    return verdicts


if __name__ == "__main__":
    table = ensure_keys()
    print(f"DKIM test keys in {table.parent}: {', '.join(sorted(records()))}", file=sys.stderr)
