"""apo.problem_files on the real MATH rows in ../shared/data/math: the four local formats give the
same rows, a MATH folder reads its splits in order, the hub reader's calls, and malformed input
named by file, line and reason."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from apo.problem_files import DataFormatError, read_hub, read_json_list, read_jsonl, read_local
from apo.problem_rows import to_row
from prepare_data import HUB_SUBJECT_CONFIGS, MATH_SUBJECTS
from conftest import VALID_RECORD, write_lines
from conftest import read_jsonl as read_rows

SUBJECT_DIRS = {"Algebra": "algebra", "Counting & Probability": "counting_and_probability", "Geometry": "geometry",
                "Intermediate Algebra": "intermediate_algebra", "Number Theory": "number_theory",
                "Prealgebra": "prealgebra", "Precalculus": "precalculus"}


# --- local formats give identical rows ---

def build_math_folder(root: Path, rows: list[dict]) -> Path:
    """The original release layout from the real rows: <split>/<subject>/<n>.json without answer/unique_id."""
    for row in rows:
        split, subject, name = row["unique_id"].split("/")
        assert subject == SUBJECT_DIRS[row["type"]]
        folder = root / split / subject
        folder.mkdir(parents=True, exist_ok=True)
        original = {key: row[key] for key in ("problem", "level", "type", "solution")}
        (folder / name).write_text(json.dumps(original, ensure_ascii=False), encoding="utf-8")
    return root


def test_folder_jsonl_json_and_parquet_give_the_same_rows(tmp_path, math_dir, math_train_rows):
    folder = build_math_folder(tmp_path / "MATH", math_train_rows)
    json_path = tmp_path / "train.json"
    json_path.write_text(json.dumps(math_train_rows, ensure_ascii=False), encoding="utf-8")
    parquet_path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(math_train_rows), parquet_path)

    def normalised(path) -> list[dict]:
        return [to_row(record, where, "math") for record, where in read_local(str(path), ["train"])]

    from_jsonl = normalised(math_dir / "train.jsonl")
    assert len(from_jsonl) == 7500
    assert normalised(folder) == from_jsonl
    assert normalised(json_path) == from_jsonl
    assert normalised(parquet_path) == from_jsonl


def test_folder_reads_several_splits_in_order_and_names_a_missing_split(tmp_path, math_train_rows, math_dir):
    test_rows = read_rows(math_dir / "test.jsonl")[:30]
    folder = build_math_folder(tmp_path / "MATH", math_train_rows[:20] + test_rows)
    records = read_local(str(folder), ["train", "test"])
    assert [r["unique_id"] for r, _ in records] == [r["unique_id"] for r in math_train_rows[:20] + test_rows]
    with pytest.raises(FileNotFoundError, match="valid"):
        read_local(str(folder), ["valid"])


def test_read_local_refuses_an_unsupported_file_type(tmp_path):
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text("problem\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'; give \.jsonl, \.json, \.parquet"):
        read_local(str(csv_path), ["train"])


# --- the hub ---

def test_hub_reader_uses_load_dataset_splits_and_every_subject_config(tmp_path, monkeypatch):
    # Real datasets.load_dataset on a local folder: the same call path as a hub id.
    data_dir = tmp_path / "hub_copy"
    data_dir.mkdir()
    rows = [{"problem": f"What is ${i} + 1$?", "level": "Level 1", "type": "Prealgebra",
             "solution": f"${i} + 1 = \\boxed{{{i + 1}}}$"} for i in range(5)]
    write_lines(data_dir / "train.jsonl", [json.dumps(r) for r in rows])
    records = read_hub(str(data_dir), ["train"])
    assert [r for r, _ in records] == rows
    assert records[2][1].endswith("[train] row 2")

    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: calls.append((config, split)) or rows[:1])
    read_hub("EleutherAI/hendrycks_math", ["train", "test"], HUB_SUBJECT_CONFIGS["EleutherAI/hendrycks_math"])
    assert len(calls) == 14 and {c for c, _ in calls} == set(MATH_SUBJECTS)

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'qwedsacf/competition_math' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match="--source local .* --source synthetic"):
        read_hub("qwedsacf/competition_math", ["train"])


# --- bad input ---

def test_malformed_json_line_names_file_line_and_reason(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl",
                       [json.dumps(VALID_RECORD), "", '{"problem": "x", "level": ', json.dumps(VALID_RECORD)])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:3: malformed JSON \(Expecting value at column 27\)"):
        read_jsonl(str(path))
    json_path = tmp_path / "bad.json"
    json_path.write_text('[\n{"problem": "x"},\n{"problem" "y"}\n]', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.json:3: malformed JSON \(Expecting ':' delimiter"):
        read_json_list(str(json_path))
