"""The message page, rendered here: every value from the message is HTML-escaped.

The message's own HTML never enters this page: the page frames ``/messages/ID/html`` in an
iframe whose ``sandbox`` attribute grants nothing (no scripts, an opaque origin).
"""

from __future__ import annotations

from html import escape
from importlib import resources

from ._parse import details, parse
from ._store import StoredMessage

__all__ = ["message_page", "size_text", "static_file"]

#: The most characters of the raw source shown in the page (the raw link has it all).
RAW_SHOWN = 1_000_000
_TAB_LABELS = {"html": "HTML", "text": "Text", "headers": "Headers", "source": "Source"}


def static_file(name: str) -> bytes:
    """A file of the preview's static folder."""
    return (resources.files(__package__) / "static" / name).read_bytes()


def size_text(size: int) -> str:
    """``512 B``, ``3.4 kB``, ``1.2 MB``."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.1f} kB"
    return f"{size / 1_000_000:.1f} MB"


def _row(name: str, value: str) -> str:
    return f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>"


def message_page(message: StoredMessage) -> str:
    """The whole page of one message: headers, HTML (framed), text, all headers, source."""
    parsed = details(parse(message.data))
    base = f"/messages/{message.id}"
    api = f"/api/messages/{message.id}"
    summary = message.summary
    rows = [
        _row("From", summary.sender),
        _row("To", ", ".join(summary.to)),
        *([_row("Cc", ", ".join(parsed.cc))] if parsed.cc else []),
        _row("Date", summary.date or "(none)"),
        _row("Received", message.received.isoformat(timespec="seconds")),
        _row("Envelope", f"{message.envelope_sender} → {', '.join(message.recipients)}"),
        _row("Size", size_text(message.size)),
    ]
    links = "".join(
        f'<li><a href="{api}/attachments/{a.index}" download>{escape(a.filename)}</a> '
        f"<span class=muted>{escape(a.content_type)}, {size_text(a.size)}</span></li>"
        for a in summary.attachments
    )
    tabs, panes = [], []
    if parsed.html is not None:
        tabs.append("html")
        panes.append(
            f'<section id=pane-html class=pane><iframe id=body-html title="HTML part" '
            f'sandbox src="{base}/html"></iframe></section>'
        )
    if parsed.text is not None:
        tabs.append("text")
        panes.append(f"<section id=pane-text class=pane><pre>{escape(parsed.text)}</pre></section>")
    tabs += ["headers", "source"]
    all_headers = "".join(_row(name, value) for name, value in parsed.headers)
    panes.append(f"<section id=pane-headers class=pane><table>{all_headers}</table></section>")
    raw = message.data[:RAW_SHOWN].decode("utf-8", errors="replace")
    panes.append(
        f'<section id=pane-source class=pane><p><a href="{api}/raw">{api}/raw</a></p>'
        f"<pre>{escape(raw)}</pre></section>"
    )
    buttons = "".join(
        f'<button type=button data-pane="{name}">{_TAB_LABELS[name]}</button>' for name in tabs
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1">
<title>{escape(summary.subject or "(no subject)")} · asyncmail preview</title>
<link rel=stylesheet href="/static/style.css"></head>
<body class=message-page>
<header class=bar><a href="/" class=brand>asyncmail preview</a>
<a href="/" class=back>← all messages</a></header>
<main>
<h1 id=subject>{escape(summary.subject or "(no subject)")}</h1>
<table class=meta>{"".join(rows)}</table>
{f"<ul class=attachments>{links}</ul>" if links else ""}
<nav class=tabs>{buttons}</nav>
{"".join(panes)}
</main>
<script src="/static/app.js"></script>
</body></html>
"""
