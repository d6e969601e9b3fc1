"""Delivery status notifications (RFC 3461): what to ask the servers on the way to report.

A ``DSN`` says which events a recipient's notification is sent for (``NOTIFY``), how much of
the message a bounce returns (``RET``), an id for the whole message that comes back in every
notification (``ENVID``) and whether to name each original recipient (``ORCPT``). The
parameters go out only to a server that offers DSN; ``required=True`` refuses a server that
does not, before any command is sent.

The values travel as xtext (RFC 3461 section 4): every character outside ``!``..``~``, and
``+`` and ``=``, becomes ``+XX``. An address with a non-ASCII local part goes in ORCPT as
``utf-8;`` and its RFC 6533 utf-8-addr-xtext (``\\x{E9}`` for é), itself valid xtext.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .._exceptions import ConfigError

__all__ = [
    "DSN",
    "ENVID_MAX",
    "ORCPT_MAX",
    "orcpt",
    "utf8_addr_xtext",
    "utf8_addr_xtext_decode",
    "xtext",
    "xtext_decode",
]

#: The events NOTIFY can name, in the order the parameter lists them.
EVENTS = ("success", "failure", "delay")
#: The longest ENVID value as sent, in characters (RFC 3461 section 4.4).
ENVID_MAX = 100
#: The longest ORCPT value as sent, in characters (RFC 3461 section 4.2).
ORCPT_MAX = 500
_RET = {"full": "FULL", "headers": "HDRS"}
_XTEXT_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {"+", "="}
_QCHAR = _XTEXT_SAFE - {"\\"}
_HEXCHAR = re.compile(rb"\+([0-9A-F]{2})")
_EMBEDDED = re.compile(r"\\x\{([0-9A-F]{2,6})\}")


def xtext(value: str) -> str:
    """``value`` as RFC 3461 xtext: ``+XX`` for ``+``, ``=`` and all outside ``!``..``~``.

    A non-ASCII character becomes the ``+XX`` of each of its UTF-8 octets.
    """
    if all(c in _XTEXT_SAFE for c in value):
        return value
    return "".join(
        c if c in _XTEXT_SAFE else "".join(f"+{b:02X}" for b in c.encode()) for c in value
    )


def xtext_decode(value: str) -> str:
    """The text an xtext stands for (UTF-8 for octets above US-ASCII)."""
    octets = _HEXCHAR.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode())
    return octets.decode("utf-8", "replace")


def utf8_addr_xtext(address: str) -> str:
    """``address`` as RFC 6533 utf-8-addr-xtext: ``\\x{HEX}`` for all but QCHAR.

    QCHAR is printable US-ASCII without ``\\``, ``+`` and ``=``; anything else is its code
    point in upper-case hex, at least two digits. The result is printable ASCII and valid
    xtext as it is.
    """
    return "".join(c if c in _QCHAR else f"\\x{{{ord(c):02X}}}" for c in address)


def utf8_addr_xtext_decode(value: str) -> str:
    """The address a utf-8-addr-xtext stands for."""
    return _EMBEDDED.sub(lambda m: chr(int(m.group(1), 16)), value)


def orcpt(address: str) -> str | None:
    """The ORCPT value for a recipient in its SMTP form, or None when it would be too long.

    An ASCII address is ``rfc822;`` and its xtext; one with a non-ASCII local part (an
    SMTPUTF8 transaction) is ``utf-8;`` and its utf-8-addr-xtext (RFC 6533).
    """
    value = f"rfc822;{xtext(address)}" if address.isascii() else f"utf-8;{utf8_addr_xtext(address)}"
    return value if len(value) <= ORCPT_MAX else None


@dataclass(frozen=True, slots=True, kw_only=True)
class DSN:
    """What delivery status notifications to ask for (RFC 3461); sent only where offered.

    Attributes:
        notify: ``"never"``, or the events to be told about: any of ``"success"``,
            ``"failure"`` and ``"delay"`` (one name or several). Normalised to a tuple.
        ret: ``"full"`` to have a bounce return the whole message, ``"headers"`` for its
            header only; None leaves it to the server.
        envid: An id for this message that comes back in every notification: printable
            US-ASCII, at most 100 characters as sent (``+``, ``=`` and space count 3).
        orcpt: Name each original recipient (ORCPT), so a notification says whom it is
            about even after forwarding.
        required: Refuse (``NotSupportedError``) a server that does not offer DSN, instead
            of sending without the parameters.

    Raises:
        ConfigError: for an unknown event, ``"never"`` with another event, an unknown
            ``ret`` or an invalid ``envid``.
    """

    notify: str | Iterable[str] = ("failure",)
    ret: Literal["full", "headers"] | None = None
    envid: str | None = None
    orcpt: bool = True
    required: bool = False
    # the parameters as they go on the wire, made once, here
    mail_params: str = field(init=False, repr=False, compare=False)
    """`` RET=.. ENVID=..`` for MAIL FROM (may be empty)."""
    notify_param: str = field(init=False, repr=False, compare=False)
    """`` NOTIFY=..`` for each RCPT TO."""

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        events = _events(self.notify)
        setattr_(self, "notify", events)
        setattr_(self, "notify_param", f" NOTIFY={','.join(events).upper()}")
        params = ""
        if self.ret is not None:
            if self.ret not in _RET:
                raise ConfigError(f"DSN ret must be 'full', 'headers' or None, not {self.ret!r}")
            params += f" RET={_RET[self.ret]}"
        if self.envid is not None:
            params += f" ENVID={_envid(self.envid)}"
        setattr_(self, "mail_params", params)
        for name in ("orcpt", "required"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"DSN {name} must be True or False")


def _events(notify: object) -> tuple[str, ...]:
    if isinstance(notify, str):
        notify = (notify,)
    if not isinstance(notify, Iterable):
        raise ConfigError(f"DSN notify must be 'never' or events, not {notify!r}")
    given: set[str] = set()
    for event in notify:
        if not isinstance(event, str) or event.lower() not in (*EVENTS, "never"):
            raise ConfigError(
                f"DSN notify: unknown event {event!r}; use 'never' or any of "
                "'success', 'failure' and 'delay'"
            )
        given.add(event.lower())
    if not given:
        raise ConfigError("DSN notify: name at least one event, or 'never'")
    if "never" in given:
        if len(given) > 1:
            raise ConfigError("DSN notify: 'never' cannot be combined with other events")
        return ("never",)
    return tuple(e for e in EVENTS if e in given)


def _envid(envid: object) -> str:
    if not isinstance(envid, str) or not envid:
        raise ConfigError(f"DSN envid must be a non-empty string, not {envid!r}")
    if not all(" " <= c <= "~" for c in envid):
        raise ConfigError(f"DSN envid must be printable US-ASCII: {envid!r}")
    encoded = xtext(envid)
    if len(encoded) > ENVID_MAX:
        raise ConfigError(
            f"DSN envid is {len(encoded)} characters as sent (xtext), more than {ENVID_MAX}"
        )
    return encoded
