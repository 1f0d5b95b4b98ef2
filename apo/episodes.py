"""Batched generation, verdict parsing and the multi-turn self-correction episode.

The episode follows PAG (Jiang et al., 2025, "PAG: Multi-Turn Reinforced LLM Self-Correction
with Policy as Generative Verifier", arXiv 2506.10406, and its official code's PAG rollout):
one policy plays solver and verifier.

1. attempt:  the first-turn prompt (apo.prompts: [system, user(problem)] in `chat`)
             -> assistant(attempt)
2. verify:   ... + [assistant(attempt), user(verify_prompt)] -> assistant(verification),
             whose verdict is the final "The answer is correct." or "... wrong." (`parse_verdict`)
3. revise:   only after a "wrong" verdict, ... + [assistant(verification), user(revise_prompt)]
             -> assistant(revision); then verify again, up to `max_correction_turns` attempts.
   The last attempt is not verified (PAG's default, `end_with_verifer` false): no revision
   could follow that verdict. `verify_final_attempt` adds that turn.

Modes (`A_PO_Config.correction_mode`):
  * `self_verify`: the protocol above. Only problem texts reach `run_episodes`, so the gold
    answer cannot reach the model.
  * `none`: the first attempt only.
  * `oracle`: no verify turns; retry with `oracle_revise_prompt` ("Your previous answer is
    wrong. ...") only where `oracle_judge` (a closure over the gold answers) says the attempt
    is wrong. The model learns that the attempt is wrong, never the answer. This is an UPPER
    BOUND, not self-correction.

All turns of all problems advance together: one batched `generate` call per turn index.

>>> episodes = run_episodes(model, tokenizer, ["What is 1+1?"], cfg)   # doctest: +SKIP
>>> episodes[0].final_attempt.text                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

import torch
from tqdm.auto import tqdm

from apo.decoding import DecodingCopy, sample_continuations
from apo.prompts import Message, encode_chat, encode_context, first_turn_context

if TYPE_CHECKING:
    from apo.config import A_PO_Config

logger = logging.getLogger(__name__)

__all__ = ["CORRECTION_MODES", "Episode", "Generation", "Turn", "encode_chat", "eos_token_ids", "generate",
           "parse_verdict", "run_episodes"]
# The one list of correction modes: the config field's type, run_episodes, the metrics and the records use it.
CorrectionMode = Literal["self_verify", "oracle", "none"]
CORRECTION_MODES: tuple[str, ...] = get_args(CorrectionMode)
Verdict = Literal["correct", "wrong"]
VERDICT_PARSES = ("pag", "lenient")

# PAG's pattern, as its official code applies it (re.finditer, no flags): the sentence with its period
# ends the text ('$' also allows one final newline).
_PAG_VERDICT = re.compile(r"The answer is (correct|wrong)\.$")
# The lenient parse: the phrase occurs exactly once and ends the text, decoration and period optional.
_VERDICT_PHRASE = re.compile(r"The answer is (correct|wrong)\b")
_VERDICT_AT_END = re.compile(r"\bThe answer is (correct|wrong)$")
# Markdown and quoting a chat model wraps around its last sentence: **...**, $...$, '...'.
_TRAILING_DECORATION = " \t\r\n*_$'\"`"


# --- generation ---

@dataclass
class Generation:
    """One sampled response.

    `response_ids` end after the first EOS token, inclusive; `truncated` is True when the
    response reached `max_new_tokens` without an EOS (A*-PO gives such a response reward 0).
    `text` is decoded without special tokens. `sampled_logprobs` is filled only by the vLLM
    engine when asked (`VLLMEngine.generate(with_logprobs=True)`, for bench/gpu_check.py):
    the engine's log-prob of each response token; training recomputes its own.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    truncated: bool
    sampled_logprobs: list[float] | None = None


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's `eos_token_id` and every id in the model's generation config
    (chat models often stop on an end-of-turn token as well as the end-of-text token)."""
    ids: list[int] = []
    candidates = [tokenizer.eos_token_id]
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        configured = generation_config.eos_token_id
        candidates += list(configured) if isinstance(configured, (list, tuple)) else [configured]
    for token_id in candidates:
        if token_id is not None and int(token_id) not in ids:
            ids.append(int(token_id))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config defines an EOS token id")
    return ids


def cut_after_eos(token_ids: Sequence[int], eos_ids: Sequence[int]) -> tuple[list[int], bool]:
    """`token_ids` up to and including the first EOS, and whether an EOS was found."""
    eos = set(eos_ids)
    for position, token_id in enumerate(token_ids):
        if token_id in eos:
            return list(token_ids[: position + 1]), True
    return list(token_ids), False


def sampling_kwargs(temperature: float, top_p: float) -> dict:
    """`model.generate` settings that sample from the policy itself.

    temperature 0 is greedy decoding. Otherwise plain temperature / nucleus sampling, with
    the sampling modifiers a model's own generation_config may carry (Qwen2.5-Instruct ships
    top_k=20 and repetition_penalty=1.05) and transformers' default top_k=50 switched off:
    A*-PO's regression and V* estimate assume the samples come from pi itself.
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature} must be >= 0 and top_p={top_p} in (0, 1]")
    neutral = {"min_p": None, "typical_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    if temperature == 0:  # transformers' neutral values, which greedy decoding ignores anyway
        return {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50, **neutral}
    return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0, **neutral}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    num_samples: int = 1,
    progress: bool = False,
) -> list[Generation]:
    """Generate `num_samples` responses per prompt (token ids, e.g. from `encode_chat`), in the
    input order, prompt-major: result[i * num_samples + j] is sample j of prompt i.

    `model` is a transformers causal LM, an `apo.decoding.DecodingCopy` (its model decodes), or
    an `apo.vllm_engine.VLLMEngine` (`--generation_backend vllm`), which receives the same
    prompt ids, EOS ids, length limit and sampling settings and returns the same kind of
    Generation. With transformers, the
    prompts are sorted by length and sampled in chunks of at most `batch_size` rows by
    `apo.decoding.sample_continuations` (each prompt prefilled once for all its samples,
    finished rows dropped), then restored to the input order. Sampling seeds come from the
    global torch RNG on both engines: call `torch.manual_seed` for reproducible samples.
    Raises ValueError for an empty prompt or an invalid setting.
    """
    if batch_size < 1 or max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens} and num_samples={num_samples} "
                         "must be >= 1")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generate() got an empty prompt; encode prompts with apo.prompts.encode_problem()")
    sampling_kwargs(temperature, top_p)  # validates the settings
    from apo.vllm_engine import VLLMEngine  # here, not at the top: apo.vllm_engine imports this module

    if isinstance(model, VLLMEngine):
        return model.generate(tokenizer, prompts, eos_ids=eos_token_ids(model, tokenizer),
                              max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              num_samples=num_samples)
    if isinstance(model, DecodingCopy):
        model = model.model
    eos_ids = eos_token_ids(model, tokenizer)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    _warn_beyond_context_window(model, prompts, max_new_tokens)
    by_prompt: list[list[Generation]] = [[] for _ in prompts]
    for chunk in tqdm(_row_chunks(prompts, num_samples, batch_size), desc="generate", unit="batch",
                      disable=not progress):
        responses = sample_continuations(
            model, [prompts[index] for index, _ in chunk], [count for _, count in chunk],
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_ids=eos_ids,
            pad_token_id=pad_token_id)
        rows = iter(responses)
        for index, count in chunk:
            for _ in range(count):
                response_ids, found_eos = cut_after_eos(next(rows), eos_ids)
                by_prompt[index].append(Generation(
                    prompt_ids=list(prompts[index]), response_ids=response_ids,
                    text=tokenizer.decode(response_ids, skip_special_tokens=True), truncated=not found_eos))
    return [generation for generations in by_prompt for generation in generations]


def _row_chunks(prompts: list[list[int]], num_samples: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """(prompt index, sample count) groups of at most `batch_size` rows in all, prompts taken in
    length order (less padding per chunk); a prompt's samples may be split across two chunks."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunks: list[list[tuple[int, int]]] = [[]]
    room = batch_size
    for index in order:
        left = num_samples
        while left:
            if room == 0:
                chunks.append([])
                room = batch_size
            take = min(left, room)
            chunks[-1].append((index, take))
            left -= take
            room -= take
    return chunks


def _warn_beyond_context_window(model, prompts: list[list[int]], max_new_tokens: int) -> None:
    """Log how many prompts could run past the model's `max_position_embeddings`; nothing is cut."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    too_long = sum(len(prompt) + max_new_tokens > limit for prompt in prompts)
    if too_long:
        logger.warning("%d of %d prompts plus max_new_tokens=%d exceed the model's context window of %d tokens; "
                       "they are generated untruncated (shorten the prompts or lower max_new_tokens)",
                       too_long, len(prompts), max_new_tokens, limit)


# --- verdicts ---

def parse_verdict(text: str, rule: str = "pag") -> Verdict | None:
    """The verdict of a verification: "correct", "wrong", or None when unparseable.

    rule "pag" (default): PAG's pattern `The answer is (correct|wrong)\.$`, matched exactly once
    as its official code does; the text must end with the sentence and its period (one final
    newline allowed). Case-sensitive.

    rule "lenient": the verdict is parsed when the text, stripped of trailing whitespace and of the markdown
    and quoting a chat model wraps around its last sentence (`*`, `_`, `$`, quotes,
    backticks), ends with `The answer is correct` or `The answer is wrong` (a final period
    allowed, also inside the decoration: `**The answer is wrong.**`), and the phrase
    `The answer is correct|wrong` occurs exactly once in the whole text (as whole words:
    "The answer is correctly derived" does not count). A text that names both verdicts,
    repeats one, or ends elsewhere gives None. Case-sensitive, as in PAG.
    Raises ValueError for another rule.
    """
    if rule == "pag":
        matches = _PAG_VERDICT.findall(text)
        return matches[0] if len(matches) == 1 else None  # type: ignore[return-value]
    if rule != "lenient":
        raise ValueError(f"verdict rule {rule!r} is not one of {', '.join(VERDICT_PARSES)}")
    if len(_VERDICT_PHRASE.findall(text)) != 1:
        return None
    stripped = text.rstrip(_TRAILING_DECORATION)
    if stripped.endswith("."):
        stripped = stripped[:-1].rstrip(_TRAILING_DECORATION)
    match = _VERDICT_AT_END.search(stripped)
    return match.group(1) if match else None  # type: ignore[return-value]


# --- the episode ---

@dataclass
class Turn:
    """One generated turn of an episode.

    role: "attempt" (the first solution), "revise" (a later solution) or "verify".
    attempt_index: the attempt this turn produced (attempt/revise) or checked (verify), from 0.
    messages: the context the model was given; prompt_ids: its encoding (apo.prompts.encode_context).
    verdict / verdict_parsed: verify turns only (None / False on solution turns).
    over_length_budget: the prompt exceeded max_prompt_length + (earlier turns) * max_new_tokens;
    the turn was still generated from the full context (nothing is truncated) and counted.
    """

    role: Literal["attempt", "verify", "revise"]
    attempt_index: int
    messages: list[Message]
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    truncated: bool
    verdict: Verdict | None = None
    verdict_parsed: bool = False
    over_length_budget: bool = False


@dataclass
class Episode:
    """All turns of one problem, in the order they were generated."""

    problem: str
    turns: list[Turn] = field(default_factory=list)

    @property
    def attempts(self) -> list[Turn]:
        """Solution turns (the attempt and every revision), in order."""
        return [turn for turn in self.turns if turn.role in ("attempt", "revise")]

    @property
    def first_attempt(self) -> Turn:
        return self.attempts[0]

    @property
    def final_attempt(self) -> Turn:
        """The last solution: its answer is the episode's answer."""
        return self.attempts[-1]

    @property
    def verifications(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.role == "verify"]


OracleJudge = Callable[[list[int], list[str]], list[bool]]


def run_episodes(
    model,
    tokenizer,
    problems: list[str],
    cfg: A_PO_Config,
    *,
    mode: str | None = None,
    oracle_judge: OracleJudge | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    unparsed_verdict_revises: bool = True,
    progress: bool = False,
) -> list[Episode]:
    """Run one self-correction episode per problem text, batched across problems turn by turn.

    mode: `self_verify`, `none` or `oracle` (default `cfg.correction_mode`); at most
    `cfg.max_correction_turns` attempts. In `self_verify` every attempt but the last is verified
    (the last one too with `cfg.verify_final_attempt`), verdicts are read with
    `parse_verdict(text, cfg.verdict_parse)`, and a revision follows a "wrong" verdict, or an
    unparseable one when `unparsed_verdict_revises` (PAG's evaluation convention; its training
    convention is False). First-turn prompts come from apo.prompts in `cfg.prompt_format`.
    `oracle_judge(problem_indices, attempt_texts) -> list[bool]` returns True where the attempt
    is CORRECT (no retry) and False where it is wrong (retry); it is required in `oracle` mode,
    which is an upper bound, not self-correction. temperature / top_p / max_new_tokens default
    to the config's. Raises ValueError for an unknown mode or an oracle mode without a judge.
    """
    mode = cfg.correction_mode if mode is None else mode
    if mode not in CORRECTION_MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(CORRECTION_MODES)}")
    if mode == "oracle" and oracle_judge is None:
        raise ValueError("mode='oracle' needs oracle_judge(problem_indices, attempt_texts) -> list[bool] "
                         "(True = correct); it is an upper bound that uses the gold answers")
    if mode != "oracle" and oracle_judge is not None:
        raise ValueError(f"oracle_judge was given with mode={mode!r}; the gold answer must not steer {mode} episodes")
    sample = dict(
        max_new_tokens=cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p if top_p is None else top_p,
        batch_size=cfg.generation_batch_size, progress=progress,
    )
    budget = _LengthBudget(cfg.max_prompt_length, sample["max_new_tokens"])
    episodes = [Episode(problem=problem) for problem in problems]
    sample["verdict_parse"] = cfg.verdict_parse
    sample["prompt_format"] = cfg.prompt_format
    contexts = [first_turn_context(problem, cfg.prompt_format, cfg.system_prompt) for problem in problems]
    active = list(range(len(problems)))
    max_attempts = 1 if mode == "none" else cfg.max_correction_turns
    for attempt_index in range(max_attempts):
        if not active:
            break
        # 1. a solution for every active problem (the attempt, then revisions)
        role = "attempt" if attempt_index == 0 else "revise"
        solutions = _generate_turn(model, tokenizer, episodes, contexts, active, role, attempt_index, sample, budget)
        if mode == "none":
            break
        # 2. decide who revises: the model's own verdict, or the oracle (upper bound)
        if mode == "self_verify":
            if attempt_index == max_attempts - 1 and not cfg.verify_final_attempt:
                break  # PAG's default: the final attempt is not verified
            for index in active:
                contexts[index].append({"role": "user", "content": cfg.verify_prompt})
            verifications = _generate_turn(model, tokenizer, episodes, contexts, active, "verify", attempt_index,
                                           sample, budget)
            retry = [_revises(turn.verdict, unparsed_verdict_revises) for turn in verifications]
        else:
            if attempt_index == max_attempts - 1:
                break
            judged = list(oracle_judge(list(active), [turn.text for turn in solutions]))  # type: ignore[misc]
            if len(judged) != len(active):
                raise ValueError(f"oracle_judge returned {len(judged)} verdicts for {len(active)} attempts")
            retry = [not bool(correct) for correct in judged]
        active = [index for index, again in zip(active, retry) if again]
        revise_prompt = cfg.oracle_revise_prompt if mode == "oracle" else cfg.revise_prompt
        for index in active:
            contexts[index].append({"role": "user", "content": revise_prompt})
    if budget.exceeded:
        logger.warning("%d of %d turn prompts exceeded max_prompt_length + turns * max_new_tokens; they were "
                       "generated from the full context and are flagged over_length_budget", budget.exceeded,
                       budget.seen)
    return episodes


def _revises(verdict: Verdict | None, unparsed_verdict_revises: bool) -> bool:
    if verdict is None:
        return unparsed_verdict_revises
    return verdict == "wrong"


@dataclass
class _LengthBudget:
    """Counts prompts longer than max_prompt_length + (earlier turns) * max_new_tokens."""

    max_prompt_length: int
    max_new_tokens: int
    seen: int = 0
    exceeded: int = 0

    def check(self, prompt_length: int, earlier_turns: int) -> bool:
        self.seen += 1
        over = prompt_length > self.max_prompt_length + earlier_turns * self.max_new_tokens
        self.exceeded += int(over)
        return over


def _generate_turn(model, tokenizer, episodes: list[Episode], contexts: list[list[Message]], active: list[int],
                   role: str, attempt_index: int, sample: dict, budget: _LengthBudget) -> list[Turn]:
    """Generate the next assistant turn for the `active` episodes, record it, extend their contexts."""
    settings = dict(sample)
    verdict_parse, prompt_format = settings.pop("verdict_parse"), settings.pop("prompt_format")
    prompts = [encode_context(tokenizer, contexts[index], prompt_format) for index in active]
    generations = generate(model, tokenizer, prompts, **settings)
    turns = []
    for index, generation in zip(active, generations):
        verdict = parse_verdict(generation.text, verdict_parse) if role == "verify" else None
        turn = Turn(
            role=role, attempt_index=attempt_index, messages=[dict(m) for m in contexts[index]],
            prompt_ids=generation.prompt_ids, response_ids=generation.response_ids, text=generation.text,
            truncated=generation.truncated, verdict=verdict, verdict_parsed=verdict is not None,
            over_length_budget=budget.check(len(generation.prompt_ids), len(episodes[index].turns)),
        )
        episodes[index].turns.append(turn)
        contexts[index].append({"role": "assistant", "content": generation.text})
        turns.append(turn)
    return turns
