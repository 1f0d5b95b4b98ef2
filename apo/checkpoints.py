"""Checkpoints of a train_math_apo.py run: atomic folders, resume, rotation, best/ and final/.

CheckpointWriter takes the trainer's Run.

Checkpoint layout (one folder per saved step, written to a hidden temporary folder and
renamed into place only when complete, so a crash or a full disk leaves the previous
checkpoint as it was):

    checkpoint-<step>/
        policy/              HF model (LoRA merged) + tokenizer: AutoModelForCausalLM.from_pretrained works
        adapter/             LoRA runs only: the peft adapter the run resumes from
        value_head/          the stage-1 value head (when there is one)
        accelerate_state/    optimizer, scheduler, per-process RNG (python, numpy, torch, cuda), turn baselines
        config.json          the resolved configuration
        trainer_state.json   step, data position, best accuracy, ... (written last: marks the folder complete)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

from apo.config import save_config, write_json_atomic

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainerState:
    """What the training loop needs, beyond weights and optimizer, to continue where it stopped.

    step counts completed stage-2 iterations; the prompts of iteration s are positions
    [s * prompts_per_step, (s + 1) * prompts_per_step) of the seeded prompt stream
    (`prompt_indices_for_step`), so the step alone fixes the data position.
    """

    step: int = 0
    optimizer_step: int = 0
    epoch: int = 0
    prompts_seen: int = 0
    best_accuracy: float | None = None
    best_step: int | None = None
    last_accuracy: float | None = None
    nonfinite_steps: int = 0
    consecutive_nonfinite: int = 0

    def save(self, path: str) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def load(cls, path: str) -> TrainerState:
        """Raises FileNotFoundError naming `path`, ValueError naming unknown keys."""
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path}: unknown trainer-state keys {unknown}; valid keys are {sorted(known)}")
        return cls(**values)


def checkpoint_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints (their trainer_state.json exists) under `output_dir`, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_PATTERN.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isfile(os.path.join(path, TRAINER_STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume_checkpoint(output_dir: str, resume_from_checkpoint: str) -> str | None:
    """The checkpoint folder to resume from: None for "", the latest under `output_dir` for
    "auto" (None when there is none yet), else the given folder, which must be complete.
    Raises FileNotFoundError naming the folder and what is missing."""
    if resume_from_checkpoint == "":
        return None
    if resume_from_checkpoint == "auto":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    state_file = os.path.join(resume_from_checkpoint, TRAINER_STATE_FILE)
    if not os.path.isfile(state_file):
        raise FileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r}: {state_file} not found; "
                                "give a complete checkpoint-<step> folder, 'auto' (latest under output_dir) or ''")
    return resume_from_checkpoint


@contextlib.contextmanager
def staged_folder(final_path: str, is_main: bool, barrier: Callable[[], None]) -> Iterator[str]:
    """Yield a temporary sibling folder to write into; rename it to `final_path` on success.

    All processes enter (they may write per-process files); only the main process creates,
    renames and cleans up. On an exception (a full disk, a crash in a writer) the temporary
    folder is removed and the exception re-raised, so `final_path` and every older folder are
    left untouched. An existing `final_path` is replaced only after the new one is complete.
    """
    parent, name = os.path.split(os.path.abspath(final_path))
    staging = os.path.join(parent, f".{name}.tmp")
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
    barrier()
    try:
        yield staging
        barrier()
    except BaseException:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if is_main:
        previous = os.path.join(parent, f".{name}.old")
        shutil.rmtree(previous, ignore_errors=True)
        if os.path.exists(final_path):
            os.replace(final_path, previous)
        os.replace(staging, final_path)
        shutil.rmtree(previous, ignore_errors=True)
    barrier()


def rotate_checkpoints(output_dir: str, keep: int) -> list[str]:
    """Delete all but the newest `keep` complete checkpoints (keep <= 0 keeps all). Returns the deleted."""
    if keep <= 0:
        return []
    deleted = []
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path)
        deleted.append(path)
    return deleted


def latest_or_none(output_dir: str) -> str | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def skip_model_weights_in_accelerate_state(accelerator) -> None:
    """Make `accelerator.save_state/load_state` leave the model weights out: the policy is saved
    in HF format (and as a LoRA adapter) beside it instead. DeepSpeed engines still save their
    own shards (accelerate gives them no hook)."""
    accelerator.register_save_state_pre_hook(lambda models, weights, output_dir: weights.clear())
    accelerator.register_load_state_pre_hook(lambda models, input_dir: models.clear())


def load_training_state(accelerator, resume_dir: str) -> TrainerState:
    """Restore optimizer, scheduler, RNG and registered objects from `resume_dir`; return its TrainerState."""
    accelerator.load_state(os.path.join(resume_dir, "accelerate_state"))
    return TrainerState.load(os.path.join(resume_dir, TRAINER_STATE_FILE))


class CheckpointWriter:
    """Writes checkpoint-<step>/, best/ and final/ of a run; every process calls every method
    (the writes are collective under FSDP/DeepSpeed), only the main process touches files."""

    def __init__(self, run, value_head) -> None:
        self.run, self.value_head = run, value_head
        self.output_dir = run.train.output_dir

    def _write_policy(self, folder: str, with_adapter: bool) -> None:
        """HF model (LoRA merged into a copy) + tokenizer in `folder`; the adapter in folder/../adapter."""
        run, accelerator = self.run, self.run.accelerator
        unwrapped = accelerator.unwrap_model(run.policy)
        if run.apo.use_lora:
            if accelerator.is_main_process:
                if with_adapter:
                    unwrapped.save_pretrained(os.path.join(os.path.dirname(folder), "adapter"))
                merged = copy.deepcopy(unwrapped).merge_and_unload()
                merged.save_pretrained(folder)
                del merged
        else:
            state_dict = accelerator.get_state_dict(run.policy)
            if accelerator.is_main_process:
                unwrapped.save_pretrained(folder, state_dict=state_dict)
        if accelerator.is_main_process:
            run.tokenizer.save_pretrained(folder)

    def _write_extras(self, folder: str, state: TrainerState) -> None:
        if self.value_head is not None:
            self.value_head.save(os.path.join(folder, "value_head"))
        save_config(os.path.join(folder, "run_config.json"), self.run.apo, self.run.train)
        state.save(os.path.join(folder, TRAINER_STATE_FILE))  # last: marks the folder complete

    def save_checkpoint(self, state: TrainerState) -> str:
        """checkpoint-<step>/ (see the module docstring), then drop checkpoints beyond keep_checkpoints."""
        accelerator, path = self.run.accelerator, checkpoint_path(self.output_dir, state.step)
        with staged_folder(path, accelerator.is_main_process, accelerator.wait_for_everyone) as staging:
            self._write_policy(os.path.join(staging, "policy"), with_adapter=True)
            accelerator.save_state(os.path.join(staging, "accelerate_state"))
            if accelerator.is_main_process:
                self._write_extras(staging, state)
        if accelerator.is_main_process:
            rotate_checkpoints(self.output_dir, self.run.train.keep_checkpoints)
            logger.info("saved %s", path)
        return path

    def _save_model_folder(self, name: str, state: TrainerState, extra: dict | None = None) -> str:
        accelerator, path = self.run.accelerator, os.path.join(self.output_dir, name)
        with staged_folder(path, accelerator.is_main_process, accelerator.wait_for_everyone) as staging:
            self._write_policy(staging, with_adapter=False)
            if accelerator.is_main_process:
                if extra is not None:
                    write_json_atomic(os.path.join(staging, "eval.json"), extra)
                self._write_extras(staging, state)
        return path

    def save_best(self, state: TrainerState, eval_result: dict) -> str:
        """best/: the policy with the highest held-out accuracy so far, kept apart from the latest."""
        return self._save_model_folder("best", state, {"step": state.step, **eval_result})

    def save_final(self, state: TrainerState) -> str:
        """final/: the last policy, loadable with AutoModelForCausalLM.from_pretrained (LoRA merged)."""
        return self._save_model_folder("final", state)
