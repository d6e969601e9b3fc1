"""DKIM test keys, and dkimpy (a verifier asyncmail did not write) to check signatures.

Keys are made once per test process: an RSA-2048 key takes a noticeable moment to make.
dkimpy's DNS lookups go to ``dns_of``, which answers with the signers' TXT records only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from asyncmail import DKIM

DOMAIN = "example.com"


@cache
def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    if bits < 1024:  # (cryptography makes no such key: built from primes found here)
        return _small_rsa_key(bits)
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _small_rsa_key(bits: int) -> rsa.RSAPrivateKey:
    e = 65537
    p = _prime(bits // 2, e, 1)
    q = _prime(bits // 2, e, p + 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q), public
    )
    return numbers.private_key()


def _prime(bits: int, e: int, after: int) -> int:
    candidate = max((1 << (bits - 1)) | (1 << (bits - 2)) | 1, after | 1)
    while not (_probably_prime(candidate) and (candidate - 1) % e):
        candidate += 2
    return candidate


def _probably_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 primes as witnesses."""
    witnesses = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in witnesses:
        return True
    if any(n % w == 0 for w in witnesses):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for w in witnesses:
        x = pow(w, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@cache
def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@cache
def rsa_signer() -> DKIM:
    return DKIM(domain=DOMAIN, selector="rsa2048", key=rsa_key())


@cache
def ed25519_signer() -> DKIM:
    return DKIM(domain=DOMAIN, selector="ed", key=ed25519_key())


def both() -> tuple[DKIM, DKIM]:
    """Dual signing: RSA-2048 and Ed25519."""
    return (rsa_signer(), ed25519_signer())


def dns_of(signers: Iterable[DKIM]) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc`` that knows the TXT records of ``signers`` and nothing else."""
    records = {f"{s.dns_name}.".encode(): s.dns_record.encode() for s in signers}

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def verdicts(data: bytes, signers: Iterable[DKIM] = ()) -> list[tuple[str, str, bool]]:
    """dkimpy's verdict on each DKIM-Signature of ``data``, top down: (d, s, verified)."""
    signers = tuple(signers) or both()
    checker = dkim.DKIM(data)
    count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
    found = []
    for index in range(count):
        try:
            ok = checker.verify(idx=index, dnsfunc=dns_of(signers))
        except dkim.ValidationError:  # (a body hash mismatch is raised, not returned)
            ok = False
        found.append((checker.domain.decode(), checker.selector.decode(), bool(ok)))
    return found


def unstuff(data: bytes) -> bytes:
    """What a server reads back from DATA content: dots un-doubled, final dot gone."""
    assert data.endswith(b"\r\n.\r\n")
    raw = data[:-3]
    if raw.startswith(b".."):
        raw = raw[1:]
    return raw.replace(b"\r\n..", b"\r\n.")
