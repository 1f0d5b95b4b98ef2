"""apo.episodes: verdict parsing, batched generation and the PAG episode, driven by a scripted
model that answers through the real embedded tokenizer and chat template."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from apo.config import A_PO_Config
from apo.episodes import encode_chat, generate, parse_verdict, run_episodes
from scripted_lm import ScriptedLM

EOS = 2  # <|im_end|>, also the pad token
END_OF_TEXT = 0  # <|endoftext|>, a second EOS id in the scripted model's generation config


class ScriptedModel(ScriptedLM):
    """A causal LM that answers each (unpadded) prompt, read through the real tokenizer, with
    `respond(prompt_text)`: its tokens + EOS, or a list of token ids as they are. Records every
    prompt and every batch (`calls`)."""

    def __init__(self, tokenizer, respond):
        def reply(prompt_ids: list[int]) -> list[int]:
            text = tokenizer.decode(prompt_ids)
            self.prompts.append(text)
            answer = respond(text)
            return answer if isinstance(answer, list) else tokenizer.encode(answer, add_special_tokens=False) + [EOS]

        super().__init__(reply, vocab_size=len(tokenizer), eos_id=EOS,
                         generation_config=GenerationConfig(eos_token_id=[EOS, END_OF_TEXT], pad_token_id=EOS))
        self.prompts: list[str] = []


def last_user_message(prompt_text: str) -> str:
    return prompt_text.rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def problem_of(prompt_text: str) -> str:
    return prompt_text.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def scripted(tokenizer, cfg: A_PO_Config, script: dict[str, dict[str, list[str]]]) -> ScriptedModel:
    """script[problem] = {"attempts": [...], "verdicts": [...]}, indexed by the attempt number
    (how many revise prompts the context holds)."""

    def respond(prompt_text: str) -> str:
        problem = problem_of(prompt_text)
        attempt = prompt_text.count(cfg.revise_prompt) + prompt_text.count(cfg.oracle_revise_prompt)
        if last_user_message(prompt_text) == cfg.verify_prompt:
            return script[problem]["verdicts"][attempt]
        return script[problem]["attempts"][attempt]

    return ScriptedModel(tokenizer, respond)


def config(**overrides) -> A_PO_Config:
    settings = dict(max_new_tokens=64, max_correction_turns=3, temperature=0.0, generation_batch_size=8)
    settings.update(overrides)
    return A_PO_Config(**settings)


def roles(episode):
    return [(turn.role, turn.attempt_index) for turn in episode.turns]


# --- verdicts ---

# (text, PAG's parse (default), the lenient parse)
VERDICT_CASES = [
    ("Step 2 is wrong because 3 + 4 = 7. The answer is wrong", None, "wrong"),  # PAG needs the period
    ("All steps check out.\nThe answer is correct.", "correct", "correct"),
    ("All steps check out.\nThe answer is correct.\n", "correct", "correct"),  # '$' allows one final newline
    ("Everything holds.\n\n**The answer is correct.**\n", None, "correct"),
    ("Everything holds. **The answer is wrong**.", None, "wrong"),
    ("So: 'The answer is correct'.", None, "correct"),
    ("$The answer is wrong.$", None, "wrong"),
    ("The answer is correct.  \n", None, "correct"),
    ("The answer is correct. But let me double-check the second step.", None, None),  # not at the end
    # PAG matches the final sentence only; the lenient parse refuses a text naming two verdicts
    ("If it were right I would say The answer is correct. The answer is wrong.", "wrong", None),
    ("The answer is wrong. The answer is wrong.", "wrong", None),
    ("the answer is correct.", None, None),  # case-sensitive, as in PAG
    ("The answer is incorrect.", None, None),
    ("The answer is correctly simplified in step 3. The answer is correct.", "correct", "correct"),
    ("So The answer is wrongly... no. XThe answer is wrong", None, None),
    ("So The answer is wrongly... no. XThe answer is wrong.", "wrong", None),  # PAG has no word boundary
    ("The answer is correct!", None, None),
    ("", None, None),
]


@pytest.mark.parametrize("text, pag, lenient", VERDICT_CASES)
def test_parse_verdict_pag_by_default_and_lenient_as_an_option(text, pag, lenient):
    assert parse_verdict(text) == pag
    assert parse_verdict(text, "pag") == pag
    assert parse_verdict(text, "lenient") == lenient


def test_parse_verdict_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="pag, lenient"):
        parse_verdict("The answer is correct.", "strict")


# --- prompts and generation ---

def test_encode_chat_ends_with_the_generation_prompt(embedded_tokenizer):
    cfg = A_PO_Config()
    ids = encode_chat(embedded_tokenizer, [{"role": "system", "content": cfg.system_prompt},
                                           {"role": "user", "content": "What is 1+1?"}])
    text = embedded_tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>system\n" + cfg.system_prompt + "<|im_end|>" in text and "What is 1+1?" in text


def test_generate_restores_order_cuts_at_eos_and_flags_truncation(embedded_tokenizer):
    replies = {"short": "Four.", "mid": "The sum is \\boxed{4}.", "long": "a b c d e f g h i j k l m n o p",
               "second eos": [11, 12, END_OF_TEXT, 13, 14]}
    model = ScriptedModel(embedded_tokenizer, lambda text: replies[last_user_message(text)])
    names = ["long", "short", "second eos", "mid"]
    prompts = [encode_chat(embedded_tokenizer, [{"role": "user", "content": name}]) for name in names]
    results = generate(model, embedded_tokenizer, prompts, max_new_tokens=8, temperature=0.0, top_p=1.0,
                       batch_size=2)
    by_name = dict(zip(names, results))
    assert [r.prompt_ids for r in results] == prompts
    assert by_name["short"].text == "Four." and not by_name["short"].truncated
    assert by_name["short"].response_ids[-1] == EOS
    assert by_name["second eos"].response_ids == [11, 12, END_OF_TEXT] and not by_name["second eos"].truncated
    assert by_name["long"].truncated and len(by_name["long"].response_ids) == 8
    assert EOS not in by_name["long"].response_ids
    # two chunks of two, shortest prompts first
    assert [call["batch_size"] for call in model.calls] == [2, 2]
    assert model.prompts[:2] == sorted(model.prompts, key=lambda t: len(embedded_tokenizer.encode(t)))[:2]


def test_generate_prefills_each_prompt_once_for_all_its_samples(embedded_tokenizer):
    model = ScriptedModel(embedded_tokenizer, lambda text: "ok")
    prompts = [encode_chat(embedded_tokenizer, [{"role": "user", "content": name}]) for name in ("a", "bb", "ccc")]
    results = generate(model, embedded_tokenizer, prompts, max_new_tokens=4, temperature=0.6, top_p=0.95,
                       batch_size=4, num_samples=3)
    assert [r.prompt_ids for r in results] == [p for p in prompts for _ in range(3)]
    assert all(r.text == "ok" and not r.truncated for r in results)
    # 9 rows in chunks of at most 4 rows: each chunk prefills its distinct prompts once
    assert [len(call["prompts"]) for call in model.calls] == [2, 2, 1]
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, embedded_tokenizer, [[]], max_new_tokens=4, temperature=0.0, top_p=1.0, batch_size=1)


# --- the episode ---

def test_correct_verdict_stops_and_wrong_verdict_revises(embedded_tokenizer):
    cfg = config()
    script = {
        "P1": {"attempts": ["x = \\boxed{4}"], "verdicts": ["Fine. The answer is correct."]},
        "P2": {"attempts": ["x = \\boxed{5}", "x = \\boxed{4}"],
               "verdicts": ["Step 1 adds wrongly. The answer is wrong.", "Now fine. The answer is correct."]},
    }
    model = scripted(embedded_tokenizer, cfg, script)
    first, second = run_episodes(model, embedded_tokenizer, ["P1", "P2"], cfg)
    assert roles(first) == [("attempt", 0), ("verify", 0)]
    assert first.verifications[0].verdict == "correct" and first.verifications[0].verdict_parsed
    assert first.final_attempt is first.first_attempt and first.final_attempt.text == "x = \\boxed{4}"
    assert roles(second) == [("attempt", 0), ("verify", 0), ("revise", 1), ("verify", 1)]
    assert [t.verdict for t in second.verifications] == ["wrong", "correct"]
    assert second.first_attempt.text == "x = \\boxed{5}" and second.final_attempt.text == "x = \\boxed{4}"
    # the contexts follow PAG: attempt, verify prompt, verification, revise prompt, revision, verify prompt
    assert second.turns[3].messages == [
        {"role": "system", "content": cfg.system_prompt}, {"role": "user", "content": "P2"},
        {"role": "assistant", "content": "x = \\boxed{5}"}, {"role": "user", "content": cfg.verify_prompt},
        {"role": "assistant", "content": "Step 1 adds wrongly. The answer is wrong."},
        {"role": "user", "content": cfg.revise_prompt}, {"role": "assistant", "content": "x = \\boxed{4}"},
        {"role": "user", "content": cfg.verify_prompt},
    ]
    for turn in second.turns:
        assert turn.prompt_ids == encode_chat(embedded_tokenizer, turn.messages)
        assert turn.response_ids[-1] == EOS and not turn.truncated and not turn.over_length_budget
    # turn by turn across problems: attempts (2), verifications (2), revision (1), verification (1)
    assert [call["batch_size"] for call in model.calls] == [2, 2, 1, 1]


@pytest.mark.parametrize("unparsed_verdict_revises", [True, False])
def test_unparseable_verdict_follows_the_chosen_convention(embedded_tokenizer, unparsed_verdict_revises):
    cfg = config(max_correction_turns=2)
    script = {"P": {"attempts": ["\\boxed{1}", "\\boxed{2}"], "verdicts": ["Hmm, not sure.", "Hmm."]}}
    model = scripted(embedded_tokenizer, cfg, script)
    (episode,) = run_episodes(model, embedded_tokenizer, ["P"], cfg, unparsed_verdict_revises=unparsed_verdict_revises)
    verification = episode.verifications[0]
    assert verification.verdict is None and not verification.verdict_parsed
    if unparsed_verdict_revises:  # PAG's evaluation convention
        assert roles(episode) == [("attempt", 0), ("verify", 0), ("revise", 1)]
    else:  # PAG's training convention
        assert roles(episode) == [("attempt", 0), ("verify", 0)]


def test_turn_limit_leaves_the_last_attempt_unverified_as_pag_does(embedded_tokenizer):
    cfg = config(max_correction_turns=3)
    script = {"P": {"attempts": ["a", "b", "c", "d"], "verdicts": ["The answer is wrong."] * 4}}
    model = scripted(embedded_tokenizer, cfg, script)
    (episode,) = run_episodes(model, embedded_tokenizer, ["P"], cfg)
    assert roles(episode) == [("attempt", 0), ("verify", 0), ("revise", 1), ("verify", 1), ("revise", 2)]
    assert [t.text for t in episode.attempts] == ["a", "b", "c"] and episode.final_attempt.text == "c"


def test_verify_final_attempt_adds_the_last_verification(embedded_tokenizer):
    cfg = config(max_correction_turns=2, verify_final_attempt=True)
    script = {"P": {"attempts": ["a", "b"], "verdicts": ["The answer is wrong."] * 2},
              "Q": {"attempts": ["a"], "verdicts": ["The answer is correct."]}}
    model = scripted(embedded_tokenizer, cfg, script)
    p, q = run_episodes(model, embedded_tokenizer, ["P", "Q"], cfg)
    assert roles(p) == [("attempt", 0), ("verify", 0), ("revise", 1), ("verify", 1)]
    assert roles(q) == [("attempt", 0), ("verify", 0)]
    single_cfg = config(max_correction_turns=1, verify_final_attempt=True)
    (single,) = run_episodes(scripted(embedded_tokenizer, single_cfg, script), embedded_tokenizer, ["P"], single_cfg)
    assert roles(single) == [("attempt", 0), ("verify", 0)]


def test_lenient_verdict_parse_is_an_option(embedded_tokenizer):
    script = {"P": {"attempts": ["a", "b"], "verdicts": ["**The answer is wrong**"] * 2}}
    strict = config(max_correction_turns=2)
    (pag_episode,) = run_episodes(scripted(embedded_tokenizer, strict, script), embedded_tokenizer, ["P"], strict,
                                  unparsed_verdict_revises=False)
    assert pag_episode.verifications[0].verdict is None and roles(pag_episode) == [("attempt", 0), ("verify", 0)]
    lenient = config(max_correction_turns=2, verdict_parse="lenient")
    (lenient_episode,) = run_episodes(scripted(embedded_tokenizer, lenient, script), embedded_tokenizer, ["P"],
                                      lenient, unparsed_verdict_revises=False)
    assert lenient_episode.verifications[0].verdict == "wrong"
    assert roles(lenient_episode) == [("attempt", 0), ("verify", 0), ("revise", 1)]


def test_mode_none_is_the_first_attempt_only(embedded_tokenizer):
    cfg = config(max_correction_turns=3, correction_mode="none")
    script = {"P": {"attempts": ["a"], "verdicts": []}}
    model = scripted(embedded_tokenizer, cfg, script)
    (episode,) = run_episodes(model, embedded_tokenizer, ["P"], cfg)
    assert roles(episode) == [("attempt", 0)] and len(model.calls) == 1


def test_oracle_mode_retries_only_where_the_judge_says_wrong(embedded_tokenizer):
    cfg = config(max_correction_turns=3)
    script = {"P0": {"attempts": ["right"]}, "P1": {"attempts": ["wrong", "still wrong", "last"]},
              "P2": {"attempts": ["wrong", "right"]}}
    model = scripted(embedded_tokenizer, cfg, script)
    judged = []

    def oracle_judge(problem_indices, attempt_texts):
        judged.append((list(problem_indices), list(attempt_texts)))
        return [text == "right" for text in attempt_texts]

    episodes = run_episodes(model, embedded_tokenizer, ["P0", "P1", "P2"], cfg, mode="oracle",
                            oracle_judge=oracle_judge)
    assert [roles(e) for e in episodes] == [[("attempt", 0)], [("attempt", 0), ("revise", 1), ("revise", 2)],
                                            [("attempt", 0), ("revise", 1)]]
    # the judge sees each attempt but the last possible one, with problem indices
    assert judged == [([0, 1, 2], ["right", "wrong", "wrong"]), ([1, 2], ["still wrong", "right"])]
    assert not any(cfg.verify_prompt in prompt for prompt in model.prompts)
    # no verify turn, so the retry must not claim the model "indicated" anything
    assert episodes[1].turns[1].messages[-2:] == [{"role": "assistant", "content": "wrong"},
                                                   {"role": "user", "content": cfg.oracle_revise_prompt}]
    assert not any(cfg.revise_prompt in prompt for prompt in model.prompts)


def test_episode_argument_errors(embedded_tokenizer):
    cfg = config()
    model = ScriptedModel(embedded_tokenizer, lambda text: "x")
    with pytest.raises(ValueError, match="oracle_judge"):
        run_episodes(model, embedded_tokenizer, ["P"], cfg, mode="oracle")
    with pytest.raises(ValueError, match="oracle_judge"):
        run_episodes(model, embedded_tokenizer, ["P"], cfg, mode="self_verify", oracle_judge=lambda i, t: [True])
    with pytest.raises(ValueError, match="self_verify, oracle, none"):
        run_episodes(model, embedded_tokenizer, ["P"], cfg, mode="oracle_upper_bound")
    assert model.calls == []


def test_truncation_and_over_length_prompts_are_recorded(embedded_tokenizer):
    cfg = config(max_new_tokens=4, max_prompt_length=30, max_correction_turns=2)
    script = {"P": {"attempts": ["one two three four five six", "x"], "verdicts": ["The answer is wrong."] * 2}}
    model = scripted(embedded_tokenizer, cfg, script)
    (episode,) = run_episodes(model, embedded_tokenizer, ["P"], cfg)
    attempt = episode.first_attempt
    assert attempt.truncated and len(attempt.response_ids) == 4 and EOS not in attempt.response_ids
    # the ~35-token first prompt exceeds 30; later prompts exceed 30 + turns * 4 as well (the
    # verify prompt alone is ~50 tokens) and are still generated from the full context
    assert len(attempt.prompt_ids) > 30 and all(turn.over_length_budget for turn in episode.turns)
    assert all(len(turn.prompt_ids) == len(encode_chat(embedded_tokenizer, turn.messages)) for turn in episode.turns)


@pytest.mark.parametrize("mode", ["self_verify", "none"])
def test_no_gold_answer_or_solution_reaches_the_model(embedded_tokenizer, math500_rows, mode):
    """Every prompt the model receives, in every turn, is free of the gold answer and solution."""
    rows = [row for row in math500_rows if len(row["answer"]) >= 4 and row["answer"] not in row["problem"]][:4]
    assert len(rows) == 4
    cfg = config(max_correction_turns=3, correction_mode=mode)
    model = ScriptedModel(embedded_tokenizer, lambda text: (
        "The answer is wrong." if last_user_message(text) == cfg.verify_prompt else "So \\boxed{0}."))
    episodes = run_episodes(model, embedded_tokenizer, [row["problem"] for row in rows], cfg)
    expected_prompts = 4 * (5 if mode == "self_verify" else 1)  # the last of 3 attempts is not verified
    assert len(model.prompts) == expected_prompts == sum(len(e.turns) for e in episodes)
    for prompt in model.prompts:
        for row in rows:
            assert row["answer"] not in prompt and row["solution"] not in prompt
    assert sum(row["problem"] in prompt for row in rows for prompt in model.prompts) == expected_prompts


# --- the embedded model ---

@pytest.mark.slow
def test_batched_greedy_generation_matches_one_at_a_time_on_the_embedded_model(embedded_tokenizer):
    from apo.models import load_model

    model = load_model("embedded", dtype="float32")
    prompts = [encode_chat(embedded_tokenizer, [{"role": "user", "content": text}])
               for text in ["What is 2 + 3?", "Name a prime number larger than ten and explain why it is prime."]]
    settings = dict(max_new_tokens=8, temperature=0.0, top_p=1.0)
    batched = generate(model, embedded_tokenizer, prompts, batch_size=2, **settings)
    alone = [generate(model, embedded_tokenizer, [prompt], batch_size=1, **settings)[0] for prompt in prompts]
    assert [g.response_ids for g in batched] == [g.response_ids for g in alone]
    cfg = config(max_new_tokens=8, max_correction_turns=2)
    (episode,) = run_episodes(model, embedded_tokenizer, ["What is 2 + 3?"], cfg)
    assert episode.turns[0].role == "attempt" and episode.turns[1].role == "verify"
