"""The one prompt builder: the first-turn prompt of every stage, and the encoding of later turns.

Stage 1, stage 2, evaluation, the demo, prepare_data's length report and the benchmarks all
build a problem's first prompt here, so a recipe's `prompt_format` means the same everywhere:

  * `chat`: [system(system_prompt), user(problem)] under the tokenizer's chat template, ending
    with the assistant's generation prompt (PAG's format, and this project's default).
  * `raw`: the problem followed by " " + RAW_INSTRUCTION, tokenized as plain text with no
    chat template and no special tokens, even when the tokenizer has a template (what the
    official A*-PO code feeds base Qwen2.5; Brantley et al., 2025, arXiv 2505.20686).

Later turns of a self-correction episode (verify, revise) exist only in `chat`: a `raw`
context holds the one user message, and `encode_context` refuses more.

>>> first_turn_context("What is 1+1?", "raw", system_prompt="unused")
[{'role': 'user', 'content': "What is 1+1? Let's think step by step and output the final answer within \\\\boxed{}."}]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

Message = dict[str, str]
PromptFormat = Literal["chat", "raw"]
PROMPT_FORMATS: tuple[str, ...] = get_args(PromptFormat)
# The official A*-PO instruction (its preprocess/data_preprocess/math_dataset.py), appended after one space.
RAW_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


def first_turn_context(problem: str, prompt_format: str, system_prompt: str) -> list[Message]:
    """The first turn as messages: [system, user] for `chat`, one user message holding the raw
    text (problem + " " + RAW_INSTRUCTION) for `raw`. Raises ValueError for another format."""
    _check_format(prompt_format)
    if prompt_format == "raw":
        return [{"role": "user", "content": f"{problem} {RAW_INSTRUCTION}"}]
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": problem}]


def encode_chat(tokenizer, messages: Sequence[Message]) -> list[int]:
    """Token ids of `messages` under the tokenizer's chat template, ending with the generation
    prompt of the assistant turn (`add_generation_prompt=True`)."""
    encoded = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                            return_dict=True)
    return list(encoded["input_ids"])


def encode_context(tokenizer, context: Sequence[Message], prompt_format: str) -> list[int]:
    """Token ids the model is given for `context` (a list of messages) in `prompt_format`.

    `chat`: `encode_chat`. `raw`: the single user message's text, tokenized without special
    tokens; a raw context with more than that one message raises ValueError (raw prompts have
    no turns to verify or revise in).
    """
    _check_format(prompt_format)
    if prompt_format == "chat":
        return encode_chat(tokenizer, context)
    if len(context) != 1 or context[0]["role"] != "user":
        raise ValueError(f"prompt_format='raw' has a single user turn, got {len(context)} messages; self-correction "
                         "turns need prompt_format chat (or correction_mode none)")
    return list(tokenizer(context[0]["content"], add_special_tokens=False)["input_ids"])


def encode_problem(tokenizer, problem: str, prompt_format: str, system_prompt: str) -> list[int]:
    """Token ids of a problem's first-turn prompt: what stage 1, stage 2 and evaluation feed the model."""
    return encode_context(tokenizer, first_turn_context(problem, prompt_format, system_prompt), prompt_format)


def _check_format(prompt_format: str) -> None:
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format={prompt_format!r} is not one of {', '.join(PROMPT_FORMATS)}")
