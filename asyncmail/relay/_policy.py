"""The relay's decisions, without I/O: who may relay, where a recipient goes, the trace field.

A client that has not authenticated may relay only from a network in ``allow``, and only to
recipients an alias rule names or whose domain is a relay domain. An authenticated client
may relay to any recipient. AUTH itself is offered only over TLS or to a loopback client.

With SRS, a bounce to an address the relay's SRS made goes back where the address says (the
original sender, or the first forwarder for SRS1), from any client: that is what the SRS hash
is for, so only addresses the relay itself made are routed, and a forged or expired one gets
a 550. It is the one thing a client outside ``allow`` may send.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .._exceptions import InvalidToken, MessageError
from ..message._srs import SRS
from ._config import ANY_DOMAIN, RelayConfig

__all__ = [
    "CLIENT_NOT_ALLOWED",
    "RELAY_DENIED",
    "Route",
    "auth_refusal",
    "bounce_route",
    "client_allowed",
    "is_loopback",
    "received_field",
    "route",
    "with_protocol",
]

CLIENT_NOT_ALLOWED = "554 5.7.1 Client host not allowed to relay; authenticate first"
RELAY_DENIED = "550 5.7.1 Relaying denied"
AUTH_NOT_OFFERED = "502 5.5.1 AUTH not available"
AUTH_NEEDS_TLS = "538 5.7.11 Encryption required for requested authentication mechanism"
INVALID_SRS = "550 5.1.1 Invalid or expired SRS address"

# RFC 5321 Domain: dot-separated labels of letters, digits and hyphens
_DOMAIN = re.compile(
    r"(?i)^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_LITERAL = re.compile(r"^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$")


@dataclass(frozen=True, slots=True)
class Route:
    """Where one accepted RCPT goes: its targets, and which of them are forwarded."""

    rcpt: str
    local: tuple[str, ...]
    forwarded: tuple[str, ...]


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str) -> bool:
    """Whether the client's address is a loopback one (127.0.0.0/8, ::1)."""
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def client_allowed(config: RelayConfig, address: str) -> bool:
    """Whether a client at ``address`` may relay without AUTH."""
    ip = _ip(address)
    return ip is not None and any(ip in network for network in config.allow)


def auth_refusal(config: RelayConfig, address: str, tls: bool) -> str | None:
    """The reply refusing AUTH to this client now, or None when it may authenticate."""
    if not config.users:
        return AUTH_NOT_OFFERED
    if not tls and not is_loopback(address):
        return AUTH_NEEDS_TLS
    return None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def bounce_route(config: RelayConfig, rcpt: str) -> Route | str | None:
    """Where mail to an SRS address of ours goes back to, or the refusal of a forged or
    expired one; None when ``rcpt`` is not such an address (or there is no SRS)."""
    srs = config.srs
    if srs is None or _domain(rcpt) != srs.domain.lower() or not SRS.is_srs(rcpt):
        return None
    try:
        back = srs.reverse(rcpt)
    except (InvalidToken, MessageError):
        return INVALID_SRS
    return Route(rcpt, (), (back,))


def route(config: RelayConfig, rcpt: str, *, authenticated: bool) -> Route | None:
    """Where mail to ``rcpt`` goes; None when relaying to it is denied.

    An alias rule's targets replace ``rcpt``. A target is *forwarded* (its sender gets SRS)
    unless it is ``rcpt`` itself or in a relay domain named in the configuration.
    """
    targets = config.aliases.targets(rcpt)
    if targets is None:
        if authenticated or ANY_DOMAIN in config.relay_domains:
            return Route(rcpt, (rcpt,), ())
        if _domain(rcpt) in config.relay_domains:
            return Route(rcpt, (rcpt,), ())
        return None
    local: list[str] = []
    forwarded: list[str] = []
    for target in targets:
        here = target.lower() == rcpt.lower() or _domain(target) in config.relay_domains
        (local if here else forwarded).append(target)
    return Route(rcpt, tuple(local), tuple(forwarded))


def with_protocol(*, esmtp: bool, tls: bool, auth: bool, smtputf8: bool) -> str:
    """The ``with`` keyword of a Received field: RFC 3848 (ESMTPSA...), RFC 6531 (UTF8SMTP...)."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


def _client_name(ehlo: str | None, ip: str) -> str:
    """The From-domain of the trace field: the EHLO name when it is one, else the address."""
    literal = f"[{ip}]" if ":" not in ip else f"[IPv6:{ip}]"
    if ehlo and (_DOMAIN.match(ehlo) or _LITERAL.match(ehlo)):
        return f"{ehlo} ({literal})"
    return f"{literal} ({literal})"


def received_field(
    *,
    ehlo: str | None,
    ip: str,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipients: tuple[str, ...],
    now: datetime | None = None,
) -> bytes:
    """The Received trace field a relay prepends (RFC 5321 4.4), folded, CRLF-terminated.

    ``for <rcpt>`` is added only for a message to one recipient: naming several would tell
    each of them who else got it.
    """
    when = email.utils.format_datetime(now or datetime.now(UTC))
    lines = [
        f"Received: from {_client_name(ehlo, ip)}",
        f"\tby {hostname} (asyncmail relay) with {protocol} id {queue_id}",
    ]
    if len(recipients) == 1:
        lines.append(f"\tfor <{recipients[0]}>; {when}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{when}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
