"""Mail templates: Jinja2 sources compiled once, rendered per recipient into a ``Message``.

Jinja2 is an optional extra (``pip install 'asyncmail[templates]'``). This module imports it
only when a ``Template`` is built, so ``import asyncmail`` works without it; building a template
without it raises ``ConfigError`` with the install command (never a bare ``ImportError``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, MessageError

if TYPE_CHECKING:
    import jinja2

    from ..message._address import AddressInput
    from ..message._message import Message
    from ..message._unsubscribe import UnsubscribeTokens

__all__ = ["Rendered", "Template", "html_to_text"]

INSTALL_HINT = "pip install 'asyncmail[templates]'"
SUBJECT_FILE = "subject.txt"
TEXT_FILE = "body.txt"
HTML_FILE = "body.html"
#: The variable (such as a CSV column) that is a row's unsubscribe URL when the template has
#: no ``unsubscribe`` of its own.
UNSUBSCRIBE_VARIABLE = "unsubscribe"
#: The variable that holds a row's signed token when the template has ``tokens``.
TOKEN_VARIABLE = "unsubscribe_token"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rendered:
    """The three rendered parts of one mail; ``text`` is never None when ``html`` is set."""

    subject: str
    text: str | None
    html: str | None


def _jinja() -> ModuleType:
    try:
        import jinja2
    except ImportError:
        raise ConfigError(
            f"Templates need Jinja2, which is not installed: {INSTALL_HINT}"
        ) from None
    return jinja2


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """A mail template: a subject, and a plain-text body, an HTML body or both.

    The sources are Jinja2. They are compiled once, when the template is built; every
    ``render()`` reuses them. The HTML body is autoescaped, the subject and text body are
    not. An undefined variable is an error (``StrictUndefined``), never an empty string. An
    HTML-only template gets a plain-text alternative made from the rendered HTML.

    Args:
        subject: The subject line. It must render to a single line; surrounding whitespace
            is stripped.
        text: The plain-text body.
        html: The HTML body.
        name: A label for error messages, such as the folder the template came from.
        unsubscribe: The one-click unsubscribe URL (``https://``), rendered per recipient
            like the subject: ``"https://example.com/u/{{ unsubscribe_token }}"``. Without
            it, a variable named ``unsubscribe`` (such as a CSV column) is the URL, when
            not empty. Either way each Message gets ``List-Unsubscribe`` and
            ``List-Unsubscribe-Post``.
        unsubscribe_mailto: An address or ``mailto:`` URL for ``List-Unsubscribe``, rendered
            per recipient too.
        list_id: The ``List-Id`` of every message, ``"Name <label.example.com>"``.
        tokens: Signs a token per recipient, for the recipient's address and the bare
            ``list_id``: the variable ``unsubscribe_token``, in every source. A message
            with more than one recipient is refused (a token names one).
        files: The files subject, text and HTML came from, for errors (``file:line:``);
            ``from_dir`` sets them. Without them errors say ``NAME[subject]:line:``.

    Raises:
        ConfigError: Jinja2 is missing, no body was given, a source has a syntax error, or
            ``list_id`` is invalid.
    """

    subject: str
    text: str | None = None
    html: str | None = None
    name: str = "<template>"
    unsubscribe: str | None = None
    unsubscribe_mailto: str | None = None
    list_id: str | None = None
    tokens: UnsubscribeTokens | None = None
    files: tuple[str, str, str] | None = None
    _compiled: tuple[Any, Any, Any] = field(init=False, repr=False, compare=False)
    _links: tuple[Any, Any, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.text is None and self.html is None:
            raise ConfigError(f"{self.name}: a template needs a text body, an HTML body or both")
        jinja2 = _jinja()
        plain = jinja2.Environment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        marked = jinja2.Environment(
            undefined=jinja2.StrictUndefined, autoescape=True, keep_trailing_newline=True
        )
        subject_label, text_label, html_label = self.labels
        try:
            compiled = (
                _compile(plain, self.subject, subject_label),
                None if self.text is None else _compile(plain, self.text, text_label),
                None if self.html is None else _compile(marked, self.html, html_label),
            )
            unsubscribe, mailto = (
                None if source is None else plain.from_string(source)
                for source in (self.unsubscribe, self.unsubscribe_mailto)
            )
        except jinja2.TemplateSyntaxError as exc:
            where = exc.filename or self.name
            raise ConfigError(
                f"{where}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None
        object.__setattr__(self, "_compiled", compiled)
        bare = ""
        if self.list_id is not None:
            from ..message._list import split_list_id

            try:
                bare = split_list_id(self.list_id)[1]
            except MessageError as exc:
                raise ConfigError(f"{self.name}: {exc}") from None
        object.__setattr__(self, "_links", (unsubscribe, mailto, bare))

    @classmethod
    def from_dir(cls, path: str | Path) -> Template:
        """Load ``subject.txt`` and ``body.txt`` and/or ``body.html`` from a folder.

        Raises:
            ConfigError: The folder or its subject file is missing, or it holds no body.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ConfigError(f"template folder not found: {folder}")

        def read(name: str) -> str | None:
            file = folder / name
            return file.read_text(encoding="utf-8") if file.is_file() else None

        subject = read(SUBJECT_FILE)
        if subject is None:
            raise ConfigError(f"{folder}: missing {SUBJECT_FILE}")
        text, body_html = read(TEXT_FILE), read(HTML_FILE)
        if text is None and body_html is None:
            raise ConfigError(f"{folder}: needs {TEXT_FILE}, {HTML_FILE} or both")
        files = (str(folder / SUBJECT_FILE), str(folder / TEXT_FILE), str(folder / HTML_FILE))
        return cls(subject=subject, text=text, html=body_html, name=str(folder), files=files)

    @property
    def labels(self) -> tuple[str, str, str]:
        """How errors name the subject, text and HTML sources (``files``, if known)."""
        if self.files is not None:
            return self.files
        return (f"{self.name}[subject]", f"{self.name}[text]", f"{self.name}[html]")

    @property
    def variables(self) -> frozenset[str]:
        """The names the sources use that they do not define themselves.

        A variable used only under ``{% if x is defined %}`` is listed too, so this is an upper
        bound: to check that rows fit the template, render the first one.
        """
        _jinja()
        import jinja2.meta

        env = jinja2.Environment()
        names: set[str] = set()
        for source in (self.subject, self.text, self.html, self.unsubscribe):
            if source is not None:
                names |= jinja2.meta.find_undeclared_variables(env.parse(source))
        if self.unsubscribe_mailto is not None:
            names |= jinja2.meta.find_undeclared_variables(env.parse(self.unsubscribe_mailto))
        if self.tokens is not None:
            names.discard(TOKEN_VARIABLE)
        return frozenset(names)

    def render_parts(self, variables: Mapping[str, Any]) -> Rendered:
        """Render subject and bodies with ``variables``.

        Raises:
            MessageError: A variable is undefined, the template raised an error, or the
                subject is not a single line.
        """
        subject_t, text_t, html_t = self._compiled
        try:
            subject = subject_t.render(variables).strip()
            text = None if text_t is None else text_t.render(variables)
            body_html = None if html_t is None else html_t.render(variables)
        except Exception as exc:  # any error raised while rendering belongs to this row
            raise MessageError(_located(exc, self.labels)) from None
        if "\n" in subject or "\r" in subject:
            raise MessageError(f"{self.name}: the subject must be a single line: {subject!r}")
        if text is None and body_html is not None:
            text = html_to_text(body_html)
        return Rendered(subject=subject, text=text, html=body_html)

    def render(
        self,
        *,
        sender: AddressInput,
        to: AddressInput | Iterable[AddressInput],
        variables: Mapping[str, Any] | None = None,
        **more_variables: object,
    ) -> Message:
        """Render one ``Message`` for one recipient.

        Args:
            sender: The From mailbox: ``"addr"``, ``"Name <addr>"`` or ``("Name", "addr")``.
            to: The recipient, or a list of them, in the same forms.
            variables: Template variables, for names that are not Python identifiers or that
                clash with ``sender``/``to``/``variables``.
            **more_variables: More template variables.

        Raises:
            MessageError: Rendering failed (undefined variable, multi-line subject), the
                addresses are invalid, or so is the unsubscribe URL.
        """
        from ..message._message import Message

        values: Mapping[str, Any] = {**variables, **more_variables} if variables else more_variables
        if self.tokens is not None:
            values = {**values, TOKEN_VARIABLE: self._token(to)}
        parts = self.render_parts(values)
        url, mailto = self._render_links(values)
        return Message(
            sender=sender,
            to=to,
            subject=parts.subject,
            text=parts.text,
            html=parts.html,
            unsubscribe=url,
            unsubscribe_mailto=mailto,
            list_id=self.list_id,
        )

    def _token(self, to: object) -> str:
        from ..message._address import parse_addresses

        assert self.tokens is not None
        addresses = parse_addresses(to, "to")
        if len(addresses) != 1:
            raise MessageError(
                f"{self.name}: an unsubscribe token names one recipient; got {len(addresses)}"
            )
        return self.tokens.make(addresses[0].addr, list_id=self._links[2])

    def _render_links(self, values: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """The rendered unsubscribe URL and mailto; None for one that is absent or empty."""
        unsubscribe_t, mailto_t, _ = self._links
        rendered: list[str | None] = []
        for source, field_name in ((unsubscribe_t, "unsubscribe"), (mailto_t, "mailto")):
            if source is None:
                rendered.append(None)
                continue
            try:
                value = source.render(values).strip()
            except Exception as exc:  # as in render_parts: the row's error
                raise MessageError(f"{self.name}: {field_name}: {_describe(exc)}") from None
            rendered.append(value or None)
        url, mailto = rendered
        if unsubscribe_t is None:
            column = values.get(UNSUBSCRIBE_VARIABLE)
            if isinstance(column, str) and column.strip():
                url = column.strip()
        return url, mailto


def _compile(env: jinja2.Environment, source: str, label: str) -> jinja2.Template:
    """A template compiled under ``label``: its errors and frames carry that file name."""
    code = env.compile(source, name=label, filename=label)
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def _located(exc: BaseException, labels: tuple[str, ...]) -> str:
    """``file:line: what`` for an error raised while rendering a compiled source.

    Jinja2 rewrites the traceback so that template lines appear as frames of the template's
    file name: the last such frame is where the error happened.
    """
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in labels:
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    what = _describe(exc)
    if what.endswith(" is undefined"):  # ('x' is undefined: no need to say it twice)
        what = str(exc)
    return f"{where}: {what}" if where else what


def _describe(exc: BaseException) -> str:
    if type(exc).__name__ == "UndefinedError":
        return f"undefined variable: {exc}"
    return f"{type(exc).__name__}: {exc}"


# --- HTML to plain text -----------------------------------------------------------------

_BLOCK = frozenset(
    {
        *("address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset"),
        *("figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6"),
        *("header", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul"),
    }
)
_ITEMS = frozenset({"li", "tr", "dd", "dt"})
_SKIP = frozenset({"script", "style", "head", "title", "template"})
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.out)))
        elif tag in _BLOCK:
            self.out.append("\n" if tag in _ITEMS else "\n\n")
            if tag == "li":
                self.out.append("- ")
            if tag == "pre":
                self._pre += 1
        elif tag in {"td", "th"}:
            self.out.append(" ")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = " ".join("".join(self.out[start:]).split())
            if href and not href.startswith(("#", "javascript:")) and href != label:
                target = href.removeprefix("mailto:")
                if target != label:
                    self.out.append(f" ({href})")
        elif tag in _BLOCK and tag not in _ITEMS:
            self.out.append("\n\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.out.append(data if self._pre else data.replace("\n", " "))


def html_to_text(markup: str) -> str:
    """A plain-text rendering of HTML: tags stripped, link targets kept, whitespace collapsed.

    Good enough for the text alternative of a newsletter; not a layout engine.
    """
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [_SPACES.sub(" ", line).strip() for line in "".join(parser.out).split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip("\n") + "\n"
