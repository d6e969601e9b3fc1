"""DKIM signatures (RFC 6376) with RSA-SHA256 or Ed25519-SHA256 (RFC 8463), relaxed/relaxed.

``DKIM`` is the configuration of one signer: domain, selector and key, checked at
construction. ``Signers`` is what the engine calls with a message's final bytes (before
dot-stuffing): it returns the ``DKIM-Signature`` header lines to put in front of them. A
message that already carries a signature by the same domain and selector is not signed
again by it.

The hash follows RFC 6376 3.7: the canonicalised body's SHA-256 is ``bh=``; the chosen
header fields (each instance taken from the bottom up, 5.4.2), then the signature field
itself with an empty ``b=`` and no final CRLF, are hashed with SHA-256. RSA signs that with
PKCS#1 v1.5; Ed25519 signs the 32-byte SHA-256 digest itself with PureEdDSA (RFC 8463 3).
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .._exceptions import ConfigError, MessageError
from ..message._address import ascii_domain
from ._canon import Field, relaxed_body, relaxed_header, split_message, tags
from ._key import KeyInput, Loaded, load_key

__all__ = [
    "DKIM",
    "SIGNED_HEADERS",
    "Signers",
    "foreign_signatures",
    "sign",
    "sign_stuffed",
    "signed_by",
    "signers_of",
]

#: The header fields signed when present, each instance of each (RFC 6376 5.4.1); ``From``
#: is listed once more than it occurs, so that no second From can be added (5.4.2).
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/?^_`{|}~.-]*")  # dot-atom text without "="
_WIDTH = 78


@dataclass(frozen=True, slots=True, kw_only=True)
class DKIM:
    """One DKIM signer: the signing domain, the selector of its DNS key, and the private key.

    Args:
        domain: The ``d=`` domain; an internationalised one is used in its A-label form
            (RFC 8616 4).
        selector: The ``s=`` selector: the public key is the TXT record at
            ``{selector}._domainkey.{domain}`` (see ``dns_name`` and ``dns_record``).
        key: The private key: PEM text or bytes (PKCS#1 or PKCS#8, unencrypted), a path
            to a PEM file, a ``cryptography`` RSA or Ed25519 private key object, or an
            Ed25519 seed as 32 bytes in base64. RSA needs at least 1024 bits; use 2048.
            Never shown in a repr, a log or an error.
        identity: The ``i=`` tag, an ASCII address at ``domain`` or a subdomain of it;
            none by default (a verifier then takes ``@domain``).
        expire_after: Seconds after signing at which the signature expires (``x=``);
            none by default.
        timestamp: Add the signing time (``t=``).

    Raises:
        ConfigError: The key does not load (or ``cryptography`` is missing), or a field
            is invalid; raised here, before any I/O.
    """

    domain: str
    selector: str
    key: KeyInput = field(repr=False)
    identity: str | None = None
    expire_after: float | None = None
    timestamp: bool = True
    _loaded: Loaded = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.domain, str) or self.domain.startswith("["):
            raise ConfigError(f"dkim domain: expected a domain name, not {self.domain!r}")
        try:
            domain = ascii_domain(self.domain.rstrip(".")).lower()
        except MessageError:
            raise ConfigError(f"dkim domain: invalid domain {self.domain!r}") from None
        object.__setattr__(self, "domain", domain)
        if not isinstance(self.selector, str) or not _SELECTOR.fullmatch(self.selector):
            raise ConfigError(
                f"dkim selector: {self.selector!r} is not a selector (DNS labels: letters, "
                f"digits and hyphens, separated by dots)"
            )
        if self.identity is not None:
            object.__setattr__(self, "identity", _identity(self.identity, domain))
        if self.expire_after is not None and not (
            isinstance(self.expire_after, int | float) and 0 < self.expire_after < math.inf
        ):
            raise ConfigError(f"dkim expire_after: expected seconds > 0, not {self.expire_after!r}")
        object.__setattr__(self, "_loaded", load_key(self.key))

    @property
    def algorithm(self) -> str:
        """The ``a=`` tag: ``"rsa-sha256"`` or ``"ed25519-sha256"``."""
        return self._loaded.algorithm

    @property
    def dns_name(self) -> str:
        """Where the public key is published: ``{selector}._domainkey.{domain}``."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_record(self) -> str:
        """The TXT record to publish at ``dns_name``: ``v=DKIM1; k=...; p=...``."""
        kind = "rsa" if self._loaded.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self._loaded.public}"

    def signature(self, fields: Sequence[Field], body_hash: str, now: float) -> bytes:
        """The DKIM-Signature header line (CRLF-ended) for a message's fields and body hash."""
        counts: dict[bytes, list[bytes]] = {}
        for field_name, text in fields:
            counts.setdefault(field_name, []).append(text)
        names = [n for n in SIGNED_HEADERS for _ in counts.get(n.encode(), ())] + ["from"]
        hasher = hashlib.sha256()
        for name in names:
            instances = counts.get(name.encode())
            if instances:  # from the bottom up (RFC 6376 5.4.2); an extra name adds nothing
                hasher.update(relaxed_header(instances.pop()))
        stamp = int(now)
        listed = [
            "v=1",
            f"a={self._loaded.algorithm}",
            "c=relaxed/relaxed",
            f"d={self.domain}",
            f"s={self.selector}",
        ]
        if self.timestamp:
            listed.append(f"t={stamp}")
        if self.expire_after is not None:
            listed.append(f"x={stamp + math.ceil(self.expire_after)}")
        if self.identity is not None:
            listed.append(f"i={self.identity}")
        listed += ["h=" + ":".join(names), f"bh={body_hash}", "b="]
        head = _folded(listed)
        hasher.update(relaxed_header(head.encode("ascii"))[:-2])  # (no CRLF: RFC 6376 3.7)
        raw = self._loaded.sign_digest(hasher.digest())
        return (head + _folded_b64(base64.b64encode(raw).decode("ascii"), head) + "\r\n").encode()


def _identity(identity: object, domain: str) -> str:
    if not isinstance(identity, str) or "@" not in identity or not identity.isascii():
        raise ConfigError(f"dkim identity: expected an ASCII address, not {identity!r}")
    local, _, at = identity.rpartition("@")
    try:
        at = ascii_domain(at).lower()
    except MessageError:
        raise ConfigError(f"dkim identity: invalid domain in {identity!r}") from None
    if not _LOCAL_PART.fullmatch(local):
        raise ConfigError(f"dkim identity: {identity!r} has a local part DKIM cannot carry")
    if at != domain and not at.endswith("." + domain):
        raise ConfigError(
            f"dkim identity: {identity!r} must be at {domain} or a subdomain of it (RFC 6376)"
        )
    return f"{local}@{at}"


def _folded(listed: list[str]) -> str:
    """``DKIM-Signature:`` and the tags, folded at 78 columns (``h=`` after its colons)."""
    lines = ["DKIM-Signature:"]
    last = len(listed) - 1
    for i, tag in enumerate(listed):
        text = tag if i == last else tag + ";"
        pieces = re.findall(r"[^:]+:?", text) if tag.startswith("h=") else [text]
        for n, piece in enumerate(pieces):
            space = "" if n else " "
            if len(lines[-1]) + len(space) + len(piece) > _WIDTH:
                lines.append(" " + piece)
            else:
                lines[-1] += space + piece
    return "\r\n".join(lines)


def _folded_b64(value: str, head: str) -> str:
    """The ``b=`` value, folded to the width (whitespace in it is ignored, RFC 6376 3.2)."""
    room = max(_WIDTH - len(head.rpartition("\n")[2]), 0)
    parts = [value[:room]]
    parts += [value[i : i + _WIDTH - 1] for i in range(room, len(value), _WIDTH - 1)]
    return "\r\n ".join(part for part in parts if part)


def sign(data: bytes, dkim: Iterable[DKIM], *, now: float | None = None) -> bytes:
    """The DKIM-Signature header lines to put in front of ``data``: one per signer that
    has not signed it yet (same domain and selector).

    Args:
        data: The message as it goes after DATA, CRLF lines, before dot-stuffing.
        dkim: The signers.
        now: The signing time (``t=``); the current time by default.
    """
    fields, body = split_message(data)
    done = signed_by(fields)
    when = time.time() if now is None else now
    body_hash = ""
    out: list[bytes] = []
    for signer in dkim:
        if (signer.domain, signer.selector.lower()) in done:
            continue
        if not body_hash:
            digest = hashlib.sha256(relaxed_body(body)).digest()
            body_hash = base64.b64encode(digest).decode("ascii")
        out.append(signer.signature(fields, body_hash, when))
    return b"".join(out)


def signed_by(fields: Iterable[Field]) -> set[tuple[str, str]]:
    """The (domain, selector) pairs of the DKIM-Signature fields among ``fields``."""
    found: set[tuple[str, str]] = set()
    for name, text in fields:
        if name == b"dkim-signature":
            found_tags = tags(text.partition(b":")[2])
            domain = found_tags.get(b"d", b"").decode("ascii", "replace").lower().rstrip(".")
            found.add((domain, found_tags.get(b"s", b"").decode("ascii", "replace").lower()))
    return found


class Signers:
    """The signers of a Mailer or an outbox, called with a message's final bytes."""

    __slots__ = ("dkim", "ids")

    def __init__(self, dkim: Sequence[DKIM]) -> None:
        self.dkim = tuple(dkim)
        self.ids = frozenset((d.domain, d.selector.lower()) for d in self.dkim)

    def __call__(self, data: bytes) -> bytes:
        """The DKIM-Signature lines to put in front of ``data`` (see ``sign``)."""
        return sign(data, self.dkim)

    def __repr__(self) -> str:
        return f"<Signers {', '.join(f'{d}/{s}' for d, s in sorted(self.ids))}>"


def signers_of(*configs: DKIM | Sequence[DKIM] | Signers | None) -> Signers | None:
    """One ``Signers`` for configurations given as a DKIM, a sequence of them, or None.

    A signer whose domain and selector an earlier one has is left out.

    Raises:
        ConfigError: Something other than a DKIM was given.
    """
    chosen: dict[tuple[str, str], DKIM] = {}
    for config in configs:
        if config is None:
            continue
        items = config.dkim if isinstance(config, Signers) else config
        if isinstance(items, DKIM):
            items = (items,)
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise ConfigError(f"dkim: expected a DKIM or a sequence of them, not {config!r}")
        for item in items:
            if not isinstance(item, DKIM):
                raise ConfigError(f"dkim: expected a DKIM, not {type(item).__name__}")
            chosen.setdefault((item.domain, item.selector.lower()), item)
    return Signers(tuple(chosen.values())) if chosen else None


def sign_stuffed(data: bytes, signers: Signers) -> bytes:
    """The DKIM-Signature lines for content already dot-stuffed with its final dot.

    The signature is over the content as the server reads it back (un-stuffed); the lines
    returned go in front of ``data`` as they are (no header line starts with a dot).
    """
    raw = data[:-3]  # (the final ".\r\n")
    if raw.startswith(b".."):
        raw = raw[1:]
    return signers(raw.replace(b"\r\n..", b"\r\n."))


def foreign_signatures(data: bytes, signers: Signers | None) -> set[tuple[str, str]]:
    """The (domain, selector) of each DKIM-Signature on ``data`` that ``signers`` cannot make.

    ``data`` may be dot-stuffed: only its header block is read.
    """
    found = signed_by(split_message(data)[0])
    return found - signers.ids if signers is not None else found
