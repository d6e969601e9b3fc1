"""Email addresses: parsing "Name <addr>", validating addr-specs, and their wire forms.

One validator (:func:`validate_addr_spec`) serves both :class:`~asyncmail.Message` and
stdlib ``EmailMessage`` envelopes, so the two cannot disagree about what is deliverable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

from .._exceptions import MessageError
from ._headers import check_text, encode_words, needs_encoding

__all__ = [
    "Address",
    "AddressInput",
    "ascii_domain",
    "format_address",
    "parse_address",
    "parse_addresses",
    "split_address_list",
    "unique_addresses",
    "validate_addr_spec",
    "wire_addr_spec",
]

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LDH = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# The common case in one match: an ASCII dot-atom local part at an ASCII hostname.
_FAST = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@{_LDH}(?:\.{_LDH})*")
_DOT_ATOM_U = re.compile(rf"(?:{_ATEXT}|[^\x00-\x7f])+(?:\.(?:{_ATEXT}|[^\x00-\x7f])+)*")
# A quoted local part without spaces or angle brackets (they confuse envelopes).
_QUOTED_U = re.compile(r'"(?:[!#-;=?-\[\]-~]|[^\x00-\x7f]|\\[!-~])+"')
_LABEL = re.compile(_LDH)
_ATOM_PHRASE = re.compile(rf"{_ATEXT}+(?: {_ATEXT}+)*")
_PLAIN_NAME = re.compile(r"[^\s](?: ?[^\s])*")
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_MAX_RAW_NAME = 70  # longer display names become folded encoded-words


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: an optional display name and an addr-spec (Unicode allowed).

    Parsing strips a display name and collapses its whitespace runs to one space, as readers
    of a phrase do.

    Attributes:
        name: The display name, ``""`` when there is none.
        addr: The addr-spec, such as ``"zhang@example.net"`` or ``"user@例え.jp"``.
    """

    name: str
    addr: str

    def __str__(self) -> str:
        if not self.name:
            return self.addr
        return f"{_quote_phrase(self.name)} <{self.addr}>"


AddressInput: TypeAlias = "str | tuple[str, str] | Address"
# Type tuples built once: ``isinstance(x, A | B)`` would build a union object every call.
_HASHABLE_INPUT = (str, tuple)
_SINGLE_INPUT = (str, Address)


def validate_addr_spec(addr: object, field: str) -> str:
    """Return ``addr`` if it is a deliverable addr-spec, else raise.

    Accepts a dot-atom or quoted local part (Unicode allowed, RFC 6532) and a domain of valid
    labels that the IDNA codec can encode, or an address literal such as ``[192.0.2.1]``.
    Spaces, angle brackets, parameters and control characters are rejected.

    Raises:
        MessageError: naming ``field`` and the address.
    """
    if not isinstance(addr, str):
        raise MessageError(f"{field}: expected an address string, got {type(addr).__name__}")
    local, at, domain = addr.rpartition("@")
    # The most common local part, letters and digits, at an ASCII domain seen before: a
    # few str methods and a set lookup cost a third of the regex below.
    if (
        local.isalnum()
        and local.isascii()
        and len(local) <= _MAX_LOCAL
        and (domain in _ascii_domains or _is_ascii_domain(domain))
    ):
        return addr
    if _FAST.fullmatch(addr):
        if len(addr) <= _MAX_LOCAL:
            return addr
        if len(local) <= _MAX_LOCAL and len(domain) <= _MAX_DOMAIN:
            return addr
    if (
        not at
        or not addr.isprintable()
        or not (_DOT_ATOM_U.fullmatch(local) or _QUOTED_U.fullmatch(local))
        or len(local.encode("utf-8", "surrogatepass")) > _MAX_LOCAL
    ):
        raise MessageError(f"{field}: invalid address {addr!r}")
    try:
        ascii_domain(domain)
        if not local.isascii():
            local.encode("utf-8")
    except (MessageError, UnicodeError):
        raise MessageError(f"{field}: invalid address {addr!r}") from None
    return addr


# Valid ASCII domains met lately, bounded (cleared when full): senders' and recipients'
# domains repeat across messages.
_ascii_domains: set[str] = set()
_MAX_KNOWN_DOMAINS = 4096


def _is_ascii_domain(domain: str) -> bool:
    """Whether ``domain`` is ASCII and valid (``ascii_domain`` takes it as it is); learn it."""
    if not domain.isascii():
        return False
    try:
        ascii_domain(domain)  # (for an ASCII domain, the same rules as _FAST's, or a literal)
    except MessageError:
        return False
    if len(_ascii_domains) >= _MAX_KNOWN_DOMAINS:
        _ascii_domains.clear()
    _ascii_domains.add(domain)
    return True


@lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str:
    """Return the ASCII (IDNA) form of ``domain``; address literals are returned unchanged.

    Raises:
        MessageError: when the domain is not a valid host name or address literal.
    """
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal[:5].lower() == "ipv6:":
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            raise MessageError(f"invalid address literal {domain!r}") from None
        return domain
    if domain.isascii():
        encoded = domain
    else:
        try:
            encoded = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise MessageError(f"invalid domain {domain!r}") from None
    labels = encoded.split(".")
    if len(encoded) > _MAX_DOMAIN or not all(_LABEL.fullmatch(label) for label in labels):
        raise MessageError(f"invalid domain {domain!r}")
    return encoded


def unique_addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Return valid addr-specs without repeats of a mailbox, in order, first spelling kept.

    Two spellings are one mailbox when their local parts are equal (case there is the
    receiving host's business, RFC 5321) and their domains are equal in their IDNA form,
    ignoring case: ``user@例え.jp`` and ``user@XN--R8JZ45G.jp`` get one RCPT TO.
    """
    seen: set[tuple[str, str]] = set()
    unique: list[str] = []
    for addr in addresses:
        local, _, domain = addr.rpartition("@")
        key = (local, (domain if domain.isascii() else ascii_domain(domain)).lower())
        if key not in seen:
            seen.add(key)
            unique.append(addr)
    return tuple(unique)


def wire_addr_spec(addr: str, *, smtputf8: bool) -> str:
    """Return ``addr`` as it may appear on the wire: IDNA domain unless ``smtputf8``.

    Raises:
        MessageError: for a non-ASCII local part when ``smtputf8`` is false.
    """
    if smtputf8 or addr.isascii():
        return addr
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        raise MessageError(
            f"address {addr!r} has a non-ASCII local part: it needs a server with SMTPUTF8"
        )
    return f"{local}@{ascii_domain(domain)}"


def parse_address(value: object, field: str) -> Address:
    """Parse ``"Name <addr>"``, ``"addr"``, ``("Name", "addr")`` or an :class:`Address`.

    Raises:
        MessageError: naming ``field``, for a malformed value or an invalid address.
    """
    if field == "sender" and isinstance(value, _HASHABLE_INPUT):
        try:
            return _parse_sender(value, field)  # senders repeat across messages
        except TypeError:  # an unhashable tuple: let _parse say what is wrong
            pass
    return _parse(value, field)


def _parse(value: object, field: str) -> Address:
    # (the most common input first: this runs for every recipient)
    if isinstance(value, str):
        check_text(value, field)
        text = value.strip()
        if text.endswith(">"):
            cut = text.rfind("<")
            if cut < 0:
                raise MessageError(f"{field}: invalid address {value!r}")
            addr = text[cut + 1 : -1]
            name = _unquote(text[:cut].strip())
        else:
            name, addr = "", text
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise MessageError(f"{field}: expected a (name, address) pair, got {value!r}")
        name, addr = value
        check_text(name, field)
        check_text(addr, field)
        if "@" in name and _is_addr_spec(name, field):
            raise MessageError(
                f"{field}: {value!r} is ambiguous: a 2-tuple is one (name, address) pair, and "
                f"{name!r} is an address itself. For two recipients pass a list "
                f"[{name!r}, {addr!r}]; for a named one, Address(name, address)"
            )
    elif isinstance(value, Address):
        name, addr = check_text(value.name, field), check_text(value.addr, field)
    else:
        raise MessageError(f"{field}: expected an address, got {type(value).__name__}")
    if name and not _PLAIN_NAME.fullmatch(name):
        name = " ".join(name.split())  # a phrase's whitespace runs mean one space
    # Address(name=..., addr=...) without its __init__, whose frozen-dataclass field
    # setting costs four times the slots' own setters: an Address is made per recipient.
    address: Address = _new_address(Address)
    _set_name(address, name)
    _set_addr(address, validate_addr_spec(addr, field))
    return address


_new_address = object.__new__
_set_name = Address.__dict__["name"].__set__
_set_addr = Address.__dict__["addr"].__set__


_parse_sender = lru_cache(maxsize=256)(_parse)


def _is_addr_spec(text: str, field: str) -> bool:
    """Whether ``text`` (a display name given in a pair) is an address by itself."""
    try:
        validate_addr_spec(text.strip(), field)
    except MessageError:
        return False
    return True


def parse_addresses(value: object, field: str) -> tuple[Address, ...]:
    """Parse one address or a list of them; a 2-tuple of strings is one ``(name, addr)`` pair.

    Raises:
        MessageError: naming ``field[i]`` for the first invalid entry.
    """
    if isinstance(value, str):
        return (_parse(value, field),)
    if value is None or value == ():
        return ()
    if isinstance(value, _SINGLE_INPUT) or (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    ):
        return (_parse(value, field),)
    if not isinstance(value, Iterable):
        raise MessageError(f"{field}: expected an address or a list, got {type(value).__name__}")
    return tuple(_parse(item, f"{field}[{i}]") for i, item in enumerate(value))


def split_address_list(text: str) -> list[str]:
    """Split a header value on the commas between addresses (not in quotes or brackets)."""
    items: list[str] = []
    start, quoted, escaped, angle = 0, False, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch in "<>":
            angle = ch == "<"
        elif ch == "," and not quoted and not angle:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item.strip()]


def format_address(address: Address, *, smtputf8: bool) -> str:
    """Render ``address`` for an address header: ASCII unless ``smtputf8`` allows UTF-8.

    Raises:
        MessageError: for a non-ASCII local part when ``smtputf8`` is false.
    """
    addr = address.addr
    if not addr.isascii():
        addr = wire_addr_spec(addr, smtputf8=smtputf8)
    if not address.name:
        return addr
    return f"{_phrase(address.name)} <{addr}>"


@lru_cache(maxsize=1024)
def _phrase(name: str) -> str:
    """A display name as a phrase: atoms, a quoted-string, or folded encoded-words."""
    if len(name) > _MAX_RAW_NAME or not name.isascii() or needs_encoding(name):
        return "\r\n ".join(encode_words(name))
    return _quote_phrase(name)


def _quote_phrase(name: str) -> str:
    if _ATOM_PHRASE.fullmatch(name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return re.sub(r"\\(.)", r"\1", name[1:-1])
    return name
