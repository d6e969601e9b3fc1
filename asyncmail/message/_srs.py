"""The Sender Rewriting Scheme (SRS): forwarded mail that still passes SPF, and its bounces.

A forwarder that sends ``alice@a.example``'s message on from its own servers fails SPF for
``a.example``. SRS rewrites the envelope sender to the forwarder's domain, in a form only
the forwarder can reverse, so that a bounce comes back to it and goes on to Alice:

    alice@a.example  ->  SRS0=HHHH=TT=a.example=alice@forwarder.example

``HHHH`` is the start of the base64 HMAC-SHA1, under the forwarder's secret, of the
timestamp, domain and local part, lower-cased; ``TT`` is the day (days since the epoch,
modulo 1024) in two base32 characters. A second forwarder turns an SRS0 address into
``SRS1=HHHH=first.example==HHHH=TT=a.example=alice@second.example``, and its bounces go to
the first one. This is the Guarded scheme of Shevek's paper as libsrs2 (PostSRSd) and
Mail::SRS implement it, with their defaults: 4 hash characters, 21 days. A test holds it
to libsrs2's published vector and to srslib, another implementation.

No library is used: pysrs (the Mail::SRS port) fails on Python 3.9 and later, and srslib
has had no release since 2019; the scheme is short.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .._exceptions import InvalidToken, MessageError
from ._address import ascii_domain, validate_addr_spec

__all__ = ["SRS"]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400
_SRS0 = re.compile(r"SRS0[-+=]([^=]+)=([^=]+)=([^=]+)=(.+)", re.IGNORECASE)
_SRS0_OPAQUE = re.compile(r"SRS0([-+=].+)", re.IGNORECASE)
_SRS1 = re.compile(r"SRS1[-+=]([^=]+)=([^=]+)=([-+=].+)", re.IGNORECASE)
_MAX_LOCAL = 64


@dataclass(frozen=True, slots=True, init=False)
class SRS:
    """Rewrites envelope senders for forwarding, and reverses them for bounces.

    Args:
        secret: The key of the hashes (keep it secret, and the same on every forwarder
            of the domain).
        domain: The forwarder's domain: rewritten senders are at it.
        previous_secrets: Secrets used before a change of key, still good for reversing.
        max_age_days: How long a rewritten address can be reversed (a bounce may come
            days later).
        hash_length: Base64 characters of hash (4: 24 bits, as libsrs2).

    ``repr()`` never shows a secret.
    """

    secret: bytes = field(repr=False)
    domain: str
    previous_secrets: tuple[bytes, ...] = field(repr=False)
    max_age_days: int
    hash_length: int

    def __init__(
        self,
        secret: str | bytes,
        domain: str,
        *,
        previous_secrets: Iterable[str | bytes] = (),
        max_age_days: int = 21,
        hash_length: int = 4,
    ) -> None:
        keys = [_key(secret, "secret"), *(_key(s, "previous_secrets") for s in previous_secrets)]
        if not domain or "@" in domain:
            raise MessageError(f"domain: expected a domain name, got {domain!r}")
        ascii_domain(domain)  # (a MessageError for an invalid one)
        if not 1 <= max_age_days <= 1023:
            raise MessageError("max_age_days must be 1..1023 (the timestamp wraps at 1024)")
        if not 4 <= hash_length <= 27:
            raise MessageError("hash_length must be 4..27 base64 characters")
        object.__setattr__(self, "secret", keys[0])
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "previous_secrets", tuple(keys[1:]))
        object.__setattr__(self, "max_age_days", max_age_days)
        object.__setattr__(self, "hash_length", hash_length)

    def forward(self, sender: str, *, now: float | None = None) -> str:
        """The envelope sender to forward ``sender``'s message with.

        An SRS0 address of another forwarder becomes SRS1 (bounces go back through it), an
        SRS1 address keeps its first hop; the null sender ``""`` and an address at
        ``domain`` itself stay as they are.

        Raises:
            MessageError: ``sender`` is not a valid address, has a quoted local part, or
                would be too long (over 64 octets before the ``@``) when rewritten.
        """
        if sender == "":
            return ""
        validate_addr_spec(sender, "sender")
        local, _, host = sender.rpartition("@")
        if host.lower() == self.domain.lower():
            return sender
        if local.startswith('"'):
            raise MessageError(f"sender: SRS cannot rewrite a quoted local part: {sender!r}")
        if found := _SRS1.fullmatch(local):
            first_hop, opaque = found.group(2), found.group(3)
            new = f"SRS1={self._hash(first_hop + opaque)}={first_hop}={opaque}"
        elif found := _SRS0_OPAQUE.fullmatch(local):
            opaque = found.group(1)
            new = f"SRS1={self._hash(host + opaque)}={host}={opaque}"
        else:
            stamp = _stamp(time.time() if now is None else now)
            new = f"SRS0={self._hash(stamp + host + local)}={stamp}={host}={local}"
        if len(new.encode("utf-8")) > _MAX_LOCAL:
            raise MessageError(
                f"sender: rewritten by SRS the local part would be {len(new)} octets, over "
                f"SMTP's {_MAX_LOCAL}: {new}@{self.domain}"
            )
        return f"{new}@{self.domain}"

    def reverse(self, address: str, *, now: float | None = None) -> str:
        """Where a bounce to the rewritten ``address`` goes: the original sender (SRS0), or
        the first forwarder's SRS0 address (SRS1).

        Raises:
            MessageError: ``address`` is not an SRS address.
            InvalidToken: Its hash is not ours (forged or damaged), or it has expired.
        """
        local, at, _ = address.rpartition("@")
        if found := _SRS1.fullmatch(local) if at else None:
            digest, first_hop, opaque = found.groups()
            self._check(digest, first_hop + opaque, address)
            return f"SRS0{opaque}@{first_hop}"
        if found := _SRS0.fullmatch(local) if at else None:
            digest, stamp, host, original = found.groups()
            self._check(digest, stamp + host + original, address)
            if not _fresh(stamp, self.max_age_days, time.time() if now is None else now):
                raise InvalidToken(f"the SRS address has expired: {address}")
            return f"{original}@{host}"
        raise MessageError(f"not an SRS address: {address!r}")

    @staticmethod
    def is_srs(address: str) -> bool:
        """Whether ``address`` has the form of an SRS0 or SRS1 address (not its hash)."""
        local = address.rpartition("@")[0]
        return bool(_SRS0.fullmatch(local) or _SRS1.fullmatch(local))

    def _hash(self, data: str) -> str:
        mac = hmac.new(self.secret, data.lower().encode("utf-8"), hashlib.sha1)
        return base64.b64encode(mac.digest())[: self.hash_length].decode("ascii")

    def _check(self, digest: str, data: str, address: str) -> None:
        if len(digest) >= 4:  # (libsrs2: compared without case; a short one never matches)
            for key in (self.secret, *self.previous_secrets):
                mac = hmac.new(key, data.lower().encode("utf-8"), hashlib.sha1).digest()
                expected = base64.b64encode(mac)[: len(digest)].decode("ascii")
                if hmac.compare_digest(expected.lower(), digest.lower()):
                    return
        raise InvalidToken(f"the SRS address was not made with our secret: {address}")


def _key(secret: str | bytes, name: str) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not isinstance(key, bytes) or not key:
        raise MessageError(f"{name}: expected a non-empty str or bytes")
    return key


def _stamp(now: float) -> str:
    day = int(now // _DAY)
    return _ALPHABET[(day >> 5) & 31] + _ALPHABET[day & 31]


def _fresh(stamp: str, max_age: int, now: float) -> bool:
    """Whether ``stamp`` is a day at most ``max_age`` days ago (modulo 1024, as libsrs2)."""
    if len(stamp) != 2 or any(c not in _ALPHABET for c in stamp.upper()):
        return False
    hi, lo = (_ALPHABET.index(c) for c in stamp.upper())
    then = hi << 5 | lo
    today = int(now // _DAY) % 1024
    return (today - then) % 1024 <= max_age
