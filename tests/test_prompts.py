"""apo.prompts: the one first-turn prompt builder (chat and raw), and that every stage uses it."""

from __future__ import annotations

import pytest

from apo import stage1
from apo.config import A_PO_Config, CORRECTION_MODES
from apo.episodes import run_episodes
from apo.prompts import (
    PROMPT_FORMATS, RAW_INSTRUCTION, encode_chat, encode_context, encode_problem, first_turn_context,
)
from test_episodes import ScriptedModel, config

PROBLEM = "What is $2 + 3$?"


def test_raw_prompt_is_the_problem_and_the_official_instruction_without_a_template(embedded_tokenizer):
    assert embedded_tokenizer.chat_template  # the tokenizer has a template, and raw must not use it
    ids = encode_problem(embedded_tokenizer, PROBLEM, "raw", system_prompt="ignored")
    text = PROBLEM + " Let's think step by step and output the final answer within \\boxed{}."
    assert RAW_INSTRUCTION == "Let's think step by step and output the final answer within \\boxed{}."
    assert ids == embedded_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert embedded_tokenizer.decode(ids) == text and "<|im_start|>" not in embedded_tokenizer.decode(ids)


def test_chat_prompt_is_system_and_problem_under_the_template(embedded_tokenizer):
    cfg = A_PO_Config()
    ids = encode_problem(embedded_tokenizer, PROBLEM, "chat", cfg.system_prompt)
    assert first_turn_context(PROBLEM, "chat", cfg.system_prompt) == [
        {"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": PROBLEM}]
    assert ids == encode_chat(embedded_tokenizer, first_turn_context(PROBLEM, "chat", cfg.system_prompt))
    assert embedded_tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_raw_contexts_have_one_turn_and_formats_are_checked(embedded_tokenizer):
    context = first_turn_context(PROBLEM, "raw", "s") + [{"role": "assistant", "content": "5"}]
    with pytest.raises(ValueError, match="prompt_format='raw' has a single user turn"):
        encode_context(embedded_tokenizer, context, "raw")
    with pytest.raises(ValueError, match="chat, raw"):
        first_turn_context(PROBLEM, "markdown", "s")
    assert PROMPT_FORMATS == ("chat", "raw")


def test_config_refuses_raw_prompts_with_self_correction_turns():
    with pytest.raises(ValueError, match="prompt_format='raw'.*correction_mode none"):
        A_PO_Config(prompt_format="raw")
    with pytest.raises(ValueError, match="prompt_format"):
        A_PO_Config(prompt_format="raw", correction_mode="none", train_correction=True)
    assert A_PO_Config(prompt_format="raw", correction_mode="none").prompt_format == "raw"
    assert CORRECTION_MODES == ("self_verify", "oracle", "none")


def test_stage1_stage2_and_evaluation_share_the_builder(embedded_tokenizer):
    """Training prompts (stage1.encode_problems, used by stage 1, stage 2 and the held-out checks)
    and the episodes of evaluation and correction training encode the same first turn."""
    for prompt_format in PROMPT_FORMATS:
        cfg = config(prompt_format=prompt_format, correction_mode="none", max_correction_turns=1)
        rows = [{"id": "a", "problem": PROBLEM, "answer": "5"}]
        _, prompts, dropped = stage1.encode_problems(rows, embedded_tokenizer, cfg)
        model = ScriptedModel(embedded_tokenizer, lambda text: "5")
        (episode,) = run_episodes(model, embedded_tokenizer, [PROBLEM], cfg)
        expected = encode_problem(embedded_tokenizer, PROBLEM, prompt_format, cfg.system_prompt)
        assert dropped == [] and prompts == [expected] and episode.first_attempt.prompt_ids == expected


def test_metrics_and_episodes_use_the_one_list_of_modes():
    from apo import episodes, metrics

    assert episodes.CORRECTION_MODES is CORRECTION_MODES and metrics.CORRECTION_MODES is CORRECTION_MODES
