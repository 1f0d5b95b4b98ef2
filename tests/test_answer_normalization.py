"""Tests for apo.answer_normalization: the normal form of an answer and the exact leaf rules (the
grader's fast path), without sympy. Whole pairs, graded through apo.grading, are in test_grading.py."""

from __future__ import annotations

import doctest
import subprocess
import sys
from fractions import Fraction

import pytest

from apo import answer_normalization
from apo.answer_normalization import (as_rational, drop_spaces, fast_atom, normalize_answer, qualifier_words,
                                      split_top_level, trailing_unit)
from conftest import REPO_ROOT


def test_docstring_examples():
    result = doctest.testmod(answer_normalization)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize("answer, expected", [
    ("\\left( 3, \\dfrac{1}{2} \\right)", "(3,\\frac{1}{2})"),
    ("\\frac12", "\\frac{1}{2}"),
    ("\\text{(C)}", "C"),  # a choice letter
    ("\\text{East}", "east"),  # text answers are lower-cased
    ("1,000,000", "1000000"),
    ("10^\\circ", "10"),
    ("\\$18.90", "18.90"),
    ("5 \\text{ hours}", "5"),
    ("1.2 \\mathrm{~km} \\mathrm{~s}^{-1}", "1.2"),
    ("np.arcsin(10/13)", "arcsin(10/13)"),
    ("f(x) = 2x - 1", "2x-1"),  # a leading label
    ("\\cos x", "\\cos x"),  # the space that ends a command stays
    ("\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}", "(3,-1)"),  # a column vector is a tuple
    ("x \\le 3", "(-\\infty,3]"),
    ("5 \\le x", "[5,\\infty)"),  # sides either way round
    ("x < -1 \\text{ or } x \\ge 3", "(-\\infty,-1)\\cup[3,\\infty)"),
])
def test_normalize_answer(answer, expected):
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize("pred, gold, expected", [
    ("0.5", "\\frac{1}{2}", True),  # equal rationals
    ("0.25", "\\frac{1}{2}", False),
    ("4.48\\times10^{33}", "4.5e33", True),  # rounds to the gold's two figures
    ("4.6\\times10^{33}", "4.5e33", False),
    ("0.0833333333333333", "\\frac{1}{12}", True),  # a long decimal cut from the fraction
    ("0.142857", "\\frac{1}{7}", False),  # six digits: a rounding, not the fraction
    ("four", "4", True),
    ("five", "4", False),
    ("east", "west", False),
    ("1:03pm", "1:03am", False),
    ("2\\sqrt{3}", "\\sqrt{12}", None),  # undecided: the slow path's
    ("\\pi", "3.14159", None),
])
def test_fast_atom_decides_or_defers(pred, gold, expected):
    assert fast_atom(pred, gold) is expected


@pytest.mark.parametrize("answer, expected", [
    ("\\frac{3}{4}", Fraction(3, 4)),
    ("-\\frac{3}{4}", Fraction(-3, 4)),
    ("-1./3", Fraction(-1, 3)),  # Minerva's style
    ("4.5e3", Fraction(4500)),
    ("0.1\\overline{6}", Fraction(1, 6)),
    ("\\frac{1}{0}", None),
    ("\\sqrt{2}", None),
    ("1,000", None),  # a normalised answer has no thousands separators left
])
def test_as_rational(answer, expected):
    assert as_rational(answer) == expected


def test_string_helpers():
    assert split_top_level("(1,2),3") == ["(1,2)", "3"]
    assert split_top_level("\\{1,2\\},3") == ["\\{1,2\\}", "3"]
    assert split_top_level("(0,1]\\cup[2,3)", "\\cup") == ["(0,1]", "[2,3)"]
    assert drop_spaces("\\cos x + 1") == "\\cos x+1"
    assert (trailing_unit("7\\text{ hours}"), trailing_unit("12 inches"), trailing_unit("7")) == ("hour", "inch", None)


def test_the_fast_path_loads_neither_sympy_nor_the_grader():
    code = ("import sys; import apo.answer_normalization; "
            "print(sorted(m for m in ('sympy', 'math_verify', 'apo.grading') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("answer, expected", [
    ("5\n6", "5,6"),  # a line break between two values separates them (issue 27)
    ("90\\text{ square\nunits}", "90"),  # inside braces it is a space
    ("2 +\n3", "2+3"),  # after an operator too
    ("\n\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}\n", "\\begin{pmatrix}0&3\\\\0&-1\\end{pmatrix}"),
    ("\\approx 10", "10"),
    ("\\text{any real number}", "(-\\infty,\\infty)"),
    ("x \\in \\mathbb{R}", "(-\\infty,\\infty)"),
    ("all reals", "(-\\infty,\\infty)"),
])
def test_normal_forms_of_issue_27(answer, expected):
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize("answer, expected", [
    ("10 \\text{ or more}", {"or", "more"}),
    ("10 \\text{ maybe}", {"maybe"}),
    ("10 \\text{ or eleven}", {"number word"}),
    ("\\text{maybe } 10", {"maybe"}),
    ("\\text{The answer is } 7", set()),
    ("10 \\text{ cm}", set()),
    ("x < 0 or x > 4", set()),  # `or` between values is structure (a union), not a hedge
    ("2 or 3", set()),
    ("\\text{eleven}", set()),  # a number word alone is a value
    ("x \\le 5", set()),
])
def test_qualifier_words(answer, expected):
    assert qualifier_words(answer) == expected


@pytest.mark.parametrize("answer, value", [
    ("15\\frac{39}{40}", Fraction(639, 40)),  # a mixed number, as MATH writes them
    ("-15\\frac{3}{5}", Fraction(-78, 5)),
    ("2\\frac{5}{3}", None),  # not a proper fraction: not a mixed number
])
def test_mixed_numbers(answer, value):
    assert as_rational(answer) == value
