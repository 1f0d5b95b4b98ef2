"""Train a policy on MATH with two-stage A*-PO (Brantley et al., 2025, arXiv 2505.20686).

Stage 1 (offline, once): N samples per training prompt from the reference policy, graded,
give V*(x) = beta1 * log mean_i exp(r_i / beta1), written to `stage1_values.jsonl` as it goes
(a re-run skips finished prompts); a value head is fit to regress V* from the reference
policy's hidden state and its held-out error is reported.
Stage 2 (online): per iteration, one sample per prompt from the current policy, rewarded by
the grader, and the least-squares regression (beta2 * log(pi/pi_ref) - (r - V*))^2
(or the advantage-weighted LM loss); greedy held-out accuracy every `eval_every` steps,
resumable checkpoints, metrics.jsonl and a learning-curve PNG.

    python train_math_apo.py --data_file math_subset.jsonl --epochs 2
    python train_math_apo.py --data_file math_prompts_responses.jsonl --epochs 10
    python train_math_apo.py --config configs/embedded_smoke.yaml          # laptop CPU, minutes
    python train_math_apo.py --config configs/apo_paper_qwen2.5-1.5b.yaml --resume_from_checkpoint auto
    accelerate launch --config_file configs/accelerate_ddp.yaml train_math_apo.py \\
        --config configs/apo_paper_qwen2.5-1.5b.yaml        # the A*-PO paper (docs/REPRODUCING.md)
    accelerate launch --config_file configs/accelerate_ddp.yaml train_math_apo.py \\
        --config configs/pag_qwen2.5-1.5b-instruct.yaml     # PAG's episode, turns trained
    python -m torch.distributed.run --nproc_per_node 2 train_math_apo.py ...   # 2 CPU processes (gloo)
    python train_math_apo.py --config configs/apo_paper_qwen2.5-1.5b.yaml --generation_backend vllm  # GPU

Outputs under --output_dir: stage1_values.jsonl, value_head/, checkpoint-<step>/, best/
(highest held-out accuracy), final/ (loads with AutoModelForCausalLM.from_pretrained),
metrics.jsonl, training_curves.png. With `accelerate launch`, every process generates for
its share of the prompts, gradients are all-reduced, and only the main process writes.
The self-correction episodes of issue 6 (`--train_correction true`) go through the same
update: apo.correction turns each episode into per-turn samples and advantages.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, gather_object
from tqdm.auto import tqdm

from apo_algorithm import (
    PolicySample, advantage_weighted_loss, advantage_weights, apo_loss, collate_samples, masked_mean, reference_logps,
    response_token_logps,
)
from apo import correction, stage1, vllm_engine
from apo.checkpoints import (
    CheckpointWriter, TrainerState, check_resume_config, check_resume_data, claim_output_dir, latest_or_none,
    load_training_state, resolve_resume_checkpoint, save_run_config, skip_model_weights_in_accelerate_state,
    stage2_outputs_in,
)
from apo.cli import run_main
from apo.decoding import DecodingCopy, resolve_rollout_dtype
from apo.config import A_PO_Config, _require, config_to_dict, parse_script_config
from apo.data_order import prompt_indices_for_step, sample_seed, step_seed, total_steps_for
from apo.episodes import run_episodes
from apo.grading import GradingReport
from apo.errors import InputError
from apo.folder_lock import hold_output_folder
from apo.generation import generate, needs_whole_copy
from apo.models import build_models, load_tokenizer, resolve_dtype, resolve_mixed_precision, resolve_model_path
from apo.records import data_fingerprint, read_problem_rows
from apo.stop_signal import StopRequest
from apo.strict_grading import rewards_by_rule
from apo.training_log import MetricsLogger, format_step_line, plot_training_curves

logger = logging.getLogger("train_math_apo")

# transformers' schedule names for A_PO_Config.lr_scheduler (each with linear warmup over warmup_steps).
LR_SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


class NonFiniteTrainingError(RuntimeError):
    """Raised when max_nonfinite_steps iterations in a row had a NaN/inf loss or gradient."""


def assert_ranks_in_sync(model: torch.nn.Module, accelerator) -> None:
    """Raise RuntimeError when the trainable parameters differ across processes (a broken
    all-reduce or a rank that skipped a step). Compares a float64 checksum of every trainable
    tensor; a no-op with one process."""
    if accelerator.num_processes == 1:
        return
    checksum = [float(p.detach().double().sum()) + float(p.detach().double().abs().sum())
                for p in model.parameters() if p.requires_grad]
    every = gather_object([checksum])
    if any(other != every[0] for other in every[1:]):
        raise RuntimeError("trainable parameters differ across processes after an update; the processes are out "
                           "of step (check that every rank ran the same number of optimizer steps)")


def lr_scheduler_for(optimizer: torch.optim.Optimizer, apo: A_PO_Config, total_optimizer_steps: int):
    """transformers.get_scheduler for apo.lr_scheduler; step it once per optimizer step.

    The warmup is transformers': the factor before optimizer step s < warmup_steps is
    s / warmup_steps (0 at the first step), then 1 (constant) or a half cosine / a line to 0
    at `total_optimizer_steps`.
    """
    # Imported here, not at the top: transformers.optimization imports peft (about 2 s on a CPU),
    # which stage 1 and full fine-tuning never use.
    from transformers import get_scheduler

    return get_scheduler(LR_SCHEDULES[apo.lr_scheduler], optimizer, num_warmup_steps=apo.warmup_steps,
                         num_training_steps=total_optimizer_steps)


@dataclass
class TrainConfig:
    """Where the data comes from, how long stage 2 runs, and what is saved."""

    _argument_group_name = "train_math_apo.py"  # the --help section

    data_file: str = field(default="math_prompts_responses.jsonl", metadata={"help": (
        "Training prompts, JSONL rows {id, problem, answer, ...} written by prepare_data.py.")})
    eval_file: str = field(default="math_eval_500.jsonl", metadata={"help": (
        "Held-out problems for the greedy accuracy checks (its first eval_size rows).")})
    output_dir: str = field(default=os.path.join("outputs", "apo"), metadata={"help": "Where everything is written."})
    stage: Literal["all", "1", "2"] = field(default="all", metadata={"help": (
        "'1' = V* samples and value head only; '2' = policy training from an existing stage 1; 'all' = both.")})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training prompts in stage 2.",
                                                  "bounds": "[0, inf)"})
    max_steps: int = field(default=0, metadata={"help": "Stop stage 2 after this many iterations (0 = from epochs)."})
    step_count: Literal["stream", "official"] = field(default="stream", metadata={"help": (
        "How epochs become iterations (max_steps 0): 'stream' = ceil(epochs x N / prompts_per_step), prompts "
        "streaming across epochs; 'official' = A*-PO's official loop, epochs x floor(N / prompts_per_step) - 1 "
        "(its dataloader drops each epoch's partial batch; its step counter starts at 1). N = training prompts "
        "after the length filter. See apo/data_order.py.")})
    prompts_per_step: int = field(default=256, metadata={"help": (
        "Prompts per iteration, one sample each (paper: 256), over all processes.")})
    optimizer_steps_per_iteration: int = field(default=2, metadata={"help": (
        "Optimizer steps each iteration's samples are split into (paper: 2 steps of 128).")})
    micro_batch_size: int = field(default=8, metadata={"help": (
        "Sequences per forward/backward pass; gradients accumulate up to an optimizer step, normalised so the "
        "loss is the mean over the optimizer-step batch whatever this is.")})
    max_train_prompts: int = field(default=0, metadata={"help": "Use only the first N training prompts (0 = all)."})
    stage1_batch_size: int = field(default=16, metadata={"help": (
        "Prompts per stage-1 batch on each process (each expands to num_value_samples generations); "
        "an interrupted stage 1 loses at most one batch.")})
    save_stage1_responses: bool = field(default=False, metadata={"help": "Also store the N responses in stage1_values.jsonl."})
    value_batch_size: int = field(default=64, metadata={"help": "Mini-batch size of the value-head fit."})
    eval_every: int = field(default=25, metadata={"help": "Greedy held-out accuracy every N iterations (0 = only at the end)."})
    eval_size: int = field(default=200, metadata={"help": "Held-out problems per accuracy check (0 = the whole eval file)."})
    eval_at_start: bool = field(default=True, metadata={"help": "Measure the untrained policy's accuracy before step 1."})
    save_every: int = field(default=25, metadata={"help": "Write checkpoint-<step>/ every N iterations (and at the end)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Keep the newest N checkpoints (best/ is kept apart; 0 = all)."})
    resume_from_checkpoint: str = field(default="", metadata={"help": (
        "'' = start fresh, 'auto' = continue from the latest checkpoint in output_dir, or a checkpoint folder. "
        "A resume refuses settings that differ from the checkpoint's run_config.json and change the run.")})
    overwrite_output_dir: bool = field(default=False, metadata={"help": (
        "Let a fresh run use an output_dir that holds another run: its checkpoints, best/, final/, metrics and "
        "stage-1 values are removed first. Without it such a folder is refused.")})
    stop_after_step: int = field(default=0, metadata={"help": (
        "Write a checkpoint and exit after this iteration (e.g. to fit a job time limit); resume with "
        "--resume_from_checkpoint auto (0 = run to the end).")})
    max_nonfinite_steps: int = field(default=3, metadata={"help": (
        "Stop when this many iterations in a row had a NaN/inf loss or gradient (such steps are skipped).")})
    report_to: Literal["none", "tensorboard", "wandb"] = field(default="none", metadata={"help": "Metrics tracker besides metrics.jsonl."})
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(default="auto", metadata={"help": (
        "'auto' = the accelerate config's setting, else bf16 autocast on a GPU that has it or on a CPU with bfloat16 "
        "instructions (avx512_bf16 / amx_bf16; TRL's default too), else none. Master weights, optimizer state and "
        "the log-softmax stay float32.")})

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "optimizer_steps_per_iteration", "micro_batch_size", "stage1_batch_size",
                     "value_batch_size", "max_nonfinite_steps"):
            _require(self, name, getattr(self, name) >= 1, "use a positive integer")
        for name in ("max_steps", "max_train_prompts", "eval_every", "eval_size", "save_every", "keep_checkpoints",
                     "stop_after_step"):
            _require(self, name, getattr(self, name) >= 0, "use 0 or a positive integer")
        _require(self, "epochs", self.epochs > 0 or self.max_steps > 0, "use a positive number of epochs or set max_steps")
        _require(self, "epochs", self.step_count != "official" or self.max_steps > 0 or self.epochs == int(self.epochs),
                 "step_count 'official' counts whole epochs: use a whole number or step_count stream")
        _require(self, "prompts_per_step", self.prompts_per_step % self.optimizer_steps_per_iteration == 0,
                 "use a multiple of optimizer_steps_per_iteration")
        _require(self, "overwrite_output_dir", not (self.overwrite_output_dir and self.resume_from_checkpoint),
                 "give --resume_from_checkpoint to continue a run or --overwrite_output_dir to replace it, not both")


@dataclass
class Run:
    """The objects every stage shares (built once in main)."""

    apo: A_PO_Config
    train: TrainConfig
    accelerator: Accelerator
    tokenizer: Any
    policy: torch.nn.Module
    ref_model: torch.nn.Module | None
    grading: GradingReport
    correction: Any  # apo.correction.CorrectionTrainingConfig: turn baselines, collapse guard, advantages
    resume_dir: str | None = None  # the checkpoint stage 2 continues from
    data_hashes: dict = field(default_factory=dict)  # saved in run_config.json (apo.checkpoints.save_run_config)
    engine: Any = None  # apo.vllm_engine.VLLMEngine (--generation_backend vllm) or apo.decoding.DecodingCopy

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.policy)

    @property
    def generator(self):
        """What samples from the current policy: the vLLM engine or the decoding copy (kept in step
        with the policy by `update_policy`), else the policy itself."""
        return self.engine if self.engine is not None else self.unwrapped

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


# --- rollouts ---

def sample_attempts(run: Run, prompts: list[list[int]], golds: list[str], v_star: list[float],
                    seeds: list[int] | None = None) -> dict:
    """One response per prompt from the current policy (prompt i from the random stream of
    `seeds[i]`, apo.generation), rewarded 1 when correct under apo.reward_rule (never when truncated).

    Returns {"samples": [PolicySample], "advantages": [r - V*], "response_tokens", "truncated",
    "generation_s", "scoring_s"}.
    """
    start = time.perf_counter()
    run.policy.eval()
    generations = generate(run.generator, run.tokenizer, prompts, max_new_tokens=run.apo.max_new_tokens,
                           temperature=run.apo.temperature, top_p=run.apo.top_p,
                           batch_size=run.apo.generation_batch_size, seeds=seeds)
    generated = time.perf_counter()
    correct = rewards_by_rule([g.text for g in generations], golds, [g.truncated for g in generations], run.apo,
                              run.grading)
    rewards = [float(ok) for ok in correct]
    samples = [PolicySample(g.prompt_ids, g.response_ids, r, v, "attempt", g.truncated)
               for g, r, v in zip(generations, rewards, v_star)]
    return {"samples": samples, "advantages": [r - v for r, v in zip(rewards, v_star)],
            "response_tokens": [len(g.response_ids) for g in generations],
            "truncated": [g.truncated for g in generations], "turn_metrics": {},
            "generation_s": generated - start, "scoring_s": time.perf_counter() - generated}


def sample_episodes(run: Run, rows: list[dict], v_star: list[float], turn_baselines,
                    seeds: list[int] | None = None) -> dict:
    """Self-correction episodes (PAG) turned into per-turn samples by apo.correction
    (issue 6); advantages are role-normalised there (centred per group first with
    `center_turn_advantages`), with the statistics of the whole batch over all processes,
    or left at r - b with `normalize_turn_advantages` false, and replace r - V* in the loss."""
    start = time.perf_counter()
    run.policy.eval()
    episodes = run_episodes(run.generator, run.tokenizer, [r["problem"] for r in rows], run.apo,
                            unparsed_verdict_revises=False, seeds=seeds)
    generated = time.perf_counter()
    samples, turn_metrics = correction.correction_samples(
        episodes, [r["answer"] for r in rows], v_star, turn_baselines, run.unwrapped, run.tokenizer, run.apo,
        run.grading, problem_rows=rows)
    verdicts = [correction.said_verdict(turn) if turn.role == "verify" else None
                for episode in episodes for turn in episode.turns]  # aligned with samples: episode, then turn order
    if run.correction.balance_verify_truth:  # as many verify turns of right attempts as of wrong ones
        kept = correction.balanced_verify_subset(samples)
        samples, verdicts = [samples[i] for i in kept], [verdicts[i] for i in kept]
    if run.correction.counterfactual_verdicts:  # and the verdicts they did not say
        samples = correction.counterfactual_verdict_samples(samples, verdicts, run.tokenizer)
    if run.correction.balance_verify_truth or run.correction.counterfactual_verdicts:
        turn_metrics["num_samples/verify_trained"] = float(sum(s.role == "verify" for s in samples))
    device = run.accelerator.device  # NCCL reduces tensors on the GPU
    if run.correction.normalize_turn_advantages:
        advantages = [float(a) for a in correction.role_normalized_advantages(  # statistics over all processes
            samples, center=run.correction.center_turn_advantages,
            reduce_sum=lambda stats: run.accelerator.reduce(stats.to(device), reduction="sum"))]
    else:
        advantages = [s.reward - s.baseline for s in samples]  # r - b, single-turn A*-PO's scale
    return {"samples": samples, "advantages": advantages, "response_tokens": [len(s.response_ids) for s in samples],
            "truncated": [s.truncated for s in samples], "turn_metrics": dict(turn_metrics),
            "generation_s": generated - start, "scoring_s": time.perf_counter() - generated}


# --- the policy update ---

def scoring_temperature(rollout_temperature: float) -> float:
    """The temperature the trainer divides logits by when it scores its own samples: the rollout
    temperature, or 1.0 for greedy rollouts (temperature 0 has no sampling distribution)."""
    return rollout_temperature if rollout_temperature > 0 else 1.0


def micro_batches(items: list, count: int) -> list[list]:
    """Split `items` into `count` contiguous parts of near-equal size (some empty if too few)."""
    return [list(part) for part in np.array_split(np.arange(len(items)), count)] if items else [[] for _ in range(count)]


def update_policy(run: Run, optimizer, scheduler, samples: list[PolicySample], advantages: list[float],
                  state: TrainerState) -> dict:
    """Optimizer steps on this process's `samples` (all processes call it together).

    The samples are cut into `optimizer_steps_per_iteration` chunks; each chunk is one
    optimizer step, its gradient accumulated over micro-batches and all-reduced once. Each
    micro-batch's loss is scaled by len(micro-batch) * world_size / (chunk size over all
    processes), so the gradient is that of the mean loss over the whole chunk, whatever the
    micro-batch size or process count. Loss: `apo_loss` with rewards = advantages and V* = 0
    (identical to r - V*), or the advantage-weighted NLL with weights taken over the whole
    chunk; minus entropy_coef * token-mean entropy. The policy and reference log-probs and the
    entropy are computed at the rollout temperature (`scoring_temperature`), as the official
    A*-PO code and TRL do, so they describe the distribution the samples (first attempts and
    every self-correction turn alike) came from. A chunk whose loss or gradient norm is
    not finite is skipped (no optimizer or scheduler step). Returns the step's metrics.
    """
    accelerator, apo, world = run.accelerator, run.apo, run.accelerator.num_processes
    pad_id = run.tokenizer.pad_token_id
    temperature = scoring_temperature(apo.temperature)
    chunks = micro_batches(samples, run.train.optimizer_steps_per_iteration)
    totals = {"loss_sum": 0.0, "log_ratios": [], "entropy_sum": 0.0, "entropy_tokens": 0, "grad_norms": [],
              "skipped": 0, "scoring_s": 0.0, "lr": scheduler.get_last_lr()[0]}
    run.policy.train()
    for chunk in chunks:
        chunk_samples = [samples[i] for i in chunk]
        chunk_advantages = torch.tensor([advantages[i] for i in chunk], dtype=torch.float32)
        sizes = gather_object([len(chunk)])
        rank_offset = sum(sizes[:accelerator.process_index])
        weights = None
        if apo.policy_loss == "awr":  # softmax over the whole chunk, all processes
            everything = torch.tensor(gather_object(chunk_advantages.tolist()))
            weights = advantage_weights(everything, apo.advantage_temperature, apo.advantage_clip)
            weights = weights[rank_offset:rank_offset + len(chunk)]
        # The same number of micro-batches on every process (FSDP gathers weights per forward).
        parts = max(gather_object([-(-len(chunk) // run.train.micro_batch_size)]))
        chunk_finite = True
        for index, part in enumerate(micro_batches(chunk_samples, parts)):
            scale = len(part) * world / sum(sizes)
            if not part:  # too few samples here: a zero-weight pass keeps the collectives in step
                part, scale = [0], 0.0
            batch = collate_samples([chunk_samples[i] for i in part], pad_id)
            part_advantages = chunk_advantages[part]
            started = time.perf_counter()
            with accelerator.autocast():  # the same precision as the policy's pass below
                ref_logps = reference_logps(run.unwrapped, run.ref_model, batch, temperature=temperature)
            totals["scoring_s"] += time.perf_counter() - started
            sync = index == parts - 1
            with (accelerator.no_sync(run.policy) if not sync else contextlib.nullcontext()):
                out = response_token_logps(run.policy, batch["prompt_ids"], batch["prompt_mask"],
                                           batch["response_ids"], batch["response_mask"], with_entropy=True,
                                           temperature=temperature)
                policy_logps = out.token_logps.sum(dim=-1)  # (B,)
                ref_logps = ref_logps.to(policy_logps.device)
                if apo.policy_loss == "apo":
                    loss = apo_loss(policy_logps, ref_logps, part_advantages.to(policy_logps.device),
                                    torch.zeros_like(policy_logps), apo.beta2)
                else:
                    loss = advantage_weighted_loss(out.token_logps, out.response_mask, weights[part])
                entropy = masked_mean(out.entropy, out.response_mask)
                accelerator.backward((loss - apo.entropy_coef * entropy) * scale)
            chunk_finite &= bool(torch.isfinite(loss.detach()))
            if scale > 0:
                totals["loss_sum"] += float(loss.detach()) * len(part)
                totals["log_ratios"] += (policy_logps.detach() - ref_logps).float().cpu().tolist()
                tokens = int(out.response_mask.sum())
                totals["entropy_sum"] += float(entropy.detach()) * tokens
                totals["entropy_tokens"] += tokens
        grad_norm = accelerator.clip_grad_norm_(run.policy.parameters(), apo.max_grad_norm)
        grad_norm = float("nan") if grad_norm is None else float(grad_norm)
        stepped = all(gather_object([chunk_finite])) and np.isfinite(grad_norm)
        if stepped:
            optimizer.step()
            scheduler.step()
            state.optimizer_step += 1
            totals["grad_norms"].append(grad_norm)
        else:
            totals["skipped"] += 1
        if run.engine is not None and weights_may_have_changed(accelerator, stepped):
            run.engine.sync_weights(run.unwrapped, accelerator)  # the next rollout samples the policy as it is now
        optimizer.zero_grad(set_to_none=True)
    run.policy.eval()
    return totals


def weights_may_have_changed(accelerator, stepped: bool) -> bool:
    """Whether the policy's weights may differ from the rollout engine's after an optimizer step:
    when the trainer stepped, and always under DeepSpeed, which steps its optimizer inside
    `accelerator.backward`, before the trainer sees the gradient norm and counts a step as skipped."""
    return stepped or accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Accelerator, cfg: TrainConfig, apo: A_PO_Config) -> None:
    """DeepSpeed steps its optimizer inside every synced backward, so the trainer's own
    micro-batch accumulation cannot run under it: require one micro-batch per optimizer step
    and tell the engine its size. Raises InputError naming the settings otherwise."""
    per_step = cfg.prompts_per_step // (accelerator.num_processes * cfg.optimizer_steps_per_iteration)
    if apo.train_correction or cfg.micro_batch_size < per_step:
        raise InputError(f"under DeepSpeed each optimizer step must be one micro-batch: set micro_batch_size >= "
                         f"{per_step} (prompts_per_step / (num_processes x optimizer_steps_per_iteration)) and "
                         "train_correction false, or use the DDP config (FSDP too without train_correction), whose "
                         "accumulation is the trainer's")
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    ds_config["train_micro_batch_size_per_gpu"] = per_step
    ds_config["gradient_accumulation_steps"] = 1


# --- evaluation ---

def evaluate_accuracy(run: Run, prompts: list[list[int]], golds: list[str]) -> dict:
    """Greedy first-attempt accuracy on held-out problems under apo.reward_rule ('grade' grades a
    truncated answer too, as evaluate_apo does; 'boxed_exact' requires the EOS); each process takes a share and the counts are summed. Returns {"eval_accuracy", "eval_correct", "eval_total",
    "eval_truncation_rate"}."""
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    mine = list(range(rank, len(prompts), world))
    run.policy.eval()
    generations = generate(run.generator, run.tokenizer, [prompts[i] for i in mine],
                           max_new_tokens=run.apo.max_new_tokens, temperature=0.0, top_p=1.0,
                           batch_size=run.apo.generation_batch_size) if mine else []
    correct = rewards_by_rule([g.text for g in generations], [golds[i] for i in mine],
                              [g.truncated for g in generations], run.apo, run.grading, grade_truncated=True)
    counts = gather_object([(sum(correct), len(mine), sum(g.truncated for g in generations))])
    total = sum(c[1] for c in counts)
    return {"eval_accuracy": sum(c[0] for c in counts) / total, "eval_correct": sum(c[0] for c in counts),
            "eval_total": total, "eval_truncation_rate": sum(c[2] for c in counts) / total}


# --- stage 2 ---

@dataclass
class Stage2:
    """What the stage-2 loop carries from step to step (built by `start_stage2`)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    turn_baselines: Any  # apo.correction.TurnBaselines when train_correction, else None
    state: TrainerState
    metrics: MetricsLogger | None  # main process only
    saver: CheckpointWriter
    total_steps: int


def start_stage2(run: Run, num_train_prompts: int, value_head, resume_dir: str | None) -> Stage2:
    """Optimizer, schedule and turn baselines prepared with the Accelerator, restored from
    `resume_dir` when given; the metrics file and the checkpoint writer."""
    apo, cfg, accelerator = run.apo, run.train, run.accelerator
    world = accelerator.num_processes
    if cfg.prompts_per_step % (world * cfg.optimizer_steps_per_iteration):
        raise InputError(f"prompts_per_step={cfg.prompts_per_step} must be a multiple of num_processes ({world}) "
                         f"x optimizer_steps_per_iteration ({cfg.optimizer_steps_per_iteration})")
    total_steps = total_steps_for(num_train_prompts, cfg.prompts_per_step, cfg.epochs, cfg.max_steps, cfg.step_count)
    trainable = [p for p in run.policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=apo.policy_learning_rate, weight_decay=apo.weight_decay)
    scheduler = lr_scheduler_for(optimizer, apo, total_steps * cfg.optimizer_steps_per_iteration)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator, cfg, apo)
    run.policy, optimizer = accelerator.prepare(run.policy, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    turn_baselines = None
    if apo.train_correction:
        turn_baselines = correction.TurnBaselines(apo, run.unwrapped.config.hidden_size, run.correction)
        accelerator.register_for_checkpointing(turn_baselines)
    skip_model_weights_in_accelerate_state(accelerator)

    state = TrainerState()
    if resume_dir is not None:
        state = load_training_state(accelerator, resume_dir)
        logger.info("resumed from %s at step %d", resume_dir, state.step)
    if run.engine is not None:  # from pi_ref (stage 1) to the policy, which differs when resumed
        run.engine.sync_weights(run.unwrapped, accelerator)
    metrics = MetricsLogger(cfg.output_dir, cfg.report_to, resume_step=state.step if resume_dir else None,
                            run_config={**vars(apo), **vars(cfg)}) if run.is_main else None
    return Stage2(optimizer, scheduler, turn_baselines, state, metrics, CheckpointWriter(run, value_head), total_steps)


def train_stage2(run: Run, train_rows: list[dict], train_prompts: list[list[int]], v_star: list[float],
                 eval_prompts: list[list[int]], eval_golds: list[str], value_head, resume_dir: str | None) -> dict:
    """The online loop: per iteration one rollout per prompt, the update, the step line; held-out
    accuracy and checkpoints on schedule; then final/ and the learning curve. Returns a summary."""
    cfg = run.train
    loop = start_stage2(run, len(train_rows), value_head, resume_dir)
    state = loop.state
    summary: dict = {"interrupted": False, "initial_accuracy": None}
    if cfg.eval_at_start and state.step == 0 and eval_prompts:
        summary["initial_accuracy"] = check_accuracy(run, loop, eval_prompts, eval_golds, save_best=False)

    bar = tqdm(total=loop.total_steps, initial=state.step, desc="stage 2", unit="step", disable=not run.is_main)
    with StopRequest() as stop:
        while state.step < loop.total_steps:
            if any(gather_object([stop.requested])):
                loop.saver.save_checkpoint(state)
                summary["interrupted"] = True
                break
            record = train_one_step(run, loop, train_rows, train_prompts, v_star)
            if loop.metrics:
                loop.metrics.log(record)
                bar.update(1)
                tqdm.write(format_step_line(state.step, loop.total_steps, record, state.last_accuracy))
            stop_if_diverged(cfg, state)
            last = state.step == loop.total_steps
            if (cfg.eval_every and state.step % cfg.eval_every == 0) or last:
                check_accuracy(run, loop, eval_prompts, eval_golds, save_best=True)
            pause = cfg.stop_after_step and state.step >= cfg.stop_after_step and not last
            if (cfg.save_every and state.step % cfg.save_every == 0) or last or pause:
                loop.saver.save_checkpoint(state)
            if pause:
                summary["interrupted"] = True
                break
    bar.close()
    return finish_stage2(run, loop, summary)


def train_one_step(run: Run, loop: Stage2, train_rows: list[dict], train_prompts: list[list[int]],
                   v_star: list[float]) -> dict:
    """One iteration: this process's share of the step's prompts, one rollout each (or one
    self-correction episode), the policy update, the trainer state advanced. Returns the
    step's metrics.jsonl record (docs/METRICS.md)."""
    apo, cfg, state = run.apo, run.train, loop.state
    rank, world = run.accelerator.process_index, run.accelerator.num_processes
    step = state.step
    started = time.perf_counter()
    positions = range(rank, cfg.prompts_per_step, world)  # this process's share of the step's prompts
    indices = [prompt_indices_for_step(len(train_rows), cfg.prompts_per_step, step, apo.seed)[p] for p in positions]
    seeds = [sample_seed(apo.seed, step, p) for p in positions]  # the same samples on any number of processes
    torch.manual_seed(step_seed(apo.seed, step, rank))
    step_v_star = [v_star[i] for i in indices]
    timeouts_before = run.grading.timeouts
    if apo.train_correction:
        rollout = sample_episodes(run, [train_rows[i] for i in indices], step_v_star, loop.turn_baselines, seeds)
    else:
        rollout = sample_attempts(run, [train_prompts[i] for i in indices], [train_rows[i]["answer"] for i in indices],
                                  step_v_star, seeds)
    update_started = time.perf_counter()
    update = update_policy(run, loop.optimizer, loop.scheduler, rollout["samples"], rollout["advantages"], state)
    finished = time.perf_counter()
    if step == 0 or (cfg.save_every and (step + 1) % cfg.save_every == 0):
        assert_ranks_in_sync(run.policy, run.accelerator)

    state.step, state.prompts_seen = step + 1, (step + 1) * cfg.prompts_per_step
    state.epoch = state.prompts_seen // len(train_rows)
    state.nonfinite_steps += update["skipped"]
    state.consecutive_nonfinite = state.consecutive_nonfinite + 1 if update["skipped"] else 0
    return step_record(run, state, rollout, update, step_v_star, started, update_started, finished,
                       run.grading.timeouts - timeouts_before)


def stop_if_diverged(cfg: TrainConfig, state: TrainerState) -> None:
    """Raise NonFiniteTrainingError after max_nonfinite_steps non-finite iterations in a row."""
    if state.consecutive_nonfinite >= cfg.max_nonfinite_steps:
        raise NonFiniteTrainingError(
            f"{state.consecutive_nonfinite} iterations in a row had a non-finite loss or gradient norm "
            f"(max_nonfinite_steps={cfg.max_nonfinite_steps}); stopped without saving this state. The last "
            f"good checkpoint is {latest_or_none(cfg.output_dir)}; lower the learning rate or "
            f"check the data, then resume from it.")


def check_accuracy(run: Run, loop: Stage2, eval_prompts: list[list[int]], eval_golds: list[str],
                   save_best: bool) -> float:
    """Greedy held-out accuracy now, logged at the current step; with save_best, best/ is
    rewritten when it beats the best so far. Returns the accuracy."""
    state = loop.state
    result = evaluate_accuracy(run, eval_prompts, eval_golds)
    state.last_accuracy = result["eval_accuracy"]
    if save_best and (state.best_accuracy is None or result["eval_accuracy"] > state.best_accuracy):
        state.best_accuracy, state.best_step = result["eval_accuracy"], state.step
        loop.saver.save_best(state, result)
    if loop.metrics:
        loop.metrics.log({"step": state.step, **result})
        if state.step == 0:
            logger.info("step 0 | held-out greedy accuracy %.3f (%d/%d)", result["eval_accuracy"],
                        result["eval_correct"], result["eval_total"])
    return result["eval_accuracy"]


def finish_stage2(run: Run, loop: Stage2, summary: dict) -> dict:
    """final/ (unless interrupted), the learning-curve PNG, and the run's summary numbers."""
    state = loop.state
    if not summary["interrupted"]:
        summary["final_dir"] = loop.saver.save_final(state)
    if loop.metrics:
        loop.metrics.close()
        summary["plot"] = plot_training_curves(loop.metrics.path,
                                               os.path.join(run.train.output_dir, "training_curves.png"))
        summary["metrics_file"] = loop.metrics.path
    summary.update(steps=state.step, total_steps=loop.total_steps, final_accuracy=state.last_accuracy,
                   best_accuracy=state.best_accuracy, best_step=state.best_step,
                   nonfinite_steps=state.nonfinite_steps, optimizer_steps=state.optimizer_step)
    return summary


def step_record(run: Run, state: TrainerState, rollout: dict, update: dict, v_star: list[float], started: float,
                update_started: float, finished: float, grading_timeouts: int) -> dict:
    """The metrics.jsonl record of one iteration, aggregated over all processes (per-sample
    values pooled; the self-correction turn metrics are the mean of the per-process values)."""
    samples = rollout["samples"]
    local = {
        "rewards": [s.reward for s in samples if s.role == "attempt"], "v_star": v_star,
        "advantages": rollout["advantages"], "log_ratios": update["log_ratios"],
        "response_tokens": rollout["response_tokens"], "truncated": rollout["truncated"],
        "loss_sum": update["loss_sum"], "entropy_sum": update["entropy_sum"],
        "entropy_tokens": update["entropy_tokens"], "turn_metrics": rollout["turn_metrics"],
    }
    every = gather_object([local])

    def joined(key: str) -> np.ndarray:
        return np.array([x for part in every for x in part[key]], dtype=np.float64)

    advantages, seconds = joined("advantages"), finished - started
    record = {
        "step": state.step, "epoch": state.epoch, "optimizer_step": state.optimizer_step,
        "loss": sum(p["loss_sum"] for p in every) / max(1, len(advantages)),
        "reward_mean": float(joined("rewards").mean()), "v_star_mean": float(joined("v_star").mean()),
        "advantage_mean": float(advantages.mean()), "advantage_std": float(advantages.std()),
        "log_ratio_mean": float(joined("log_ratios").mean()),
        "entropy": sum(p["entropy_sum"] for p in every) / max(1, sum(p["entropy_tokens"] for p in every)),
        "response_length": float(joined("response_tokens").mean()),
        "truncation_rate": float(joined("truncated").mean()),
        "grad_norm": float(np.mean(update["grad_norms"])) if update["grad_norms"] else float("nan"),
        "lr": update["lr"], "skipped_steps": update["skipped"],
        "generated_tokens_per_s": float(joined("response_tokens").sum()) / max(rollout["generation_s"], 1e-9),
        "generation_s": rollout["generation_s"], "scoring_s": rollout["scoring_s"] + update["scoring_s"],
        "update_s": finished - update_started - update["scoring_s"], "seconds_per_step": seconds,
        "grading_timeouts": grading_timeouts, "num_samples": len(advantages),
    }
    for key in {k for part in every for k in part["turn_metrics"]}:
        values = [p["turn_metrics"][key] for p in every if key in p["turn_metrics"]]
        record[key] = float(np.mean(values))
    return record


# --- main ---

@dataclass
class Prompts:
    """The training prompts and the held-out slice, tokenised (prompts longer than
    max_prompt_length already dropped)."""

    all_ids: set[str]  # every id of the data file, to check stage-1 values against
    train_rows: list[dict]
    train_prompts: list[list[int]]
    eval_rows: list[dict]
    eval_prompts: list[list[int]]


@contextlib.contextmanager
def hold_output_dir(output_dir: str, accelerator: Accelerator):
    """apo.folder_lock.hold_output_folder on the main process; a refusal there is raised on every
    process, so none waits for a main process that stopped."""
    refusal = None
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold_output_folder(output_dir, is_main=accelerator.is_main_process))
        except InputError as err:
            refusal = str(err)
        refusals = [message for message in gather_object([refusal]) if message]
        if refusals:
            raise InputError(refusals[0])
        yield


def check_run_inputs(cfg: tuple, accelerator: Accelerator,
                     folder_lock: contextlib.ExitStack) -> tuple[list[dict], list[dict], str | None, dict]:
    """(training rows, held-out rows, checkpoint to resume from or None, the content hash of each
    data file (apo.records.data_fingerprint)), after locking
    output_dir for this run (held until `folder_lock` closes; apo.folder_lock), claiming it and
    saving its run_config.json; all before any model loads.

    Raises InputError for an empty or malformed data file (naming file and line), an output_dir
    that is a file or holds another run (apo.checkpoints.claim_output_dir), or a resume whose
    settings or data differ from the checkpoint's (apo.checkpoints.check_resume_config,
    check_resume_data; stage-1 values of other data: apo.stage1.stage1_conflict). With
    resume_from_checkpoint 'auto' and no checkpoint yet, a run that stopped before its first
    checkpoint starts over from step 0 when output_dir/run_config.json has the same settings.
    """
    apo, train = cfg[0], cfg[1]
    all_rows = read_problem_rows(train.data_file, require_answer=True)
    eval_rows = read_problem_rows(train.eval_file, require_answer=True) if train.stage != "1" else []
    data_files = {"data_file": (train.data_file, all_rows)}
    data_files.update({"eval_file": (train.eval_file, eval_rows)} if train.stage != "1" else {})
    folder_lock.enter_context(hold_output_dir(train.output_dir, accelerator))
    resume_dir = resolve_resume_checkpoint(train.output_dir, train.resume_from_checkpoint) if train.stage != "1" else None
    # 'auto' in a folder whose run stopped before its first checkpoint: that run starts over, if it is the same run.
    restart = (train.stage != "1" and train.resume_from_checkpoint == "auto" and resume_dir is None
               and bool(stage2_outputs_in(train.output_dir)))
    conflict = stage1.stage1_conflict(os.path.join(train.output_dir, stage1.STAGE1_FILE), apo,
                                      {row["id"] for row in all_rows}, data_files["data_file"])
    accelerator.wait_for_everyone()
    claim_output_dir(train.output_dir, resuming=resume_dir is not None or restart,
                     overwrite=train.overwrite_output_dir, stage1_conflict=conflict, is_main=accelerator.is_main_process)
    if resume_dir is not None or restart:
        check_resume_config(resume_dir or train.output_dir, config_to_dict(*cfg))
        check_resume_data(resume_dir or train.output_dir, data_files)
    accelerator.wait_for_everyone()
    data_hashes = {key: data_fingerprint(path, rows) for key, (path, rows) in data_files.items()}
    if accelerator.is_main_process:
        save_run_config(os.path.join(train.output_dir, "run_config.json"), cfg, data_hashes)
    return all_rows, eval_rows, resume_dir, data_hashes


def load_prompts(apo: A_PO_Config, train: TrainConfig, all_rows: list[dict], eval_rows: list[dict], tokenizer,
                 summary: dict) -> Prompts:
    """Tokenise the training rows (the first max_train_prompts) and, for stage 2, the first
    eval_size held-out rows; the ids of dropped prompts and their counts go into `summary`."""
    train_rows = all_rows[:train.max_train_prompts] if train.max_train_prompts else all_rows
    train_rows, train_prompts, dropped = stage1.encode_problems(train_rows, tokenizer, apo)
    summary["dropped_long_prompts"], summary["dropped_long_prompt_ids"] = len(dropped), dropped
    eval_rows = eval_rows[:train.eval_size] if train.eval_size else eval_rows
    eval_rows, eval_prompts, dropped = stage1.encode_problems(eval_rows, tokenizer, apo)
    summary["dropped_long_eval_prompts"], summary["dropped_long_eval_prompt_ids"] = len(dropped), dropped
    if train.stage != "1" and not eval_rows:
        raise InputError(f"{train.eval_file}: no held-out problem left (eval_size={train.eval_size}, "
                         f"max_prompt_length={apo.max_prompt_length}); stage 2 needs some to measure accuracy")
    if not train_rows:
        raise InputError(f"{train.data_file}: every training prompt is longer than max_prompt_length="
                         f"{apo.max_prompt_length} tokens; raise --max_prompt_length")
    return Prompts({r["id"] for r in all_rows}, train_rows, train_prompts, eval_rows, eval_prompts)


def start_accelerator(train: TrainConfig) -> Accelerator:
    """The Accelerator (gloo on CPU processes) and logging for this process."""
    # Without CUDA, accelerate only sets up gloo process groups when told to use the CPU; its DeepSpeed path
    # ignores cpu=True and needs the backend named instead.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    deepspeed_on_cpu = multi_cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(train.mixed_precision),
                              cpu=multi_cpu and not deepspeed_on_cpu,
                              kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if deepspeed_on_cpu else None)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return accelerator


def build_run(apo: A_PO_Config, train: TrainConfig, turn_cfg: correction.CorrectionTrainingConfig,
              accelerator: Accelerator, tokenizer, resume_dir: str | None) -> Run:
    """The policy (LoRA or full) and its frozen reference, resumed from `resume_dir` in stage 2,
    with everything the stages share."""
    policy, ref_model = build_models(apo, train, accelerator.device, resume_dir)
    run = Run(apo, train, accelerator, tokenizer, policy, ref_model, GradingReport(), turn_cfg, resume_dir)
    if apo.generation_backend == "vllm":  # holds the model folder's weights, i.e. pi_ref, until stage 2 syncs
        run.engine = vllm_engine.create_engine(resolve_model_path(apo.model, apo.model_cache_dir), apo,
                                               accelerator=accelerator, trainable=True)
    elif ((dtype := resolve_rollout_dtype(apo.rollout_dtype, run.unwrapped.dtype, accelerator.device)) is not None
          or needs_whole_copy(accelerator)):
        # the model folder's weights in `dtype`, i.e. pi_ref, until stage 2 syncs; the policy scores every sample.
        # Under FSDP / ZeRO-3 always: a sharded policy cannot decode (apo.generation), its whole copy can.
        run.engine = DecodingCopy(resolve_model_path(apo.model, apo.model_cache_dir),
                                  dtype or resolve_dtype(apo.dtype, accelerator.device), accelerator.device)
    return run


def main(cfg: tuple) -> dict:
    """Run the stages chosen by `train.stage` for cfg = (A_PO_Config, TrainConfig) or
    (A_PO_Config, TrainConfig, CorrectionTrainingConfig); returns a summary dict of paths and
    final metrics (accuracy before and after, value-head error, counts and ids of dropped prompts)."""
    apo, train = cfg[0], cfg[1]
    turn_cfg = cfg[2] if len(cfg) > 2 else correction.CorrectionTrainingConfig()
    if apo.generation_backend == "vllm":
        vllm_engine.require_vllm()  # before anything is loaded
    summary: dict[str, Any] = {"output_dir": train.output_dir}
    accelerator = start_accelerator(train)
    if apo.generation_backend == "vllm" and apo.use_lora and accelerator.distributed_type == DistributedType.FSDP:
        raise InputError("generation_backend=vllm with use_lora=true under FSDP is not supported: adapters cannot be "
                         "merged into sharded weights for the engine; use the DDP or ZeRO configs")
    if turn_cfg.counterfactual_verdicts and apo.verify_reward != "match":
        raise InputError(f"counterfactual_verdicts=true needs verify_reward=match (got {apo.verify_reward!r}): the "
                         "reward of a verdict not said is known without sampling only under match")
    if apo.train_correction and accelerator.distributed_type == DistributedType.FSDP:
        raise InputError("train_correction=true under FSDP is not supported: the turn baselines run the sharded policy "
                         "on each process's own number of turns; use the DDP config")

    with contextlib.ExitStack() as folder_lock:  # held to the end: one run per output folder
        # --- data, output folder and resume settings: checked before any model loads ---
        all_rows, eval_rows, resume_dir, data_hashes = check_run_inputs((apo, train, turn_cfg), accelerator,
                                                                        folder_lock)
        tokenizer = load_tokenizer(apo.model, apo.model_cache_dir)
        data = load_prompts(apo, train, all_rows, eval_rows, tokenizer, summary)

        # --- models: the policy (optionally LoRA) and its frozen reference ---
        run = build_run(apo, train, turn_cfg, accelerator, tokenizer, resume_dir)
        run.data_hashes = data_hashes

        # --- stage 1: V* from N reference samples, then the value head ---
        stage1_path = os.path.join(train.output_dir, stage1.STAGE1_FILE)
        if train.stage in ("all", "1"):
            stage1.run_stage1(run, data.train_rows, data.train_prompts, stage1_path)
        records = stage1.load_stage1(stage1_path, data.all_ids, [r["id"] for r in data.train_rows], apo)
        summary["stage1_values"] = stage1_path
        value_head, summary["value_head_metrics"] = stage1.ensure_value_head(run, data.train_rows, data.train_prompts,
                                                                             records)
        summary["value_head"] = os.path.join(train.output_dir, stage1.VALUE_HEAD_DIR)
        if train.stage == "1":
            return summary

        # --- stage 2: online A*-PO, one sample per prompt, baselines from stage 1 ---
        keep, v_star, counts = stage1.stage2_baselines(run, data.train_rows, data.train_prompts, records, value_head)
        summary.update(counts)
        if not keep:
            raise InputError("no training prompts left for stage 2 after filtering (see the counts logged above)")
        summary.update(train_stage2(run, [data.train_rows[i] for i in keep], [data.train_prompts[i] for i in keep],
                                    [v_star[i] for i in keep], data.eval_prompts, [r["answer"] for r in data.eval_rows],
                                    value_head, run.resume_dir))
        summary["grading"] = vars(run.grading)
        return summary


if __name__ == "__main__":
    run_main(lambda argv: main(
        parse_script_config("train_math_apo.py", (TrainConfig, correction.CorrectionTrainingConfig), argv)))
