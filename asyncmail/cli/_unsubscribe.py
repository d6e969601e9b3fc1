"""``asyncmail batch`` options for list headers: one-click unsubscribe URL, mailto, List-Id.

The URL is Jinja2 like the template folder, so it can use any column; with
``--unsubscribe-secret-env`` each row also gets ``unsubscribe_token``, signed for its address
(see ``UnsubscribeTokens``). Without ``--unsubscribe-url``, an ``unsubscribe`` column is the URL.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TypeVar

import click

from .._exceptions import ConfigError
from ..batch._template import TOKEN_VARIABLE, Template
from ..message._unsubscribe import UnsubscribeTokens

__all__ = ["list_options", "with_list_headers"]

F = TypeVar("F", bound=Callable[..., object])


def list_options(command: F) -> F:
    """Add the options ``with_list_headers`` takes to a click command."""
    options = [
        click.option(
            "--unsubscribe-url",
            help="One-click unsubscribe URL (https), Jinja2 with the row's columns, such as "
            "'https://example.com/u/{{ unsubscribe_token }}'. Adds List-Unsubscribe and "
            "List-Unsubscribe-Post (RFC 8058). Default: the 'unsubscribe' column, if any.",
        ),
        click.option(
            "--unsubscribe-secret-env",
            metavar="VAR",
            help="Environment variable holding the secret (16+ octets) that signs "
            "{{ unsubscribe_token }} per row; check it with asyncmail.UnsubscribeTokens.",
        ),
        click.option(
            "--unsubscribe-mailto",
            help="An address or mailto: URL also listed in List-Unsubscribe (Jinja2 too).",
        ),
        click.option("--list-id", help="The List-Id, such as 'News <news.example.com>'."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def with_list_headers(
    template: Template,
    *,
    unsubscribe_url: str | None,
    unsubscribe_secret_env: str | None,
    unsubscribe_mailto: str | None,
    list_id: str | None,
) -> Template:
    """``template`` with the list options applied.

    Raises:
        ConfigError: The secret's variable is unset or too short, the URL needs a token
            but no secret was given, or the list id is invalid.
    """
    tokens = None
    if unsubscribe_secret_env is not None:
        secret = os.environ.get(unsubscribe_secret_env)
        if not secret:
            raise ConfigError(f"--unsubscribe-secret-env: ${unsubscribe_secret_env} is not set")
        tokens = UnsubscribeTokens(secret)
    elif unsubscribe_url is not None and TOKEN_VARIABLE in unsubscribe_url:
        raise ConfigError(
            f"--unsubscribe-url uses {TOKEN_VARIABLE}: give --unsubscribe-secret-env VAR too"
        )
    if (unsubscribe_url, unsubscribe_mailto, list_id, tokens) == (None, None, None, None):
        return template
    return dataclasses.replace(
        template,
        unsubscribe=unsubscribe_url,
        unsubscribe_mailto=unsubscribe_mailto,
        list_id=list_id,
        tokens=tokens,
    )
