"""Recipient lists stream row by row, and a bad row is a row, not a crash."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncmail import Address, BadRow, ConfigError, Message, Recipient, read_recipients
from asyncmail.batch._recipients import count_rows, detect_delimiter


def write(path: Path, data: str | bytes) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_csv_columns_become_variables_and_name_is_optional(tmp_path: Path) -> None:
    file = write(
        tmp_path / "r.csv", "email,name,code\nann@example.com,Ann,A1\nbo@example.com,,B2\n"
    )
    rows = list(read_recipients(file))
    assert rows == [
        Recipient(
            row=1,
            email="ann@example.com",
            name="Ann",
            variables={"email": "ann@example.com", "name": "Ann", "code": "A1"},
        ),
        Recipient(
            row=2,
            email="bo@example.com",
            name=None,
            variables={"email": "bo@example.com", "name": "", "code": "B2"},
        ),
    ]


def test_csv_with_byte_order_mark_and_chinese_names(tmp_path: Path) -> None:
    file = write(tmp_path / "r.csv", "\ufeffemail,name\r\nzw@example.com,张伟\r\n")
    [row] = read_recipients(file)
    assert isinstance(row, Recipient)
    assert row.name == "张伟"


def test_bad_csv_rows_become_failures_and_reading_goes_on(tmp_path: Path) -> None:
    file = write(
        tmp_path / "r.csv",
        b"email,name,code\n"
        b"not-an-address,X,1\n"
        b",Nobody,2\n"
        b"short@example.com,Short\n"
        b"long@example.com,Long,3,extra\n"
        b"\xff@example.com,Latin1,4\n"
        b'quote@example.com,"Q"x,5\n'
        b"ok@example.com,Ok,6\n",
    )
    rows = list(read_recipients(file))
    assert [type(r).__name__ for r in rows] == ["BadRow"] * 6 + ["Recipient"]
    reasons = [r.reason for r in rows if isinstance(r, BadRow)]
    assert reasons[0] == "invalid email address: 'not-an-address'"
    assert reasons[1] == "empty email address"
    assert reasons[2] == "missing column(s): code"
    assert reasons[3] == "4 fields, but the header has 3"
    assert reasons[4] == "the row is not valid UTF-8"
    assert reasons[5].startswith("unreadable CSV row")
    assert rows[-1].row == 7


def test_reading_is_streamed_so_a_broken_last_line_does_not_stop_the_first_row(
    tmp_path: Path,
) -> None:
    body = "".join(f"u{i}@example.com,User {i}\n" for i in range(50_000))
    file = write(tmp_path / "r.csv", "email,name\n" + body + 'broken@example.com,"never closed\n')
    rows = read_recipients(file)
    first = next(rows)
    assert isinstance(first, Recipient)
    assert first.email == "u0@example.com"
    *_, last = rows
    assert isinstance(last, BadRow)
    assert last.row == 50_001


def test_csv_without_email_column_is_a_config_error(tmp_path: Path) -> None:
    file = write(tmp_path / "r.csv", "mail,name\na@example.com,A\n")
    with pytest.raises(ConfigError, match="'email' column"):
        next(read_recipients(file))


def test_unknown_suffix_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown recipient list format"):
        read_recipients(write(tmp_path / "r.txt", "x"))


def test_jsonl_rows_keep_json_values_and_bad_lines_become_failures(tmp_path: Path) -> None:
    file = write(
        tmp_path / "r.jsonl",
        '{"email": "a@example.com", "name": "李娜", "items": [1, 2]}\n'
        "\n"
        "{not json\n"
        "[1, 2]\n"
        '{"name": "no address"}\n'
        '{"email": "b@example.com"}',
    )
    rows = list(read_recipients(file))
    assert rows[0] == Recipient(
        row=1,
        email="a@example.com",
        name="李娜",
        variables={"email": "a@example.com", "name": "李娜", "items": [1, 2]},
    )
    assert [(r.row, type(r).__name__) for r in rows] == [
        (1, "Recipient"),
        (3, "BadRow"),
        (4, "BadRow"),
        (5, "BadRow"),
        (6, "Recipient"),
    ]


def test_count_rows_counts_data_rows_for_progress(tmp_path: Path) -> None:
    assert count_rows(write(tmp_path / "a.csv", "email\na@example.com\nb@example.com")) == 2
    assert count_rows(write(tmp_path / "b.jsonl", '{"email": "a@example.com"}\n')) == 1


@given(st.lists(st.text(), max_size=5))
def test_any_jsonl_line_is_a_recipient_or_a_bad_row(
    tmp_path_factory: pytest.TempPathFactory, emails: list[str]
) -> None:
    file = tmp_path_factory.mktemp("h") / "r.jsonl"
    file.write_text("".join(json.dumps({"email": e}) + "\n" for e in emails), encoding="utf-8")
    rows = list(read_recipients(file))
    assert all(isinstance(r, Recipient | BadRow) for r in rows)
    assert len(rows) == len(emails)


_CELLS = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\r"))


@given(st.lists(st.tuples(_CELLS, _CELLS), min_size=1, max_size=8))
def test_any_csv_written_by_a_spreadsheet_reads_back_cell_for_cell(
    tmp_path_factory: pytest.TempPathFactory, cells: list[tuple[str, str]]
) -> None:
    import csv

    file = tmp_path_factory.mktemp("p") / "r.csv"
    with file.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["email", "name", "note"])
        for i, (name, note) in enumerate(cells):
            out.writerow([f"user{i}@example.com", name, note])
    rows = list(read_recipients(file))
    assert [r.row for r in rows] == list(range(1, len(cells) + 1))
    for row, (name, note) in zip(rows, cells, strict=True):
        assert isinstance(row, Recipient)
        assert row.variables["note"] == note
        assert row.variables["name"] == name


def test_a_row_whose_name_is_its_address_gives_one_named_recipient(tmp_path: Path) -> None:
    """A name column holding the address itself (a common export) is one recipient, not an
    ambiguous pair: rows become Address values, never (name, address) tuples."""
    path = tmp_path / "list.csv"
    path.write_text("email,name\nbob@example.org,bob@example.org\nann@example.org,Ann\n")
    rows = [r for r in read_recipients(path) if isinstance(r, Recipient)]
    assert [r.address for r in rows] == [
        Address("bob@example.org", "bob@example.org"),
        Address("Ann", "ann@example.org"),
    ]
    message = Message(sender="shop@example.com", to=rows[0].address, text="hi")
    assert message.recipients == ("bob@example.org",)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("email,name,plan", ","),
        ("email;name;plan", ";"),
        ("email\tname\tplan", "\t"),
        ("email|name|plan", "|"),
        ('"email";"name, full"', ";"),  # a comma inside a quoted name does not win
        ("email", ","),  # one column: any delimiter reads it
        ("mail;name", ","),  # no email column whichever way: the default (the error follows)
    ],
)
def test_the_csv_delimiter_is_the_one_that_makes_an_email_column(
    header: str, expected: str
) -> None:
    assert detect_delimiter(header + "\r\n") == expected


def test_a_semicolon_list_with_a_byte_order_mark_reads_like_a_comma_one(tmp_path: Path) -> None:
    """Excel in many European locales saves 'CSV (UTF-8)' with ; and a byte-order mark."""
    file = tmp_path / "r.csv"
    file.write_bytes("\ufeffemail;name\nann@example.com;Ann; Smith\n".encode())
    [row] = read_recipients(file)
    assert isinstance(row, BadRow)  # 3 fields: the name's ; splits it
    file.write_bytes('\ufeffemail;name\nann@example.com;"Ann; Smith"\n'.encode())
    [row] = read_recipients(file)
    assert isinstance(row, Recipient)
    assert (row.email, row.name) == ("ann@example.com", "Ann; Smith")
    [row] = read_recipients(file, delimiter=";")
    assert isinstance(row, Recipient)
