"""Offline MATH-style problems whose answers are computed, for the demo and the tests.

Nine problem types (SYNTHETIC_TYPES), five levels each, one generator per type in
apo/synthetic_generators.py (whose docstring tables what each level asks). Every problem is drawn
from a seeded random number generator, its answer is computed with exact integer or
`fractions.Fraction` arithmetic (never typed in), and its solution is a short worked derivation
that ends in `\\boxed{answer}`, the same shape as a MATH solution. Level 1 is one step on small
numbers, with single-digit +, -, x for the arithmetic type ("What is $7 + 5$?"), within reach of a
135M chat model; level 5 takes a few steps.

Level-1 arithmetic can also be worded in several ways (`wordings=`, names in
ARITHMETIC_WORDINGS), so that a model trained on some wordings can be tested on others; the
default (None) keeps the one original template. Every wording covers +, - and x; by family, the
wording of 7 + 5 | 9 - 3 | 4 x 6:

symbols
    what_is_symbols (the original)  What is $7 + 5$? | What is $9 - 3$? | What is $4 \\times 6$?
    compute_symbols                 Compute $7 + 5$. | Compute $9 - 3$. | Compute $4 \\times 6$.
    value_of_symbols                Find the value of $7 + 5$. | ... | ...
    equals_question_symbols         $7 + 5 = ?$ | $9 - 3 = ?$ | $4 \\times 6 = ?$
words
    what_is_words                   What is seven plus five? | ... nine minus three? | ... four times six?
    sum_difference_product          What is the sum of 7 and 5? | ... the difference between 9 and 3? |
                                    ... the product of 4 and 6?
    add_subtract_multiply           Add 7 and 5. | Subtract 3 from 9. | Multiply 4 by 6.
    what_do_you_get                 What do you get when you add 5 to 7? | ... take 3 away from 9? |
                                    ... multiply 4 by 6?
    more_less_than                  What number is five more than seven? | ... three less than nine? |
                                    ... four times as big as six?
story
    story_has_gets                  Sam has 7 apples and gets 5 more. How many ...? | ... gives 3 away ... left? |
                                    ... 4 bags with 6 apples in each bag ...?
    story_shelf                     A shelf holds 7 books. Then 5 more are put on it. ...? | ... 3 are taken off ...? |
                                    A box has 4 rows with 6 books in each row. ...?
    story_two_people                Sam has 7 cards and Mia has 5 cards. How many ... together? |
                                    ... Mia has 3 fewer than Sam ...? |
                                    Sam has 4 friends and gives each friend 6 cards. ...?

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
import random
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from apo.errors import InputError

from apo.synthetic_generators import (Drawn, draw_areas, draw_arithmetic, draw_counting, draw_fractions, draw_gcd_lcm,
                                      draw_linear_equations, draw_percentages, draw_polynomial_roots, draw_remainders)

SYNTHETIC_TYPES = (
    "arithmetic", "fractions", "linear_equations", "gcd_lcm", "remainders",
    "counting", "polynomial_roots", "areas", "percentages",
)
SYNTHETIC_LEVELS = (1, 2, 3, 4, 5)
MAX_DRAWS_PER_PROBLEM = 500


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


# --- the types: one generator each (apo/synthetic_generators.py), levels 1-5 ---

def _arithmetic(rng: random.Random, level: int) -> Drawn:
    """The arithmetic type: level 1 is a single-digit fact in the original wording, levels 2-5 draw_arithmetic."""
    if level == 1:
        return arithmetic_problem(_arithmetic_fact(rng), ORIGINAL_WORDING)
    return draw_arithmetic(rng, level)


GENERATORS: dict[str, Callable[[random.Random, int], Drawn]] = {
    "arithmetic": _arithmetic, "fractions": draw_fractions, "linear_equations": draw_linear_equations,
    "gcd_lcm": draw_gcd_lcm, "remainders": draw_remainders, "counting": draw_counting,
    "polynomial_roots": draw_polynomial_roots, "areas": draw_areas, "percentages": draw_percentages,
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
        try:
            if wordings_of_row is not None and (problem_type, level) == ("arithmetic", 1):
                fact = _draw_unseen(_arithmetic_fact, rng, level, seen, problem_type, key=lambda drawn: drawn)
                wording = wording_rng.choice(wordings_of_row(index))
                problem, steps, answer = arithmetic_problem(fact, wording, wording_rng)
            else:
                problem, steps, answer = _draw_unseen(GENERATORS[problem_type], rng, level, seen, problem_type)
        except _CellExhausted:
            # rows are drawn in order, so any n <= index gives these same first rows and fits
            per_cell = index // len(cells)
            raise SyntheticCapacityError(
                f"synthetic type {problem_type!r} level {level} produced no new problem in {MAX_DRAWS_PER_PROBLEM} "
                f"draws after {per_cell} of its own: {n} problems do not fit levels {list(levels)} x types "
                f"{list(types)} (seed {seed}); {index} or fewer do, or include more levels/types",
                fits=index, problem_type=problem_type, level=level, per_cell=per_cell) from None
        row = {
            "id": f"synthetic/{problem_type}/{index}", "problem": problem,
            "solution": f"{steps} The answer is $\\boxed{{{answer}}}$.", "answer": answer,
            "type": problem_type, "level": level, "source": "synthetic",
        }
        if wording is not None:
            row["wording"] = wording
        rows.append(row)
    return rows


class SyntheticCapacityError(InputError):
    """More problems were asked for than the (type, level) cells hold: `fits` rows (the ones drawn before a
    cell ran out) is how many this seed, these levels and these types give; `problem_type`, `level` and
    `per_cell` name the cell that ran out and how many distinct problems it gave."""

    def __init__(self, message: str, fits: int, problem_type: str, level: int, per_cell: int):
        super().__init__(message)
        self.fits, self.problem_type, self.level, self.per_cell = fits, problem_type, level, per_cell


class _CellExhausted(Exception):
    pass


def _draw_unseen(generator: Callable[[random.Random, int], Any], rng: random.Random, level: int,
                 seen: set, problem_type: str, key: Callable[[Any], Hashable] = lambda drawn: drawn[0]) -> Any:
    """The generator's first draw whose key (by default the problem text) is not in `seen`; adds it.
    Raises _CellExhausted after MAX_DRAWS_PER_PROBLEM draws that were all seen."""
    for _ in range(MAX_DRAWS_PER_PROBLEM):
        drawn = generator(rng, level)
        if key(drawn) not in seen:
            seen.add(key(drawn))
            return drawn
    raise _CellExhausted()
