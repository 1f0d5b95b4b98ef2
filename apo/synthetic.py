"""Offline MATH-style problems whose answers are computed, for the demo and the tests.

Nine problem types, five levels each. Every problem is drawn from a seeded random number
generator, its answer is computed with exact integer or `fractions.Fraction` arithmetic (never
typed in), and its solution is a short worked derivation that ends in `\\boxed{answer}`, the
same shape as a MATH solution. Level 1 is one step on small numbers, with single-digit
+, -, x for the arithmetic type ("What is $7 + 5$?"), within reach of a 135M chat model; level 5
takes a few steps.

| type | level 1 | level 3 | level 5 |
| --- | --- | --- | --- |
| arithmetic | a op b, single digits | a + b x c | powers, products and sums |
| fractions | same denominator sum | product or quotient | (x - y) / (z + w) |
| linear_equations | x + a = b, x - a = b | ax + b = c | two equations, x + y |
| gcd_lcm | gcd of two numbers <= 36 | gcd of two numbers <= 390 | gcd + lcm |
| remainders | a mod b, a <= 50 | a sum mod m | ax = b (mod m) |
| counting | count a..b, outfits | committees, handshakes, diagonals | multiset words, inclusion-exclusion |
| polynomial_roots | positive root of x^2 (+ c) = n | sum of roots of a monic quadratic | sum of squares of a cubic's roots |
| areas | rectangle area/perimeter | circle from radius/diameter/circumference | right triangle from leg and hypotenuse |
| percentages | 10/20/25/50/100% of a number | price increase | what percent of a is b |

Level-1 arithmetic can also be worded in several ways (`wordings=`, names in
ARITHMETIC_WORDINGS), so that a model trained on some wordings can be tested on others; the
default (None) keeps the one original template. Every wording covers +, - and x:

| family | wording | + (7, 5) | - (9, 3) | x (4, 6) |
| --- | --- | --- | --- | --- |
| symbols | what_is_symbols (the original) | What is $7 + 5$? | What is $9 - 3$? | What is $4 \\times 6$? |
| symbols | compute_symbols | Compute $7 + 5$. | Compute $9 - 3$. | Compute $4 \\times 6$. |
| symbols | value_of_symbols | Find the value of $7 + 5$. | ... | ... |
| symbols | equals_question_symbols | $7 + 5 = ?$ | $9 - 3 = ?$ | $4 \\times 6 = ?$ |
| words | what_is_words | What is seven plus five? | ... nine minus three? | ... four times six? |
| words | sum_difference_product | What is the sum of 7 and 5? | ... the difference between 9 and 3? | ... the product of 4 and 6? |
| words | add_subtract_multiply | Add 7 and 5. | Subtract 3 from 9. | Multiply 4 by 6. |
| words | what_do_you_get | What do you get when you add 5 to 7? | ... take 3 away from 9? | ... multiply 4 by 6? |
| words | more_less_than | What number is five more than seven? | ... three less than nine? | ... four times as big as six? |
| story | story_has_gets | Sam has 7 apples and gets 5 more. How many ...? | ... gives 3 away ... left? | ... 4 bags with 6 apples in each bag ...? |
| story | story_shelf | A shelf holds 7 books. Then 5 more are put on it. ...? | ... 3 are taken off ...? | A box has 4 rows with 6 books in each row. ...? |
| story | story_two_people | Sam has 7 cards and Mia has 5 cards. How many ... together? | ... Mia has 3 fewer than Sam ...? | Sam has 4 friends and gives each friend 6 cards. ...? |

Stories draw their names and objects from small lists. With wordings, rows carry a `wording`
field, and level-1 arithmetic rows are distinct by fact (op, a, b), not only by text, so one fact
never appears in two wordings; generate_train_eval keeps chosen wordings out of training.

Rows use the data-file schema of docs/ARCHITECTURE.md with `source` = "synthetic"; they are
never MATH problems and are always labelled so.

>>> rows = generate_problems(4, seed=0, levels=(1,), types=("arithmetic",))
>>> rows[0]["id"], rows[0]["level"], rows[0]["source"]
('synthetic/arithmetic/0', 1, 'synthetic')
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Hashable, Sequence
from fractions import Fraction
from typing import Any

SYNTHETIC_TYPES = (
    "arithmetic", "fractions", "linear_equations", "gcd_lcm", "remainders",
    "counting", "polynomial_roots", "areas", "percentages",
)
SYNTHETIC_LEVELS = (1, 2, 3, 4, 5)
MAX_DRAWS_PER_PROBLEM = 500

# (problem text, worked steps without the final box, answer as LaTeX)
Drawn = tuple[str, str, str]


# --- formatting ---

def latex_number(value: Fraction | int) -> str:
    """Exact number as MATH writes it: `12`, `-3`, `\\frac{3}{4}`, `-\\frac{5}{2}`."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"


def decimal_number(value: Fraction) -> str:
    """A terminating fraction as a plain decimal (`37.5`); raises ValueError if it does not terminate."""
    for places in range(7):
        scaled = value * 10**places
        if scaled.denominator == 1:
            digits = f"{abs(scaled.numerator):0{places + 1}d}"
            sign = "-" if value < 0 else ""
            return sign + (digits if places == 0 else f"{digits[:-places]}.{digits[-places:]}")
    raise ValueError(f"{value} has no terminating decimal expansion within 6 places")


def _paren(value: Fraction | int) -> str:
    text = latex_number(value)
    return f"\\left({text}\\right)" if Fraction(value) < 0 else text


def _factorisation(n: int) -> str:
    """`360` -> `2^{3} \\cdot 3^{2} \\cdot 5`."""
    parts, rest, p = [], n, 2
    while p * p <= rest:
        power = 0
        while rest % p == 0:
            rest, power = rest // p, power + 1
        if power:
            parts.append(f"{p}^{{{power}}}" if power > 1 else str(p))
        p += 1
    if rest > 1:
        parts.append(str(rest))
    return " \\cdot ".join(parts) if parts else "1"


# --- level-1 arithmetic in several wordings ---

Fact = tuple[str, int, int]  # (op in "+-*", a, b); a >= b for "-"

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PEOPLE = ("Sam", "Mia", "Leo", "Ana", "Ben", "Zoe", "Omar", "Lily", "Ravi", "Nora")
THINGS = (("apple", "apples"), ("sticker", "stickers"), ("book", "books"), ("marble", "marbles"),
          ("pencil", "pencils"), ("card", "cards"), ("shell", "shells"), ("coin", "coins"))
WORDING_FAMILIES = ("symbols", "words", "story")
ORIGINAL_WORDING = "what_is_symbols"  # the single template of generate_problems(wordings=None)


def _every_op(template: str) -> dict[str, str]:
    return {op: template for op in "+-*"}


# name -> (family, {op: problem template}). Template fields: {a} {b} {sym} (digits, + - \\times),
# {a_word} {b_word} (spelled out), and for stories {name} {other} {things} {a_things} {b_things}
# {a_bags} {a_rows} {a_friends} {b_is} (counts with their noun in the right number).
_WORDINGS: dict[str, tuple[str, dict[str, str]]] = {
    "what_is_symbols": ("symbols", _every_op("What is ${a} {sym} {b}$?")),
    "compute_symbols": ("symbols", _every_op("Compute ${a} {sym} {b}$.")),
    "value_of_symbols": ("symbols", _every_op("Find the value of ${a} {sym} {b}$.")),
    "equals_question_symbols": ("symbols", _every_op("${a} {sym} {b} = ?$")),
    "what_is_words": ("words", {"+": "What is {a_word} plus {b_word}?", "-": "What is {a_word} minus {b_word}?",
                                "*": "What is {a_word} times {b_word}?"}),
    "sum_difference_product": ("words", {"+": "What is the sum of {a} and {b}?",
                                         "-": "What is the difference between {a} and {b}?",
                                         "*": "What is the product of {a} and {b}?"}),
    "add_subtract_multiply": ("words", {"+": "Add {a} and {b}.", "-": "Subtract {b} from {a}.",
                                        "*": "Multiply {a} by {b}."}),
    "what_do_you_get": ("words", {"+": "What do you get when you add {b} to {a}?",
                                  "-": "What do you get when you take {b} away from {a}?",
                                  "*": "What do you get when you multiply {a} by {b}?"}),
    "more_less_than": ("words", {"+": "What number is {b_word} more than {a_word}?",
                                 "-": "What number is {b_word} less than {a_word}?",
                                 "*": "What number is {a_word} times as big as {b_word}?"}),
    "story_has_gets": ("story", {
        "+": "{name} has {a_things} and gets {b} more. How many {things} does {name} have now?",
        "-": "{name} has {a_things} and gives {b} away. How many {things} does {name} have left?",
        "*": "{name} has {a_bags} with {b_things} in each bag. How many {things} does {name} have in all?"}),
    "story_shelf": ("story", {
        "+": "A shelf holds {a_things}. Then {b} more {b_is} put on it. How many {things} are on the shelf now?",
        "-": "A shelf holds {a_things}. Then {b} {b_is} taken off. How many {things} are left on the shelf?",
        "*": "A box has {a_rows} with {b_things} in each row. How many {things} are in the box?"}),
    "story_two_people": ("story", {
        "+": "{name} has {a_things} and {other} has {b_things}. How many {things} do they have together?",
        "-": "{name} has {a_things}. {other} has {b} fewer than {name}. How many {things} does {other} have?",
        "*": "{name} has {a_friends} and gives each friend {b_things}. How many {things} does {name} give away?"}),
}
# Every level-1 arithmetic wording, name -> family ("symbols", "words" or "story"); each covers + - and x.
ARITHMETIC_WORDINGS: dict[str, str] = {name: family for name, (family, _) in _WORDINGS.items()}


def check_wordings(names: Sequence[str]) -> tuple[str, ...]:
    """`names` as a tuple after checking each is in ARITHMETIC_WORDINGS; raises ValueError naming the
    unknown ones and the valid names."""
    unknown = [name for name in names if name not in ARITHMETIC_WORDINGS]
    if unknown:
        raise ValueError(f"unknown wordings {unknown}; choose from {list(ARITHMETIC_WORDINGS)}")
    return tuple(names)


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def arithmetic_problem(fact: Fact, wording: str, rng: random.Random | None = None) -> Drawn:
    """(problem text, worked step, answer) of the level-1 fact (op, a, b) in `wording`.

    Every wording's step is the same one line, `$a op b = value$.`; story wordings draw their
    people and objects from `rng` (required for them, unused by the others). Raises ValueError
    for an unknown wording or op, or a story wording without `rng`.
    """
    op, a, b = fact
    family, templates = _WORDINGS[check_wordings([wording])[0]]
    if op not in templates:
        raise ValueError(f"unknown op {op!r}; level-1 arithmetic uses one of '+', '-', '*'")
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    sym = {"+": "+", "-": "-", "*": "\\times"}[op]
    fields = {"a": a, "b": b, "sym": sym, "a_word": NUMBER_WORDS[a], "b_word": NUMBER_WORDS[b]}
    if family == "story":
        if rng is None:
            raise ValueError(f"wording {wording!r} draws names and objects: pass an rng")
        name, other = rng.sample(PEOPLE, 2)
        one, many = rng.choice(THINGS)
        fields |= {"name": name, "other": other, "things": many, "a_things": _count(a, one, many),
                   "b_things": _count(b, one, many), "a_bags": _count(a, "bag", "bags"),
                   "a_rows": _count(a, "row", "rows"), "a_friends": _count(a, "friend", "friends"),
                   "b_is": "is" if b == 1 else "are"}
    return templates[op].format(**fields), f"${a} {sym} {b} = {value}$.", str(value)


def _arithmetic_fact(rng: random.Random, level: int = 1) -> Fact:
    """A single-digit fact: op from "+-*", a and b from 1-9, ordered so that a - b >= 0."""
    op = rng.choice("+-*")
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    if op == "-":
        a, b = max(a, b), min(a, b)
    return op, a, b


# --- generators: one per type, each covering levels 1-5 ---

def _arithmetic(rng: random.Random, level: int) -> Drawn:
    if level == 1:
        return arithmetic_problem(_arithmetic_fact(rng), ORIGINAL_WORDING)
    if level == 2:
        if rng.random() < 0.5:
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            op, value = ("+", a + b) if rng.random() < 0.5 else ("-", a - b)
            return f"Compute ${a} {op} {b}$.", f"${a} {op} {b} = {value}$.", str(value)
        a, b = rng.randint(2, 9), rng.randint(11, 99)
        return (f"Compute ${a} \\times {b}$.",
                f"${a} \\times {b} = {a} \\times {b // 10 * 10} + {a} \\times {b % 10} = {a * b}$.", str(a * b))
    if level == 3:
        a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(2, 12)
        product = b * c
        if rng.random() < 0.5:
            value = a + product
            return (f"Compute ${a} + {b} \\times {c}$.",
                    f"Multiplication comes first: ${b} \\times {c} = {product}$, then ${a} + {product} = {value}$.",
                    str(value))
        value = product - a
        return (f"Compute ${b} \\times {c} - {a}$.",
                f"Multiplication comes first: ${b} \\times {c} = {product}$, then ${product} - {a} = {value}$.",
                str(value))
    if level == 4:
        a, b, c, d = rng.randint(1, 15), rng.randint(1, 20), rng.randint(2, 9), rng.randint(-20, 20)
        diff = a - b
        value = diff * c + d
        sign, mag = ("+", d) if d >= 0 else ("-", -d)
        return (f"Compute $({a} - {b}) \\times {c} {sign} {mag}$.",
                f"Inside the parentheses ${a} - {b} = {diff}$. Then ${_paren(diff)} \\times {c} = {diff * c}$, "
                f"and ${diff * c} {sign} {mag} = {value}$.", str(value))
    a, p, b, q = rng.randint(2, 5), rng.randint(3, 7), rng.randint(2, 5), rng.randint(2, 4)
    c, d = rng.randint(2, 12), rng.randint(2, 12)
    value = a**p - b**q + c * d
    return (f"Compute ${a}^{{{p}}} - {b}^{{{q}}} + {c} \\times {d}$.",
            f"Powers first: ${a}^{{{p}}} = {a**p}$ and ${b}^{{{q}}} = {b**q}$; the product is "
            f"${c} \\times {d} = {c * d}$. So ${a**p} - {b**q} + {c * d} = {value}$.", str(value))


def _fraction_text(value: Fraction) -> str:
    return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"


def _random_fraction(rng: random.Random, max_den: int) -> Fraction:
    den = rng.randint(2, max_den)
    return Fraction(rng.randint(1, den - 1), den)


def _fractions(rng: random.Random, level: int) -> Drawn:
    ask = "Express your answer as a common fraction in lowest terms (or an integer)."
    if level == 1:
        den = rng.randint(3, 9)
        a, b = rng.randint(1, den - 1), rng.randint(1, den - 1)
        value = Fraction(a + b, den)
        simplified = "" if value.denominator == den else f" = {latex_number(value)}"
        return (f"What is $\\frac{{{a}}}{{{den}}} + \\frac{{{b}}}{{{den}}}$? {ask}",
                f"The denominators agree, so add the numerators: $\\frac{{{a} + {b}}}{{{den}}} = "
                f"\\frac{{{a + b}}}{{{den}}}{simplified}$.", latex_number(value))
    if level in (2, 3):
        x, y = _random_fraction(rng, 9), _random_fraction(rng, 9)
        if x.denominator == y.denominator:
            y = Fraction(y.numerator, y.denominator + 1)
        op = rng.choice("+-" if level == 2 else "*/")
        value = {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op]
        sym = {"+": "+", "-": "-", "*": "\\cdot", "/": "\\div"}[op]
        if op in "+-":
            den = x.denominator * y.denominator // math.gcd(x.denominator, y.denominator)
            nx, ny = x.numerator * den // x.denominator, y.numerator * den // y.denominator
            steps = (f"The common denominator is ${den}$: $\\frac{{{nx}}}{{{den}}} {sym} \\frac{{{ny}}}{{{den}}} = "
                     f"{latex_number(value)}$.")
        elif op == "*":
            steps = (f"Multiply numerators and denominators: $\\frac{{{x.numerator} \\cdot {y.numerator}}}"
                     f"{{{x.denominator} \\cdot {y.denominator}}} = {latex_number(value)}$.")
        else:
            steps = (f"Dividing by ${_fraction_text(y)}$ is multiplying by $\\frac{{{y.denominator}}}{{{y.numerator}}}$: "
                     f"${_fraction_text(x)} \\cdot \\frac{{{y.denominator}}}{{{y.numerator}}} = {latex_number(value)}$.")
        return f"Compute ${_fraction_text(x)} {sym} {_fraction_text(y)}$. {ask}", steps, latex_number(value)
    x, y, z = (_random_fraction(rng, 9) for _ in range(3))
    if level == 4:
        product = y * z
        value = x + product
        return (f"Compute ${_fraction_text(x)} + {_fraction_text(y)} \\cdot {_fraction_text(z)}$. {ask}",
                f"Multiply first: ${_fraction_text(y)} \\cdot {_fraction_text(z)} = {latex_number(product)}$. "
                f"Then ${_fraction_text(x)} + {latex_number(product)} = {latex_number(value)}$.", latex_number(value))
    w = _random_fraction(rng, 9)
    while y == x:
        y = _random_fraction(rng, 9)
    top, bottom = x - y, z + w
    value = top / bottom
    return (f"Compute $\\dfrac{{{_fraction_text(x)} - {_fraction_text(y)}}}{{{_fraction_text(z)} + {_fraction_text(w)}}}$. {ask}",
            f"The numerator is ${_fraction_text(x)} - {_fraction_text(y)} = {latex_number(top)}$ and the denominator is "
            f"${_fraction_text(z)} + {_fraction_text(w)} = {latex_number(bottom)}$, so the value is "
            f"${latex_number(top)} \\div {latex_number(bottom)} = {latex_number(value)}$.", latex_number(value))


def _leading_term(coef: int, var: str) -> str:
    """`3x`, `x`, `-x` as the first term of an expression."""
    return {1: var, -1: f"-{var}"}.get(coef, f"{coef}{var}")


def _signed_term(coef: int, var: str = "") -> str:
    """` + 3x`, ` - 4`, as a trailing term of an expression."""
    sign = "+" if coef >= 0 else "-"
    mag = abs(coef)
    body = (var if mag == 1 else f"{mag}{var}") if var else str(mag)
    return f" {sign} {body}"


def _linear_equations(rng: random.Random, level: int) -> Drawn:
    if level == 1:
        a = rng.randint(1, 9)
        if rng.random() < 0.5:
            b = rng.randint(a + 1, 20)
            return (f"Solve for $x$: $x + {a} = {b}$.",
                    f"Subtract ${a}$ from both sides: $x = {b} - {a} = {b - a}$.", str(b - a))
        b = rng.randint(1, 9)
        return (f"Solve for $x$: $x - {a} = {b}$.",
                f"Add ${a}$ to both sides: $x = {b} + {a} = {a + b}$.", str(a + b))
    if level == 2:
        a, x = rng.randint(2, 9), rng.randint(1, 12)
        b = a * x
        if rng.random() < 0.5:
            return (f"Solve for $x$: $\\frac{{x}}{{{a}}} = {x}$.",
                    f"Multiply both sides by ${a}$: $x = {x} \\cdot {a} = {b}$.", str(b))
        return (f"Solve for $x$: ${a}x = {b}$.", f"Divide both sides by ${a}$: $x = \\frac{{{b}}}{{{a}}} = {b // a}$.",
                str(Fraction(b, a)))
    if level == 3:
        a, x, b = rng.randint(2, 9), rng.randint(-10, 10), rng.randint(-20, 20)
        if b == 0:
            b = 7
        c = a * x + b
        value = Fraction(c - b, a)
        return (f"Solve for $x$: ${a}x{_signed_term(b)} = {c}$.",
                f"Move the constant: ${a}x = {c} - {_paren(b)} = {c - b}$, so $x = \\frac{{{c - b}}}{{{a}}} = "
                f"{latex_number(value)}$.", latex_number(value))
    if level == 4:
        a, c = rng.randint(2, 12), rng.randint(-9, 9)
        if c == a or c == 0:
            c = a + 1
        b, d = rng.randint(-20, 20), rng.randint(-20, 20)
        value = Fraction(d - b, a - c)
        return (f"Solve for $x$: ${a}x{_signed_term(b)} = {_leading_term(c, 'x')}{_signed_term(d)}$. Express your answer as a common "
                f"fraction in lowest terms if it is not an integer.",
                f"Collect $x$ on the left and constants on the right: $({a} - {_paren(c)})x = {d} - {_paren(b)}$, so "
                f"${a - c}x = {d - b}$ and $x = {latex_number(value)}$.", latex_number(value))
    while True:
        a1, b1, a2, b2 = (rng.choice([k for k in range(-6, 7) if k != 0]) for _ in range(4))
        det = a1 * b2 - a2 * b1
        if det != 0:
            break
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    x_sol, y_sol = Fraction(c1 * b2 - c2 * b1, det), Fraction(a1 * c2 - a2 * c1, det)
    value = x_sol + y_sol
    return (f"If ${_leading_term(a1, 'x')}{_signed_term(b1, 'y')} = {c1}$ and "
            f"${_leading_term(a2, 'x')}{_signed_term(b2, 'y')} = {c2}$, what is $x + y$?",
            f"By Cramer's rule the determinant is ${a1} \\cdot {_paren(b2)} - {_paren(a2)} \\cdot {_paren(b1)} = {det}$, "
            f"so $x = {latex_number(x_sol)}$ and $y = {latex_number(y_sol)}$. Hence $x + y = {latex_number(value)}$.",
            latex_number(value))


def _gcd_lcm(rng: random.Random, level: int) -> Drawn:
    if level in (1, 3, 5):
        if level == 1:
            g, m, n = rng.randint(2, 6), rng.randint(1, 6), rng.randint(1, 6)
        else:
            g, m, n = rng.randint(2, 30), rng.randint(2, 12), rng.randint(2, 12)
        if m == n:
            n += 1
        a, b = g * m, g * n
        gcd, lcm = math.gcd(a, b), math.lcm(a, b)
        facts = f"${a} = {_factorisation(a)}$ and ${b} = {_factorisation(b)}$"
        if level == 5:
            value = gcd + lcm
            return (f"What is the sum of the greatest common divisor and the least common multiple of ${a}$ and ${b}$?",
                    f"{facts}, so the greatest common divisor is ${gcd}$ and the least common multiple is ${lcm}$. "
                    f"Their sum is ${gcd} + {lcm} = {value}$.", str(value))
        return (f"What is the greatest common divisor of ${a}$ and ${b}$?",
                f"{facts}; the common prime powers give ${gcd}$.", str(gcd))
    numbers = sorted(rng.sample(range(2, 21 if level == 2 else 31), 2 if level == 2 else 3))
    lcm = math.lcm(*numbers)
    listed = ", ".join(f"${n} = {_factorisation(n)}$" for n in numbers)
    names = " and ".join(f"${n}$" for n in numbers) if level == 2 else f"${numbers[0]}$, ${numbers[1]}$ and ${numbers[2]}$"
    return (f"What is the least common multiple of {names}?",
            f"Factor: {listed}. Taking the highest power of each prime gives ${_factorisation(lcm)} = {lcm}$.", str(lcm))


def _multiplicative_order(a: int, m: int) -> int:
    order, power = 1, a % m
    while power != 1:
        power, order = power * a % m, order + 1
    return order


def _remainders(rng: random.Random, level: int) -> Drawn:
    if level in (1, 2):
        a = rng.randint(10, 50) if level == 1 else rng.randint(100, 999)
        b = rng.randint(2, 9) if level == 1 else rng.randint(3, 12)
        q, r = divmod(a, b)
        return (f"What is the remainder when ${a}$ is divided by ${b}$?",
                f"${a} = {b} \\times {q} + {r}$ with $0 \\le {r} < {b}$.", str(r))
    if level == 3:
        m = rng.randint(5, 13)
        terms = [rng.randint(100, 9999) for _ in range(3)]
        residues = [t % m for t in terms]
        value = sum(terms) % m
        return (f"What is the remainder when ${' + '.join(map(str, terms))}$ is divided by ${m}$?",
                f"Reduce each term modulo ${m}$: the remainders are ${', '.join(map(str, residues))}$, whose sum "
                f"${sum(residues)}$ leaves remainder ${value}$.", str(value))
    if level == 4:
        m = rng.choice([5, 7, 11, 13])
        a = rng.choice([k for k in range(2, 10) if k % m])
        k = rng.randint(10, 60)
        order = _multiplicative_order(a, m)
        value = pow(a, k, m)
        return (f"What is the remainder when ${a}^{{{k}}}$ is divided by ${m}$?",
                f"The powers of ${a}$ modulo ${m}$ repeat with period ${order}$ since ${a}^{{{order}}} \\equiv 1 "
                f"\\pmod{{{m}}}$. As ${k} = {order} \\cdot {k // order} + {k % order}$, "
                f"${a}^{{{k}}} \\equiv {a}^{{{k % order}}} \\equiv {value} \\pmod{{{m}}}$.", str(value))
    m = rng.choice([7, 9, 11, 13, 17, 19, 23])
    a = rng.choice([k for k in range(2, m) if math.gcd(k, m) == 1])
    b = rng.randint(1, m - 1)
    inverse = pow(a, -1, m)
    value = inverse * b % m or m
    return (f"What is the smallest positive integer $x$ such that ${a}x \\equiv {b} \\pmod{{{m}}}$?",
            f"The inverse of ${a}$ modulo ${m}$ is ${inverse}$, because ${a} \\cdot {inverse} = {a * inverse} "
            f"\\equiv 1 \\pmod{{{m}}}$. Multiplying both sides by ${inverse}$ gives $x \\equiv {inverse * b} "
            f"\\equiv {value} \\pmod{{{m}}}$.", str(value))


WORDS_WITH_REPEATS = ("BANANA", "LEVEL", "COMMITTEE", "MISSISSIPPI", "BALLOON", "TATTOO", "ALABAMA",
                      "ELEVEN", "GAMMA", "PEPPER", "COFFEE", "REFERENCE", "BOOKKEEPER", "SUCCESS", "APPLE")


def _counting(rng: random.Random, level: int) -> Drawn:
    if level == 1:
        if rng.random() < 0.5:
            a = rng.randint(1, 9)
            b = rng.randint(a + 1, 20)
            return (f"How many whole numbers are there from ${a}$ to ${b}$, inclusive?",
                    f"There are ${b} - {a} + 1 = {b - a + 1}$ of them.", str(b - a + 1))
        shirts, pants = rng.randint(2, 9), rng.randint(2, 9)
        return (f"Sam has ${shirts}$ shirts and ${pants}$ pairs of pants. How many outfits of one shirt and one "
                f"pair of pants can he make?", f"Each shirt goes with each pair: ${shirts} \\times {pants} = "
                f"{shirts * pants}$.", str(shirts * pants))
    if level == 2:
        if rng.random() < 0.2:
            n = rng.randint(3, 7)
            chain = " \\cdot ".join(map(str, range(n, 0, -1)))
            return (f"In how many ways can ${n}$ different books be arranged in a row on a shelf?",
                    f"There are ${n}!$ orders: ${chain} = {math.factorial(n)}$.", str(math.factorial(n)))
        a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
        return (f"A restaurant offers ${a}$ starters, ${b}$ main courses and ${c}$ desserts. How many different "
                f"meals of one starter, one main course and one dessert are possible?",
                f"By the product rule: ${a} \\cdot {b} \\cdot {c} = {a * b * c}$.", str(a * b * c))
    if level == 3:
        kind = rng.choice(("committee", "handshakes", "diagonals"))
        if kind == "committee":
            n, k = rng.randint(5, 25), rng.randint(2, 5)
            value = math.comb(n, k)
            return (f"In how many ways can a committee of ${k}$ people be chosen from a group of ${n}$ people?",
                    f"Order does not matter: $\\binom{{{n}}}{{{k}}} = \\frac{{{n}!}}{{{k}!\\,{n - k}!}} = {value}$.",
                    str(value))
        if kind == "handshakes":
            n = rng.randint(5, 40)
            value = math.comb(n, 2)
            return (f"At a party ${n}$ people each shake hands once with every other person. How many handshakes "
                    f"take place?", f"Each handshake is a pair of people: $\\binom{{{n}}}{{2}} = "
                    f"\\frac{{{n} \\cdot {n - 1}}}{{2}} = {value}$.", str(value))
        n = rng.randint(5, 30)
        value = n * (n - 3) // 2
        return (f"How many diagonals does a convex polygon with ${n}$ sides have?",
                f"Each vertex joins ${n} - 3 = {n - 3}$ non-adjacent vertices and each diagonal is counted twice: "
                f"$\\frac{{{n} \\cdot {n - 3}}}{{2}} = {value}$.", str(value))
    if level == 4:
        n, k = rng.randint(5, 30), rng.randint(2, 4)
        if rng.random() < 0.5:
            value = math.perm(n, k)
            chain = " \\cdot ".join(str(n - i) for i in range(k))
            return (f"A club has ${n}$ members. In how many ways can it choose ${k}$ officers with different roles "
                    f"(no member may hold more than one role)?",
                    f"Fill the roles one at a time: ${chain} = {value}$.", str(value))
        value = n * math.comb(n - 1, k)
        return (f"In how many ways can a group of ${n}$ people choose a president and a committee of ${k}$ other "
                f"members?", f"Choose the president in ${n}$ ways, then the committee from the remaining "
                f"${n - 1}$ in $\\binom{{{n - 1}}}{{{k}}} = {math.comb(n - 1, k)}$ ways: "
                f"${n} \\cdot {math.comb(n - 1, k)} = {value}$.", str(value))
    if rng.random() < 0.5:
        word = rng.choice(WORDS_WITH_REPEATS)
        counts = sorted(((word.count(c), c) for c in set(word)), key=lambda t: (-t[0], t[1]))
        repeated = [(c, n) for n, c in counts if n > 1]
        value = math.factorial(len(word))
        for _, n in repeated:
            value //= math.factorial(n)
        denominator = " \\cdot ".join(f"{n}!" for _, n in repeated)
        letters = ", ".join(f"{c} appears {n} times" for c, n in repeated)
        return (f"How many distinct arrangements of the letters of the word {word} are there?",
                f"The word has ${len(word)}$ letters; {letters}. So there are "
                f"$\\frac{{{len(word)}!}}{{{denominator}}} = {value}$ arrangements.", str(value))
    n = rng.randint(50, 1000)
    a, b = sorted(rng.sample(range(2, 13), 2))
    both = math.lcm(a, b)
    value = n // a + n // b - n // both
    return (f"How many integers from $1$ to ${n}$, inclusive, are divisible by ${a}$ or by ${b}$?",
            f"There are $\\lfloor {n}/{a} \\rfloor = {n // a}$ multiples of ${a}$ and $\\lfloor {n}/{b} \\rfloor = "
            f"{n // b}$ multiples of ${b}$; the $\\lfloor {n}/{both} \\rfloor = {n // both}$ multiples of ${both}$ "
            f"are counted twice. By inclusion-exclusion the count is ${n // a} + {n // b} - {n // both} = {value}$.",
            str(value))


def _polynomial_text(coefs: Sequence[int], var: str = "x") -> str:
    """Monic-or-not polynomial from highest degree down: [1, -5, 6] -> `x^2 - 5x + 6`."""
    degree = len(coefs) - 1
    text = ""
    for i, coef in enumerate(coefs):
        power = degree - i
        if coef == 0:
            continue
        mono = var if power == 1 else (f"{var}^{power}" if power > 1 else "")
        if not text:
            lead = "" if (coef == 1 and mono) else ("-" if (coef == -1 and mono) else str(coef))
            text = f"{lead}{mono}"
        else:
            text += _signed_term(coef, mono) if mono else _signed_term(coef)
    return text


def _factor_text(root: int) -> str:
    return f"(x{_signed_term(-root)})" if root else "x"


def _polynomial_roots(rng: random.Random, level: int) -> Drawn:
    if level == 1:
        k, shift = rng.randint(1, 20), rng.randint(0, 9)
        rhs = k * k + shift
        equation = f"x^2 = {rhs}" if shift == 0 else f"x^2 + {shift} = {rhs}"
        square = rhs - shift
        root = math.isqrt(square)
        return (f"What is the positive solution of ${equation}$?",
                f"$x^2 = {square}$, so $x = \\sqrt{{{square}}} = {root}$, since ${root} \\cdot {root} = {square}$.",
                str(root))
    if level == 2:
        r, s = rng.sample(range(-9, 10), 2)
        larger = max(r, s)
        return (f"What is the larger solution of ${_factor_text(r)}{_factor_text(s)} = 0$?",
                f"A product is zero when a factor is zero, so $x = {r}$ or $x = {s}$; the larger is ${larger}$.",
                str(larger))
    if level == 3:
        r, s = rng.sample(range(-12, 13), 2)
        b, c = -(r + s), r * s
        value = -b
        return (f"What is the sum of all solutions of ${_polynomial_text([1, b, c])} = 0$?",
                f"The quadratic factors as ${_factor_text(r)}{_factor_text(s)} = 0$, so the solutions are ${r}$ and "
                f"${s}$, whose sum is ${value}$ (by Vieta, minus the coefficient of $x$).", str(value))
    if level == 4:
        a = rng.randint(2, 9)
        b, c = rng.randint(-20, 20), rng.choice([k for k in range(-30, 31) if k != 0])
        value = Fraction(c, a)
        return (f"What is the product of the roots of ${_polynomial_text([a, b, c])} = 0$? Express your answer as a "
                f"common fraction in lowest terms if it is not an integer.",
                f"By Vieta's formulas the product of the roots of $ax^2 + bx + c$ is $\\frac{{c}}{{a}} = "
                f"\\frac{{{c}}}{{{a}}} = {latex_number(value)}$.", latex_number(value))
    roots = sorted(rng.sample(range(-6, 7), 3))
    e1 = sum(roots)
    e2 = roots[0] * roots[1] + roots[0] * roots[2] + roots[1] * roots[2]
    e3 = roots[0] * roots[1] * roots[2]
    value = e1 * e1 - 2 * e2
    factors = "".join(_factor_text(r) for r in roots)
    return (f"Find the sum of the squares of the solutions of ${_polynomial_text([1, -e1, e2, -e3])} = 0$.",
            f"The cubic factors as ${factors} = 0$, so the solutions are ${roots[0]}, {roots[1]}, {roots[2]}$. "
            f"With $e_1 = {e1}$ and $e_2 = {e2}$, the sum of squares is $e_1^2 - 2e_2 = {e1 * e1} - {_paren(2 * e2)} = "
            f"{value}$.", str(value))


def _pythagorean_triple(rng: random.Random) -> tuple[int, int, int]:
    """Euclid's formula (m^2 - n^2, 2mn, m^2 + n^2) scaled by k; the two legs in random order."""
    m = rng.randint(2, 8)
    n = rng.randint(1, m - 1)
    k = rng.randint(1, 4)
    legs = [k * (m * m - n * n), k * 2 * m * n]
    rng.shuffle(legs)
    return legs[0], legs[1], k * (m * m + n * n)


def _areas(rng: random.Random, level: int) -> Drawn:
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        if rng.random() < 0.5:
            return (f"A rectangle has length ${a}$ and width ${b}$. What is its area?",
                    f"Area is length times width: ${a} \\times {b} = {a * b}$.", str(a * b))
        return (f"A rectangle has length ${a}$ and width ${b}$. What is its perimeter?",
                f"Perimeter is twice length plus width: $2 \\times ({a} + {b}) = {2 * (a + b)}$.", str(2 * (a + b)))
    if level == 2:
        base, height = rng.randint(2, 20), rng.randint(2, 20)
        value = Fraction(base * height, 2)
        return (f"A triangle has base ${base}$ and height ${height}$. What is its area?",
                f"Area is $\\frac{{1}}{{2}} \\cdot {base} \\cdot {height} = {latex_number(value)}$.", latex_number(value))
    if level == 3:
        r = rng.randint(2, 60)
        given = rng.choice(("radius", "diameter", "circumference"))
        stated = {"radius": f"${r}$", "diameter": f"${2 * r}$", "circumference": f"${2 * r}\\pi$"}[given]
        radius_step = {"radius": "", "diameter": f"The radius is half the diameter, ${r}$. ",
                       "circumference": f"From $2\\pi r = {2 * r}\\pi$ the radius is ${r}$. "}[given]
        value = f"{r * r}\\pi"
        return (f"A circle has {given} {stated}. What is its area? Express your answer in terms of $\\pi$.",
                f"{radius_step}Area is $\\pi r^2 = \\pi \\cdot {r}^2 = {value}$.", value)
    if level == 4:
        a, b, h = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 15)
        if a == b:
            b += 1
        value = Fraction((a + b) * h, 2)
        return (f"A trapezoid has parallel sides of lengths ${a}$ and ${b}$ and height ${h}$. What is its area?",
                f"Area is $\\frac{{1}}{{2}}({a} + {b}) \\cdot {h} = {latex_number(value)}$.", latex_number(value))
    leg, other, hyp = _pythagorean_triple(rng)
    computed_other = math.isqrt(hyp * hyp - leg * leg)
    value = Fraction(leg * computed_other, 2)
    return (f"A right triangle has a leg of length ${leg}$ and a hypotenuse of length ${hyp}$. What is its area?",
            f"The other leg is $\\sqrt{{{hyp}^2 - {leg}^2}} = \\sqrt{{{hyp * hyp - leg * leg}}} = {computed_other}$, "
            f"so the area is $\\frac{{1}}{{2}} \\cdot {leg} \\cdot {computed_other} = {latex_number(value)}$.",
            latex_number(value))


def _percentages(rng: random.Random, level: int) -> Drawn:
    if level in (1, 2):
        percent = rng.choice([10, 20, 25, 50, 100]) if level == 1 else rng.choice(range(5, 100, 5))
        whole = rng.randint(1, 25) * 20
        value = Fraction(percent * whole, 100)
        return (f"What is ${percent}\\%$ of ${whole}$?",
                f"${percent}\\%$ of ${whole}$ is $\\frac{{{percent}}}{{100}} \\cdot {whole} = {decimal_number(value)}$.",
                decimal_number(value))
    if level == 3:
        price, percent = rng.randint(2, 30) * 4, rng.choice([25, 50, 75, 10, 20, 30])
        value = Fraction(price * (100 + percent), 100)
        return (f"A price of ${price}$ dollars is increased by ${percent}\\%$. What is the new price, in dollars?",
                f"The new price is ${price} \\cdot \\frac{{{100 + percent}}}{{100}} = {decimal_number(value)}$.",
                decimal_number(value))
    if level == 4:
        price = rng.randint(2, 50) * 20
        up, down = rng.choice(range(10, 60, 10)), rng.choice(range(10, 60, 10))
        after_up = Fraction(price * (100 + up), 100)
        value = after_up * Fraction(100 - down, 100)
        return (f"A price of ${price}$ dollars is raised by ${up}\\%$, and the new price is then lowered by ${down}\\%$. "
                f"What is the final price, in dollars?",
                f"After the increase the price is ${price} \\cdot {decimal_number(Fraction(100 + up, 100))} = "
                f"{decimal_number(after_up)}$; after the decrease it is ${decimal_number(after_up)} \\cdot "
                f"{decimal_number(Fraction(100 - down, 100))} = {decimal_number(value)}$.", decimal_number(value))
    while True:
        whole, part = rng.randint(8, 200), rng.randint(1, 199)
        value = Fraction(part * 100, whole)
        if part < whole and value * 100 == int(value * 100):
            break
    return (f"What percent of ${whole}$ is ${part}$?",
            f"$\\frac{{{part}}}{{{whole}}} \\cdot 100\\% = {decimal_number(value)}\\%$.", decimal_number(value))


GENERATORS: dict[str, Callable[[random.Random, int], Drawn]] = {
    "arithmetic": _arithmetic, "fractions": _fractions, "linear_equations": _linear_equations,
    "gcd_lcm": _gcd_lcm, "remainders": _remainders, "counting": _counting,
    "polynomial_roots": _polynomial_roots, "areas": _areas, "percentages": _percentages,
}


# --- public entry points ---

def generate_problems(
    n: int,
    seed: int,
    levels: Sequence[int] = SYNTHETIC_LEVELS,
    types: Sequence[str] = SYNTHETIC_TYPES,
    wordings: Sequence[str] | None = None,
) -> list[dict]:
    """`n` distinct synthetic problems as data-file rows, deterministic for a given seed.

    Problems cycle through the (type, level) cells in the order given, so every cell gets
    n / (len(types) * len(levels)) problems up to one. Each row is
    `{"id": "synthetic/<type>/<i>", "problem", "solution", "answer", "type", "level", "source": "synthetic"}`
    where the solution ends in `\\boxed{answer}`.

    `wordings`: None keeps level-1 arithmetic in its original template ("What is $7 + 5$?") and
    the rows exactly as above. A sequence of names from ARITHMETIC_WORDINGS gives each level-1
    arithmetic row one of them, uniformly at random, and a `"wording"` field with its name; such
    rows are distinct by fact (op, a, b), so no fact appears in two wordings, and they hold the
    same facts in the same order as with None. Other cells are the same either way.

    Raises ValueError for an unknown type, level or wording, and when a cell cannot produce
    another distinct problem (level-1 arithmetic holds 207 facts).
    """
    names = None if wordings is None else _nonempty_wordings(wordings, "wordings")
    return _generate(n, seed, levels, types, None if names is None else (lambda index: names))


def generate_train_eval(
    num_train: int,
    num_eval: int,
    seed: int,
    levels: Sequence[int] = SYNTHETIC_LEVELS,
    types: Sequence[str] = SYNTHETIC_TYPES,
    wordings: Sequence[str] | None = None,
    heldout_wordings: Sequence[str] = (),
) -> tuple[list[dict], list[dict]]:
    """(training rows, eval rows): the first `num_train` and the next `num_eval` rows of one
    generator pass, so the two never share a problem (nor, with wordings, a fact).

    Level-1 arithmetic training rows take one of `wordings` (None: the original template, as in
    generate_problems). `heldout_wordings` appear in the eval rows only: the first, third, fifth,
    ... level-1 arithmetic eval row takes one of them and the others one of `wordings`, so any
    prefix of the eval rows holds both kinds about equally. Raises ValueError for unknown or
    overlapping names, held-out wordings without `wordings`, and as generate_problems does.
    """
    if wordings is None:
        if heldout_wordings:
            raise ValueError("heldout_wordings need training wordings too; the original template is "
                             f"{ORIGINAL_WORDING!r}")
        rows = _generate(num_train + num_eval, seed, levels, types, None)
        return rows[:num_train], rows[num_train:]
    train_names = _nonempty_wordings(wordings, "wordings")
    heldout_names = check_wordings(heldout_wordings)
    both = sorted(set(train_names) & set(heldout_names))
    if both:
        raise ValueError(f"wordings {both} are both trained on and held out; a held-out wording must not be a "
                         "training wording")
    eval_rows_seen = itertools.count()  # level-1 arithmetic eval rows so far

    def names_for(index: int) -> tuple[str, ...]:
        if index < num_train or not heldout_names:
            return train_names
        return heldout_names if next(eval_rows_seen) % 2 == 0 else train_names

    rows = _generate(num_train + num_eval, seed, levels, types, names_for)
    return rows[:num_train], rows[num_train:]


def _nonempty_wordings(names: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(names, str) or not names:
        raise ValueError(f"{what} must be a non-empty sequence of names from {list(ARITHMETIC_WORDINGS)}; "
                         f"got {names!r}")
    return check_wordings(names)


def _generate(n: int, seed: int, levels: Sequence[int], types: Sequence[str],
              wordings_of_row: Callable[[int], tuple[str, ...]] | None) -> list[dict]:
    """The rows of generate_problems; `wordings_of_row(index)` (called once per level-1 arithmetic
    row, in order) names the wordings row `index` chooses from, or None for the original template."""
    unknown_types = [t for t in types if t not in GENERATORS]
    if unknown_types:
        raise ValueError(f"unknown synthetic types {unknown_types}; choose from {list(SYNTHETIC_TYPES)}")
    bad_levels = [lvl for lvl in levels if lvl not in SYNTHETIC_LEVELS]
    if bad_levels or not levels or not types:
        raise ValueError(f"levels must be a non-empty subset of {list(SYNTHETIC_LEVELS)} and types non-empty; "
                         f"got levels={list(levels)}, types={list(types)}")
    if n < 0:
        raise ValueError(f"n={n} must be 0 or more")
    rng = random.Random(seed)
    # Wordings and story names come from their own stream, so the facts drawn from `rng` (and
    # every other cell's problems) are the same with and without wordings.
    wording_rng = random.Random(f"wordings/{seed}")
    cells = [(problem_type, level) for level in levels for problem_type in types]
    seen: set = set()  # problem texts; with wordings, level-1 arithmetic facts
    rows = []
    for index in range(n):
        problem_type, level = cells[index % len(cells)]
        wording = None
        if wordings_of_row is not None and (problem_type, level) == ("arithmetic", 1):
            fact = _draw_unseen(_arithmetic_fact, rng, level, seen, problem_type, key=lambda drawn: drawn)
            wording = wording_rng.choice(wordings_of_row(index))
            problem, steps, answer = arithmetic_problem(fact, wording, wording_rng)
        else:
            problem, steps, answer = _draw_unseen(GENERATORS[problem_type], rng, level, seen, problem_type)
        row = {
            "id": f"synthetic/{problem_type}/{index}", "problem": problem,
            "solution": f"{steps} The answer is $\\boxed{{{answer}}}$.", "answer": answer,
            "type": problem_type, "level": level, "source": "synthetic",
        }
        if wording is not None:
            row["wording"] = wording
        rows.append(row)
    return rows


def _draw_unseen(generator: Callable[[random.Random, int], Any], rng: random.Random, level: int,
                 seen: set, problem_type: str, key: Callable[[Any], Hashable] = lambda drawn: drawn[0]) -> Any:
    """The generator's first draw whose key (by default the problem text) is not in `seen`; adds it."""
    for _ in range(MAX_DRAWS_PER_PROBLEM):
        drawn = generator(rng, level)
        if key(drawn) not in seen:
            seen.add(key(drawn))
            return drawn
    raise ValueError(f"synthetic type {problem_type!r} level {level} produced no new problem in "
                     f"{MAX_DRAWS_PER_PROBLEM} draws after {len(seen)} problems in all; ask for fewer problems "
                     f"or include more levels/types")
