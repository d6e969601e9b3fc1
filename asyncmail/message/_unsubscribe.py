"""Signed unsubscribe tokens, and the check of an RFC 8058 one-click POST body.

A token carries the address, the list and when it was made, with an HMAC-SHA256 tag (cut to
128 bits) over them, all in URL-safe base64. The web app that receives the one-click POST
trusts what ``check()`` returns without looking the token up anywhere. A token is signed,
not encrypted: whoever sees the URL can read the address in it.

Layout before base64 (big-endian)::

    version (1) | issued_at, Unix seconds (4) | len(address) (2) | address | list_id | tag (16)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qsl

from .._exceptions import ConfigError, InvalidToken, MessageError
from ._address import validate_addr_spec
from ._headers import check_text
from ._list import ONE_CLICK

__all__ = ["UnsubscribeRequest", "UnsubscribeTokens", "is_one_click"]

MIN_SECRET = 16  # octets
MAX_TOKEN = 1024  # characters; a longer string is refused before any decoding
MAX_LIST_ID = 255  # octets of UTF-8
_VERSION = 1
_HEAD = struct.Struct(">BIH")
_TAG = 16
_CONTEXT = b"asyncmail unsubscribe token v1\x00"  # keeps these tags apart from other uses
_MAX_FORM_FIELDS = 32

Secret = bytes | str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsubscribeRequest:
    """What a valid token says: who wants off which list, and since when the link exists.

    Attributes:
        address: The recipient's address, as given to ``make()``.
        list_id: The list, as given to ``make()`` (``""`` for none).
        issued_at: When the token was made (UTC, to the second).
    """

    address: str
    list_id: str
    issued_at: datetime


class UnsubscribeTokens:
    """Make and check signed unsubscribe tokens (HMAC-SHA256), for one-click links.

    Args:
        secret: The key, at least 16 octets (a str counts as UTF-8), or several keys for
            rotation: the first signs, every one verifies. Never shown in ``repr()``.
        max_age: Seconds a token stays valid, or None for no limit. Gmail and Yahoo expect
            a link to keep working for a while after the mail arrives: be generous.

    Raises:
        ConfigError: No key, a key shorter than 16 octets, or ``max_age`` not positive.
    """

    __slots__ = ("_keys", "max_age")

    def __init__(self, secret: Secret | Sequence[Secret], *, max_age: float | None = None) -> None:
        given = [secret] if isinstance(secret, bytes | str) else list(secret)
        if not given:
            raise ConfigError("UnsubscribeTokens: give at least one secret")
        keys: list[bytes] = []
        for i, key in enumerate(given):
            raw = key.encode("utf-8") if isinstance(key, str) else key
            if not isinstance(raw, bytes) or len(raw) < MIN_SECRET:
                raise ConfigError(
                    f"UnsubscribeTokens: secret {i} must be at least {MIN_SECRET} octets "
                    "(use secrets.token_urlsafe(32))"
                )
            keys.append(raw)
        if max_age is not None and not max_age > 0:
            raise ConfigError(f"UnsubscribeTokens: max_age must be positive, got {max_age!r}")
        self._keys = tuple(keys)
        self.max_age = max_age

    def __repr__(self) -> str:
        return f"UnsubscribeTokens(keys={len(self._keys)}, max_age={self.max_age!r})"

    def make(self, address: str, *, list_id: str = "", issued_at: float | None = None) -> str:
        """A URL-safe token for ``address`` on ``list_id``, signed with the first secret.

        Args:
            address: The recipient's address.
            list_id: The list it unsubscribes from (such as the bare List-Id), or ``""``.
            issued_at: Unix time to put in the token; now by default.

        Raises:
            MessageError: The address is invalid, or the list id is not text of at most
                255 octets.
        """
        addr = validate_addr_spec(address, "address").encode("utf-8")
        label = check_text(list_id, "list_id").encode("utf-8")
        if len(label) > MAX_LIST_ID:
            raise MessageError(f"list_id: longer than {MAX_LIST_ID} octets")
        when = int(time.time() if issued_at is None else issued_at)
        if not 0 <= when < 1 << 32:
            raise MessageError(f"issued_at: out of range: {issued_at!r}")
        payload = _HEAD.pack(_VERSION, when, len(addr)) + addr + label
        raw = payload + _tag(self._keys[0], payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, token: str, *, now: float | None = None) -> UnsubscribeRequest:
        """What ``token`` says, if one of our secrets made it and it has not expired.

        Args:
            token: The token from the URL.
            now: Unix time to judge the age against; now by default.

        Raises:
            InvalidToken: The token is garbage, altered, signed with another secret, or
                older than ``max_age``.
        """
        payload = self._verified(token)
        when, size = _HEAD.unpack_from(payload)[1:]
        try:
            address = payload[_HEAD.size : _HEAD.size + size].decode("utf-8")
            list_id = payload[_HEAD.size + size :].decode("utf-8")
        except UnicodeDecodeError:  # pragma: no cover - only a holder of the secret gets here
            raise InvalidToken("unsubscribe token: not UTF-8") from None
        if self.max_age is not None:
            age = (time.time() if now is None else now) - when
            if age > self.max_age:
                raise InvalidToken(f"unsubscribe token: expired {int(age - self.max_age)}s ago")
        issued = datetime.fromtimestamp(when, UTC)
        return UnsubscribeRequest(address=address, list_id=list_id, issued_at=issued)

    def _verified(self, token: object) -> bytes:
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN or not token.isascii():
            raise InvalidToken("unsubscribe token: malformed")
        data = token.encode("ascii")
        try:
            raw = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            raise InvalidToken("unsubscribe token: malformed") from None
        # One token, one spelling: the decoder skips stray characters and ignores the spare
        # bits of the last one, so a token is only taken as it would have been written.
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != data:
            raise InvalidToken("unsubscribe token: malformed")
        if len(raw) < _HEAD.size + _TAG + 3:  # at least a@b
            raise InvalidToken("unsubscribe token: malformed")
        payload, tag = raw[:-_TAG], raw[-_TAG:]
        version, _, size = _HEAD.unpack_from(payload)
        if version != _VERSION or _HEAD.size + size > len(payload):
            raise InvalidToken("unsubscribe token: malformed")
        # Every key is tried, even after a match, so the time taken says nothing about which.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(_tag(key, payload), tag)
        if not matched:
            raise InvalidToken("unsubscribe token: the signature does not match")
        return payload


def _tag(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + payload, hashlib.sha256).digest()[:_TAG]


def is_one_click(body: bytes | str | Mapping[str, object], content_type: str | None = None) -> bool:
    """Whether a POST body is an RFC 8058 one-click unsubscribe (``List-Unsubscribe=One-Click``).

    Args:
        body: The raw body (``application/x-www-form-urlencoded``, or ``multipart/form-data``
            when ``content_type`` says so), or a form your web framework already parsed.
        content_type: The request's Content-Type header, needed for a multipart body.
    """
    if isinstance(body, Mapping):
        value = body.get("List-Unsubscribe")
        values = value if isinstance(value, list | tuple) else [value]
        return any(v in ("One-Click", b"One-Click") for v in values)
    if isinstance(body, str):
        body = body.encode("utf-8", "replace")
    if content_type and content_type.lower().lstrip().startswith("multipart/form-data"):
        return _multipart_one_click(body, content_type)
    try:
        text = body.decode("ascii")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return False
    return ONE_CLICK.split("=") in ([k, v] for k, v in pairs)


def _multipart_one_click(body: bytes, content_type: str) -> bool:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("utf-8", "replace")
    form = BytesParser(policy=HTTP).parsebytes(head + body)
    if not form.is_multipart():
        return False
    for part in form.iter_parts():
        if part.get_param("name", header="content-disposition") == "List-Unsubscribe":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and payload.strip() == b"One-Click":
                return True
    return False
