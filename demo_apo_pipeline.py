"""The walkthrough a newcomer runs first: the whole A*-PO pipeline on a laptop CPU, explained as it runs.

    python demo_apo_pipeline.py                     # embedded SmolLM2-135M, synthetic problems (see docs/demo_transcript.md)
    python demo_apo_pipeline.py --quick             # the same six steps at toy sizes, under 2 minutes
    python demo_apo_pipeline.py --train_correction  # stage 2 also trains the verify and revise turns (slower)
    python demo_apo_pipeline.py --policy_loss awr --stage2_steps 30 --output_dir demo_awr
    python demo_apo_pipeline.py --source local --train_path MATH/train.jsonl \\
        --math500_path benchmark_data/math500.jsonl --max_new_tokens 512        # real MATH (slow on a CPU)
    make demo ARGS="--quick"

Six steps, each calling the same `main` as the stage script a user runs on a GPU; this file
holds no algorithm of its own, only a small configuration, the explanations and the summary:
  1. prepare_data.main        writes the three JSONL files and prints the inspection table;
  2. evaluate_apo.main        the untrained model on held-out problems, with self-correction;
  3. train_math_apo.main      stage 1: N samples per training prompt -> V*, then the value head;
  4. train_math_apo.main      stage 2: a short A*-PO run (one sample per prompt per step);
  5. evaluate_apo.main        the trained model on the same held-out problems;
  6. evaluate_apo.main        (--compare) the before/after table, then where every file went and
                              the commands for the real setting (Qwen2.5-1.5B-Instruct on MATH, a GPU).

What it shows: with a 135M model and synthetic problems, that every stage runs and that the
policy learns something measurable on problems it was not trained on. It is not evidence of
what A*-PO does for Qwen2.5 on MATH. When the held-out change is within noise, the output says so.
Level-1 arithmetic comes in several wordings (symbols, words, short stories; apo/synthetic.py);
three of them (DEMO_HELDOUT_WORDINGS) never appear in training and make up half the held-out
problems, and step 6 reports the change on those apart from the change on the training wordings,
saying whether the gain carries over to wordings never trained on or exists only on the training
wordings.

Outputs under --output_dir (default demo_output/; a re-run replaces the demo's own files there
and refuses a folder holding anything else): data/, train/, eval_before_training/,
eval_after_training/, comparison.md, demo_config.json, demo_summary.json (with the verdicts, and
the before/after accuracy, gained/lost and sign-test p per group of wordings under "by_wording",
and what the verify-and-revise loop did before and after training under "self_correction":
transitions, the verifier's recalls and balanced accuracy, per group; `apo.metrics.loop_report` defines them).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

import evaluate_apo
import prepare_data
import train_math_apo
from apo_algorithm import estimate_optimal_value
from apo.cli import run_main
from apo.folder_lock import LOCK_FILE
from apo.config import REVISE_PROMPT, SYSTEM_PROMPT, A_PO_Config, parse_config, save_config
from apo.correction import CorrectionTrainingConfig
from apo.errors import InputError
from apo.metrics import loop_helps, loop_report, sign_test_p, verifier_discriminates, wilson_interval
from apo.grading import last_boxed_content
from apo.records import ensure_output_folder, read_generations, read_problem_rows, read_stage1_values, write_json_atomic

logger = logging.getLogger("demo_apo_pipeline")

CONFIG_FILE = "demo_config.json"
SUMMARY_FILE = "demo_summary.json"
# Everything a demo run writes inside output_dir; a re-run deletes exactly these first.
DEMO_OUTPUTS = ("data", "train", "eval_before_training", "eval_after_training", "comparison.md", CONFIG_FILE,
                SUMMARY_FILE)
# --quick: the value each size takes when it was left at its default.
QUICK_SIZES = {"train_prompts": 8, "eval_problems": 8, "num_value_samples": 2, "stage2_steps": 2,
               "prompts_per_step": 4, "max_new_tokens": 32, "max_correction_turns": 2, "examples_shown": 2}
WRAP = 100
# Level-1 arithmetic wordings the demo never trains on, one per family (apo.synthetic.ARITHMETIC_WORDINGS).
DEMO_HELDOUT_WORDINGS = ("value_of_symbols", "sum_difference_product", "story_two_people")
# The demo's system prompt. The pipeline's (apo.config.SYSTEM_PROMPT, step by step, then \boxed{}) has the 135M
# model reason past the 64-token limit on most problems before it states an answer.
DEMO_SYSTEM_PROMPT = "Answer in one short sentence of the form: The answer is ..."
# The demo's verify turn. PAG's (apo.config.VERIFY_PROMPT, check step by step, then the verdict) has the 135M model
# repeat its answer instead of a verdict: after the first-attempt training, 0 of 128 verdicts parsed on seed 42.
DEMO_VERIFY_PROMPT = "Is your answer right? Reply in one short sentence: The answer is correct. or The answer is wrong."
# The revise turn of --train_correction. PAG's (apo.config.REVISE_PROMPT, "Please provide the correct solution") has
# the untrained 135M model write "The answer is correct." or "... wrong." in 46-63% of its revisions (five seeds),
# and after --train_correction on seed 3 in all 29, breaking the 5 right answers it had doubted. Without
# --train_correction the revise turn is never trained, and PAG's prompt stays: the seed-42 model trained on first
# attempts restates its answer under it (72 -> 75 of 128) but answers this one with "The answer is 1." (72 -> 30).
DEMO_REVISE_PROMPT = "Solve the problem again and state your final answer as: The answer is ..."


def _help(text: str, bounds: str | None = None) -> dict[str, str]:
    """--help text and, for a float field, its interval (apo.config.check_float_fields)."""
    return {"help": text} if bounds is None else {"help": text, "bounds": bounds}


@dataclass
class DemoConfig:
    """The demo's choices; every size is small enough for a laptop CPU by default."""

    # --- model and data ---
    model: str = field(default="embedded", metadata=_help(
        "Policy: 'embedded' (SmolLM2-135M-Instruct, no download), a hub id, or a local save_pretrained folder."))
    model_cache_dir: str = field(default=os.path.join("~", ".cache", "apo_math", "models"), metadata=_help(
        "Where the embedded model is converted once."))
    source: Literal["synthetic", "local", "hub"] = field(default="synthetic", metadata=_help(
        "'synthetic' = offline generated problems (apo/synthetic.py); 'local' = MATH files (--train_path, "
        "--math500_path); 'hub' = MATH and MATH-500 from the Hugging Face hub."))
    train_path: str = field(default="", metadata=_help("--source local: MATH training problems (.jsonl, ...)."))
    math500_path: str = field(default="", metadata=_help("--source local: MATH-500 (.jsonl, ...)."))
    synthetic_levels: str = field(default="1", metadata=_help(
        "--source synthetic: comma-separated levels 1-5 (level 1, single-digit arithmetic, is what a 135M model "
        "can partly solve; higher levels give it almost no reward to learn from)."))
    synthetic_types: str = field(default="arithmetic", metadata=_help(
        "--source synthetic: comma-separated problem types or 'all' (see apo.synthetic.SYNTHETIC_TYPES). "
        "The embedded model's sampled pass rate is about 12% on level-1 arithmetic and near 0 on the other types."))
    synthetic_wordings: str = field(default="all", metadata=_help(
        "--source synthetic: wordings of level-1 arithmetic, 'all', 'original' (the one template 'What is $7 + 5$?') "
        "or comma-separated names of apo.synthetic.ARITHMETIC_WORDINGS; training uses these minus the held-out ones."))
    synthetic_heldout_wordings: str = field(default=",".join(DEMO_HELDOUT_WORDINGS), metadata=_help(
        "--source synthetic: comma-separated wordings never trained on; every other held-out problem is in one of "
        "them and step 6 reports them apart. 'none' = no carry-over check."))
    train_prompts: int = field(default=64, metadata=_help(
        "Training prompts (a stratified subset of the training file): stage 1 samples each N times."))
    eval_problems: int = field(default=128, metadata=_help(
        "Held-out problems evaluated before and after training (never trained on), half of them in the held-out "
        "wordings. With 64 (32 per half) a gain of 10 points was still within the noise of the sign test."))

    # --- algorithm ---
    num_value_samples: int = field(default=4, metadata=_help("N, stage-1 samples per prompt for V* (paper: 8)."))
    stage2_steps: int = field(default=24, metadata=_help(
        "Stage-2 iterations. With 16 (256 rollouts) the gain reached the held-out wordings on 2 of 5 seeds, with "
        "24 on 3 of 5 (docs/demo_transcript.md)."))
    prompts_per_step: int = field(default=16, metadata=_help(
        "Prompts per stage-2 iteration, one sample each, split into 2 optimizer steps (paper: 256)."))
    max_new_tokens: int = field(default=64, metadata=_help(
        "Generation limit per turn, in training and evaluation (a truncated answer gets reward 0)."))
    temperature: float = field(default=0.6, metadata=_help(
        "Sampling temperature of the stage-1 and stage-2 rollouts. The paper samples at 1.0; the 135M model then "
        "writes near-random text that is never right, so the demo samples at 0.6 (evaluation stays greedy).",
        bounds="[0, 2]"))
    top_p: float = field(default=0.95, metadata=_help("Nucleus top_p of the rollouts (paper: 1.0).", bounds="(0, 1]"))
    filter_all_incorrect: bool = field(default=False, metadata=_help(
        "Stage 2 trains only on prompts with at least one right answer among their N stage-1 samples (TRL's "
        "choice; the official A*-PO scripts keep every prompt). On seeds 42, 1, 2 it learned beyond noise on 1 "
        "where the default did on 2 (docs/demo_transcript.md)."))
    policy_loss: Literal["apo", "awr"] = field(default="apo", metadata=_help(
        "'apo' = A*-PO least-squares regression; 'awr' = advantage-weighted LM loss."))
    policy_learning_rate: float = field(default=3e-4, metadata=_help(
        "AdamW learning rate of the policy (LoRA adapters by default). With the embedded model and 8 steps, "
        "1e-4 moved nothing measurable and 1e-3 damaged the policy (docs/demo_transcript.md).", bounds="(0, 1]"))
    beta2: float = field(default=0.1, metadata=_help(
        "beta2 of the A*-PO regression, the strength of the pull towards the reference policy: the loss stops "
        "pushing once log(pi/pi_ref) of an answer reaches its advantage / beta2. The paper's 1e-3 (with full "
        "fine-tuning at learning rate 1e-6) puts that point hundreds of nats away, so with LoRA at 3e-4 the pushes "
        "on the 135M model's many wrong answers never stop and damaged it within a few steps; 0.1 stops them at "
        "about 10 nats.", bounds="(0, inf)"))
    use_lora: bool = field(default=True, metadata=_help("Train LoRA adapters (rank 16) instead of all weights."))
    max_correction_turns: int = field(default=2, metadata=_help(
        "Attempts per held-out problem: 1 = first attempt only, 2 = one verify-and-revise round."))
    train_correction: bool = field(default=False, metadata=_help(
        "Stage 2 trains whole self-correction episodes (attempt, verify, revise after 'wrong'; "
        "train_math_apo.py --train_correction true) instead of first attempts only, and step 6 reports what the "
        "correction loop does before and after. Slower: docs/demo_transcript.md gives its time."))
    verify_reward: Literal["match", "outcome"] = field(default="match", metadata=_help(
        "--train_correction: reward of a verdict. 'match' = PAG's, 1 when the verdict agrees with the truth of the "
        "attempt (the demo trains as many verdicts on right attempts as on wrong ones, so only telling them apart "
        "pays); 'outcome' = the correctness of the answer that stands after it (docs/self_correction.md)."))
    system_prompt: str = field(default=DEMO_SYSTEM_PROMPT, metadata=_help(
        "System prompt of every rollout and evaluation episode, before and after training alike. The pipeline's "
        "MATH prompt (step by step, then \\boxed{}) left 77% of the untrained model's first attempts cut off at 64 "
        "tokens and 12/128 right on seed 42's held-out set; this one 15% and 29/128, so stage 2 samples more right "
        "answers to learn from (docs/demo_transcript.md)."))
    verify_prompt: str = field(default=DEMO_VERIFY_PROMPT, metadata=_help(
        "User turn of the verify step, before and after training alike. PAG's prompt (check step by step, end with "
        "the verdict) had the 135M model trained on first attempts repeat its answer instead of a verdict on all 128 "
        "held-out problems of seed 42, and each unparsed verdict sends a right answer to a revision; with this one "
        "it stated a verdict on 120 (docs/demo_transcript.md)."))
    revise_prompt: str = field(default="", metadata=_help(
        "User turn of the revise step (after 'wrong'), before and after training alike. Empty: with --train_correction "
        f"\"{DEMO_REVISE_PROMPT}\" (after PAG's, the untrained 135M model wrote a verdict sentence instead of an "
        "answer in 46-63% of its revisions), without it PAG's, which the model trained on first attempts answers by "
        "restating its answer (docs/demo_transcript.md)."))

    # --- output ---
    output_dir: str = field(default="demo_output", metadata=_help(
        "Folder for everything the demo writes (see the module docstring)."))
    examples_shown: int = field(default=3, metadata=_help("Stage-1 prompts printed with their rewards and V*."))
    quick: bool = field(default=False, metadata=_help(
        f"Toy sizes for a run under 2 minutes: every size left at its default takes its quick value {QUICK_SIZES}."))
    seed: int = field(default=42, metadata=_help("Seed of the data, the sampling and the adapters."))

    def __post_init__(self) -> None:
        if self.quick:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for name, value in QUICK_SIZES.items():
                if getattr(self, name) == defaults[name]:
                    setattr(self, name, value)
        for name in ("train_prompts", "eval_problems", "num_value_samples", "stage2_steps", "max_new_tokens",
                     "max_correction_turns"):
            if getattr(self, name) < 1:
                raise InputError(f"DemoConfig.{name}={getattr(self, name)!r} is invalid: use a positive integer.")
        if self.prompts_per_step < 2 or self.prompts_per_step % 2:
            raise InputError(f"DemoConfig.prompts_per_step={self.prompts_per_step} is invalid: use an even number "
                             "(each iteration is split into 2 optimizer steps).")
        if self.source == "local" and not (self.train_path and self.math500_path):
            raise InputError("DemoConfig.source='local' needs --train_path and --math500_path "
                             "(e.g. MATH/train.jsonl and benchmark_data/math500.jsonl).")
        data_config(self, self.output_dir)  # prepare_data's checks (wording names, ...) before anything runs


# --- printing ---

def say(text: str) -> None:
    """Print `text` as wrapped paragraphs (blank lines separate them), with a blank line before."""
    paragraphs = textwrap.dedent(text).strip("\n").split("\n\n")
    print("\n" + "\n\n".join(textwrap.fill(" ".join(p.split()), WRAP) for p in paragraphs) + "\n", flush=True)


def heading(number: int, title: str) -> None:
    print(f"\n\nStep {number} of 6: {title}", flush=True)


# --- output folder ---

def prepare_output_dir(output_dir: str) -> dict[str, str]:
    """The demo's sub-paths of `output_dir`, after deleting what an earlier demo run left there.

    Raises InputError when the folder holds files the demo did not write (nothing is deleted then)
    or is a file.
    """
    ensure_output_folder(output_dir)
    foreign = sorted(set(os.listdir(output_dir)) - set(DEMO_OUTPUTS) - {LOCK_FILE})  # the stages' folder lock
    if foreign:
        raise InputError(f"{output_dir} holds files the demo did not write ({foreign[:5]}); the demo replaces its own "
                         "outputs on a re-run and touches nothing else: pass another --output_dir")
    for name in DEMO_OUTPUTS:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    return {name: os.path.join(output_dir, name) for name in DEMO_OUTPUTS}


# --- the stage configurations ---

def data_config(cfg: DemoConfig, folder: str) -> prepare_data.DataConfig:
    """prepare_data's config: the training pool, a stratified subset of train_prompts, the held-out set."""
    return prepare_data.DataConfig(
        source=cfg.source, train_path=cfg.train_path, math500_path=cfg.math500_path, output_dir=folder,
        subset_size=cfg.train_prompts, seed=cfg.seed, tokenizer=cfg.model, model_cache_dir=cfg.model_cache_dir,
        synthetic_train_size=cfg.train_prompts, synthetic_eval_size=cfg.eval_problems,
        synthetic_levels=cfg.synthetic_levels, synthetic_types=cfg.synthetic_types,
        synthetic_wordings=cfg.synthetic_wordings, synthetic_heldout_wordings=cfg.synthetic_heldout_wordings)


def algorithm_config(cfg: DemoConfig, model: str) -> A_PO_Config:
    return A_PO_Config(
        model=model, model_cache_dir=cfg.model_cache_dir, num_value_samples=cfg.num_value_samples,
        policy_loss=cfg.policy_loss, beta2=cfg.beta2, policy_learning_rate=cfg.policy_learning_rate,
        use_lora=cfg.use_lora, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        max_correction_turns=cfg.max_correction_turns, filter_all_incorrect=cfg.filter_all_incorrect,
        system_prompt=cfg.system_prompt, verify_prompt=cfg.verify_prompt,
        revise_prompt=revise_prompt(cfg), correction_mode="self_verify",
        train_correction=cfg.train_correction, verify_reward=cfg.verify_reward, seed=cfg.seed)


def revise_prompt(cfg: DemoConfig) -> str:
    """--revise_prompt, or when empty the demo's choice: DEMO_REVISE_PROMPT when --train_correction trains the
    revise turn, PAG's REVISE_PROMPT when the turn stays untrained (see DEMO_REVISE_PROMPT's comment)."""
    if cfg.revise_prompt:
        return cfg.revise_prompt
    return DEMO_REVISE_PROMPT if cfg.train_correction else REVISE_PROMPT


def correction_config(cfg: DemoConfig) -> CorrectionTrainingConfig:
    """--train_correction's turn training: per-class running-mean baselines (no hidden-state pass, which costs
    a forward per step on a CPU), as many verify turns of right attempts as of wrong ones in each batch (so a
    verdict that ignores the attempt gains nothing, however few attempts are right), and advantages left at
    r - b, the scale beta2 was tuned on for first attempts; under the match reward each verify turn also
    trains the verdict it did not say (counterfactual_verdicts)."""
    return CorrectionTrainingConfig(turn_baseline="running_mean", balance_verify_truth=True,
                                    counterfactual_verdicts=cfg.verify_reward == "match",
                                    normalize_turn_advantages=False)


def train_config(cfg: DemoConfig, data: prepare_data.PreparedData, folder: str, stage: str) -> train_math_apo.TrainConfig:
    """The trainer's config: stage 1 or stage 2 on the subset; its own held-out check uses a
    quarter of the eval problems (the demo's evaluation is steps 2 and 5, on all of them)."""
    return train_math_apo.TrainConfig(
        data_file=data.subset_file, eval_file=data.eval_file, output_dir=folder, stage=stage,
        max_steps=cfg.stage2_steps, prompts_per_step=cfg.prompts_per_step, optimizer_steps_per_iteration=2,
        micro_batch_size=8, stage1_batch_size=16, save_stage1_responses=True, eval_every=0,
        eval_size=max(1, cfg.eval_problems // 4), eval_at_start=False, save_every=0, keep_checkpoints=1)


def eval_config(cfg: DemoConfig, eval_file: str, folder: str) -> evaluate_apo.EvalConfig:
    """Greedy decoding, one episode per problem, the first eval_problems rows of the eval file."""
    return evaluate_apo.EvalConfig(
        eval_file=eval_file, output_dir=folder, limit=cfg.eval_problems, eval_max_new_tokens=cfg.max_new_tokens,
        eval_batch_size=64, bootstrap_resamples=1000, resume=False)


# --- reading the results ---

def first_attempts(records: list[dict]) -> dict[str, dict]:
    """id -> the first-attempt record of each episode, of an evaluate_apo generations.jsonl's records."""
    return {r["id"]: r for r in records if r["role"] == "attempt" and r["attempt_index"] == 0}


def boxed_share(attempts: dict[str, dict]) -> tuple[int, int]:
    """(first attempts whose text holds a \\boxed{} answer, first attempts)."""
    return sum(last_boxed_content(r["text"]) is not None for r in attempts.values()), len(attempts)


def format_p(p_value: float) -> str:
    """'p = 0.031', or 'p < 0.001' below what three decimals show."""
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.3f}"


def paired_changes(before: dict[str, dict], after: dict[str, dict]) -> dict[str, Any]:
    """How the first attempt changed per held-out problem of both `before` and `after`: right only
    after training (gained), right only before (lost), the exact sign-test p-value of gained vs
    lost, and how many were right before (before_correct) and after (after_correct)."""
    common = sorted(set(before) & set(after))
    gained = sum(bool(after[i]["correct"]) and not before[i]["correct"] for i in common)
    lost = sum(bool(before[i]["correct"]) and not after[i]["correct"] for i in common)
    return {"problems": len(common), "gained": gained, "lost": lost, "p_value": sign_test_p(gained, lost),
            "before_correct": sum(bool(before[i]["correct"]) for i in common),
            "after_correct": sum(bool(after[i]["correct"]) for i in common)}


def rate_with_interval(successes: int, n: int) -> str:
    low, high = wilson_interval(successes, n)
    return f"{successes}/{n} = {100 * successes / n:.1f}% [95% CI {100 * low:.1f}, {100 * high:.1f}]"


def accuracy_gain(changes: dict[str, Any]) -> bool:
    """Whether paired_changes shows a gain beyond noise: more problems gained than lost, sign-test p < 0.05."""
    return changes["gained"] > changes["lost"] and changes["p_value"] < 0.05


def accuracy_loss(changes: dict[str, Any]) -> bool:
    """Whether paired_changes shows a loss beyond noise: more problems lost than gained, sign-test p < 0.05."""
    return changes["lost"] > changes["gained"] and changes["p_value"] < 0.05


def changes_by_wording(before: dict[str, dict], after: dict[str, dict], wording_of: dict[str, str | None],
                       heldout: Sequence[str]) -> dict[str, dict[str, Any]]:
    """First-attempt accuracy and paired changes per group of the problems in both `before` and `after`.

    `wording_of` maps every problem id to its `wording` (None for rows without one, whose
    template training uses too). Groups: `wording_groups`' names; each is paired_changes' dict.
    Raises KeyError for an evaluated id missing from `wording_of`.
    """
    members = wording_groups(set(before) & set(after), wording_of, heldout)
    return {name: paired_changes({i: before[i] for i in ids}, {i: after[i] for i in ids})
            for name, ids in members.items()}


def wording_groups(ids: set[str], wording_of: dict[str, str | None], heldout: Sequence[str]) -> dict[str, set[str]]:
    """`ids` split by wording: "training_wordings" (not in `heldout`), "heldout_wordings" and "all"."""
    return {"training_wordings": {i for i in ids if wording_of[i] not in heldout},
            "heldout_wordings": {i for i in ids if wording_of[i] in heldout}, "all": set(ids)}


def eval_wordings(cfg: DemoConfig, data: prepare_data.PreparedData) -> tuple[dict[str, str | None], tuple[str, ...]]:
    """(id -> `wording` of every held-out row, None for rows without one: only synthetic level-1
    arithmetic drawn with wordings has one; the wordings held out of training)."""
    wording_of = {row["id"]: row.get("wording") for row in read_problem_rows(data.eval_file, require_answer=False)}
    return wording_of, data_config(cfg, cfg.output_dir).heldout_wording_names


def _changes_text(group: dict[str, Any]) -> str:
    return f"{group['gained']} gained and {group['lost']} lost of {group['problems']}, {format_p(group['p_value'])}"


def carry_over_verdict(groups: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(kind, the sentence that says it) for changes_by_wording's groups. kind: "carries_over" (a gain
    beyond noise on the held-out wordings), "training_wordings_only" (on the training wordings only),
    "worse" (no gain, a loss beyond noise on either) or "no_effect"."""
    train, held = groups["training_wordings"], groups["heldout_wordings"]
    detail = f"training wordings {_changes_text(train)}; held-out wordings {_changes_text(held)}"
    if accuracy_gain(held):
        return "carries_over", (f"By wording: the gain carries over to wordings never trained on ({detail}), so "
                                "what the policy learned is not tied to the phrasings of its training prompts.")
    if accuracy_gain(train):
        return "training_wordings_only", (
            f"By wording: the gain is only on the training wordings ({detail}). On wordings never trained on the "
            "change is within noise, so this run does not show arithmetic learned beyond the phrasings it trained on.")
    pooled = (f" Pooled, all {groups['all']['problems']} problems do gain beyond noise "
              f"({format_p(groups['all']['p_value'])}), but neither group alone does: evaluate more problems "
              "(--eval_problems) to tell whether the gain carries over." if accuracy_gain(groups["all"]) else "")
    if accuracy_loss(train) or accuracy_loss(held):
        fell = " and ".join(name for name, group in (("training", train), ("held-out", held)) if accuracy_loss(group))
        return "worse", (f"By wording: no gain beyond noise on either, and accuracy FELL beyond noise on the {fell} "
                         f"wordings ({detail}).{pooled}")
    return "no_effect", f"By wording: no effect beyond noise on either the training or the held-out wordings ({detail}).{pooled}"


def effect_verdict(accuracy: dict[str, Any], boxed: dict[str, Any]) -> tuple[bool, str]:
    """(whether training changed held-out behaviour beyond noise, the sentence that says so).

    Beyond noise = more problems gained than lost with a two-sided sign-test p < 0.05 (first-attempt
    accuracy, paired per problem), or a rise in the share of boxed answers whose 95% Wilson
    intervals do not overlap.
    """
    if accuracy_gain(accuracy):
        return True, (f"Training changed held-out accuracy beyond noise: {accuracy['gained']} problems became right "
                      f"and {accuracy['lost']} became wrong (sign test {format_p(accuracy['p_value'])}).")
    if boxed["after_low"] > boxed["before_high"]:
        return True, ("Training changed held-out behaviour beyond noise in the answer format: the share of first "
                      "attempts with a \\boxed{} answer rose and the two 95% intervals do not overlap. Accuracy "
                      f"moved by {accuracy['gained']} gained vs {accuracy['lost']} lost problems "
                      f"({format_p(accuracy['p_value'])}), which alone would not be distinguishable from noise.")
    if accuracy_loss(accuracy):
        return False, (f"Training made held-out accuracy WORSE beyond noise: {accuracy['lost']} problems became "
                       f"wrong and {accuracy['gained']} became right (sign test {format_p(accuracy['p_value'])}). "
                       "The policy was damaged, typically by too large a --policy_learning_rate for this many "
                       "steps; lower it before adding steps.")
    return False, ("This run shows NO held-out effect beyond noise: accuracy moved by "
                   f"{accuracy['gained']} gained vs {accuracy['lost']} lost problems ({format_p(accuracy['p_value'])}) "
                   "and the boxed-answer intervals overlap. The pipeline ran end to end, but this budget was too "
                   "small to show learning; try more --stage2_steps and --train_prompts.")


def show_stage1_examples(records: list[dict], rows: list[dict], count: int) -> dict[str, Any]:
    """Print `count` of the stage-1 `records` (stage1_values.jsonl lines) with their N rewards and
    V*, a mix of outcomes first, and the distribution of correct samples per prompt; return that
    distribution."""
    by_id = {row["id"]: row for row in rows}
    n = len(records[0]["rewards"])
    correct = [int(sum(r["rewards"])) for r in records]
    histogram = {k: correct.count(k) for k in range(n + 1)}
    mixed = [r for r, k in zip(records, correct) if 0 < k < n]
    pure = [r for r, k in zip(records, correct) if k in (0, n)]
    for record in (mixed + pure)[:count]:
        row = by_id[record["id"]]
        first = record.get("responses", [""])[0].strip().replace("\n", " ")
        print(f"  problem: {row['problem']}  (gold answer {row['answer']})")
        print(f"    rewards of the {n} samples: {' '.join(str(int(r)) for r in record['rewards'])}"
              f" -> pass rate {sum(record['rewards']) / n:.2f}, V* {record['v_star']:.3f}")
        print(f"    first sample: {textwrap.shorten(first, 150) or '(empty)'}")
    pass_rate = sum(correct) / (n * len(records))
    v_star_mean = sum(r["v_star"] for r in records) / len(records)
    print(f"\n  prompts by number of correct samples (of {n}): "
          + ", ".join(f"{k} correct: {histogram[k]}" for k in histogram))
    print(f"  mean pass rate {pass_rate:.3f}, mean V* {v_star_mean:.3f} over {len(records)} prompts")
    return {"histogram": histogram, "pass_rate": pass_rate, "v_star_mean": v_star_mean, "prompts": len(records)}


STAGE2_KIND = {"apo": "online regression", "awr": "advantage-weighted training"}


def stage2_explanation(cfg: DemoConfig) -> str:
    """What step 4 does and what its step lines mean, for the loss the run uses."""
    adapters = "LoRA adapters" if cfg.use_lora else "all weights"
    common = (f"Each step draws {cfg.prompts_per_step} training prompts, samples ONE answer per prompt from the "
              "current policy and grades it; its advantage r - V*(x) says by how much the answer beat the value "
              "stage 1 estimated for its prompt. Log-probabilities are taken at the sampling temperature "
              f"{cfg.temperature:g} (logits / T), so they describe the distribution the answers came from.")
    if cfg.policy_loss == "apo":
        loss = ("The A*-PO loss regresses beta2 * log(pi(y|x) / pi_ref(y|x)) onto that advantage: answers that "
                "beat V* become more likely, the others less, and the push on an answer stops once its log-ratio "
                f"reaches advantage / beta2 ({adapters}, learning rate {cfg.policy_learning_rate:g}, beta2 "
                f"{cfg.beta2:g}; the paper's 1e-3 suits full fine-tuning at learning rate 1e-6: at this learning "
                "rate it lets the wrong answers, most of what a 135M model samples, be pushed down by hundreds of "
                "nats). In each step line, loss is that mean squared error")
    else:
        loss = ("This run uses the pipeline's other stage-2 objective, the advantage-weighted LM loss "
                "(--policy_loss awr): the log-likelihood of each sampled answer, weighted by a softmax of the "
                "advantages over the step's answers, so the weights average 1 and the answers that beat V* weigh "
                "most. Every answer keeps a positive weight, so part of what it learns is to imitate its own "
                f"samples ({adapters}, learning rate {cfg.policy_learning_rate:g}). In each step line, loss is that "
                "weighted negative log-likelihood per token")
    text = (f"{common} {loss}, reward the share of this step's samples that were right, v* the mean V* of its "
            f"prompts, and acc the trainer's own greedy check on {max(1, cfg.eval_problems // 4)} held-out problems "
            "(measured at the end only). With few prompts per step the reward jumps around; the held-out "
            "evaluation of step 5 is the measurement.")
    if not cfg.train_correction:
        return text
    verdict_reward = ("the correctness of the answer that stands after it (the attempt after 'correct', the "
                      "revision after 'wrong'), so a verdict is worth what it does to the final answer"
                      if cfg.verify_reward == "outcome" else "1 when it agrees with the truth of the attempt (PAG)")
    return text + (
        "\n\nWith --train_correction each prompt plays a whole episode instead: the sampled answer, then the model "
        "checks it, then, after 'The answer is wrong.', revises it; each turn the model wrote is trained with the "
        "same loss on its own advantage. The answer keeps r - V*; the verdict's reward is "
        f"{verdict_reward}; the revision's is r2 + (r2 - r1), PAG's bonus for fixing. Verdicts and revisions have "
        "no stage-1 samples, so their baselines are running means of their rewards, kept apart for right and "
        "wrong checked answers, and each step trains as many verdicts on right answers as on wrong ones (the "
        "more common kind is cut to the count of the other), so a verdict that ignores the answer gains nothing"
        + (", and each check also learns from the verdict it did not say, whose reward is known from the truth."
           if cfg.verify_reward == "match" else "."))


def one_right_v_star(n: int, beta1: float = 0.5) -> float:
    """V* of a prompt with one right answer out of n samples (for the explanation of stage 1)."""
    return float(estimate_optimal_value(torch.tensor([1.0] + [0.0] * (n - 1)), beta1))


def next_commands() -> str:
    """The commands for the real setting: Qwen2.5-1.5B-Instruct on MATH, on a GPU."""
    return textwrap.dedent("""\
        python prepare_data.py --output_dir data/math            # MATH train (7,500, hub) and MATH-500
        python evaluate_apo.py --model Qwen/Qwen2.5-1.5B-Instruct --eval_file data/math/math_eval_500.jsonl \\
            --output_dir outputs/eval_qwen_base
        python train_math_apo.py --model Qwen/Qwen2.5-1.5B-Instruct --data_file data/math/math_prompts_responses.jsonl \\
            --eval_file data/math/math_eval_500.jsonl --output_dir outputs/qwen_apo \\
            --use_lora false --policy_learning_rate 1e-6 --max_new_tokens 1024 --epochs 2
        python evaluate_apo.py --model outputs/qwen_apo/final --eval_file data/math/math_eval_500.jsonl \\
            --output_dir outputs/eval_qwen_apo
        python evaluate_apo.py --compare outputs/eval_qwen_base/metrics.json outputs/eval_qwen_apo/metrics.json \\
            --output_dir outputs""")


# --- the demo ---

def main(cfg: DemoConfig) -> dict[str, Any]:
    """Run the six steps; returns the summary also written to <output_dir>/demo_summary.json."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    paths = prepare_output_dir(cfg.output_dir)
    save_config(paths[CONFIG_FILE], cfg)
    say(f"""
        This demo runs the whole pipeline with model '{cfg.model}' on {cfg.source} problems, at sizes a laptop CPU
        finishes in minutes{' (--quick: toy sizes, expect no learning)' if cfg.quick else ''}. Each step calls the
        same main() as the script you would run on a GPU. Everything is written under {cfg.output_dir}/.""")

    data = step_1_prepare_data(cfg, paths, seconds)
    before = step_2_evaluate_untrained(cfg, data, paths, seconds)
    stage1, stage1_stats = step_3_stage1(cfg, data, paths, seconds)
    stage2 = step_4_stage2(cfg, data, paths, seconds)
    after = step_5_evaluate_trained(cfg, data, stage2, paths, seconds)
    outcome = step_6_compare(cfg, data, paths)
    files = show_files_and_next_steps(data, stage1, stage2, paths)

    seconds["total"] = time.perf_counter() - started
    print(f"\ndemo finished in {seconds['total'] / 60:.1f} min ("
          + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total") + ")")
    summary = {
        "output_dir": cfg.output_dir, "files": files, "seconds": seconds, **outcome, "stage1": stage1_stats,
        "value_head_metrics": stage1["value_head_metrics"],
        "before": headline(before), "after": headline(after),
        "stage2": {key: stage2.get(key) for key in ("steps", "optimizer_steps", "final_accuracy", "nonfinite_steps")},
    }
    write_json_atomic(paths[SUMMARY_FILE], summary)
    return summary


# --- the six steps ---

def step_1_prepare_data(cfg: DemoConfig, paths: dict[str, str], seconds: dict[str, float]) -> prepare_data.PreparedData:
    heading(1, "prepare the data (prepare_data.py)")
    data_cfg = data_config(cfg, paths["data"])
    training, heldout = data_cfg.training_wording_names, data_cfg.heldout_wording_names
    wordings = "" if cfg.source != "synthetic" or training is None else (
        f" Level-1 arithmetic is worded in {len(training) + len(heldout)} ways (in symbols, in words and as short "
        f"stories, all with the same one-line solution); {', '.join(heldout) or 'none'} never appear in training"
        + (" and make up every other held-out problem, so step 6 can tell a gain that carries over to new "
           "wordings from one tied to the wordings trained on." if heldout else "."))
    say(f"""
        prepare_data reads problems, checks that every answer can be extracted from its solution's final
        \\boxed{{}}, removes duplicates and every held-out problem from the training files, and writes three JSONL
        files: all usable training problems, a subset of {cfg.train_prompts} stratified by type and level (what we
        train on), and the held-out set we evaluate on.{wordings} Below is its inspection: counts per type and
        level, and the prompt lengths in tokens.""")
    clock = time.perf_counter()
    data = prepare_data.main(data_cfg)
    seconds["prepare_data"] = time.perf_counter() - clock
    if data.eval_file is None:
        raise InputError("prepare_data wrote no eval file; the demo needs held-out problems (check --math500_path)")
    return data


def step_2_evaluate_untrained(cfg: DemoConfig, data: prepare_data.PreparedData, paths: dict[str, str],
                              seconds: dict[str, float]) -> dict:
    heading(2, "evaluate the untrained model on held-out problems (evaluate_apo.py)")
    say(f"""
        Before training, we measure the model on the first {min(cfg.eval_problems, data.num_eval)} held-out problems with greedy decoding.
        Each problem is one self-correction episode, as in PAG: the model answers, then is asked to check its own
        answer and end with 'The answer is correct.' or 'The answer is wrong.'; after 'wrong' (or a verdict it
        fails to state in exactly that form) it writes a revision, up to {cfg.max_correction_turns} attempts, and
        the last attempt is not checked again. The gold answer is only used to grade,
        never shown to the model. Acc@t1 is the share right at the first attempt, Acc@final at the last one;
        brackets are 95% confidence intervals, which at this size are wide.""")
    say(f"""
        System prompt of every episode, in training too: "{cfg.system_prompt}"{prompt_note(cfg.system_prompt)}""")
    say(f'Verify turn: "{cfg.verify_prompt}" Revise turn: "{revise_prompt(cfg)}"')
    clock = time.perf_counter()
    before = evaluate_apo.main(algorithm_config(cfg, cfg.model), eval_config(cfg, data.eval_file,
                                                                              paths["eval_before_training"]))
    seconds["evaluate_before"] = time.perf_counter() - clock
    return before


def prompt_note(system_prompt: str) -> str:
    """Why the demo's prompt is not the pipeline's, when it is not."""
    if system_prompt == SYSTEM_PROMPT:
        return " (the pipeline's MATH prompt)."
    return (f". The pipeline's MATH prompt, \"{SYSTEM_PROMPT}\", has this 135M model reason past the "
            "token limit on most problems before it states an answer; the grader reads a stated answer such as "
            "'The answer is 12.' as well as a boxed one.")


def step_3_stage1(cfg: DemoConfig, data: prepare_data.PreparedData, paths: dict[str, str],
                  seconds: dict[str, float]) -> tuple[dict, dict]:
    heading(3, "A*-PO stage 1: estimate V* from the reference policy (train_math_apo.py --stage 1)")
    say(f"""
        For each of the {data.num_subset} training prompts, the untrained model (the reference policy) answers
        N = {cfg.num_value_samples} times (sampling at temperature {cfg.temperature:g}, top_p {cfg.top_p:g}; the
        paper uses 1.0, at which this small model rarely writes anything right), and each answer gets reward 1 if its final answer is
        right, else 0. V* = beta1 * log(mean(exp(r / beta1))) with beta1 = 0.5 turns the N rewards into the value
        of the best policy near the reference one: 0 when every sample failed, 1 when all succeeded, and above the
        plain pass rate in between (one right answer out of {cfg.num_value_samples} gives V* =
        {one_right_v_star(cfg.num_value_samples):.3f}). Stage 2 uses V* as the baseline
        of each prompt. A small value head is also fit to predict V* from the model's hidden state.""")
    clock = time.perf_counter()
    stage1 = train_math_apo.main((algorithm_config(cfg, cfg.model), train_config(cfg, data, paths["train"], "1"),
                                  correction_config(cfg)))
    seconds["stage1"] = time.perf_counter() - clock
    stage1_records = read_stage1_values(stage1["stage1_values"], cfg.num_value_samples)
    stage1_stats = show_stage1_examples(list(stage1_records.values()),
                                        read_problem_rows(data.subset_file, require_answer=True),
                                        cfg.examples_shown)
    held = (stage1["value_head_metrics"] or {}).get("held_out")
    if held:
        print(f"  value head on its {held['n']} held-out prompts: mse {held['mse']:.4f}, mae {held['mae']:.4f}, "
              f"correlation with V* {'n/a' if held['corr'] is None else format(held['corr'], '.3f')}"
              + (" (too few prompts to judge the head; this checks that it trains and saves)" if held["n"] < 20
                 else ""))
    say("""
        A prompt whose samples all failed has V* = 0 and, in stage 2, a wrong answer there costs nothing
        while a right one is a large positive surprise. Prompts with V* near 1 are already solved.""")
    return stage1, stage1_stats


def step_4_stage2(cfg: DemoConfig, data: prepare_data.PreparedData, paths: dict[str, str],
                  seconds: dict[str, float]) -> dict:
    heading(4, f"A*-PO stage 2: {cfg.stage2_steps} steps of {STAGE2_KIND[cfg.policy_loss]} "
               "(train_math_apo.py --stage 2)")
    say(stage2_explanation(cfg))
    clock = time.perf_counter()
    stage2 = train_math_apo.main((algorithm_config(cfg, cfg.model), train_config(cfg, data, paths["train"], "2"),
                                  correction_config(cfg)))
    seconds["stage2"] = time.perf_counter() - clock
    if "final_dir" not in stage2:
        raise RuntimeError(f"stage 2 stopped before its last step (summary: {stage2}); the demo has no final model")
    return stage2


def step_5_evaluate_trained(cfg: DemoConfig, data: prepare_data.PreparedData, stage2: dict, paths: dict[str, str],
                            seconds: dict[str, float]) -> dict:
    heading(5, "evaluate the trained model on the same held-out problems (evaluate_apo.py)")
    say(f"""
        The same {min(cfg.eval_problems, data.num_eval)} problems, the same greedy self-correction episodes, now with the trained policy
        saved in {stage2['final_dir']}/ (LoRA merged into the weights, loadable with from_pretrained).""")
    clock = time.perf_counter()
    after = evaluate_apo.main(algorithm_config(cfg, stage2["final_dir"]),
                              eval_config(cfg, data.eval_file, paths["eval_after_training"]))
    seconds["evaluate_after"] = time.perf_counter() - clock
    return after


def step_6_compare(cfg: DemoConfig, data: prepare_data.PreparedData, paths: dict[str, str]) -> dict[str, Any]:
    """comparison.md, the paired first-attempt changes and the verdict, overall and by wording; returns
    them for the summary."""
    heading(6, "compare, and what to run next")
    evaluate_apo.main(algorithm_config(cfg, cfg.model), evaluate_apo.EvalConfig(
        compare=[os.path.join(paths[name], "metrics.json") for name in ("eval_before_training", "eval_after_training")],
        output_dir=cfg.output_dir))
    records = {when: read_generations(os.path.join(paths[folder], "generations.jsonl"))
               for when, folder in (("before", "eval_before_training"), ("after", "eval_after_training"))}
    attempts_before, attempts_after = first_attempts(records["before"]), first_attempts(records["after"])
    accuracy = paired_changes(attempts_before, attempts_after)
    boxed = boxed_summary(attempts_before, attempts_after)
    effect, verdict = effect_verdict(accuracy, boxed)
    print(f"first attempts with a \\boxed{{}} answer: before {rate_with_interval(*boxed['before'])}, "
          f"after {rate_with_interval(*boxed['after'])}")
    print(f"first-attempt changes per problem: {accuracy['gained']} became right, {accuracy['lost']} became wrong, "
          f"{accuracy['problems'] - accuracy['gained'] - accuracy['lost']} unchanged "
          f"(exact sign test {format_p(accuracy['p_value'])})\n")
    say(verdict)
    wording_of, heldout = eval_wordings(cfg, data)
    by_wording, carry_over = compare_by_wording(wording_of, heldout, attempts_before, attempts_after)
    correction = compare_correction(cfg, records, wording_of, heldout) if cfg.max_correction_turns >= 2 else None
    learned = (" and, in this run, that the policy learned from its own graded samples" if effect else
               "; this run did not show that the policy learned")
    say(f"""
        What this shows and what it does not: a 135M model on synthetic problems shows that every stage of the
        pipeline works{learned}. At this size ({cfg.stage2_steps * cfg.prompts_per_step} stage-2 rollouts) the
        effect, and whether it reaches the held-out wordings, varies from seed to seed: docs/demo_transcript.md
        compares five seeds of the defaults. It says nothing about the size of the
        gain A*-PO gives a 1.5B model on MATH (the paper reports 45.8 -> 57.8 on MATH-500 for base
        Qwen2.5-1.5B trained for 25 epochs of MATH on 4 H100s; docs/REPRODUCING.md has the recipe).
        """)
    return {"effect_beyond_noise": effect, "verdict": verdict, "first_attempt_changes": accuracy,
            "boxed_first_attempts": boxed, "by_wording": by_wording, "carry_over": carry_over,
            "self_correction": correction}


def format_rate(value: float | None) -> str:
    """A rate with two decimals, 'n/a' for one over an empty class (None)."""
    return "n/a" if value is None else f"{value:.2f}"


def _loop_line(report: dict[str, Any]) -> str:
    n = report["problems"]
    return (f"Acc@t1 {report['t1_correct']}/{n} -> Acc@final {report['final_correct']}/{n}; "
            f"{report['fixed']} fixed, {report['broken']} broken ({format_p(report['p_value'])}); verifier approves "
            f"{report['approved_right']}/{report['right_checked']} right, revises {report['revised_wrong']}/"
            f"{report['wrong_checked']} wrong, balanced accuracy {format_rate(report['balanced_accuracy'])} "
            f"(Fisher {format_p(report['verifier_p_value'])})")


def compare_correction(cfg: DemoConfig, records: dict[str, list[dict]], wording_of: dict[str, str | None],
                       heldout: Sequence[str]) -> dict[str, Any]:
    """Print what the verify-and-revise loop did before and after training (`records`: the generation
    records of each evaluation, under "before" and "after"), on all held-out problems and on the training
    and held-out wordings apart, with its verdict; returns
    {"before"/"after": {group: loop_report}, "trained_turns", "sentence"}."""
    reports: dict[str, Any] = {}
    for when, evaluated in records.items():
        members = wording_groups({r["id"] for r in evaluated}, wording_of, heldout)
        reports[when] = {name: loop_report(evaluated, group) for name, group in members.items() if group}
    trained = "attempt, verify and revise turns" if cfg.train_correction else "first attempts only"
    print(f"\nthe verify-and-revise loop on the held-out problems (training: {trained}):")
    for when in ("before", "after"):
        for name, title in (("all", "all problems"), ("training_wordings", "training wordings"),
                            ("heldout_wordings", "held-out wordings")):
            if name in reports[when]:
                print(f"  {when + ',':7} {title + ':':19} {_loop_line(reports[when][name])}")
    after = reports["after"]["all"]
    if after["broken"] > after["fixed"]:
        effect = (f"After training the loop COSTS accuracy: it broke {after['broken']} right first attempts and fixed "
                  f"{after['fixed']} wrong ones.")
    elif loop_helps(after):
        effect = (f"After training the loop raises accuracy beyond noise: {after['fixed']} fixed, {after['broken']} "
                  f"broken ({format_p(after['p_value'])}).")
    else:
        effect = (f"After training the loop does no harm but no good beyond noise either: {after['fixed']} fixed, "
                  f"{after['broken']} broken ({format_p(after['p_value'])}).")
    verifier = ("The verifier tells right from wrong beyond noise" if verifier_discriminates(after) else
                "The verifier does not tell right from wrong beyond noise")
    untrained = "" if cfg.train_correction else (
        " This run trained first attempts only: the verify and revise turns are the untrained model's (add "
        "--train_correction to train them, in about 1.5 times the time; docs/demo_transcript.md).")
    sentence = (f"{effect} {verifier} (balanced accuracy {after['balanced_accuracy'] or 0:.2f}, "
                f"{format_p(after['verifier_p_value'])}, where a constant verdict scores 0.50).{untrained}")
    say(sentence)
    return {**reports, "trained_turns": trained, "sentence": sentence}


def compare_by_wording(wording_of: dict[str, str | None], heldout: Sequence[str], attempts_before: dict[str, dict],
                       attempts_after: dict[str, dict]) -> tuple[dict | None, dict | None]:
    """Print first-attempt accuracy on the training and the held-out wordings (`eval_wordings`) and the
    carry-over verdict; returns (changes_by_wording's groups, {"kind", "sentence", "heldout_wordings"}), or
    (None, None) when no evaluated problem is in a held-out wording."""
    groups = changes_by_wording(attempts_before, attempts_after, wording_of, heldout)
    if not groups["heldout_wordings"]["problems"]:
        print("by wording: no evaluated problem is in a wording held out of training (--synthetic_heldout_wordings), "
              "so this run does not test whether a gain carries over to new wordings")
        return None, None
    print(f"first-attempt accuracy by wording (held out of training: {', '.join(heldout)}):")
    for name, title in (("training_wordings", "training wordings"), ("heldout_wordings", "held-out wordings"),
                        ("all", "all problems")):
        group = groups[name]
        print(f"  {title + ':':19} before {rate_with_interval(group['before_correct'], group['problems'])}, after "
              f"{rate_with_interval(group['after_correct'], group['problems'])}; {group['gained']} became right, "
              f"{group['lost']} became wrong (exact sign test {format_p(group['p_value'])})")
    kind, sentence = carry_over_verdict(groups)
    say(sentence)
    return groups, {"kind": kind, "sentence": sentence, "heldout_wordings": list(heldout)}


def show_files_and_next_steps(data: prepare_data.PreparedData, stage1: dict, stage2: dict,
                              paths: dict[str, str]) -> dict[str, Any]:
    """Print where every file went and the commands of the real setting; returns the file map."""
    files = {
        "data": [data.train_file, data.subset_file, data.eval_file],
        "stage 1 values": stage1["stage1_values"], "value head": stage1["value_head"],
        "trained model": stage2["final_dir"], "training metrics": stage2.get("metrics_file"),
        "training curve": stage2.get("plot"),
        "evaluations": [paths["eval_before_training"], paths["eval_after_training"]],
        "comparison": paths["comparison.md"], "summary": paths[SUMMARY_FILE],
    }
    print("\nwhere every file went:")
    for name, value in files.items():
        print(f"  {name + ':':18} {', '.join(value) if isinstance(value, list) else value}")
    print("  (each evaluation folder holds generations.jsonl, metrics.json, results.md and PNG plots)")
    print("\nthe real setting, Qwen2.5-1.5B-Instruct on MATH on a GPU:\n")
    print(textwrap.indent(next_commands(), "  "))
    say("""
        The paper trains for 25 epochs of MATH, 256 prompts per step, with vLLM rollouts on 4 H100s. Start with
        --epochs 2 above, read the ms/step of the step lines, and plan longer runs from that. Add --num_samples 32 --eval_temperature 0.6 --eval_top_p
        0.95 --pass_k 1 8 32 to evaluate_apo.py for PAG's Avg@32 numbers.""")
    return files


def boxed_summary(before: dict[str, dict], after: dict[str, dict]) -> dict[str, Any]:
    """Boxed-answer counts before and after, with the bounds effect_verdict compares."""
    counts = {"before": boxed_share(before), "after": boxed_share(after)}
    return {**counts, "before_high": wilson_interval(*counts["before"])[1],
            "after_low": wilson_interval(*counts["after"])[0]}


def headline(metrics: dict) -> dict[str, Any]:
    overall = metrics["overall"]
    return {key: overall[key] for key in ("acc_t1", "acc_final", "improvement", "revision_rate", "truncation_rate",
                                          "no_answer_t1")} | {"num_problems": metrics["num_problems"]}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_main(lambda argv: main(*parse_config((DemoConfig,), argv)))
