"""The trainer's plumbing: data order, learning-rate schedules, checkpoints and resume,
metrics logging, the learning-curve plot, and stopping on Ctrl-C.

Used by train_math_apo.py; kept apart so the training script reads like the stage list.

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
import math
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


# --- trainer state ---

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
        from apo_config import write_json_atomic

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


# --- data order ---

def prompt_indices_for_step(num_prompts: int, prompts_per_step: int, step: int, seed: int) -> list[int]:
    """Indices (into the training prompts) of the prompts of iteration `step`.

    The prompt stream is one seeded permutation per epoch, concatenated: epoch e is
    numpy.random.default_rng([seed, e]).permutation(num_prompts). A step whose window crosses
    an epoch boundary takes the end of one permutation and the start of the next. Pure
    function of its arguments, so a resumed run sees exactly the order of an uninterrupted one.
    """
    if num_prompts < 1 or prompts_per_step < 1 or step < 0:
        raise ValueError(f"num_prompts={num_prompts} and prompts_per_step={prompts_per_step} must be >= 1, "
                         f"step={step} >= 0")
    start, stop = step * prompts_per_step, (step + 1) * prompts_per_step
    indices: list[int] = []
    for epoch in range(start // num_prompts, (stop - 1) // num_prompts + 1):
        order = np.random.default_rng([seed, epoch]).permutation(num_prompts)
        lo = max(start - epoch * num_prompts, 0)
        hi = min(stop - epoch * num_prompts, num_prompts)
        indices.extend(int(i) for i in order[lo:hi])
    return indices


def total_steps_for(num_prompts: int, prompts_per_step: int, epochs: float, max_steps: int) -> int:
    """Iterations of a run: ceil(epochs * num_prompts / prompts_per_step), or max_steps when > 0."""
    if max_steps > 0:
        return max_steps
    return max(1, math.ceil(epochs * num_prompts / prompts_per_step))


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the sampling RNG for one iteration on one process (distinct across both)."""
    return int(np.random.default_rng([seed, step, rank]).integers(2**31 - 1))


# --- learning-rate schedule ---

def lr_factor(step: int, kind: str, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate before optimizer step `step` (0-based).

    Linear warmup from 1/(warmup+1) to 1 over `warmup_steps`, then `constant` (1),
    `cosine` (half cosine to 0 at `total_steps`) or `linear` (to 0 at `total_steps`).
    Raises ValueError for another kind.
    """
    if kind not in ("constant", "cosine", "linear"):
        raise ValueError(f"lr_scheduler={kind!r} is not one of constant, cosine, linear")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def build_lr_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int,
                       total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over `lr_factor`; step it once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, kind, warmup_steps, total_steps))


# --- checkpoints ---

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


# --- metrics ---

class MetricsLogger:
    """metrics.jsonl (one JSON object per record, flushed at once) plus an optional tracker.

    report_to: "none", "tensorboard" (needs the tensorboard package) or "wandb" (needs wandb);
    the tracker is imported only when chosen, and a missing package raises ImportError with
    the install command. `resume_step` drops records after that step from an existing file,
    so a resumed run does not repeat steps. Only the main process should create one.
    """

    def __init__(self, output_dir: str, report_to: str = "none", resume_step: int | None = None,
                 run_config: dict | None = None):
        if report_to not in ("none", "tensorboard", "wandb"):
            raise ValueError(f"report_to={report_to!r} is not one of none, tensorboard, wandb")
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, "metrics.jsonl")
        if resume_step is None:
            open(self.path, "w", encoding="utf-8").close()
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            with open(self.path, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in kept)
        self.report_to = report_to
        self._tracker = _open_tracker(report_to, output_dir, run_config or {})

    def log(self, record: dict) -> None:
        """Append `record` (must hold "step"); numeric values also go to the tracker."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.report_to == "tensorboard":
            for key, value in numbers.items():
                self._tracker.add_scalar(key, value, record["step"])
            self._tracker.flush()
        elif self.report_to == "wandb":
            self._tracker.log(numbers, step=record["step"])

    def close(self) -> None:
        if self.report_to == "tensorboard":
            self._tracker.close()
        elif self.report_to == "wandb":
            self._tracker.finish()


def _open_tracker(report_to: str, output_dir: str, run_config: dict):
    if report_to == "none":
        return None
    try:
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(log_dir=os.path.join(output_dir, "tensorboard"))
        import wandb

        return wandb.init(project="apo-math", dir=output_dir, config=run_config)
    except ImportError as err:
        raise ImportError(f"--report_to {report_to} needs the {report_to} package: pip install {report_to} "
                          f"(or use --report_to none); {err}") from None


def read_metrics(path: str) -> list[dict]:
    """Records of a metrics.jsonl ([] when the file does not exist)."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def format_step_line(step: int, total: int, record: dict, accuracy: float | None) -> str:
    """The fixed-format progress line, e.g.
    `step 12/100 | loss 0.0431 | reward 0.412 | v* 0.38 | acc 0.30 | 812 ms/step`."""
    acc = "-" if accuracy is None else f"{accuracy:.2f}"
    loss = record.get("loss")
    loss_text = "nan" if loss is None else f"{loss:.4f}"
    return (f"step {step}/{total} | loss {loss_text} | reward {record['reward_mean']:.3f} | "
            f"v* {record['v_star_mean']:.2f} | acc {acc} | {1000 * record['seconds_per_step']:.0f} ms/step")


def plot_training_curves(metrics_path: str, png_path: str) -> str:
    """PNG of the stage-2 mean reward and the held-out greedy accuracy against step.

    Reads the "reward_mean" records and the "eval_accuracy" records of `metrics_path`.
    Returns `png_path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["reward_mean"]) for r in records if "reward_mean" in r]
    evals = [(r["step"], r["eval_accuracy"]) for r in records if "eval_accuracy" in r]
    figure, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train), label="train reward (mean, one sample per prompt)", alpha=0.7)
    if evals:
        axis.plot(*zip(*evals), marker="o", label="held-out greedy accuracy")
    axis.set_xlabel("step")
    axis.set_ylabel("reward / accuracy")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    axis.set_title("A*-PO stage 2")
    figure.tight_layout()
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return png_path


# --- stopping on Ctrl-C ---

class StopRequest:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks between steps (so it can
    write a checkpoint and exit cleanly); a second SIGINT raises KeyboardInterrupt at once.
    Use as a context manager; the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("received %s: finishing this step, writing a checkpoint, then exiting "
                       "(press Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the handlers alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# --- models and checkpoints of a run ---

class NonFiniteTrainingError(RuntimeError):
    """Raised when max_nonfinite_steps iterations in a row had a NaN/inf loss or gradient."""


def latest_or_none(output_dir: str) -> str | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def resolve_mixed_precision(value: str) -> str | None:
    """'auto' -> None when `accelerate launch` set it (its config wins), else 'bf16' on a GPU
    that supports bfloat16, else 'no'; other values pass through."""
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def build_models(apo, train, device: torch.device, resume_dir: str | None) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(policy, ref_model), both in eval mode on `device`.

    LoRA (apo.use_lora): the base model in apo.dtype with fresh adapters (or the adapters of
    `resume_dir`/adapter), and ref_model None: the reference is the policy with its adapters
    disabled. Full fine-tuning: the policy in float32 master weights when apo.dtype is 'auto'
    (bf16 autocast comes from the Accelerator; AdamW at lr 1e-6 would stall on bf16 weights),
    loaded from `resume_dir`/policy when resuming, plus a frozen reference copy in apo.dtype.
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    from model_loading import load_model

    torch.manual_seed(apo.seed)  # identical adapter initialisation on every process
    if apo.use_lora:
        base = load_model(apo.model, apo.model_cache_dir, dtype=apo.dtype, device=device)
        if resume_dir is not None:
            policy = PeftModel.from_pretrained(base, os.path.join(resume_dir, "adapter"), is_trainable=True)
        else:
            targets = apo.lora_target_modules
            lora = LoraConfig(r=apo.lora_r, lora_alpha=apo.lora_alpha, lora_dropout=apo.lora_dropout,
                              target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                              task_type="CAUSAL_LM")
            policy = get_peft_model(base, lora)
        ref_model = None
    else:
        source = os.path.join(resume_dir, "policy") if resume_dir is not None else apo.model
        policy = load_model(source, apo.model_cache_dir, dtype="float32" if apo.dtype == "auto" else apo.dtype,
                            device=device)
        ref_model = load_model(apo.model, apo.model_cache_dir, dtype=apo.dtype, device=device)
        ref_model.requires_grad_(False)
    if apo.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return policy.eval(), ref_model


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
        from apo_config import save_config

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
        from apo_config import write_json_atomic

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


def assert_ranks_in_sync(model: torch.nn.Module, accelerator) -> None:
    """Raise RuntimeError when the trainable parameters differ across processes (a broken
    all-reduce or a rank that skipped a step). Compares a float64 checksum of every trainable
    tensor; a no-op with one process."""
    if accelerator.num_processes == 1:
        return
    from accelerate.utils import gather_object

    checksum = [float(p.detach().double().sum()) + float(p.detach().double().abs().sum())
                for p in model.parameters() if p.requires_grad]
    every = gather_object([checksum])
    if any(other != every[0] for other in every[1:]):
        raise RuntimeError("trainable parameters differ across processes after an update; the processes are out "
                           "of step (check that every rank ran the same number of optimizer steps)")
