"""utilities/core/textdata.py: names read as written (``NA``, ``nan``, ``007``, ``1e3``), numbers
parsed, a repeated column or JSON key refused in one line naming the file, Markdown cells that
cannot split their row."""
from __future__ import annotations

import json
import math
import re

import pytest

from utilities.core.textdata import check_header, csv_header, loads_json, md_cell, read_csv_table


def test_text_columns_are_read_as_written_and_the_others_as_numbers(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_bytes("\ufeffsubject,dice,note\nNA,0.5,NA\nnan,,x\n007,1e3,\n1e3,NaN,None\n".encode())
    table = read_csv_table(path, "scores table", text_columns=["subject", "note"])
    assert list(table.columns) == ["subject", "dice", "note"]   # the byte-order mark is no part of the header
    assert table["subject"].tolist() == ["NA", "nan", "007", "1e3"]
    assert table["note"].tolist() == ["NA", "x", "", "None"]
    dice = table["dice"].tolist()
    assert dice[0] == 0.5 and dice[2] == 1000.0 and math.isnan(dice[1]) and math.isnan(dice[3])


def test_a_repeated_column_is_refused(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("subject,dice,subject\na,0.5,b\n")
    message = f"scores table {path}: its header names column 'subject' twice; rename or delete one of them"
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        read_csv_table(path, "scores table", text_columns=["subject"])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="names column 'a' twice"):
        check_header(["a", "b", "a"], "here")
    assert check_header(("a", "b"), "here") == ["a", "b"]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty (no header row)"),
    (b"subject\xff,dice\n", "is not UTF-8 text; re-save it"),
])
def test_an_empty_or_undecodable_file_is_named(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(f"table {path} {message}")):
        csv_header(path, "table")


def test_a_json_key_written_twice_is_refused():
    assert loads_json('{"a": 1, "b": {"a": 2}}', "config c.json") == {"a": 1, "b": {"a": 2}}
    with pytest.raises(ValueError, match=r"^config c.json: key 'a' appears twice in one JSON object"):
        loads_json('{"b": {"a": 1, "a": 2}}', "config c.json")
    with pytest.raises(json.JSONDecodeError):   # a syntax error stays json's own, for the caller to word
        loads_json('{"a": 1,}', "config c.json")


def test_a_json_document_after_a_byte_order_mark_is_read():
    """Windows Notepad saves UTF-8 with a byte-order mark: the document after it is read (one mark
    only: a second one is text, and json's error)."""
    assert loads_json('\ufeff{"images": "scans", "n": [1, 2]}', "config c.json") == {"images": "scans", "n": [1, 2]}
    with pytest.raises(json.JSONDecodeError):
        loads_json('\ufeff\ufeff{}', "config c.json")


@pytest.mark.parametrize("value, cell", [
    ("plain", "plain"),
    ("a|b", "a\\|b"),
    ("two\nlines", "two lines"),
    ("x|y\r\nz", "x\\|y z"),
    (0.5, "0.5"),
])
def test_md_cell(value, cell):
    assert md_cell(value) == cell
