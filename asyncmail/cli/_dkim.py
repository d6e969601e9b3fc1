"""The ``--dkim DOMAIN:SELECTOR:KEYFILE`` option of ``batch`` and ``worker``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from .._exceptions import ConfigError
from ..dkim._signer import DKIM

__all__ = ["dkim_option", "dkim_signers"]

F = TypeVar("F", bound=Callable[..., object])


def dkim_option(command: F) -> F:
    """Add ``--dkim`` (repeatable: give it twice for RSA plus Ed25519) to a click command."""
    return click.option(
        "--dkim",
        "dkim",
        multiple=True,
        metavar="DOMAIN:SELECTOR:KEYFILE",
        help="Sign every message with DKIM (RFC 6376): the d= domain, the selector and a PEM "
        "private key file (RSA or Ed25519). Give it twice to sign with both keys.",
    )(command)


def dkim_signers(values: tuple[str, ...]) -> tuple[DKIM, ...]:
    """The signers ``--dkim`` asks for, loaded and checked before any I/O.

    Raises:
        ConfigError: A value is not DOMAIN:SELECTOR:KEYFILE, or its key does not load.
    """
    signers = []
    for value in values:
        domain, _, rest = value.partition(":")
        selector, _, path = rest.partition(":")
        if not (domain and selector and path):
            raise ConfigError(f"--dkim {value!r}: expected DOMAIN:SELECTOR:KEYFILE")
        try:
            signers.append(DKIM(domain=domain, selector=selector, key=path))
        except ConfigError as exc:
            raise ConfigError(f"--dkim {domain}:{selector}: {exc}") from None
    return tuple(signers)
