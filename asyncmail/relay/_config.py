"""What a relay accepts, from whom, and its limits: ``RelayConfig``, checked when made."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .._exceptions import ConfigError
from ..message._srs import SRS
from ._aliases import Aliases

__all__ = [
    "LOOPBACK",
    "Network",
    "RelayConfig",
    "load_users",
    "parse_listen",
    "parse_networks",
    "parse_user",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The clients allowed without AUTH unless told otherwise.
LOOPBACK: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
#: RFC 5321 4.5.3.1.8: a server must take at least 100 recipients.
DEFAULT_MAX_RECIPIENTS = 100
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_MAX_COMMANDS = 10_000
DEFAULT_TIMEOUT = 300.0
#: ``--relay-domains '*'``: any domain (only for clients in ``allow``, never global ones).
ANY_DOMAIN = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayConfig:
    """How a relay listens and what it accepts.

    Args:
        host: The address to listen on.
        port: The port to listen on (0: any free one).
        hostname: The relay's name: in its greeting, EHLO reply and Received fields.
        allow: The client networks that may relay without AUTH.
        relay_domains: Recipient domains any allowed client may send to (lower case);
            ``"*"`` for any domain, refused when ``allow`` holds a global network.
        aliases: Forwarding rules; their keys are accepted from allowed clients too.
        users: User name to password for AUTH (PLAIN, LOGIN): over TLS, or on loopback.
        tls: The server context for STARTTLS; None offers no STARTTLS.
        srs: Rewrites the envelope sender of forwarded mail (SRS); None leaves it.
        dkim: Sign each message with the outbox's DKIM signers (a signature on top).
        max_size: Octets a message may have (advertised as SIZE).
        max_recipients: RCPT commands accepted per message.
        max_connections: Clients at once; one more gets 421 at the greeting.
        max_commands: Commands per connection; the one past it gets 421.
        timeout: Seconds a client may stay silent.
    """

    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = field(default_factory=socket.gethostname)
    allow: tuple[Network, ...] = LOOPBACK
    relay_domains: frozenset[str] = frozenset()
    aliases: Aliases = field(default_factory=Aliases)
    users: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    tls: ssl.SSLContext | None = None
    srs: SRS | None = None
    dkim: bool = False
    max_size: int = DEFAULT_MAX_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_commands: int = DEFAULT_MAX_COMMANDS
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, not {self.port}")
        for name in ("max_size", "max_recipients", "max_connections", "max_commands"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, not {value!r}")
        if not self.timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, not {self.timeout}")
        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ConfigError(f"hostname must be a host name, not {self.hostname!r}")
        object.__setattr__(self, "relay_domains", frozenset(d.lower() for d in self.relay_domains))
        if ANY_DOMAIN in self.relay_domains:
            wide = [str(n) for n in self.allow if not (n.is_private or n.is_loopback)]
            if wide:
                raise ConfigError(
                    f"relay domains '*' with the network {wide[0]} allowed would make an open "
                    "relay: allow only loopback or private networks, or name the domains"
                )
        if isinstance(self.users, dict):
            object.__setattr__(self, "users", MappingProxyType(dict(self.users)))


def parse_listen(value: str) -> tuple[str, int]:
    """``127.0.0.1:2525`` or ``[::1]:2525`` as (host, port).

    Raises:
        ConfigError: Not HOST:PORT.
    """
    host, colon, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, such as 127.0.0.1:2525")
    return host, int(port)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (``10.0.0.0/8``) or single addresses as networks.

    Raises:
        ConfigError: A value that is neither.
    """
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"--allow {value!r}: expected a network such as 10.0.0.0/8") from None
    return tuple(networks)


def parse_user(value: str, where: str = "--auth") -> tuple[str, str]:
    """``user:password`` as a pair (the password may hold colons).

    Raises:
        ConfigError: No colon, or an empty user or password (the password is never shown).
    """
    user, colon, password = value.partition(":")
    if not colon or not user.strip() or not password:
        raise ConfigError(f"{where}: expected USER:PASSWORD")
    return user.strip(), password


def load_users(path: str | Path) -> dict[str, str]:
    """The ``user:password`` lines of a file (``#`` comments and blank lines skipped).

    Raises:
        ConfigError: The file cannot be read, or a line is malformed.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the auth file {path}: {exc}") from None
    users = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            user, password = parse_user(line.rstrip("\r\n"), f"{path} line {number}")
            users[user] = password
    return users
