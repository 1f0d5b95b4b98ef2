"""Tests of apo.records.read_json_lines: blank lines skipped, line numbers kept, bad JSON reported."""

from __future__ import annotations

from apo.records import JsonLine, read_json_lines


def test_lines_are_numbered_as_in_the_file_and_bad_json_is_reported_not_raised(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n[2, 3]\r\n{"a": \n"text"', encoding="utf-8")
    lines = list(read_json_lines(str(path)))
    assert lines[0] == JsonLine(1, {"a": 1}, None)
    assert lines[1] == JsonLine(4, [2, 3], None)                 # blank lines 2-3 skipped, CRLF accepted
    assert lines[2].number == 5 and lines[2].value is None
    assert lines[2].error == "Expecting value at column 7"
    assert lines[3] == JsonLine(6, "text", None)                  # a last line without newline is read
    assert len(lines) == 4


def test_an_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    assert list(read_json_lines(str(path))) == []
