"""apo.metrics on hand-built records: transitions, verifier, pass@k, maj@n ties, groups, intervals."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest

import apo.metrics as em
from apo.records import validate_generation


def rec(pid, turn, role, *, sample=0, correct=None, answer=None, verdict=None, parsed=None, checked=None,
        type_="Algebra", level=1, gold="5", mode="self_verify", truncated=False, attempt_index=0):
    """One record with every schema field; verify turns default to a parsed verdict."""
    is_verify = role == "verify"
    return {
        "id": pid, "sample": sample, "turn": turn, "role": role, "attempt_index": attempt_index,
        "type": type_, "level": level, "gold": gold, "mode": mode, "text": f"{role} {turn}",
        "extracted_answer": None if is_verify else answer, "correct": None if is_verify else correct,
        "verdict": verdict if is_verify else None,
        "verdict_parsed": (verdict is not None if parsed is None else parsed) if is_verify else False,
        "checked_attempt_correct": checked if is_verify else None,
        "prompt_tokens": 10, "response_tokens": 20 + turn, "truncated": truncated, "episode_turns": 0,
    }


def complete(records: list[dict]) -> list[dict]:
    """Set each record's episode_turns to the number of records of its (id, sample)."""
    counts = Counter((r["id"], r["sample"]) for r in records)
    return [dict(r, episode_turns=counts[(r["id"], r["sample"])]) for r in records]


def four_problems() -> list[dict]:
    """p1 stayed right, p2 fixed, p3 broken (last verdict unparsed), p4 stayed wrong without an answer,
    p5 ungradable (no gold)."""
    return complete([
        rec("p1", 0, "attempt", correct=True, answer="5"),
        rec("p1", 1, "verify", verdict="correct", checked=True),
        rec("p2", 0, "attempt", correct=False, answer="4", level=2),
        rec("p2", 1, "verify", verdict="wrong", checked=False, level=2),
        rec("p2", 2, "revise", correct=True, answer="5", level=2, attempt_index=1),
        rec("p2", 3, "verify", verdict="correct", checked=True, level=2, attempt_index=1),
        rec("p3", 0, "attempt", correct=True, answer="5", type_="Geometry", level=2),
        rec("p3", 1, "verify", verdict="wrong", checked=True, type_="Geometry", level=2),
        rec("p3", 2, "revise", correct=False, answer="7", type_="Geometry", level=2, attempt_index=1, truncated=True),
        rec("p3", 3, "verify", verdict=None, checked=False, type_="Geometry", level=2, attempt_index=1),
        rec("p4", 0, "attempt", correct=False, answer=None, type_="Geometry"),
        rec("p4", 1, "verify", verdict="correct", checked=False, type_="Geometry"),
        rec("p5", 0, "attempt", correct=None, answer="3", gold=None, level=None),
        rec("p5", 1, "verify", verdict="correct", checked=None, level=None),
    ])


def test_summary_transitions_and_verifier_by_hand():
    s = em.summarize(four_problems())
    assert s["num_episodes"] == 5 and s["num_graded"] == 4 and s["num_ungradable"] == 1
    assert s["transitions"] == {"stayed_right": 1, "fixed": 1, "broken": 1, "stayed_wrong": 1}
    assert (s["acc_t1"], s["acc_final"], s["improvement"]) == (0.5, 0.5, 0.0)
    assert (s["delta_i_to_c"], s["delta_c_to_i"]) == (0.25, 0.25)
    assert s["revision_rate"] == 0.5
    assert s["no_answer_t1"] == 1 and s["no_answer_final"] == 1
    # PAG's verifier metrics: the 4 graded first verifications; hits p1, p2 v1; misses p3 v1, p4
    v = s["verifier"]
    assert v["num_verifications"] == 4 and v["accuracy"] == 0.5
    assert v["recall_on_correct"] == 0.5 and v["recall_on_wrong"] == 0.5 and v["parse_failure_rate"] == 0.0
    # every verify turn: 6 graded; hits p1, p2 v1, p2 v2; misses p3 v1, p3 v2 (unparsed), p4
    v = s["verifier_all_turns"]
    assert v["num_verifications"] == 6 and v["accuracy"] == 0.5
    assert v["recall_on_correct"] == pytest.approx(2 / 3) and v["recall_on_wrong"] == pytest.approx(1 / 3)
    assert v["parse_failure_rate"] == pytest.approx(1 / 6)
    assert s["truncation_rate"] == pytest.approx(1 / 14)
    assert s["attempt_truncation_rate"] == pytest.approx(1 / 7)


def test_improvement_equals_fixed_minus_broken():
    records = [rec("a", 0, "attempt", correct=False, answer="1"), rec("a", 1, "verify", verdict="wrong", checked=False),
               rec("a", 2, "revise", correct=True, answer="5"),
               rec("b", 0, "attempt", correct=False, answer="2")]
    records = complete(records)
    s = em.summarize(records)
    assert (s["acc_t1"], s["acc_final"], s["improvement"], s["delta_i_to_c"]) == (0.0, 0.5, 0.5, 0.5)


def test_strict_accuracy_is_reported_when_every_attempt_carries_it():
    records = complete([rec("a", 0, "attempt", correct=True, answer="5"),
                        rec("a", 1, "verify", verdict="wrong", checked=True),
                        rec("a", 2, "revise", correct=True, answer="5", attempt_index=1),
                        rec("b", 0, "attempt", correct=True, answer="5")])
    assert "acc_t1_boxed_exact" not in em.summarize(records)  # files written before the field
    strict = {("a", 0): True, ("a", 2): False, ("b", 0): False}
    for r in records:
        if r["role"] != "verify":
            r["correct_boxed_exact"] = strict[(r["id"], r["turn"])]
    s = em.summarize(records)
    assert (s["acc_t1"], s["acc_final"]) == (1.0, 1.0)
    assert (s["acc_t1_boxed_exact"], s["acc_final_boxed_exact"]) == (0.5, 0.0)
    from apo.records import validate_generation

    with pytest.raises(ValueError, match="correct_boxed_exact"):
        validate_generation(dict(records[0], correct_boxed_exact="yes"), "here")


def test_empty_denominators_are_null_not_zero():
    s = em.summarize(complete([rec("a", 0, "attempt", correct=True, answer="5")]))
    assert s["verifier"]["accuracy"] is None and s["verifier"]["recall_on_wrong"] is None


def test_compute_metrics_groups_by_type_and_level():
    m = em.compute_metrics(four_problems())
    assert list(m["by_type"]) == ["Algebra", "Geometry"]
    assert list(m["by_level"]) == ["1", "2", "unknown"]
    assert m["by_type"]["Algebra"]["acc_t1"] == 0.5 and m["by_type"]["Algebra"]["acc_final"] == 1.0
    assert m["by_type"]["Geometry"]["transitions"] == {"stayed_right": 0, "fixed": 0, "broken": 1, "stayed_wrong": 1}
    assert m["by_level"]["2"]["transitions"]["fixed"] == 1 and m["by_level"]["unknown"]["num_graded"] == 0
    assert m["ungradable"] == {"count": 1, "ids": ["p5"]}
    assert m["mode_label"] == "self-verify" and m["samples_per_problem"] == 1
    ci = m["overall"]["ci95"]["acc_t1"]
    assert ci["method"] == "wilson" and (ci["low"], ci["high"]) == pytest.approx(em.wilson_interval(2, 4))


def test_oracle_is_labelled_an_upper_bound():
    m = em.compute_metrics(complete([rec("a", 0, "attempt", correct=True, answer="5", mode="oracle")]))
    assert m["mode_label"] == "oracle (upper bound)"


def test_wilson_interval_against_hand_values():
    # 8 of 10, z = 1.96: centre 0.7167, half-width 0.2266 (Wilson 1927; also R's prop.test without correction)
    low, high = em.wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert em.wilson_interval(2, 4) == pytest.approx((0.1500, 0.8500), abs=1e-4)
    assert em.wilson_interval(0, 0) == (0.0, 1.0)


def test_pass_at_k_matches_closed_form():
    assert em.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    for n in (1, 4, 10):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert em.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    with pytest.raises(ValueError, match="k <= n"):
        em.pass_at_k(4, 1, 5)


def test_majority_vote_ties_go_to_first_occurrence():
    assert em.majority_vote(["3", "4", "4", "3"], [True, False, False, True]) is True
    assert em.majority_vote(["4", "3", "3", "4"], [False, True, True, False]) is False
    assert em.majority_vote(["3", "1 / 2", "1/2"], [True, False, False]) is False  # whitespace-free votes
    assert em.majority_vote([None, None, "5"], [False, False, True]) is True
    assert em.majority_vote([None, None], [False, False]) is False


def test_sampled_metrics_mean_maj_pass_by_hand():
    records = []
    # problem a: 4 samples, answers 5,4,4,5 -> 2/4 right, tie 5 vs 4 -> first occurrence "5" (right)
    for s, (ans, ok) in enumerate([("5", True), ("4", False), ("4", False), ("5", True)]):
        records.append(rec("a", 0, "attempt", sample=s, correct=ok, answer=ans))
    # problem b: 4 samples, 1 right, majority "9" (wrong)
    for s, (ans, ok) in enumerate([("9", False), ("2", True), ("9", False), (None, False)]):
        records.append(rec("b", 0, "attempt", sample=s, correct=ok, answer=ans))
    m = em.compute_metrics(complete(records), pass_k=(1, 2, 4), bootstrap_resamples=200)
    sampled = m["overall"]["sampled"]
    assert sampled["mean_at_n_t1"] == pytest.approx((0.5 + 0.25) / 2)
    assert sampled["maj_at_n_t1"] == 0.5
    expected_pass2 = ((1 - math.comb(2, 2) / math.comb(4, 2)) + (1 - math.comb(3, 2) / math.comb(4, 2))) / 2
    assert sampled["pass_at_k_t1"]["2"] == pytest.approx(expected_pass2)
    assert sampled["pass_at_k_t1"]["4"] == 1.0 and sampled["pass_at_k_t1"]["1"] == pytest.approx(0.375)
    assert m["samples_per_problem"] == 4 and m["overall"]["ci95"]["acc_t1"]["method"].startswith("bootstrap")
    assert m["overall"]["acc_t1"] == pytest.approx(0.375)


def test_pass_k_above_samples_and_unfinished_runs_raise():
    records = [rec("a", 0, "attempt", sample=s, correct=True, answer="5") for s in range(2)]
    with pytest.raises(ValueError, match="pass_k"):
        em.compute_metrics(complete(records), pass_k=(4,))
    records.append(rec("b", 0, "attempt", sample=0, correct=True, answer="5"))
    with pytest.raises(ValueError, match="unequal sample counts"):
        em.compute_metrics(complete(records))


def test_gaps_duplicates_and_mixed_modes_raise():
    with pytest.raises(ValueError, match="turns \\[0, 2\\]"):
        em.summarize(complete([rec("a", 0, "attempt", correct=True, answer="5"), rec("a", 2, "revise", correct=True)]))
    with pytest.raises(ValueError, match="1 of 2 turns present"):
        em.summarize([dict(rec("a", 0, "attempt", correct=True, answer="5"), episode_turns=2)])
    with pytest.raises(ValueError, match="mix correction modes"):
        em.compute_metrics(complete([rec("a", 0, "attempt", correct=True),
                                     rec("b", 0, "attempt", correct=True, mode="none")]))
    with pytest.raises(ValueError, match="no records"):
        em.compute_metrics([])


def _turn(role, attempt_index, text, verdict=None, parsed=False, truncated=False):
    return SimpleNamespace(role=role, attempt_index=attempt_index, messages=[], prompt_ids=[1, 2, 3],
                           response_ids=[4, 5], text=text, truncated=truncated, verdict=verdict, verdict_parsed=parsed)


def test_episode_records_from_an_episode():
    episode = SimpleNamespace(problem="What is 2+3?", turns=[
        _turn("attempt", 0, "so \\boxed{4}"), _turn("verify", 0, "The answer is wrong.", "wrong", True),
        _turn("revise", 1, "so \\boxed{5}"), _turn("verify", 1, "hmm", None, False, truncated=True)])
    row = {"id": "test/algebra/1.json", "problem": "What is 2+3?", "answer": "5", "type": "Algebra", "level": 1}
    records = em.episode_records(episode, problem_row=row, sample=0, correctness=[False, True], mode="self_verify",
                                 extracted_answers=["4", "5"])
    for i, r in enumerate(records):
        validate_generation(r, f"record {i}")
    assert [r["checked_attempt_correct"] for r in records] == [None, False, None, True]
    assert [r["extracted_answer"] for r in records] == ["4", None, "5", None]
    assert records[3]["truncated"] and records[3]["verdict_parsed"] is False
    assert records[0]["prompt_tokens"] == 3 and records[0]["response_tokens"] == 2
    assert em.summarize(records)["transitions"]["fixed"] == 1
    with pytest.raises(ValueError, match="1 correctness values for 2"):
        em.episode_records(episode, problem_row=row, sample=0, correctness=[True], mode="self_verify",
                           extracted_answers=["4", "5"])


def test_fisher_exact_greater_matches_the_tea_tasting_table():
    # Fisher's lady tasting tea: 3 of 4 cups right each way, one-sided p = 17/70; all 4 right, 1/70.
    assert em.fisher_exact_greater(3, 1, 1, 3) == pytest.approx(17 / 70)
    assert em.fisher_exact_greater(4, 0, 0, 4) == pytest.approx(1 / 70)
    # the other direction is no evidence at all, and a table with an empty margin is p = 1
    assert em.fisher_exact_greater(0, 4, 4, 0) == pytest.approx(1.0)
    assert em.fisher_exact_greater(0, 0, 5, 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="counts"):
        em.fisher_exact_greater(-1, 2, 3, 4)


# --- paired counts: the sign test and the verify-and-revise loop ---

def test_sign_test_hand_values():
    assert em.sign_test_p(0, 0) == 1.0
    assert em.sign_test_p(5, 0) == pytest.approx(2 / 32)           # 2 * (1/2)^5
    assert em.sign_test_p(6, 1) == pytest.approx(2 * 8 / 128)      # 2 * (C(7,0) + C(7,1)) / 2^7
    assert em.sign_test_p(1, 6) == em.sign_test_p(6, 1)
    assert em.sign_test_p(3, 3) == 1.0


def evaluated_episode(problem, first_right, verdict, final_right=None):
    """Generation records of one evaluated episode: the attempt, its verdict (None = unparsed) and,
    unless the verdict approved it, a revision."""
    records = [{"id": problem, "sample": 0, "turn": 0, "role": "attempt", "attempt_index": 0, "correct": first_right,
                "extracted_answer": "1", "truncated": False, "response_tokens": 3, "mode": "self_verify"},
               {"id": problem, "sample": 0, "turn": 1, "role": "verify", "attempt_index": 0, "correct": None,
                "verdict": verdict, "verdict_parsed": verdict is not None, "checked_attempt_correct": first_right,
                "extracted_answer": None, "truncated": False, "response_tokens": 3, "mode": "self_verify"}]
    if verdict != "correct":
        records.append({"id": problem, "sample": 0, "turn": 2, "role": "revise", "attempt_index": 1,
                        "correct": final_right, "extracted_answer": "1", "truncated": False, "response_tokens": 3,
                        "mode": "self_verify"})
    for record in records:
        record.update(episode_turns=len(records), type="arithmetic", level=1)
    return records


def test_loop_report_counts_transitions_and_the_verifiers_decisions():
    records = (evaluated_episode("a", True, "correct") + evaluated_episode("b", True, "wrong", True)
               + evaluated_episode("c", True, "wrong", False) + evaluated_episode("d", False, "wrong", True)
               + evaluated_episode("e", False, None, False) + evaluated_episode("f", False, "correct"))
    report = em.loop_report(records, {"a", "b", "c", "d", "e", "f"})
    assert (report["t1_correct"], report["final_correct"], report["fixed"], report["broken"]) == (3, 3, 1, 1)
    # approves 1 of 3 right; revises 2 of 3 wrong, the unparsed verdict among them (it revises at evaluation)
    assert (report["approved_right"], report["right_checked"], report["revised_wrong"], report["wrong_checked"]) == \
        (1, 3, 2, 3)
    assert report["unparsed_verdicts"] == 1
    assert report["balanced_accuracy"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert report["verifier_p_value"] == pytest.approx(em.fisher_exact_greater(1, 2, 1, 2))
    assert not em.loop_helps(report) and not em.verifier_discriminates(report)
    only_right = em.loop_report(records, {"a", "b"})
    assert only_right["recall_on_wrong"] is None and only_right["balanced_accuracy"] is None


def test_a_verifier_that_approves_right_and_revises_wrong_discriminates_and_the_loop_helps():
    records = []
    for i in range(12):
        records += evaluated_episode(f"r{i}", True, "correct")
        records += evaluated_episode(f"w{i}", False, "wrong", i < 8)  # 8 of 12 wrong answers fixed
    report = em.loop_report(records, {r["id"] for r in records})
    assert report["balanced_accuracy"] == 1.0 and em.verifier_discriminates(report)
    assert (report["fixed"], report["broken"]) == (8, 0) and em.loop_helps(report)
