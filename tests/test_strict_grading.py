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
