"""This project's A*-PO stage 2 against TRL's A2POTrainer and GRPOTrainer, on the same work.

Same policy (the embedded SmolLM2-135M-Instruct, or a tiny random Llama over its vocabulary
with --quick), same prompts (synthetic Level 1-2 problems from apo.synthetic, or MATH Level
1-2 rows with --data math), same reward (apo.grading.grade_many), same number of training
prompts, same sampling (temperature 1.0, top_p 1.0, no top-k, max_new_tokens), same optimizer
settings (AdamW, weight decay 0.01, clip 1.0, constant lr), the same precision (--precision:
bf16 autocast over float32 weights, TRL's default and this project's on CPUs with bfloat16
instructions, or float32) and gradient checkpointing (--gradient_checkpointing, off by default).
Each trainer runs in its own child process, so its peak resident memory is its
own (os.wait4 rusage of the child); the children run one after another in one invocation so
their ratios share the machine's load.

Trainers (in run order):
  initial_eval      the untrained policy's greedy held-out accuracy (the reference point)
  project_stage1    train_math_apo.main(stage "1"): N samples per prompt -> V*, value head
  trl_a2po_stage1   TRL A2POTrainer's own stage 1 (its V* estimate), timed on its own
  project_lora      train_math_apo.main(stage "2") from project_stage1's file, LoRA (default)
  project_full      the same, full fine-tuning with a frozen reference copy
  trl_a2po          A2POTrainer.train(), stage 2 only: its V* cache is filled from
                    project_stage1's file (same V* as the project; stage 1 is timed apart above)
  trl_grpo8         GRPOTrainer, num_generations 8 (TRL defaults otherwise: beta 0, no reference)
  trl_grpo4         GRPOTrainer, num_generations 4
  update_profile    (on request only) the stage-2 log-prob forward/backward variants on one micro-batch

Every trainer loads the same model folder: --model's folder with its files linked and the
stale GGUF `quantization_config` of the converted embedded model left out of config.json
(TRL's Trainer refuses a model flagged quantized; see plain_model_folder).

Per trainer: wall-clock of the training loop per training prompt, generated tokens (up to
EOS, counted by one wrapper around GenerationMixin.generate for every trainer), decoded
positions (padding included), peak RSS, greedy held-out accuracy after the run (the same
problems and code for all: apo.episodes.generate + grade_many), and ratios to this
project's stage 2.

    .venv/bin/pip install -r bench/requirements-bench.txt      # trl, once
    .venv/bin/python bench/bench_trainers.py                   # embedded model, 8 prompts, ~10-15 min on 2 CPU cores
    .venv/bin/python bench/bench_trainers.py --torch_threads 1 # the same on a CPU other processes are using
    .venv/bin/python bench/bench_trainers.py --quick true      # tiny model, harness check, ~2 min
    .venv/bin/python bench/bench_trainers.py --trainers project_stage1,project_lora,trl_a2po
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (  # noqa: E402
    PeakRSS, count_generation, machine_info, markdown_table, python_argv, run_child, set_torch_threads,
)
from apo.config import SYSTEM_PROMPT, parse_config  # noqa: E402
from apo.records import write_json_atomic  # noqa: E402

logger = logging.getLogger("bench_trainers")

TRAINERS = ("initial_eval", "project_stage1", "trl_a2po_stage1", "project_lora", "project_full", "trl_a2po",
            "trl_grpo8", "trl_grpo4")
# Not a trainer: times the log-prob forward/backward variants on one micro-batch (see child_update_profile).
EXTRA_CHILDREN = ("update_profile",)
STAGE2_TRAINERS = ("project_lora", "project_full", "trl_a2po", "trl_grpo8", "trl_grpo4")
# MATH train/test500 are not shipped: the folder comes from --math_dir or APO_SHARED_DATA (README, Tests).
MATH_DIR = os.path.join(os.environ["APO_SHARED_DATA"], "math") if os.environ.get("APO_SHARED_DATA") else ""


@dataclass
class BenchTrainersConfig:
    """What is trained, on how much, and where the results go."""

    model: str = field(default="embedded", metadata={"help": (
        "Policy for every trainer: 'embedded', a local save_pretrained folder (overridden by --quick).")})
    quick: bool = field(default=False, metadata={"help": (
        "Harness check: a tiny random 2-layer Llama over the embedded vocabulary, 8 prompts, 16 new tokens.")})
    data: Literal["synthetic", "math"] = field(default="synthetic", metadata={"help": (
        "'synthetic' = apo.synthetic problems of --levels; 'math' = MATH train rows of those levels for "
        "training and MATH-500 rows of those levels held out.")})
    math_dir: str = field(default=MATH_DIR, metadata={"help": (
        "Folder with MATH train.jsonl and test500.jsonl; default: $APO_SHARED_DATA/math.")})
    levels: str = field(default="1,2", metadata={"help": "Comma-separated difficulty levels of the problems."})
    num_train_prompts: int = field(default=8, metadata={"help": "Training prompts (one epoch of stage 2)."})
    num_eval_prompts: int = field(default=8, metadata={"help": "Held-out problems for the greedy accuracy."})
    prompts_per_step: int = field(default=4, metadata={"help": (
        "Prompts per optimizer step for every trainer (GRPO: x num_generations completions per step).")})
    micro_batch_size: int = field(default=8, metadata={"help": (
        "Most sequences per forward/backward pass; every trainer uses min(this, prompts_per_step), so A*-PO's "
        "one-sample steps and GRPO's group steps run the same forward/backward shape.")})
    generation_batch_size: int = field(default=64, metadata={"help": "Project's sequences per generate call."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation limit for training and evaluation."})
    num_value_samples: int = field(default=8, metadata={"help": "Stage-1 samples per prompt (N) for V*."})
    lora_learning_rate: float = field(default=1e-5, metadata={"help": "Project LoRA learning rate (its default)."})
    full_learning_rate: float = field(default=1e-6, metadata={"help": (
        "Learning rate of every full fine-tuning run (project full, TRL A2PO and GRPO; the A*-PO paper's 1e-6).")})
    trainers: str = field(default=",".join(TRAINERS), metadata={"help": (
        f"Comma-separated subset of {', '.join(TRAINERS)} (project_lora/full need project_stage1 in the same "
        "work_dir, trl_a2po too), or update_profile: the stage-2 log-prob forward/backward variants timed on one "
        "micro-batch.")})
    precision: Literal["bf16", "fp32"] = field(default="bf16", metadata={"help": (
        "Every trainer's update: 'bf16' = bf16 autocast over float32 master weights (TRL's default, and this "
        "project's --mixed_precision auto on CPUs with bfloat16 instructions); 'fp32' = float32 throughout.")})
    gradient_checkpointing: bool = field(default=False, metadata={"help": (
        "Recompute activations in backward, for every trainer alike (TRL's default is on; this project's is on "
        "for full fine-tuning and off for LoRA).")})
    grading_workers: int = field(default=2, metadata={"help": "Grader worker processes (every trainer)."})
    seed: int = field(default=42, metadata={"help": "Seed of data, sampling and initialisation (every trainer)."})
    work_dir: str = field(default=os.path.join("runs", "bench_trainers"), metadata={"help": (
        "Scratch folder: data files, the tiny model, each trainer's output and log.")})
    output_json: str = field(default=os.path.join("runs", "bench_trainers.json"), metadata={
        "help": "Where the results JSON is written."})
    torch_threads: int = field(default=0, metadata={"help": (
        "torch threads in every child (0 = torch's default, one per core). Use 1 while other processes load the "
        "CPU: OpenMP threads that wait for a descheduled sibling make every op slow (see _common.set_torch_threads).")})
    child_timeout_s: float = field(default=3600.0, metadata={"help": "A trainer still running after this is killed."})

    def __post_init__(self) -> None:
        unknown = [t for t in self.trainer_list if t not in TRAINERS + EXTRA_CHILDREN]
        if unknown:
            raise ValueError(f"BenchTrainersConfig.trainers has unknown names {unknown}; choose from "
                             f"{list(TRAINERS + EXTRA_CHILDREN)}")
        if self.num_train_prompts % self.prompts_per_step:
            raise ValueError(f"BenchTrainersConfig.num_train_prompts={self.num_train_prompts} must be a multiple of "
                             f"prompts_per_step={self.prompts_per_step} (whole optimizer steps for every trainer)")
        if self.prompts_per_step % self.sequences_per_pass:
            raise ValueError(f"BenchTrainersConfig.prompts_per_step={self.prompts_per_step} must be a multiple of "
                             f"micro_batch_size={self.micro_batch_size} when larger (whole micro-batches per step)")

    @property
    def trainer_list(self) -> list[str]:
        return [t.strip() for t in self.trainers.split(",") if t.strip()]

    @property
    def sequences_per_pass(self) -> int:
        """Sequences per forward/backward pass for every trainer."""
        return min(self.micro_batch_size, self.prompts_per_step)

    @property
    def level_list(self) -> list[int]:
        return [int(x) for x in self.levels.split(",")]


def quick_settings(cfg: BenchTrainersConfig) -> BenchTrainersConfig:
    """--quick: shrink the work so the whole harness runs in about two minutes."""
    values = asdict(cfg)
    values.update(num_train_prompts=8, num_eval_prompts=8, prompts_per_step=4, max_new_tokens=16,
                  num_value_samples=4, quick=True)
    return BenchTrainersConfig(**values)


# --- inputs shared by every trainer ---

def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def math_rows(path: str, levels: list[int], count: int) -> list[dict]:
    """The first `count` rows of a MATH JSONL at `levels`, in the data-file schema."""
    wanted = {f"Level {lvl}" for lvl in levels}
    rows = [{"id": r["unique_id"], "problem": r["problem"], "answer": r["answer"], "type": r["type"],
             "level": int(r["level"].split()[-1]), "source": "math"} for r in read_jsonl(path) if r["level"] in wanted]
    if len(rows) < count:
        raise ValueError(f"{path} has {len(rows)} rows at levels {levels}, fewer than the {count} asked for")
    return rows[:count]


def prepare_data(cfg: BenchTrainersConfig) -> tuple[str, str]:
    """Write train.jsonl and eval.jsonl under work_dir; returns their paths."""
    import apo.synthetic as synthetic_math
    if cfg.data == "synthetic":
        rows = synthetic_math.generate_problems(cfg.num_train_prompts + cfg.num_eval_prompts, seed=cfg.seed,
                                                levels=cfg.level_list)
        train, held = rows[:cfg.num_train_prompts], rows[cfg.num_train_prompts:]
    else:
        train = math_rows(os.path.join(cfg.math_dir, "train.jsonl"), cfg.level_list, cfg.num_train_prompts)
        held = math_rows(os.path.join(cfg.math_dir, "test500.jsonl"), cfg.level_list, cfg.num_eval_prompts)
    paths = os.path.join(cfg.work_dir, "train.jsonl"), os.path.join(cfg.work_dir, "eval.jsonl")
    write_jsonl(paths[0], train)
    write_jsonl(paths[1], held)
    return paths


def prepare_model(cfg: BenchTrainersConfig) -> str:
    """The model folder every trainer loads: cfg.model's folder without a `quantization_config`
    (see `plain_model_folder`), or (--quick) a tiny random Llama over the embedded tokenizer."""
    if not cfg.quick:
        return plain_model_folder(cfg.model, os.path.join(cfg.work_dir, "policy"))
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from apo.models import load_tokenizer

    folder = os.path.join(cfg.work_dir, "tiny_model")
    tokenizer = load_tokenizer("embedded")
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def plain_model_folder(model: str, folder: str) -> str:
    """A folder that loads like `model` but whose config.json has no `quantization_config`.

    The embedded model is converted from GGUF to float32 safetensors, yet its config.json keeps
    the GGUF `quantization_config`, so transformers flags the loaded model `is_quantized` and
    the HF Trainer under TRL refuses to fine-tune it ("purely quantized models"). The weights
    are plain float32 either way; this folder links them and drops the stale entry, and every
    trainer (this project's too) loads it, so all train the same policy."""
    from apo.models import resolve_model_path

    source = resolve_model_path(model)
    if not os.path.isdir(source):
        raise ValueError(f"--model {model!r} resolves to {source!r}, not a local folder; the benchmark needs "
                         "'embedded' or a save_pretrained folder")
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    for name in os.listdir(source):
        if name != "config.json":
            os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(folder, name))
    with open(os.path.join(source, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    config.pop("quantization_config", None)
    write_json_atomic(os.path.join(folder, "config.json"), config)
    return folder


# --- helpers used inside the children ---

def heldout_accuracy(model, tokenizer, rows: list[dict], spec: dict) -> dict:
    """Greedy first-attempt accuracy on `rows`, exactly as train_math_apo.evaluate_accuracy
    computes it (apo.episodes.generate at temperature 0, graded by grade_many)."""
    from apo.grading import grade_many
    from apo.episodes import generate
    from apo.prompts import encode_problem

    model.eval()
    prompts = [encode_problem(tokenizer, r["problem"], "chat", SYSTEM_PROMPT) for r in rows]
    generations = generate(model, tokenizer, prompts, max_new_tokens=spec["max_new_tokens"], temperature=0.0,
                           top_p=1.0, batch_size=spec["generation_batch_size"])
    correct = grade_many([g.text for g in generations], [r["answer"] for r in rows],
                         num_workers=spec["grading_workers"])
    return {"eval_accuracy": sum(correct) / len(rows), "eval_correct": sum(correct), "eval_total": len(rows),
            "eval_truncation_rate": sum(g.truncated for g in generations) / len(rows)}


def project_configs(spec: dict, stage: str, use_lora: bool, output_dir: str):
    """(A_PO_Config, TrainConfig) of this project's run on the benchmark's work."""
    from apo.config import A_PO_Config
    from train_math_apo import TrainConfig

    apo = A_PO_Config(model=spec["model"], use_lora=use_lora,
                      policy_learning_rate=spec["lora_learning_rate"] if use_lora else spec["full_learning_rate"],
                      num_value_samples=spec["num_value_samples"], max_new_tokens=spec["max_new_tokens"],
                      temperature=1.0, top_p=1.0, generation_batch_size=spec["generation_batch_size"],
                      grading_workers=spec["grading_workers"], seed=spec["seed"], filter_all_incorrect=False,
                      gradient_checkpointing=spec["gradient_checkpointing"])
    train = TrainConfig(data_file=spec["train_file"], eval_file=spec["eval_file"], output_dir=output_dir, stage=stage,
                        epochs=1.0, prompts_per_step=spec["prompts_per_step"], optimizer_steps_per_iteration=1,
                        micro_batch_size=spec["sequences_per_pass"], stage1_batch_size=spec["prompts_per_step"],
                        eval_every=0, eval_size=spec["num_eval_prompts"], eval_at_start=False, save_every=0,
                        keep_checkpoints=1, mixed_precision="bf16" if spec["precision"] == "bf16" else "no")
    return apo, train


def read_metrics(output_dir: str) -> list[dict]:
    """Stage-2 step records (those with seconds_per_step) of a project run's metrics.jsonl."""
    return [r for r in read_jsonl(os.path.join(output_dir, "metrics.jsonl")) if "seconds_per_step" in r]


def trl_dataset(rows: list[dict]):
    from datasets import Dataset

    from apo.prompts import first_turn_context

    return Dataset.from_list([{"prompt": first_turn_context(r["problem"], "chat", SYSTEM_PROMPT),
                               "answer": r["answer"]} for r in rows])


class TimedReward:
    """TRL reward function: 1.0 when apo.grading.grade_many accepts the completion, else 0.0;
    accumulates its own seconds. Completions arrive as strings (A2PO) or as assistant
    message lists (GRPO with conversational prompts)."""

    __name__ = "math_grading"

    def __init__(self, grading_workers: int) -> None:
        self.grading_workers = grading_workers
        self.seconds = 0.0

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        from apo.grading import grade_many

        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        started = time.perf_counter()
        correct = grade_many(texts, list(answer), num_workers=self.grading_workers)
        self.seconds += time.perf_counter() - started
        return [float(ok) for ok in correct]


def trl_common_args(spec: dict, output_dir: str) -> dict:
    """TrainingArguments shared by the TRL trainers: the project's optimizer settings, the
    benchmark's precision and gradient checkpointing, nothing saved or reported."""
    return dict(output_dir=output_dir, learning_rate=spec["full_learning_rate"], weight_decay=0.01,
                max_grad_norm=1.0, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.999,
                adam_epsilon=1e-8, max_steps=spec["num_train_prompts"] // spec["prompts_per_step"],
                num_train_epochs=1, use_cpu=True, bf16=spec["precision"] == "bf16", fp16=False,
                gradient_checkpointing=spec["gradient_checkpointing"],
                report_to="none", save_strategy="no", logging_steps=1, dataloader_num_workers=0, seed=spec["seed"],
                max_completion_length=spec["max_new_tokens"], temperature=1.0, top_p=1.0)


def load_policy(spec: dict):
    from apo.models import load_model, load_tokenizer

    return load_model(spec["model"], dtype="float32"), load_tokenizer(spec["model"])


# --- the children ---

def child_initial_eval(spec: dict, memory: PeakRSS) -> dict:
    with memory.phase("eval"):
        model, tokenizer = load_policy(spec)
        return heldout_accuracy(model, tokenizer, read_jsonl(spec["eval_file"]), spec)


def child_project_stage1(spec: dict, memory: PeakRSS) -> dict:
    import train_math_apo

    apo, train = project_configs(spec, "1", True, spec["output_dir"])
    with memory.phase("stage1"), count_generation() as generation:
        started = time.perf_counter()
        summary = train_math_apo.main((apo, train))
        seconds = time.perf_counter() - started
    records = read_jsonl(os.path.join(spec["output_dir"], "stage1_values.jsonl"))
    return {"stage1_s": seconds, "generation": generation["sampled"].as_dict(),
            "v_star_mean": sum(r["v_star"] for r in records) / len(records),
            "stage1_reward_mean": sum(sum(r["rewards"]) / len(r["rewards"]) for r in records) / len(records),
            "value_head_metrics": summary.get("value_head_metrics")}


def child_project_stage2(spec: dict, memory: PeakRSS, use_lora: bool) -> dict:
    import train_math_apo

    apo, train = project_configs(spec, "2", use_lora, spec["output_dir"])
    with memory.phase("stage2"), count_generation() as generation:
        started = time.perf_counter()
        summary = train_math_apo.main((apo, train))
        process_s = time.perf_counter() - started
    steps = read_metrics(spec["output_dir"])
    loop_s = sum(r["seconds_per_step"] for r in steps)
    return {
        "train_s": loop_s, "main_s": process_s, "steps": len(steps),
        "profile_s": {"generation": sum(r["generation_s"] for r in steps),
                      "scoring (grading + reference log-probs)": sum(r["scoring_s"] for r in steps),
                      "update (forward/backward/optimizer)": sum(r["update_s"] for r in steps)},
        "generation": generation["sampled"].as_dict(), "eval_generation": generation["greedy"].as_dict(),
        "train_generated_tokens": generation["sampled"].generated_tokens,
        "metrics_generated_tokens": int(round(sum(r["response_length"] * r["num_samples"] for r in steps))),
        "train_reward_mean": sum(r["reward_mean"] for r in steps) / len(steps),
        "eval_accuracy": summary["final_accuracy"], "eval_note": "train_math_apo's own final greedy evaluation",
    }


def child_trl_a2po_stage1(spec: dict, memory: PeakRSS) -> dict:
    from trl.experimental.a2po import A2POConfig, A2POTrainer

    model, tokenizer = load_policy(spec)
    reward = TimedReward(spec["grading_workers"])
    args = A2POConfig(**trl_common_args(spec, spec["output_dir"]), per_device_train_batch_size=spec["sequences_per_pass"],
                      gradient_accumulation_steps=spec["prompts_per_step"] // spec["sequences_per_pass"], num_value_samples=spec["num_value_samples"],
                      filter_all_incorrect=False, top_k=None)
    trainer = A2POTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=trl_dataset(read_jsonl(spec["train_file"])), processing_class=tokenizer)
    with memory.phase("stage1"), count_generation() as generation:
        started = time.perf_counter()
        trainer._estimate_optimal_values()  # what A2POTrainer.train() runs first when its V* cache is empty
        seconds = time.perf_counter() - started
    values = list(trainer._optimal_values.values())
    return {"stage1_s": seconds, "generation": generation["sampled"].as_dict(), "grading_s": reward.seconds,
            "v_star_mean": sum(values) / len(values)}


def child_trl_a2po(spec: dict, memory: PeakRSS) -> dict:
    from trl.data_utils import maybe_apply_chat_template
    from trl.experimental.a2po import A2POConfig, A2POTrainer

    rows = read_jsonl(spec["train_file"])
    model, tokenizer = load_policy(spec)
    reward = TimedReward(spec["grading_workers"])
    args = A2POConfig(**trl_common_args(spec, spec["output_dir"]), per_device_train_batch_size=spec["sequences_per_pass"],
                      gradient_accumulation_steps=spec["prompts_per_step"] // spec["sequences_per_pass"], num_value_samples=spec["num_value_samples"],
                      filter_all_incorrect=False, top_k=None)
    dataset = trl_dataset(rows)
    trainer = A2POTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    # Stage 2 only: fill A2PO's V* cache (keyed by the templated prompt text) from the project's
    # stage-1 file, so both trainers regress onto the same V*; TRL's own stage 1 is timed apart.
    stage1 = {r["id"]: r["v_star"] for r in read_jsonl(spec["stage1_file"])}
    trainer._optimal_values = {maybe_apply_chat_template(example, tokenizer)["prompt"]: stage1[row["id"]]
                               for example, row in zip(dataset, rows)}
    return train_trl(trainer, reward, memory, spec)


def child_trl_grpo(spec: dict, memory: PeakRSS, group: int) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = load_policy(spec)
    reward = TimedReward(spec["grading_workers"])
    args = GRPOConfig(**trl_common_args(spec, spec["output_dir"]), num_generations=group,
                      per_device_train_batch_size=spec["sequences_per_pass"],
                      gradient_accumulation_steps=spec["prompts_per_step"] * group // spec["sequences_per_pass"],
                      top_k=0, log_completions=False)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args,
                          train_dataset=trl_dataset(read_jsonl(spec["train_file"])), processing_class=tokenizer)
    return train_trl(trainer, reward, memory, spec)


def train_trl(trainer, reward: TimedReward, memory: PeakRSS, spec: dict) -> dict:
    """trainer.train() timed and profiled, then the held-out accuracy of the trained policy."""
    with memory.phase("stage2"), count_generation() as generation:
        started = time.perf_counter()
        output = trainer.train()
        seconds = time.perf_counter() - started
    counted = generation["sampled"].as_dict()
    with memory.phase("eval"):
        model = trainer.accelerator.unwrap_model(trainer.model)
        accuracy = heldout_accuracy(model, trainer.processing_class, read_jsonl(spec["eval_file"]), spec)
    rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    return {"train_s": seconds, "steps": trainer.state.global_step, "trainer_runtime_s": output.metrics["train_runtime"],
            "profile_s": {"generation": counted["generate_s"], "scoring (grading)": reward.seconds,
                          "rest (reference/old log-probs, forward/backward/optimizer, overhead)":
                              seconds - counted["generate_s"] - reward.seconds},
            "generation": counted, "train_generated_tokens": counted["generated_tokens"],
            "train_reward_mean": sum(rewards) / len(rewards) if rewards else None, **accuracy}


def child_update_profile(spec: dict, memory: PeakRSS, repeats: int = 3) -> dict:
    """Best-of-`repeats` seconds of the stage-2 log-prob computation on one micro-batch of
    sampled responses (full fine-tuning, forward + backward, no optimizer step):

    project        apo_algorithm.response_token_logps(with_entropy=True): what update_policy runs
                   (per-row float32 log-softmax, recomputed in backward by a checkpoint)
    no_entropy     the same with with_entropy=False
    plain          one model call with logits_to_keep, log_softmax over the whole (B, R, V)
                   block and a gather, no checkpoint (TRL A2PO's _get_sequence_logps)
    reference      the project's no-grad reference pass (apo_algorithm.sequence_logps)
    """
    import torch

    from apo_algorithm import response_token_logps, sequence_logps
    from apo.episodes import generate
    from apo.prompts import encode_problem

    model, tokenizer = load_policy(spec)
    rows = read_jsonl(spec["train_file"])[:spec["sequences_per_pass"]]
    prompts = [encode_problem(tokenizer, r["problem"], "chat", SYSTEM_PROMPT) for r in rows]
    torch.manual_seed(spec["seed"])
    generations = generate(model, tokenizer, prompts, max_new_tokens=spec["max_new_tokens"], temperature=1.0,
                           top_p=1.0, batch_size=len(prompts))
    from apo_algorithm import PolicySample, collate_samples

    batch = collate_samples([PolicySample(g.prompt_ids, g.response_ids, 0.0, 0.0, "attempt", g.truncated)
                             for g in generations], tokenizer.pad_token_id)
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])

    def project(with_entropy: bool):
        out = response_token_logps(model, *inputs, with_entropy=with_entropy)
        loss = out.token_logps.sum(dim=-1).pow(2).mean()
        if with_entropy:
            loss = loss - 1e-3 * (out.entropy.sum() / out.response_mask.sum())
        loss.backward()

    def plain():
        ids = torch.cat([batch["prompt_ids"], batch["response_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["response_mask"]], dim=1)
        width = batch["response_ids"].shape[1]
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=width + 1).logits[:, :-1]
        logps = torch.gather(logits.log_softmax(-1), -1, batch["response_ids"].unsqueeze(-1)).squeeze(-1)
        ((logps * batch["response_mask"]).sum(dim=-1).pow(2).mean()).backward()

    def reference():
        with torch.no_grad():
            sequence_logps(model, *inputs)

    variants = {"project": lambda: project(True), "no_entropy": lambda: project(False), "plain": plain,
                "reference": reference}
    model.train()
    seconds = {}
    for name, run in variants.items():
        best = float("inf")
        with memory.phase(name):
            for _ in range(repeats):
                model.zero_grad(set_to_none=True)
                started = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - started)
        seconds[name] = best
    return {"seconds": seconds, "batch_shape": {"prompt": list(batch["prompt_ids"].shape),
                                                "response": list(batch["response_ids"].shape)},
            "response_tokens": int(batch["response_mask"].sum())}


def run_as_child(name: str, spec_path: str, result_path: str) -> None:
    """Entry point of one child process: run trainer `name`, write its JSON result."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    memory = PeakRSS()
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    set_torch_threads(spec["torch_threads"])
    runners = {
        "initial_eval": child_initial_eval, "project_stage1": child_project_stage1,
        "trl_a2po_stage1": child_trl_a2po_stage1,
        "project_lora": lambda s, m: child_project_stage2(s, m, use_lora=True),
        "project_full": lambda s, m: child_project_stage2(s, m, use_lora=False),
        "trl_a2po": child_trl_a2po,
        "trl_grpo8": lambda s, m: child_trl_grpo(s, m, 8), "trl_grpo4": lambda s, m: child_trl_grpo(s, m, 4),
        "update_profile": child_update_profile,
    }
    result = runners[name](spec, memory)
    result["memory"] = memory.report()
    write_json_atomic(result_path, result)


# --- the parent: run, tabulate, compare ---

def trainer_spec(cfg: BenchTrainersConfig, name: str, model: str, train_file: str, eval_file: str) -> dict:
    output_dir = os.path.join(cfg.work_dir, name)
    stage1_dir = os.path.join(cfg.work_dir, "project_stage1")
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.makedirs(output_dir)
    if name in ("project_lora", "project_full"):  # stage 2 starts from stage 1's files, as a user's would
        for item in ("stage1_values.jsonl", "stage1_meta.json", "value_head"):
            source = os.path.join(stage1_dir, item)
            if not os.path.exists(source):
                raise FileNotFoundError(f"{source} not found: {name} needs project_stage1 in the same --work_dir; "
                                        "add it to --trainers")
            copy = shutil.copytree if os.path.isdir(source) else shutil.copy
            copy(source, os.path.join(output_dir, item))
    spec = {**asdict(cfg), "sequences_per_pass": cfg.sequences_per_pass, "model": model, "train_file": train_file,
            "eval_file": eval_file,
            "output_dir": output_dir, "stage1_file": os.path.join(stage1_dir, "stage1_values.jsonl")}
    if name == "trl_a2po" and not os.path.isfile(spec["stage1_file"]):
        raise FileNotFoundError(f"{spec['stage1_file']} not found: trl_a2po takes V* from project_stage1; "
                                "add project_stage1 to --trainers")
    return spec


def summarise(name: str, child, cfg: BenchTrainersConfig) -> dict:
    """One table row from a child's result and rusage."""
    result = child.result or {}
    row = {"trainer": name, "returncode": child.returncode, "process_s": round(child.wall_s, 1),
           "peak_rss_mib": round(child.peak_rss_mib), "result": result}
    if "train_s" in result:
        row["s_per_prompt"] = result["train_s"] / cfg.num_train_prompts
        row["train_generated_tokens"] = result["train_generated_tokens"]
        row["eval_accuracy"] = result["eval_accuracy"]
        row["decoded_positions"] = result["generation"]["decoded_positions"]
    if "stage1_s" in result:
        row["stage1_s_per_prompt"] = result["stage1_s"] / cfg.num_train_prompts
        row["train_generated_tokens"] = result["generation"]["generated_tokens"]
        row["decoded_positions"] = result["generation"]["decoded_positions"]
    if name == "initial_eval":
        row["eval_accuracy"] = result.get("eval_accuracy")
    if name == "update_profile":
        row["update_profile_s"] = result.get("seconds")
    return row


def add_ratios(rows: dict[str, dict]) -> dict:
    """Ratios of time per prompt and peak RSS to the project's stage 2 (LoRA and full), and the
    headline ratios the targets are stated in."""
    headline: dict[str, float] = {}
    for base in ("project_lora", "project_full"):
        if "s_per_prompt" not in rows.get(base, {}):
            continue
        for name, row in rows.items():
            if "s_per_prompt" in row:
                row[f"time_vs_{base}"] = row["s_per_prompt"] / rows[base]["s_per_prompt"]
                row[f"rss_vs_{base}"] = row["peak_rss_mib"] / rows[base]["peak_rss_mib"]
        for peer in ("trl_grpo8", "trl_grpo4", "trl_a2po"):
            if "s_per_prompt" in rows.get(peer, {}):
                headline[f"time_{base}_over_{peer}"] = rows[base]["s_per_prompt"] / rows[peer]["s_per_prompt"]
                headline[f"rss_{base}_over_{peer}"] = rows[base]["peak_rss_mib"] / rows[peer]["peak_rss_mib"]
    if "stage1_s_per_prompt" in rows.get("project_stage1", {}) and "stage1_s_per_prompt" in rows.get("trl_a2po_stage1", {}):
        headline["stage1_time_project_over_trl_a2po"] = (rows["project_stage1"]["stage1_s_per_prompt"]
                                                         / rows["trl_a2po_stage1"]["stage1_s_per_prompt"])
    return headline


def amortised_stage1(rows: dict[str, dict], epochs: tuple[int, ...] = (1, 10, 25)) -> list[dict]:
    """Project time per prompt per epoch with stage 1's one-off cost spread over E epochs of stage 2."""
    if "stage1_s_per_prompt" not in rows.get("project_stage1", {}):
        return []
    stage1 = rows["project_stage1"]["stage1_s_per_prompt"]
    table = []
    for base in ("project_lora", "project_full"):
        if "s_per_prompt" in rows.get(base, {}):
            for e in epochs:
                per_prompt = rows[base]["s_per_prompt"] + stage1 / e
                entry = {"trainer": base, "epochs": e, "s_per_prompt_incl_stage1": per_prompt}
                if "s_per_prompt" in rows.get("trl_grpo8", {}):
                    entry["vs_trl_grpo8"] = per_prompt / rows["trl_grpo8"]["s_per_prompt"]
                table.append(entry)
    return table


def main(cfg: BenchTrainersConfig) -> dict:
    """Run the chosen trainers one by one in child processes; print the table, write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if cfg.quick:
        cfg = quick_settings(cfg)
    os.makedirs(cfg.work_dir, exist_ok=True)
    set_torch_threads(cfg.torch_threads)

    # --- inputs: data files and the policy every trainer loads ---
    train_file, eval_file = prepare_data(cfg)
    model = prepare_model(cfg)
    report = {"config": asdict(cfg), "model_path": model, "machine_before": machine_info(), "trainers": {}}

    # --- one child process per trainer ---
    rows: dict[str, dict] = {}
    for name in cfg.trainer_list:
        spec = trainer_spec(cfg, name, model, train_file, eval_file)
        spec_path = os.path.join(spec["output_dir"], "bench_spec.json")
        write_json_atomic(spec_path, spec)
        result_path = os.path.join(cfg.work_dir, f"{name}.result.json")
        logger.info("running %s (log: %s)", name, os.path.join(cfg.work_dir, f"{name}.log"))
        child = run_child(python_argv("bench_trainers.py", "--child", name, spec_path, result_path), result_path,
                          os.path.join(cfg.work_dir, f"{name}.log"), cfg.child_timeout_s)
        if child.returncode != 0:
            logger.error("%s failed with exit code %d; its log ends:\n%s", name, child.returncode, child.log_tail)
        rows[name] = summarise(name, child, cfg)
        logger.info("%s done in %.0f s, peak RSS %.0f MiB", name, child.wall_s, child.peak_rss_mib)

    # --- ratios, amortised stage 1, table, JSON ---
    report["headline"] = add_ratios(rows)
    report["amortised_stage1"] = amortised_stage1(rows)
    report["trainers"] = rows
    report["machine_after"] = machine_info()
    report["failed"] = [name for name, row in rows.items() if row["returncode"] != 0]
    columns = [("trainer", "trainer"), ("s_per_prompt", "train s/prompt"), ("stage1_s_per_prompt", "stage-1 s/prompt"),
               ("train_generated_tokens", "gen. tokens"), ("decoded_positions", "decoded pos."),
               ("peak_rss_mib", "peak RSS MiB"), ("eval_accuracy", "held-out acc"),
               ("time_vs_project_lora", "time / proj. LoRA"), ("rss_vs_project_lora", "RSS / proj. LoRA"),
               ("time_vs_project_full", "time / proj. full"), ("process_s", "process s")]
    report["table_markdown"] = markdown_table(list(rows.values()), columns)
    print(report["table_markdown"])
    print(json.dumps(report["headline"], indent=2))
    write_json_atomic(cfg.output_json, report)
    print(f"wrote {cfg.output_json}")
    return report


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        run_as_child(*sys.argv[2:])
    else:
        main(parse_config((BenchTrainersConfig,))[0])
