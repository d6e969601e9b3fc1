"""Server URLs and option dataclasses validate themselves and never leak secrets."""

import dataclasses
import re
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncmail import ConfigError, Mailer, PoolLimits, RetryPolicy, Server, Timeouts, TLSMode


def test_smtps_url_means_implicit_tls_on_port_465() -> None:
    server = Server.from_url("smtps://user:pw@smtp.example.com")
    assert server.tls_mode is TLSMode.IMPLICIT
    assert server.effective_port == 465


def test_smtp_url_means_required_starttls_on_port_587() -> None:
    server = Server.from_url("smtp://user:pw@smtp.example.com")
    assert server.tls_mode is TLSMode.STARTTLS
    assert server.effective_port == 587


def test_smtp_url_on_loopback_allows_plaintext_when_starttls_is_not_offered() -> None:
    assert Server.from_url("smtp://127.0.0.1:1025").tls_mode is TLSMode.OPPORTUNISTIC
    assert Server.from_url("smtp://localhost:1025").tls_mode is TLSMode.OPPORTUNISTIC
    assert Server.from_url("smtp://[::1]:1025").tls_mode is TLSMode.OPPORTUNISTIC


@pytest.mark.parametrize("mode", list(TLSMode))
def test_tls_query_option_overrides_the_mode(mode: TLSMode) -> None:
    scheme = "smtps" if mode is TLSMode.IMPLICIT else "smtp"
    server = Server.from_url(f"{scheme}://mail.example.com:2525?tls={mode.value}")
    assert server.tls_mode is mode
    assert server.effective_port == 2525


def test_user_and_password_are_percent_decoded() -> None:
    server = Server.from_url("smtp://me%40example.com:p%40ss%3Aw%2Frd@smtp.example.com")
    assert server.username == "me@example.com"
    assert server.password == "p@ss:w/rd"


def test_password_never_appears_in_repr_or_display() -> None:
    server = Server.from_url("smtp://me:s3cr3t-pw@smtp.example.com")
    assert "s3cr3t-pw" not in repr(server)
    assert "s3cr3t-pw" not in server.display
    mailer = Mailer(server)
    assert "s3cr3t-pw" not in repr(mailer)


@pytest.mark.parametrize(
    "url",
    [
        "http://smtp.example.com",
        "smtp://",
        "smtp://host?tls=sometimes",
        "smtps://host?tls=starttls",
        "smtp://host?colour=blue",
        "smtp://host:99999",
    ],
)
def test_invalid_urls_raise_config_error(url: str) -> None:
    with pytest.raises(ConfigError):
        Server.from_url(url)


def test_credentials_with_control_characters_are_refused() -> None:
    with pytest.raises(ConfigError, match="password"):
        Server(host="h", username="u", password="a\r\nMAIL FROM:<x@y>")


def test_asyncmail_url_is_used_when_no_server_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCMAIL_URL", "smtps://relay.example.com:2465")
    mailer = Mailer()
    assert mailer.server.host == "relay.example.com"
    assert mailer.server.effective_port == 2465


def test_missing_asyncmail_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYNCMAIL_URL", raising=False)
    with pytest.raises(ConfigError, match="ASYNCMAIL_URL"):
        Mailer()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_connections": 0},
        {"max_messages_per_connection": -1},
        {"idle_timeout": 0},
        {"pool_timeout": -5},
    ],
)
def test_pool_limits_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        PoolLimits(**kwargs)  # type: ignore[arg-type]


def test_config_values_are_frozen_and_replaceable() -> None:
    timeouts = Timeouts()
    with pytest.raises(dataclasses.FrozenInstanceError):
        timeouts.connect = 1  # type: ignore[misc]
    assert dataclasses.replace(timeouts, connect=1).connect == 1
    with pytest.raises(ConfigError):
        Timeouts(final_reply=0)
    with pytest.raises(ConfigError):
        RetryPolicy(attempts=0)


# -- URL userinfo never leaks (BUG 10) ------------------------------------------------------

_PERCENT_HINT = "percent-encode the password (%23 for #, %2F for /, %3F for ?, %40 for @)"
# A password no error text could contain by accident, so any 3 characters of it in an error
# would be a leak ("hunter2" would not do: "ter" is in "after").
_SECRET = "Qx7Zk9"


def _assert_no_part_of(secret: str, error: ConfigError) -> None:
    """No 3-character piece of ``secret`` shows in the error's str() or repr().

    A piece that the error's own words contain anyway (" mu" of "must") proves nothing.
    """
    for text in (str(error), repr(error)):
        for i in range(len(secret) - 2):
            piece = secret[i : i + 3]
            if piece in _PASSWORD_ERROR_WORDS:
                continue
            assert piece not in text, (secret, text)


_PASSWORD_ERROR_WORDS = "password must not contain CR, LF or NUL"


def test_the_reported_url_says_to_percent_encode_and_shows_no_part_of_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Server.from_url("smtp://user:hun#ter2@host:587")
    assert _PERCENT_HINT in str(caught.value)
    assert "hun" not in str(caught.value) + repr(caught.value)
    assert "ter2" not in str(caught.value) + repr(caught.value)


@pytest.mark.parametrize("char", ["#", "/", "?"])
def test_an_unencoded_delimiter_in_the_password_says_to_percent_encode_it(char: str) -> None:
    password = f"{_SECRET[:3]}{char}{_SECRET[3:]}"
    with pytest.raises(ConfigError) as caught:
        Server.from_url(f"smtp://user:{password}@host:587")
    assert _PERCENT_HINT in str(caught.value)
    _assert_no_part_of(password, caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "smtp://user:12#SECRET@host:587",  # the part before # even looks like a port
        "smtp://user:12/SECRET@host:587",
        "smtp://user:12?SECRET@host:587",  # would be an unknown option "SECRET@host:587"
        "smtp://user:SECRET?ca_file=/x@host:587",
        "smtp://user:SECRET?local_hostname=@host",  # reads as valid options: still refused
        "smtp://SECRET/x:pw@host",  # the user name can hold them too
    ],
)
def test_no_part_of_a_misparsed_userinfo_appears_in_the_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Server.from_url(url.replace("SECRET", _SECRET))
    assert _PERCENT_HINT in str(caught.value)
    _assert_no_part_of(_SECRET, caught.value)


def test_an_unencoded_at_sign_in_the_password_is_unambiguous_and_accepted() -> None:
    server = Server.from_url("smtp://me@example.com:p@ss@smtp.example.com:587")
    assert (server.username, server.password, server.host) == (
        "me@example.com",
        "p@ss",
        "smtp.example.com",
    )


@pytest.mark.parametrize(
    "url",
    [
        "smtp://user:SECRET@host:port",
        "smtp://user:SECRET@host:99999",
        "smtp://user:SECRET@ho st",
        "smtp://user:SECRET@host/path",
        "smtp://user:SECRET@host#fragment",
        "smtp://user:SECRET@host?colour=blue",
        "smtp://user:SECRET@[::1",
        "smtp://user:SECRET@[::1]x",
        "smtp://user:SECRET\r\n@host",
        "smtp://user:SECRET",  # no @: user and password become host and port
        "user:SECRET@host:587",
        "smtp:/user:SECRET@host",
        "SECRET://user:SECRET@host",
    ],
)
def test_errors_about_other_parts_of_the_url_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Server.from_url(url.replace("SECRET", _SECRET))
    _assert_no_part_of(_SECRET, caught.value)


@pytest.mark.parametrize("url", ["user:pw@smtp.example.com:587", "smtp.example.com", "//host"])
def test_a_url_without_a_scheme_says_what_to_write(url: str) -> None:
    with pytest.raises(ConfigError, match=r"no scheme: write smtp:// .* or smtps://"):
        Server.from_url(url)


def test_a_missing_ca_file_is_an_error_at_parse_time_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(ConfigError, match=re.escape(f"{str(missing)!r} does not exist")):
        Server.from_url(f"smtp://mail.example.com?ca_file={missing}")
    with pytest.raises(ConfigError, match="not a file"):
        Server.from_url(f"smtp://mail.example.com?ca_file={tmp_path}")
    present = tmp_path / "ca.pem"
    present.write_text("")
    assert Server.from_url(f"smtp://mail.example.com?ca_file={present}").ca_file == str(present)


def test_an_at_sign_in_an_option_value_is_written_percent_encoded(tmp_path: Path) -> None:
    ca = tmp_path / "a@b.pem"
    ca.write_text("")
    url = f"smtp://user:pw@mail.example.com?ca_file={str(ca).replace('@', '%40')}"
    assert Server.from_url(url).ca_file == str(ca)


def test_ipv6_hosts_and_default_ports_still_parse() -> None:
    server = Server.from_url("smtp://u:p@[2001:DB8::1]:2525")
    assert (server.host, server.port, server.password) == ("2001:db8::1", 2525, "p")
    assert Server.from_url("smtp://Mail.Example.COM/").host == "mail.example.com"
    assert Server.from_url("smtp://h?tls=implicit").effective_port == 465
    assert Server.from_url("smtp://@h").username is None


_DELIMITERS = "#/?@:[] "
# Letters that no error text uses, so three of them in a row in an error can only be a leak.
_FOREIGN = "αβγδεζηθλμπσφψω中文字密码"


def _parse_with(password: str) -> Server | ConfigError:
    """The Server for a URL with ``password`` written in as it is, or the error."""
    try:
        return Server.from_url(f"smtp://user:{password}@mail.example.com:587?tls=starttls")
    except ConfigError as exc:
        return exc


@settings(max_examples=400, deadline=None)
@given(password=st.text(st.sampled_from(_FOREIGN + _DELIMITERS), max_size=20))
def test_random_raw_passwords_parse_exactly_or_fail_without_showing_any_of_it(
    password: str,
) -> None:
    """Written into the URL as they are, passwords parse back or the error hides them."""
    outcome = _parse_with(password)
    if isinstance(outcome, ConfigError):
        _assert_no_part_of(password, outcome)
        assert any(c in password for c in "#/?"), password
        assert _PERCENT_HINT in str(outcome)
    else:
        assert outcome.password == password
        assert (outcome.host, outcome.port, outcome.username) == ("mail.example.com", 587, "user")
        assert len(password) < 3 or password[:3] not in repr(outcome)


@settings(max_examples=300, deadline=None)
@given(password=st.text(max_size=20))
def test_random_percent_encoded_passwords_always_parse_exactly(password: str) -> None:
    outcome = _parse_with(quote(password, safe=""))
    if isinstance(outcome, ConfigError):  # the one refusal: header-injection characters
        assert any(c in password for c in "\r\n\0"), password
        _assert_no_part_of(password, outcome)
    else:
        assert outcome.password == password


_SWAP = str.maketrans(
    string.ascii_letters + string.digits,
    string.ascii_letters[13:] + string.ascii_letters[:13] + string.digits[5:] + string.digits[:5],
)


@settings(max_examples=300, deadline=None)
@given(password=st.text(st.sampled_from(string.ascii_letters + string.digits + _DELIMITERS)))
def test_an_error_reads_the_same_whatever_the_password_letters(password: str) -> None:
    """Errors depend on where the delimiters are, never on the password's letters or digits."""
    outcomes: list[tuple[str, str] | None] = []
    for candidate in (password, password.translate(_SWAP)):
        outcome = _parse_with(candidate)
        if isinstance(outcome, ConfigError):
            outcomes.append((str(outcome), repr(outcome)))
        else:
            assert outcome.password == candidate
            outcomes.append(None)
    assert outcomes[0] == outcomes[1]
