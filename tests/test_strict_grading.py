"""apo.strict_grading: the official A*-PO reward (last \\boxed{} exact after MATH's strip_string,
EOS required) on hand-checked cases and real MATH rows, and the reward-rule dispatch."""

from __future__ import annotations

import pytest

from apo.config import A_PO_Config
from apo.strict_grading import (
    boxed_exact, is_equiv, official_box_content, official_last_boxed, rewards_by_rule, strip_string,
)


@pytest.mark.parametrize("response, gold, expected", [
    ("So $x = \\boxed{\\dfrac{1}{2}}$.", "\\frac12", True),          # dfrac -> frac, \frac12 -> \frac{1}{2}
    ("$\\boxed{0.5}$", "\\frac{1}{2}", True),                         # the one decimal rule
    ("$\\boxed{3/4}$", "\\frac34", True),                             # a/b -> \frac{a}{b}
    ("$\\boxed{\\frac{2}{4}}$", "\\frac12", False),                   # equal values, different strings
    ("$\\boxed{10\\%}$", "10", True),                                 # \% removed
    ("$\\boxed{10%}$", "10", False),                                  # a bare % is not (as in the original)
    ("$\\boxed{x = 5}$", "5", True),                                  # short 'k =' prefix dropped
    ("$\\boxed{90^\\circ}$", "90", True),
    ("$\\boxed{\\left( 1, 2 \\right)}$", "(1,2)", True),
    ("$\\boxed{5 \\text{ cm}}$", "5", True),                          # unit on the right
    ("$\\boxed{.5}$", "0.5", True),
    ("$\\boxed{\\sqrt2}$", "\\sqrt{2}", True),
    ("First $\\boxed{3}$, then $\\boxed{4}$.", "4", True),            # the last box counts
    ("First $\\boxed{3}$, then $\\boxed{4}$.", "3", False),
    ("The answer is $\\boxed 5$.", "5", True),                        # '\boxed ' up to the next '$'
    ("The answer is $\\fbox{5}$.", "5", False),                       # found, but the official code scores 0
    ("The answer is 5.", "5", False),                                 # no box
    ("$\\boxed{5$", "5", False),                                      # braces never close
    ("$\\boxed{x/2}$", "x/2", True),                                  # strip_string raises: raw strings compared
    ("$\\boxed{x/2}$", "\\frac{x}{2}", False),
])
def test_boxed_exact_hand_cases(response, gold, expected):
    assert boxed_exact(response, gold, truncated=False) is expected


@pytest.mark.parametrize("response, truncated, expected", [
    ("The answer is $\\boxed 5$.", False, True),       # the next "$" ends the answer
    ("The answer is $\\boxed 5$", False, True),
    ("The answer is \\boxed 5", False, False),         # nothing ends it: "5<|endoftext|>" there
    ("The answer is \\boxed 5.", False, False),        # "5.<|endoftext|>"
    ("The answer is \\boxed 5", True, False),          # truncated: no EOS, 0 either way
    ("The answer is $\\boxed 5$.", True, False),
    ("The answer is \\boxed{5}", False, True),         # a braced box is brace-matched, the EOS text after it
    ("$\\boxed 4$ and then \\boxed{5}", False, False),  # a "\\boxed " wins over a later braced box: "4"
])
def test_a_boxed_answer_with_a_space_scores_what_the_official_text_scores(response, truncated, expected):
    """The official reward scores prompt + response decoded with special tokens: a finished
    response's text ends in "<|endoftext|>", which a "\\boxed " answer read up to the next "$"
    carries when no "$" follows (verl/trainer/main_apo.py lines 72-73, math.py line 108)."""
    assert boxed_exact(response, "5", truncated=truncated) is expected


def _official_compute_score(sequence: str, gold: str) -> bool:
    """ZhaolinGao/A-PO verl/utils/reward_score/math.py, compute_score (lines 31-42) with
    last_boxed_only_string (107-136) and remove_boxed (63-74), copied; is_equiv as there."""
    if "<|endoftext|>" != sequence[-len("<|endoftext|>"):]:
        return False
    idx = sequence.rfind("\\boxed")
    if "\\boxed " in sequence:
        box = "\\boxed " + sequence.split("\\boxed ")[-1].split("$")[0]
    else:
        if idx < 0:
            idx = sequence.rfind("\\fbox")
            if idx < 0:
                return False
        depth, box = 0, None
        for i in range(idx, len(sequence)):
            depth += sequence[i] == "{"
            if sequence[i] == "}":
                depth -= 1
                if depth == 0:
                    box = sequence[idx:i + 1]
                    break
        if box is None:
            return False
    if "\\boxed " in box:
        return is_equiv(box[len("\\boxed "):], gold)
    if not (box.startswith("\\boxed{") and box.endswith("}")):
        return False  # the official assertions raise; compute_score catches and scores 0
    return is_equiv(box[len("\\boxed{"):-1], gold)


def test_boxed_exact_agrees_with_the_official_code_on_prompt_plus_response():
    """Golds are never empty (apo/records.py requires a non-empty answer): only an empty gold
    would meet the prompt's empty box, which the official text holds and this one does not."""
    prompt = "What is $2+3$? Let's think step by step and output the final answer within \\boxed{}."
    responses = ["So \\boxed 5", "So $\\boxed 5$.", "So \\boxed{5}.", "So \\boxed{5", "So \\fbox{5}", "So 5.",
                 "$\\boxed 4$ then \\boxed{5}", "\\boxed{4} then \\boxed 5 $", "\\boxed 5\n", "\\boxed{\\dfrac{10}{2}}",
                 "\\boxed{}"]
    for response in responses:
        for gold in ("5", "4"):
            for truncated in (False, True):
                official = _official_compute_score(prompt + response + ("" if truncated else "<|endoftext|>"), gold)
                assert boxed_exact(response, gold, truncated=truncated) is official, (response, gold, truncated)


def test_eos_is_required():
    assert boxed_exact("$\\boxed{4}$", "4", truncated=False)
    assert not boxed_exact("$\\boxed{4}$", "4", truncated=True)


def test_strip_string_steps_and_fallbacks():
    assert strip_string("\\left(\\tfrac{1}{2}, 3\\right)") == "(\\frac{1}{2},3)"
    assert strip_string("k = \\frac 1 2") == "\\frac{1}{2}"
    assert strip_string("\\$5.00") == "5.00"
    with pytest.raises(ValueError):
        strip_string("1 \\text{ m} + 2 \\text{ m}")  # two unit spans: the original's assertion
    assert is_equiv("1 \\text{ m} + 2 \\text{ m}", "1 \\text{ m} + 2 \\text{ m}")  # raw comparison
    assert not is_equiv(None, "1")
    assert official_last_boxed("a \\boxed{b{c}} d") == "\\boxed{b{c}}"
    assert official_box_content(official_last_boxed("no box here")) is None


def test_real_math_solutions_score_one_against_their_own_answers(math500_rows, math_train_rows):
    assert all(boxed_exact(row["solution"], row["answer"], truncated=False) for row in math500_rows)
    misses = [row for row in math_train_rows if not boxed_exact(row["solution"], row["answer"], truncated=False)]
    assert len(misses) <= 1  # 1 of 7,500 when written (a solution whose last box is not its answer)


def test_rewards_by_rule_dispatches_and_never_rewards_a_truncated_answer():
    texts = ["$\\boxed{\\frac{2}{4}}$", "$\\boxed{4}$", "$\\boxed{4}$"]
    golds, truncated = ["\\frac12", "4", "4"], [False, False, True]
    strict = A_PO_Config(reward_rule="boxed_exact")
    assert rewards_by_rule(texts, golds, truncated, strict) == [False, True, False]
    assert rewards_by_rule(texts, golds, truncated, strict, grade_truncated=True) == [False, True, False]
    grader = A_PO_Config(reward_rule="grade", grading_workers=1)
    assert rewards_by_rule(texts, golds, truncated, grader) == [True, True, False]
    assert rewards_by_rule(texts, golds, truncated, grader, grade_truncated=True) == [True, True, True]
    with pytest.raises(ValueError, match="one gold"):
        rewards_by_rule(texts, golds[:2], truncated, strict)
