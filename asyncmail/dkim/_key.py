"""DKIM private keys: loaded and checked once, at configuration, never shown.

A key is an RSA key of at least 1024 bits (2048 recommended, RFC 8301) or an Ed25519 key
(RFC 8463), given as a PEM string or bytes (PKCS#1 or PKCS#8), a path to a PEM file, a
``cryptography`` private key object, or an Ed25519 seed as 32 bytes in base64 (the form
dkimpy's ``dknewkey`` writes). Errors name the source (a path) and what is wrong, never the
key material: the exception from the parser is not chained, since its text may quote it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from .._exceptions import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = ["KeyInput", "Loaded", "load_key", "require_cryptography"]

#: What ``DKIM(key=...)`` takes.
KeyInput: TypeAlias = "str | bytes | os.PathLike[str] | RSAPrivateKey | Ed25519PrivateKey"

#: RSA keys shorter than this are refused (RFC 8301 3.2: verifiers must not accept them).
MIN_RSA_BITS = 1024
_INSTALL = "DKIM signing needs the 'cryptography' package: pip install 'asyncmail[dkim]'"
_PEM_MARK = "-----BEGIN"


@dataclass(frozen=True, slots=True)
class Loaded:
    """A checked private key: what to sign with and what to publish.

    Attributes:
        sign_digest: Signs a SHA-256 digest: RSA PKCS#1 v1.5 with the digest taken as
            SHA-256's (RFC 8017 9.2), or Ed25519 over the 32 octets themselves (RFC 8463 3).
        algorithm: ``"rsa-sha256"`` or ``"ed25519-sha256"``, the ``a=`` tag.
        public: The ``p=`` value of the DNS TXT record, base64.
        bits: The RSA modulus size; 256 for Ed25519.
    """

    sign_digest: Callable[[bytes], bytes]
    algorithm: str
    public: str
    bits: int


def require_cryptography() -> None:
    """Raises: ConfigError: ``cryptography`` is not installed (saying how to install it)."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ConfigError(_INSTALL) from None


def load_key(key: object) -> Loaded:
    """Load and check a DKIM private key (see the module documentation for the forms).

    Raises:
        ConfigError: ``cryptography`` is missing, the key does not parse, is not RSA or
            Ed25519, or is an RSA key under 1024 bits. The text never holds key material.
    """
    require_cryptography()
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return _checked(key, "the key object")
    if isinstance(key, bytes | bytearray):
        return _from_text(bytes(key), "the key")
    if isinstance(key, str):
        if _PEM_MARK in key:
            return _from_text(key.encode("ascii", "replace"), "the key")
        seed = _ed25519_seed(key.encode("ascii", "replace"))
        if seed is not None and not os.path.exists(key):
            return _checked(ed25519.Ed25519PrivateKey.from_private_bytes(seed), "the key")
        return _from_path(key)
    if isinstance(key, os.PathLike):
        return _from_path(os.fspath(key))
    raise ConfigError(
        f"dkim key: expected PEM text, a path, or a cryptography private key, "
        f"not {type(key).__name__}"
    )


def _from_path(path: str | bytes) -> Loaded:
    where = f"the key file {os.fsdecode(path)!r}"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(f"dkim key: cannot read {where}: {exc.strerror}") from None
    return _from_text(data, where)


def _from_text(data: bytes, where: str) -> Loaded:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if _PEM_MARK.encode() not in data:
        seed = _ed25519_seed(data.strip())
        if seed is None:
            raise ConfigError(f"dkim key: {where} is neither a PEM private key nor an Ed25519 seed")
        return _checked(ed25519.Ed25519PrivateKey.from_private_bytes(seed), where)
    try:
        private = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"dkim key: {where} is encrypted; give it without a password") from None
    except Exception:  # ValueError mostly; an unusual key type may fail in other ways
        raise ConfigError(f"dkim key: {where} is not a PEM private key that parses") from None
    return _checked(private, where)


def _ed25519_seed(text: bytes) -> bytes | None:
    if len(text) != 44:  # 32 bytes in base64
        return None
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return seed if len(seed) == 32 else None


def _checked(private: object, where: str) -> Loaded:
    from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(private, rsa.RSAPrivateKey):
        bits = private.key_size
        if bits < MIN_RSA_BITS:
            raise ConfigError(
                f"dkim key: {where} is a {bits}-bit RSA key; RSA keys need at least "
                f"{MIN_RSA_BITS} bits (RFC 8301), and 2048 is recommended"
            )
        der = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        rsa_key, pkcs1, prehashed = private, padding.PKCS1v15(), utils.Prehashed(SHA256())

        def rsa_sign(digest: bytes) -> bytes:
            return rsa_key.sign(digest, pkcs1, prehashed)

        return Loaded(rsa_sign, "rsa-sha256", base64.b64encode(der).decode("ascii"), bits)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Loaded(private.sign, "ed25519-sha256", base64.b64encode(raw).decode("ascii"), 256)
    raise ConfigError(
        f"dkim key: {where} is a {type(private).__name__.removeprefix('_')}; DKIM signs with "
        f"RSA (rsa-sha256) or Ed25519 (ed25519-sha256) keys"
    )
