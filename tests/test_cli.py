"""apo.cli.run_main and the four scripts' entry points: a mistake the user can fix is one line
`error: <file>:<line>: ...` and exit status 2; --debug keeps the traceback; a bug keeps it always
(issue 19, "Errors a person can read"). The scripts run in-process with runpy, so no model loads."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys

import pytest

from apo.cli import run_main
from apo.errors import InputError
from conftest import REPO_ROOT


def test_an_input_error_is_one_line_and_exit_status_2(capsys):
    def entry(argv):
        raise InputError(f"data.jsonl:3: field 'answer' is 7, expected a string ({argv})")

    with pytest.raises(SystemExit) as stopped:
        run_main(entry, ["--flag", "x"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: data.jsonl:3: field 'answer' is 7, expected a string (['--flag', 'x'])"
    assert "Traceback" not in err and "--debug" in err


def test_debug_keeps_the_traceback_and_a_bug_is_never_hidden():
    def entry(argv):
        raise InputError("bad")

    with pytest.raises(InputError, match="bad"):
        run_main(entry, ["--debug"])

    def buggy(argv):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_main(buggy, [])
    assert run_main(lambda argv: argv, ["--debug", "--x", "1"]) == ["--x", "1"]


def run_script(name: str, argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as stopped:
        runpy.run_path(str(REPO_ROOT / name), run_name="__main__")
    return stopped.value.code


def test_each_script_prints_the_error_line_and_exits_2(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    row = {"id": "a", "problem": "What is 1 + 1?", "answer": "2", "type": "Prealgebra", "level": 1}
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(row).encode() + b"\n" + json.dumps(row | {"id": "b"}).replace("What", "Wh\xe4t")
                       .encode("latin-1") + b"\n")
    (tmp_path / "taken").write_text("a file")
    cases = {
        "prepare_data.py": (["--source", "local", "--train_path", str(empty), "--math500_path", "none",
                             "--tokenizer", "none", "--output_dir", str(tmp_path / "data")],
                            f"error: {empty}: no rows (the file is empty)"),
        "train_math_apo.py": (["--data_file", str(latin1), "--output_dir", str(tmp_path / "train")],
                              f"error: {latin1}:2: not valid JSON (not UTF-8: byte 0xe4 at column 27)"),
        "evaluate_apo.py": (["--eval_file", str(empty), "--output_dir", str(tmp_path / "eval")],
                            f"error: {empty}: no problem rows (the file is empty); write it with prepare_data.py"),
        "demo_apo_pipeline.py": (["--output_dir", str(tmp_path / "taken")],
                                 f"error: --output_dir {tmp_path / 'taken'}: is a file; give a folder (it is created "
                                 "when missing)"),
    }
    for script, (argv, first_line) in cases.items():
        assert run_script(script, argv, monkeypatch) == 2, script
        err = capsys.readouterr().err
        assert first_line in err.splitlines(), (script, err)
        assert "Traceback" not in err, script
    assert run_script("train_math_apo.py", ["--beta2", "-1"], monkeypatch) == 2
    assert "error: APOConfig.beta2=-1.0 is invalid: use a positive value such as 1e-3." in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["evaluate_apo.py", "--eval_file", str(empty), "--debug"])
    with pytest.raises(InputError, match="no problem rows"):
        runpy.run_path(str(REPO_ROOT / "evaluate_apo.py"), run_name="__main__")


def test_the_command_line_itself_exits_2_with_the_message(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = subprocess.run([sys.executable, "prepare_data.py", "--source", "local", "--train_path", str(empty),
                             "--math500_path", "none", "--tokenizer", "none", "--output_dir", str(tmp_path / "out")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {empty}: no rows (the file is empty)\n"), result.stderr
