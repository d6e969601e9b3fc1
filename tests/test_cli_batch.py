"""``asyncmail batch``: dry runs and previews, duplicates, delimiters, template errors, the
resume command after Ctrl-C, and the report's addresses; against real capture servers."""

from __future__ import annotations

import email
import email.policy
import re
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncmail.cli._batch_command import batch
from asyncmail.cli._resume import redact, resume_command
from asyncmail.testing import CaptureServer, Fault

from ._cli import PASSWORD, SENDER, copies, invoke, read_report, spawn, wait_for_starts, write_csv


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer().run_in_thread() as running:
        yield running


@pytest.fixture
def template(tmp_path: Path) -> Path:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hello {{ name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Dear {{ name }}, your code is {{ code }}.\n", "utf-8")
    return folder


def run_batch(
    recipients: Path, template: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    return invoke(
        *("batch", str(recipients), "-t", str(template), "--from", SENDER, "--no-progress"),
        *args,
        env=env,
    )


# --- --dry-run ----------------------------------------------------------------------------


def test_dry_run_needs_no_server_and_shows_the_first_message(
    tmp_path: Path, template: Path
) -> None:
    rows = [("ann@example.com", "Ann", "1"), ("bob@example.com", "Bob", "2")]
    recipients = write_csv(tmp_path / "r.csv", rows)
    code, output = run_batch(recipients, template, "--dry-run", env={"ASYNCMAIL_URL": ""})
    assert code == 0, output
    assert "To: Ann <ann@example.com>" in output
    assert "Subject: Hello Ann" in output
    assert "Dear Ann, your code is 1." in output
    assert "Bob" not in output  # one message shown, the first
    assert "2 rows would be sent, 0 rows have problems; nothing was sent" in output
    assert not (tmp_path / "r-report.csv.journal").exists()


def test_dry_run_preview_writes_the_first_messages_as_eml_files(
    tmp_path: Path, template: Path
) -> None:
    rows = [
        ("o'brien+news@example.com", "Ann", "1"),
        ("jörg@bücher.example", "Jörg", "2"),
        ("not-an-address", "Bad", "3"),
        ("cat@example.com", "Cat", "4"),
        ("dan@example.com", "Dan", "5"),
    ]
    recipients = write_csv(tmp_path / "r.csv", rows)
    preview = tmp_path / "preview"
    code, output = run_batch(
        recipients, template, "--dry-run", "--preview", str(preview), "--preview-count", "3"
    )
    assert code == 1, output  # row 3 has a problem
    assert "row 3 (not-an-address): invalid email address" in output
    assert f"wrote 3 messages to {preview}/" in output
    names = sorted(p.name for p in preview.iterdir())
    assert names == [
        "00001-o_brien+news@example.com.eml",
        "00002-jörg@bücher.example.eml",
        "00004-cat@example.com.eml",
    ]
    parsed = email.message_from_bytes(
        (preview / names[1]).read_bytes(), policy=email.policy.default
    )
    assert parsed["Subject"] == "Hello Jörg"
    assert "Dear Jörg, your code is 2." in parsed.get_content()


def test_preview_without_dry_run_is_a_usage_error(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    recipients = write_csv(tmp_path / "r.csv", [("ann@example.com", "Ann", "1")])
    code, output = run_batch(
        recipients, template, "--url", server.url, "--preview", str(tmp_path / "p")
    )
    assert code == 2
    assert "--preview goes with --dry-run" in output
    assert server.messages == []


# --- duplicates ---------------------------------------------------------------------------


def _duplicated(tmp_path: Path) -> Path:
    rows = [
        ("ann@example.com", "Ann", "1"),
        ("bob@example.com", "Bob", "2"),
        ("Ann@EXAMPLE.com", "Ann again", "3"),
        ("bob@example.com", "Bob again", "4"),
    ]
    return write_csv(tmp_path / "r.csv", rows)


def test_duplicate_addresses_are_warned_about_and_sent_without_dedupe(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    report = tmp_path / "report.csv"
    code, output = run_batch(
        _duplicated(tmp_path), template, "--url", server.url, "--report", str(report)
    )
    assert code == 0, output
    assert (
        "warning: 2 rows repeat an earlier row's address: row 3 Ann@EXAMPLE.com (as row 1); "
        "row 4 bob@example.com (as row 2)"
    ) in output
    assert "--dedupe sends each address once" in output
    assert len(server.messages) == 4


def test_dedupe_sends_each_address_once_and_reports_the_rest_as_duplicates(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    report = tmp_path / "report.csv"
    args = ["--url", server.url, "--report", str(report), "--dedupe"]
    code, output = run_batch(_duplicated(tmp_path), template, *args)
    assert code == 0, output
    assert "they are not sent, and reported 'duplicate' (--dedupe)" in output
    assert {k.lower(): v for k, v in copies(server).items()} == {
        "ann@example.com": 1,
        "bob@example.com": 1,
    }
    by_row = {r["row"]: (r["email"], r["status"], r["reply"]) for r in read_report(report)}
    assert by_row["3"] == (
        "Ann@EXAMPLE.com",
        "duplicate",
        "the same address as row 1; not sent (--dedupe)",
    )
    assert by_row["4"][1:] == ("duplicate", "the same address as row 2; not sent (--dedupe)")
    assert {by_row["1"][1], by_row["2"][1]} == {"delivered"}


def test_duplicates_left_out_by_dedupe_are_sent_by_a_resume_without_it(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    """'duplicate' is final for one run only, as 'suppressed' is: the next run decides again."""
    report = tmp_path / "report.csv"
    recipients = _duplicated(tmp_path)
    args = ["--url", server.url, "--report", str(report)]
    code, output = run_batch(recipients, template, *args, "--dedupe")
    assert code == 0, output
    assert len(server.messages) == 2
    code, output = run_batch(recipients, template, "--url", server.url, "--resume", str(report))
    assert code == 0, output
    assert len(server.messages) == 4  # the two duplicates, once each; nobody else again
    assert {r["status"] for r in read_report(report)} == {"delivered"}
    code, output = run_batch(recipients, template, "--url", server.url, "--resume", str(report))
    assert code == 0, output
    assert len(server.messages) == 4


def test_a_dry_run_with_dedupe_counts_the_duplicates_it_would_leave_out(
    tmp_path: Path, template: Path
) -> None:
    code, output = run_batch(_duplicated(tmp_path), template, "--dry-run", "--dedupe")
    assert code == 0, output
    assert "2 rows would be sent, 0 rows have problems, 2 duplicates would be left out" in output


# --- delimiters ---------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"])
def test_the_csv_delimiter_is_read_off_the_header(
    server: CaptureServer, tmp_path: Path, template: Path, sep: str
) -> None:
    recipients = tmp_path / "r.csv"
    # Excel's UTF-8 export: a byte-order mark first.
    text = sep.join(["email", "name", "code"]) + "\n" + sep.join(["ann@example.com", "Ann", "7"])
    recipients.write_bytes(b"\xef\xbb\xbf" + text.encode() + b"\n")
    code, output = run_batch(
        recipients, template, "--url", server.url, "--report", str(tmp_path / "report.csv")
    )
    assert code == 0, output
    [message] = server.messages
    assert message.parsed["Subject"] == "Hello Ann"
    assert "your code is 7." in message.parsed.get_content()


def test_delimiter_option_overrides_the_detection(tmp_path: Path, template: Path) -> None:
    recipients = write_csv(tmp_path / "r.csv", [("ann@example.com", "Ann", "1")], sep=";")
    code, output = run_batch(recipients, template, "--dry-run", "--delimiter", "comma")
    assert code == 2
    assert "the CSV header needs an 'email' column; got ['email;name;code']" in output
    code, output = run_batch(recipients, template, "--dry-run", "--delimiter", "semicolon")
    assert code == 0, output
    code, output = run_batch(recipients, template, "--dry-run", "--delimiter", "colon")
    assert code == 2
    assert "use comma, semicolon, tab or pipe" in output


# --- template errors ------------------------------------------------------------------------


def test_an_undefined_variable_names_the_file_and_line_and_the_columns(
    server: CaptureServer, tmp_path: Path
) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hi {{ frist_name }}\n", encoding="utf-8")
    (folder / "body.txt").write_text("Your plan: {{ plan }}\n", encoding="utf-8")
    recipients = write_csv(
        tmp_path / "r.csv", [("ann@example.com", "Ann", "pro")], header="email,first_name,plan"
    )
    code, output = run_batch(recipients, folder, "--url", server.url)
    assert code == 2
    assert (
        f"row 1 (ann@example.com): {folder}/subject.txt:1: 'frist_name' is undefined; "
        "columns: email, first_name, plan"
    ) in output.replace("\n", " ").replace("  ", " ")
    assert "Traceback" not in output
    assert server.messages == []


def test_a_template_syntax_error_names_the_file_and_line(
    server: CaptureServer, tmp_path: Path
) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "subject.txt").write_text("Hi\n", encoding="utf-8")
    (folder / "body.txt").write_text("line one\n{% if %}\n", encoding="utf-8")
    recipients = write_csv(tmp_path / "r.csv", [("ann@example.com", "Ann", "1")])
    code, output = run_batch(recipients, folder, "--url", server.url)
    assert code == 2
    assert f"{folder}/body.txt:2: template syntax error: " in output.replace("\n", " ")
    assert "Traceback" not in output


# --- the report keeps addresses as written ------------------------------------------------


def test_the_report_keeps_each_address_as_the_list_wrote_it(
    server: CaptureServer, tmp_path: Path, template: Path
) -> None:
    written = ["Ann.Smith@Example.COM", "jörg@Bücher.example", "用户@例子.广告"]
    rows = [(address, f"N{i}", str(i)) for i, address in enumerate(written)]
    rows.append(("  spaced@example.com ", "S", "9"))  # (the list's spaces are trimmed)
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    code, output = run_batch(recipients, template, "--url", server.url, "--report", str(report))
    assert code == 0, output
    assert [(r["email"], r["status"]) for r in read_report(report)] == [
        *((address, "delivered") for address in written),
        ("spaced@example.com", "delivered"),
    ]
    assert sorted(copies(server)) == sorted([*written, "spaced@example.com"])


# --- the resume command after Ctrl-C ------------------------------------------------------


def test_ctrl_c_prints_the_resume_command_and_running_it_completes_the_batch(
    tmp_path: Path, template: Path
) -> None:
    rows = [(f"user{i}@example.com", f"N{i}", str(i)) for i in range(60)]
    recipients = write_csv(tmp_path / "r.csv", rows)
    report = tmp_path / "report.csv"
    capture = CaptureServer(
        tls="starttls", auth={"user": PASSWORD}, faults=[Fault.delay("dot", 0.05)]
    )
    with capture.run_in_thread() as relay:
        url = f"smtp://user:{PASSWORD}@127.0.0.1:{relay.port}?tls=starttls&ca_file={relay.ca_file}"
        env = {"ASYNCMAIL_URL": url}
        args = ["batch", str(recipients), "-t", str(template), "--from", SENDER]
        args += ["--no-progress", "--concurrency", "2", "--report", str(report)]
        process = spawn(args, env)
        wait_for_starts(tmp_path / "report.csv.journal", 10, process)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=30)[0]
        assert process.returncode == 130, output
        assert PASSWORD not in output
        [line] = [line for line in output.splitlines() if "Resume with: " in line]
        assert re.match(r"Interrupted after \d+ of 60\. Resume with: asyncmail batch ", line)
        command = shlex.split(line.split("Resume with: ", 1)[1])
        assert command == [
            "asyncmail",
            *("batch", str(recipients), "--template", str(template), "--from", SENDER),
            *("--concurrency", "2", "--no-progress", "--resume", str(report)),
        ]
        first = len(read_report(report))
        assert 10 <= first < 60

        resumed = spawn(command[1:], env)
        output = resumed.communicate(timeout=60)[0]
        final = copies(relay)
    assert resumed.returncode == 0, output
    assert final == {f"user{i}@example.com": 1 for i in range(60)}
    assert len(read_report(report)) == 60


def test_a_password_given_with_url_is_hidden_in_the_resume_command(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("email\n", encoding="utf-8")
    (tmp_path / "t").mkdir()
    url = f"smtps://user:{PASSWORD}@smtp.example.com:465"
    ctx = batch.make_context(
        "batch",
        [
            *(str(tmp_path / "r.csv"), "-t", str(tmp_path / "t"), "--from", "a@example.com"),
            *("--url", url, "--rate", "10/s", "--dedupe", "--report", str(tmp_path / "x.csv")),
        ],
    )
    words, hidden = resume_command(ctx, tmp_path / "x.csv")
    assert hidden
    assert PASSWORD not in " ".join(words)
    assert words[words.index("--url") + 1] == "smtps://user:****@smtp.example.com:465"
    assert words[-2:] == ["--resume", str(tmp_path / "x.csv")]
    assert "--report" not in words
    assert words[words.index("--rate") + 1] == "10/s"
    assert "--dedupe" in words
    assert redact("redis://:pw@host:6379/0") == "redis://:****@host:6379/0"
