"""ARC sealing (RFC 8617): a forwarder vouches for the authentication results it saw.

A forwarded message may fail DMARC at its destination (SPF breaks on forwarding, and a
mailing list may break DKIM). With ARC the forwarder records what it checked on arrival
(its Authentication-Results) in a sealed, signed set of header fields, so the receiver can
trust those results if it trusts the forwarder. Sealing adds header fields on top and
changes nothing else, so the author's DKIM signature still verifies.

The signing is dkimpy's ``arc_sign`` (with ``authres`` to read the results): the extra
``pip install 'asyncmail[arc]'``. RFC 8617 allows only rsa-sha256.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import ConfigError, MessageError
from ._key import KeyInput, require_cryptography

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = ["ARC"]

_INSTALL = "ARC sealing needs dkimpy and authres: pip install 'asyncmail[arc]'"
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_PEM_MARK = "-----BEGIN"


@dataclass(frozen=True, slots=True, init=False)
class ARC:
    """Seals forwarded messages with an ARC set (RFC 8617).

    Args:
        domain: The sealer's domain (``d=``); its DNS publishes the selector's key.
        selector: The key's selector (``s=``).
        key: An RSA private key: PEM (str or bytes), a path to a PEM file, or a
            ``cryptography`` RSA key. Never shown in a repr or an error.
        authserv_id: The name of the Authentication-Results this forwarder writes; the
            domain by default.

    Raises:
        ConfigError: A key that is not RSA, cannot be read, or a bad name.
    """

    domain: str
    selector: str
    authserv_id: str
    _pem: bytes = field(repr=False)

    def __init__(
        self,
        *,
        domain: str,
        selector: str,
        key: KeyInput,
        authserv_id: str | None = None,
    ) -> None:
        for name, value in (("domain", domain), ("selector", selector)):
            if not isinstance(value, str) or not _TOKEN.fullmatch(value):
                raise ConfigError(f"{name}: expected a DNS name, got {value!r}")
        server = domain if authserv_id is None else authserv_id
        if not _TOKEN.fullmatch(server):
            raise ConfigError(f"authserv_id: expected a host name, got {server!r}")
        object.__setattr__(self, "domain", domain)
        object.__setattr__(self, "selector", selector)
        object.__setattr__(self, "authserv_id", server)
        object.__setattr__(self, "_pem", _rsa_pem(key))

    def seal(
        self, data: bytes, authentication_results: str, *, timestamp: int | None = None
    ) -> bytes:
        """``data`` with this forwarder's Authentication-Results and an ARC set on top.

        Args:
            data: The message as it arrived (CRLF lines).
            authentication_results: What this forwarder found, as the part of an
                Authentication-Results field after its name (RFC 8601), such as
                ``"dkim=pass header.d=a.example; spf=pass smtp.mailfrom=a.example"``. A
                message that has ARC sets already needs ``arc=pass`` or ``arc=fail`` here:
                the validation of the chain it came with.
            timestamp: The ``t=`` of the signatures (seconds since the epoch); now by
                default.

        Raises:
            MessageError: Results that would inject a header field, or a chain whose
                validation result is missing.
            ConfigError: dkimpy or authres is missing.
        """
        try:
            import authres  # noqa: F401  (dkimpy needs it to read the results)
            import dkim
        except ImportError:
            raise ConfigError(_INSTALL) from None
        if any(c in authentication_results for c in "\r\n\0"):
            raise MessageError("authentication_results: a line break would inject a field")
        results = authentication_results.strip() or "none"
        head = f"Authentication-Results: {self.authserv_id}; {results}\r\n".encode()
        message = head + data
        try:
            lines: list[bytes] = dkim.arc_sign(
                message,
                self.selector.encode(),
                self.domain.encode(),
                self._pem,
                self.authserv_id.encode(),
                timestamp=timestamp,
            )
        except dkim.DKIMException as exc:
            raise MessageError(f"ARC sealing failed: {exc}") from None
        if not lines:
            raise MessageError(
                "the message has ARC sets already: give the result of validating them "
                "(arc=pass or arc=fail) in authentication_results"
            )
        return b"".join(lines) + message


def _rsa_pem(key: KeyInput) -> bytes:
    """The key as PKCS#1 PEM for dkimpy, checked to be RSA; errors never quote it."""
    require_cryptography()
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    loaded: object = key
    if (isinstance(key, str) and _PEM_MARK not in key) or isinstance(key, os.PathLike):
        try:
            loaded = Path(key).read_bytes()
        except OSError as exc:
            raise ConfigError(f"key: cannot read {os.fspath(key)!r}: {exc.strerror}") from None
    if isinstance(loaded, str):
        loaded = loaded.encode()
    if isinstance(loaded, bytes):
        try:
            loaded = serialization.load_pem_private_key(loaded, password=None)
        except (ValueError, TypeError):
            raise ConfigError("key: not a PEM private key without a password") from None
    if not isinstance(loaded, RSAPrivateKey):
        raise ConfigError("key: ARC seals with RSA only (RFC 8617: rsa-sha256)")
    rsa: RSAPrivateKey = loaded
    return rsa.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
