"""The relay's decisions without I/O: who may relay and authenticate, where mail goes."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from asyncmail import ConfigError
from asyncmail.relay._aliases import Aliases
from asyncmail.relay._config import RelayConfig, load_users, parse_listen, parse_networks
from asyncmail.relay._policy import (
    Route,
    auth_refusal,
    client_allowed,
    received_field,
    route,
    with_protocol,
)

USERS = RelayConfig(users={"app": "pw"})


@pytest.mark.parametrize(
    ("config", "ip", "tls", "code"),
    [
        (USERS, "192.0.2.10", False, "538"),  # off loopback, in the clear: never
        (USERS, "192.0.2.10", True, None),
        (USERS, "127.0.0.1", False, None),  # loopback: the password never leaves the host
        (USERS, "127.0.0.2", False, None),
        (USERS, "::1", False, None),
        (USERS, "::ffff:192.0.2.10", False, "538"),
        (RelayConfig(), "127.0.0.1", True, "502"),  # no users: no AUTH at all
    ],
)
def test_auth_is_offered_only_over_tls_or_on_loopback(
    config: RelayConfig, ip: str, tls: bool, code: str | None
) -> None:
    refusal = auth_refusal(config, ip, tls)
    assert (refusal[:3] if refusal else None) == code


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("10.1.2.3%eth0", True),
        ("192.0.2.10", False),
        ("not an address", False),
    ],
)
def test_clients_are_allowed_by_network(ip: str, allowed: bool) -> None:
    config = RelayConfig(allow=(*RelayConfig().allow, ipaddress.ip_network("10.0.0.0/8")))
    assert client_allowed(config, ip) is allowed


def test_routes_follow_aliases_then_relay_domains_else_deny() -> None:
    config = RelayConfig(
        relay_domains=frozenset({"Example.ORG"}),
        aliases=Aliases.parse(
            "a@example.org: a@example.org, a@gmail.example\nx@shop.example: y@example.org"
        ),
    )
    assert route(config, "A@example.org", authenticated=False) == Route(
        "A@example.org", ("a@example.org",), ("a@gmail.example",)
    )
    assert route(config, "x@shop.example", authenticated=False) == Route(
        "x@shop.example", ("y@example.org",), ()
    )
    assert route(config, "b@EXAMPLE.org", authenticated=False) == Route(
        "b@EXAMPLE.org", ("b@EXAMPLE.org",), ()
    )
    assert route(config, "eve@elsewhere.example", authenticated=False) is None
    assert route(config, "eve@elsewhere.example", authenticated=True) is not None


def test_any_domain_is_refused_with_a_global_network_allowed() -> None:
    with pytest.raises(ConfigError, match="open relay"):
        RelayConfig(relay_domains=frozenset({"*"}), allow=parse_networks(["0.0.0.0/0"]))
    with pytest.raises(ConfigError, match="open relay"):
        RelayConfig(relay_domains=frozenset({"*"}), allow=parse_networks(["100.64.0.0/10"]))
    with pytest.raises(ConfigError, match="open relay"):
        RelayConfig(relay_domains=frozenset({"*"}), allow=parse_networks(["1.2.3.0/24"]))
    config = RelayConfig(relay_domains=frozenset({"*"}), allow=parse_networks(["10.0.0.0/8"]))
    assert route(config, "anyone@anywhere.example", authenticated=False) is not None


@pytest.mark.parametrize(
    ("flags", "keyword"),
    [
        ({"esmtp": False, "tls": False, "auth": False, "smtputf8": False}, "SMTP"),
        ({"esmtp": True, "tls": False, "auth": False, "smtputf8": False}, "ESMTP"),
        ({"esmtp": True, "tls": True, "auth": False, "smtputf8": False}, "ESMTPS"),
        ({"esmtp": True, "tls": False, "auth": True, "smtputf8": False}, "ESMTPA"),
        ({"esmtp": True, "tls": True, "auth": True, "smtputf8": False}, "ESMTPSA"),
        ({"esmtp": True, "tls": True, "auth": True, "smtputf8": True}, "UTF8SMTPSA"),
    ],
)
def test_the_with_keyword_follows_rfc_3848(flags: dict[str, bool], keyword: str) -> None:
    assert with_protocol(**flags) == keyword


def test_a_helo_name_that_is_not_a_domain_is_replaced_by_the_address() -> None:
    field = received_field(
        ehlo="bad name; injected",
        ip="::1",
        hostname="relay.test",
        protocol="ESMTP",
        queue_id="abc",
        recipients=("a@b.example", "c@d.example"),
    )
    assert field.startswith(b"Received: from [IPv6:::1] ([IPv6:::1])\r\n\tby relay.test ")
    assert b"injected" not in field and field.endswith(b"\r\n")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("alice@example.com alice@gmail.example", "line 1: expected"),
        ("alice@example.com:", "line 1: expected"),
        ("\n# ok\nnot an address: a@b.example", "line 3: the key: invalid address"),
        ("a@example.com: b@x.example\nA@EXAMPLE.com: c@x.example", "line 2: A@EXAMPLE.com has"),
    ],
)
def test_a_malformed_alias_file_names_its_line(text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Aliases.parse(text)


def test_listen_and_auth_file_parsing(tmp_path: Path) -> None:
    assert parse_listen("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen("2525")
    users = tmp_path / "users"
    users.write_text("# apps\napp:pa:ss\n\ncron:x\n")
    assert load_users(users) == {"app": "pa:ss", "cron": "x"}
    users.write_text("nopassword\n")
    with pytest.raises(ConfigError, match="line 1: expected USER:PASSWORD") as caught:
        load_users(users)
    assert "nopassword" not in str(caught.value)


def test_the_users_passwords_are_not_in_the_repr() -> None:
    assert "pw" not in repr(USERS)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"port": 70000}, "port must be"),
        ({"max_size": 0}, "max_size must be"),
        ({"max_commands": 1.5}, "max_commands must be"),
        ({"timeout": 0}, "timeout must be"),
        ({"hostname": "two words"}, "hostname must be"),
        ({"hostname": ""}, "hostname must be"),
    ],
)
def test_a_bad_relay_config_is_refused_when_made(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RelayConfig(**fields)  # type: ignore[arg-type]


def test_missing_alias_and_auth_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the alias file"):
        Aliases.from_file(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read the auth file"):
        load_users(tmp_path / "missing")
    rules = tmp_path / "aliases"
    rules.write_text("a@example.com: b@example.net, b@EXAMPLE.net\n", encoding="utf-8")
    assert Aliases.from_file(rules).targets("A@Example.com") == ("b@example.net",)
