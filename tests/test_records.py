"""apo.records: the one reader and validator per record kind of the JSONL hand-off, and the one
atomic writer. Real MATH-500 rows from the shipped benchmark_data for the problem rows."""

from __future__ import annotations

import json
import logging
import os

import pytest

from apo import records
from apo.errors import InputError
from apo.records import (
    JsonLine, append_jsonl, ensure_output_folder, read_generations, read_json_lines, read_metrics_lines,
    read_problem_rows, read_stage1_values, validate_generation, validate_problem_row, write_json_atomic,
    write_jsonl_atomic, write_text_atomic,
)
from conftest import BENCHMARK_DATA


def write_lines(path, lines: list[str], end: str = "\n") -> str:
    path.write_text("\n".join(lines) + end, encoding="utf-8")
    return str(path)


def generation(pid="a", turn=0, **changes) -> dict:
    record = {"id": pid, "sample": 0, "turn": turn, "role": "attempt", "attempt_index": 0, "type": "Algebra",
              "level": 1, "gold": "5", "mode": "self_verify", "text": "so \\boxed{5}", "extracted_answer": "5",
              "correct": True, "verdict": None, "verdict_parsed": False, "checked_attempt_correct": None,
              "prompt_tokens": 10, "response_tokens": 20, "truncated": False, "episode_turns": 1}
    return record | changes


# --- the line loop ---

def test_lines_are_numbered_as_in_the_file_and_bad_json_is_reported_not_raised(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n   \n[2, 3]\r\n{"a": \n"text"', encoding="utf-8")
    lines = list(read_json_lines(str(path)))
    assert lines[0] == JsonLine(1, {"a": 1}, None, True)
    assert lines[1] == JsonLine(4, [2, 3], None, True)            # blank lines 2-3 skipped, CRLF accepted
    assert lines[2].number == 5 and lines[2].value is None
    assert lines[2].error == "Expecting value at column 7"
    assert lines[3] == JsonLine(6, "text", None, False)           # a last line without newline is read
    assert len(lines) == 4


def test_a_byte_that_is_not_utf8_is_reported_with_its_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": "caf\xff"}\n{"c": "\xc3\xa9"}\n')
    lines = list(read_json_lines(str(path)))
    assert lines[1] == JsonLine(2, None, "not UTF-8: byte 0xff at column 11", True)
    assert lines[2].value == {"c": "\u00e9"}


# --- problem rows ---

def test_math500_rows_as_distributed_are_read_with_unique_id_and_level_strings(tmp_path):
    """Issue 13: evaluate_apo rejected "level": "Level 3" and the trainer rejected rows with only `unique_id`."""
    with open(BENCHMARK_DATA / "math500.jsonl", encoding="utf-8") as handle:
        raw = [json.loads(next(handle)) for _ in range(3)]
    assert "id" not in raw[0] and isinstance(raw[0]["level"], str)
    path = write_lines(tmp_path / "math500.jsonl", [json.dumps(r, ensure_ascii=False) for r in raw])
    for require_answer in (True, False):
        rows = read_problem_rows(path, require_answer=require_answer)
        assert [r["id"] for r in rows] == [r["unique_id"] for r in raw]
        assert [r["level"] for r in rows] == [int(r["level"].split()[1]) for r in raw]
        assert [r["problem"] for r in rows] == [r["problem"] for r in raw]
    hub_style = {"unique_id": "test/x/1.json", "problem": "p", "answer": "1", "subject": "Algebra", "level": 2}
    assert validate_problem_row(hub_style, "f:1", require_answer=True)["type"] == "Algebra"
    assert validate_problem_row(hub_style | {"level": "Level ?"}, "f:1", require_answer=True)["level"] is None


@pytest.mark.parametrize("row, require_answer, message", [
    ({"problem": "p", "answer": "1", "type": "Algebra", "level": 1}, False, r"rows.jsonl:2: missing field 'id' or "
                                                                          r"'unique_id'"),
    ({"id": "b", "problem": "p", "type": "Algebra", "level": 1}, False, r"rows.jsonl:2: missing field 'answer'"),
    ({"id": "b", "problem": "p", "answer": "", "type": "A", "level": 1}, True, r":2: field 'answer' is '', expected a "
                                                                               "non-empty string"),
    ({"id": "b", "problem": "p", "answer": None, "type": "A", "level": "Level 9"}, False, r":2: field 'level' is "
                                                                                          "'Level 9', expected 1-5"),
    ({"id": "a", "problem": "p", "answer": "1", "type": "A", "level": 1}, False, r":2: id 'a' already used on "
                                                                                 r".*rows.jsonl:1"),
])
def test_bad_problem_rows_name_the_file_line_and_field(tmp_path, row, require_answer, message):
    good = {"id": "a", "problem": "p", "answer": "1", "type": "Algebra", "level": 1}
    path = write_lines(tmp_path / "rows.jsonl", [json.dumps(good), json.dumps(row)])
    with pytest.raises(InputError, match=message):
        read_problem_rows(path, require_answer=require_answer)


def test_unreadable_missing_or_empty_problem_files_are_refused_naming_the_file(tmp_path):
    good = json.dumps({"id": "a", "problem": "p", "answer": "1", "type": "Algebra", "level": 1})
    path = write_lines(tmp_path / "rows.jsonl", [good, "{oops"])
    with pytest.raises(InputError, match=r"rows.jsonl:2: not valid JSON"):
        read_problem_rows(path, require_answer=True)
    # issue 19: a non-UTF-8 byte was a bare UnicodeDecodeError
    (tmp_path / "latin1.jsonl").write_bytes(good.encode() + b"\n" + good.replace('"p"', '"caf\xe9"').encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1.jsonl:2: not valid JSON \(not UTF-8: byte 0xe9 at column \d+\)"):
        read_problem_rows(str(tmp_path / "latin1.jsonl"), require_answer=True)
    # issue 19: an empty data file went on to load the model
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match=r"empty.jsonl: no problem rows \(the file is empty\)"):
        read_problem_rows(str(tmp_path / "empty.jsonl"), require_answer=True)
    with pytest.raises(FileNotFoundError, match="prepare_data.py"):
        read_problem_rows(str(tmp_path / "absent.jsonl"), require_answer=True)
    assert [r["id"] for r in read_problem_rows(write_lines(tmp_path / "two.jsonl", [good, good.replace('"a"', '"b"')]),
                                               require_answer=True, limit=1)] == ["a"]


# --- stage-1 values ---

def test_stage1_values_drop_a_torn_last_line_and_refuse_a_torn_middle_line(tmp_path, caplog):
    line = json.dumps({"id": "a", "rewards": [0.0, 1.0], "v_star": 0.29, "response_lengths": [3, 4]})
    other = line.replace('"a"', '"b"')
    path = tmp_path / "stage1_values.jsonl"
    path.write_text(line + "\n" + other[:20], encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="apo.records"):
        assert list(read_stage1_values(str(path), 2)) == ["a"]
    assert f"{path}:2: dropping a torn last line" in caplog.text
    path.write_text(other[:20] + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"stage1_values.jsonl:1: not valid JSON"):
        read_stage1_values(str(path), 2)
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":1: 2 rewards, expected num_value_samples=4"):
        read_stage1_values(str(path), 4)
    path.write_text(line + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r":2: id 'a' already recorded"):
        read_stage1_values(str(path), 2)


# --- generations ---

def test_generations_name_the_file_line_and_field(tmp_path):
    path = tmp_path / "generations.jsonl"
    bad = generation(turn=1)
    del bad["verdict_parsed"]
    path.write_text(json.dumps(generation()) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(InputError, match=r"generations.jsonl:2: missing field 'verdict_parsed'"):
        read_generations(str(path))
    path.write_text(json.dumps(generation(sample=True)) + "\n")
    with pytest.raises(InputError, match=r":1: field 'sample' is True, expected int"):
        read_generations(str(path))
    path.write_text(json.dumps(generation(mode="oracles")) + "\n")
    with pytest.raises(InputError, match=r":1: field 'mode' is 'oracles', expected one of"):
        read_generations(str(path))
    path.write_text("")
    with pytest.raises(InputError, match="empty file"):
        read_generations(str(path))
    assert read_generations(str(path), allow_empty=True) == []
    path.write_text(json.dumps(generation()) + "\n" + json.dumps(generation("b"))[:30])
    assert [r["id"] for r in read_generations(str(path))] == ["a"]      # torn last line dropped
    validate_generation(generation(), "record 0")


# --- metrics lines ---

def test_metrics_lines_drop_a_torn_last_line_and_name_a_torn_middle_line(tmp_path, caplog):
    """Issue 19: a torn last line in metrics.jsonl made resume die with a bare JSONDecodeError."""
    path = tmp_path / "metrics.jsonl"
    assert read_metrics_lines(str(path)) == []
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    with caplog.at_level(logging.WARNING, logger="apo.records"):
        assert read_metrics_lines(str(path)) == [{"step": 1, "loss": 0.5}]
    assert "metrics.jsonl:2: dropping a torn last line" in caplog.text
    path.write_text('{"step": 1, "lo\n{"step": 2, "loss": 0.5}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:1: not valid JSON"):
        read_metrics_lines(str(path))
    path.write_text('{"step": "one"}\n')
    with pytest.raises(InputError, match=r"metrics.jsonl:1: field 'step' is 'one', expected an integer"):
        read_metrics_lines(str(path))


# --- writing ---

def test_an_interrupted_atomic_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "rows.jsonl"
    write_jsonl_atomic(str(path), [{"id": "old"}])
    before = path.read_bytes()
    calls = {"n": 0}
    real_dumps = json.dumps

    def dumps_then_fail(obj, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_dumps(obj, **kwargs)

    monkeypatch.setattr(records.json, "dumps", dumps_then_fail)
    with pytest.raises(KeyboardInterrupt):
        write_jsonl_atomic(str(path), [{"id": i} for i in range(5)])
    monkeypatch.undo()
    assert path.read_bytes() == before
    with pytest.raises(TypeError):  # a value json cannot write: the old file stays, no temporary file is left
        write_jsonl_atomic(str(path), [{"x": object()}])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["rows.jsonl"]

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records.os, "replace", full_disk)  # the temporary file is written, the rename fails
    with pytest.raises(OSError, match="No space left"):
        write_text_atomic(str(path), "new\n")
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["rows.jsonl"]
    write_json_atomic(str(path), {"b": 1, "a": [1]})
    assert json.loads(path.read_text()) == {"a": [1], "b": 1}
    write_text_atomic(str(tmp_path / "sub" / "notes.md"), "caf\u00e9\n")
    assert (tmp_path / "sub" / "notes.md").read_text(encoding="utf-8") == "caf\u00e9\n"


def test_append_repairs_a_torn_last_line_first(tmp_path, caplog):
    path = tmp_path / "values.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b', encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="apo.records"):
        append_jsonl(str(path), [{"id": "c"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "c"}\n' and "torn last line" in caplog.text
    path.write_text('{"id": "a"}', encoding="utf-8")                    # complete but without its newline: kept
    append_jsonl(str(path), [{"id": "c"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "c"}\n'


def test_an_output_folder_that_is_a_file_is_named(tmp_path):
    """Issue 19: --output_dir pointing at a file was a raw FileExistsError."""
    (tmp_path / "taken").write_text("x")
    with pytest.raises(InputError, match=r"--output_dir .*taken: is a file"):
        ensure_output_folder(str(tmp_path / "taken"))
    with pytest.raises(InputError, match="its parent .*taken is a file"):
        ensure_output_folder(str(tmp_path / "taken" / "below"))
    assert ensure_output_folder(str(tmp_path / "new" / "run")) == str(tmp_path / "new" / "run")
