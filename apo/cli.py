"""The entry point every script's `if __name__ == "__main__":` goes through: readable errors.

    if __name__ == "__main__":
        run_main(lambda argv: main(*parse_config((A_PO_Config, EvalConfig), argv)))

A mistake the user can fix (apo.errors.InputError: a bad line, field, flag or folder) prints
one line, `error: <file>:<line>: <what>` or `error: <message>`, on stderr and exits with
status 2, as argparse does for a bad flag. `--debug` keeps the full traceback instead. Any
other exception is a bug and ends with its traceback as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from apo.errors import InputError

DEBUG_FLAG = "--debug"
USAGE_ERROR_STATUS = 2


def run_main(entry: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    """Call `entry(argv)` (it parses argv and runs the script; `--debug` is removed first) and
    return its result. An InputError becomes `error: <message>` on stderr and SystemExit(2),
    unless `--debug` was given, which re-raises it with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    try:
        return entry([arg for arg in argv if arg != DEBUG_FLAG])
    except InputError as err:
        if debug:
            raise
        sys.stderr.write(f"error: {err}\n(run with {DEBUG_FLAG} for the traceback)\n")
        raise SystemExit(USAGE_ERROR_STATUS) from None
