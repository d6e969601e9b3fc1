"""The write-ahead journal: replayable after a kill, and the report is rebuilt from it."""

import csv
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import ConfigError
from asyncmail.batch._digests import INITIAL_SLOTS, DigestTable
from asyncmail.batch._journal import (
    REPORT_COLUMNS,
    Journal,
    JournalState,
    Occurrences,
    ReportRow,
    identity,
    journal_path,
    write_report,
)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_journal_lives_next_to_the_report(tmp_path: Path) -> None:
    assert journal_path(tmp_path / "report.csv") == tmp_path / "report.csv.journal"


def test_every_line_is_on_disk_as_soon_as_it_is_written(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.started(1, "a@example.com", 2)
    # Read through another file object while the journal is still open, as a resumed run
    # would after a kill -9.
    assert (tmp_path / "j").read_text().splitlines() == [
        "# asyncmail journal v2",
        "S 1 2 a@example.com",
    ]
    journal.close()


def test_replay_gives_the_last_event_of_each_address_and_occurrence(tmp_path: Path) -> None:
    with Journal(tmp_path / "j") as journal:
        journal.started(1, "a@example.com")
        journal.finished(ReportRow(row=1, email="a@example.com", status="delivered"))
        journal.started(2, "b@example.com")
        journal.finished(ReportRow(row=3, email="c@example.com", status="failed"))
        journal.finished(ReportRow(row=4, email="a@example.com", occurrence=2, status="failed"))
    state = JournalState.replay(tmp_path / "j")
    assert state.last(identity("a@example.com", 1)) == "D"
    assert state.last(identity("A@Example.COM", 1)) == "D"  # case does not matter
    assert state.last(identity("a@example.com", 2)) == "F"  # the address's second row
    assert state.last(identity("a@example.com", 3)) is None
    assert state.last(identity("b@example.com", 1)) == "S"
    assert state.last(identity("c@example.com", 1)) == "F"
    assert state.last(identity("other@example.com", 1)) is None
    assert state.in_flight() == [
        ReportRow(
            row=2,
            email="b@example.com",
            status="unknown",
            reply="in flight when a previous run stopped: maybe delivered",
        )
    ]


def test_occurrences_number_the_rows_of_each_address() -> None:
    occurrences = Occurrences()
    emails = ("a@example.com", "b@example.com", "A@EXAMPLE.com", "", "a@example.com", "")
    found = [occurrences.next(email) for email in emails]
    assert [who.occurrence for who in found] == [1, 1, 2, 1, 3, 2]
    assert found == [
        identity(email, who.occurrence) for email, who in zip(emails, found, strict=True)
    ]
    assert len({who.digest for who in found}) == len(found)


def test_a_line_cut_short_by_a_kill_is_ignored_and_the_next_run_appends_cleanly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.started(1, "a@example.com")
    with path.open("a") as f:
        f.write("D 1 1 a@exa")  # killed in the middle of the write
    assert JournalState.replay(path).last(identity("a@example.com", 1)) == "S"
    with Journal(path) as journal:
        journal.finished(ReportRow(row=1, email="a@example.com", status="unknown"))
    assert JournalState.replay(path).last(identity("a@example.com", 1)) == "U"


def test_report_has_one_row_per_recipient_with_its_last_outcome(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with Journal(path) as journal:
        journal.started(1, "a@example.com")
        journal.finished(
            ReportRow(
                row=1,
                email="a@example.com",
                status="failed",
                smtp_code=451,
                enhanced_code="4.3.0",
                reply="4.3.0 try\tlater\nplease \\ now",
                attempts=3,
            )
        )
        journal.started(2, "b@example.com")  # in flight when the run stopped
        journal.started(1, "a@example.com")  # a resumed run retries the failure
        journal.finished(
            ReportRow(
                row=1,
                email="a@example.com",
                status="delivered",
                smtp_code=250,
                enhanced_code="2.0.0",
                reply="2.0.0 OK",
                message_id="<x@example.com>",
                attempts=1,
            )
        )
        journal.finished(
            ReportRow(row=3, email="bad", status="failed", reply="invalid email address: 'x y'")
        )
    counts = write_report(path, tmp_path / "report.csv")
    rows = read_report(tmp_path / "report.csv")
    assert list(rows[0]) == list(REPORT_COLUMNS)
    assert counts == {"delivered": 1, "failed": 1, "unknown": 1, "suppressed": 0, "duplicate": 0}
    by_row = {r["row"]: r for r in rows}
    assert len(rows) == 3
    assert by_row["1"] == {
        "row": "1",
        "email": "a@example.com",
        "status": "delivered",
        "smtp_code": "250",
        "enhanced_code": "2.0.0",
        "reply": "2.0.0 OK",
        "message_id": "<x@example.com>",
        "attempts": "1",
    }
    assert by_row["2"]["status"] == "unknown"
    assert "maybe delivered" in by_row["2"]["reply"]
    assert by_row["3"]["reply"] == "invalid email address: 'x y'"


@given(st.text())
def test_any_server_reply_survives_the_journal_unchanged(reply: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j"
        with Journal(path) as journal:
            journal.finished(ReportRow(row=1, email="a@example.com", status="failed", reply=reply))
        write_report(path, Path(tmp) / "r.csv")
        [row] = read_report(Path(tmp) / "r.csv")
    expected = reply.replace("\r\n", "\n").replace("\r", "\n")
    assert row["reply"].replace("\r\n", "\n").replace("\r", "\n") == expected


def test_report_has_one_line_per_recipient_wherever_its_row_moved(tmp_path: Path) -> None:
    """Rows renumbered between runs neither hide a recipient nor list one twice."""
    path = tmp_path / "j"
    with Journal(path) as journal:  # a first run
        journal.finished(ReportRow(row=1, email="a@example.com", status="delivered"))
        journal.finished(ReportRow(row=2, email="b@example.com", status="failed"))
        journal.finished(ReportRow(row=3, email="c@example.com", status="delivered"))
        # the list was edited: new@ inserted at row 2, b@ moved to row 3 and retried
        journal.finished(ReportRow(row=2, email="new@example.com", status="delivered"))
        journal.finished(ReportRow(row=3, email="b@example.com", status="delivered"))
    counts = write_report(path, tmp_path / "report.csv")
    rows = [(r["row"], r["email"], r["status"]) for r in read_report(tmp_path / "report.csv")]
    assert rows == [
        ("1", "a@example.com", "delivered"),
        ("3", "c@example.com", "delivered"),
        ("2", "new@example.com", "delivered"),
        ("3", "b@example.com", "delivered"),
    ]
    assert counts == {"delivered": 4, "failed": 0, "unknown": 0, "suppressed": 0, "duplicate": 0}


V1_JOURNAL = "# asyncmail journal v1\nD 1 a@example.com\t250\t2.0.0\t1\t<x@y>\tOK\n"


def test_a_v1_journal_is_refused_by_replay_report_and_append(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text(V1_JOURNAL, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"journal v1, which knows recipients by row number"):
        JournalState.replay(path)
    with pytest.raises(ConfigError, match="journal v1"):
        write_report(path, tmp_path / "report.csv")
    with pytest.raises(ConfigError, match="journal v1"):
        Journal(path)
    assert path.read_text(encoding="utf-8") == V1_JOURNAL
    assert not (tmp_path / "report.csv").exists()


def test_a_file_that_is_no_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_text("email,name\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not an asyncmail journal"):
        JournalState.replay(path)


@given(st.lists(st.tuples(st.integers(1, 2**64 - 1), st.integers(0, 255)), max_size=3000))
def test_digest_table_reads_back_what_was_set_as_a_dict_would(
    items: list[tuple[int, int]],
) -> None:
    table, expected = DigestTable("B"), {}
    for key, value in items:
        table.set(key, value)
        expected[key] = value
    assert len(table) == len(expected)
    assert all(table.get(key) == value for key, value in expected.items())
    assert table.get(0xDEAD_BEEF) == expected.get(0xDEAD_BEEF, 0)


def test_digest_table_grows_and_counts() -> None:
    table = DigestTable("I")
    keys = range(1, 10 * INITIAL_SLOTS)  # consecutive keys: long probe runs, many growths
    for key in keys:
        assert table.add(key) == 1
    assert table.add(5, 41) == 42
    assert len(table) == len(keys)
    assert [table.get(k) for k in (1, 5, len(keys), len(keys) + 1)] == [1, 42, 1, 0]


def test_a_suppressed_recipient_is_journaled_replayed_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "report.csv.journal"
    with Journal(path) as journal:
        journal.finished(
            ReportRow(row=1, email="a@example.com", status="suppressed", reply="listed")
        )
        journal.started(2, "b@example.com")
        journal.finished(ReportRow(row=2, email="b@example.com", status="delivered"))
    state = JournalState.replay(path)
    assert state.last(identity("A@example.com", 1)) == "X"
    assert state.in_flight() == []
    counts = write_report(path, tmp_path / "report.csv")
    assert counts == {"delivered": 1, "failed": 0, "unknown": 0, "suppressed": 1, "duplicate": 0}
    [first, _] = read_report(tmp_path / "report.csv")
    assert (first["email"], first["status"], first["reply"]) == (
        "a@example.com",
        "suppressed",
        "listed",
    )
