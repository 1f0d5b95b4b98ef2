"""apo.cli.run_main and the four scripts' entry points: a mistake the user can fix is one line
`error: <file>:<line>: ...` and exit status 2; --debug keeps the traceback; a bug keeps it always
(issue 19, "Errors a person can read"). The scripts run in-process with runpy, so no model loads."""

from __future__ import annotations

import errno
import json
import os
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


# --- issue 28: the user's environment (a full disk, a folder that may not be written) is one line too ---

@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory, embedded_tokenizer):
    """A tiny saved policy and synthetic train / eval files, for runs of the real scripts."""
    from apo.synthetic import generate_problems
    from conftest import build_tiny_policy

    folder = tmp_path_factory.mktemp("tiny_cli")
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(folder / "model")
    embedded_tokenizer.save_pretrained(folder / "model")
    rows = generate_problems(12, seed=0, levels=[1])
    for name, part in (("train", rows[:8]), ("eval", rows[8:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


def tiny_train_argv(setup, output_dir) -> list[str]:
    return ["--model", str(setup / "model"), "--data_file", str(setup / "train.jsonl"), "--eval_file",
            str(setup / "eval.jsonl"), "--output_dir", str(output_dir), "--num_value_samples", "2",
            "--max_new_tokens", "4", "--generation_batch_size", "16", "--use_lora", "false", "--value_epochs", "1",
            "--prompts_per_step", "4", "--micro_batch_size", "2", "--max_steps", "1", "--save_every", "1",
            "--eval_size", "4", "--eval_at_start", "false", "--mixed_precision", "no", "--stage1_batch_size", "8"]


def test_a_full_disk_while_saving_is_one_line_naming_the_folder(tiny_setup, tmp_path, monkeypatch, capsys):
    """Issue 28: safetensors' 'No space left on device' ended the trainer in a traceback."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
    out = tmp_path / "out"
    assert run_script("train_math_apo.py", tiny_train_argv(tiny_setup, out), monkeypatch) == 2
    err = capsys.readouterr().err
    assert (f"error: {out / 'best'}: No space left on device; free some space and run again (a resume "
            "continues where it stopped)\n") in err  # progress bars may share its line
    assert "Traceback" not in err
    assert not {"best", ".best.tmp", "final"} & set(os.listdir(out))  # nothing half-written


def test_a_folder_that_may_not_be_written_is_one_line_in_every_script(tiny_setup, tmp_path, monkeypatch, capsys):
    """Issue 28: a read-only output folder ended all three scripts in a PermissionError traceback. (The tests run
    as root, whom chmod does not stop, so the atomic writer's temporary file is refused as the OS would refuse it.)"""
    import apo.records

    def read_only(prefix="", suffix="", dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, f"{prefix}abc{suffix}"))

    monkeypatch.setattr(apo.records.tempfile, "mkstemp", read_only)
    cases = {
        "prepare_data.py": ["--source", "synthetic", "--synthetic_train_size", "8", "--synthetic_eval_size", "4",
                            "--tokenizer", "none", "--output_dir", str(tmp_path / "data")],
        "train_math_apo.py": tiny_train_argv(tiny_setup, tmp_path / "train"),
        "evaluate_apo.py": ["--model", str(tiny_setup / "model"), "--eval_file", str(tiny_setup / "eval.jsonl"),
                            "--output_dir", str(tmp_path / "eval"), "--eval_max_new_tokens", "4"],
    }
    for script, argv in cases.items():
        assert run_script(script, argv, monkeypatch) == 2, script
        err = capsys.readouterr().err
        first = "error: " + err.split("error: ", 1)[1].splitlines()[0]  # progress bars may come first
        assert first.startswith(f"error: {tmp_path}") and first.endswith(
            ".tmp: Permission denied; make the folder writable or choose another one"), (script, err)
        assert "Traceback" not in err, script
