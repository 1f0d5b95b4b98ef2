"""Stage 0's readers, for prepare_data.py only: MATH problems from a local file or folder, or the hub,
as raw records that apo.problem_rows checks.

Sources (read_local dispatches on what the path is; read_hub reads the hub):

    .jsonl      one JSON object per line, blank lines ignored                      read_jsonl
    .json       a JSON list of row objects                                         read_json_list
    .parquet    one row per table row (pyarrow)                                    read_parquet
    a folder    MATH's release layout <split>/<subject>/<n>.json, one problem per file;
                each row gets unique_id "<split>/<subject>/<n>.json"               read_math_folder
    hub         datasets.load_dataset over the splits (and every subject config)   read_hub

Every reader returns RawRow pairs (record, where): the record as read, unchecked, and where it
came from (e.g. "train.jsonl:12", "train.json, row 3", "EleutherAI/hendrycks_math[algebra, train] row 7")
for the checks' messages. Rows keep the source's order (a folder: split, subject, file number).

Errors: a malformed line or element raises DataFormatError (an InputError) naming the file, the
line or row and the reason, or, given a `skipped` list (--skip_invalid), is appended to it as
that message and left out (record_invalid). Malformed JSON or a byte that is not UTF-8 in a .json
list is always raised, since it makes the whole file unreadable. A missing file or split folder
raises InputFileNotFoundError; an unsupported suffix or a file with no rows, InputError; a hub
that cannot be reached, ConnectionError naming the offline options.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from apo.errors import InputError, InputFileNotFoundError
from apo.records import read_json_lines

LOCAL_FORMATS = (".jsonl", ".json", ".parquet", "a folder in the MATH release layout (<split>/<subject>/<n>.json)")


class DataFormatError(InputError):
    """A source row or line that cannot be read; the message names the file, the line/row and the field."""


RawRow = tuple[dict[str, Any], str]  # (record, where it came from: "file, line 12")


def record_invalid(message: str, skipped: list[str] | None) -> None:
    """Raise DataFormatError, or record the message when skipping invalid rows."""
    if skipped is None:
        raise DataFormatError(message + " (use --skip_invalid to skip such rows)")
    skipped.append(message)


def read_jsonl(path: str, skipped: list[str] | None = None) -> list[RawRow]:
    """One JSON object per line; blank lines are ignored. A malformed line raises DataFormatError
    naming the file, the line number and the parser's reason (or is recorded in `skipped`)."""
    rows: list[RawRow] = []
    for line in read_json_lines(path):
        where = f"{path}:{line.number}"
        if line.error:
            record_invalid(f"{where}: malformed JSON ({line.error})", skipped)
        elif not isinstance(line.value, dict):
            record_invalid(f"{where}: expected a JSON object, got {type(line.value).__name__}", skipped)
        else:
            rows.append((line.value, where))
    return rows


def read_json_list(path: str, skipped: list[str] | None = None) -> list[RawRow]:
    """A JSON file holding a list of row objects. Malformed JSON or a byte that is not UTF-8 raises
    DataFormatError (always: one such error makes the whole file unreadable); a non-object element
    is one invalid row."""
    try:
        records = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(records, list):
        raise DataFormatError(f"{path}: expected a JSON list of row objects, got {type(records).__name__}")
    rows: list[RawRow] = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            record_invalid(f"{path}, row {index}: expected a JSON object, got {type(record).__name__}", skipped)
            continue
        rows.append((record, f"{path}, row {index}"))
    return rows


def read_utf8(path: str) -> str:
    """The text of `path`; a byte that is not UTF-8 raises DataFormatError naming its line."""
    with open(path, "rb") as handle:
        content = handle.read()
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        raise DataFormatError(f"{path}:{line}: not UTF-8: byte 0x{content[err.start]:02x}") from None


def read_parquet(path: str) -> list[RawRow]:
    """Rows of a parquet file (read with pyarrow)."""
    import pyarrow.parquet as pq

    return [(record, f"{path}, row {index}") for index, record in enumerate(pq.read_table(path).to_pylist())]


def _file_number_key(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def read_math_folder(root: str, splits: list[str], skipped: list[str] | None = None) -> list[RawRow]:
    """The original MATH release layout: `<root>/<split>/<subject>/<n>.json`, one problem per file.

    Rows come in split, subject and numeric file order; each gets `unique_id` =
    "<split>/<subject>/<n>.json" unless the file has its own. Raises FileNotFoundError when a
    split folder is missing.
    """
    rows: list[RawRow] = []
    for split in splits:
        split_dir = Path(root) / split
        if not split_dir.is_dir():
            raise InputFileNotFoundError(f"{split_dir} not found: a MATH folder holds <split>/<subject>/<n>.json "
                                         f"(splits asked for: {', '.join(splits)})")
        for subject_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for problem_file in sorted(subject_dir.glob("*.json"), key=_file_number_key):
                default_id = f"{split}/{subject_dir.name}/{problem_file.name}"
                rows += [(record | {"unique_id": record.get("unique_id", default_id)}, where)
                         for record, where in read_json_object(str(problem_file), skipped)]
    return rows


def read_json_object(path: str, skipped: list[str] | None = None) -> list[RawRow]:
    """A JSON file holding one row object, as a list of zero (skipped) or one row."""
    try:
        record = json.loads(read_utf8(path))
    except json.JSONDecodeError as err:
        record_invalid(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})", skipped)
        return []
    except DataFormatError as err:
        record_invalid(str(err), skipped)
        return []
    if not isinstance(record, dict):
        record_invalid(f"{path}: expected a JSON object, got {type(record).__name__}", skipped)
        return []
    return [(record, path)]


def read_local(path: str, splits: list[str], skipped: list[str] | None = None) -> list[RawRow]:
    """Dispatch on what `path` is: a MATH folder, .jsonl, .json (a list of rows) or .parquet.
    Raises InputError naming `path` when the file holds no row at all."""
    if os.path.isdir(path):
        return read_math_folder(path, splits, skipped)
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"{path} does not exist; give {', '.join(LOCAL_FORMATS)}")
    suffix = Path(path).suffix.lower()
    readers = {".jsonl": lambda: read_jsonl(path, skipped), ".json": lambda: read_json_list(path, skipped),
               ".parquet": lambda: read_parquet(path)}
    if suffix not in readers:
        raise InputError(f"{path}: unsupported file type {suffix!r}; give {', '.join(LOCAL_FORMATS)}")
    skipped_before = len(skipped) if skipped is not None else 0
    rows = readers[suffix]()
    if not rows and (skipped is None or len(skipped) == skipped_before):
        raise InputError(f"{path}: no rows (the file is empty)")
    return rows


def read_hub(name: str, splits: list[str], subject_configs: tuple[str, ...] | None = None) -> list[RawRow]:
    """Rows of a hub dataset via datasets.load_dataset, over `splits` (and every subject config
    where the dataset has one per subject). Raises ConnectionError naming the offline options
    when the hub cannot be reached."""
    from datasets import load_dataset

    rows: list[RawRow] = []
    for config_name in subject_configs or (None,):
        for split in splits:
            try:
                dataset = load_dataset(name, config_name, split=split)
            except (ConnectionError, OSError) as err:
                raise ConnectionError(
                    f"could not load {name} ({config_name or 'default'}, split {split}) from the hub: {err}. "
                    "Without hub access use --source local --train_path <file or MATH folder> --math500_path "
                    "<file>, or --source synthetic.") from None
            where = f"{name}[{config_name + ', ' if config_name else ''}{split}]"
            rows += [(dict(record), f"{where} row {index}") for index, record in enumerate(dataset)]
    return rows
