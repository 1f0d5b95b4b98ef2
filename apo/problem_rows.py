"""Stage 0's row checks, for prepare_data.py only: raw source records -> rows of the data-file
schema, and the rules that keep a row out of the training files.

    to_row                        one record -> {"id", "problem", "solution", "answer", "type", "level",
                                  "source"} (+ "wording" for synthetic rows that carry one); the answer is
                                  always re-extracted from the solution's last \\boxed{} (apo.grading)
    clean_rows                    validate_rows, then drop_unanswerable (no box, or an empty one), then
                                  drop_duplicates (same whitespace-normalised problem or same id; first kept)
    exclude_eval_problems         training rows that are eval (MATH-500) problems, by id or normalised text
    exclude_benchmark_problems    training rows whose problem is a benchmark's, by
                                  apo.benchmarks.decontamination_key (letters and digits only)

Each step returns the rows it keeps, in order, and records what it left out (ids or messages)
in a CleaningReport, which prepare_data prints; nothing here prints. A record with a missing,
empty or wrongly typed field raises DataFormatError (an InputError; the level check is
apo.records.parse_level's InputError) naming where the record came from and the field, or, with
skip_invalid, is recorded in report.invalid and left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from apo.benchmarks import decontamination_key
from apo.errors import InputError
from apo.grading import last_boxed_content
from apo.problem_files import DataFormatError, RawRow, record_invalid
from apo.records import parse_level


@dataclass
class CleaningReport:
    """What happened to one set of rows between reading and writing (ids or messages, not just counts)."""

    rows_read: int = 0
    invalid: list[str] = field(default_factory=list)              # skipped with --skip_invalid
    no_answer: list[str] = field(default_factory=list)            # ids without a usable \boxed{} answer
    duplicates: list[str] = field(default_factory=list)           # ids dropped as repeats of an earlier problem
    answer_field_mismatches: list[str] = field(default_factory=list)  # source `answer` != last-box extraction
    math500_removed: list[str] = field(default_factory=list)      # training ids that are MATH-500 problems
    math500_by_id: int = 0
    math500_by_text: int = 0
    benchmark_removed: dict[str, list[str]] = field(default_factory=dict)  # benchmark -> training ids removed


def normalise_text(text: str) -> str:
    """Whitespace-collapsed text: the key for duplicates and for MATH-500 exclusion."""
    return " ".join(text.split())


def _field(record: dict[str, Any], names: tuple[str, ...], where: str, kinds: tuple[type, ...], required: bool = True):
    """Value of the first of `names` present in `record`, checked against `kinds`."""
    for name in names:
        if name in record and record[name] is not None:
            value = record[name]
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise DataFormatError(f"{where}: field {name!r} must be {' or '.join(k.__name__ for k in kinds)}, "
                                      f"got {type(value).__name__} {str(value)[:40]!r}")
            return value
    if required:
        raise DataFormatError(f"{where}: missing field {' / '.join(repr(n) for n in names)}")
    return None


def to_row(record: dict[str, Any], where: str, source: str) -> dict[str, Any]:
    """Validate one source record and return it in the data-file schema.

    Accepts MATH's fields (problem, level, type, solution, optional unique_id/answer), PRM800K's
    `subject` for `type`, and this project's own rows (`id`, and a `source` label that is kept, so
    synthetic rows stay labelled synthetic, and a synthetic `wording`, kept when present). The answer
    is always re-extracted from the solution (None or "" when it cannot be). Raises DataFormatError
    naming the field.
    """
    problem = _field(record, ("problem",), where, (str,))
    if not problem.strip():
        raise DataFormatError(f"{where}: field 'problem' is empty")
    solution = _field(record, ("solution",), where, (str,))
    problem_type = _field(record, ("type", "subject"), where, (str,))
    if "level" not in record:
        raise DataFormatError(f"{where}: missing field 'level'")
    level = parse_level(record["level"], where)
    row_id = _field(record, ("unique_id", "id"), where, (str,), required=False)
    _field(record, ("answer",), where, (str,), required=False)
    label = _field(record, ("source",), where, (str,), required=False) or source
    wording = _field(record, ("wording",), where, (str,), required=False)
    if row_id is None:
        row_id = f"{source}/{hashlib.sha1(normalise_text(problem).encode('utf-8')).hexdigest()[:16]}"
    row = {"id": row_id, "problem": problem, "solution": solution, "answer": last_boxed_content(solution),
           "type": problem_type, "level": level, "source": label}
    return row if wording is None else row | {"wording": wording}


def validate_rows(raw_rows: list[RawRow], source: str, report: CleaningReport,
                  skip_invalid: bool) -> list[dict[str, Any]]:
    """`to_row` over every record; invalid ones raise, or are recorded in `report.invalid` when skipping.
    Also records ids whose source `answer` field differs from the extracted answer."""
    rows = []
    for record, where in raw_rows:
        try:
            row = to_row(record, where, source)
        except InputError as err:  # DataFormatError, or apo.records.parse_level's
            record_invalid(str(err), report.invalid if skip_invalid else None)
            continue
        if record.get("answer") is not None and record["answer"] != row["answer"]:
            report.answer_field_mismatches.append(row["id"])
        rows.append(row)
    return rows


def drop_unanswerable(rows: list[dict[str, Any]], report: CleaningReport) -> list[dict[str, Any]]:
    """Remove rows without a gradeable answer (no complete \\boxed{}, or an empty one)."""
    kept = []
    for row in rows:
        if row["answer"] is None or not row["answer"].strip():
            report.no_answer.append(row["id"])
        else:
            kept.append(row)
    return kept


def drop_duplicates(rows: list[dict[str, Any]], report: CleaningReport) -> list[dict[str, Any]]:
    """Keep the first of rows with the same whitespace-normalised problem text or the same id."""
    seen_text: set[str] = set()
    seen_id: set[str] = set()
    kept = []
    for row in rows:
        key = normalise_text(row["problem"])
        if key in seen_text or row["id"] in seen_id:
            report.duplicates.append(row["id"])
            continue
        seen_text.add(key)
        seen_id.add(row["id"])
        kept.append(row)
    return kept


def exclude_eval_problems(rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]],
                          report: CleaningReport) -> list[dict[str, Any]]:
    """Remove training rows that are eval (MATH-500) problems, matched by id or by normalised text."""
    eval_ids = {row["id"] for row in eval_rows}
    eval_texts = {normalise_text(row["problem"]) for row in eval_rows}
    kept = []
    for row in rows:
        by_id, by_text = row["id"] in eval_ids, normalise_text(row["problem"]) in eval_texts
        if by_id or by_text:
            report.math500_removed.append(row["id"])
            report.math500_by_id += by_id
            report.math500_by_text += by_text
        else:
            kept.append(row)
    return kept


def exclude_benchmark_problems(rows: list[dict[str, Any]], benchmark_problems: dict[str, set[str]],
                               report: CleaningReport) -> list[dict[str, Any]]:
    """Remove training rows whose problem is a benchmark problem (same decontamination_key); the ids
    removed go to report.benchmark_removed[benchmark] (a row in several benchmarks counts under the first)."""
    report.benchmark_removed = {name: [] for name in benchmark_problems}
    kept = []
    for row in rows:
        text = decontamination_key(row["problem"])
        hit = next((name for name, texts in benchmark_problems.items() if text in texts), None)
        if hit is None:
            kept.append(row)
        else:
            report.benchmark_removed[hit].append(row["id"])
    return kept


def clean_rows(raw_rows: list[RawRow], source: str, report: CleaningReport, skip_invalid: bool) -> list[dict[str, Any]]:
    """Validate, keep answerable rows, drop duplicates; fills `report`."""
    report.rows_read = len(raw_rows) + len(report.invalid)
    rows = validate_rows(raw_rows, source, report, skip_invalid)
    rows = drop_unanswerable(rows, report)
    return drop_duplicates(rows, report)
