"""``asyncmail relay``: what it accepts, from whom, and that the bytes go on unchanged.

The relay runs in the test's event loop in front of a real capture server; clients are
asyncmail's own Mailer and Python's smtplib (run in a thread, as a separate client would).
Upstream, every message must equal its input after exactly one Received field.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import signal
import smtplib
import socket
import ssl
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
import trustme

from asyncmail import DKIM, SRS, Mailer, Outbox, OutboxState, Status
from asyncmail.relay._aliases import Aliases
from asyncmail.relay._config import RelayConfig
from asyncmail.relay._relay import Relay
from asyncmail.testing import CaptureServer, Fault

from ._dkim import DOMAIN, rsa_key, rsa_signer, verdicts
from ._relay import RELAY_HOST, relaying, smtp_client
from ._relay_process import RelayProcess
from .test_raw_message import CORPUS, DOTS, UTF8_HEADERS, _signed

SENDER = "ann@example.com"
RCPT = "bob@example.org"
LOCAL = RelayConfig(relay_domains=frozenset({"example.org"}))
RELAY_CORPUS = {**CORPUS, "dkim-signed": _signed(DOTS)}
RECEIVED = re.compile(rb"\AReceived: [^\r\n]*(?:\r\n\t[^\r\n]*)*\r\n")


def _after_trace(data: bytes) -> tuple[bytes, bytes]:
    """The one Received field a relay put on top, and the rest."""
    found = RECEIVED.match(data)
    assert found is not None, data[:200]
    return found.group(0), data[found.end() :]


def _send(relay_port: int, data: bytes, rcpts: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", relay_port, local_hostname="client.test") as client:
        client.sendmail(SENDER, rcpts, data, mail_options=["BODY=8BITMIME"])


@pytest.mark.parametrize("name", sorted(RELAY_CORPUS))
async def test_mailer_send_raw_through_the_relay_arrives_byte_for_byte(
    tmp_path: Path, name: str
) -> None:
    data = RELAY_CORPUS[name]
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        async with Mailer(f"smtp://127.0.0.1:{relay.port}?tls=none") as client:
            result = await client.send_raw(data, sender=SENDER, recipients=[RCPT])
        assert result.status is Status.DELIVERED
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    _, rest = _after_trace(stored.data)
    assert rest == data  # (one Received field was added, nothing else changed)
    assert stored.envelope_sender == SENDER
    assert stored.recipients == (RCPT,)
    if name == "dkim-signed":
        assert verdicts(stored.data, [rsa_signer()]) == [(DOMAIN, "rsa2048", True)]


@pytest.mark.parametrize("name", sorted(RELAY_CORPUS))
async def test_smtplib_through_the_relay_arrives_byte_for_byte(tmp_path: Path, name: str) -> None:
    data = RELAY_CORPUS[name]
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        await anyio.to_thread.run_sync(_send, relay.port, data, [RCPT])
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    _, rest = _after_trace(stored.data)
    assert rest == data
    if name == "dkim-signed":
        assert verdicts(stored.data, [rsa_signer()]) == [(DOMAIN, "rsa2048", True)]


async def test_the_250_names_the_outbox_key_and_the_message_is_stored_by_then(
    tmp_path: Path,
) -> None:
    stall = Fault.delay("dot", 30.0)  # (upstream: the message stays in the outbox meanwhile)

    def attempt() -> tuple[int, bytes]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt(RCPT)
            return client.data(DOTS)

    async with (
        CaptureServer(faults=[stall]) as upstream,
        relaying(tmp_path, upstream, LOCAL) as relay,
        Outbox(f"sqlite:///{tmp_path / 'relay.db'}") as reader,  # (another connection)
    ):
        code, text = await anyio.to_thread.run_sync(attempt)
        key = text.decode().rpartition(" ")[2]
        status = await reader.status(key)
        upstream.clear()
    assert code == 250 and text.startswith(b"2.0.0 OK queued as ")
    assert status is not None and status.key == key
    assert status.message_id == "<dots@example.com>"


async def test_with_dkim_the_relay_signs_on_top_and_the_authors_signature_still_verifies(
    tmp_path: Path,
) -> None:
    ours = DKIM(domain="relay.example", selector="r1", key=rsa_key())
    config = replace(LOCAL, dkim=True)
    data = _signed(DOTS)
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config, ours) as relay:
        await anyio.to_thread.run_sync(_send, relay.port, data, [RCPT])
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    assert stored.data.startswith(b"DKIM-Signature:")
    assert verdicts(stored.data, [ours, rsa_signer()]) == [
        ("relay.example", "r1", True),
        (DOMAIN, "rsa2048", True),
    ]
    _, rest = _after_trace(stored.data[stored.data.index(b"\r\nReceived: ") + 2 :])
    assert rest == data


async def test_the_received_field_names_client_relay_protocol_id_recipient_and_date(
    tmp_path: Path,
) -> None:
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        await anyio.to_thread.run_sync(_send, relay.port, DOTS, [RCPT])
        await anyio.to_thread.run_sync(_send, relay.port, DOTS, [RCPT, "carol@example.org"])
        one, two = await upstream.wait_for_messages(2, timeout=10)
    trace, _ = _after_trace(one.data)
    text = trace.decode()
    found = re.fullmatch(
        r"Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n"
        rf"\tby {re.escape(RELAY_HOST)} \(asyncmail relay\) with ESMTP id ([0-9a-f]{{16}})\r\n"
        rf"\tfor <{re.escape(RCPT)}>; (.+)\r\n",
        text,
    )
    assert found is not None, text
    assert email.utils.parsedate_to_datetime(found.group(2)).tzinfo is not None
    trace_two, _ = _after_trace(two.data)
    assert b"for <" not in trace_two  # two recipients: neither is named
    assert b"with ESMTP id" in trace_two


async def test_an_smtputf8_transaction_is_relayed_with_utf8smtp_in_the_trace(
    tmp_path: Path,
) -> None:
    rcpt = "用户@example.org"

    def attempt() -> None:
        with smtp_client(relay) as client:
            client.sendmail(SENDER, [rcpt], UTF8_HEADERS, mail_options=["SMTPUTF8"])

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        await anyio.to_thread.run_sync(attempt)
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    trace, rest = _after_trace(stored.data)
    assert rest == UTF8_HEADERS
    assert stored.recipients == (rcpt,) and "SMTPUTF8" in stored.mail_options
    assert b"with UTF8SMTP id" in trace and f"for <{rcpt}>;".encode() in trace


async def test_a_client_outside_allow_is_refused_and_nothing_is_relayed(tmp_path: Path) -> None:
    config = RelayConfig(
        allow=(ipaddress.ip_network("127.0.0.1/32"),),
        relay_domains=frozenset({"example.org"}),
    )

    def attempt() -> tuple[int, bytes]:
        with smtplib.SMTP(
            "127.0.0.1", relay.port, local_hostname="client.test", source_address=("127.0.0.2", 0)
        ) as client:
            client.ehlo()
            return client.mail(SENDER)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        code, text = await anyio.to_thread.run_sync(attempt)
        await anyio.to_thread.run_sync(_send, relay.port, DOTS, [RCPT])  # 127.0.0.1: fine
        await upstream.wait_for_messages(1, timeout=10)
        assert relay.statistics().accepted == 1
    assert (code, text[:5]) == (554, b"5.7.1")
    assert len(upstream.messages) == 1


async def test_a_recipient_outside_the_relay_domains_gets_550_relaying_denied(
    tmp_path: Path,
) -> None:
    def attempt() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail(SENDER)
            return client.rcpt("eve@elsewhere.example"), client.rcpt(RCPT)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        denied, allowed = await anyio.to_thread.run_sync(attempt)
    assert denied == (550, b"5.7.1 Relaying denied")
    assert allowed[0] == 250


async def test_an_authenticated_client_may_relay_anywhere_from_anywhere_on_loopback(
    tmp_path: Path,
) -> None:
    config = RelayConfig(allow=(ipaddress.ip_network("127.0.0.1/32"),), users={"app": "s3cret"})

    def attempt() -> None:
        with smtplib.SMTP(
            "127.0.0.1", relay.port, local_hostname="client.test", source_address=("127.0.0.2", 0)
        ) as client:
            client.login("app", "s3cret")
            client.sendmail(SENDER, ["eve@elsewhere.example"], DOTS)

    def wrong_password() -> int:
        with smtp_client(relay) as client:
            try:
                client.login("app", "wrong")
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code
        return 0

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        await anyio.to_thread.run_sync(attempt)
        [stored] = await upstream.wait_for_messages(1, timeout=10)
        assert await anyio.to_thread.run_sync(wrong_password) == 535
    trace, rest = _after_trace(stored.data)
    assert b"with ESMTPA id" in trace and b"[127.0.0.2]" in trace
    assert rest == DOTS and stored.recipients == ("eve@elsewhere.example",)


async def test_starttls_and_auth_give_esmtpsa(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    config = RelayConfig(users={"app": "s3cret"}, tls=server_context)

    def attempt() -> None:
        with smtp_client(relay) as client:
            client.starttls(context=client_context)
            client.login("app", "s3cret")
            client.sendmail(SENDER, [RCPT], DOTS)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        await anyio.to_thread.run_sync(attempt)
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    trace, rest = _after_trace(stored.data)
    assert b"with ESMTPSA id" in trace
    assert rest == DOTS


async def test_aliases_rewrite_the_envelope_and_srs_rewrites_the_forwarded_sender(
    tmp_path: Path,
) -> None:
    srs = SRS("relay-secret", "fwd.example.org")
    aliases = Aliases.parse(
        "# the team\n"
        "alice@example.org: alice@example.org, alice@gmail.example  # keep one, forward one\n"
        "ops@example.org: bob@qq.example\n"
    )
    config = RelayConfig(relay_domains=frozenset({"example.org"}), aliases=aliases, srs=srs)
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        await anyio.to_thread.run_sync(
            _send, relay.port, DOTS, ["ALICE@example.org", "ops@example.org"]
        )
        stored = await upstream.wait_for_messages(2, timeout=10)
    by_sender = {m.envelope_sender: m for m in stored}
    kept = by_sender[SENDER]
    [forwarded] = [m for m in stored if m.envelope_sender != SENDER]
    assert kept.recipients == ("alice@example.org",)
    assert forwarded.recipients == ("alice@gmail.example", "bob@qq.example")
    assert forwarded.envelope_sender.startswith("SRS0=")
    assert forwarded.envelope_sender.endswith("@fwd.example.org")
    assert srs.reverse(forwarded.envelope_sender) == SENDER
    assert kept.data == forwarded.data  # one Received field, the same bytes
    assert _after_trace(kept.data)[1] == DOTS


async def test_a_bounce_keeps_the_null_sender_even_when_forwarded_with_srs(
    tmp_path: Path,
) -> None:
    config = RelayConfig(
        aliases=Aliases.parse("info@shop.example: owner@gmail.example\n"),
        srs=SRS("relay-secret", "fwd.example.org"),
    )

    def attempt() -> None:
        with smtp_client(relay) as client:
            client.sendmail("<>", ["info@shop.example"], DOTS)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        await anyio.to_thread.run_sync(attempt)
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    assert stored.envelope_sender == ""  # (never rewritten: a bounce must not bounce)
    assert stored.recipients == ("owner@gmail.example",)


async def test_a_bounce_to_an_srs_address_goes_back_to_the_original_sender(
    tmp_path: Path,
) -> None:
    """Even from a client outside allow (the far end's MX): the hash says it is ours."""
    srs = SRS("relay-secret", "fwd.example.org")
    config = RelayConfig(
        allow=(ipaddress.ip_network("127.0.0.1/32"),),
        relay_domains=frozenset({"example.org"}),
        srs=srs,
    )
    bounce_to = srs.forward("alice@a.example")
    forged = bounce_to.replace("SRS0=", "SRS0=x", 1)

    def attempt() -> tuple[tuple[int, bytes], ...]:
        with smtplib.SMTP(
            "127.0.0.1", relay.port, local_hostname="mx.test", source_address=("127.0.0.2", 0)
        ) as client:
            client.ehlo()
            mail = client.mail("<>")
            elsewhere = client.rcpt("someone@example.org")  # not a bounce: not from here
            bad = client.rcpt(forged)
            good = client.rcpt(bounce_to)
            return mail, elsewhere, bad, good, client.data(DOTS)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        mail, elsewhere, bad, good, data = await anyio.to_thread.run_sync(attempt)
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    assert mail[0] == 250 and good[0] == 250 and data[0] == 250
    assert elsewhere[0] == 554 and elsewhere[1].startswith(b"5.7.1")
    assert bad == (550, b"5.1.1 Invalid or expired SRS address")
    assert stored.recipients == ("alice@a.example",)
    assert stored.envelope_sender == ""  # a bounce stays a bounce


async def test_a_sender_srs_cannot_rewrite_gets_550_and_nothing_is_queued(
    tmp_path: Path,
) -> None:
    config = RelayConfig(
        aliases=Aliases.parse("info@shop.example: owner@gmail.example\n"),
        srs=SRS("relay-secret", "fwd.example.org"),
    )

    def attempt() -> tuple[int, bytes]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail('"odd sender"@example.com')
            client.rcpt("info@shop.example")
            return client.data(DOTS)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        code, text = await anyio.to_thread.run_sync(attempt)
        assert relay.statistics().accepted == 0
    assert code == 550 and text.startswith(b"5.7.1 Cannot forward")


async def test_an_alias_key_is_accepted_outside_the_relay_domains(tmp_path: Path) -> None:
    config = RelayConfig(aliases=Aliases.parse("info@shop.example: owner@gmail.example\n"))
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        await anyio.to_thread.run_sync(_send, relay.port, DOTS, ["info@shop.example"])
        [stored] = await upstream.wait_for_messages(1, timeout=10)
    assert stored.recipients == ("owner@gmail.example",)
    assert stored.envelope_sender == SENDER  # no SRS configured: the sender is kept


# --- limits -----------------------------------------------------------------------------


async def test_size_is_advertised_and_a_bigger_message_gets_552_5_3_4(tmp_path: Path) -> None:
    config = RelayConfig(relay_domains=frozenset({"example.org"}), max_size=1000)
    big = DOTS + b"x" * 900 + b"\r\n" * 100

    def attempt() -> tuple[int, tuple[int, bytes], tuple[int, bytes]]:
        with smtp_client(relay) as client:
            client.ehlo()
            size = int(client.esmtp_features["size"])
            declared = client.mail(SENDER, ["SIZE=5000"])
            client.rset()
            client.mail(SENDER)
            client.rcpt(RCPT)
            return size, declared, client.data(big)

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        size, declared, sent = await anyio.to_thread.run_sync(attempt)
    assert size == 1000
    assert declared[0] == 552 and declared[1].startswith(b"5.3.4")
    assert sent[0] == 552 and sent[1].startswith(b"5.3.4")
    assert upstream.messages == []


async def test_one_recipient_too_many_gets_452_4_5_3(tmp_path: Path) -> None:
    config = RelayConfig(relay_domains=frozenset({"example.org"}), max_recipients=3)

    def attempt() -> list[tuple[int, bytes]]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail(SENDER)
            return [client.rcpt(f"u{i}@example.org") for i in range(4)]

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        replies = await anyio.to_thread.run_sync(attempt)
    assert [code for code, _ in replies] == [250, 250, 250, 452]
    assert replies[3][1] == b"4.5.3 Too many recipients"


async def test_one_connection_too_many_gets_421_4_7_0_at_the_greeting(tmp_path: Path) -> None:
    config = RelayConfig(relay_domains=frozenset({"example.org"}), max_connections=2)

    def attempt() -> tuple[int, bytes | str]:
        first, second = smtp_client(relay), smtp_client(relay)
        try:
            with pytest.raises(smtplib.SMTPConnectError) as caught:
                smtp_client(relay)
        finally:
            first.close()
            second.close()
        return caught.value.smtp_code, caught.value.smtp_error

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        code, text = await anyio.to_thread.run_sync(attempt)
    assert (code, text[:5]) == (421, b"4.7.0")
    assert relay.statistics().connections == 3


async def test_the_command_past_the_limit_gets_421_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    config = RelayConfig(relay_domains=frozenset({"example.org"}), max_commands=5)

    def attempt() -> tuple[list[int], tuple[int, bytes]]:
        client = smtp_client(relay)
        codes = [client.ehlo()[0]] + [client.noop()[0] for _ in range(4)]
        over = client.noop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
        client.close()
        return codes, over

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, config) as relay:
        codes, over = await anyio.to_thread.run_sync(attempt)
    assert codes == [250] * 5
    assert over[0] == 421 and over[1].startswith(b"4.7.0")


async def test_a_message_that_cannot_go_unchanged_gets_554_and_is_not_queued(
    tmp_path: Path,
) -> None:
    def attempt() -> tuple[int, bytes]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt(RCPT)
            return client.data(DOTS.replace(b"the end", b"the\x00end"))

    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        code, text = await anyio.to_thread.run_sync(attempt)
        assert relay.statistics().accepted == 0
    assert code == 554 and text.startswith(b"5.6.0") and b"NUL" in text


# --- the command ------------------------------------------------------------------------


def _relay_args(tmp_path: Path, upstream: CaptureServer, *extra: str) -> list[str]:
    outbox = f"sqlite:///{tmp_path / 'relay.db'}"
    return ["--listen", "127.0.0.1:0", "--outbox", outbox, "--url", upstream.url, *extra]


def test_the_relay_command_relays_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    aliases = tmp_path / "aliases"
    aliases.write_text("info@shop.example: owner@gmail.example\n")
    with CaptureServer().run_in_thread() as upstream:
        relay = RelayProcess(
            *_relay_args(tmp_path, upstream, "--aliases", str(aliases), "--hostname", RELAY_HOST),
            "--srs-secret-env=SRS_SECRET",
            "--srs-domain=fwd.example.org",
            env={"SRS_SECRET": "s3cret"},
        )
        try:
            port = relay.started()
            _send(port, DOTS, ["info@shop.example"])
            [stored] = upstream.wait_for_messages_sync(1, timeout=10)
            relay.process.send_signal(signal.SIGTERM)
            code = relay.finish()
        finally:
            relay.kill()
    assert code == 0, relay.output
    assert "SIGTERM: stopping" in relay.output
    assert re.search(r"relay stopped: 1 accepted, 1 delivered", relay.output), relay.output
    assert "s3cret" not in relay.output
    assert stored.recipients == ("owner@gmail.example",)
    assert SRS("s3cret", "fwd.example.org").reverse(stored.envelope_sender) == SENDER
    trace, rest = _after_trace(stored.data)
    assert rest == DOTS and f"by {RELAY_HOST} ".encode() in trace


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--relay-domains", "*", "--allow", "0.0.0.0/0"], "open relay"),
        (["--allow", "everyone"], "expected a network"),
        (["--auth", "nopassword"], "expected USER:PASSWORD"),
        (["--srs-domain", "fwd.example.org"], "go together"),
        (["--srs-secret-env", "NOT_SET_ANYWHERE", "--srs-domain", "x.example"], "is not set"),
    ],
)
def test_the_relay_command_refuses_a_bad_configuration_with_exit_2(
    tmp_path: Path, extra: list[str], words: str
) -> None:
    with CaptureServer().run_in_thread() as upstream:
        relay = RelayProcess(*_relay_args(tmp_path, upstream, *extra))
        try:
            code = relay.finish()
        finally:
            relay.kill()
    assert code == 2
    assert words in relay.output


async def test_a_queue_that_cannot_be_written_gets_451_and_the_client_keeps_the_message(
    tmp_path: Path,
) -> None:
    unopened = Outbox(f"sqlite:///{tmp_path / 'relay.db'}")  # (never entered: enqueue fails)

    def attempt() -> tuple[int, bytes]:
        with smtp_client(relay) as client:
            client.ehlo()
            client.mail(SENDER)
            client.rcpt(RCPT)
            return client.data(DOTS)

    async with Relay(replace(LOCAL, port=0, hostname=RELAY_HOST), unopened) as relay:
        code, text = await anyio.to_thread.run_sync(attempt)
        assert (relay.statistics().accepted, relay.statistics().refused) == (0, 1)
    assert code == 451 and text.startswith(b"4.3.0")


def test_the_relay_command_says_in_one_line_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken, CaptureServer().run_in_thread() as upstream:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _relay_args(tmp_path, upstream, f"--listen=127.0.0.1:{port}")
        relay = RelayProcess(*args)
        try:
            code = relay.finish()
        finally:
            relay.kill()
    assert code == 2
    [line] = relay.lines  # (one line, no traceback)
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "address already in use" in relay.output


def test_sigterm_lets_the_send_in_progress_finish_and_hands_the_rest_back(
    tmp_path: Path,
) -> None:
    outbox_url = f"sqlite:///{tmp_path / 'relay.db'}"
    slow = Fault.delay("dot", 1.0)  # every final reply upstream comes 1 s late
    with CaptureServer(faults=[slow]).run_in_thread() as upstream:
        relay = RelayProcess(
            *_relay_args(tmp_path, upstream, "--concurrency=1", "--relay-domains=example.org")
        )
        try:
            port = relay.started()
            for _ in range(4):
                _send(port, DOTS, [RCPT])
            upstream.wait_for_messages_sync(1, timeout=10)  # (the first one is on its way)
            relay.process.send_signal(signal.SIGTERM)
            code = relay.finish()
        finally:
            relay.kill()
        arrived = len(upstream.messages)

    async def counts() -> dict[OutboxState, int]:
        async with Outbox(outbox_url) as outbox:
            return dict((await outbox.statistics()).counts)

    found = anyio.run(counts)
    assert code == 0, relay.output
    assert found[OutboxState.LEASED] == found[OutboxState.SENDING] == 0
    assert found[OutboxState.DELIVERED] == arrived >= 1
    assert found[OutboxState.QUEUED] == 4 - arrived >= 1  # (handed back, for the next relay)


async def test_a_relay_starts_once_and_its_repr_counts(tmp_path: Path) -> None:
    async with CaptureServer() as upstream, relaying(tmp_path, upstream, LOCAL) as relay:
        await anyio.to_thread.run_sync(_send, relay.port, DOTS, [RCPT])
        assert re.fullmatch(
            r"<Relay running 127\.0\.0\.1:\d+ accepted=1 refused=0 live=\d>", repr(relay)
        )
        with pytest.raises(RuntimeError, match="started once"):
            await relay.__aenter__()
    assert repr(relay).startswith("<Relay closed") and relay.port == 0


def test_a_second_sigterm_cuts_the_sends_off_with_exit_130(tmp_path: Path) -> None:
    stall = Fault.delay("dot", 30.0)
    with CaptureServer(faults=[stall]).run_in_thread() as upstream:
        relay = RelayProcess(*_relay_args(tmp_path, upstream, "--relay-domains=example.org"))
        try:
            port = relay.started()
            _send(port, DOTS, [RCPT])
            upstream.wait_for_messages_sync(1, timeout=10)  # (its reply is 30 s away)
            relay.process.send_signal(signal.SIGTERM)
            relay.wait_for_line("SIGTERM: stopping")
            relay.process.send_signal(signal.SIGTERM)
            code = relay.finish()
        finally:
            relay.kill()
    assert code == 130, relay.output
    assert "SIGTERM again: stopping at once" in relay.output
    assert "relay cut off: 1 accepted" in relay.output


def test_the_relay_command_offers_starttls_with_a_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    pem, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(pem))
    cert.private_key_pem.write_to_path(str(key))
    with CaptureServer().run_in_thread() as upstream:
        args = _relay_args(tmp_path, upstream, f"--tls-cert={pem}", f"--tls-key={key}")
        relay = RelayProcess(*args, "--auth=app:s3cret")
        try:
            port = relay.started()
            with smtplib.SMTP("127.0.0.1", port) as client:
                client.ehlo()
                offered = client.has_extn("starttls")
            relay.process.send_signal(signal.SIGTERM)
            code = relay.finish()
        finally:
            relay.kill()
        bad = RelayProcess(*_relay_args(tmp_path, upstream, f"--tls-cert={key}"))
        try:
            bad_code = bad.finish()
        finally:
            bad.kill()
    assert offered and code == 0
    assert "STARTTLS, AUTH" in relay.output and "s3cret" not in relay.output
    assert bad_code == 2 and "cannot load the TLS certificate" in bad.output
