"""apo.problem_rows on the real MATH rows in ../shared/data/math: the cleaning report (empty boxes,
the near duplicate), MATH-500 exclusion by problem text, and bad fields named by row and field."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from apo.errors import InputError
from apo.problem_files import read_jsonl
from apo.problem_rows import CleaningReport, clean_rows, exclude_eval_problems
from conftest import EMPTY_BOX_IDS, ROW_SCHEMA, VALID_RECORD, write_lines
from conftest import read_jsonl as read_rows


def test_clean_rows_reports_empty_boxes_and_the_near_duplicate(math_dir):
    report = CleaningReport()
    rows = clean_rows(read_jsonl(str(math_dir / "train.jsonl")), "math", report, skip_invalid=False)
    assert report.rows_read == 7500
    assert set(report.no_answer) == EMPTY_BOX_IDS
    # train/algebra/24377.json repeats train/algebra/2463.json up to one extra space.
    assert report.duplicates == ["train/algebra/24377.json"]
    assert report.answer_field_mismatches == []
    assert len(rows) == 7500 - 2 - 1
    levels = Counter(row["level"] for row in rows)
    assert levels[None] == 2 and levels[5] == 2304 - 3  # "Level ?" rows; both empty boxes and the repeat are level 5
    assert all(set(row) == ROW_SCHEMA and row["source"] == "math" for row in rows)


# --- MATH-500 exclusion ---

def test_math500_is_removed_by_problem_text_when_the_source_has_no_ids(tmp_path, math_dir, math500_rows):
    # Like qwedsacf/competition_math: no unique_id, all problems in one split; whitespace varies.
    test_rows = read_rows(math_dir / "test.jsonl")
    stripped = []
    for index, row in enumerate(test_rows):
        record = {key: row[key] for key in ("problem", "level", "type", "solution")}
        if index % 2:
            record["problem"] = "  " + record["problem"].replace(" ", "  ") + "\n"
        stripped.append(record)
    train_path = write_lines(tmp_path / "no_ids.jsonl", [json.dumps(r) for r in stripped])
    eval_rows = clean_rows(read_jsonl(str(math_dir / "test500.jsonl")), "math500", CleaningReport(), False)
    report = CleaningReport()
    rows = exclude_eval_problems(clean_rows(read_jsonl(str(train_path)), "math", report, False), eval_rows, report)
    assert report.math500_by_id == 0 and report.math500_by_text == 500
    assert len(rows) == 4500
    assert all(row["id"].startswith("math/") for row in rows)


# --- bad input ---

@pytest.mark.parametrize("record, message", [
    ({k: v for k, v in VALID_RECORD.items() if k != "solution"}, r"rows.jsonl:2: missing field 'solution'"),
    ({k: v for k, v in VALID_RECORD.items() if k != "type"}, r"rows.jsonl:2: missing field 'type' / 'subject'"),
    (VALID_RECORD | {"problem": 12}, r"rows.jsonl:2: field 'problem' must be str, got int"),
    (VALID_RECORD | {"level": "Level 9"},
     r"rows.jsonl:2: field 'level' is 'Level 9', expected 1-5, 'Level 1'..'Level 5'"),
    (VALID_RECORD | {"level": [3]}, r"rows.jsonl:2: field 'level' is \[3\], expected"),
    (VALID_RECORD | {"unique_id": 7}, r"rows.jsonl:2: field 'unique_id' must be str"),
    (VALID_RECORD | {"problem": "   "}, r"rows.jsonl:2: field 'problem' is empty"),
])
def test_missing_or_wrongly_typed_field_names_field_and_row(tmp_path, record, message):
    path = write_lines(tmp_path / "rows.jsonl", [json.dumps(VALID_RECORD), json.dumps(record)])
    with pytest.raises(InputError, match=message):
        clean_rows(read_jsonl(str(path)), "math", CleaningReport(), skip_invalid=False)
