"""apo.synthetic: every answer gradeable, answers re-derived here from the problem text,
determinism, no duplicates, and level 1 kept to single-digit work."""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction

import pytest

from apo.grading import grade, last_boxed_content
from apo.synthetic import SYNTHETIC_LEVELS, SYNTHETIC_TYPES, decimal_number, generate_problems, latex_number

SCHEMA = {"id", "problem", "solution", "answer", "type", "level", "source"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return generate_problems(900, seed=3)  # 20 per (type, level) cell


def as_fraction(answer: str) -> Fraction:
    """Parse the answers the generator writes: -12, 37.5, \\frac{3}{4}, -\\frac{5}{2}."""
    match = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", answer)
    if match:
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return -value if match.group(1) else value
    return Fraction(answer)


def numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"-?\d+", text)]


def test_every_row_has_the_schema_and_grades_correct_against_its_own_solution(rows):
    assert Counter((r["type"], r["level"]) for r in rows) == {(t, lv): 20 for t in SYNTHETIC_TYPES for lv in SYNTHETIC_LEVELS}
    for index, row in enumerate(rows):
        assert set(row) == SCHEMA and row["source"] == "synthetic"
        assert row["id"] == f"synthetic/{row['type']}/{index}"
        assert last_boxed_content(row["solution"]) == row["answer"]
        assert grade(row["solution"], row["answer"]), row


def test_wrong_answers_do_not_grade_correct(rows):
    # The gradeability test above could pass with a grader that accepts anything.
    numeric = [r for r in rows if re.fullmatch(r"-?\d+", r["answer"])][:100]
    assert numeric and not any(grade(f"$\\boxed{{{int(r['answer']) + 1}}}$", r["answer"]) for r in numeric)


def recompute(row: dict) -> Fraction | str | None:
    """Independent answer from the problem text for the types/levels with a direct formula."""
    problem, kind, level = row["problem"], row["type"], row["level"]
    if kind == "arithmetic" and level in (1, 2, 3, 4, 5):
        expression = re.search(r"\$(.+)\$", problem).group(1)
        expression = re.sub(r"\^\{(\d+)\}", r"**\1", expression.replace("\\times", "*"))
        return Fraction(eval(expression, {"__builtins__": {}}))  # digits and + - * ** ( ) only
    if kind == "linear_equations" and level <= 3:
        match = re.search(r"\$(\\frac\{x\}\{)?(-?\d*)x?\}? ?([+-] \d+)? = (-?\d+)\$", problem)
        if "\\frac{x}" in problem:
            a, b = numbers(problem)
            return Fraction(a * b)
        a = int(match.group(2)) if match.group(2) not in ("", "-") else 1
        b = int(match.group(3).replace(" ", "")) if match.group(3) else 0
        return Fraction(int(match.group(4)) - b, a)
    if kind == "gcd_lcm":
        values = numbers(problem)
        if "sum of the greatest" in problem:
            return Fraction(math.gcd(*values) + math.lcm(*values))
        return Fraction(math.gcd(*values) if "greatest" in problem else math.lcm(*values))
    if kind == "remainders" and level <= 2:
        a, b = numbers(problem)
        return Fraction(a % b)
    if kind == "remainders" and level == 4:
        base, exponent, modulus = numbers(problem)
        return Fraction(pow(base, exponent, modulus))
    if kind == "remainders" and level == 5:
        a, b, m = numbers(problem)
        return Fraction(next(x for x in range(1, m + 1) if (a * x - b) % m == 0))
    if kind == "counting" and "committee of" in problem and "president" not in problem:
        k, n = numbers(problem)
        return Fraction(math.comb(n, k))
    if kind == "counting" and "divisible by" in problem:
        _, n, a, b = numbers(problem)
        return Fraction(sum(1 for x in range(1, n + 1) if x % a == 0 or x % b == 0))
    if kind == "counting" and "arrangements of the letters" in problem:
        word = re.search(r"word ([A-Z]+)", problem).group(1)
        from itertools import permutations
        return Fraction(len(set(permutations(word)))) if len(word) <= 8 else None
    if kind == "polynomial_roots" and level == 3:
        b, c = _quadratic_coefficients(re.search(r"\$(.+) = 0\$", problem).group(1))
        roots = [x for x in range(-60, 61) if x * x + b * x + c == 0]
        return Fraction(sum(roots))
    if kind == "areas" and "rectangle" in problem:
        a, b = numbers(problem)
        return Fraction(a * b if "area" in problem else 2 * (a + b))
    if kind == "areas" and "triangle has base" in problem:
        base, height = numbers(problem)
        return Fraction(base * height, 2)
    if kind == "areas" and "right triangle" in problem:
        leg, hypotenuse = numbers(problem)
        other = next(x for x in range(1, hypotenuse) if leg * leg + x * x == hypotenuse * hypotenuse)
        return Fraction(leg * other, 2)
    if kind == "percentages" and problem.startswith("What is"):
        percent, whole = numbers(problem)
        return Fraction(percent * whole, 100)
    if kind == "percentages" and problem.startswith("What percent"):
        whole, part = numbers(problem)
        return Fraction(100 * part, whole)
    return None


def _quadratic_coefficients(text: str) -> tuple[int, int]:
    """`x^2 - 3x - 10` -> (-3, -10); `x^2 - 6x` -> (-6, 0)."""
    b = re.search(r"([+-]) (\d*)x(?!\^)", text)
    c = re.search(r"([+-]) (\d+)$", text)
    b_value = 0 if b is None else int(b.group(1) + (b.group(2) or "1"))
    c_value = 0 if c is None else int(c.group(1) + c.group(2))
    return b_value, c_value


def test_answers_match_an_independent_recomputation_from_the_problem_text(rows):
    checked = Counter()
    for row in rows:
        expected = recompute(row)
        if expected is None:
            continue
        assert as_fraction(row["answer"]) == expected, row
        checked[row["type"]] += 1
    assert set(checked) == set(SYNTHETIC_TYPES) - {"fractions"}
    assert sum(checked.values()) >= 450


def test_fractions_recomputed_from_the_problem(rows):
    fraction_rows = [r for r in rows if r["type"] == "fractions" and r["level"] in (2, 3)]
    for row in fraction_rows:
        (a, b), (c, d) = re.findall(r"\\frac\{(\d+)\}\{(\d+)\}", row["problem"])
        x, y = Fraction(int(a), int(b)), Fraction(int(c), int(d))
        op = re.search(r"\\frac\{\d+\}\{\d+\} (\+|-|\\cdot|\\div) ", row["problem"]).group(1)
        expected = {"+": x + y, "-": x - y, "\\cdot": x * y, "\\div": x / y}[op]
        assert as_fraction(row["answer"]) == expected, row


def test_level_one_is_single_digit_work():
    level_one = generate_problems(200, seed=11, levels=(1,), types=("arithmetic",))
    for row in level_one:
        assert re.fullmatch(r"What is \$\d (\+|-|\\times) \d\$\?", row["problem"]), row["problem"]
        assert 0 <= int(row["answer"]) <= 81
    assert {row["answer"] for row in level_one if row["problem"] == "What is $7 + 5$?"} <= {"12"}


def test_deterministic_per_seed_and_without_duplicates():
    first = generate_problems(2000, seed=5)
    assert first == generate_problems(2000, seed=5)
    assert len({row["problem"] for row in first}) == 2000
    assert [r["problem"] for r in generate_problems(50, seed=6)] != [r["problem"] for r in first[:50]]
    subset = generate_problems(40, seed=5, levels=(2, 4), types=("areas", "counting"))
    assert {(r["type"], r["level"]) for r in subset} == {("areas", 2), ("counting", 2), ("areas", 4), ("counting", 4)}


def test_invalid_requests_raise_with_the_valid_options():
    with pytest.raises(ValueError, match="unknown synthetic types \\['geometry'\\]; choose from"):
        generate_problems(5, seed=0, types=("geometry",))
    with pytest.raises(ValueError, match="levels must be a non-empty subset"):
        generate_problems(5, seed=0, levels=(6,))
    with pytest.raises(ValueError, match="'arithmetic' level 1 produced no new problem"):
        generate_problems(400, seed=0, levels=(1,), types=("arithmetic",))  # only 207 distinct exist


def test_number_formatting():
    assert latex_number(Fraction(-5, 2)) == "-\\frac{5}{2}"
    assert latex_number(Fraction(6, 3)) == "2"
    assert decimal_number(Fraction(75, 2)) == "37.5"
    assert decimal_number(Fraction(-1, 8)) == "-0.125"
    assert decimal_number(Fraction(40)) == "40"
    with pytest.raises(ValueError, match="no terminating decimal"):
        decimal_number(Fraction(1, 3))
