"""Tests for apo.grading: the hand-labelled set, every real MATH gold answer against itself
(rewritten) and against other problems' answers, box extraction on all 12,500 MATH solutions,
adversarial inputs, and the worker pool's timeouts."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from apo import grading_pool
from apo import grading
from apo.grading import GradingReport, extract_answer, grade, grade_many, last_boxed_content
from tests.conftest import read_jsonl

LABELLED_SET = Path(__file__).resolve().parents[1] / "bench" / "grader_labelled_set.jsonl"


@pytest.fixture(scope="module")
def all_math_rows(math_dir: Path, math_train_rows: list[dict]) -> list[dict]:
    return math_train_rows + read_jsonl(math_dir / "test.jsonl")


# --- extraction ---

@pytest.mark.parametrize("text, expected", [
    ("so $\\boxed{5}$.", "5"),
    ("first $\\boxed{3}$ then $\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
    ("$\\boxed{\\{1,2\\}}$", "\\{1,2\\}"),
    ("$\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\boxed{a \\boxed{3} b}", "a \\boxed{3} b"),  # the outer box is the last top-level one
    ("so $\\boxed 2$.", "2"),
    ("\\boxed {17}.", "17"),
    ("\\fbox{12} is it", "12"),
    ("$\\boxed{1}$ and then $\\boxed{2", "1"),  # an unclosed box is ignored
    ("no box here", None),
    ("\\boxed", None),
])
def test_last_boxed_content(text, expected):
    assert last_boxed_content(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Therefore the answer is $\\boxed{\\dfrac{1}{2}}$.", "\\dfrac{1}{2}"),
    ("# Answer\n\n(2, 4)", "(2, 4)"),
    ("The answer is: (-1,6).", "(-1,6)"),
    ("Final Answer: The final answer is 10. I hope it is correct.", "10"),
    ("Final Answer: The final answer is $\\frac{3}{5}$. I hope it is correct.", "\\frac{3}{5}"),
    ("**Answer:** 15", "15"),
    ("The answer is pi/2", "pi/2"),
    ("(2, 4)", "(2, 4)"),  # a bare one-line answer
    ("$\\frac{1}{2}$", "\\frac{1}{2}"),
    ("We have 3 apples and 5 oranges, so we need to think more about 8.", None),  # never the last number
    ("Step 1: 2+3 = 5.\nStep 2: the area is 25.", None),
    ("The roots are $\\boxed{2}$ and $\\boxed{-3}$.", "2, -3"),  # boxes joined by `and` form a list
    ("I got $\\boxed{4}$. That is wrong; redoing it gives $\\boxed{6}$.", "6"),  # else the last box wins
    ("Therefore the answer is $\\frac{5}{12}$, which is about 0.42.", "\\frac{5}{12}"),
    ("Final Answer: The final answer is $\\$18.90$. I hope it is correct.", "\\$18.90"),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_boxed_content_matches_answer_field_on_all_math_rows(all_math_rows):
    """The `answer` field of MATH train+test is the last box of the solution, all 12,500 rows."""
    assert len(all_math_rows) == 12_500
    mismatched = [r["unique_id"] for r in all_math_rows if last_boxed_content(r["solution"]) != r["answer"]]
    assert mismatched == []


# --- the hand-labelled set ---

def test_labelled_set_is_graded_as_labelled():
    rows = read_jsonl(LABELLED_SET)
    assert len(rows) >= 400 and {type(r["label"]) for r in rows} == {bool}
    report = GradingReport()
    verdicts = grade_many([r["response"] for r in rows], [r["gold"] for r in rows], report=report)
    wrong = [(r["category"], r["gold"], r["response"][-80:]) for r, v in zip(rows, verdicts) if v != r["label"]]
    assert wrong == []
    assert report.timeouts == 0 and report.errors == 0


@pytest.mark.parametrize("response, gold, expected", [
    # math-verify's documented weaknesses, each closed
    ("# Answer\n\n(2, 4)", "(2,4)", True),
    ("The answer is: (-1,6).", "(-1,6)", True),
    ("Final Answer: The final answer is 10. I hope it is correct.", "10", True),
    ("The answer is pi/2", "\\frac{\\pi}{2}", True),
    ("The answer is exp(16)-1", "e^{16}-1", True),
    ("The answer is -2*pi", "-2\\pi", True),
    ("$\\boxed{C}$", "\\text{(C)}", True),
    ("$\\boxed{East}$", "\\text{east}", True),
    ("$\\boxed{Navin}$", "\\text{Navin}", True),
    ("$\\boxed{\\frac{1}{2004!}}$", "\\frac{1}{2006!}", False),
    ("$\\boxed{\\frac{1}{2^{99}}}$", "\\frac{1}{2^{98}}", False),
    ("$\\boxed{(4, 10, -2)}$", "(10,4,-2)", False),  # an ordered tuple keeps its order
    ("$\\boxed{4, 10, -2}$", "10, 4, -2", True),  # a bare list is MATH's list of solutions
    ("$\\boxed{2 \\cdot 5! \\cdot 5!}$", "28800", True),
    ("$\\boxed{2*5!*5!}$", "28800", True),
    ("$\\boxed{i(2-i)}$", "1+2i", True),
    ("$\\boxed{x \\in [-2,7]}$", "[-2, 7]", True),
    ("$\\boxed{[-2,7)}$", "[-2, 7]", False),
    ("$\\boxed{2^{100}+1}$", "2^{100}", False),
    ("$\\boxed{50\\%}$", "\\frac12", True),
    ("$\\boxed{0.5}$", "50\\%", True),  # the one side with `%` may be read as a fraction
    ("$\\boxed{5}$", "50\\%", False),
])
def test_known_weaknesses(response, gold, expected):
    assert grade(response, gold) is expected


# --- every MATH gold answer, rewritten and swapped ---

def _rewrites(answer: str) -> list[str]:
    """The gold written three other ways: boxed in a sentence, with \\left/\\right, with spaces."""
    spaced = " " + re.sub(r"(?<!\\)([,=])", r" \1 ", answer) + " "
    left_right = answer.replace("(", "\\left(").replace(")", "\\right)")
    return [f"So the final answer is $\\boxed{{{answer}}}$ as required.",
            f"Thus \\[\\boxed{{{left_right}}}\\]",
            f"The answer is $\\boxed{{{spaced}}}$."]


def test_every_math_gold_matches_itself_rewritten(all_math_rows):
    """All 12,500 golds x 3 rewrites, graded by the fast path (no sympy needed for these)."""
    failures = []
    for row in all_math_rows:
        gold = row["answer"]
        if not gold.strip():  # two train rows have an empty box (number_theory/7115, 7117)
            continue
        for response in _rewrites(gold):
            answer = extract_answer(response)
            if answer is None or grading._fast_verdict(answer, gold) is not True:
                failures.append((row["unique_id"], gold, response))
    assert failures == []


def _other_answer_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """Each gold paired with the next problem's gold whose plain value and normal form differ."""
    pairs = []
    for i, row in enumerate(rows):
        other = rows[(i + 1) % len(rows)]["answer"]
        gold = row["answer"]
        if not other.strip():
            continue
        n_gold, n_other = grading.normalize_answer(gold), grading.normalize_answer(other)
        if not n_gold or n_gold == n_other:
            continue
        value_gold, value_other = grading._as_rational(n_gold), grading._as_rational(n_other)
        if value_gold is not None and value_gold == value_other:
            continue
        pairs.append((f"The answer is $\\boxed{{{other}}}$.", gold))
    return pairs


def test_every_math_gold_rejects_other_answers(all_math_rows):
    """Fast path on all pairs: never True; the pairs it cannot decide go through grade_many (a sample)."""
    pairs = _other_answer_pairs(all_math_rows)
    assert len(pairs) > 11_000
    undecided = []
    for response, gold in pairs:
        verdict = grading._fast_verdict(extract_answer(response), gold)
        assert verdict is not True, (response, gold)
        if verdict is None:
            undecided.append((response, gold))
    sample = random.Random(0).sample(undecided, min(80, len(undecided)))
    report = GradingReport()
    verdicts = grade_many([r for r, _ in sample], [g for _, g in sample], report=report)
    assert [pair for pair, v in zip(sample, verdicts) if v] == []
    assert report.graded == len(sample) and report.errors == 0


# --- adversarial input and the pool ---

@pytest.mark.parametrize("response", [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "{" * 10_000 + "no closing",
    "x" * 1_000_000 + "\\boxed{3}",
    "\\boxed{3\x00}" + "\x00" * 1000,
    "\\boxed{\ud800 3}",
    "\\boxed{" + "\\frac{1}{" * 3000 + "2" + "}" * 3000 + "}",
    "final answer is " * 800,  # many overlapping answer phrases
    "\\boxed{" * 1700,  # many unclosed boxes (one brace pass, not one scan per box)
    "the answer is " + " " * 11_000 + "3",
    "\\boxed{1" + " " * 10_000 + "x}",
])
def test_adversarial_inputs_return_a_verdict(response):
    report = GradingReport()
    verdicts = grade_many([response], ["3"], timeout=1.0, report=report)
    assert len(verdicts) == 1 and isinstance(verdicts[0], bool)
    assert report.graded == 1


def test_long_response_is_read_from_its_tail():
    assert grade("x" * 1_000_000 + " so $\\boxed{3}$", "3") is True


def test_timeouts_are_counted_and_the_pool_survives():
    report = GradingReport()
    verdicts = grade_many(["$\\boxed{9^{9^{9^{9}}}}$", "$\\boxed{\\sqrt{12}}$"], ["3", "2\\sqrt{3}"],
                          timeout=0.5, num_workers=2, report=report)
    assert verdicts == [False, True]
    assert report.timeouts == 1 and report.graded == 2 and report.correct == 1
    # the killed worker was replaced: the next slow pair is graded by a live pool
    assert grade_many(["$\\boxed{2\\sqrt{3}}$"], ["\\sqrt{12}"], num_workers=2) == [True]
    assert all(w.process.poll() is None for w in grading_pool._POOL.workers)


def test_report_counts_accumulate_across_calls():
    report = GradingReport()
    grade_many(["$\\boxed{1}$", "no answer here at all, sorry about that", "$\\boxed{2}$"], ["1", "1", "1"], report=report)
    grade_many(["$\\boxed{\\frac{2}{4}}$"], ["\\frac12"], report=report)
    assert (report.graded, report.correct, report.no_answer, report.timeouts, report.errors) == (4, 2, 1, 0, 0)


def test_grade_many_from_a_thread():
    """No signal.alarm anywhere: grading works off the main thread (training callbacks, eval loops)."""
    results = []
    thread = threading.Thread(target=lambda: results.append(grade_many(["$\\boxed{\\sqrt{8}}$"], ["2\\sqrt2"])))
    thread.start()
    thread.join()
    assert results == [[True]]


def test_grade_many_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        grade_many(["1", "2"], ["1"])
    with pytest.raises(ValueError, match="timeout"):
        grade_many(["1"], ["1"], timeout=0)
    with pytest.raises(TypeError, match="pair 1 is \\(NoneType, str\\)"):
        grade_many(["1", None], ["1", "2"])


def test_grader_version_is_recorded():
    assert isinstance(grading.GRADER_VERSION, str) and grading.GRADER_VERSION
    json.dumps({"grader_version": grading.GRADER_VERSION})


def test_pool_raises_when_workers_cannot_start(monkeypatch):
    class BrokenWorker(grading_pool.Worker):
        def __init__(self) -> None:
            self.process = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)
            self.ready, self.task, self.started_at = False, None, 0.0

    monkeypatch.setattr(grading_pool, "Worker", BrokenWorker)
    pool = grading_pool.GraderPool(1)
    try:
        with pytest.raises(RuntimeError, match="exited 3 times before becoming ready"):
            pool.run([("\\sqrt{2}", "2")], timeout=1.0)
    finally:
        pool.close()


def test_a_verification_verdict_is_not_an_answer():
    assert extract_answer("All steps check out. The answer is correct.") is None
    assert extract_answer("Step 2 is wrong. **The answer is wrong.**") is None
    assert extract_answer("The answer is 7. Checking again, the answer is correct.") == "7"
