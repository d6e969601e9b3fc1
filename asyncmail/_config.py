"""Configuration values: the server, pool limits, timeouts and the retry policy.

All are frozen, keyword-only dataclasses that validate themselves; change one with
``dataclasses.replace``. A server is also reachable by one URL, parsed once by
``Server.from_url``::

    smtps://user:pass@smtp.example.com          implicit TLS, port 465
    smtp://user:pass@smtp.example.com           STARTTLS required, port 587
    smtp://127.0.0.1:1025                       loopback: plaintext if STARTTLS is not offered
    smtp://relay.internal:25?tls=opportunistic  STARTTLS when offered

Other URL options: ``auth=plain|login|cram-md5``, ``ca_file=PATH``,
``local_hostname=NAME``, ``allow_plaintext_auth=true`` and ``chunking=no``. A password
holding ``#``, ``/``, ``?`` or ``@`` is written percent-encoded (``%23``, ``%2F``, ``%3F``,
``%40``); no error ever quotes the user name or password.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from ._exceptions import ConfigError

__all__ = ["PoolLimits", "RetryPolicy", "Server", "TLSMode", "Timeouts"]

DEFAULT_MAX_CONNECTIONS = 10
DEFAULT_MAX_MESSAGES_PER_CONNECTION = 100  # servers cap sessions; nodemailer uses 100 too
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTION_AGE = 300.0
DEFAULT_POOL_TIMEOUT = 30.0

TokenProvider = Callable[[], Awaitable[str]]
AUTH_MECHANISMS = ("plain", "login", "cram-md5")


class TLSMode(enum.StrEnum):
    """How a connection is protected."""

    NONE = "none"
    """Plaintext; never STARTTLS."""
    OPPORTUNISTIC = "opportunistic"
    """STARTTLS when the server offers it, plaintext otherwise."""
    STARTTLS = "starttls"
    """STARTTLS required: a server that does not offer it fails the send before MAIL FROM."""
    IMPLICIT = "implicit"
    """TLS from the first byte (SMTPS, port 465)."""


_DEFAULT_PORTS = {
    TLSMode.NONE: 25,
    TLSMode.OPPORTUNISTIC: 587,
    TLSMode.STARTTLS: 587,
    TLSMode.IMPLICIT: 465,
}


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_text(name: str, value: str | None) -> None:
    if value is not None and any(ch in value for ch in "\r\n\0"):
        raise ConfigError(f"{name} must not contain CR, LF or NUL")


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """Where and how to connect.

    Args:
        host: The server's host name or IP address.
        port: The port; by default 465 for implicit TLS, 587 for STARTTLS, 25 for none.
        tls: The TLS mode. ``None`` picks STARTTLS required, relaxed to opportunistic
            on loopback hosts (a local Postfix or capture server often has no TLS).
        username: The user for AUTH, if any.
        password: The password for AUTH. Never shown in repr, logs or errors.
        oauth_token: A coroutine function returning an OAuth2 access token for XOAUTH2.
            It is called for every new connection, and once more to refresh the token
            when AUTH fails: return a cached token while it is valid (as google-auth's
            credentials do), so a long batch does not fetch one per connection.
        ssl_context: Your own SSL context; otherwise one that verifies certificates
            and host names, TLS 1.2 at least. (The one exception: a loopback host with
            the default mode, where plaintext is allowed anyway, gets TLS without
            certificate checks when the server offers STARTTLS.)
        ca_file: A PEM file of CA certificates to trust instead of the system's; it must
            exist when the Server is made.
        local_hostname: The name sent with EHLO; by default the local FQDN.
        allow_plaintext_auth: Allow AUTH over an unencrypted connection. Off by default:
            a server advertising AUTH without TLS never receives the password.
        auth_mechanism: Use this AUTH mechanism (``plain``, ``login`` or ``cram-md5``);
            by default the best one the server offers. One mechanism is tried, once.
        chunking: Send by BDAT (CHUNKING, RFC 3030), several messages in flight per
            connection, when the server offers CHUNKING and PIPELINING; ``False`` (or
            ``?chunking=no`` in the URL) keeps to DATA.
    """

    host: str
    port: int | None = None
    tls: TLSMode | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    oauth_token: TokenProvider | None = field(default=None, repr=False)
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False)
    ca_file: str | None = None
    local_hostname: str | None = None
    allow_plaintext_auth: bool = False
    auth_mechanism: str | None = None
    chunking: bool = True

    def __post_init__(self) -> None:
        if not self.host or any(ch.isspace() or ch in "/@?#" for ch in self.host):
            raise ConfigError(f"invalid host {self.host!r}")
        if self.port is not None and not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, not {self.port}")
        if self.tls is not None and not isinstance(self.tls, TLSMode):
            try:
                object.__setattr__(self, "tls", TLSMode(self.tls))
            except ValueError:
                modes = ", ".join(m.value for m in TLSMode)
                raise ConfigError(f"tls must be one of {modes}, not {self.tls!r}") from None
        _check_text("username", self.username)
        _check_text("password", self.password)
        _check_text("local_hostname", self.local_hostname)
        if self.password is not None and self.username is None:
            raise ConfigError("a password needs a username")
        if self.oauth_token is not None and self.username is None:
            raise ConfigError("XOAUTH2 (oauth_token) needs a username")
        if self.oauth_token is not None and self.password is not None:
            raise ConfigError("give either a password or an oauth_token, not both")
        if self.auth_mechanism is not None:
            mechanism = self.auth_mechanism.lower()
            if mechanism not in AUTH_MECHANISMS:
                raise ConfigError(
                    f"auth_mechanism must be one of {', '.join(AUTH_MECHANISMS)}, "
                    f"not {self.auth_mechanism!r}"
                )
            object.__setattr__(self, "auth_mechanism", mechanism)
        if self.ssl_context is not None and self.ca_file is not None:
            raise ConfigError("give either ssl_context or ca_file, not both")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            what = "is not a file" if os.path.exists(self.ca_file) else "does not exist"
            raise ConfigError(f"ca_file {self.ca_file!r} {what}")

    @property
    def tls_mode(self) -> TLSMode:
        """The effective TLS mode (``tls`` with its default resolved)."""
        if self.tls is not None:
            return self.tls
        return TLSMode.OPPORTUNISTIC if self.is_loopback else TLSMode.STARTTLS

    @property
    def effective_port(self) -> int:
        """The port to connect to."""
        return self.port if self.port is not None else _DEFAULT_PORTS[self.tls_mode]

    @property
    def is_loopback(self) -> bool:
        """True for localhost and loopback addresses."""
        return _is_loopback(self.host)

    @property
    def has_credentials(self) -> bool:
        """True when AUTH will be attempted."""
        return self.username is not None

    def make_ssl_context(self) -> ssl.SSLContext:
        """The SSL context to use: the user's own, or a verifying one (TLS 1.2+)."""
        if self.ssl_context is not None:
            return self.ssl_context
        if self.tls is None and self.is_loopback and self.ca_file is None:
            # the loopback default would accept plaintext, so encryption without
            # authentication is strictly better: a local Postfix's self-signed certificate
            # must not turn "works in plaintext" into "fails with TLS"
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            return ctx
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    @property
    def display(self) -> str:
        """A URL-like description without secrets, for logs and errors."""
        user = f"{self.username}@" if self.username else ""
        return f"{self.tls_mode.value}://{user}{self.host}:{self.effective_port}"

    @classmethod
    def from_url(cls, url: str, **overrides: object) -> Server:
        """Parse ``smtp://`` or ``smtps://`` URLs; user and password are percent-decoded.

        No part of the user name or password ever appears in an error: when the URL is
        ambiguous (an unencoded ``#``, ``/`` or ``?`` in the password ends the host part
        early), the error says to percent-encode it instead of guessing.

        Raises:
            ConfigError: The URL is not a valid SMTP URL.
        """
        kwargs = _parse_url(url)
        kwargs.update(overrides)
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls) -> Server:
        """Read the server from ``ASYNCMAIL_URL``.

        Raises:
            ConfigError: The variable is unset or invalid.
        """
        url = os.environ.get("ASYNCMAIL_URL")
        if not url:
            raise ConfigError("no server given and ASYNCMAIL_URL is not set")
        return cls.from_url(url)


#: The schemes of the Mailer's socket-free backends (``asyncmail.engine._local``).
LOCAL_SCHEMES = ("memory", "console", "file", "null")

_SCHEME_HINT = (
    "write smtp:// (STARTTLS, port 587) or smtps:// (implicit TLS, port 465) before the host, "
    "as in smtps://user:password@smtp.example.com; for development and tests a Mailer also "
    "takes memory://, console://, file:///path/to/dir or null:// (no server, no socket)"
)
_PERCENT_HINT = "percent-encode the password (%23 for #, %2F for /, %3F for ?, %40 for @)"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_AUTHORITY_END = re.compile(r"[/?#]")


def _parse_url(url: str) -> dict[str, object]:
    """Split an SMTP URL into ``Server`` keyword arguments.

    The URL is split by hand rather than by ``urllib``, whose errors quote the text they
    choke on (a port that is really half a password, say). Every message here is built
    from fixed text, the host and the options, never from the user info, which is the
    text before the last ``@`` of the host part. An ``@`` after the host part means that
    split is in doubt, so nothing is guessed.
    """
    scheme, authority, tail = _split_url(url)
    userinfo, _, hostport = authority.rpartition("@")
    host, port = _host_and_port(hostport)
    query = _url_options(tail)
    tls: TLSMode | None = TLSMode.IMPLICIT if scheme == "smtps" else None
    if "tls" in query:
        try:
            tls = TLSMode(query.pop("tls").lower())
        except ValueError:
            modes = ", ".join(m.value for m in TLSMode)
            raise ConfigError(f"URL option tls must be one of {modes}") from None
    if scheme == "smtps" and tls is not TLSMode.IMPLICIT:
        raise ConfigError("smtps:// means implicit TLS; use smtp:// with ?tls=...")
    if tls is TLSMode.IMPLICIT and scheme == "smtp" and port is None:
        port = _DEFAULT_PORTS[TLSMode.IMPLICIT]
    user, colon, password = userinfo.partition(":")
    kwargs: dict[str, object] = {
        "host": host,
        "port": port,
        "tls": tls,
        "username": unquote(user) if user else None,
        "password": unquote(password) if colon else None,
    }
    if "auth" in query:
        kwargs["auth_mechanism"] = query.pop("auth")
    for key in ("local_hostname", "ca_file"):
        if key in query:
            kwargs[key] = query.pop(key)
    if "allow_plaintext_auth" in query:
        flag = query.pop("allow_plaintext_auth").lower()
        kwargs["allow_plaintext_auth"] = flag in ("1", "true", "yes")
    if "chunking" in query:
        kwargs["chunking"] = _switch("chunking", query.pop("chunking"))
    if query:
        raise ConfigError(f"unknown SMTP URL option(s): {', '.join(sorted(query))}")
    return kwargs


def _switch(option: str, value: str) -> bool:
    """An on/off URL option's value."""
    word = value.lower()
    if word in ("1", "true", "yes", "on"):
        return True
    if word in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"URL option {option} must be yes or no")


def is_local_url(url: object) -> bool:
    """Whether ``url`` names a socket-free backend (``memory://``, ``console://``...)."""
    if not isinstance(url, str):
        return False
    scheme, sep, _ = url.strip().partition("://")
    return bool(sep) and scheme.lower() in LOCAL_SCHEMES


def _split_url(url: str) -> tuple[str, str, str]:
    """The scheme (lower case), the host part with its user info, and the rest."""
    if not isinstance(url, str):
        raise ConfigError(f"SMTP URL must be a str, not {type(url).__name__}")
    url = url.strip()
    if _CONTROL.search(url):
        raise ConfigError("SMTP URL must not contain control characters (CR, LF, tab...)")
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ConfigError(f"SMTP URL has no scheme: {_SCHEME_HINT}")
    if scheme.lower() in LOCAL_SCHEMES:
        raise ConfigError(
            f"{scheme.lower()}:// is one of the Mailer's backends without a server, not an SMTP "
            "server: give the URL to Mailer() (or set ASYNCMAIL_URL to it) rather than to "
            "Server or Relay, and not in a list of relays"
        )
    if scheme.lower() not in ("smtp", "smtps"):
        raise ConfigError(f"SMTP URL must start with smtp:// or smtps://: {_SCHEME_HINT}")
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest, "") if end is None else (rest[: end.start()], rest[end.start() :])
    if "@" in tail:
        raise ConfigError(
            "SMTP URL has an '@' after its host part, so the user name or password seems to "
            f"hold an unencoded '#', '/' or '?': {_PERCENT_HINT}. An '@' in an option value "
            "is written %40."
        )
    return scheme.lower(), authority, tail


def _host_and_port(hostport: str) -> tuple[str, int | None]:
    """The host (lower case, an IPv6 literal without brackets) and the port, if given."""
    if hostport.startswith("["):
        close = hostport.find("]")
        host, after = hostport[1:close], hostport[close + 1 :]
        if close < 0 or not _is_ipv6(host):
            raise ConfigError("SMTP URL has an invalid IPv6 address in [brackets]")
        if after and not after.startswith(":"):
            raise ConfigError("SMTP URL has text after the ] of its IPv6 address")
        port_text = after[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise ConfigError(f"SMTP URL has no host: {_SCHEME_HINT}")
    if not port_text:
        return host.lower(), None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ConfigError("the port in the SMTP URL must be a number from 1 to 65535")
    return host.lower(), int(port_text)


def _is_ipv6(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv6Address)
    except ValueError:
        return False


def _url_options(tail: str) -> dict[str, str]:
    """The ``?name=value`` options of what follows the host part (percent-decoded)."""
    if "#" in tail:
        raise ConfigError("SMTP URL must not have a #fragment (a # in a value is written %23)")
    path, _, query = tail.partition("?")
    if path not in ("", "/"):
        raise ConfigError("SMTP URL must not have a path after the host (a / is written %2F)")
    return dict(parse_qsl(query, keep_blank_values=True))


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """One timeout per SMTP phase, in seconds. Every timeout closes the connection.

    A timeout on ``final_reply`` (after the final dot) gives an UNKNOWN outcome.
    """

    connect: float = 10.0
    greeting: float = 30.0
    command: float = 30.0
    data_start: float = 30.0
    data_transfer: float = 120.0
    final_reply: float = 120.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"timeout {name} must be a positive number, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolLimits:
    """Limits of the connection pool.

    Args:
        max_connections: Open connections at most, busy or idle.
        max_messages_per_connection: Transactions before a connection is retired.
        idle_timeout: Seconds an idle connection is kept.
        max_connection_age: Seconds after which a connection is retired when released.
        pool_timeout: Seconds a send waits for a free connection.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_messages_per_connection: int = DEFAULT_MAX_MESSAGES_PER_CONNECTION
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connection_age: float = DEFAULT_MAX_CONNECTION_AGE
    pool_timeout: float = DEFAULT_POOL_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_messages_per_connection"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, not {value!r}")
        for name in ("idle_timeout", "max_connection_age", "pool_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name} must be a positive number, not {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """When and how often a transient failure is retried.

    Args:
        attempts: Transactions per message at most, the first included.
        max_time: Seconds from the first attempt after which no retry starts.
        base_delay: The first backoff delay; it doubles with each retry.
        max_delay: The cap on one backoff delay.
        jitter: Randomise each delay ("full jitter") so retries do not march in step.
        retry_unknown: Also retry UNKNOWN outcomes (at-least-once sending). The
            Message-ID stays the same, so duplicates can be recognised.
    """

    attempts: int = 3
    max_time: float = 120.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True
    retry_unknown: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError(f"attempts must be an integer >= 1, not {self.attempts!r}")
        for name in ("max_time", "max_delay"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.base_delay < 0:
            raise ConfigError("base_delay must not be negative")
