"""apo.folder_lock with real processes (issue 28): a second train_math_apo.py or evaluate_apo.py on a
folder another process holds is refused at once, naming the folder and the holder's pid; a holder
killed with SIGKILL leaves no stale lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from apo.folder_lock import LOCK_FILE, hold_output_folder
from conftest import REPO_ROOT

HOLDER = ("import sys, time\nfrom apo.folder_lock import hold_output_folder\n"
          "with hold_output_folder(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")


def start_holder(folder) -> subprocess.Popen:
    """Another process holding `folder` through the same code the scripts use."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def data_file(tmp_path) -> str:
    row = {"id": "a", "problem": "What is 1 + 1?", "answer": "2", "type": "Prealgebra", "level": 1}
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    return str(path)


@pytest.mark.parametrize("script, flags", [
    ("train_math_apo.py", ["--data_file", "{data}", "--eval_file", "{data}"]),
    ("evaluate_apo.py", ["--eval_file", "{data}"]),
])
def test_a_second_run_on_a_held_folder_is_refused_at_once_naming_the_holder(tmp_path, data_file, script, flags):
    folder = tmp_path / "out"
    holder = start_holder(folder)
    try:
        command = [sys.executable, script, *(f.format(data=data_file) for f in flags), "--output_dir", str(folder),
                   "--model", str(tmp_path / "no-such-model")]  # the lock comes before the model is looked up
        second = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines()[0] == (f"error: --output_dir {folder} is in use by another run (pid "
                                                 f"{holder.pid}); wait for it to end or use another output folder")
        assert sorted(os.listdir(folder)) == [LOCK_FILE]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "out"
    holder = start_holder(folder)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_FILE).exists()  # the file stays; the lock went with the process
    with hold_output_folder(str(folder)):
        assert (folder / LOCK_FILE).read_text() == f"pid {os.getpid()}\n"
    with hold_output_folder(str(folder)):  # released at the end of the block, in this process too
        pass
