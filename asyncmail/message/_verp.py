"""VERP (variable envelope return paths): one bounce address per recipient.

A template such as ``"bounces+{local}={domain}@example.com"`` becomes, for the recipient
``alice@example.org``, the envelope sender ``bounces+alice=example.org@example.com``. A
bounce then comes back to an address that names the recipient it is about, whatever the
bounce's body says. Each recipient needs its own MAIL FROM, so a VERP message costs one
transaction per recipient.

``expand`` and ``decode`` are inverses for every address ``check_template`` lets through.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .._exceptions import MessageError
from ._address import validate_addr_spec

__all__ = ["DOMAIN", "LOCAL", "check_template", "decode", "expand", "is_template"]

LOCAL = "{local}"
DOMAIN = "{domain}"
_SAMPLE = ("local", "example.org")
# A domain as it can appear in a local part: letters (any script), digits, "-" and ".".
_DOMAIN_CHARS = r"[\w.-]+"


def is_template(return_path: str) -> bool:
    """Whether ``return_path`` is a VERP template (it names ``{local}`` or ``{domain}``)."""
    return LOCAL in return_path or DOMAIN in return_path


def check_template(template: str, field: str = "return_path") -> str:
    """Validate a VERP template and return it.

    Both placeholders must appear exactly once, in the local part (before the last
    ``@``), and the template filled with a sample recipient must be a valid address.

    Raises:
        MessageError: The template is not one that ``expand`` can fill.
    """
    for placeholder in (LOCAL, DOMAIN):
        count = template.count(placeholder)
        if count != 1:
            raise MessageError(
                f"{field}: a VERP template needs {LOCAL} and {DOMAIN} once each, "
                f"found {placeholder} {count} time(s) in {template!r}"
            )
    local_part, at, _ = template.rpartition("@")
    if not at or LOCAL not in local_part or DOMAIN not in local_part:
        raise MessageError(
            f"{field}: the placeholders of a VERP template belong in its local part "
            f"(before the @), as in 'bounces+{LOCAL}={DOMAIN}@example.com'; got {template!r}"
        )
    validate_addr_spec(_fill(template, *_SAMPLE), field)
    return template


def expand(template: str, recipient: str) -> str:
    """The envelope sender for ``recipient``: the template with its local part and domain.

    Raises:
        MessageError: The recipient's local part is quoted: it cannot go into another
            address's local part.
    """
    local, _, domain = recipient.rpartition("@")
    if local.startswith('"'):
        raise MessageError(
            f"return_path: VERP cannot encode the quoted local part of {recipient!r}"
        )
    return _fill(template, local, domain)


def decode(template: str, address: str) -> str | None:
    """The recipient a VERP address was made for, or None when it does not fit the template.

    The match ignores case in the template's fixed parts (mail systems may change it).
    """
    match = _pattern(template).fullmatch(address)
    if match is None:
        return None
    return f"{match.group('local')}@{match.group('domain')}"


def _fill(template: str, local: str, domain: str) -> str:
    return template.replace(LOCAL, local).replace(DOMAIN, domain)


@lru_cache(maxsize=64)
def _pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{local\}|\{domain\})", template)
    regex = "".join(
        "(?P<local>.+)"
        if part == LOCAL
        else f"(?P<domain>{_DOMAIN_CHARS})"
        if part == DOMAIN
        else re.escape(part)
        for part in parts
    )
    return re.compile(regex, re.IGNORECASE)
