"""Reading JSONL files: the one loop every stage's reader shares.

Each reader (prepare_data's raw rows, evaluate_apo's eval rows, apo.metrics' generation
records) validates its own fields and decides what a malformed line means; this module only
walks the file, skips blank lines and parses each of the others.
"""

from __future__ import annotations

import json
from typing import Any, Iterator, NamedTuple


class JsonLine(NamedTuple):
    """One non-blank line of a JSONL file: its 1-based number, the parsed value (None when it
    is not valid JSON) and the parser's reason in that case ("Expecting value at column 3",
    counted within the line)."""

    number: int
    value: Any
    error: str | None


def read_json_lines(path: str) -> Iterator[JsonLine]:
    """Yield every non-blank line of `path` (UTF-8) parsed as JSON; never raises for bad JSON,
    the caller decides. Raises OSError when the file cannot be read."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield JsonLine(number, json.loads(line.rstrip("\r\n")), None)
            except json.JSONDecodeError as err:
                yield JsonLine(number, None, f"{err.msg} at column {err.colno}")
