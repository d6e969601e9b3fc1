"""The asyncmail command, end to end against a real capture server (in a thread)."""

from __future__ import annotations

import collections
import logging
import mailbox
import re
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from asyncmail.testing import CaptureServer, Fault

from ._cli import SENDER, copies, invoke, read_report, spawn, wait_for_starts, write_csv


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer().run_in_thread() as running:
        yield running


@pytest.fixture
def template(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.html").write_text("<p>Dear {{ name }}, code {{ code }}</p>\n", "utf-8")
    return folder


# --- help and usage ---------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["send"], ["batch"], ["serve"], ["check"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    code, output = invoke(*command, "--help")
    assert code == 0
    assert "Usage: " in output


def test_missing_server_url_is_a_usage_error(tmp_path: Path) -> None:
    body = tmp_path / "b.txt"
    body.write_text("hi", encoding="utf-8")
    args = ["send", "--from", "a@example.com", "--to", "b@example.com", "--text-file", str(body)]
    code, output = invoke(*args, env={"ASYNCMAIL_URL": ""})
    assert code == 2
    assert "ASYNCMAIL_URL is not set" in output


# --- send -------------------------------------------------------------------------------


def test_send_delivers_one_message_with_text_html_and_attachment(
    server: CaptureServer, tmp_path: Path
) -> None:
    (tmp_path / "b.txt").write_text("plain body", encoding="utf-8")
    (tmp_path / "b.html").write_text("<p>html body</p>", encoding="utf-8")
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 fake")
    code, output = invoke(
        "send",
        *("--from", SENDER, "--to", "ann@example.com", "--cc", "cc@example.com"),
        *("--bcc", "hidden@example.com", "--subject", "Quarterly 报告"),
        *("--text-file", str(tmp_path / "b.txt"), "--html-file", str(tmp_path / "b.html")),
        *("--attach", str(tmp_path / "report.pdf")),
        env={"ASYNCMAIL_URL": server.url},
    )
    assert code == 0, output
    assert output.startswith("delivered <")
    [message] = server.wait_for_messages_sync(1)
    assert set(message.recipients) == {"ann@example.com", "cc@example.com", "hidden@example.com"}
    parsed = message.parsed
    assert parsed["Subject"] == "Quarterly 报告"
    assert "hidden@example.com" not in message.data.decode()
    assert [p.get_filename() for p in parsed.iter_attachments()] == ["report.pdf"]


def test_send_refused_by_the_server_exits_1_with_the_servers_words(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("x", encoding="utf-8")
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user here")]
    with CaptureServer(faults=faults).run_in_thread() as refusing:
        code, output = invoke(
            *("send", "--url", refusing.url, "--from", SENDER, "--to", "nobody@example.com"),
            *("--text", "x"),
        )
    assert code == 1
    assert "550 5.1.1 No such user here" in output


def test_send_as_a_process_says_a_refusal_once_not_with_the_engines_log_line_too() -> None:
    """Without logging configured, Python prints WARNING records on stderr: the engine's
    per-message line (asyncmail.outcomes) would repeat what the command says."""
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user here")]
    with CaptureServer(faults=faults).run_in_thread() as refusing:
        done = subprocess.run(
            [
                *(sys.executable, "-c", "from asyncmail.cli import main; main()", "send"),
                *("--url", refusing.url, "--from", SENDER, "--to", "nobody@example.com"),
                *("--text", "x"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert (done.stdout + done.stderr).count("No such user here") == 1, done.stderr


# --- batch ------------------------------------------------------------------------------


@pytest.mark.slow
def test_batch_of_10000_with_4xx_and_5xx_refusals_writes_a_correct_report(
    tmp_path: Path, template: Path
) -> None:
    rows: list[tuple[str, ...]] = []
    for i in range(10_000):
        local = "busy" if i % 100 == 7 else "gone" if i % 100 == 42 else "user"
        rows.append((f"{local}{i}@example.com", f"Name {i}", str(i)))
    rows[5] = ("not-an-address", "Bad", "5")
    rows[6] = ("short@example.com", "Short")  # missing column
    recipients = write_csv(tmp_path / "r.csv", rows)
    faults = [
        Fault.reply("rcpt", 450, "4.2.1 Mailbox busy, try later", match="busy"),
        Fault.reply("rcpt", 550, "5.1.1 No such user", match="gone"),
    ]
    report = tmp_path / "report.csv"
    with CaptureServer(faults=faults).run_in_thread() as relay:
        code, output = invoke(
            *("batch", str(recipients), "--template", str(template), "--from", SENDER),
            *("--url", relay.url, "--report", str(report), "--attempts", "1"),
            *("--concurrency", "20", "--progress-interval", "0.5"),
        )
        received = copies(relay)
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.startswith("progress: ")]
    assert lines[-1].startswith("progress: 10000/10000 delivered=9798 failed=202 unknown=0")
    assert re.search(r"rate=\d+\.\d/s eta=\d+s", lines[-1])
    report_rows = read_report(report)
    assert len(report_rows) == 10_000
    by_email = {r["email"]: r for r in report_rows}
    assert by_email["busy7@example.com"] | {"message_id": ""} == {
        "row": "8",
        "email": "busy7@example.com",
        "status": "failed",
        "smtp_code": "450",
        "enhanced_code": "4.2.1",
        "reply": "4.2.1 Mailbox busy, try later",
        "message_id": "",
        "attempts": "1",
    }
    assert by_email["gone42@example.com"]["smtp_code"] == "550"
    assert by_email["gone42@example.com"]["enhanced_code"] == "5.1.1"
    assert by_email["not-an-address"]["reply"] == "invalid email address: 'not-an-address'"
    assert by_email["short@example.com"]["reply"] == "missing column(s): code"
    delivered = by_email["user0@example.com"]
    assert (delivered["status"], delivered["smtp_code"], delivered["attempts"]) == (
        "delivered",
        "250",
        "1",
    )
    assert delivered["message_id"].startswith("<")
    statuses = collections.Counter(r["status"] for r in report_rows)
    assert statuses == {"delivered": 9798, "failed": 202}
    assert sum(received.values()) == 9798
    assert max(received.values()) == 1
    assert "whole report" in output


def test_undefined_variable_stops_the_batch_before_the_first_mail(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", [("a@example.com", "Ann")], header="email,name")
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        *("--report", str(tmp_path / "report.csv")),
    )
    assert code == 2
    assert "row 1 (a@example.com)" in output
    assert "'code' is undefined" in output
    assert server.messages == []
    assert not (tmp_path / "report.csv.journal").exists()


def test_dry_run_renders_every_row_and_sends_nothing(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(
        tmp_path / "r.csv",
        [("a@example.com", "Ann", "1"), ("b@", "B", "2"), ("c@example.com", "C")],
    )
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        "--dry-run",
    )
    assert code == 1
    assert "row 2 (b@): invalid email address" in output
    assert "row 3 (c@example.com): missing column(s): code" in output
    assert "1 rows would be sent, 2 rows have problems" in output
    assert server.messages == []


def test_running_a_batch_again_without_resume_is_refused(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", [("a@example.com", "Ann", "1")])
    args = ["batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url]
    args += ["--report", str(tmp_path / "report.csv")]
    assert invoke(*args)[0] == 0
    code, output = invoke(*args)
    assert code == 2
    assert "--resume" in output
    code, output = invoke(*args[:-2], "--resume", str(tmp_path / "report.csv"))
    assert code == 0
    assert copies(server) == {"a@example.com": 1}


def _wait_for_disconnects(server: CaptureServer) -> None:
    """Wait until the server saw every client go: then nothing more of theirs gets stored."""
    deadline = time.monotonic() + 30
    while server.statistics().open_connections:
        assert time.monotonic() < deadline, "the killed client's connections stayed open"
        time.sleep(0.01)


def test_resume_after_kill_9_never_sends_a_second_copy(tmp_path: Path, template: Path) -> None:
    """In-flight sends at the kill are UNKNOWN and not re-sent; the rest is sent once."""
    rows = [(f"user{i}@example.com", "STALLME" if i == 20 else f"N{i}", str(i)) for i in range(600)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    journal = tmp_path / "report.csv.journal"
    with CaptureServer(faults=[Fault.stall("dot", match="STALLME")]).run_in_thread() as relay:
        args = ["batch", str(recipients), "-t", str(template), "--from", SENDER]
        args += ["--url", relay.url, "--no-progress", "--concurrency", "8", "--rate", "300/s"]
        process = spawn([*args, "--report", str(report)])
        wait_for_starts(journal, 250, process)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        assert not report.exists()  # killed: the journal is all there is
        _wait_for_disconnects(relay)  # a message on its way at the kill may still be stored
        first_run = copies(relay)
        assert 0 < sum(first_run.values()) < 600

        resumed_from = relay.statistics().connections_opened  # later sessions: the resume's
        code, output = invoke(*args, "--resume", str(report))
        final = copies(relay)
    assert code == 1, output  # the stalled message is UNKNOWN
    assert max(final.values()) == 1, [k for k, v in final.items() if v > 1]
    report_rows = read_report(report)
    assert len(report_rows) == 600
    status = {r["email"]: r["status"] for r in report_rows}
    assert status["user20@example.com"] == "unknown"
    assert final["user20@example.com"] == 1  # it was stored before the stall: a real duplicate risk
    unknown = {e for e, s in status.items() if s == "unknown"}
    assert {e for e, s in status.items() if s != "unknown"} == {
        e for e, s in status.items() if s == "delivered"
    }
    resent = [
        m.recipients
        for m in relay.messages
        if m.session_id >= resumed_from and unknown.intersection(m.recipients)
    ]
    assert resent == []  # reported unknown, never sent again by the resumed run
    assert all(final[e] == 1 for e, s in status.items() if s == "delivered")
    # At the kill, a message without a result line is in flight (8 workers), or delivered
    # with its result still on its way to the journal: in the result stream (8 deep) or in
    # the hands of the loop that writes it (1). Each of those ends UNKNOWN, never re-sent.
    assert len(unknown) <= 8 + 8 + 1


def test_ctrl_c_lets_in_flight_sends_finish_and_resume_completes_the_batch(
    tmp_path: Path, template: Path
) -> None:
    rows = [(f"user{i}@example.com", f"N{i}", str(i)) for i in range(400)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    with CaptureServer().run_in_thread() as relay:
        args = ["batch", str(recipients), "-t", str(template), "--from", SENDER]
        args += ["--url", relay.url, "--no-progress", "--rate", "200/s", "--report", str(report)]
        process = spawn(args)
        wait_for_starts(tmp_path / "report.csv.journal", 100, process)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
        assert process.returncode == 130, output
        assert "stopping: no new sends" in output
        first = read_report(report)
        assert 100 <= len(first) < 400
        assert {r["status"] for r in first} == {"delivered"}  # nothing cut off
        code, output = invoke(*args[:-2], "--resume", str(report), "--no-progress")
        final = copies(relay)
    assert code == 0, output
    assert final == {f"user{i}@example.com": 1 for i in range(400)}
    assert len(read_report(report)) == 400


# --- serve, demo ----------------------------------------------------------------------


def test_serve_prints_a_line_per_message_and_stores_it_in_a_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "md"
    process = spawn(["serve", "--port", "0", "--maildir", str(maildir)])
    assert process.stdout is not None
    first = process.stdout.readline()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", first).group(1))  # type: ignore[union-attr]
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.sendmail("a@example.com", ["b@example.com"], b"Subject: hi there\r\n\r\nbody\r\n")
    line = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=10)
    assert line.strip() == "received from=a@example.com to=b@example.com subject='hi there'"
    assert process.returncode == 130
    [stored] = mailbox.Maildir(maildir).values()
    assert stored["Subject"] == "hi there"


def test_serve_on_a_busy_port_says_so_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    with CaptureServer().run_in_thread() as busy:
        process = spawn(["serve", "--port", str(busy.port), "--maildir", str(tmp_path)])
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 1, output
    assert output.splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{busy.port}: Address already in use"
    ]


def test_demo_sends_personalised_mails_into_a_maildir(tmp_path: Path) -> None:
    code, output = invoke("demo", "--count", "60", "--maildir", str(tmp_path / "md"))
    assert code == 0, output
    assert "sent 60 personalised mails" in output
    assert "progress: 60/60 delivered=60" in output
    stored = list(mailbox.Maildir(tmp_path / "md").values())
    assert len(stored) == 60
    subjects = {str(make_header(decode_header(m["Subject"]))) for m in stored}
    assert len(subjects) > 10  # personalised
    assert any(re.search(r"[\u4e00-\u9fff]", s) for s in subjects)  # Chinese names


def test_resume_reports_an_interrupted_send_unknown_and_resends_it_only_when_asked(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(
        tmp_path / "r.csv", [("a@example.com", "Ann", "1"), ("b@example.com", "Bo", "2")]
    )
    report = tmp_path / "report.csv"
    # What a run killed while row 1 was being sent leaves behind.
    (tmp_path / "report.csv.journal").write_text("# asyncmail journal v2\nS 1 1 a@example.com\n")
    args = ["batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url]
    code, output = invoke(*args, "--resume", str(report))
    assert code == 1, output
    assert copies(server) == {"b@example.com": 1}
    status = {r["email"]: (r["status"], r["reply"]) for r in read_report(report)}
    assert status["a@example.com"][0] == "unknown"
    assert "maybe delivered" in status["a@example.com"][1]

    code, output = invoke(*args, "--resume", str(report))  # unknown stays unknown
    assert code == 1, output
    assert copies(server) == {"b@example.com": 1}

    code, output = invoke(*args, "--resume", str(report), "--resend-unknown")
    assert code == 0, output
    assert copies(server) == {"a@example.com": 1, "b@example.com": 1}
    assert {r["status"] for r in read_report(report)} == {"delivered"}


def test_batch_reads_json_lines_with_nested_values(server: CaptureServer, tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text("{{ items | length }} items for {{ name }}", "utf-8")
    (folder / "body.txt").write_text("{% for i in items %}{{ i.sku }} {% endfor %}", "utf-8")
    (tmp_path / "r.jsonl").write_text(
        '{"email": "a@example.com", "name": "陈静", "items": [{"sku": "X1"}, {"sku": "Y2"}]}\n'
        '{"email": "b@example.com", "name": "Bo"}\n',
        encoding="utf-8",
    )
    code, output = invoke(
        *("batch", str(tmp_path / "r.jsonl"), "-t", str(folder), "--from", SENDER),
        *("--url", server.url, "--report", str(tmp_path / "report.csv")),
    )
    assert code == 1, output  # row 2 has no items: a per-row failure, not a crash
    [message] = server.messages
    assert message.parsed["Subject"] == "2 items for 陈静"
    assert message.parsed.get_content().strip() == "X1 Y2"
    [failed] = [r for r in read_report(tmp_path / "report.csv") if r["status"] == "failed"]
    assert failed["email"] == "b@example.com"
    assert "'items' is undefined" in failed["reply"]


def test_a_lone_surrogate_in_a_json_address_fails_that_row_and_the_batch_goes_on(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    """JSON may escape a lone surrogate ("\\ud800"): the journal must still write that row."""
    (tmp_path / "r.jsonl").write_text(
        '{"email": "a@example.com", "name": "A", "code": 1}\n'
        '{"email": "\\ud800x@example.com", "name": "\\ud800", "code": 2}\n'
        '{"email": "b@example.com", "name": "B", "code": 3}\n',
        encoding="utf-8",
    )
    report = tmp_path / "report.csv"
    code, output = invoke(
        *("batch", str(tmp_path / "r.jsonl"), "-t", str(template), "--from", SENDER),
        *("--url", server.url, "--report", str(report), "--no-progress"),
    )
    assert code == 1, output
    assert copies(server) == {"a@example.com": 1, "b@example.com": 1}
    status = {r["row"]: (r["email"], r["status"]) for r in read_report(report)}
    assert status["2"] == ("?x@example.com", "failed")


def test_interactive_mode_shows_a_live_bar_with_counts(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    rows = [(f"u{i}@example.com", f"N{i}", str(i)) for i in range(30)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        *("--report", str(tmp_path / "report.csv")),
        env={"FORCE_COLOR": "1", "COLUMNS": "160"},
    )
    assert code == 0, output
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)
    assert "sending" in plain
    assert "30 sent" in plain
    assert "0 failed" in plain
    assert "ETA" in plain
    assert "progress: " not in plain


def test_invalid_rate_is_a_usage_error_and_sends_nothing(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", [("a@example.com", "Ann", "1")])
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", server.url),
        *("--rate", "fast", "--report", str(tmp_path / "report.csv")),
    )
    assert code == 2, output
    assert server.messages == []


def test_missing_cli_extra_prints_the_install_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asyncmail.cli import main

    monkeypatch.setitem(sys.modules, "click", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 2
    assert "pip install 'asyncmail[cli]'" in capsys.readouterr().err


def test_batch_gives_up_when_the_server_cannot_be_reached(tmp_path: Path, template: Path) -> None:
    rows = [(f"u{i}@example.com", f"N{i}", str(i)) for i in range(500)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    with CaptureServer().run_in_thread() as gone:
        url = gone.url  # a port that was just in use and is closed now
    code, output = invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--url", url),
        *("--report", str(report), "--attempts", "1", "--concurrency", "2"),
    )
    assert code == 1, output
    assert "gave up: the server could not be used (20 sends in a row" in output
    tried = read_report(report)
    assert 20 <= len(tried) < 30
    assert {r["status"] for r in tried} == {"failed"}


def test_second_ctrl_c_aborts_sends_on_the_wire_and_reports_them_unknown(
    tmp_path: Path, template: Path
) -> None:
    rows = [(f"u{i}@example.com", "STALLME" if i == 3 else f"N{i}", str(i)) for i in range(40)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    with CaptureServer(faults=[Fault.stall("dot", match="STALLME")]).run_in_thread() as relay:
        args = ["batch", str(recipients), "-t", str(template), "--from", SENDER]
        args += ["--url", relay.url, "--no-progress", "--concurrency", "2", "--rate", "50/s"]
        process = spawn([*args, "--report", str(report)])
        wait_for_starts(tmp_path / "report.csv.journal", 10, process)
        process.send_signal(signal.SIGINT)  # waits for the stalled send...
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)  # ...until the second Ctrl-C
        output = process.communicate(timeout=20)[0]
        assert process.returncode == 130, output
        status = {r["email"]: r["status"] for r in read_report(report)}
        assert status["u3@example.com"] == "unknown"
        code, output = invoke(*args, "--resume", str(report))
        final = copies(relay)
    assert code == 1, output
    assert final["u3@example.com"] == 1  # stored before the stall, and not sent again
    assert max(final.values()) == 1
    assert len(final) == 40


def test_send_in_process_leaves_the_outcome_loggers_level_as_it_was() -> None:
    """The per-message WARNING lines are quiet while send runs, and back afterwards."""
    outcomes = logging.getLogger("asyncmail.outcomes")
    before = outcomes.level
    faults = [Fault.reply("rcpt", 550, "5.1.1 No such user here")]
    with CaptureServer(faults=faults).run_in_thread() as refusing:
        code, _ = invoke(
            *("send", "--url", refusing.url, "--from", SENDER, "--to", "nobody@example.com"),
            *("--text", "x"),
        )
    assert code == 1
    assert outcomes.level == before
