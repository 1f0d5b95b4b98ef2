"""apo.synthetic_generators: number formatting, and the generator contract (a Drawn of three strings
for every level it covers, the same problem again from the same rng state)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from apo.synthetic_generators import (decimal_number, draw_areas, draw_arithmetic, draw_counting, draw_fractions,
                                      draw_gcd_lcm, draw_linear_equations, draw_percentages, draw_polynomial_roots,
                                      draw_remainders, latex_number)

GENERATORS_AND_LEVELS = [(draw_arithmetic, (2, 3, 4, 5))] + [
    (generator, (1, 2, 3, 4, 5))
    for generator in (draw_fractions, draw_linear_equations, draw_gcd_lcm, draw_remainders, draw_counting,
                      draw_polynomial_roots, draw_areas, draw_percentages)
]


def test_number_formatting():
    assert latex_number(Fraction(-5, 2)) == "-\\frac{5}{2}"
    assert latex_number(Fraction(6, 3)) == "2"
    assert decimal_number(Fraction(75, 2)) == "37.5"
    assert decimal_number(Fraction(-1, 8)) == "-0.125"
    assert decimal_number(Fraction(40)) == "40"
    with pytest.raises(ValueError, match="no terminating decimal"):
        decimal_number(Fraction(1, 3))


@pytest.mark.parametrize("generator, levels", GENERATORS_AND_LEVELS, ids=lambda g: getattr(g, "__name__", ""))
def test_a_generator_draws_problem_steps_and_answer_as_a_function_of_the_rng(generator, levels):
    for level in levels:
        first = [generator(random.Random(seed), level) for seed in range(20)]
        assert first == [generator(random.Random(seed), level) for seed in range(20)]
        for drawn in first:
            assert len(drawn) == 3 and all(isinstance(part, str) and part for part in drawn), drawn


def test_level_one_arithmetic_is_left_to_the_wordings():
    with pytest.raises(ValueError, match="apo.synthetic.arithmetic_problem"):
        draw_arithmetic(random.Random(0), 1)
