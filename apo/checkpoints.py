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
        run_config.json      the resolved configuration and the data files' content hashes
        trainer_state.json   step, data position, best accuracy, ... (marks the folder complete)
        manifest.json        every other file's size (written last); a resume verifies the folder against
                             it and opens every safetensors file before trusting it (checkpoint_problem)
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

import torch

from apo.config import config_to_dict
from apo.errors import InputError, InputFileNotFoundError, os_error_code
from apo.generation import is_sharded
from apo.policy_weights import full_parameters, policy_tensors, whole_parameters
from apo.records import check_output_folder, data_difference, ensure_output_folder, write_json_atomic

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
MANIFEST_FILE = "manifest.json"
RUN_CONFIG_FILE = "run_config.json"
DATA_HASHES_KEY = "data_hashes"  # in run_config.json: {"data_file": apo.records.data_fingerprint, "eval_file": ...}
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
    """The checkpoint folder to resume from: None for "", for "auto" the newest under `output_dir`
    that passes checkpoint_problem (a warning names each newer one skipped; None when there is
    none yet), else the given folder, which must be complete and sound. Raises
    InputFileNotFoundError naming the folder and what is missing, InputError naming the bad file
    of a given checkpoint, or when every checkpoint under `output_dir` is damaged."""
    if resume_from_checkpoint == "":
        return None
    if resume_from_checkpoint == "auto":
        checkpoints = list_checkpoints(output_dir)
        skipped = []
        for _, path in reversed(checkpoints):
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            logger.warning("skipping %s, which is damaged (%s); resuming from an older checkpoint", path, problem)
            skipped.append(problem)
        if skipped:
            raise InputError(f"every checkpoint under {output_dir} is damaged ({'; '.join(skipped)}); remove them "
                             "to start over from step 0, or pass --overwrite_output_dir")
        return None
    state_file = os.path.join(resume_from_checkpoint, TRAINER_STATE_FILE)
    if not os.path.isfile(state_file):
        raise InputFileNotFoundError(f"--resume_from_checkpoint {resume_from_checkpoint!r}: {state_file} not found; "
                                "give a complete checkpoint-<step> folder, 'auto' (latest under output_dir) or ''")
    problem = checkpoint_problem(resume_from_checkpoint)
    if problem is not None:
        raise InputError(f"{problem}; resume from another checkpoint, or 'auto' (the newest sound one)")
    return resume_from_checkpoint


def checkpoint_problem(path: str) -> str | None:
    """`<file>: <what is wrong>` for the first damage found in the checkpoint folder `path`, None when
    it is sound: a file the resume needs is missing (trainer_state.json, run_config.json,
    accelerate_state/, policy/ with its weights, adapter/adapter_model.safetensors when adapter/
    exists), a file's size differs from manifest.json's (checkpoints written before the manifest
    are not size-checked), or a safetensors file does not open (a truncated file fails here)."""
    from safetensors import safe_open  # imported here: only a resume needs it

    needed = [TRAINER_STATE_FILE, RUN_CONFIG_FILE, "accelerate_state", os.path.join("policy", "config.json")]
    if os.path.isdir(os.path.join(path, "adapter")):
        needed.append(os.path.join("adapter", "adapter_model.safetensors"))
    for name in needed:
        if not os.path.exists(os.path.join(path, name)):
            return f"{os.path.join(path, name)}: missing"
    manifest = os.path.join(path, MANIFEST_FILE)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            sizes = json.load(handle)["files"]
        for name, size in sizes.items():
            file = os.path.join(path, name)
            if not os.path.isfile(file):
                return f"{file}: missing (listed in {MANIFEST_FILE})"
            if os.path.getsize(file) != size:
                return f"{file}: {os.path.getsize(file)} bytes, but {size} when it was written (truncated or changed)"
    weights = [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in sorted(names)
               if name.endswith(".safetensors")]
    if not any(file.startswith(os.path.join(path, "policy", "")) for file in weights):
        return f"{os.path.join(path, 'policy')}: no *.safetensors weights"
    for file in weights:
        try:
            with safe_open(file, framework="pt") as handle:
                handle.keys()
        except Exception as err:  # safetensors raises its own SafetensorError (and OSError) for a bad file
            return f"{file}: not a readable safetensors file ({err})"
    return None


def write_manifest(folder: str) -> None:
    """manifest.json: the size of every other file under `folder`, written last (checkpoint_problem)."""
    sizes = {os.path.relpath(os.path.join(parent, name), folder): os.path.getsize(os.path.join(parent, name))
             for parent, _, names in os.walk(folder) for name in names if name != MANIFEST_FILE}
    write_json_atomic(os.path.join(folder, MANIFEST_FILE), {"files": sizes})


# --- one run per output folder ---

# What a train_math_apo.py run writes into its output_dir besides checkpoint-<step>/ (and the hidden
# staging folders of staged_folder); --overwrite_output_dir removes exactly these.
STAGE2_OUTPUTS = ("best", "final", "metrics.jsonl", "training_curves.png", RUN_CONFIG_FILE, "tensorboard", "wandb")
STAGE1_OUTPUTS = ("stage1_values.jsonl", "stage1_meta.json", "value_head")  # apo.stage1's files
STAGING_PATTERN = re.compile(r"^\.(checkpoint-\d+|best|final|value_head)\.(tmp|old)$")
# Settings a resumed run may change: where and how often it saves, evaluates and reports, how long it runs,
# and throughput knobs that leave the update's mathematics alone. Any other difference refuses the resume.
RESUME_MAY_CHANGE = frozenset({
    "output_dir", "resume_from_checkpoint", "overwrite_output_dir", "stop_after_step", "max_steps", "epochs",
    "step_count", "stage", "eval_every", "eval_size", "eval_at_start", "save_every", "keep_checkpoints", "report_to",
    "max_nonfinite_steps", "micro_batch_size", "generation_batch_size", "stage1_batch_size", "value_batch_size",
    "save_stage1_responses", "grading_workers", "model_cache_dir", "gradient_checkpointing",
})


def run_configs(run) -> tuple:
    """The configs saved as run_config.json: A_PO_Config, TrainConfig and, when the run has one,
    the CorrectionTrainingConfig."""
    return (run.apo, run.train) + ((run.correction,) if run.correction is not None else ())


def stage2_outputs_in(output_dir: str) -> list[str]:
    """Names in `output_dir` that show a stage-2 run was there: checkpoint-<step>/, best/, final/,
    a non-empty metrics.jsonl ([] for a missing folder)."""
    if not os.path.isdir(output_dir):
        return []
    return [name for name in sorted(os.listdir(output_dir))
            if CHECKPOINT_PATTERN.match(name) or name in ("best", "final")
            or (name == "metrics.jsonl" and os.path.getsize(os.path.join(output_dir, name)) > 0)]


def claim_output_dir(output_dir: str, *, resuming: bool, overwrite: bool, stage1_conflict: str | None = None,
                     is_main: bool = True) -> list[str]:
    """Make `output_dir` ready for this run and return the names removed. Every process calls it;
    only the main one (`is_main`) removes and creates.

    A fresh run (not `resuming`) refuses, with InputError, a folder that holds another run: a
    stage-2 run's checkpoints, best/, final/ or metrics, or stage-1 values it cannot reuse
    (`stage1_conflict` says why; see apo.stage1.stage1_conflict). With `overwrite` it removes
    them first: every stage-2 output, and the stage-1 files only when they conflict (matching
    ones are reused, as a re-run of stage 1 would). Nothing else in the folder is touched.
    Raises InputError when `output_dir` is a file.
    """
    check_output_folder(output_dir)
    if resuming:
        return []
    found = stage2_outputs_in(output_dir) + ([stage1_conflict] if stage1_conflict else [])
    if found and not overwrite:
        raise InputError(f"--output_dir {output_dir} already holds another run ({'; '.join(found[:5])}); pass "
                         "--resume_from_checkpoint auto to continue it, --overwrite_output_dir to remove it and "
                         "start over, or another --output_dir")
    removed: list[str] = []
    if not is_main:
        return removed
    if overwrite and os.path.isdir(output_dir):
        removable = STAGE2_OUTPUTS + (STAGE1_OUTPUTS if stage1_conflict else ())
        for name in sorted(os.listdir(output_dir)):
            if name in removable or CHECKPOINT_PATTERN.match(name) or STAGING_PATTERN.match(name):
                path = os.path.join(output_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(name)
        if removed:
            logger.info("--overwrite_output_dir: removed %s from %s", ", ".join(removed), output_dir)
    ensure_output_folder(output_dir)
    return removed


def save_run_config(path: str, configs: tuple, data_hashes: dict) -> None:
    """run_config.json: the resolved configs (apo.config.config_to_dict) and, under DATA_HASHES_KEY,
    the content hash of each data file the run reads (apo.records.data_fingerprint)."""
    write_json_atomic(path, {**config_to_dict(*configs), DATA_HASHES_KEY: data_hashes})


def check_resume_data(resume_dir: str, current: dict[str, tuple[str, list[dict]]]) -> None:
    """Raise InputError when a data file's rows differ from those `resume_dir`/run_config.json
    hashed; `current` maps each DATA_HASHES_KEY entry ("data_file", "eval_file") to (path, rows
    read now). The message names the file and the first differing id. A run_config.json that
    predates the hashes is logged, not compared."""
    path = os.path.join(resume_dir, RUN_CONFIG_FILE)
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle).get(DATA_HASHES_KEY)
    if saved is None:
        logger.warning("%s records no data hashes; the data files are not compared", path)
        return
    for key, (data_path, rows) in current.items():
        difference = data_difference(saved[key], data_path, rows) if key in saved else None
        if difference:
            raise InputError(f"{difference}; cannot resume from {resume_dir}, whose run read other data. Resume "
                             "with the data it was started with, or start a new run (--overwrite_output_dir or "
                             "another --output_dir)")


def check_resume_config(resume_dir: str, current: dict) -> None:
    """Raise InputError naming every setting that differs between `resume_dir`/run_config.json
    and `current` (a flat config dict) and would change the run (not in RESUME_MAY_CHANGE).
    Settings the checkpoint does not record (it predates them) are logged, not compared."""
    path = os.path.join(resume_dir, RUN_CONFIG_FILE)
    if not os.path.isfile(path):
        raise InputError(f"{path} not found: cannot check that the resumed run has the checkpoint's settings; "
                         "resume from a checkpoint this trainer wrote")
    with open(path, encoding="utf-8") as handle:
        saved = json.load(handle)
    comparable = json.loads(json.dumps(current, default=str))  # as saved: tuples as lists, paths as strings
    differing = [key for key in sorted(comparable) if key in saved and key not in RESUME_MAY_CHANGE
                 and saved[key] != comparable[key]]
    unrecorded = sorted(set(comparable) - set(saved) - RESUME_MAY_CHANGE)
    if unrecorded:
        logger.warning("%s does not record %s; they are not compared", path, ", ".join(unrecorded))
    if differing:
        details = "; ".join(f"{key}: checkpoint {saved[key]!r}, now {comparable[key]!r}" for key in differing)
        raise InputError(f"cannot resume from {resume_dir}: settings that change the run differ ({details}); "
                         "resume with the checkpoint's settings, or start a new run with --overwrite_output_dir or "
                         "another --output_dir")


@contextlib.contextmanager
def staged_folder(final_path: str, is_main: bool, barrier: Callable[[], None]) -> Iterator[str]:
    """Yield a temporary sibling folder to write into; rename it to `final_path` on success.

    All processes enter (they may write per-process files); only the main process creates,
    renames and cleans up. On an exception (a full disk, a crash in a writer) the temporary
    folder is removed and the exception re-raised (safetensors' SafetensorError wrapping an OS
    error as that OSError, naming `final_path`), so `final_path` and every older folder are
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
    except BaseException as err:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
        code = os_error_code(err)
        if code is not None and not isinstance(err, OSError):  # safetensors' error names neither errno nor path
            raise OSError(code, os.strerror(code), final_path) from err
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


class NonFiniteWeightsError(RuntimeError):
    """The policy's weights hold NaN or inf, so no checkpoint, best/ or final/ is written from them."""


def nonfinite_parameters(model) -> list[str]:
    """Names of `model`'s parameters holding a NaN or inf on this process (its shard under FSDP)."""
    bad = []
    for name, param in model.named_parameters():
        local = param.to_local() if hasattr(param, "to_local") else param  # FSDP2 DTensor: this process's shard
        if not bool(torch.isfinite(local.detach()).all()):
            bad.append(name)
    return bad


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
        if run.apo.use_lora and is_sharded(unwrapped):
            self._write_sharded_lora(unwrapped, folder, with_adapter)
        elif run.apo.use_lora:
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

    def _write_sharded_lora(self, unwrapped, folder: str, with_adapter: bool) -> None:
        """A LoRA policy whose parameters are ZeRO-3 partitions or FSDP2 shards: every process gathers
        (one parameter at a time; a LoRA model under ZeRO-3 whole, for the merge), the main one saves
        the adapter's real tensors and the merged model (W + delta, in the base weights' dtype)."""
        is_main = self.run.accelerator.is_main_process
        lora_prefix = getattr(unwrapped, "prefix", "lora_")
        base_dtype = unwrapped.get_base_model().dtype
        with full_parameters(unwrapped):
            adapter = {}
            if with_adapter:
                for name, tensor in whole_parameters(unwrapped, lambda name: lora_prefix in name or
                                                     "modules_to_save" in name):
                    if is_main:
                        adapter[name] = tensor.cpu().clone()
            merged = {}
            for name, tensor in policy_tensors(unwrapped):
                if is_main:
                    merged[name] = tensor.to(base_dtype).cpu().clone()
        if is_main:
            if with_adapter:
                unwrapped.save_pretrained(os.path.join(os.path.dirname(folder), "adapter"), state_dict=adapter)
            unwrapped.get_base_model().save_pretrained(folder, state_dict=merged)

    def _write_extras(self, folder: str, state: TrainerState) -> None:
        if self.value_head is not None:
            self.value_head.save(os.path.join(folder, "value_head"))
        save_run_config(os.path.join(folder, RUN_CONFIG_FILE), run_configs(self.run), self.run.data_hashes)
        state.save(os.path.join(folder, TRAINER_STATE_FILE))  # marks the folder complete
        write_manifest(folder)  # last: lists every file above

    def _require_finite_weights(self, path: str) -> None:
        """Raise NonFiniteWeightsError on every process when any process's policy weights hold NaN or
        inf, naming `path` (not written) and the last checkpoint."""
        from accelerate.utils import gather_object

        bad = sorted({name for part in gather_object([nonfinite_parameters(self.run.unwrapped)]) for name in part})
        if bad:
            last = latest_or_none(self.output_dir)
            raise NonFiniteWeightsError(
                f"the policy's weights hold NaN or inf in {len(bad)} tensors (e.g. {bad[0]}); {path} was not written. "
                + (f"The last checkpoint is {last}; lower the learning rate or check the data, then resume from it"
                   if last else "There is no checkpoint yet; lower the learning rate or check the data"))

    def save_checkpoint(self, state: TrainerState) -> str:
        """checkpoint-<step>/ (see the module docstring), then drop checkpoints beyond keep_checkpoints.
        Raises NonFiniteWeightsError, writing nothing, when the weights are not finite."""
        accelerator, path = self.run.accelerator, checkpoint_path(self.output_dir, state.step)
        self._require_finite_weights(path)
        with staged_folder(path, accelerator.is_main_process, accelerator.wait_for_everyone) as staging:
            self._write_policy(os.path.join(staging, "policy"), with_adapter=True)
            accelerator.save_state(os.path.join(staging, "accelerate_state"))
            accelerator.wait_for_everyone()  # every process's files are written before the manifest lists them
            if accelerator.is_main_process:
                self._write_extras(staging, state)
        if accelerator.is_main_process:
            rotate_checkpoints(self.output_dir, self.run.train.keep_checkpoints)
            logger.info("saved %s", path)
        return path

    def _save_model_folder(self, name: str, state: TrainerState, extra: dict | None = None) -> str:
        accelerator, path = self.run.accelerator, os.path.join(self.output_dir, name)
        self._require_finite_weights(path)
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
