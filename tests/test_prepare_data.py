"""prepare_data.py on the real MATH rows in ../shared/data/math: answer extraction, the hub training
sets, MATH-500 and benchmark exclusion, the stratified subset, bad input, atomic writes and --help.
The readers are tested in test_problem_files.py, the row checks in test_problem_rows.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import prepare_data
from apo.grading import last_boxed_content
from apo.problem_files import DataFormatError, read_json_list, read_jsonl
from apo.problem_rows import CleaningReport, clean_rows, normalise_text
from prepare_data import DataConfig, main, stratified_subset
from apo.errors import InputError
from apo.records import parse_level, read_problem_rows
from apo.synthetic import ARITHMETIC_WORDINGS
from conftest import BENCHMARK_DATA, EMPTY_BOX_IDS, ROW_SCHEMA, VALID_RECORD, write_lines
from conftest import read_jsonl as read_rows

REPO_ROOT = Path(__file__).resolve().parents[1]


def local_config(tmp_path: Path, train_path, math500_path, **overrides) -> DataConfig:
    return DataConfig(source="local", train_path=str(train_path), math500_path=str(math500_path),
                      output_dir=str(tmp_path / "out"), tokenizer="none", **overrides)


# --- answer extraction on all 12,500 rows ---

def test_last_boxed_content_agrees_with_answer_field_on_all_math_rows(math_dir, math_train_rows):
    test_rows = read_rows(math_dir / "test.jsonl")
    rows = math_train_rows + test_rows
    assert len(rows) == 12_500
    disagreements = [row["unique_id"] for row in rows if last_boxed_content(row["solution"]) != row["answer"]]
    assert disagreements == []
    # Documented exceptions (shared/data/math/README.md): two solutions box nothing, `\boxed{}`.
    # They agree with the field ("" == "") but cannot be graded, so prepare_data keeps them out.
    assert {row["unique_id"] for row in rows if row["answer"] == ""} == EMPTY_BOX_IDS
    braceless = {row["unique_id"]: last_boxed_content(row["solution"]) for row in math_train_rows
                 if row["unique_id"] in ("train/algebra/24014.json", "train/algebra/25040.json")}
    assert braceless == {"train/algebra/24014.json": "2", "train/algebra/25040.json": "9"}


# --- the hub training sets ---

@pytest.mark.parametrize("training_set, splits, expected_splits, recorded", [
    ("math_train", "", ["train"], "math_train"),
    ("math_12k", "", ["train", "test"], "math_12k"),
    ("math_train", "train,test", ["train", "test"], "custom"),
])
def test_default_hub_training_set_is_math_train_and_the_12k_set_only_by_name(tmp_path, monkeypatch, training_set,
                                                                            splits, expected_splits, recorded):
    calls = []
    rows = [{"problem": f"What is ${i} + 2$?", "level": "Level 1", "type": "Prealgebra",
             "solution": f"$\\boxed{{{i + 2}}}$"} for i in range(6)]

    def fake_hub(name, split_names, subject_configs=None):
        calls.append((name, list(split_names)))
        return [(dict(r), f"{name} row {i}") for i, r in enumerate(rows)]

    monkeypatch.setattr(prepare_data, "read_hub", fake_hub)
    assert DataConfig().training_set == "math_train" and DataConfig().hub_dataset == "EleutherAI/hendrycks_math"
    cfg = DataConfig(training_set=training_set, splits=splits, math500_path="none", tokenizer="none",
                     output_dir=str(tmp_path), subset_size=2)
    summary = prepare_data.main(cfg)
    assert calls == [("EleutherAI/hendrycks_math", expected_splits)]
    saved = json.loads((tmp_path / "data_provenance.json").read_text())
    assert saved == summary.provenance and saved["training_set"] == recorded
    assert saved["splits"] == ",".join(expected_splits) and saved["num_train"] == 6


# --- MATH-500 exclusion ---

def test_math500_is_removed_from_training_by_unique_id(tmp_path, math_dir, math500_rows):
    summary = main(local_config(tmp_path, math_dir / "test.jsonl", math_dir / "test500.jsonl", subset_size=100))
    assert len(summary.train_report.math500_removed) == 500
    assert summary.train_report.math500_by_id == 500
    # and test/precalculus/216.json is an OlympiadBench problem (benchmark decontamination)
    assert summary.num_train == 4499 and summary.num_eval == 500
    assert summary.train_report.benchmark_removed["olympiadbench"] == ["test/precalculus/216.json"]
    train_rows = read_rows(summary.train_file)
    math500_ids = {row["unique_id"] for row in math500_rows}
    math500_texts = {normalise_text(row["problem"]) for row in math500_rows}
    assert not any(row["id"] in math500_ids or normalise_text(row["problem"]) in math500_texts for row in train_rows)
    eval_rows = read_rows(summary.eval_file)
    assert [row["id"] for row in eval_rows] == [row["unique_id"] for row in math500_rows]
    assert all(row["source"] == "math500" for row in eval_rows)
    assert [row["answer"] for row in eval_rows] == [row["answer"] for row in math500_rows]


def test_benchmark_problems_are_removed_from_training_and_counted(tmp_path, math_dir, math_train_rows, capsys):
    benchmark_dir = BENCHMARK_DATA
    gsm8k = read_rows(benchmark_dir / "gsm8k.jsonl")[5]
    amc23 = read_rows(benchmark_dir / "amc23.jsonl")[3]
    planted = [{"problem": "  " + row["problem"].replace(" ", "   ") + "\n", "solution": f"\\boxed{{{row['answer']}}}",
                "type": "Prealgebra", "level": "Level 1", "unique_id": f"planted/{n}"}
               for n, row in enumerate((gsm8k, amc23))]
    train_path = write_lines(tmp_path / "train.jsonl", [json.dumps(r) for r in math_train_rows[:20] + planted])
    summary = main(local_config(tmp_path, train_path, "none", benchmark_dir=str(benchmark_dir)))
    assert summary.train_report.benchmark_removed == {"minerva_math": [], "olympiadbench": [], "amc23": ["planted/1"],
                                                      "aime24": [], "gsm8k": ["planted/0"]}
    assert summary.num_train == 20
    assert ("benchmark decontamination (problem text, letters and digits only): removed minerva_math 0, "
            "olympiadbench 0, amc23 1, aime24 0, gsm8k 1 training rows") in capsys.readouterr().out
    # MATH train holds two OlympiadBench problems written with other LaTeX spacing and braces
    real = main(local_config(tmp_path / "real", math_dir / "train.jsonl", "none", benchmark_dir=str(benchmark_dir)))
    assert real.train_report.benchmark_removed["olympiadbench"] == ["train/intermediate_algebra/753.json",
                                                                    "train/intermediate_algebra/1087.json"]
    assert sum(map(len, real.train_report.benchmark_removed.values())) == 2
    untouched = main(local_config(tmp_path / "none", train_path, "none", exclude_benchmarks="none"))
    assert untouched.num_train == 22 and untouched.train_report.benchmark_removed == {}
    with pytest.raises(FileNotFoundError, match=r"'aime24': file '.*missing/aime24.jsonl' not found"):
        main(local_config(tmp_path / "m", train_path, "none", exclude_benchmarks="aime24",
                          benchmark_dir=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="--exclude_benchmarks: unknown benchmark"):
        local_config(tmp_path, train_path, "none", exclude_benchmarks="aime2024")


# --- stratified subset ---

def test_stratified_subset_hand_computed_quotas():
    rows = ([{"id": f"a{i}", "type": "A", "level": 1} for i in range(5)]
            + [{"id": f"b{i}", "type": "B", "level": 2} for i in range(3)]
            + [{"id": f"c{i}", "type": "B", "level": None} for i in range(2)])
    # exact shares of 5: A/1 2.5, B/2 1.5, B/? 1.0 -> floors 2, 1, 1; the one left over goes to the
    # largest remainder, a tie (0.5, 0.5) broken by cell order: ("A", 1) before ("B", 2).
    subset = stratified_subset(rows, 5, seed=0)
    assert Counter((r["type"], r["level"]) for r in subset) == {("A", 1): 3, ("B", 2): 1, ("B", None): 1}
    assert stratified_subset(rows, 10, seed=0) == rows
    assert stratified_subset(rows, 0, seed=0) == []


def test_stratified_subset_on_math_is_proportional_and_deterministic(math_dir):
    rows = clean_rows(read_jsonl(str(math_dir / "train.jsonl")), "math", CleaningReport(), False)
    subset = stratified_subset(rows, 1000, seed=42)
    assert len(subset) == 1000 and len({r["id"] for r in subset}) == 1000
    cells, chosen = Counter((r["type"], r["level"]) for r in rows), Counter((r["type"], r["level"]) for r in subset)
    for cell, count in cells.items():
        assert abs(chosen[cell] - 1000 * count / len(rows)) < 1, cell
    positions = {row["id"]: index for index, row in enumerate(rows)}
    assert [positions[r["id"]] for r in subset] == sorted(positions[r["id"]] for r in subset)
    assert [r["id"] for r in stratified_subset(rows, 1000, seed=42)] == [r["id"] for r in subset]
    assert [r["id"] for r in stratified_subset(rows, 1000, seed=7)] != [r["id"] for r in subset]


# --- the whole stage ---

def test_main_writes_schema_rows_deterministically_and_prints_the_inspection(tmp_path, math_dir, capsys):
    cfg = local_config(tmp_path, math_dir / "train.jsonl", math_dir / "test500.jsonl", subset_size=300)
    summary = main(cfg)
    printed = capsys.readouterr().out
    assert "MATH-500 exclusion: removed 0 training rows" in printed
    assert "answer extraction failed (no usable \\boxed{}) for 2 rows" in printed
    assert "duplicates removed: 1" in printed
    assert "Intermediate Algebra" in printed and "example rows:" in printed
    train_rows, subset_rows = read_rows(summary.train_file), read_rows(summary.subset_file)
    # 7,500 rows less 2 empty boxes, 1 duplicate and 2 OlympiadBench problems
    assert len(train_rows) == summary.num_train == 7495 and len(subset_rows) == 300
    assert all(set(row) == ROW_SCHEMA for row in train_rows + subset_rows)
    assert all(row["level"] in (1, 2, 3, 4, 5, None) and row["answer"] for row in train_rows)
    assert not EMPTY_BOX_IDS & {row["id"] for row in train_rows}
    assert {row["id"] for row in subset_rows} <= {row["id"] for row in train_rows}
    first = {name: Path(getattr(summary, name)).read_bytes() for name in ("train_file", "subset_file", "eval_file")}
    main(cfg)
    assert {name: Path(getattr(summary, name)).read_bytes() for name in first} == first
    assert sorted(os.listdir(cfg.output_dir)) == ["data_provenance.json", "math_eval_500.jsonl",
                                                  "math_prompts_responses.jsonl", "math_subset.jsonl"]
    provenance = json.loads((Path(cfg.output_dir) / "data_provenance.json").read_text())
    assert provenance["training_set"] == "local" and provenance["num_train"] == 7495


def test_inspect_only_writes_nothing(tmp_path, math_dir, capsys):
    summary = main(local_config(tmp_path, math_dir / "test500.jsonl", "none", inspect_only=True))
    assert summary.train_file is None and summary.eval_file is None and summary.num_train == 500
    assert not (tmp_path / "out").exists()
    assert "--inspect_only: nothing written" in capsys.readouterr().out


def test_prompt_length_report_counts_chat_template_tokens(embedded_tokenizer):
    lengths = prepare_data.prompt_token_lengths(embedded_tokenizer, ["What is $1 + 1$?", "x" * 50])
    template_only = embedded_tokenizer.apply_chat_template(
        [{"role": "system", "content": prepare_data.SYSTEM_PROMPT}, {"role": "user", "content": ""}],
        tokenize=False, add_generation_prompt=True)
    overhead = len(embedded_tokenizer(template_only, add_special_tokens=False)["input_ids"])
    assert all(length > overhead for length in lengths) and lengths[0] < lengths[1] + 20
    assert prepare_data.percentile([1, 2, 3, 4], 50) == 2 and prepare_data.percentile([1, 2, 3, 4], 100) == 4
    assert prepare_data.percentile([5, 7, 9], 90) == 9


def test_synthetic_source_is_labelled_and_keeps_eval_apart(tmp_path):
    cfg = DataConfig(source="synthetic", output_dir=str(tmp_path), tokenizer="none", synthetic_train_size=90,
                     synthetic_eval_size=18, synthetic_levels="1,2", subset_size=30)
    summary = main(cfg)
    train_rows, eval_rows = read_rows(summary.train_file), read_rows(summary.eval_file)
    assert len(train_rows) == 90 and len(eval_rows) == 18 and summary.num_subset == 30
    assert all(row["source"] == "synthetic" and row["level"] in (1, 2) for row in train_rows + eval_rows)
    assert not {row["problem"] for row in train_rows} & {row["problem"] for row in eval_rows}
    # Read back as a local source, synthetic rows keep their label and their ids.
    again = main(local_config(tmp_path / "again", summary.train_file, summary.eval_file, subset_size=10))
    reread = read_rows(again.train_file)
    assert reread == train_rows and again.num_eval == 18


def test_synthetic_sizes_that_do_not_fit_end_in_one_line_naming_those_that_do(tmp_path):
    """Issue 25: the README's `--synthetic_levels 1,2` at the default sizes ended in a ValueError traceback."""
    result = subprocess.run([sys.executable, str(Path(prepare_data.__file__)), "--source", "synthetic",
                             "--synthetic_levels", "1,2", "--tokenizer", "none", "--output_dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.splitlines()[0] == (
        "error: --synthetic_train_size 2000 + --synthetic_eval_size 500 = 2500 problems do not fit --synthetic_levels "
        "1,2 --synthetic_types all (seed 42): type 'percentages' level 1 ran out of distinct problems after 107, so "
        "at most 1934 fit (e.g. --synthetic_train_size 1434 --synthetic_eval_size 500); or add levels or types")
    summary = main(DataConfig(source="synthetic", output_dir=str(tmp_path), tokenizer="none", synthetic_levels="1,2",
                              synthetic_train_size=1434, synthetic_eval_size=500, inspect_only=True))
    assert (summary.num_train, summary.num_eval) == (1434, 500)


HELDOUT = ("value_of_symbols", "sum_difference_product", "story_two_people")


def test_synthetic_heldout_wordings_reach_the_eval_file_only(tmp_path):
    cfg = DataConfig(source="synthetic", output_dir=str(tmp_path), tokenizer="none", synthetic_train_size=60,
                     synthetic_eval_size=15, synthetic_levels="1", synthetic_types="arithmetic", subset_size=20,
                     synthetic_wordings="all", synthetic_heldout_wordings=",".join(HELDOUT))
    summary = main(cfg)
    train_rows, subset_rows = read_rows(summary.train_file), read_rows(summary.subset_file)
    eval_rows = read_problem_rows(summary.eval_file, require_answer=True)     # extra fields are kept
    assert not {row["wording"] for row in train_rows + subset_rows} & set(HELDOUT)
    assert [row["wording"] in HELDOUT for row in eval_rows] == [index % 2 == 0 for index in range(15)]
    assert {row["wording"] for row in eval_rows} - set(HELDOUT)               # training wordings are evaluated too
    facts = lambda rows: {row["solution"].split(" = ")[0] for row in rows}   # "$7 + 5" in every wording
    assert not facts(train_rows) & facts(eval_rows)
    provenance = json.loads((tmp_path / prepare_data.PROVENANCE_FILE).read_text())
    assert provenance["synthetic_heldout_wordings"] == list(HELDOUT)
    assert set(provenance["synthetic_training_wordings"]) == set(ARITHMETIC_WORDINGS) - set(HELDOUT)
    # Read back as a local source, rows keep their wording.
    again = main(local_config(tmp_path / "again", summary.train_file, summary.eval_file, subset_size=10))
    assert read_rows(again.train_file) == train_rows


def test_synthetic_wordings_default_to_the_original_template(tmp_path):
    cfg = DataConfig(source="synthetic", tokenizer="none", output_dir=str(tmp_path))
    assert cfg.training_wording_names is None and cfg.heldout_wording_names == ()
    assert DataConfig(synthetic_wordings="compute_symbols, story_shelf").training_wording_names == \
        ("compute_symbols", "story_shelf")


@pytest.mark.parametrize("flags, message", [
    (dict(synthetic_wordings="in_french"), "--synthetic_wordings: unknown wordings ['in_french']; use 'original', "
                                           "'all' or names from what_is_symbols, compute_symbols"),
    (dict(synthetic_wordings="all", synthetic_heldout_wordings="story_shelf,all"),
     "--synthetic_heldout_wordings: unknown wordings ['all']; use 'none' or names from what_is_symbols"),
    (dict(synthetic_heldout_wordings="story_shelf"), "--synthetic_heldout_wordings needs --synthetic_wordings 'all'"),
    (dict(synthetic_wordings="story_shelf", synthetic_heldout_wordings="story_shelf"),
     "leave at least one to train on"),
    (dict(synthetic_wordings="all,story_shelf"), "'original' and 'all' stand alone"),
    (dict(source="synthetic", synthetic_wordings="all", synthetic_levels="2"), "words level-1 arithmetic, which"),
])
def test_bad_wordings_give_one_line_errors_naming_the_flag(flags, message):
    with pytest.raises(InputError) as caught:
        DataConfig(tokenizer="none", **flags)
    assert message in str(caught.value) and "\n" not in str(caught.value)


# --- bad input ---


def test_skip_invalid_skips_counts_and_says_so(tmp_path, capsys):
    lines = [json.dumps(VALID_RECORD | {"problem": f"What is ${i} + 1$?"}) for i in range(6)]
    lines[1] = "{not json"
    lines[3] = json.dumps({"problem": "no solution", "level": "Level 2", "type": "Algebra"})
    lines[4] = json.dumps(VALID_RECORD | {"level": "Level 0"})
    train_path = write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataFormatError, match="train.jsonl:2:"):
        main(local_config(tmp_path, train_path, "none"))
    summary = main(local_config(tmp_path, train_path, "none", skip_invalid=True))
    assert summary.num_train == 3 and summary.train_report.rows_read == 6
    assert len(summary.train_report.invalid) == 3
    assert "train.jsonl:2: malformed JSON" in summary.train_report.invalid[0]
    assert "skipped 3 invalid rows (--skip_invalid)" in capsys.readouterr().out


def test_a_byte_that_is_not_utf8_is_named_and_skip_invalid_skips_it(tmp_path, capsys):
    """Issue 19: UnicodeDecodeError '... byte 0xff in position 1172', even with --skip_invalid."""
    lines = [json.dumps(VALID_RECORD | {"problem": f"What is ${i} + 1$?"}) for i in range(3)]
    train_path = tmp_path / "train.jsonl"
    train_path.write_bytes("\n".join(lines).replace("What is $1", "What is \xff1").encode("latin-1") + b"\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:2: malformed JSON \(not UTF-8: byte 0xff at column \d+\)"):
        main(local_config(tmp_path, train_path, "none"))
    summary = main(local_config(tmp_path, train_path, "none", skip_invalid=True))
    assert summary.num_train == 2 and len(summary.train_report.invalid) == 1
    assert "skipped 1 invalid rows (--skip_invalid); first: " in capsys.readouterr().out
    json_path = tmp_path / "rows.json"
    json_path.write_bytes(b'[\n{"problem": "x"},\n{"problem": "\xff"}\n]')
    with pytest.raises(DataFormatError, match=r"rows.json:3: not UTF-8: byte 0xff"):
        read_json_list(str(json_path))


def test_empty_input_and_an_output_folder_that_is_a_file_are_refused(tmp_path):
    """Issue 19: an empty data file exited 0 and wrote empty training and subset files."""
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(InputError, match=r"empty.jsonl: no rows \(the file is empty\)"):
        main(local_config(tmp_path, empty, "none"))
    train_path = write_lines(tmp_path / "train.jsonl", ["{not json"])
    with pytest.raises(InputError, match=r"train.jsonl: no usable training problem \(1 rows read: 1 invalid"):
        main(local_config(tmp_path, train_path, "none", skip_invalid=True))
    assert not os.listdir(tmp_path / "out")
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(InputError, match=r"--output_dir .*taken: is a file"):
        main(DataConfig(source="synthetic", synthetic_train_size=4, synthetic_eval_size=0, tokenizer="none",
                        output_dir=str(tmp_path / "taken")))


def test_parse_level_and_unsupported_inputs():
    assert [parse_level(v, "x") for v in ("Level 1", "Level 5", "Level ?", 3, None)] == [1, 5, None, 3, None]
    with pytest.raises(InputError, match="x: field 'level'"):
        parse_level(True, "x")
    with pytest.raises(ValueError, match="--source local needs --math500_path"):
        DataConfig(source="local", train_path="train.jsonl")


def test_help_exits_zero():
    result = subprocess.run([sys.executable, "prepare_data.py", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for flag in ("--source {hub,local,synthetic}", "--skip_invalid", "--inspect_only", "--subset_size", "--tokenizer"):
        assert flag in result.stdout
