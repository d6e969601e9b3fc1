"""Mailing-list header fields: List-Unsubscribe (RFC 2369), one-click (RFC 8058), List-Id.

Each value is checked once, when the Message is built, and the header lines are made then
too: rendering a message only appends a ready string. A URL goes in angle brackets unfolded,
so it must not hold anything that would end the bracket or the list early (space, CR, LF,
``<``, ``>``, ``,`` or a quote): RFC 2369 asks for such characters to be percent-encoded.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .._exceptions import MessageError
from ._address import _phrase, validate_addr_spec
from ._headers import check_text

__all__ = ["list_head", "normal_list_id", "normal_mailto", "normal_unsubscribe", "split_list_id"]

#: The header field RFC 8058 asks for next to an HTTPS List-Unsubscribe URI.
ONE_CLICK = "List-Unsubscribe=One-Click"
_MAX_URL = 900  # "List-Unsubscribe: <" + URL + ">," stays under 998 octets
_MAX_LIST_ID = 255  # RFC 2919 section 2
_LINE = 78
# RFC 3986 characters without the comma (RFC 2369 section 2: commas in URLs are encoded).
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+;=%]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# list-label "." list-id-namespace, the namespace a domain name or "localhost" (RFC 2919).
_LIST_ID = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


def normal_unsubscribe(value: object) -> str:
    """Return ``value`` if it is an HTTPS URL that fits in List-Unsubscribe.

    Raises:
        MessageError: naming ``unsubscribe``: not https (RFC 8058 one-click needs it), no
            host, too long, or a character that would break the header.
    """
    url = _url(value, "unsubscribe")
    if url[:8].lower() != "https://":
        hint = "; put a mailto: in unsubscribe_mailto" if url[:7].lower() == "mailto:" else ""
        raise MessageError(
            f"unsubscribe: one-click unsubscribe (RFC 8058) needs an https:// URL, "
            f"got {url!r}{hint}"
        )
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    if not host:
        raise MessageError(f"unsubscribe: no host in {url!r}")
    return url


def normal_mailto(value: object) -> str:
    """Return an address or ``mailto:`` URL as a ``mailto:`` URL for List-Unsubscribe.

    Raises:
        MessageError: naming ``unsubscribe_mailto``: not an ASCII address, or a query with
            characters that would break the header (percent-encode them).
    """
    url = _url(value, "unsubscribe_mailto")
    target = url[7:] if url[:7].lower() == "mailto:" else url
    validate_addr_spec(target.partition("?")[0], "unsubscribe_mailto")
    return "mailto:" + target


def _url(value: object, field: str) -> str:
    text = check_text(value, field).strip()
    if len(text) > _MAX_URL:
        raise MessageError(f"{field}: longer than {_MAX_URL} characters")
    if not _URL_CHARS.fullmatch(text):
        raise MessageError(
            f"{field}: {text!r} is not an ASCII URL without spaces, commas, quotes or angle "
            "brackets; percent-encode such characters"
        )
    return text


def split_list_id(value: object) -> tuple[str, str]:
    """Split ``"Name <label.example.com>"`` or ``"label.example.com"`` into name and id.

    Raises:
        MessageError: naming ``list_id``, when the id is not RFC 2919's
            ``list-label "." list-id-namespace`` (ASCII, at most 255 octets).
    """
    text = check_text(value, "list_id").strip()
    name = ""
    if text.endswith(">"):
        cut = text.rfind("<")
        if cut < 0:
            raise MessageError(f"list_id: invalid List-Id {value!r}")
        name = " ".join(text[:cut].split())
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
        text = text[cut + 1 : -1].strip()
    if len(text) > _MAX_LIST_ID or not _LIST_ID.fullmatch(text):
        raise MessageError(
            f"list_id: {text!r} is not a list id such as 'news.example.com' "
            "(list-label '.' domain, RFC 2919)"
        )
    return name, text


def normal_list_id(value: object) -> str:
    """``value`` as ``"Name <id>"`` or ``"id"``, checked (see ``split_list_id``)."""
    name, list_id = split_list_id(value)
    return f"{name} <{list_id}>" if name else list_id


def list_head(unsubscribe: str | None, mailto: str | None, list_id: str | None) -> str | None:
    """The List-Id, List-Unsubscribe and List-Unsubscribe-Post lines of checked values.

    Returns:
        The header lines joined with CRLF (no final CRLF), or None when all are None.
    """
    lines: list[str] = []
    if list_id is not None:
        name, bare = split_list_id(list_id)
        line = f"List-Id: <{bare}>"
        if name:
            phrase = _phrase(name)
            line = f"List-Id: {phrase} <{bare}>"
            if len(line) > _LINE or "\r" in line:
                line = f"List-Id: {phrase}\r\n <{bare}>"
        lines.append(line)
    urls = [f"<{url}>" for url in (unsubscribe, mailto) if url is not None]
    if urls:
        line = "List-Unsubscribe: " + ", ".join(urls)
        if len(line) > _LINE:
            line = "List-Unsubscribe: " + ",\r\n ".join(urls)
        lines.append(line)
    if unsubscribe is not None:
        lines.append(f"List-Unsubscribe-Post: {ONE_CLICK}")
    return "\r\n".join(lines) if lines else None
