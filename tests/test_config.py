"""Server URLs and option dataclasses validate themselves and never leak secrets."""

import dataclasses

import pytest

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
