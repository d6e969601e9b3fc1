"""Templates: compiled once, autoescaped HTML, strict variables, a text part for HTML-only mail."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import ConfigError, MessageError, Template
from asyncmail.batch._template import html_to_text


def test_html_body_is_autoescaped_and_subject_and_text_are_not() -> None:
    template = Template(
        subject="Hello {{ name }}", text="Dear {{ name }}", html="<p>Dear {{ name }}</p>"
    )
    parts = template.render_parts({"name": "<Tom & Jerry>"})
    assert parts.subject == "Hello <Tom & Jerry>"
    assert parts.text == "Dear <Tom & Jerry>"
    assert parts.html == "<p>Dear &lt;Tom &amp; Jerry&gt;</p>"


def test_undefined_variable_is_an_error_not_an_empty_string() -> None:
    template = Template(subject="Hi", text="Your code is {{ code }}")
    with pytest.raises(MessageError, match=r"<template>\[text\]:1: 'code' is undefined"):
        template.render_parts({"name": "x"})


def test_undefined_attribute_of_a_defined_variable_is_an_error() -> None:
    template = Template(subject="Hi", html="{{ user.city }}")
    with pytest.raises(MessageError, match="undefined"):
        template.render_parts({"user": {}})


def test_subject_is_stripped_to_one_line() -> None:
    template = Template(subject="  Welcome {{ name }}\n", text="x")
    assert template.render_parts({"name": "Ann"}).subject == "Welcome Ann"


def test_subject_with_a_newline_from_a_variable_is_rejected() -> None:
    template = Template(subject="Hi {{ name }}", text="x")
    with pytest.raises(MessageError, match="single line"):
        template.render_parts({"name": "Ann\nBcc: victim@example.com"})


def test_syntax_error_is_reported_when_the_template_is_built() -> None:
    with pytest.raises(ConfigError, match="syntax error"):
        Template(subject="Hi", text="{% if %}")


def test_template_without_a_body_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a text body"):
        Template(subject="Hi")


def test_from_dir_reads_subject_text_and_html(tmp_path: Path) -> None:
    (tmp_path / "subject.txt").write_text("Hi {{ name }}\n", encoding="utf-8")
    (tmp_path / "body.txt").write_text("Text for {{ name }}\n", encoding="utf-8")
    (tmp_path / "body.html").write_text("<b>{{ name }}</b>\n", encoding="utf-8")
    parts = Template.from_dir(tmp_path).render_parts({"name": "李娜"})
    assert parts == type(parts)(subject="Hi 李娜", text="Text for 李娜\n", html="<b>李娜</b>\n")


def test_from_dir_without_subject_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "body.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"missing subject\.txt"):
        Template.from_dir(tmp_path)


def test_html_only_template_gets_a_plain_text_alternative() -> None:
    template = Template(
        subject="News",
        html='<h1>Hi {{ name }}</h1><p>Read <a href="https://example.com/n?a=1&amp;b=2">the'
        " news</a>.</p><style>p {color: red}</style><ul><li>one</li><li>two</li></ul>",
    )
    message = template.render(sender="news@example.com", to="ann@example.com", name="Ann")
    assert message.text == (
        "Hi Ann\n\nRead the news (https://example.com/n?a=1&b=2).\n\n- one\n- two\n"
    )
    assert message.html is not None


def test_render_builds_a_message_with_a_display_name() -> None:
    template = Template(subject="Hi {{ name }}", text="Hello")
    message = template.render(
        sender="Shop <shop@example.com>", to=("王芳", "wf@example.com"), name="王芳"
    )
    assert message.subject == "Hi 王芳"
    assert [a.addr for a in message.to] == ["wf@example.com"]
    assert b"wf@example.com" in message.to_bytes()


def test_variables_mapping_allows_names_that_clash_with_arguments() -> None:
    template = Template(subject="{{ to }}", text="{{ sender }}")
    message = template.render(
        sender="a@example.com", to="b@example.com", variables={"to": "T", "sender": "S"}
    )
    assert (message.subject, message.text) == ("T", "S")


def test_variables_lists_the_names_the_sources_need() -> None:
    template = Template(subject="{{ a }}", text="{% set b = 1 %}{{ b }}{{ c.d }}", html="{{ e }}")
    assert template.variables == {"a", "c", "e"}


def test_html_to_text_keeps_link_urls_and_collapses_whitespace() -> None:
    text = html_to_text(
        '<p>Go   to\n <a href="https://x.org">x</a><br>now</p><script>var a</script>'
    )
    assert text == "Go to x (https://x.org)\nnow\n"


def test_html_to_text_does_not_repeat_a_url_shown_as_the_link_text() -> None:
    assert html_to_text('<a href="https://x.org">https://x.org</a>') == "https://x.org\n"


@given(st.text())
def test_html_to_text_never_fails_and_leaves_no_tags(markup: str) -> None:
    text = html_to_text(f"<p>{markup}</p>")
    assert text.endswith("\n")
    assert "<p>" not in text


def test_missing_jinja2_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "jinja2", None)
    with pytest.raises(ConfigError, match=r"pip install 'asyncmail\[templates\]'"):
        Template(subject="Hi", text="x")


@given(st.text())
def test_no_variable_value_can_inject_markup_into_the_html_body(value: str) -> None:
    template = Template(subject="s", html="<p>{{ v }}</p>")
    parts = template.render_parts({"v": value})
    assert parts.html is not None
    inner = parts.html.removeprefix("<p>").removesuffix("</p>")
    assert "<" not in inner
    assert ">" not in inner
    assert '"' not in inner
