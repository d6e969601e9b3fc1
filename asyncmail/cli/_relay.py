"""``asyncmail relay``: accept SMTP on a local port, queue durably, deliver through --url.

Exit codes: 0 stopped by a signal after a graceful stop; 2 a usage error (a bad option, a
port that cannot be listened on, an outbox that cannot be opened); 130 a second signal cut
the sends in progress off.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import click

from .._config import Server
from .._exceptions import ConfigError, MailError, OutboxError
from ..dkim._signer import DKIM
from ..engine._mailer import Mailer
from ..engine._ratelimit import RateLimit
from ..message._srs import SRS
from ..outbox._deliver import Delivery
from ..outbox._outbox import Outbox
from ..relay._aliases import Aliases
from ..relay._config import (
    DEFAULT_MAX_COMMANDS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_RECIPIENTS,
    DEFAULT_MAX_SIZE,
    LOOPBACK,
    RelayConfig,
    load_users,
    parse_listen,
    parse_networks,
    parse_user,
)
from ..relay._relay import Relay
from ._dkim import dkim_option, dkim_signers

__all__ = ["RelayOptions", "relay", "run_relay"]

EXIT_OK, EXIT_USAGE, EXIT_CUT_OFF = 0, 2, 130


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayOptions:
    """What ``asyncmail relay`` was asked to do, checked."""

    config: RelayConfig
    outbox: str
    url: str | None
    concurrency: int = 10
    rate: str | None = None
    grace: float = 30.0
    lease_seconds: float = 30.0
    dkim: tuple[DKIM, ...] = ()


class _Signals:
    """The first SIGTERM or SIGINT stops gracefully; a second one cuts the sends off."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.stopping = anyio.Event()
        self.delivery: Delivery | None = None
        self.cut_off = False

    async def watch(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not self.stopping.is_set():
                self.echo(f"{name}: stopping; no new mail, the sends in progress may finish")
                self.stopping.set()
            else:
                self.echo(f"{name} again: stopping at once")
                self.cut_off = True
                if self.delivery is not None:
                    self.delivery.stop(now=True)
                return


async def run_relay(options: RelayOptions, echo: Callable[[str], None]) -> int:
    """Relay until signalled; returns the exit code (0, or ``EXIT_CUT_OFF``).

    Raises:
        ConfigError: A bad URL or rate, or the port cannot be listened on.
        OutboxError: The outbox cannot be opened.
    """
    server = Server.from_url(options.url) if options.url else Server.from_env()
    if options.rate is not None:
        RateLimit.parse(options.rate)
    config = options.config
    outbox = Outbox(
        options.outbox,
        lease_seconds=options.lease_seconds,
        resend_unknown=True,  # a 250 promised delivery: at-least-once, as every MTA
        dkim=options.dkim or None,
    )
    mailer = Mailer(server, max_connections=options.concurrency)
    watcher = _Signals(echo)
    relay = Relay(config, outbox)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with mailer, outbox:
            try:
                await relay.__aenter__()
            except OSError as exc:
                where = f"{config.host}:{config.port}"
                raise ConfigError(f"cannot listen on {where}: {exc.strerror or exc}") from None
            try:
                delivering = outbox.deliver(
                    mailer, concurrency=options.concurrency, rate=options.rate, grace=options.grace
                )
                watcher.delivery = delivering.delivery
                async with anyio.create_task_group() as tg:
                    tg.start_soon(watcher.watch, signals)
                    async with delivering:
                        echo(_start_line(relay, outbox, server, options))
                        await watcher.stopping.wait()
                        await relay.aclose()  # (no new mail while the sends finish)
                    tg.cancel_scope.cancel()
            finally:
                await relay.aclose()
    delivery = delivering.delivery
    how = "cut off" if watcher.cut_off else "stopped"
    echo(
        f"relay {how}: {relay.statistics().accepted} accepted, {delivery.delivered} delivered, "
        f"{delivery.failed} failed, {delivery.unknown} unknown, {delivery.retried} retried"
    )
    return EXIT_CUT_OFF if watcher.cut_off else EXIT_OK


def _start_line(relay: Relay, outbox: Outbox, server: Server, options: RelayOptions) -> str:
    config = options.config
    host = f"[{config.host}]" if ":" in config.host else config.host
    auth = ", AUTH" if config.users else ""
    tls = ", STARTTLS" if config.tls else ""
    return (
        f"relay listening on {host}:{relay.port}{tls}{auth}, queueing in {outbox.store.url}, "
        f"delivering through {server.display} (concurrency {options.concurrency})"
    )


def _tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None:
        raise ConfigError("--tls-key goes with --tls-cert")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert}: {exc}") from None
    return context


def _srs(secret_env: str | None, domain: str | None) -> SRS | None:
    if secret_env is None and domain is None:
        return None
    if secret_env is None or domain is None:
        raise ConfigError("--srs-secret-env and --srs-domain go together")
    secret = os.environ.get(secret_env)
    if not secret:
        raise ConfigError(f"--srs-secret-env: the environment variable {secret_env} is not set")
    try:
        return SRS(secret, domain)
    except MailError as exc:
        raise ConfigError(f"--srs-domain: {exc}") from None


@click.command()
@click.option("--listen", default="127.0.0.1:2525", show_default=True, metavar="HOST:PORT")
@click.option(
    "--outbox",
    "outbox_url",
    envvar="ASYNCMAIL_OUTBOX",
    show_envvar=True,
    required=True,
    help="Where accepted mail waits: sqlite:////abs/path.db or redis://host:6379/0?queue=NAME.",
)
@click.option(
    "--url",
    envvar="ASYNCMAIL_URL",
    show_envvar=True,
    help="The SMTP server to deliver through, such as smtps://user:pass@smtp.example.com.",
)
@click.option(
    "--allow",
    multiple=True,
    metavar="CIDR",
    help="A client network that may relay without AUTH; repeat for more (default: loopback).",
)
@click.option(
    "--relay-domains",
    multiple=True,
    metavar="DOMAIN[,DOMAIN...]",
    help="Recipient domains allowed clients may send to; '*' for any (loopback or private "
    "--allow networks only).",
)
@click.option(
    "--aliases",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Forwarding rules, one a line: 'alice@example.com: alice@gmail.com, bob@qq.com'.",
)
@click.option(
    "--auth-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="user:password lines; AUTH lets those users relay to anyone (over TLS or loopback).",
)
@click.option("--auth", "auth_users", multiple=True, metavar="USER:PASS", help="One AUTH user.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A PEM certificate (chain): offer STARTTLS.",
)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The certificate's private key, when not in --tls-cert.",
)
@click.option(
    "--srs-secret-env", metavar="VAR", help="SRS for forwarded mail: the secret's env var."
)
@click.option("--srs-domain", metavar="DOMAIN", help="SRS: the domain senders are rewritten to.")
@click.option("--hostname", help="The relay's name in its greeting and Received fields.")
@click.option(
    "--max-size",
    default=DEFAULT_MAX_SIZE,
    show_default=True,
    type=click.IntRange(1),
    help="Octets a message may have (SIZE); more gets 552 5.3.4.",
)
@click.option(
    "--max-recipients",
    default=DEFAULT_MAX_RECIPIENTS,
    show_default=True,
    type=click.IntRange(1),
    help="RCPTs per message; one more gets 452 4.5.3.",
)
@click.option(
    "--max-connections",
    default=DEFAULT_MAX_CONNECTIONS,
    show_default=True,
    type=click.IntRange(1),
    help="Clients at once; one more gets 421 4.7.0 as its greeting.",
)
@click.option(
    "--max-commands",
    default=DEFAULT_MAX_COMMANDS,
    show_default=True,
    type=click.IntRange(1),
    help="Commands per connection; the one past it gets 421 4.7.0 and the connection closes.",
)
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--rate", help="Messages at most per time unit, such as 200/s (shared).")
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds the sends in progress get to finish after SIGTERM or Ctrl-C.",
)
@click.option(
    "--lease-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="How long the messages of a relay that died stay with it before another takes them.",
)
@dkim_option
def relay(
    listen: str,
    outbox_url: str,
    url: str | None,
    allow: tuple[str, ...],
    relay_domains: tuple[str, ...],
    aliases: Path | None,
    auth_file: Path | None,
    auth_users: tuple[str, ...],
    tls_cert: Path | None,
    tls_key: Path | None,
    srs_secret_env: str | None,
    srs_domain: str | None,
    hostname: str | None,
    max_size: int,
    max_recipients: int,
    max_connections: int,
    max_commands: int,
    concurrency: int,
    rate: str | None,
    grace: float,
    lease_seconds: float,
    dkim: tuple[str, ...],
) -> None:
    """Accept mail on a local port, queue it durably, and deliver it through --url.

    The 250 to a message's final dot is sent after the message is committed to the outbox.
    Without AUTH only clients in --allow may relay, and only to recipients that --aliases
    or --relay-domains allow. SIGTERM or Ctrl-C stops it gracefully (exit 0).
    """
    try:
        host, port = parse_listen(listen)
        users = load_users(auth_file) if auth_file else {}
        users.update(parse_user(value) for value in auth_users)
        domains = {d.strip() for value in relay_domains for d in value.split(",") if d.strip()}
        config = RelayConfig(
            host=host,
            port=port,
            allow=parse_networks(allow) if allow else LOOPBACK,
            relay_domains=frozenset(domains),
            aliases=Aliases.from_file(aliases) if aliases else Aliases(),
            users=users,
            tls=_tls_context(tls_cert, tls_key),
            srs=_srs(srs_secret_env, srs_domain),
            dkim=bool(dkim),
            max_size=max_size,
            max_recipients=max_recipients,
            max_connections=max_connections,
            max_commands=max_commands,
            hostname=hostname or socket.gethostname(),
        )
        options = RelayOptions(
            config=config,
            outbox=outbox_url,
            url=url,
            concurrency=concurrency,
            rate=rate,
            grace=grace,
            lease_seconds=lease_seconds,
            dkim=dkim_signers(dkim),
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        code = asyncio.run(run_relay(options, click.echo))
    except (ConfigError, OutboxError) as exc:
        click.echo(f"error: {exc}", err=True)
        code = EXIT_USAGE
    sys.exit(code)
