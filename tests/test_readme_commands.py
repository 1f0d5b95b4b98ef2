"""Every shell command in README.md's and docs/REPRODUCING.md's code blocks works as a user copies it (issue 25).

`doc_commands()` extracts each command of the documents' ```bash blocks (continuation lines joined,
comments dropped) with its file and line. Every command is then checked in one of three ways:

* parsed (all of them, fast): a `python <script>` command goes through the script's own parser, so every
  flag it uses is read and the configs' checks run, as `--help`-level validation without loading a model;
  `accelerate launch` checks its --config_file and parses the script after it; `pip install` checks the
  requirement syntax, the files it names and the pinned version installed here; `make` checks the target.
* run (RUN_SCRIPTS), in document order in one scratch checkout per document (the repository's tracked
  folders linked in, outputs written there), after STANDINS replaced what needs the hub and TOY_SIZES were
  appended (argparse keeps the last of a repeated flag). The README itself never carries toy sizes. A run
  must exit 0; a command's outputs are what the next command reads (prepare_data -> train -> evaluate).
  Each script runs as __main__ inside the test process (`run_as_main`), not as a subprocess: the
  interpreter and the imports, most of a toy-sized run's time, are paid once.
* parsed only, when PARSE_ONLY names a reason (a GPU, or sizes a CPU cannot run); the reason is listed in
  the test's id.

Each failure names the document, the line and the command as written. When another README command is
added, extend STANDINS (a model, tokenizer or file the hub or the user provides) or PARSE_ONLY; nothing
else needs to change. Runs that load a model are marked `slow`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, build_tiny_policy

DOCUMENTS = ("README.md", "docs/REPRODUCING.md")
SHELL_FENCES = {"bash", "sh", "shell", "console"}

# --- the one table of offline stand-ins (what it replaces -> what runs instead, and why) ---
# Applied to the commands that run; parse checks read the command as written.
STANDINS = {
    "--model / --models (a hub id, `embedded`, M, or a folder no earlier command wrote)":
        "standin_models/<name>: a 2-layer random Llama over the embedded tokenizer (conftest.build_tiny_policy), "
        "one folder name per model so `--model A --models B` stay two models. The commands' flags, files and "
        "hand-offs are what is tested; the embedded model itself runs in test_evaluate_apo / test_demo.",
    "no --model on a train/evaluate/demo command (the default or a --config's hub model)":
        "--model standin_models/default appended",
    "--tokenizer <hub id>, or none given to prepare_data (its default is a hub id)": "--tokenizer embedded",
    "prepare_data.py --source hub (the default: MATH from the hub)":
        "--source synthetic (apo/synthetic.py) with --synthetic_train_size 40 --synthetic_eval_size 8",
    "MATH/train.jsonl (the user's copy of MATH)": "40 synthetic problems in MATH's schema written there",
    "D (an output folder placeholder)": "outputs/D",
    "a --compare file no earlier command wrote": "a copy of the newest metrics.json / summary.json written so far",
    "a train/evaluate --output_dir an earlier command already filled (the documents list alternatives, and a "
    "used folder is refused by design)": "the earlier run moved aside to <folder>.before-line<N> first",
}
HUB_SOURCE_STANDIN = ["--source", "synthetic", "--synthetic_train_size", "40", "--synthetic_eval_size", "8"]
PLACEHOLDER_DIRS = {"D": "outputs/D"}
MATH_STANDIN_FILES = ("MATH/train.jsonl",)

# --- toy sizes appended to each run (argparse keeps the last value of a repeated flag) ---
TOY_SIZES = {
    "train_math_apo.py": ["--max_steps", "1", "--max_train_prompts", "2", "--prompts_per_step", "2",
                          "--optimizer_steps_per_iteration", "1", "--micro_batch_size", "2", "--stage1_batch_size", "2",
                          "--num_value_samples", "2", "--generation_batch_size", "8", "--max_new_tokens", "4",
                          "--eval_size", "2", "--value_epochs", "1", "--grading_workers", "1"],
    "evaluate_apo.py": ["--limit", "1", "--eval_max_new_tokens", "4", "--bootstrap_resamples", "100",
                        "--grading_workers", "1"],
    "demo_apo_pipeline.py": ["--quick", "--max_new_tokens", "4"],
    "prepare_data.py": [],  # sizes are the command's own (the synthetic generator's limits are part of the test)
}
RUN_SCRIPTS = set(TOY_SIZES)

# --- commands checked for parsing only, and why (first match wins) ---
PARSE_ONLY = (
    (lambda argv: argv[:2] == ["accelerate", "launch"], "GPU: a multi-process launch"),
    (lambda argv: "vllm" in argv, "GPU: the vLLM backend"),
    (lambda argv: "bench/gpu_check.py" in argv, "GPU: the lent-GPU check"),
    (lambda argv: "bench/gpu_check_vllm.py" in argv, "GPU: the vLLM check"),
    (lambda argv: "--protocol" in argv, "CPU-bound: a paper protocol fixes 1024-2048 tokens and 32 samples"),
    (lambda argv: "..." in argv, "'...' stands for a full command"),
    (lambda argv: argv[0] == "pip", "installs packages"),
    (lambda argv: argv[0] == "make", "make test is this suite; make demo is run as python demo_apo_pipeline.py"),
)


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str  # as written (continuations joined, comment dropped)
    argv: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.document}:{self.line}: `{self.text}`"

    @property
    def script(self) -> str | None:
        scripts = [a for a in self.argv if a.endswith(".py")]
        return scripts[0] if scripts else None


def extract_commands(text: str, document: str) -> list[Command]:
    """The commands of the shell code blocks of a Markdown text, one per logical line."""
    commands, fence, pending, start = [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        marker = re.match(r"\s*```(\w*)", line)
        if marker:
            fence = marker.group(1) if fence is None else None
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending:
            start = number
        stripped = line.strip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical, pending = pending + stripped, ""
        argv = shlex.split(logical, comments=True)
        if argv:
            commands.append(Command(document, start, " ".join(argv), tuple(argv)))
    return commands


def doc_commands() -> list[Command]:
    return [c for d in DOCUMENTS for c in extract_commands((REPO_ROOT / d).read_text(encoding="utf-8"), d)]


def parse_only_reason(command: Command) -> str | None:
    argv = list(command.argv)
    for matches, reason in PARSE_ONLY:
        if matches(argv):
            return reason
    if command.script not in RUN_SCRIPTS:
        return f"{command.script or argv[0]} is not a stage script"
    return None


COMMANDS = doc_commands()


def command_id(command: Command) -> str:
    return f"{command.document}:{command.line}"


# --- parse checks: every command, as written ---

def script_parser(script: str):
    """The script's own argv -> configs, as its `if __name__ == "__main__":` calls it (no model loads)."""
    from apo.config import parse_config, parse_script_config

    if script == "prepare_data.py":
        from prepare_data import DataConfig
        return lambda argv: parse_config((DataConfig,), argv, script)
    if script == "train_math_apo.py":
        from apo import correction
        from train_math_apo import TrainConfig
        return lambda argv: parse_script_config(script, (TrainConfig, correction.CorrectionTrainingConfig), argv)
    if script == "evaluate_apo.py":
        from evaluate_apo import EvalConfig
        return lambda argv: parse_script_config(script, (EvalConfig,), argv)
    if script == "demo_apo_pipeline.py":
        from demo_apo_pipeline import DemoConfig
        return lambda argv: parse_config((DemoConfig,), argv, script)
    if script == "bench/gpu_check.py":
        sys.path.insert(0, str(REPO_ROOT / "bench"))
        from gpu_check import GpuCheckConfig
        return lambda argv: parse_config((GpuCheckConfig,), argv, script)
    if script == "bench/gpu_check_vllm.py":
        sys.path.insert(0, str(REPO_ROOT / "bench"))
        from gpu_check_vllm import VllmCheckConfig
        return lambda argv: parse_config((VllmCheckConfig,), argv, script)
    raise AssertionError(f"no parser known for {script}: add it to script_parser")


def check_pip(argv: list[str], where: str) -> None:
    from packaging.requirements import Requirement

    args = [a for a in argv[2:] if a != "--no-deps"]
    assert argv[1] == "install", f"{where}: only `pip install` is expected"
    if args[0] == "-r":
        path = REPO_ROOT / args[1]
        assert path.is_file(), f"{where}: {args[1]} does not exist"
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line and not line.startswith("-"):
                Requirement(line)  # raises InvalidRequirement naming the line
        return
    for spec in args:
        requirement = Requirement(spec)
        installed = metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), \
            f"{where}: pins {spec}, but this environment (made by `make install`) has {installed}"


def check_parses(command: Command) -> None:
    argv = [a for a in command.argv if a != "..."]
    if argv[0] == "pip":
        return check_pip(argv, command.where)
    if argv[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO_ROOT / "Makefile").read_text(), re.M)
        assert argv[1] in targets, f"{command.where}: the Makefile has no target {argv[1]!r} ({targets})"
        return
    if argv[:2] == ["accelerate", "launch"]:
        config = argv[argv.index("--config_file") + 1]
        assert (REPO_ROOT / config).is_file(), f"{command.where}: {config} does not exist"
        assert isinstance(yaml.safe_load((REPO_ROOT / config).read_text()), dict), f"{command.where}: {config}"
    assert command.script, f"{command.where}: not a python command; add a check for it here"
    args = argv[argv.index(command.script) + 1:]
    try:
        script_parser(command.script)(args)
    except (ValueError, OSError) as err:  # InputError, a missing --config file
        raise AssertionError(f"{command.where} does not parse: {err}") from None
    except SystemExit as exit_:  # argparse: a malformed value
        raise AssertionError(f"{command.where} does not parse (argparse exit {exit_.code})") from None


@pytest.mark.parametrize("command", COMMANDS, ids=command_id)
def test_every_documented_command_parses(command, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the documents' paths are relative to the checkout
    check_parses(command)


def test_the_documents_hold_the_commands_this_test_expects():
    """The extraction itself: continuation lines joined, comments dropped, indented blocks read, python blocks not."""
    text = ("intro\n```bash\npython a.py --x 1 \\\n    --y 2   # two lines\nmake test  # comment\n```\n"
            "```python\nimport os\n```\n- item\n\n  ```bash\n  python b.py --z\n  ```\n")
    found = extract_commands(text, "T.md")
    assert [(c.line, c.text) for c in found] == [(3, "python a.py --x 1 --y 2"), (5, "make test"),
                                                 (13, "python b.py --z")]
    scripts = {c.script for c in COMMANDS}
    assert {"prepare_data.py", "train_math_apo.py", "evaluate_apo.py", "demo_apo_pipeline.py"} <= scripts
    assert len(COMMANDS) >= 40


# --- runs: the commands a CPU can run, with stand-ins, in document order ---

def model_standin(name: str) -> str:
    return "standin_models/" + re.sub(r"[^\w.-]+", "__", name)


def map_to_standins(command: Command, scratch: Path) -> list[str]:
    """The command's arguments after the script, with STANDINS applied and TOY_SIZES appended."""
    script = command.script
    args = list(command.argv[command.argv.index(script) + 1:])
    args = [PLACEHOLDER_DIRS.get(a, a) for a in args]
    models, i = [], 0
    while i < len(args):
        flag = args[i]
        if flag in ("--model", "--models"):
            j = i + 1
            while j < len(args) and not args[j].startswith("--"):
                if not (scratch / args[j]).exists():  # a folder an earlier command wrote is used as it is
                    args[j] = model_standin(args[j])
                models.append(args[j])
                j += 1
            i = j
            continue
        if flag == "--tokenizer" and i + 1 < len(args) and args[i + 1] not in ("embedded", "none"):
            args[i + 1] = "embedded"
        i += 1
    if script in ("train_math_apo.py", "evaluate_apo.py", "demo_apo_pipeline.py") and "--model" not in args \
            and "--compare" not in args:
        args += ["--model", model_standin("default")]
    if script == "prepare_data.py":
        if "--tokenizer" not in args:
            args += ["--tokenizer", "embedded"]
        source = args[args.index("--source") + 1] if "--source" in args else "hub"
        if source == "hub":
            args += HUB_SOURCE_STANDIN
    if "--compare" in args:
        for path in args[args.index("--compare") + 1:]:
            if path.startswith("--"):
                break
            if not (scratch / path).exists():
                newest = max(scratch.glob(f"outputs/**/{Path(path).name}"), key=os.path.getmtime, default=None)
                assert newest is not None, f"{command.where}: no earlier command wrote a {Path(path).name} to compare"
                (scratch / path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(newest, scratch / path)
    return args + TOY_SIZES[script]


@pytest.fixture(scope="session")
def standin_model(tmp_path_factory, embedded_tokenizer) -> Path:
    folder = tmp_path_factory.mktemp("standin") / "tiny"
    build_tiny_policy(embedded_tokenizer).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


SCRATCH: dict[str, Path] = {}


def scratch_checkout(document: str, tmp_path_factory, standin_model: Path) -> Path:
    """One folder per document: the repository's tracked top-level entries linked in, stand-in models and data."""
    if document not in SCRATCH:
        folder = tmp_path_factory.mktemp("checkout")
        tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
        for top in sorted({line.split("/")[0] for line in tracked.splitlines()} - {"tests"}):
            (folder / top).symlink_to(REPO_ROOT / top)
        (folder / "standin_models").mkdir()
        from apo.synthetic import generate_problems

        for relative in MATH_STANDIN_FILES:
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            rows = generate_problems(40, seed=7, levels=(1, 2))
            (folder / relative).write_text("".join(json.dumps(row) + "\n" for row in rows))
        SCRATCH[document] = folder
    return SCRATCH[document]


RUNS = [c for c in COMMANDS if parse_only_reason(c) is None]
MODEL_SCRIPTS = {"train_math_apo.py", "evaluate_apo.py", "demo_apo_pipeline.py"}


def run_params():
    for command in RUNS:
        marks = [pytest.mark.slow] if command.script in MODEL_SCRIPTS else []
        yield pytest.param(command, marks=marks, id=command_id(command))


def move_earlier_run_aside(command: Command, args: list[str], scratch: Path, monkeypatch) -> None:
    """STANDINS' last row: a train/evaluate output folder an earlier command filled is renamed first."""
    if command.script not in ("train_math_apo.py", "evaluate_apo.py") or "--compare" in args:
        return
    with monkeypatch.context() as patch:
        patch.chdir(scratch)  # --config paths are relative to the checkout
        configs = script_parser(command.script)(args)
    output_dir = next(c.output_dir for c in configs[1:] if hasattr(c, "output_dir"))
    folder = scratch / output_dir
    if folder.exists():
        folder.rename(folder.with_name(f"{folder.name}.before-line{command.line}"))


@pytest.mark.parametrize("command", run_params())
def test_every_runnable_command_runs(command, tmp_path_factory, standin_model, monkeypatch, capfd):
    scratch = scratch_checkout(command.document, tmp_path_factory, standin_model)
    args = map_to_standins(command, scratch)
    move_earlier_run_aside(command, args, scratch, monkeypatch)
    for name in {a for a in args if a.startswith("standin_models/")}:
        if not (scratch / name).exists():
            (scratch / name).symlink_to(standin_model, target_is_directory=True)
    status, error = run_as_main(command.script, args, scratch, monkeypatch, capfd)
    assert status == 0, (
        f"{command.where} failed ({error}); ran as `python {command.script} {shlex.join(args)}` in {scratch}:\n"
        f"{capfd.readouterr().err[-3000:]}")


def run_as_main(script: str, args: list[str], scratch: Path, monkeypatch, capfd) -> tuple[int, str]:
    """Run `python <script> <args>` in `scratch` inside this process: the script's file executed as
    __main__ (runpy), with that argv and one torch thread, so only the interpreter's start-up and the
    imports are shared with the other runs (they cost more than the toy-sized work, 13-16 s of each
    run as a subprocess). Returns (exit status, "exit N" or the exception's one-line summary)."""
    import runpy

    import torch

    threads = torch.get_num_threads()
    monkeypatch.chdir(scratch)
    monkeypatch.setattr(sys, "argv", [script, *args])
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(scratch / script), run_name="__main__")
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        return status, f"exit {status}"
    except Exception as err:  # noqa: BLE001 -- reported with the command that raised it
        import traceback

        traceback.print_exc()
        return 1, f"a traceback: {type(err).__name__}: {err}"
    finally:
        torch.set_num_threads(threads)
    return 0, "exit 0"


def test_parse_only_commands_say_why():
    """Every command that is not run has a reason (GPU, CPU-bound, placeholder, install, make)."""
    skipped = {command_id(c): parse_only_reason(c) for c in COMMANDS if parse_only_reason(c)}
    assert skipped and all(skipped.values())
    assert all(not reason.endswith("is not a stage script") for reason in skipped.values()), skipped


def test_the_standins_replace_only_what_needs_the_hub(tmp_path):
    def mapped(text: str) -> list[str]:
        return map_to_standins(Command("T.md", 1, text, tuple(shlex.split(text))), tmp_path)

    (tmp_path / "outputs" / "apo" / "final").mkdir(parents=True)  # written by an earlier command: used as it is
    args = mapped("python evaluate_apo.py --model Qwen/Qwen2.5-1.5B --models outputs/apo/final M --output_dir D")
    assert args[:7] == ["--model", "standin_models/Qwen__Qwen2.5-1.5B", "--models", "outputs/apo/final",
                        "standin_models/M", "--output_dir", "outputs/D"]
    assert args[7:] == TOY_SIZES["evaluate_apo.py"]
    assert mapped("python prepare_data.py --tokenizer Qwen/Qwen2.5-1.5B")[:2] == ["--tokenizer", "embedded"]
    assert mapped("python prepare_data.py") == ["--tokenizer", "embedded", *HUB_SOURCE_STANDIN]
    synthetic = "python prepare_data.py --source synthetic --synthetic_levels 1,2 --tokenizer none"
    assert mapped(synthetic) == shlex.split(synthetic)[2:]  # its own sizes: the generator's limits are tested
    assert mapped("python train_math_apo.py --config c.yaml")[:4] == ["--config", "c.yaml", "--model",
                                                                       "standin_models/default"]
