"""apo.synthetic: every answer gradeable, answers re-derived here from the problem text,
determinism, no duplicates, and level 1 kept to single-digit work."""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from apo.grading import grade, last_boxed_content
from apo.synthetic import (ARITHMETIC_WORDINGS, NUMBER_WORDS, SYNTHETIC_LEVELS, SYNTHETIC_TYPES, WORDING_FAMILIES,
                           SyntheticCapacityError, arithmetic_problem, generate_problems, generate_train_eval)
from conftest import ROW_SCHEMA


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
    cells = Counter((r["type"], r["level"]) for r in rows)
    assert cells == {(t, lv): 20 for t in SYNTHETIC_TYPES for lv in SYNTHETIC_LEVELS}
    for index, row in enumerate(rows):
        assert set(row) == ROW_SCHEMA and row["source"] == "synthetic"
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


def test_too_many_problems_is_a_user_error_naming_how_many_fit():
    """Issue 25: levels 1,2 at the default 2,500 problems ended in a traceback; now the count that fits."""
    with pytest.raises(SyntheticCapacityError, match=r"2500 problems do not fit levels \[1, 2\].*1934 or fewer do") \
            as caught:
        generate_train_eval(2000, 500, seed=42, levels=(1, 2))
    err = caught.value
    assert (err.fits, err.problem_type, err.level, err.per_cell) == (1934, "percentages", 1, 107)
    train, held = generate_train_eval(1434, 500, seed=42, levels=(1, 2))  # exactly the count named
    assert len(train) + len(held) == err.fits


# --- level-1 arithmetic wordings ---

ALL_WORDINGS = tuple(ARITHMETIC_WORDINGS)
ALL_FACTS = [(op, a, b) for op in "+-*" for a in range(1, 10) for b in range(1, 10) if op != "-" or a >= b]
SPELLED = {word: value for value, word in enumerate(NUMBER_WORDS)}
# Cue phrases of each operation, written here independently of the generator's templates.
CUES = {
    "+": r" \+ |\bplus\b|\bsum\b|\bAdd\b|\badd\b|\bmore\b|\btogether\b",
    "-": r" - |\bminus\b|\bdifference\b|\bSubtract\b|take \d+ away|gives \d+ away|\bless than\b|taken off|\bfewer\b",
    "*": r"\\times|\btimes\b|\bproduct\b|\b[Mm]ultiply\b|\beach\b",
}


def operands_and_op(problem: str) -> tuple[list[int], str]:
    """The numbers of a level-1 problem in order of appearance (digits or spelled out), and the one
    operation whose cue phrases it contains."""
    operands = [int(token) if token.isdigit() else SPELLED[token]
                for token in re.findall(r"\d+|\b(?:" + "|".join(NUMBER_WORDS[1:]) + r")\b", problem)]
    ops = [op for op, pattern in CUES.items() if re.search(pattern, problem)]
    assert len(ops) == 1, (problem, ops)
    return operands, ops[0]


def test_every_wording_states_every_fact_with_its_own_numbers_and_answer():
    rng = random.Random(0)
    for wording in ALL_WORDINGS:
        for fact in ALL_FACTS:
            problem, steps, answer = arithmetic_problem(fact, wording, rng)
            operands, op = operands_and_op(problem)
            assert op == fact[0] and sorted(operands) == sorted(fact[1:]), (wording, fact, problem)
            expected = {"+": sum(operands), "-": max(operands) - min(operands), "*": math.prod(operands)}[op]
            assert answer == str(expected), (wording, fact, problem)
            assert steps.endswith(f"= {answer}$.")


def test_wordings_cover_three_families_and_read_as_documented():
    assert set(ARITHMETIC_WORDINGS.values()) == set(WORDING_FAMILIES) == {"symbols", "words", "story"}
    assert 10 <= len(ARITHMETIC_WORDINGS) <= 14
    assert arithmetic_problem(("+", 7, 5), "what_is_symbols")[0] == "What is $7 + 5$?"
    assert arithmetic_problem(("*", 4, 6), "value_of_symbols")[0] == "Find the value of $4 \\times 6$."
    assert arithmetic_problem(("+", 7, 5), "what_is_words")[0] == "What is seven plus five?"
    assert arithmetic_problem(("-", 9, 3), "add_subtract_multiply")[0] == "Subtract 3 from 9."
    assert arithmetic_problem(("*", 4, 6), "sum_difference_product")[0] == "What is the product of 4 and 6?"
    story = arithmetic_problem(("*", 1, 1), "story_shelf", random.Random(1))[0]
    assert re.fullmatch(r"A box has 1 row with 1 \w+ in each row\. How many \w+s are in the box\?", story), story
    with pytest.raises(ValueError, match="pass an rng"):
        arithmetic_problem(("+", 7, 5), "story_has_gets")
    with pytest.raises(ValueError, match="unknown wordings \\['in_french'\\]; choose from \\['what_is_symbols'"):
        generate_problems(4, seed=0, levels=(1,), types=("arithmetic",), wordings=("in_french",))


def test_every_wording_is_reached_and_rows_name_their_wording():
    rows = generate_problems(150, seed=0, levels=(1,), types=("arithmetic",), wordings=ALL_WORDINGS)
    assert {row["wording"] for row in rows} == set(ALL_WORDINGS)
    for row in rows:
        assert set(row) == ROW_SCHEMA | {"wording"} and grade(row["solution"], row["answer"]), row


def fact_of(row: dict) -> tuple[str, int, int]:
    """(op, a, b) from the solution's one line `$a op b = value$.` (the same in every wording)."""
    a, sym, b = re.match(r"\$(\d) (\+|-|\\times) (\d) = ", row["solution"]).groups()
    return {"\\times": "*"}.get(sym, sym), int(a), int(b)


def test_wordings_keep_the_facts_of_the_original_and_never_repeat_one():
    original = generate_problems(180, seed=4, levels=(1,), types=("arithmetic",))
    worded = generate_problems(180, seed=4, levels=(1,), types=("arithmetic",), wordings=ALL_WORDINGS)
    assert [fact_of(row) for row in worded] == [fact_of(row) for row in original]
    assert len({fact_of(row) for row in worded}) == 180                 # every fact once, in whatever wording
    with pytest.raises(ValueError, match="'arithmetic' level 1 produced no new problem"):
        generate_problems(208, seed=4, levels=(1,), types=("arithmetic",), wordings=ALL_WORDINGS)  # 207 facts


def test_default_is_the_original_template_and_other_cells_ignore_wordings():
    original = generate_problems(6, seed=42, levels=(1,), types=("arithmetic",))
    assert [row["problem"] for row in original] == ["What is $2 \\times 1$?", "What is $5 \\times 4$?",
                                                    "What is $3 + 2$?", "What is $9 \\times 2$?",
                                                    "What is $7 \\times 1$?", "What is $2 + 4$?"]
    assert all(set(row) == ROW_SCHEMA for row in original)
    only_original = generate_problems(6, seed=42, levels=(1,), types=("arithmetic",), wordings=("what_is_symbols",))
    assert [{k: v for k, v in row.items() if k != "wording"} for row in only_original] == original
    mixed = dict(levels=(1, 2), types=("arithmetic", "fractions"))
    plain = generate_problems(80, seed=3, **mixed)
    worded = generate_problems(80, seed=3, wordings=ALL_WORDINGS, **mixed)
    assert [r for r in worded if (r["type"], r["level"]) != ("arithmetic", 1)] == \
        [r for r in plain if (r["type"], r["level"]) != ("arithmetic", 1)]


def test_train_eval_split_keeps_held_out_wordings_and_facts_out_of_training():
    heldout = ("value_of_symbols", "sum_difference_product", "story_two_people")
    training = tuple(w for w in ALL_WORDINGS if w not in heldout)
    train, held = generate_train_eval(60, 21, seed=1, levels=(1,), types=("arithmetic",), wordings=training,
                                      heldout_wordings=heldout)
    assert len(train) == 60 and len(held) == 21
    assert {row["wording"] for row in train} <= set(training)
    assert [row["wording"] in heldout for row in held] == [index % 2 == 0 for index in range(21)]
    assert not {fact_of(row) for row in train} & {fact_of(row) for row in held}
    # Without wordings the split is generate_problems' rows cut in two, as before.
    plain_train, plain_eval = generate_train_eval(10, 4, seed=1, levels=(1, 2))
    assert plain_train + plain_eval == generate_problems(14, seed=1, levels=(1, 2))
    with pytest.raises(ValueError, match="both trained on and held out"):
        generate_train_eval(4, 4, seed=1, wordings=training, heldout_wordings=(training[0],))
    with pytest.raises(ValueError, match="heldout_wordings need training wordings"):
        generate_train_eval(4, 4, seed=1, heldout_wordings=heldout)


def test_held_out_wordings_alternate_over_level_one_arithmetic_rows_only():
    # With two cells, the eval rows' level-1 arithmetic ones still alternate, whatever num_train's parity.
    train, held = generate_train_eval(7, 12, seed=2, levels=(1, 2), types=("arithmetic",),
                                      wordings=("compute_symbols",), heldout_wordings=("story_shelf",))
    worded = [row["wording"] for row in held if "wording" in row]
    assert worded == ["story_shelf", "compute_symbols"] * 3
