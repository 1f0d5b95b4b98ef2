"""The entry point every script's `if __name__ == "__main__":` goes through: readable errors.

    if __name__ == "__main__":
        run_main(lambda argv: main(*parse_config((A_PO_Config, EvalConfig), argv)))

A mistake the user can fix (apo.errors.InputError: a bad line, field, flag or folder) prints
one line, `error: <file>:<line>: <what>` or `error: <message>`, on stderr and exits with
status 2, as argparse does for a bad flag. The user's environment is treated the same way: a full
disk, a folder that may not be written (an OSError with errno ENOSPC, EDQUOT, EACCES, EPERM or
EROFS, and safetensors' SafetensorError wrapping one) prints `error: <path>: <what>`. `--debug`
keeps the full traceback instead. Any other exception is a bug and ends with its traceback as usual.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

from apo.errors import InputError, os_error_code

DEBUG_FLAG = "--debug"
USAGE_ERROR_STATUS = 2
# errnos of an OSError the person running the script fixes (free space, permissions), not a bug
ENVIRONMENT_ERRNOS = {errno.ENOSPC: "free some space and run again (a resume continues where it stopped)",
                      errno.EDQUOT: "free some space and run again (a resume continues where it stopped)",
                      errno.EACCES: "make the folder writable or choose another one",
                      errno.EPERM: "make the folder writable or choose another one",
                      errno.EROFS: "choose a folder on a writable file system"}


def run_main(entry: Callable[[list[str]], Any], argv: list[str] | None = None) -> Any:
    """Call `entry(argv)` (it parses argv and runs the script; `--debug` is removed first) and
    return its result. An InputError becomes `error: <message>` on stderr and SystemExit(2),
    unless `--debug` was given, which re-raises it with its traceback; so does an error of the
    user's environment (`environment_error`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    try:
        return entry([arg for arg in argv if arg != DEBUG_FLAG])
    except InputError as err:
        if debug:
            raise
        sys.stderr.write(f"error: {err}\n(run with {DEBUG_FLAG} for the traceback)\n")
        raise SystemExit(USAGE_ERROR_STATUS) from None
    except Exception as err:
        message = environment_error(err)
        if message is None or debug:
            raise
        sys.stderr.write(f"error: {message}\n(run with {DEBUG_FLAG} for the traceback)\n")
        raise SystemExit(USAGE_ERROR_STATUS) from None


def environment_error(err: BaseException) -> str | None:
    """`<path>: <what>; <fix>` when `err` (or an error it was raised from) is a full disk or a
    folder that may not be written (apo.errors.os_error_code), else None."""
    seen = err
    while seen is not None:
        code = os_error_code(seen)
        if code in ENVIRONMENT_ERRNOS:
            path = getattr(seen, "filename", None) or os.getcwd()  # safetensors names no path
            return f"{path}: {os.strerror(code)}; {ENVIRONMENT_ERRNOS[code]}"
        seen = seen.__cause__ or seen.__context__
    return None
