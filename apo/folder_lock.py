"""One run per output folder: an exclusive lock that train_math_apo.py and evaluate_apo.py hold while they run.

The lock is `fcntl.flock` on `<output_dir>/.apo.lock`, taken before the run writes anything
there. The operating system releases it when the holder exits, however it exits (kill -9
included), so a dead run never leaves a stale lock; the file itself stays and only records the
last holder's pid for the refusal message. A second run on the same folder is refused at once
with InputError naming the folder and the holder's pid. Under a multi-process launch only the
main process holds it (the caller passes `is_main`). flock locks are local to one machine: two
hosts sharing a folder over NFS are not kept apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from apo.errors import InputError
from apo.records import ensure_output_folder

LOCK_FILE = ".apo.lock"


@contextlib.contextmanager
def hold_output_folder(path: str, *, is_main: bool = True, flag: str = "--output_dir") -> Iterator[None]:
    """Hold the lock on the folder `path` (created when missing) for the `with` block; a no-op
    when not `is_main`. Raises InputError naming the folder and the holder's pid when another
    process holds it, and InputError as apo.records.check_output_folder for a path that is a file.
    A folder this call created and the block left empty is removed again on exit."""
    if not is_main:
        yield
        return
    created = not os.path.isdir(path)
    lock_path = os.path.join(ensure_output_folder(path, flag), LOCK_FILE)
    with open(lock_path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid unknown"
            raise InputError(f"{flag} {path} is in use by another run ({holder}); wait for it to end or use "
                             "another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            if created and os.listdir(path) == [LOCK_FILE]:  # a run refused before writing leaves no folder
                with contextlib.suppress(OSError):
                    os.remove(lock_path)
                    os.rmdir(path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
