"""The project's one exception type for mistakes the person running a script can fix.

`InputError` (a ValueError) is raised for bad input or configuration: a malformed line, a
missing field, an empty data file, an output folder that holds another run, a resume with a
different configuration. Its message names the file, the line and the field (or the flag)
and the fix. The scripts' entry points (apo.cli.run_main) print it as one line
`error: <message>` and exit 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class InputError(ValueError):
    """Bad input or configuration; the message says where (file:line, field or flag) and how to fix it."""


class InputFileNotFoundError(InputError, FileNotFoundError):
    """An input file or folder that does not exist (also a FileNotFoundError)."""


def os_error_code(err: BaseException) -> int | None:
    """The errno of an OSError, or of the OS error a safetensors SafetensorError wraps (it carries it only
    in its message, `IoError(Os { code: 28, kind: StorageFull, ... })`); None for anything else."""
    if isinstance(err, OSError):
        return err.errno
    found = re.search(r"\bOs \{ code: (\d+)", str(err)) if type(err).__name__ == "SafetensorError" else None
    return int(found.group(1)) if found else None
