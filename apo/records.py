"""The JSONL hand-off between the stages: one reader and one validator per record kind, one atomic writer.

Record kinds (every field is described in docs/FORMATS.md):

    problem rows    prepare_data.py's files, read by train_math_apo.py and evaluate_apo.py; MATH and
                    MATH-500 rows as distributed are accepted too (`unique_id` for `id`, `subject` for
                    `type`, `"level": "Level 3"`)              read_problem_rows, validate_problem_row
    stage-1 values  stage1_values.jsonl                       read_stage1_values, validate_stage1_value
    generations     evaluate_apo.py's generations.jsonl       read_generations, validate_generation
    metrics lines   train_math_apo.py's metrics.jsonl         read_metrics_lines, validate_metrics_line

Rules every reader shares: UTF-8, one JSON object per line, blank lines ignored. A bad line
raises InputError `<file>:<line>: <what is wrong>` naming the field; a byte that is not UTF-8
is such a bad line, named by its line like any other. A *torn* last line (no newline after it
and not parseable: a crash in the middle of an append) is dropped with a warning naming the
file in the files a run appends to (stage-1 values, generations, metrics lines); in the middle
of a file, or in a file written whole (problem rows), it is an error.

Writing: `write_text_atomic` is the one atomic writer (`write_json_atomic` and
`write_jsonl_atomic` format for it): a temporary file in the target's folder, renamed over the
target, and removed on any error, so a crash leaves the old file or the complete new one and
no stray temporary file. `append_jsonl` appends finished records in one flushed write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Any, Iterable, Iterator, NamedTuple

from apo.correction_modes import CORRECTION_MODES
from apo.errors import InputError, InputFileNotFoundError

logger = logging.getLogger(__name__)


# --- the line loop ---


class JsonLine(NamedTuple):
    """One non-blank line of a JSONL file: its 1-based number, the parsed value (None when the
    line is not valid JSON or not UTF-8), the reason in that case ("Expecting value at column
    3", "not UTF-8: byte 0xff at column 12", columns counted within the line) and whether a
    newline ended it (only a file's last line can lack one)."""

    number: int
    value: Any
    error: str | None
    complete: bool = True


def read_json_lines(path: str) -> Iterator[JsonLine]:
    """Yield every non-blank line of `path` parsed as JSON; never raises for a bad line (the
    caller decides what it means). Raises OSError when the file cannot be opened."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            complete = raw.endswith(b"\n")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                column = len(raw[:err.start].decode("utf-8", errors="replace")) + 1
                yield JsonLine(number, None, f"not UTF-8: byte 0x{raw[err.start]:02x} at column {column}", complete)
                continue
            if not text.strip():
                continue
            try:
                yield JsonLine(number, json.loads(text.rstrip("\r\n")), None, complete)
            except json.JSONDecodeError as err:
                yield JsonLine(number, None, f"{err.msg} at column {err.colno}", complete)


def _objects(path: str, *, torn_last_line_allowed: bool) -> Iterator[tuple[str, Any]]:
    """(where, value) of each line of `path`, where = "<path>:<line>"; raises InputError for a bad
    line, except a torn last line, which is dropped with a warning when `torn_last_line_allowed`."""
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder; give a JSONL file")
    for line in read_json_lines(path):
        where = f"{path}:{line.number}"
        if line.error is not None:
            if torn_last_line_allowed and not line.complete:
                logger.warning("%s: dropping a torn last line (%s; a crash in the middle of a write)", where,
                               line.error)
                continue
            raise InputError(f"{where}: not valid JSON ({line.error})")
        if not isinstance(line.value, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(line.value).__name__}")
        yield where, line.value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _expect(where: str, name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise InputError(f"{where}: field {name!r} is {_short(value)}, expected {expected}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- problem rows ---

PROBLEM_ROW_FIELDS = ("id", "problem", "answer", "type", "level")
# field -> the names MATH releases use for it, tried in order
PROBLEM_ROW_ALIASES = {"id": ("id", "unique_id"), "type": ("type", "subject")}
_LEVEL_RE = re.compile(r"^Level (\d|\?)$")


def parse_level(value: Any, where: str) -> int | None:
    """'Level 3' or 3 -> 3; 'Level ?' or null -> None (MATH has two such rows); anything else
    raises InputError naming `where`."""
    if value is None:
        return None
    if _is_int(value) and 1 <= value <= 5:
        return value
    match = _LEVEL_RE.match(value) if isinstance(value, str) else None
    if match and match.group(1) == "?":
        return None
    if match and 1 <= int(match.group(1)) <= 5:
        return int(match.group(1))
    raise InputError(f"{where}: field 'level' is {_short(value)}, expected 1-5, 'Level 1'..'Level 5', 'Level ?' "
                     "or null")


def _aliased(row: dict, name: str, where: str) -> tuple[str, Any]:
    """(the name found, its value) of the first of `name`'s aliases present in `row`."""
    for alias in PROBLEM_ROW_ALIASES.get(name, (name,)):
        if alias in row:
            return alias, row[alias]
    names = " or ".join(repr(a) for a in PROBLEM_ROW_ALIASES.get(name, (name,)))
    raise InputError(f"{where}: missing field {names}; rows need {list(PROBLEM_ROW_FIELDS)} (prepare_data.py "
                     "writes them)")


def validate_problem_row(value: Any, where: str, *, require_answer: bool) -> dict:
    """The row `value` in prepare_data's schema: a copy with `id`, `type` and `level` normalised
    (`unique_id` -> `id`, `subject` -> `type`, "Level 3" -> 3, "Level ?" -> None) and every other
    field kept. `require_answer`: the answer must be a non-empty string (training); otherwise it
    may be null or blank (evaluation reports such problems as ungradable). Raises InputError
    naming `where` ("file:line") and the field."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    row = dict(value)
    for name in ("id", "type"):
        found, text = _aliased(value, name, where)
        _expect(where, found, text, isinstance(text, str) and text.strip() != "", "a non-empty string")
        row[name] = text
    problem = _aliased(value, "problem", where)[1]
    _expect(where, "problem", problem, isinstance(problem, str) and problem.strip() != "", "a non-empty string")
    answer = _aliased(value, "answer", where)[1]
    if require_answer:
        _expect(where, "answer", answer, isinstance(answer, str) and answer.strip() != "",
                "a non-empty string (training needs a gold answer to grade against)")
    else:
        _expect(where, "answer", answer, answer is None or isinstance(answer, str), "a string or null")
    row["level"] = parse_level(_aliased(value, "level", where)[1], where)
    return row


def read_problem_rows(path: str, *, require_answer: bool, limit: int = 0) -> list[dict]:
    """The rows of a problem file (the first `limit` when > 0), validated by validate_problem_row.

    Raises InputFileNotFoundError when `path` does not exist, InputError naming the file and
    line for a bad line, a bad field or a repeated id, and naming the file when it holds no row.
    """
    if not os.path.exists(path):
        raise InputFileNotFoundError(f"{path} not found: write it with prepare_data.py (or pass --data_file / "
                                     "--eval_file)")
    rows: list[dict] = []
    first_line: dict[str, str] = {}
    for where, value in _objects(path, torn_last_line_allowed=False):
        row = validate_problem_row(value, where, require_answer=require_answer)
        if row["id"] in first_line:
            raise InputError(f"{where}: id {row['id']!r} already used on {first_line[row['id']]}")
        first_line[row["id"]] = where
        rows.append(row)
        if limit and len(rows) == limit:
            break
    if not rows:
        raise InputError(f"{path}: no problem rows (the file is empty); write it with prepare_data.py")
    return rows


# --- stage-1 values ---


def validate_stage1_value(value: Any, where: str, num_value_samples: int) -> dict:
    """Check one stage1_values.jsonl record: id, `num_value_samples` rewards in [0, 1], v_star,
    as many response_lengths (and responses, when stored). Raises InputError naming the field;
    a different number of rewards names num_value_samples."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    for name in ("id", "rewards", "v_star", "response_lengths"):
        if name not in value:
            raise InputError(f"{where}: missing field {name!r}; stage-1 records hold id, rewards, v_star, "
                             "response_lengths")
    _expect(where, "id", value["id"], isinstance(value["id"], str) and value["id"] != "", "a non-empty string")
    rewards = value["rewards"]
    _expect(where, "rewards", rewards, isinstance(rewards, list) and all(_is_number(r) and 0 <= r <= 1 for r in rewards),
            "a list of numbers in [0, 1]")
    if len(rewards) != num_value_samples:
        raise InputError(f"{where}: {len(rewards)} rewards, expected num_value_samples={num_value_samples}; the file "
                         "was made with another N: delete it or use another --output_dir")
    _expect(where, "v_star", value["v_star"], _is_number(value["v_star"]), "a number")
    lengths = value["response_lengths"]
    _expect(where, "response_lengths", lengths,
            isinstance(lengths, list) and len(lengths) == num_value_samples and all(_is_int(n) and n >= 0 for n in lengths),
            f"{num_value_samples} token counts")
    if "responses" in value:
        responses = value["responses"]
        _expect(where, "responses", responses, isinstance(responses, list) and len(responses) == num_value_samples
                and all(isinstance(t, str) for t in responses), f"{num_value_samples} strings")
    return value


def read_stage1_values(path: str, num_value_samples: int) -> dict[str, dict]:
    """id -> record of a stage1_values.jsonl (a torn last line dropped with a warning). Raises
    InputError naming the file and line for a bad line or an id recorded twice."""
    records: dict[str, dict] = {}
    first_line: dict[str, str] = {}
    for where, value in _objects(path, torn_last_line_allowed=True):
        record = validate_stage1_value(value, where, num_value_samples)
        if record["id"] in first_line:
            raise InputError(f"{where}: id {record['id']!r} already recorded on {first_line[record['id']]}; was "
                             "the file written by two runs? delete it to re-sample")
        first_line[record["id"]] = where
        records[record["id"]] = record
    return records


# --- generations (per-turn self-correction records) ---

GENERATION_ROLES = ("attempt", "verify", "revise")
VERDICTS = ("correct", "wrong")
# field -> allowed types; every record carries every field
GENERATION_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "sample": (int,), "turn": (int,), "role": (str,), "attempt_index": (int,),
    "type": (str,), "level": (int, type(None)), "gold": (str, type(None)), "mode": (str,),
    "text": (str,), "extracted_answer": (str, type(None)), "correct": (bool, type(None)),
    "verdict": (str, type(None)), "verdict_parsed": (bool,), "checked_attempt_correct": (bool, type(None)),
    "prompt_tokens": (int,), "response_tokens": (int,), "truncated": (bool,), "episode_turns": (int,),
}


def validate_generation(record: Any, where: str) -> dict:
    """Check one generations.jsonl record (every field of GENERATION_FIELDS, with its type; role,
    mode and verdict from their lists). Raises InputError naming `where` and the field."""
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for name, types in GENERATION_FIELDS.items():
        if name not in record:
            raise InputError(f"{where}: missing field {name!r}")
        value = record[name]
        # bool is an int subclass: an int field must not accept true/false
        bad_bool = isinstance(value, bool) and bool not in types
        if bad_bool or not isinstance(value, types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise InputError(f"{where}: field {name!r} is {_short(value)}, expected {allowed}")
    strict = record.get("correct_boxed_exact")  # optional: the official A*-PO rule, written by evaluate_apo
    if strict is not None and not isinstance(strict, bool):
        raise InputError(f"{where}: field 'correct_boxed_exact' is {_short(strict)}, expected bool or null")
    for name, allowed_values in (("role", GENERATION_ROLES), ("mode", CORRECTION_MODES)):
        if record[name] not in allowed_values:
            raise InputError(f"{where}: field {name!r} is {record[name]!r}, expected one of {list(allowed_values)}")
    if record["verdict"] is not None and record["verdict"] not in VERDICTS:
        raise InputError(f"{where}: field 'verdict' is {record['verdict']!r}, expected one of {list(VERDICTS)} or null")
    return record


def read_generations(path: str, *, allow_empty: bool = False) -> list[dict]:
    """The records of a generations.jsonl (a torn last line dropped with a warning). Raises
    InputFileNotFoundError, InputError naming the file, line and field, or naming the file when
    it holds no record (unless `allow_empty`)."""
    if not os.path.exists(path):
        raise InputFileNotFoundError(f"{path} not found; evaluate_apo.py writes it")
    records = [validate_generation(value, where) for where, value in _objects(path, torn_last_line_allowed=True)]
    if not records and not allow_empty:
        raise InputError(f"{path}: no records (empty file)")
    return records


# --- metrics lines ---


def validate_metrics_line(value: Any, where: str) -> dict:
    """Check one metrics.jsonl record: an object with an integer `step` >= 0 whose other values are
    numbers, booleans or null (docs/METRICS.md defines each). Raises InputError naming the field."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    if "step" not in value:
        raise InputError(f"{where}: missing field 'step'")
    _expect(where, "step", value["step"], _is_int(value["step"]) and value["step"] >= 0, "an integer >= 0")
    for name, number in value.items():
        _expect(where, name, number, number is None or isinstance(number, (bool, int, float)), "a number or null")
    return value


def read_metrics_lines(path: str) -> list[dict]:
    """The records of a metrics.jsonl, [] when the file does not exist (a run before its first
    step). A torn last line is dropped with a warning naming the file; any other bad line raises
    InputError naming the file and line."""
    if not os.path.exists(path):
        return []
    return [validate_metrics_line(value, where) for where, value in _objects(path, torn_last_line_allowed=True)]


# --- content hashes of data files ---

ROW_DIGEST_CHARS = 8  # per row: enough to point at the row that changed; the whole-file sha256 decides


def data_fingerprint(path: str, rows: list[dict]) -> dict:
    """{"path", "sha256", "rows", "row_digests"} of the rows read from `path`: sha256 of the rows as
    read (canonical JSON, in file order; not of the file's bytes, so reformatting changes nothing)
    and the first ROW_DIGEST_CHARS hex digits of each row's own sha256, concatenated, which
    `data_difference` uses to name the first row that differs."""
    whole, digests = hashlib.sha256(), []
    for row in rows:
        line = json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
        whole.update(line)
        digests.append(hashlib.sha256(line).hexdigest()[:ROW_DIGEST_CHARS])
    return {"path": path, "sha256": whole.hexdigest(), "rows": len(rows), "row_digests": "".join(digests)}


def data_difference(saved: dict, path: str, rows: list[dict], *, rows_may_follow: bool = False) -> str | None:
    """None when `rows` (read from `path` now) are the rows `saved` (a data_fingerprint) was made
    from, else `<path>: <what differs>` naming the first differing id. With `rows_may_follow`, only
    the saved rows are compared: rows added or cut at the end are no difference."""
    now = data_fingerprint(path, rows)
    if now["sha256"] == saved["sha256"]:
        return None
    step = ROW_DIGEST_CHARS
    old = [saved["row_digests"][i:i + step] for i in range(0, len(saved["row_digests"]), step)]
    new = [now["row_digests"][i:i + step] for i in range(0, len(now["row_digests"]), step)]
    for index, (before, after) in enumerate(zip(old, new)):
        if before != after:
            return (f"{path}: row {index + 1} (id {rows[index]['id']}) differs from the row the run was started with "
                    "(the first differing row)")
    if rows_may_follow:
        return None
    if len(new) > len(old):
        return f"{path}: {len(new) - len(old)} rows were added, the first with id {rows[len(old)]['id']}"
    last = f" after id {rows[-1]['id']}" if rows else ""
    return f"{path}: {len(old) - len(new)} rows{last} were removed ({len(old)} when the run was started)"


# --- writing ---


def check_output_folder(path: str, flag: str = "--output_dir") -> str:
    """Return `path` when it is a folder or can be created as one (nothing is created); raise
    InputError naming `flag` when `path` or one of its parents is a file."""
    below = os.path.abspath(path)
    while not os.path.exists(below):
        below = os.path.dirname(below)
    if not os.path.isdir(below):
        where = "is a file" if below == os.path.abspath(path) else f"its parent {below} is a file"
        raise InputError(f"{flag} {path}: {where}; give a folder (it is created when missing)")
    return path


def ensure_output_folder(path: str, flag: str = "--output_dir") -> str:
    """Create the folder `path` (and its parents) when missing and return it; InputError as in
    check_output_folder."""
    os.makedirs(check_output_folder(path, flag), exist_ok=True)
    return path


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` via a temporary file in the same folder, then rename; the
    temporary file is removed when anything fails, and `path` keeps its old content."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, payload: Any) -> None:
    """`payload` as indented, key-sorted JSON (non-JSON values via str) through write_text_atomic."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def jsonl_text(records: Iterable[dict]) -> str:
    """One JSON object per line (non-ASCII written as is), each ending in a newline."""
    return "".join(json.dumps(record, ensure_ascii=False, default=_json_number) + "\n" for record in records)


def write_jsonl_atomic(path: str, records: Iterable[dict]) -> None:
    """`records` one per line through write_text_atomic."""
    write_text_atomic(path, jsonl_text(records))


def append_jsonl(path: str, records: Iterable[dict]) -> None:
    """Append `records` in one write, flushed to disk, after repairing a torn last line, so a
    crash loses at most the records of this call."""
    repair_torn_last_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(jsonl_text(records))
        handle.flush()
        os.fsync(handle.fileno())


def repair_torn_last_line(path: str) -> None:
    """Make `path` end in a newline before an append: a last line without one is cut off (with a
    warning) when it does not parse, else completed with the newline. No-op for a missing file."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        content = handle.read()
        start = content.rfind(b"\n") + 1
        try:
            json.loads(content[start:].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            logger.warning("%s: dropping a torn last line (a crash in the middle of a write) before appending", path)
            handle.truncate(start)
            return
        handle.write(b"\n")


def _json_number(value: Any) -> float:
    """Numbers json does not know (numpy and torch scalars) as floats; anything else raises TypeError."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{type(value).__name__} {value!r} is not JSON serialisable") from None

