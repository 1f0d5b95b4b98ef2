"""Verdict parsing and the multi-turn self-correction episode, generated through apo.generation.

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
from typing import TYPE_CHECKING, Literal

from apo.correction_modes import CORRECTION_MODES, CorrectionMode  # noqa: F401  (re-exported)
from apo.decoding import stream_seed
from apo.generation import Generation, cut_after_eos, eos_token_ids, generate  # noqa: F401  (re-exported)
from apo.prompts import Message, encode_chat, encode_context, first_turn_context

if TYPE_CHECKING:
    from apo.config import A_PO_Config

logger = logging.getLogger(__name__)

__all__ = ["CORRECTION_MODES", "Episode", "Generation", "Turn", "encode_chat", "eos_token_ids", "generate",
           "parse_verdict", "run_episodes"]
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
    seeds: Sequence[int] | None = None,
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
    to the config's. seeds: one per problem (>= 0); turn k of problem i is sampled from the stream
    seeded with `stream_seed(seeds[i], k)` (apo.generation), whichever problems are batched with
    it; None draws seeds from the global torch RNG. Raises ValueError for an unknown mode, an
    oracle mode without a judge, or seeds that do not match the problems.
    """
    mode = cfg.correction_mode if mode is None else mode
    if mode not in CORRECTION_MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(CORRECTION_MODES)}")
    if mode == "oracle" and oracle_judge is None:
        raise ValueError("mode='oracle' needs oracle_judge(problem_indices, attempt_texts) -> list[bool] "
                         "(True = correct); it is an upper bound that uses the gold answers")
    if mode != "oracle" and oracle_judge is not None:
        raise ValueError(f"oracle_judge was given with mode={mode!r}; the gold answer must not steer {mode} episodes")
    if seeds is not None and len(seeds) != len(problems):
        raise ValueError(f"run_episodes got {len(seeds)} seeds for {len(problems)} problems")
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
    sample["episode_seeds"] = None if seeds is None else [int(seed) for seed in seeds]
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
    episode_seeds = settings.pop("episode_seeds")
    prompts = [encode_context(tokenizer, contexts[index], prompt_format) for index in active]
    if episode_seeds is not None:  # turn k of episode i: its own stream, whatever else is batched with it
        settings["seeds"] = [stream_seed(episode_seeds[index], len(episodes[index].turns)) for index in active]
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
