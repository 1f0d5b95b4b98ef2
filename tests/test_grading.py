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
from apo.answer_normalization import as_rational, normalize_answer
from apo.grading import GradingReport, extract_answer, grade, grade_many, last_boxed_content
from tests.conftest import BENCHMARK_DATA, read_jsonl

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
    ("$\\boxed{50\\%}$", "\\frac12", False),  # grader 1.3: a percent is never its value / 100 (issue 27)
    ("$\\boxed{0.5}$", "50\\%", False),
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
        n_gold, n_other = normalize_answer(gold), normalize_answer(other)
        if not n_gold or n_gold == n_other:
            continue
        value_gold, value_other = as_rational(n_gold), as_rational(n_other)
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


def test_a_fast_rule_that_raises_sends_the_pair_to_the_workers(monkeypatch):
    """The fast path runs in the caller's process: a rule that raises on one pair must not end the
    evaluation; the pair goes to a worker, where a repeated failure is counted as an error."""
    fast_verdict = grading._fast_verdict

    def failing_on_one_pair(pred, gold):
        if gold == "7":
            raise RecursionError("a rule that loops on this pair")
        return fast_verdict(pred, gold)

    monkeypatch.setattr(grading, "_fast_verdict", failing_on_one_pair)
    report = GradingReport()
    verdicts = grade_many(["$\\boxed{7}$", "$\\boxed{2}$"], ["7", "3"], num_workers=2, report=report)
    assert verdicts == [True, False]  # the worker, which has the real rules, graded the first pair
    assert (report.graded, report.correct, report.errors) == (2, 1, 0)


def test_report_counts_accumulate_across_calls():
    report = GradingReport()
    grade_many(["$\\boxed{1}$", "no answer here at all, sorry about that", "$\\boxed{2}$"], ["1", "1", "1"],
               report=report)
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


# --- answers written by others (issue 18) and the benchmarks' formats (issue 15) ---

@pytest.mark.parametrize("text, expected", [
    ("She earns 9 * 2 = 18.\n#### 18", "18"),  # GSM8K
    ("#### $70,000", "$70,000"),
    ("Count them.\n\nAnswer: \\[ 9 \\]", "9"),
    ("Count them.\n\n**Final Answer:**\n\\[\n\\frac{7}{2}\n\\]", "\\frac{7}{2}"),
    ("The bags hold 21 and 8.\nThus, the total number of stones is 29.", "29"),  # a concluding sentence
    ("So the required length is $4\\sqrt{3}$.", "4\\sqrt{3}"),
    ("Dividing by 3 we find it.\nTherefore, $n = 15$.", "n = 15"),
    ("Step 1: 2+3 = 5.\nStep 2: the area is 25.", None),  # no concluding word: not an answer
    ("So $\\boxed{9}$.<|im_end|>\n<|im_start|>user\nWhat is 3*4?<|im_end|>\n<|im_start|>assistant\n$\\boxed{12}$", "9"),
    ("So $\\boxed{9}$.<|endoftext|>Problem: 2+2. $\\boxed{4}$", "9"),
    ("6*7 = 42.\nFinal Answer: The final answer is 42. I hope it is correct.\n\nProblem:\nCompute 1+1.\n\n"
     "Solution: 1+1=2.\nFinal Answer: The final answer is 2. I hope it is correct.", "42"),  # base model went on
    ("3 * 4 = 12.\n#### 12\n\nQuestion: Sam has 5 pens. He loses 2.\nAnswer: 5 - 2 = 3\n#### 3", "12"),
    ("$\\boxed{(1, 4)} \\quad \\text{and} \\quad \\boxed{(4, 1)}$", "(1, 4), (4, 1)"),
    ("So $x = \\boxed{4}$ or $x = \\boxed{-1}$.", "4, -1"),  # `or` joins labelled boxes only
    ("Thus $p = \\boxed{2}$ and $q = \\boxed{9}$.", "p = 2, q = 9"),
    ("\\[\\boxed{5}\\]\n\\[\\boxed{-2}\\]", "5, -2"),
    ("$\\boxed{15\\frac{39}{40}},$ or $\\boxed{\\frac{639}{40}}$",  # MATH: one answer, two forms (candidates)
     "15\\frac{39}{40} \\text{ or } \\frac{639}{40}"),
    ("The area is $A = \\boxed{12}$ and the perimeter is $P = \\boxed{14}$.", "14"),  # words between: not joined
    ("$\\boxed{4}$\n\n$\\boxed{4}$", "4"),  # a repeated box counts once
    ("Hence $\\boxed{185\\}$", "185"),  # escaped closing brace
    ("The answer is $\\boxed{\\frac{1}{", None),  # truncated
])
def test_extract_answer_in_the_forms_models_write(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("response, gold, expected", [
    # relations: swapped sides, ASCII, unicode, \gt / \lt, `or`; near misses change the direction or an end
    ("$\\boxed{7 \\le y}$", "y \\ge 7", True),
    ("$\\boxed{7 \\ge y}$", "y \\ge 7", False),
    ("$\\boxed{x <= -2}$", "(-\\infty,-2]", True),
    ("$\\boxed{x < -2}$", "(-\\infty,-2]", False),
    ("$\\boxed{4 \\lt x}$", "(4,\\infty)", True),
    ("$\\boxed{4 \\gt x}$", "(4,\\infty)", False),
    ("$\\boxed{3 > x > 1}$", "(1,3)", True),
    ("$\\boxed{3 \\geq x > 1}$", "(1,3)", False),
    ("$\\boxed{x \u2264 2}$", "(-\\infty, 2]", True),
    ("$\\boxed{x != 3}$", "x \\ne 3", True),
    ("$\\boxed{x != -3}$", "x \\ne 3", False),
    ("$\\boxed{x \\le -1 \\text{ or } x \\ge 3}$", "(-\\infty,-1]\\cup[3,\\infty)", True),
    ("$\\boxed{x < -1 \\text{ or } x \\ge 3}$", "(-\\infty,-1]\\cup[3,\\infty)", False),
    ("$\\boxed{5!=120}$", "120", True),  # a factorial, not `!=`
    # several boxes
    ("$\\boxed{(1, 4)} \\quad \\text{and} \\quad \\boxed{(4, 1)}$", "(1,4), (4,1)", True),
    ("$\\boxed{(1, 4)} \\quad \\text{and} \\quad \\boxed{(4, 1)}$", "(1,4), (4,2)", False),
    ("So $x = \\boxed{4}$ or $x = \\boxed{-1}$.", "4, -1", True),
    ("So $x = \\boxed{4}$ or $x = \\boxed{-1}$.", "4", False),
    ("Thus $p = \\boxed{2}$ and $q = \\boxed{9}$.", "(2,9)", True),
    ("Thus $p = \\boxed{9}$ and $q = \\boxed{2}$.", "(2,9)", False),
    # labelled golds
    ("$\\boxed{2:3}$", "A_1:A_2 = 2:3", True),
    ("$\\boxed{\\frac{2}{3}}$", "A_1:A_2 = 2:3", True),
    ("$\\boxed{3:2}$", "A_1:A_2 = 2:3", False),
    ("$\\boxed{5, 1}$", "x_1 = 1, x_2 = 5", True),  # roots: any order
    ("$\\boxed{1, 6}$", "x_1 = 1, x_2 = 5", False),
    ("$\\boxed{(1, -4)}$", "p=1, q=-4", True),  # distinct names: an ordered pair
    ("$\\boxed{(-4, 1)}$", "p=1, q=-4", False),
    ("$\\boxed{y=3, x=2}$", "x=2, y=3", True),
    ("$\\boxed{y=2, x=3}$", "x=2, y=3", False),
    ("$\\boxed{90^\\circ, 90^\\circ}$", "\\angle B E A_{1}=90$,$\\angle A E B_{1}=90", True),
    ("$\\boxed{2x - 1}$", "g(x) = 2x - 1", True),
    ("$\\boxed{2x + 1}$", "g(x) = 2x - 1", False),
    # numbers: long decimals of fractions, \pm, column vectors
    ("$\\boxed{0.0833333333333333}$", "\\frac{1}{12}", True),
    ("$\\boxed{0.0833333333333343}$", "\\frac{1}{12}", False),  # beyond the last place
    ("$\\boxed{0.14285714}$", "\\frac17", True),  # cut
    ("$\\boxed{0.14285715}$", "\\frac17", False),  # neither cut nor rounded
    ("$\\boxed{0.6666666667}$", "\\frac{2}{3}", True),  # rounded
    ("$\\boxed{0.142857}$", "\\frac{1}{7}", False),  # six digits: a rounding, not the fraction
    ("$\\boxed{0.2222222222}$", "-\\frac{2}{9}", False),
    ("$\\boxed{0.000001}$", "10^{-7}", False),
    ("$\\boxed{\\pm 5}$", "5, -5", True),
    ("$\\boxed{\\pm 5}$", "-5", False),
    ("$\\boxed{-5}$", "\\pm 5", False),  # one of the two: not the answer
    # a \pm inside braces is two solutions too (it recursed without end before)
    ("$\\boxed{\\frac{1+\\sqrt{5}}{2}, \\frac{1-\\sqrt{5}}{2}}$", "\\frac{1\\pm\\sqrt{5}}{2}", True),
    ("$\\boxed{\\frac{1+\\sqrt{5}}{2}}$", "\\frac{1\\pm\\sqrt{5}}{2}", False),
    ("$\\boxed{1}$", "\\frac{1\\pm\\sqrt{5}}{2}", False),
    ("$\\boxed{\\frac{1}{2}, -\\frac{1}{2}}$", "\\frac{\\pm1}{2}", True),
    ("$\\boxed{1}$", "\\pm 1 \\pm \\sqrt{2}", False),  # two \pm: a leaf for the slow path, no recursion
    ("$\\boxed{\\begin{matrix} 3 \\\\ \\frac14 \\end{matrix}}$", "[3, 0.25]", True),
    ("$\\boxed{\\begin{matrix} \\frac14 \\\\ 3 \\end{matrix}}$", "[3, 0.25]", False),
    ("$\\boxed{[4, 0]}$", "\\begin{pmatrix} 4 \\\\ 0 \\end{pmatrix}", True),
    ("$\\boxed{[0, 4]}$", "\\begin{pmatrix} 4 \\\\ 0 \\end{pmatrix}", False),
    ("$\\boxed{[-2, 7]}$", "[-2, 7)", False),  # without a vector, brackets still matter
    # the same line or curve as another equation (sympy)
    ("$\\boxed{x - 3y + 6 = 0}$", "y = \\frac{1}{3}x + 2", True),
    ("$\\boxed{x - 3y - 6 = 0}$", "y = \\frac{1}{3}x + 2", False),
    ("$\\boxed{y = 5 - 2x}$", "2x + y = 5", True),
    ("$\\boxed{y = 5 + 2x}$", "2x + y = 5", False),
    ("$\\boxed{(x-1)^2 + y^2 = 4}$", "x^2 - 2x + y^2 = 3", True),
    ("$\\boxed{(x-1)^2 + y^2 = 2}$", "x^2 - 2x + y^2 = 3", False),
    ("$\\boxed{x = 2}$", "x^2 = 4", False),
    ("$\\boxed{y = 3}$", "x = 3", False),
    # malformed LaTeX
    ("Hence $\\boxed{72\\}$", "72", True),
    ("Hence $\\boxed{27\\}$", "72", False),
    ("Hence $\\boxed{\\frac{2}{9}}}$", "\\frac29", True),
])
def test_answers_written_by_others(response, gold, expected):
    assert grade(response, gold) is expected


@pytest.mark.parametrize("response, gold, expected", [
    # GSM8K: integers with separators and dollars
    ("She has 9 left.\n#### 1,500", "1500", True),
    ("She has 9 left.\n#### $1,500", "1500", True),
    ("She has 9 left.\n#### 150", "1500", False),
    ("#### 2,000 dollars", "2000", True),
    ("So each ticket costs $12.50.\nThe answer is $12.50.", "12.5", True),
    # Minerva: scientific notation, the gold's rounding, units, numpy-style golds
    ("$\\boxed{6.6 \\times 10^{27}}$", "6.6e27", True),
    ("$\\boxed{6.6 \\times 10^{28}}$", "6.6e27", False),
    ("$\\boxed{6.63 \\times 10^{27} \\mathrm{~g}}$", "6.6e27", True),  # rounds to the gold's two figures
    ("$\\boxed{6.9 \\times 10^{27}}$", "6.6e27", False),
    ("$\\boxed{0.005}$", "5e-3", True),
    ("$\\boxed{0.05}$", "5e-3", False),
    ("$\\boxed{210^{3}}$", "9261000", True),  # 210 cubed, not 2 x 10^3
    ("$\\boxed{210^{3}}$", "2000", False),
    ("$\\boxed{1.2 \\mathrm{~km} \\mathrm{~s}^{-1}}$", "1.2", True),
    ("$\\boxed{-\\frac{3}{2}}$", "-3./2", True),
    ("$\\boxed{\\frac{3}{2}}$", "-3./2", False),
    ("$\\boxed{\\arcsin(10/13)}$", "np.arcsin(10/13)", True),
    # AIME: integers 0-999
    ("$\\boxed{007}$", "7", True),
    ("$\\boxed{70}$", "7", False),
    # OlympiadBench: several values, units, intervals, expressions in n
    ("$n = \\boxed{3}$ and $n = \\boxed{7}$", "3, 7", True),
    ("$\\boxed{48 \\mathrm{~cm}^{2}}$", "48", True),
    ("$\\boxed{3 < a \\leq 5}$", "[3,5]", False),
    ("$\\boxed{\\frac{n^2 - n}{2}}$", "\\frac{n(n-1)}{2}", True),
    ("$\\boxed{\\frac{n^2 + n}{2}}$", "\\frac{n(n-1)}{2}", False),
    ("$\\boxed{30^\\circ, 120^\\circ}$", "30^{\\circ}$,$120^{\\circ}", True),
])
def test_benchmark_answer_formats(response, gold, expected):
    assert grade(response, gold) is expected


@pytest.mark.parametrize("response, gold", [
    ("$\\boxed{\\frac{2}{0}}$", "\\frac{1}{0}"),
    ("$\\boxed{\\frac{1}{0}}$", "\\frac{1}{0}"),  # undefined is not equal even to itself
    ("$\\boxed{2/0}$", "2/0"),
    ("$\\boxed{1/0}$", "\\infty"),
    ("$\\boxed{\\frac{0}{0}}$", "0"),
    ("$\\boxed{5}$", "\\frac{5}{0}"),
])
def test_division_by_zero_is_never_equal(response, gold):
    assert grade(response, gold) is False
    assert grading.slow_equivalent(extract_answer(response), gold) is False


BENCHMARK_DIR = BENCHMARK_DATA


@pytest.mark.parametrize("benchmark", ["gsm8k", "minerva_math"])
def test_benchmark_reference_solutions_grade_as_their_answers(benchmark):
    """GSM8K's `#### 18` and Minerva's last box: grade(solution, answer) on at least 99% of rows."""
    rows = read_jsonl(BENCHMARK_DIR / f"{benchmark}.jsonl")
    report = GradingReport()
    verdicts = grade_many([r["solution"] for r in rows], [r["answer"] for r in rows], report=report)
    rejected = [(r["id"], r["answer"]) for r, v in zip(rows, verdicts) if not v]
    assert len(rejected) <= 0.01 * len(rows), rejected[:20]
    assert report.timeouts == 0 and report.errors == 0


def test_heldout_set_is_well_formed():
    """The out-of-sample sets keep their shape (their verdicts are measured by bench/bench_grader.py only)."""
    for name in ("grader_heldout_set.jsonl", "grader_heldout_issue27_set.jsonl"):
        rows = read_jsonl(LABELLED_SET.parent / name)
        assert len(rows) >= 150
        assert all(isinstance(r["label"], bool) and r["reason"] and r["category"] and r["gold"] for r in rows)


# --- hedges cannot earn the reward (issue 27, grader 1.3) ---

ADVERSARIAL_SET = LABELLED_SET.parent / "grader_adversarial_set.jsonl"


def test_adversarial_set_no_hedge_accepted_no_near_miss_rejected():
    """Every hedge in bench/grader_adversarial_set.jsonl scores 0; every near-miss there scores 1."""
    rows = read_jsonl(ADVERSARIAL_SET)
    assert {r["kind"] for r in rows} == {"hack", "near_miss"} and all(r["label"] == (r["kind"] == "near_miss")
                                                                       for r in rows)
    verdicts = grade_many([r["response"] for r in rows], [r["gold"] for r in rows], timeout=10.0)
    hacks = [(r["category"], r["gold"], r["response"][:80]) for r, v in zip(rows, verdicts) if v and not r["label"]]
    missed = [(r["category"], r["gold"], r["response"][:80]) for r, v in zip(rows, verdicts) if r["label"] and not v]
    assert hacks == [] and missed == []


@pytest.mark.parametrize("response, gold", [
    # a percent is read one way: the number before its sign
    ("$\\boxed{5\\%}$", "0.05"), ("$\\boxed{5\\%}$", "\\frac{1}{20}"), ("$\\boxed{50\\%}$", "0.5"),
    ("$\\boxed{50\\%}$", "\\frac{1}{2}"), ("$\\boxed{0.5\\%}$", "0.5"),
    # words that qualify or negate are not units
    ("$\\boxed{10 \\text{ or more}}$", "10"), ("$\\boxed{10 \\text{ maybe}}$", "10"),
    ("$\\boxed{10 \\text{ is wrong}}$", "10"),
    ("$\\boxed{10 \\text{ at most}}$", "10"), ("$\\boxed{10 \\text{ or eleven}}$", "10"),
    ("$\\boxed{x = 10 \\text{ or more}}$", "10"), ("$\\boxed{\\frac{1}{2} \\text{ at least}}$", "\\frac{1}{2}"),
    ("$\\boxed{[2, 5] \\text{ or larger}}$", "[2, 5]"),
    # a chain is right only when its links are equal
    ("$\\boxed{11 = 10}$", "10"), ("$\\boxed{x = 9 = 10}$", "10"),
    # negation
    ("It is not $\\boxed{5}$.", "5"), ("The answer is definitely not $\\boxed{5}$", "5"),
    ("$\\boxed{5}$ is wrong.", "5"),
    # a stated answer counts only as the final statement
    ("We must show that the answer is 5.\n\nProof. By induction on n; the step follows.", "5"),
    ("Answer: 5\n\nLet me double-check by substituting back, which gives a contradiction, so something is off.", "5"),
    # candidates joined by `or`
    ("The answer is $5$ or $6$.", "5"), ("$\\boxed{4}$ or $\\boxed{5}$", "5"), ("$\\boxed{(C)(D)}$", "C"),
    ("$\\boxed{(C) \\text{ or } (D)}$", "C"),
    # junk or a retraction after the final box
    ("So the answer is $\\boxed{5}$." + " blah" * 1000, "5"),
    ("So the answer is $\\boxed{5}$.\n\nHmm, actually I made a mistake, so this is not correct.", "5"),
    # exact values compare exactly
    ("$\\boxed{2\\sqrt{3} + 10^{-10}}$", "2\\sqrt{3}"),
    # a line break in a gold separates two values
    ("$\\boxed{56}$", "5\n6"),
])
def test_hedges_score_zero(response, gold):
    assert grade(response, gold) is False


@pytest.mark.parametrize("response, gold", [
    ("$\\boxed{5\\%}$", "5"), ("$\\boxed{50}$", "50\\%"), ("$\\boxed{12.5\\%}$", "12.5"),  # MATH's percent convention
    ("$\\boxed{10 \\text{ cm}}$", "10"), ("There are $\\boxed{10}$ ways to do it.", "10"),
    ("$\\boxed{18 \\text{ integers}}$", "18"), ("$\\boxed{x = 10 \\text{ cm}}$", "10"),
    ("$\\boxed{2^{10} = 1024}$", "1024"), ("$\\boxed{x = 3 + 7 = 10}$", "10"), ("$\\boxed{a+b = 10}$", "10"),
    ("Since $x$ is not zero, the answer is $\\boxed{5}$.", "5"), ("The answer is not 4 but $\\boxed{5}$.", "5"),
    ("Let me compute.\n\nThe answer is $5$. I hope it is correct.", "5"),
    ("Answer: 9\n\nExplanation: nine cases.", "9"),
    ("$\\boxed{15\\frac{39}{40}}$ or $\\boxed{\\frac{639}{40}}$", "\\frac{639}{40}"),  # one answer in two forms
    ("$x = \\boxed{2}$ or $x = \\boxed{-5}$", "2, -5"), ("$\\boxed{\\text{(C) } 12}$", "C"),
    ("So the answer is $\\boxed{5}$.\n\nI hope this helps!", "5"),
    ("So the answer is $\\boxed{5}$. This is the number of ways to choose the pair.", "5"),
    ("$\\boxed{\\sqrt{12}}$", "2\\sqrt{3}"), ("$\\boxed{3.464101615}$", "2\\sqrt{3}"),
    # should count
    ("$\\boxed{\\approx 10}$", "10"), ("$\\boxed{10}$ $\\boxed{}$", "10"),
    ("$\\boxed{\\text{any real number}}$", "(-\\infty, \\infty)"), ("$\\boxed{5, 6}$", "5\n6"),
    ("$\\boxed{90}$", "90\\text{ square\nunits}"),
    # the formats, as others write them
    ("She has 8 left. #### 8", "8"),
    ("Final Answer: The final answer is $10,455$. I hope it is correct.", "10455"),
    ("Therefore $x \\geq 5$ is the solution.", "x \\ge 5"),
    ("$\\boxed{1},\\boxed{2},\\boxed{3}$", "\\{1,2,3\\}"),
    ("Therefore, the matrix is $\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}$.",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
    ("Thus the answer is\n\\[\n\\begin{pmatrix} 1 & 2 \\\\\n 3 & 4 \\end{pmatrix}.\n\\]",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
])
def test_near_misses_still_score_one(response, gold):
    assert grade(response, gold) is True
