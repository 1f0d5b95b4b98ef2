"""apo.correction: per-turn rewards, the revision bonus, masks, baselines, per-role
advantage normalisation and the collapse guard, on episodes played by a scripted policy
through the real apo.episodes.run_episodes and the real embedded tokenizer.

The scripted policy answers from a fixed script per problem (its forward pass is a tiny
in-process Llama, so the value heads get real hidden states). Expected values are computed
by hand from the script below.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from apo_algorithm import PolicySample, collate_samples
from apo.config import A_PO_Config
from conftest import REPO_ROOT, build_tiny_policy
from apo.correction import (
    CorrectionTrainingConfig,
    TurnBaselines,
    VerdictCollapseGuard,
    VERDICT_SENTENCES,
    balanced_verify_subset,
    baseline_group,
    counterfactual_verdict_samples,
    context_features,
    correction_samples,
    role_normalized_advantages,
    training_metrics,
    turn_rewards,
)
from apo.grading import GradingReport
from apo.episodes import encode_chat, parse_verdict, run_episodes
from scripted_lm import ScriptedLM

MAX_NEW_TOKENS = 48
TRUNCATED = "<truncate>"  # script marker: emit exactly max_new_tokens tokens, no EOS

# problem -> (gold, the turns the policy plays in order). max_correction_turns = 2, and the module's
# episodes verify the final attempt too (verify_final_attempt, PAG's end_with_verifer), so every turn
# kind appears; test_default_episode_leaves_the_revision_unverified plays PAG's default.
SCRIPT = {
    # right, verified right: attempt 1, verify 1
    "What is $2+3$?": ("5", ["So $2+3=\\boxed{5}$.", "All steps hold. The answer is correct."]),
    # wrong, caught, fixed, confirmed: attempt 0, verify 1, revise 1 + a*(1-0), verify 1
    "What is $4 \\times 6$?": ("24", ["So $4 \\times 6 = \\boxed{20}$.", "Step 1 is off. The answer is wrong.",
                                      "Indeed $4 \\times 6 = \\boxed{24}$.", "Now it holds. The answer is correct."]),
    # right, wrongly doubted, broken: attempt 1, verify 0, revise 0 + a*(0-1), verify 1 (it is wrong now)
    "What is $9-4$?": ("5", ["So $9-4=\\boxed{5}$.", "I doubt it. The answer is wrong.",
                             "Then $9-4=\\boxed{6}$.", "Still off. The answer is wrong."]),
    # wrong, unparsed verdict: attempt 0, verify 0, no revision (PAG training: unparsed is not "wrong")
    "What is $3^2$?": ("9", ["So $3^2=\\boxed{8}$.", "Looks fine to me overall."]),
    # wrong, wrongly approved: attempt 0, verify 0
    "What is $10/2$?": ("5", ["So $10/2=\\boxed{7}$.", "Every step is right. The answer is correct."]),
    # truncated attempt (its boxed answer would grade right): attempt 0; approved: verify 0
    "What is $1+4$?": ("5", [TRUNCATED + "We get $1+4=\\boxed{5}$. " + "Let us double check this sum. " * 20,
                             "It looks fine. The answer is correct."]),
}
PROBLEMS = list(SCRIPT)
GOLDS = [SCRIPT[p][0] for p in PROBLEMS]
V_STAR = [0.9, 0.1, 0.6, 0.2, 0.3, 0.4]
# rewards per episode in turn order, alpha = 1
EXPECTED_REWARDS = [[1, 1], [0, 1, 2, 1], [1, 0, -1, 1], [0, 0], [0, 0], [0, 0]]
EXPECTED_ROLES = [["attempt", "verify"], ["attempt", "verify", "revise", "verify"],
                  ["attempt", "verify", "revise", "verify"], ["attempt", "verify"], ["attempt", "verify"],
                  ["attempt", "verify"]]


class ScriptedPolicy(ScriptedLM):
    """Generates the scripted turn for each prompt; log-probs come from a tiny Llama."""

    def __init__(self, tokenizer):
        inner = build_tiny_policy(tokenizer)
        super().__init__(lambda prompt_ids: self.scripted_ids(tokenizer.decode(prompt_ids), MAX_NEW_TOKENS),
                         vocab_size=inner.config.vocab_size, eos_id=tokenizer.eos_token_id,
                         generation_config=inner.generation_config, score_model=inner)
        self.tokenizer = tokenizer
        self.inner = inner

    def scripted_ids(self, prompt_text: str, max_new_tokens: int) -> list[int]:
        problem = next(p for p in SCRIPT if p in prompt_text)
        turn_number = prompt_text.count("<|im_start|>assistant") - 1
        assert turn_number < len(SCRIPT[problem][1]), (problem, prompt_text)
        text = SCRIPT[problem][1][turn_number]
        if text.startswith(TRUNCATED):
            ids = self.tokenizer.encode(text[len(TRUNCATED):], add_special_tokens=False)
            assert len(ids) >= max_new_tokens
            return ids[:max_new_tokens]
        return self.tokenizer.encode(text, add_special_tokens=False) + [self.tokenizer.eos_token_id]


def make_cfg(**overrides) -> A_PO_Config:
    settings = dict(model="embedded", max_correction_turns=2, max_new_tokens=MAX_NEW_TOKENS, grading_workers=1,
                    generation_batch_size=8, revision_bonus_alpha=1.0, value_head_hidden_size=16)
    settings.update(overrides)
    return A_PO_Config(**settings)


@pytest.fixture(scope="module")
def policy(embedded_tokenizer):
    return ScriptedPolicy(embedded_tokenizer)


@pytest.fixture(scope="module")
def episodes(policy, embedded_tokenizer):
    return run_episodes(policy, embedded_tokenizer, PROBLEMS, make_cfg(verify_final_attempt=True),
                        unparsed_verdict_revises=False)


def by_episode(samples, episodes):
    grouped, start = [], 0
    for episode in episodes:
        grouped.append(samples[start:start + len(episode.turns)])
        start += len(episode.turns)
    assert start == len(samples)
    return grouped


def run_batch(episodes, policy, tokenizer, cfg=None, correction_cfg=None, baselines=None):
    cfg = cfg or make_cfg()
    baselines = baselines or TurnBaselines(cfg, 64, correction_cfg)
    report = GradingReport()
    samples, metrics = correction_samples(episodes, GOLDS, V_STAR, baselines, policy, tokenizer, cfg, report)
    return samples, metrics, baselines, report


# --- rewards ---

def test_default_episode_leaves_the_revision_unverified(policy, embedded_tokenizer):
    played = run_episodes(policy, embedded_tokenizer, PROBLEMS, make_cfg(), unparsed_verdict_revises=False)
    assert [[t.role for t in e.turns] for e in played] == [roles[:3] for roles in EXPECTED_ROLES]
    samples, _, _, _ = run_batch(played, policy, embedded_tokenizer)
    assert [[s.reward for s in group] for group in by_episode(samples, played)] == \
        [rewards[:3] for rewards in EXPECTED_REWARDS]


def test_script_played_as_expected(episodes):
    assert [[t.role for t in e.turns] for e in episodes] == EXPECTED_ROLES
    assert episodes[5].first_attempt.truncated and "\\boxed{5}" in episodes[5].first_attempt.text
    assert episodes[3].verifications[0].verdict_parsed is False


def test_rewards_for_every_case(episodes, policy, embedded_tokenizer):
    samples, _, _, report = run_batch(episodes, policy, embedded_tokenizer)
    grouped = by_episode(samples, episodes)
    assert [[s.reward for s in group] for group in grouped] == EXPECTED_REWARDS
    assert [[s.role for s in group] for group in grouped] == EXPECTED_ROLES
    # 6 attempts + 2 revisions, of which the truncated attempt is not graded
    assert report.graded == 7


def test_revision_bonus_scales_with_alpha(episodes, policy, embedded_tokenizer):
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer, cfg=make_cfg(revision_bonus_alpha=0.5))
    grouped = by_episode(samples, episodes)
    assert grouped[1][2].reward == pytest.approx(1 + 0.5 * (1 - 0))  # fixed: 1.5
    assert grouped[2][2].reward == pytest.approx(0 + 0.5 * (0 - 1))  # broken: -0.5
    assert grouped[0][0].reward == 1.0 and grouped[1][1].reward == 1.0  # attempts and verdicts unchanged


def test_outcome_verify_reward_is_the_standing_answer(episodes, policy, embedded_tokenizer):
    """verify_reward outcome: a verdict earns the correctness of the answer left after it. Episode 2's last
    verdict says 'wrong' to a wrong revision: PAG's match pays 1, but nothing follows it, so the broken
    answer stands and it earns 0; episode 2's first verdict doubted a right answer and its revision broke it."""
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer, cfg=make_cfg(verify_reward="outcome"))
    assert [[s.reward for s in group] for group in by_episode(samples, episodes)] == \
        [[1, 1], [0, 1, 2, 1], [1, 0, -1, 0], [0, 0], [0, 0], [0, 0]]


# truth of the attempt each turn checked or revised, per episode in turn order (None: a first attempt)
EXPECTED_CONTEXT_CORRECT = [[None, True], [None, False, False, True], [None, True, True, False], [None, False],
                            [None, False], [None, False]]


def test_samples_carry_the_truth_of_the_attempt_they_checked_or_revised(episodes, policy, embedded_tokenizer):
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    assert [[s.context_correct for s in group] for group in by_episode(samples, episodes)] == EXPECTED_CONTEXT_CORRECT


def test_balanced_verify_subset_keeps_as_many_verdicts_on_right_attempts_as_on_wrong(episodes, policy,
                                                                                       embedded_tokenizer):
    """The script's verdicts checked 3 right and 5 wrong attempts: the first 3 of the wrong ones stay, the
    last two (episodes 4 and 5) go; every attempt and revision stays, in order."""
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    kept = balanced_verify_subset(samples)
    assert kept == [i for i in range(len(samples)) if i not in (13, 15)]
    verdicts = [samples[i].context_correct for i in kept if samples[i].role == "verify"]
    assert verdicts.count(True) == verdicts.count(False) == 3


def test_counterfactual_verdicts_add_the_verdict_not_said_with_its_match_reward(episodes, policy,
                                                                                 embedded_tokenizer):
    """Episode 0 said 'correct' to a right attempt: 'wrong' is added with reward 0. Episode 1 said 'wrong' to a
    wrong attempt, then 'correct' to its right revision: 'correct' and 'wrong' are added, both 0. Episode 2
    doubted a right attempt ('correct' added, 1) and a wrong revision ('correct', 0). Episode 3's verdict was
    unparsed: both are added, 'wrong' earning 1; episodes 4 and 5 approved wrong attempts ('wrong', 1). Each
    added sample keeps the context, baseline and truth of the turn it stands beside."""
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    said = [t.verdict if t.role == "verify" and t.verdict_parsed else None for e in episodes for t in e.turns]
    out = counterfactual_verdict_samples(samples, said, embedded_tokenizer)
    added = [s for s in out if not any(s is original for original in samples)]
    assert len(added) == sum(s.role == "verify" for s in samples) + 1  # one per parsed verdict, two for episode 3
    text = {tuple(embedded_tokenizer.encode(t, add_special_tokens=False)) + (embedded_tokenizer.eos_token_id,): v
            for v, t in VERDICT_SENTENCES.items()}
    verdict_of = [text[tuple(s.response_ids)] for s in added]
    assert verdict_of == ["wrong", "correct", "wrong", "correct", "correct", "correct", "wrong", "wrong", "wrong"]
    assert [s.reward for s in added] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    first = out[out.index(samples[1]) + 1]  # beside episode 0's verdict
    assert (first.prompt_ids, first.baseline, first.context_correct, first.role) == \
        (samples[1].prompt_ids, samples[1].baseline, True, "verify")
    assert [s for s in out if any(s is original for original in samples)] == samples  # the originals, in order
    with pytest.raises(ValueError, match="context_correct"):
        counterfactual_verdict_samples([_sample("verify", 1, 0.5)], ["correct"], embedded_tokenizer)


def test_verdict_sentences_parse_as_their_verdict():
    for verdict, text in VERDICT_SENTENCES.items():
        assert parse_verdict(text) == verdict and parse_verdict(text, "lenient") == verdict


def test_balanced_verify_subset_edge_cases():
    one_class = [_sample("attempt", 1, 0.5), _sample("verify", 1, 0.5, True), _sample("verify", 0, 0.5, True)]
    assert balanced_verify_subset(one_class) == [0]  # no verdict on a wrong attempt: no verdict is trained
    assert balanced_verify_subset([]) == []
    with pytest.raises(ValueError, match="context_correct"):
        balanced_verify_subset([_sample("verify", 1, 0.5)])


def test_unknown_verify_reward_is_refused(episodes):
    with pytest.raises(ValueError, match="verify_reward"):
        turn_rewards(episodes[0], [True], 1.0, "agree")


def test_truncated_samples_are_flagged(episodes, policy, embedded_tokenizer):
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    grouped = by_episode(samples, episodes)
    assert grouped[5][0].truncated and len(grouped[5][0].response_ids) == MAX_NEW_TOKENS
    assert sum(s.truncated for s in samples) == 1


# --- masks: only the model's own tokens are trained ---

def test_response_ids_hold_only_the_models_tokens(episodes, policy, embedded_tokenizer):
    tokenizer = embedded_tokenizer
    cfg = make_cfg()
    samples, _, _, _ = run_batch(episodes, policy, tokenizer)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    for episode, group in zip(episodes, by_episode(samples, episodes)):
        for turn, sample in zip(episode.turns, group):
            assert sample.response_ids == turn.response_ids
            assert sample.prompt_ids == encode_chat(tokenizer, turn.messages)
            assert im_start not in sample.response_ids
            response_text = tokenizer.decode(sample.response_ids)
            for inserted in (cfg.verify_prompt, cfg.revise_prompt, cfg.system_prompt, "user\n", "assistant\n"):
                assert inserted not in response_text
            prompt_text = tokenizer.decode(sample.prompt_ids)
            assert prompt_text.endswith("<|im_start|>assistant\n")
            if sample.role == "verify":
                assert prompt_text.rstrip().endswith(cfg.verify_prompt + "<|im_end|>\n<|im_start|>assistant")
            if sample.role == "revise":
                assert cfg.revise_prompt in prompt_text and cfg.verify_prompt in prompt_text
    batch = collate_samples(samples, tokenizer.pad_token_id)
    assert batch["response_mask"].sum(dim=1).tolist() == [len(s.response_ids) for s in samples]
    # the trained tokens of the fixing revision decode to exactly its text and the EOS
    fix = by_episode(samples, episodes)[1][2]
    assert tokenizer.decode(fix.response_ids) == SCRIPT[PROBLEMS[1]][1][2] + "<|im_end|>"


# --- baselines ---

def test_first_batch_baselines_v_star_and_prior(episodes, policy, embedded_tokenizer):
    samples, metrics, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    grouped = by_episode(samples, episodes)
    assert [group[0].baseline for group in grouped] == V_STAR
    verify_baselines = [s.baseline for s in samples if s.role == "verify"]
    assert verify_baselines == [0.5] * 8  # nothing observed yet: the prior, not the batch's own rewards
    # revise: (1 + a) * 0.5 - a * c(y1); c(y1) = 0 when fixing, 1 when breaking
    assert grouped[1][2].baseline == pytest.approx(1.0) and grouped[2][2].baseline == pytest.approx(0.0)
    assert metrics["baseline_source/verify|checked_wrong"] == 0.0


def test_running_mean_before_warmup(episodes, policy, embedded_tokenizer):
    baselines = TurnBaselines(make_cfg(), 64, CorrectionTrainingConfig(turn_baseline_warmup=1000,
                                                                       turn_baseline_buffer_size=1000))
    run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    samples, metrics, _, _ = run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    grouped = by_episode(samples, episodes)
    # batch 1 verdict outcomes: on right attempts 1, 1, 0 -> 2/3; on wrong attempts 1, 1, 0, 0, 0 -> 2/5
    on_right, on_wrong = 2 / 3, 2 / 5
    assert [s.baseline for s in grouped[0]] == pytest.approx([V_STAR[0], on_right])
    assert [s.baseline for s in grouped[1]] == pytest.approx([V_STAR[1], on_wrong, 2 * 1 - 0, on_right])
    assert [s.baseline for s in grouped[2]] == pytest.approx([V_STAR[2], on_right, 2 * 0 - 1, on_wrong])
    assert metrics["baseline_source/revise|after_wrong"] == 1.0
    assert baselines.source("verify|checked_wrong") == "running_mean"


def test_running_mean_without_truth_split(episodes, policy, embedded_tokenizer):
    settings = CorrectionTrainingConfig(turn_baseline_split_by_truth=False, turn_baseline="running_mean")
    baselines = TurnBaselines(make_cfg(), 64, settings)
    run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    samples, _, _, _ = run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    verify = [s.baseline for s in samples if s.role == "verify"]
    revise = [s.baseline for s in samples if s.role == "revise"]
    assert verify == pytest.approx([4 / 8] * 8)
    # revision correctness mean 1/2 -> (1 + 1) * 0.5 - c(y1)
    assert revise == pytest.approx([1.0 - 0.0, 1.0 - 1.0])
    assert baselines.groups == ["verify", "revise"]


def test_value_head_after_warmup(episodes, policy, embedded_tokenizer):
    cfg = make_cfg()
    settings = CorrectionTrainingConfig(turn_baseline_warmup=3, turn_baseline_buffer_size=64)
    baselines = TurnBaselines(cfg, 64, settings)
    _, first_metrics, _, _ = run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    # 5 verify-on-wrong and 3 verify-on-right outcomes reach the warm-up of 3; each revise group has 1
    assert baselines.head_in_use == {"verify|checked_correct": True, "verify|checked_wrong": True,
                                     "revise|after_correct": False, "revise|after_wrong": False}
    assert "turn_baseline_fit_loss/verify|checked_wrong" in first_metrics
    # the heads as they stand before batch 2 (which refits them after computing its baselines)
    verify_turns = [t for e in episodes for t in e.turns if t.role == "verify"]
    truths = [True, False, True, True, False, False, False, False]
    features = context_features(policy, [t.prompt_ids for t in verify_turns], embedded_tokenizer.pad_token_id, 4)
    with torch.no_grad():
        expected = [float(baselines.heads[baseline_group("verify", truth, True)](features[i:i + 1]))
                    for i, truth in enumerate(truths)]
    assert len(set(expected)) == len(expected)  # per-context values, not a group mean
    # each head starts at its group's running mean (2/3 on right attempts, 2/5 on wrong ones)
    assert expected == pytest.approx([2 / 3 if truth else 2 / 5 for truth in truths], abs=0.05)
    samples, metrics, _, _ = run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    verify_samples = [s for s in samples if s.role == "verify"]
    assert [s.baseline for s in verify_samples] == pytest.approx(expected, abs=1e-5)
    assert metrics["baseline_source/verify|checked_wrong"] == 2.0
    assert metrics["baseline_source/revise|after_wrong"] == 1.0  # still a running mean
    assert [s.baseline for s in samples if s.role == "attempt"] == V_STAR


def test_turn_baselines_state_round_trip(episodes, policy, embedded_tokenizer):
    cfg = make_cfg()
    settings = CorrectionTrainingConfig(turn_baseline_warmup=3, turn_baseline_buffer_size=64, collapse_min_verdicts=1)
    baselines = TurnBaselines(cfg, 64, settings)
    run_batch(episodes, policy, embedded_tokenizer, baselines=baselines)
    restored = TurnBaselines(cfg, 64, settings)
    buffer = io.BytesIO()
    torch.save(baselines.state_dict(), buffer)  # as accelerate's register_for_checkpointing does
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    features = torch.randn(2, 64)
    groups = ["verify|checked_wrong", "revise|after_wrong"]
    assert restored.predict(groups, features) == pytest.approx(baselines.predict(groups, features))
    assert list(restored.collapse_guard.window) == list(baselines.collapse_guard.window)
    other = TurnBaselines(cfg, 64, CorrectionTrainingConfig(turn_baseline_split_by_truth=False))
    with pytest.raises(ValueError, match="split_by_truth"):
        other.load_state_dict(baselines.state_dict())


def test_misaligned_inputs_raise(episodes, policy, embedded_tokenizer):
    cfg = make_cfg()
    with pytest.raises(ValueError, match="one gold"):
        correction_samples(episodes, GOLDS[:-1], V_STAR, TurnBaselines(cfg, 64), policy, embedded_tokenizer, cfg)
    with pytest.raises(ValueError, match="not finite"):
        correction_samples(episodes, GOLDS, V_STAR[:-1] + [float("nan")], TurnBaselines(cfg, 64), policy,
                           embedded_tokenizer, cfg)


# --- metrics and the collapse guard ---

def test_training_metrics(episodes, policy, embedded_tokenizer):
    _, metrics, _, _ = run_batch(episodes, policy, embedded_tokenizer)
    assert metrics["acc_t1"] == pytest.approx(2 / 6)
    assert metrics["acc_final"] == pytest.approx(2 / 6)
    assert metrics["delta_i_to_c"] == pytest.approx(1 / 6) and metrics["delta_c_to_i"] == pytest.approx(1 / 6)
    # PAG's verifier metrics: the first verification of each of the 6 episodes
    assert metrics["verifier_accuracy"] == pytest.approx(2 / 6)
    assert metrics["verifier_recall_on_correct"] == pytest.approx(1 / 2)
    assert metrics["verifier_recall_on_wrong"] == pytest.approx(1 / 4)
    assert metrics["verdict_parse_failure_rate"] == pytest.approx(1 / 6)
    # every verify turn, the two checks of revisions included
    assert metrics["verifier_accuracy_all_turns"] == pytest.approx(4 / 8)
    assert metrics["verdict_parse_failure_rate_all_turns"] == pytest.approx(1 / 8)
    assert metrics["revision_rate"] == pytest.approx(2 / 6)
    assert metrics["reward/verify"] == pytest.approx(4 / 8)  # the verifier reward is its accuracy
    assert metrics["num_samples/revise"] == 2.0
    assert metrics["collapse_flag"] == 0.0  # 7 parsed verdicts < collapse_min_verdicts (32)
    assert all(isinstance(value, float) for value in metrics.values())


def test_training_metrics_of_a_step_that_repeats_its_problems(episodes):
    """More prompts per step than problems: a problem's episodes count as its samples 0, 1, ...
    (they were reported as one problem with duplicated turns, and stage 2 stopped)."""
    rows = [{"id": "same-problem", "type": "algebra", "level": 1}] * len(episodes)
    correct = [[False] * len(e.attempts) for e in episodes]
    metrics = training_metrics(episodes, correct, "self_verify", GOLDS, problem_rows=rows)
    assert metrics["acc_t1"] == 0.0 and metrics["revision_rate"] == pytest.approx(2 / 6)


def test_undefined_rates_are_left_out(episodes, policy, embedded_tokenizer):
    cfg = make_cfg()
    wrong_only = [3, 4]  # both first attempts wrong, neither revised
    _, metrics = correction_samples([episodes[i] for i in wrong_only], [GOLDS[i] for i in wrong_only],
                                    [V_STAR[i] for i in wrong_only], TurnBaselines(cfg, 64), policy,
                                    embedded_tokenizer, cfg)
    assert "verifier_recall_on_correct" not in metrics  # no right attempt was checked
    assert metrics["verifier_recall_on_wrong"] == 0.0 and metrics["acc_t1"] == 0.0


def test_collapse_guard_flags_one_sided_verdicts(caplog):
    guard = VerdictCollapseGuard(window=4, min_verdicts=3, threshold=0.7)
    assert guard.update(["wrong", "wrong"], [False, True])["collapse_flag"] == 0.0  # too few verdicts
    with caplog.at_level(logging.WARNING, logger="apo.correction"):
        state = guard.update(["wrong", None], [False, False])  # the unparsed one is not counted
    assert state["collapse_flag"] == 1.0 and state["collapse_verdict_window"] == 3.0
    assert state["window_said_wrong_share"] == 1.0 and state["window_attempt_wrong_share"] == pytest.approx(2 / 3)
    assert "verifier collapse" in caplog.text and "'wrong'" in caplog.text
    assert guard.update(["correct", "correct"], [True, True])["collapse_flag"] == 0.0  # window: w w c c
    assert guard.update(["correct", "correct"], [True, False])["collapse_flag"] == 1.0  # window: c c c c


def test_collapse_flag_in_batch_metrics(episodes, policy, embedded_tokenizer):
    settings = CorrectionTrainingConfig(collapse_window=3, collapse_min_verdicts=3, turn_baseline="running_mean")
    cfg = make_cfg(collapse_threshold=0.6)
    _, metrics, baselines, _ = run_batch(episodes, policy, embedded_tokenizer, cfg=cfg, correction_cfg=settings)
    # parsed verdicts in episode order: c w c w w (unparsed skipped) c c; the last 3 are w c c
    assert [v for v, _ in baselines.collapse_guard.window] == ["wrong", "correct", "correct"]
    assert metrics["window_said_wrong_share"] == pytest.approx(1 / 3) and metrics["collapse_flag"] == 1.0
    assert metrics["window_attempt_wrong_share"] == 1.0  # P3 v2, P5 and P6 all checked wrong attempts


# --- per-role normalisation ---

def _sample(role: str, reward: float, baseline: float, context_correct: bool | None = None) -> PolicySample:
    return PolicySample(prompt_ids=[1], response_ids=[2], reward=reward, baseline=baseline, role=role,
                        context_correct=context_correct)


def test_role_normalized_advantages_by_hand():
    samples = [_sample("attempt", 1, 0.5), _sample("verify", 1, 0.5), _sample("revise", 2, 1.0),
               _sample("attempt", 0, 0.5), _sample("verify", 0, 0.75)]
    solution_rms = math.sqrt((0.5 ** 2 + 1.0 ** 2 + 0.5 ** 2) / 3)
    verify_rms = math.sqrt((0.5 ** 2 + 0.75 ** 2) / 2)
    assert role_normalized_advantages(samples) == pytest.approx(
        [0.5 / solution_rms, 0.5 / verify_rms, 1.0 / solution_rms, -0.5 / solution_rms, -0.75 / verify_rms])
    # whitened: verify raw [0.5, -0.75], mean -0.125 -> [0.625, -0.625] / 0.625
    whitened = role_normalized_advantages(samples, center=True)
    assert whitened[1] == pytest.approx(1.0) and whitened[4] == pytest.approx(-1.0)


def test_role_normalized_advantages_edge_cases():
    assert role_normalized_advantages([_sample("verify", 0.3, 0.3), _sample("verify", 0.3, 0.3)]) == [0.0, 0.0]
    assert role_normalized_advantages([_sample("attempt", 0.0, 0.4)]) == pytest.approx([-1.0])
    with pytest.raises(ValueError, match="roles"):
        role_normalized_advantages([_sample("critique", 1, 0)])


# One global batch of 9 samples: rank 0 takes the first 6 (both groups), rank 1 the last 3 (solutions only).
TWO_PROCESS_BATCH = [("attempt", 1, 0.2), ("verify", 1, 0.5), ("revise", 2, 1.5), ("attempt", 0, 0.6),
                     ("verify", 0, 0.25), ("verify", 1, 0.9), ("attempt", 1, 0.95), ("attempt", 0, 0.1),
                     ("revise", -1, 0.3)]
TWO_PROCESS_WORKER = textwrap.dedent("""
    import json, sys
    from accelerate import Accelerator
    from apo_algorithm import PolicySample
    from apo.correction import role_normalized_advantages

    batch, out_path = json.loads(sys.argv[1]), sys.argv[2]
    accelerator = Accelerator(cpu=True)  # gloo, as train_math_apo.start_accelerator sets up on CPUs
    mine = batch[:6] if accelerator.process_index == 0 else batch[6:]
    samples = [PolicySample([1], [2], reward, baseline, role) for role, reward, baseline in mine]
    result = {}
    for center in (False, True):  # the trainer's call (train_math_apo.sample_episodes)
        advantages = role_normalized_advantages(samples, center=center, reduce_sum=lambda stats: accelerator.reduce(
            stats.to(accelerator.device), reduction="sum"))
        result[str(center)] = accelerator.gather_for_metrics(advantages, use_gather_object=True)
    if accelerator.is_main_process:
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    accelerator.end_training()
""")


def test_two_processes_normalise_advantages_like_one(tmp_path):
    """A real 2-process run (torch.distributed.run, gloo, CPU): the group statistics are those of
    the whole batch, so each sample's advantage equals the 1-process one over the same batch,
    where each process alone (rank 1 has no verification sample) would normalise otherwise."""
    worker = tmp_path / "worker.py"
    worker.write_text(TWO_PROCESS_WORKER)
    out_path = tmp_path / "advantages.json"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(worker),
                             json.dumps(TWO_PROCESS_BATCH), str(out_path)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    two_processes = json.loads(out_path.read_text())
    samples = [_sample(role, reward, baseline) for role, reward, baseline in TWO_PROCESS_BATCH]
    for center in (False, True):
        one_process = role_normalized_advantages(samples, center=center)
        assert two_processes[str(center)] == pytest.approx(one_process, abs=1e-12)
        per_process = (role_normalized_advantages(samples[:6], center=center)
                       + role_normalized_advantages(samples[6:], center=center))
        assert per_process != pytest.approx(one_process, abs=1e-3)  # the batch tells the two apart


def test_config_validation():
    with pytest.raises(ValueError, match="collapse_min_verdicts"):
        CorrectionTrainingConfig(collapse_window=8, collapse_min_verdicts=16)
    with pytest.raises(ValueError, match="turn_baseline_warmup"):
        CorrectionTrainingConfig(turn_baseline_warmup=0)


def test_running_mean_mode_needs_no_hidden_states(episodes, embedded_tokenizer):
    cfg = make_cfg()
    baselines = TurnBaselines(cfg, 64, CorrectionTrainingConfig(turn_baseline="running_mean", turn_baseline_warmup=1))
    samples, metrics = correction_samples(episodes, GOLDS, V_STAR, baselines, None, embedded_tokenizer, cfg)
    assert len(samples) == sum(len(e.turns) for e in episodes)
    assert not any(baselines.head_in_use.values())  # no head is fitted without hidden states
    assert not any(key.startswith("turn_baseline_fit_loss") for key in metrics)
