"""One-click unsubscribe (RFC 8058), List-Unsubscribe (RFC 2369), List-Id (RFC 2919), tokens."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import (
    ConfigError,
    InvalidToken,
    MailError,
    Message,
    MessageError,
    Template,
    UnsubscribeRequest,
    UnsubscribeTokens,
    is_one_click,
)
from asyncmail.cli._app import cli
from asyncmail.testing import CaptureServer

from ._support import mailer_for, message

SECRET = "correct horse battery staple 42"
URL = "https://example.com/u/abc123"


def parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def head_lines(raw: bytes) -> list[bytes]:
    """The List-* header lines of ``raw``, folded lines joined to their field."""
    head = raw.partition(b"\r\n\r\n")[0].replace(b"\r\n ", b" ")
    return [line for line in head.split(b"\r\n") if line.startswith(b"List-")]


# --- the Message fields -------------------------------------------------------------------


def test_all_three_fields_render_exactly_these_headers() -> None:
    msg = message(
        unsubscribe=URL, unsubscribe_mailto="unsub@example.com", list_id="News <news.example.com>"
    )
    raw = msg.to_bytes()
    assert head_lines(raw) == [
        b"List-Id: News <news.example.com>",
        b"List-Unsubscribe: <https://example.com/u/abc123>, <mailto:unsub@example.com>",
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
    ]
    parsed = parse(raw)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Id"] == "News <news.example.com>"
    assert not parsed.defects


def test_a_mailto_alone_gets_no_one_click_post_header() -> None:
    """RFC 8058 one-click needs the HTTPS URI: without one, no List-Unsubscribe-Post."""
    raw = message(unsubscribe_mailto="mailto:unsub@example.com?subject=stop%20it").to_bytes()
    assert head_lines(raw) == [b"List-Unsubscribe: <mailto:unsub@example.com?subject=stop%20it>"]


def test_a_message_without_the_fields_has_no_list_headers() -> None:
    msg = message()
    assert (msg.unsubscribe, msg.unsubscribe_mailto, msg.list_id) == (None, None, None)
    assert head_lines(msg.to_bytes()) == []


def test_values_are_normalised_and_kept_by_replace() -> None:
    msg = message(
        unsubscribe=f"  {URL} ", unsubscribe_mailto="MAILTO:u@example.com", list_id="x.localhost"
    )
    assert msg.unsubscribe == URL
    assert msg.unsubscribe_mailto == "mailto:u@example.com"
    assert msg.list_id == "x.localhost"
    copy = dataclasses.replace(msg, subject="again")
    assert head_lines(copy.to_bytes()) == head_lines(msg.to_bytes())
    stripped = dataclasses.replace(msg, unsubscribe=None, unsubscribe_mailto=None, list_id=None)
    assert head_lines(stripped.to_bytes()) == []


def test_long_values_fold_between_urls_never_inside_one() -> None:
    long_url = "https://example.com/unsubscribe/" + "A" * 300
    msg = message(
        unsubscribe=long_url,
        unsubscribe_mailto="unsubscribe-with-a-long-name@lists.example.com",
        list_id="A newsletter with quite a long display name here <weekly.news.example.com>",
    )
    raw = msg.to_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert f"List-Unsubscribe: <{long_url}>,\r\n <mailto:".encode() in raw
    assert b"A newsletter with quite a long display name here\r\n <weekly.news.example.com>" in raw
    parsed = parse(raw)
    urls = [u.strip().strip("<>") for u in str(parsed["List-Unsubscribe"]).split(",")]
    assert urls == [long_url, "mailto:unsubscribe-with-a-long-name@lists.example.com"]


def test_a_non_ascii_list_name_becomes_an_encoded_word() -> None:
    raw = message(list_id='"Nouvelles, été" <news.example.fr>').to_bytes()
    [line] = head_lines(raw)
    assert line.isascii() and b"=?utf-8?" in line
    assert parse(raw)["List-Id"] == "Nouvelles, été <news.example.fr>"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"unsubscribe": "http://example.com/u/1"}, r"^unsubscribe: .*needs an https:// URL"),
        ({"unsubscribe": "mailto:u@example.com"}, r"put a mailto: in unsubscribe_mailto"),
        ({"unsubscribe": "https:///path"}, r"^unsubscribe: no host"),
        ({"unsubscribe": "https://example.com/a b"}, r"^unsubscribe: .*percent-encode"),
        ({"unsubscribe": "https://example.com/a>b"}, r"^unsubscribe: .*percent-encode"),
        ({"unsubscribe": "https://example.com/a,b"}, r"^unsubscribe: .*percent-encode"),
        ({"unsubscribe": "https://example.com/a\r\nBcc: x"}, r"^unsubscribe: CR, LF"),
        ({"unsubscribe": "https://example.com/\n"}, r"^unsubscribe: CR, LF"),
        ({"unsubscribe": "https://exämple.com/u"}, r"^unsubscribe: .*percent-encode"),
        ({"unsubscribe": "https://example.com/" + "a" * 900}, r"longer than 900"),
        ({"unsubscribe": b"https://example.com/"}, r"^unsubscribe: expected str"),
        ({"unsubscribe_mailto": "not an address"}, r"^unsubscribe_mailto:"),
        ({"unsubscribe_mailto": "mailto:"}, r"^unsubscribe_mailto: invalid address"),
        ({"unsubscribe_mailto": "mailto:u@example.com?subject=a b"}, r"percent-encode"),
        ({"unsubscribe_mailto": "a@example.com, b@example.com"}, r"percent-encode"),
        ({"unsubscribe_mailto": "mailto:nobody"}, r"^unsubscribe_mailto: invalid address"),
        ({"list_id": "nodot"}, r"^list_id: 'nodot' is not a list id"),
        ({"list_id": "a b.example.com"}, r"^list_id:"),
        ({"list_id": "News <news.example.com"}, r"^list_id:"),
        ({"list_id": "News news.example.com>"}, r"^list_id: invalid List-Id"),
        ({"list_id": "news.exämple.com"}, r"^list_id:"),
        ({"list_id": "news.example.-com"}, r"^list_id:"),
        ({"list_id": "x." + "a" * 254}, r"^list_id:"),
    ],
)
def test_bad_list_values_raise_message_error_at_construction(
    fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(MessageError, match=problem):
        Message(sender="a@example.com", to="b@example.com", **fields)


_URL_TAIL = st.text(string.ascii_letters + string.digits + "-._~/?=&%!$'()*+;:@", max_size=120)
_NAME = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60
)


@given(tail=_URL_TAIL, name=_NAME, label=st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True))
def test_rendered_list_headers_read_back_with_the_stdlib(tail: str, name: str, label: str) -> None:
    url = "https://example.com/" + tail
    msg = Message(
        sender="a@example.com",
        to="b@example.com",
        unsubscribe=url,
        list_id=f"{name} <{label}.example.com>" if name.strip() else f"{label}.example.com",
    )
    raw = msg.to_bytes()
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    parsed = parse(raw)
    assert str(parsed["List-Unsubscribe"]).replace("\n", "").replace("\r", "") == f"<{url}>"
    expected = " ".join(name.split())
    list_id = str(parsed["List-Id"])
    assert list_id.endswith(f"<{label}.example.com>")
    if expected:
        shown = list_id.removesuffix(f" <{label}.example.com>")
        if len(shown) >= 2 and shown[0] == shown[-1] == '"':  # a quoted-string: unquote it
            shown = re.sub(r"\\(.)", r"\1", shown[1:-1])
        assert shown == expected


# --- tokens -------------------------------------------------------------------------------

_ADDRESS = st.builds(
    "{}@{}.example.com".format,
    st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,30}[a-z0-9]", fullmatch=True).filter(
        lambda s: ".." not in s
    ),
    st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True),
)
_LIST = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40)


@given(address=_ADDRESS, list_id=_LIST, issued=st.integers(0, 2**32 - 1))
def test_a_token_checks_back_to_what_it_was_made_for(
    address: str, list_id: str, issued: int
) -> None:
    tokens = UnsubscribeTokens(SECRET)
    token = tokens.make(address, list_id=list_id, issued_at=issued)
    assert set(token) <= set(string.ascii_letters + string.digits + "-_")
    assert tokens.check(token) == UnsubscribeRequest(
        address=address, list_id=list_id, issued_at=datetime.fromtimestamp(issued, UTC)
    )


@given(
    address=_ADDRESS,
    position=st.integers(min_value=0),
    replacement=st.characters(codec="ascii"),
)
def test_any_single_character_change_to_a_token_is_refused(
    address: str, position: int, replacement: str
) -> None:
    tokens = UnsubscribeTokens(SECRET)
    token = tokens.make(address, list_id="news.example.com")
    at = position % len(token)
    if token[at] == replacement:
        return
    forged = token[:at] + replacement + token[at + 1 :]
    with pytest.raises(InvalidToken):
        tokens.check(forged)


@given(data=st.binary(max_size=200))
def test_garbage_tokens_are_refused_with_invalid_token_only(data: bytes) -> None:
    import base64

    tokens = UnsubscribeTokens(SECRET)
    for garbage in (base64.urlsafe_b64encode(data).decode().rstrip("="), data.hex()):
        with pytest.raises(InvalidToken):
            tokens.check(garbage)


@pytest.mark.parametrize("token", ["", "!!!!", "a" * 2000, "é", "AAAA", "AAAA====="])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        UnsubscribeTokens(SECRET).check(token)


def test_a_token_signed_with_another_secret_is_refused_and_rotation_keeps_old_ones_valid() -> None:
    old = UnsubscribeTokens("the old secret, retired soon")
    token = old.make("ann@example.com")
    with pytest.raises(InvalidToken, match="signature does not match"):
        UnsubscribeTokens(SECRET).check(token)
    rotated = UnsubscribeTokens([SECRET, "the old secret, retired soon"])
    assert rotated.check(token).address == "ann@example.com"
    fresh = rotated.make("bob@example.com")
    assert UnsubscribeTokens(SECRET).check(fresh).address == "bob@example.com"
    with pytest.raises(InvalidToken):
        old.check(fresh)


def test_tokens_older_than_max_age_are_refused() -> None:
    tokens = UnsubscribeTokens(SECRET, max_age=60 * 86400)
    token = tokens.make("ann@example.com", issued_at=1_000_000)
    assert tokens.check(token, now=1_000_000 + 60 * 86400).address == "ann@example.com"
    with pytest.raises(InvalidToken, match="expired"):
        tokens.check(token, now=1_000_001 + 60 * 86400)
    assert UnsubscribeTokens(SECRET).check(token, now=2**33).address == "ann@example.com"


def test_invalid_token_is_a_mail_error_and_a_value_error() -> None:
    assert issubclass(InvalidToken, MailError)
    assert issubclass(InvalidToken, ValueError)


@pytest.mark.parametrize(
    ("secret", "max_age", "problem"),
    [
        ("short", None, "at least 16 octets"),
        (b"15 octets......", None, "at least 16 octets"),
        ([SECRET, "short"], None, "secret 1 must be"),
        ([], None, "at least one secret"),
        (SECRET, 0, "max_age must be positive"),
        (SECRET, -1.0, "max_age must be positive"),
    ],
)
def test_weak_secrets_and_bad_max_age_are_config_errors(
    secret: str | bytes | list[str], max_age: float | None, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        UnsubscribeTokens(secret, max_age=max_age)
    for key in [secret] if isinstance(secret, str | bytes) else secret:
        assert str(key) not in str(caught.value)


def test_the_secret_never_shows() -> None:
    tokens = UnsubscribeTokens([SECRET, SECRET.encode() + b"!"], max_age=30.0)
    assert repr(tokens) == "UnsubscribeTokens(keys=2, max_age=30.0)"
    assert "horse" not in repr(Template(subject="s", text="t", tokens=tokens))
    with pytest.raises(InvalidToken) as caught:
        tokens.check("A" * 80)
    assert "horse" not in str(caught.value)


def test_make_refuses_what_it_cannot_sign() -> None:
    tokens = UnsubscribeTokens(SECRET)
    with pytest.raises(MessageError, match=r"^address"):
        tokens.make("not an address")
    with pytest.raises(MessageError, match=r"^list_id"):
        tokens.make("a@example.com", list_id="x" * 256)
    with pytest.raises(MessageError, match=r"^issued_at"):
        tokens.make("a@example.com", issued_at=-1)


# --- the one-click POST body --------------------------------------------------------------

RFC8058_BODY = (
    b"--FormBoundaryjWmhtjORrn\r\n"
    b'Content-Disposition: form-data; name="List-Unsubscribe"\r\n'
    b"\r\n"
    b"One-Click\r\n"
    b"--FormBoundaryjWmhtjORrn--\r\n"
)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"List-Unsubscribe=One-Click", None, True),
        ("List-Unsubscribe=One-Click", "application/x-www-form-urlencoded", True),
        (b"a=1&List-Unsubscribe=One-Click", None, True),
        (b"List-Unsubscribe=One-Click%20", None, False),
        (b"List-Unsubscribe=one-click", None, False),
        (b"", None, False),
        (b"\xff\xfe", None, False),
        (b"&".join([b"a=1"] * 100), None, False),
        (RFC8058_BODY, "multipart/form-data; boundary=FormBoundaryjWmhtjORrn", True),
        (RFC8058_BODY.replace(b"One-Click", b"No"), "multipart/form-data; boundary=Form", False),
        (RFC8058_BODY, "multipart/form-data; boundary=other", False),
        ({"List-Unsubscribe": "One-Click"}, None, True),
        ({"List-Unsubscribe": ["x", "One-Click"]}, None, True),
        ({"List-Unsubscribe": "x"}, None, False),
        ({}, None, False),
    ],
)
def test_is_one_click_recognises_the_rfc_8058_body(
    body: bytes | str | dict[str, object], content_type: str | None, expected: bool
) -> None:
    assert is_one_click(body, content_type) is expected


# --- against the capture server -----------------------------------------------------------


async def test_sent_messages_carry_the_list_headers_as_real_fields() -> None:
    msg = message(1, unsubscribe=URL, unsubscribe_mailto="unsub@example.com", list_id="n.ex.com")
    async with CaptureServer() as server, mailer_for(server) as mailer:
        await mailer.send(msg)
    [captured] = server.messages
    assert head_lines(captured.data) == head_lines(msg.to_bytes())
    parsed = captured.parsed
    assert parsed["List-Unsubscribe"] == f"<{URL}>, <mailto:unsub@example.com>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Id"] == "<n.ex.com>"


async def test_each_recipient_of_a_batch_gets_a_token_for_its_own_address() -> None:
    tokens = UnsubscribeTokens(SECRET)
    template = Template(
        subject="Hi {{ name }}",
        text="Unsubscribe: https://example.com/u/{{ unsubscribe_token }}",
        unsubscribe="https://example.com/u/{{ unsubscribe_token }}",
        unsubscribe_mailto="mailto:unsub@example.com?subject={{ unsubscribe_token }}",
        list_id="News <news.example.com>",
        tokens=tokens,
    )
    addresses = [f"user{i}@example.net" for i in range(60)]
    messages = [
        template.render(sender="shop@example.com", to=addr, name=str(i))
        for i, addr in enumerate(addresses)
    ]
    async with CaptureServer() as server, mailer_for(server) as mailer:
        async for result in mailer.send_many(messages, concurrency=8):
            assert result.error is None
    seen = {}
    for captured in server.messages:
        parsed = captured.parsed
        url, mailto = (u.strip().strip("<>") for u in str(parsed["List-Unsubscribe"]).split(","))
        token = url.removeprefix("https://example.com/u/")
        request = tokens.check(token)
        assert (request.address, request.list_id) == (captured.recipients[0], "news.example.com")
        assert mailto == f"mailto:unsub@example.com?subject={token}"
        assert token in parsed.get_content()
        seen[request.address] = token
    assert sorted(seen) == sorted(addresses)
    assert len(set(seen.values())) == len(addresses)


def test_a_template_takes_the_url_from_an_unsubscribe_variable_when_it_has_none() -> None:
    template = Template(subject="s", text="t", list_id="news.example.com")
    msg = template.render(sender="a@example.com", to="b@example.com", unsubscribe=f" {URL} ")
    assert msg.unsubscribe == URL
    assert msg.list_id == "news.example.com"
    assert (
        template.render(sender="a@example.com", to="b@example.com", unsubscribe="").unsubscribe
        is None
    )
    with pytest.raises(MessageError, match=r"^unsubscribe: .*https"):
        template.render(sender="a@example.com", to="b@example.com", unsubscribe="http://x.com/")


def test_template_list_problems_are_found_when_it_is_built_or_rendered() -> None:
    with pytest.raises(ConfigError, match="list_id"):
        Template(subject="s", text="t", list_id="nodot")
    with pytest.raises(ConfigError, match="syntax error"):
        Template(subject="s", text="t", unsubscribe="https://x.com/{{ }")
    template = Template(
        subject="s",
        text="t",
        unsubscribe="https://x.com/{{ who }}",
        tokens=UnsubscribeTokens(SECRET),
    )
    assert template.variables == frozenset({"who"})
    with pytest.raises(MessageError, match="unsubscribe: undefined variable"):
        template.render(sender="a@example.com", to="b@example.com")
    with pytest.raises(MessageError, match="names one recipient; got 2"):
        template.render(sender="a@example.com", to=["b@example.com", "c@example.com"], who="x")


# --- the batch command --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer().run_in_thread() as running:
        yield running


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Dear {{ name }}\n", encoding="utf-8")
    return folder


def batch(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["batch", *args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_batch_writes_headers_from_the_unsubscribe_column(
    server: CaptureServer, template_dir: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "r.csv"
    rows.write_text(
        "email,name,unsubscribe\n"
        "a@example.com,Ann,https://example.com/u/ann\n"
        "b@example.com,Bob,https://example.com/u/bob\n"
        "c@example.com,Cy,\n",
        encoding="utf-8",
    )
    code, output = batch(
        *(str(rows), "-t", str(template_dir), "--from", "shop@example.com", "--url", server.url),
        *("--list-id", "News <news.example.com>", "--unsubscribe-mailto", "u@example.com"),
        *("--report", str(tmp_path / "report.csv")),
    )
    assert code == 0, output
    by_rcpt = {m.recipients[0]: m.parsed for m in server.messages}
    assert by_rcpt["a@example.com"]["List-Unsubscribe"] == (
        "<https://example.com/u/ann>, <mailto:u@example.com>"
    )
    assert by_rcpt["b@example.com"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert by_rcpt["c@example.com"]["List-Unsubscribe"] == "<mailto:u@example.com>"
    assert by_rcpt["c@example.com"]["List-Unsubscribe-Post"] is None
    assert {str(p["List-Id"]) for p in by_rcpt.values()} == {"News <news.example.com>"}


def test_cli_batch_signs_a_token_per_row(
    server: CaptureServer, template_dir: Path, tmp_path: Path
) -> None:
    rows = tmp_path / "r.csv"
    rows.write_text("email,name\na@example.com,Ann\nb@example.com,Bob\n", encoding="utf-8")
    code, output = batch(
        *(str(rows), "-t", str(template_dir), "--from", "shop@example.com", "--url", server.url),
        *("--unsubscribe-url", "https://example.com/u/{{ unsubscribe_token }}"),
        *("--unsubscribe-secret-env", "NEWS_SECRET", "--list-id", "news.example.com"),
        *("--report", str(tmp_path / "report.csv")),
        env={"NEWS_SECRET": SECRET},
    )
    assert code == 0, output
    tokens = UnsubscribeTokens(SECRET)
    for captured in server.messages:
        url = str(captured.parsed["List-Unsubscribe"]).strip("<>")
        request = tokens.check(url.removeprefix("https://example.com/u/"))
        assert (request.address, request.list_id) == (captured.recipients[0], "news.example.com")
    assert len(server.messages) == 2


@pytest.mark.parametrize(
    ("args", "env", "problem"),
    [
        (("--unsubscribe-url", "https://x.com/{{ unsubscribe_token }}"), {}, "secret-env"),
        (("--unsubscribe-secret-env", "NOPE_UNSET"), {}, "NOPE_UNSET is not set"),
        (("--unsubscribe-secret-env", "SHORT"), {"SHORT": "abc"}, "at least 16 octets"),
        (("--list-id", "nodot"), {}, "list_id"),
        (("--unsubscribe-url", "http://x.com/u"), {}, "https"),
    ],
)
def test_cli_batch_refuses_bad_list_options_before_sending(
    server: CaptureServer,
    template_dir: Path,
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    problem: str,
) -> None:
    rows = tmp_path / "r.csv"
    rows.write_text("email,name\na@example.com,Ann\n", encoding="utf-8")
    code, output = batch(
        *(str(rows), "-t", str(template_dir), "--from", "shop@example.com", "--url", server.url),
        *args,
        *("--report", str(tmp_path / "report.csv")),
        env=env,
    )
    assert code == 2, output
    assert problem in output
    assert "abc" not in output.replace("abc123", "")
    assert server.messages == []


# --- the guide's web app (the same code as in docs/deliverability.md) -----------------------


def _readme_web_app() -> str:
    """The deliverability guide's one-click FastAPI app, as the guide shows it."""
    guide = Path(__file__).resolve().parent.parent / "docs" / "deliverability.md"
    blocks: list[str] = re.findall(r"```python\n(.*?)```", guide.read_text(encoding="utf-8"), re.S)
    [block] = [b for b in blocks if "def one_click" in b]
    return block


WEB_APP = _readme_web_app()


async def test_the_readme_web_app_serves_the_one_click_post(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("UNSUBSCRIBE_SECRET", SECRET)
    namespace: dict[str, Any] = {"__name__": "readme_unsubscribe_app"}
    exec(WEB_APP, namespace)
    template = Template(
        subject="News",
        text="Unsubscribe: https://example.com/u/{{ unsubscribe_token }}",
        unsubscribe="https://example.com/u/{{ unsubscribe_token }}",
        list_id="News <news.example.com>",
        tokens=UnsubscribeTokens(SECRET),
    )
    async with CaptureServer() as server, mailer_for(server) as mailer:
        for who in ("ann@example.com", "bob@example.com"):
            await mailer.send(template.render(sender="news@example.com", to=who))
    paths = [
        str(m.parsed["List-Unsubscribe"]).strip("<>").removeprefix("https://example.com")
        for m in server.messages
    ]
    form = {"content-type": "application/x-www-form-urlencoded"}
    multipart = {"content-type": "multipart/form-data; boundary=FormBoundaryjWmhtjORrn"}
    with TestClient(namespace["app"]) as client:
        assert client.get(paths[0]).status_code == 200
        assert namespace["unsubscribed"] == set()  # a GET changes nothing
        assert client.post(paths[0], headers=form, content="x=1").status_code == 400
        reply = client.post(paths[0], headers=form, content="List-Unsubscribe=One-Click")
        assert reply.status_code == 200
        assert client.post(paths[1], headers=multipart, content=RFC8058_BODY).status_code == 200
        forged = paths[0][:-2] + ("A" if paths[0][-2] != "A" else "B") + paths[0][-1]
        assert (
            client.post(forged, headers=form, content="List-Unsubscribe=One-Click").status_code
            == 404
        )
    assert namespace["unsubscribed"] == {
        ("ann@example.com", "news.example.com"),
        ("bob@example.com", "news.example.com"),
    }


def test_cli_batch_dkim_signs_every_message_with_each_key(
    server: CaptureServer, template_dir: Path, tmp_path: Path
) -> None:
    """``--dkim`` twice: RSA and Ed25519 signatures, both over the one-click headers."""
    from cryptography.hazmat.primitives import serialization

    from ._dkim import DOMAIN, both, ed25519_key, rsa_key, verdicts

    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    (tmp_path / "rsa.pem").write_bytes(rsa_key().private_bytes(pem, pkcs8, plain))
    (tmp_path / "ed.pem").write_bytes(ed25519_key().private_bytes(pem, pkcs8, plain))
    rows = tmp_path / "r.csv"
    rows.write_text("email,name\na@example.com,Ann\nb@example.com,Bob\n", encoding="utf-8")
    code, output = batch(
        *(str(rows), "-t", str(template_dir), "--from", "shop@example.com", "--url", server.url),
        *("--unsubscribe-url", "https://example.com/u/{{ unsubscribe_token }}"),
        *("--unsubscribe-secret-env", "NEWS_SECRET"),
        *("--dkim", f"{DOMAIN}:rsa2048:{tmp_path / 'rsa.pem'}"),
        *("--dkim", f"{DOMAIN}:ed:{tmp_path / 'ed.pem'}"),
        *("--report", str(tmp_path / "report.csv")),
        env={"NEWS_SECRET": SECRET},
    )
    assert code == 0, output
    assert len(server.messages) == 2
    for captured in server.messages:
        assert verdicts(captured.data, both()) == [
            (DOMAIN, "rsa2048", True),
            (DOMAIN, "ed", True),
        ]
        signature = str(captured.parsed["DKIM-Signature"]).replace(" ", "")
        assert "list-unsubscribe:list-unsubscribe-post" in signature.replace("\r\n", "")


@pytest.mark.parametrize(
    ("value", "problem"),
    [("example.com:s1", "DOMAIN:SELECTOR:KEYFILE"), ("example.com:s1:/nonexistent.pem", "s1")],
)
def test_cli_batch_refuses_a_bad_dkim_option_before_sending(
    server: CaptureServer, template_dir: Path, tmp_path: Path, value: str, problem: str
) -> None:
    rows = tmp_path / "r.csv"
    rows.write_text("email,name\na@example.com,Ann\n", encoding="utf-8")
    code, output = batch(
        *(str(rows), "-t", str(template_dir), "--from", "shop@example.com", "--url", server.url),
        *("--dkim", value, "--report", str(tmp_path / "report.csv")),
    )
    assert code == 2
    assert problem in output
    assert server.messages == []
