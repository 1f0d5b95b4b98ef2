"""Final-answer extraction and equivalence checking for MATH-style responses.

Every reward and every reported accuracy passes through `grade`: is this response's final
answer the gold answer? Public: `last_boxed_content`, `extract_answer`, `grade`, `grade_many`,
`GradingReport`, `GRADER_VERSION` (record it next to every result).

Extraction (`extract_answer`, `last_boxed_content`) lives in `apo.answer_extraction` and is
re-exported here; see its docstring for the rules. Normalisation and the exact leaf rules
(`normalize_answer`, `fast_atom`: the fast path, no sympy) live in `apo.answer_normalization`.
Here: the structure rules (`compare_structured`), the sympy leaf rules (the slow path, run
in `apo.grading_pool`'s workers through `_worker_main`) and the single-pair and batch API.

Equivalence (`compare_structured`), by the gold's structure:
  - `(a, b)`, `[a, b)` (tuple, point, interval, column vector): same brackets, element by
    element, in order; `a=2, b=3` also matches `(2, 3)`;
  - a bare list `a, b, c` (MATH's "enter all the solutions, separated by commas") and
    `\\{a, b\\}`: the same multiset in any order; `x = a` items and `\\pm` are expanded;
  - `A \\cup B`: the same pieces in any order; `x \\in [a, b]`, `a \\le x \\le b`, `x > a`,
    `x \\ne a` and `\\mathbb{R}` are read as intervals (by `normalize_answer`), with the sides
    either way round (`5 \\le x`), in ASCII (`<=`, `>=`, `!=`), unicode or `\\gt` / `\\lt`, and
    `or` of them as a union;
  - a labelled gold: `x_1 = 2, x_2 = 3` is a list of roots, `a = 3, b = -2` the ordered pair
    `(3, -2)` (or the same labels in any order), `V_1:V_2 = 11:21` the ratio 11/21,
    `f(x) = ...` / `M = ...` the value; a column vector matches `[a, b]` or `(a, b)`;
  - two equations in x, y, z match when one is a nonzero constant times the other
    (`2x+4y-3=0` and `y = -\\frac{1}{2}x + \\frac{3}{4}`); `x = 3` never matches `y = 3`;
  - a division by zero (`\\frac{1}{0}`, or sympy's `zoo` / `nan`) is equal to nothing, itself
    included;
  - a leaf: normalised string match (`normalize_answer`, Hendrycks/PRM800K style: `\\text{}`
    unwrapped, `\\left`, spacing commands, `^\\circ`, `\\$`, trailing unit words, `x =`,
    thousands separators dropped; `dfrac` -> `frac`; choice letters `(C)` -> `C`; text answers
    case-insensitive), then exact rational comparison (`fast_atom`; both in
    `apo.answer_normalization`), then (in a worker) math-verify's LaTeX parser into sympy
    with `i` as the imaginary unit and plain text (`pi/2`, `exp(16)-1`, `-2*pi`) rewritten
    as LaTeX; two exact numbers (no decimal point on either side) must be equal (rationals
    exactly, others to 50 significant digits, so `2\\sqrt{3} + 10^{-10}` is not `2\\sqrt{3}`),
    a decimal matches within a relative 1e-9 (about ten significant digits: `3.464101615` for
    `2\\sqrt{3}`, not `3.14159` for `\\pi`; math-verify's absolute 6-decimal rounding would
    accept 1/2004! for 1/2006!); everything else by math-verify's `verify(gold, pred)`.
  - Numbers as written (`fast_atom`): a gold in scientific notation (`4.5e33`,
    `4.5 \\times 10^{33}`, Minerva's) matches any number that rounds to it
    (`4.48 \\times 10^{33}`); a decimal of at least 8 significant digits matches the fraction
    it is cut or rounded from (`0.0833333333333333` for `\\frac{1}{12}`); shorter decimals
    must be exact. Units after a number (`\\mathrm{~km} \\mathrm{~s}^{-1}`) and numpy prefixes
    in golds (`np.arcsin`) drop (`normalize_answer`).
  - A percent is the number before its sign, read one way only: `25\\%` matches `25\\%` and
    `25` (MATH writes a percent answer as its number), never `0.25` or `\\frac{1}{4}`, and a
    plain number below 1 is never a percent (`0.5\\%` is not `0.5`), so no answer matches two
    golds a factor of 100 apart. Different unit words reject (`5 hours` vs `5 minutes`); a
    unit on one side only is ignored.

Hedges (grader 1.3, issue 27; the reward must not pay for an answer that does not commit):
  - words that qualify or negate (`10 \\text{ or more}`, `maybe`, `at most`, `is wrong`, a
    number word after a digit: `qualifier_words`) are never units and reject the pair unless
    the gold has them too; unit words and count nouns (`cm`, `marbles`, `ways`) still drop;
  - candidates joined by `or` (`5 or 6`, `\\boxed{4}` or `\\boxed{5}`) are right only when
    each is (MATH's one answer in two forms, `15\\frac{39}{40}` or `\\frac{639}{40}`, passes);
    `or` between solutions of a list gold (`x = 2 or x = -5` for `2, -5`) and between
    inequalities (a union) keeps its meaning; one choice letter only (`(C)(D)` is not `C`);
  - a chain `a = b = c` is read as its final value only when every link without a variable
    equals it (`2^{10} = 1024` yes, `11 = 10` and `x = 9 = 10` no); after `\\Rightarrow` only
    the last statement counts;
  - what a final answer is (negation, retraction, the final statement, text after the box)
    is `apo.answer_extraction`'s rule.

Speed and safety: pairs the string/rational rules decide (`_fast_verdict`: the structure
rules with `fast_atom` at the leaves) never leave the calling process (~0.05 ms median on
real MATH solutions); the rest go to a lazily started pool of worker subprocesses, each
pair under a wall-clock timeout, a hung worker killed and replaced. Raw strings are never
handed to `eval` or `sympify`: only math-verify's LaTeX parser sees them.

>>> grade("So the answer is $\\\\boxed{\\\\dfrac{1}{2}}$.", "\\\\frac{1}{2}")
True
>>> extract_answer("Final Answer: The final answer is 10. I hope it is correct.")
'10'
>>> grade("# Answer\\n\\n(4, 2)", "(2,4)")
False
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from typing import Sequence

from apo import grading_pool
from apo.answer_extraction import (MAX_RESPONSE_CHARS, cut_continuation, extract_answer,  # noqa: F401  (public API)
                                   last_boxed_content, sanitize_text, top_level_boxes, unwrap_text)
from apo.answer_normalization import (LABEL_NAME, MAX_ANSWER_CHARS, as_rational, drop_spaces, fast_atom,
                                      normalize_answer, qualifier_words, split_top_level, trailing_unit)
from apo.grading_pool import limit_cpu_seconds, shutdown_pool  # noqa: F401  (shutdown_pool is public API)

logger = logging.getLogger(__name__)

GRADER_VERSION = "apo-math-grader-1.3"

# --- structure: tuples, intervals, unions, solution lists ---

def _bracketed(s: str) -> tuple[str, str, str] | None:
    """(open, inner, close) when `s` is one bracketed group `(...)`, `[...)`, `\\{...\\}`, else None."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "{", s[2:-2], "}"
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner = s[1:-1]
        depth = 0
        for ch in inner:
            depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
            if depth < 0:
                return None
        return (s[0], inner, s[-1]) if depth == 0 else None
    return None


def _strip_assignment(item: str) -> str:
    """`x=3` -> `3`, `x\\in[1,2]` -> `[1,2]`, `\\angle BEA_{1}=90` -> `90` (a name on the left only)."""
    return re.sub(r"^(?:\\angle ?)?(?:[a-zA-Z](?:_\{?\w+\}?)?){1,4}(?:=|\\in)(?=.)", "", item)


def _ratio_as_fraction(answer: str) -> str:
    """`11:21` -> `\\frac{11}{21}`; anything else unchanged."""
    m = re.fullmatch(r"\s*\$?\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*\$?\s*", answer)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else answer


def _compare_percent(pred: str, gold: str, atom) -> bool | None:
    """When only `pred` has a `%`: the number before it against the gold (`25\\%` matches `25`).

    Called with the sides swapped when only the gold has the `%` (`25` for `25\\%`). A percent
    is never also read as its value divided by 100 (`5\\%` does not match `0.05`): one answer
    must not match two golds a factor of 100 apart. MATH writes a percent answer as its number
    (`25` for "what percent"; of MATH's 68 "what percent" golds 39 carry the `%`, 28 are
    numbers of at least 1, none a decimal below 1), so a plain number below 1 is a value, never
    a percent: `0.5\\%` does not match `0.5`.
    """
    other = as_rational(normalize_answer(gold))
    if other is not None and abs(other) < 1:
        return False
    return compare_structured(re.sub(r"\\?%", "", pred), gold, atom)


_PLUS_MINUS_RE = re.compile(r"\\pm(?![a-zA-Z])")  # `\pm`, not `\pmod`


def _expand_plus_minus(items: list[str]) -> list[str]:
    """Each item with one `\\pm`, at any depth, as its two readings: `a\\pmb` -> `a+b`, `a-b`;
    `\\pm b` -> `b`, `-b`; `\\frac{1\\pm\\sqrt{5}}{2}` -> `\\frac{1+\\sqrt{5}}{2}`,
    `\\frac{1-\\sqrt{5}}{2}`. Items with no or several `\\pm` are unchanged."""
    expanded = []
    for item in items:
        found = list(_PLUS_MINUS_RE.finditer(item))
        if len(found) != 1:
            expanded.append(item)
            continue
        before, after = item[:found[0].start()], item[found[0].end():]
        plus = "" if not before.strip() or before.rstrip()[-1] in "{([" else "+"
        expanded += [f"{before}{plus}{after}", f"{before}-{after}"]
    return expanded


def _unordered_match(preds: list[str], golds: list[str], atom) -> bool | None:
    """Multiset match of two lists under `atom`; None when some needed comparison is undecided."""
    if len(preds) != len(golds):
        return False
    remaining = list(preds)
    undecided = False
    for gold in golds:
        for index, pred in enumerate(remaining):
            verdict = compare_structured(pred, gold, atom)
            if verdict:
                del remaining[index]
                break
            undecided |= verdict is None
        else:
            return None if undecided else False
    return True


_UNDEFINED_RE = re.compile(r"\\frac\{[^{}]*\}\{0\}|(?<![\w.])[\w)}]+/0(?![\d.])")
_COLUMN_RE = re.compile(r"\\begin\{[pbBv]?matrix\}")


def _labelled_values(answer: str) -> list[tuple[str, str]] | None:
    """[(label, value)] of `a = 3, b = -2` (two or more items, each `name = value`), else None."""
    items = split_top_level(unwrap_text(answer).replace("$", ""))
    if len(items) < 2:
        return None
    pairs = [re.fullmatch(rf"\s*({LABEL_NAME})\s*=\s*(\S.*?)\s*", item, re.DOTALL) for item in items]
    if not all(pairs):
        return None
    return [(re.sub(r"\s+", "", m.group(1)), m.group(2)) for m in pairs]


def _as_ordered_tuple(gold: str) -> list[tuple[str, str]] | None:
    """A labelled gold whose labels are distinct names (`a = 3, b = -2`): an ordered tuple.

    Labels that share a base letter (`x_1 = 2, x_2 = 3`) name the roots of one equation, an
    unordered list, and give None.
    """
    labelled = _labelled_values(gold)
    if labelled is None:
        return None
    bases = {re.sub(r"_.*|\\angle", "", label) for label, _ in labelled}
    return labelled if len(bases) == len(labelled) else None


def _equation_pair(pred: str, gold: str) -> tuple[str, str] | None:
    """Normalised `L=R` forms when both answers are one equation in x, y or z (`2x+4y-3=0`), else None."""
    sides = []
    for answer in (pred, gold):
        parts = split_top_level(unwrap_text(answer).replace("$", ""), "=")
        if len(parts) != 2 or any(op in answer for op in ("<", ">", "\\le", "\\ge", "\\ne", ",")):
            return None
        if not re.search(r"(?<![a-zA-Z\\])[xyz](?![a-zA-Z])", answer):
            return None
        sides.append("=".join(drop_spaces(_normalize_side(part)) for part in parts))
    return sides[0], sides[1]


def _normalize_side(side: str) -> str:
    """One side of an equation, normalised (no `=` in it, so no label is dropped)."""
    return normalize_answer(side) or side.strip()


def _alternatives(pred: str) -> list[str]:
    """The candidates of `5 or 6`, `4 \\text{ or } 5` (two or more, split at a top-level `or`), else []."""
    if "or" not in pred:
        return []
    pieces = [piece.strip() for piece in split_top_level(re.sub(r"\\text\s*\{\s*or\s*\}|\bor\b", "\x00", pred), "\x00")]
    return pieces if len(pieces) > 1 and all(pieces) else []


_CONSTANT_COMMANDS_RE = re.compile(
    r"\\(?:[dt]?frac|sqrt|pi|cdot|times|div|left|right|[lr]floor|[lr]ceil|sin|cos|tan|cot|sec|csc|arcsin|arccos|"
    r"arctan|log|ln|exp|circ|binom|infty|mathbf|mathrm|text|operatorname|pm|mp)(?![a-zA-Z])")


def _constant(link: str) -> bool:
    """A link of a chain with no variable in it (`3 + 7`, `\\frac{20}{2}`, `2^{10}`), so it states a value.

    Greek letters and other commands not in `_CONSTANT_COMMANDS_RE` are variables (`\\alpha = 4`)."""
    return not re.search(r"[a-zA-Z]", _CONSTANT_COMMANDS_RE.sub("", link))


def compare_structured(pred: str, gold: str, atom) -> bool | None:
    """Compare two answers as `_compare_structured` does, and also as equations.

    Two equations in x, y, z (`2x+4y-3=0`, `y = -\\frac{1}{2}x + \\frac{3}{4}`) also match when
    `atom` finds them equivalent as equations (one side minus the other, up to a constant
    factor); `x = 3` and `y = 3` never do.
    """
    if qualifier_words(pred) - qualifier_words(gold):  # `10 \\text{ or more}`, `\\text{maybe } 10`: a hedge
        return False
    alternatives = _alternatives(pred) if not re.search(r"\bor\b", gold) else []
    if alternatives:  # `\\boxed{4}` or `\\boxed{5}`: right only when every candidate is
        verdicts = [compare_structured(alternative, gold, atom) for alternative in alternatives]
        if all(verdicts):
            return True
    plain = [re.fullmatch(r"\s*([xy])\s*=\s*([^=]+)", unwrap_text(a).replace("$", "")) for a in (pred, gold)]
    if all(plain) and plain[0].group(1) != plain[1].group(1):
        return False  # `y = 3` is not the line `x = 3`
    equations = _equation_pair(pred, gold)
    verdict = _compare_structured(pred, gold, atom)
    if equations is None or verdict:
        return verdict
    as_equations = atom(*equations)
    if as_equations:
        return True
    return None if as_equations is None or verdict is None else False


def _compare_structured(pred: str, gold: str, atom) -> bool | None:
    """Compare two answers by the gold's structure, deciding leaves with `atom(pred, gold)`.

    Rules: a gold `(a, b)` / `[a, b)` (tuple, point or interval) matches element by element,
    in order, with the same brackets; a gold union `A \\cup B` matches the pieces in any
    order; a bare gold list `a, b, c` (MATH's "enter all the solutions, separated by commas")
    matches the same multiset, bare or written `\\{a, b, c\\}` / `x=a, x=b`. Anything else is
    a leaf. Returns True/False, or None when `atom` could not decide a needed leaf.
    """
    pred_unit, gold_unit = trailing_unit(pred), trailing_unit(gold)
    if pred_unit and gold_unit and pred_unit != gold_unit:  # `5 hours` is not `5 minutes`
        return False
    clock = r"(?i)\s*\b[ap]\.?m\.?\s*$"
    if re.search(clock, unwrap_text(gold)) and not re.search(clock, unwrap_text(pred)):  # `9:45` for `9:45 a.m.`
        gold = re.sub(clock, "", unwrap_text(gold))
    percent = r"%\s*\}?\s*$"
    if re.search(percent, pred) and "%" not in gold:
        return _compare_percent(pred, gold, atom)
    if re.search(percent, gold) and "%" not in pred:
        return _compare_percent(gold, pred, lambda g, p: atom(p, g))
    ordered = _as_ordered_tuple(gold)
    if ordered is not None:  # `a = 3, b = -2`: by label when `pred` has the same labels, else as `(3, -2)`
        labels = dict(_labelled_values(pred) or [])
        if set(labels) == {label for label, _ in ordered}:
            verdicts = [compare_structured(labels[label], value, atom) for label, value in ordered]
            return False if False in verdicts else None if None in verdicts else True
        gold = "(" + ", ".join(value for _, value in ordered) + ")"
        if _bracketed(normalize_answer(pred)) is None and len(split_top_level(normalize_answer(pred))) == len(ordered):
            pred = "(" + pred + ")"
    ratio = re.fullmatch(rf"\s*{LABEL_NAME}(?::\s*{LABEL_NAME})+\s*=\s*(.+)", unwrap_text(gold), re.DOTALL)
    if ratio:  # `V_1:V_2 = 11:21`: a two-term ratio is the fraction
        gold, pred = _ratio_as_fraction(ratio.group(1)), _ratio_as_fraction(pred)
    column = _COLUMN_RE.search(pred) or _COLUMN_RE.search(gold)
    pred, gold = normalize_answer(pred), normalize_answer(gold)
    if not gold or not pred or _UNDEFINED_RE.search(pred) or _UNDEFINED_RE.search(gold):
        return False  # a division by zero is equal to nothing, itself included
    if pred == gold:
        return True
    if column:  # a column vector written `[a, b]` or `(a, b)`: the brackets carry no meaning
        pred, gold = re.sub(r"^\[(.*)\]$", r"(\1)", pred), re.sub(r"^\[(.*)\]$", r"(\1)", gold)
    if "=" not in gold and len(split_top_level(pred, "=")) > 1 and len(split_top_level(pred)) == 1:
        # `2^{10}=1024`: the value the chain ends in, when every link without a variable equals it
        *links, pred = split_top_level(re.split(r"\\(?:Rightarrow|implies|Longrightarrow)", pred)[-1], "=")
        verdicts = [compare_structured(link, pred, atom) for link in links if _constant(link)]
        if False in verdicts:
            return False  # `11 = 10`, `x = 9 = 10`
        if None in verdicts:
            return None
        if pred == gold:
            return True
    choice = re.match(r"\(([A-E])\)", pred)
    if choice and re.fullmatch(r"[A-E]", gold):  # `(B) 12` for the choice `(B)`, not `(C)(D)` for `(C)`
        return choice.group(1) == gold and len(re.findall(r"\([A-Ea-e]\)", pred)) == 1
    gold_union, pred_union = split_top_level(gold, "\\cup"), split_top_level(pred, "\\cup")
    if len(gold_union) > 1:
        return _unordered_match(pred_union, gold_union, atom)
    gold_group, pred_group = _bracketed(gold), _bracketed(pred)
    gold_items = split_top_level(gold_group[1]) if gold_group else split_top_level(gold)
    if gold_group and len(gold_items) > 1 and gold_group[0] != "{":
        pred_items = split_top_level(pred_group[1]) if pred_group else split_top_level(pred)
        # `a=2,b=3` for `(2,3)`; normalisation already dropped the first `a=`
        if not pred_group and len(pred_items) > 1 and all(re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?=.+", p)
                                                          for p in pred_items[1:]):
            pred_items = [_strip_assignment(p) for p in pred_items]
        elif not pred_group or (pred_group[0], pred_group[2]) != (gold_group[0], gold_group[2]):
            return False
        if len(pred_items) != len(gold_items):
            return False
        verdicts = [compare_structured(p, g, atom) for p, g in zip(pred_items, gold_items)]
        return False if False in verdicts else None if None in verdicts else True
    if len(gold_items) > 1 or "\\pm" in gold:  # a solution list (bare, or a set \{...\})
        if pred_group and pred_group[0] == "{":
            pred_items = split_top_level(pred_group[1])
        elif pred_group and len(split_top_level(pred_group[1])) > 1:
            return False
        else:
            pred_items = split_top_level(pred)
        preds = _expand_plus_minus([_strip_assignment(p) for p in pred_items])
        golds = _expand_plus_minus([_strip_assignment(g) for g in gold_items])
        if (preds, golds) != ([pred], [gold]):  # else a leaf (a `\\pm` that does not expand): no recursion
            return _unordered_match(preds, golds, atom)
    if len(split_top_level(pred)) > 1 or len(pred_union) > 1:
        return False
    return atom(pred, gold)


def _fast_verdict(pred: str, gold: str) -> bool | None:
    """Fast path: True/False when string forms and plain rationals decide the pair, else None (the slow path must).

    The structure rules with `apo.answer_normalization.fast_atom` deciding the leaves.
    """
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:  # no regex work on junk-sized answers
        return pred.strip() == gold.strip()
    return compare_structured(pred, gold, fast_atom)


# --- slow path (runs in worker processes) ---

def _plain_to_latex(s: str) -> str:
    """Rewrite a plain-text expression (`pi/2`, `exp(16)-1`, `-2*pi`, `sqrt(3)`) as LaTeX.

    Only for strings without backslashes; this is a textual rewrite, never an evaluation.
    """
    if "\\" in s:
        return s
    s = s.replace("**", "^")
    for name, template in (("sqrt", "\\sqrt{%s}"), ("exp", "e^{%s}")):
        while True:
            m = re.search(rf"\b{name}\s*\(", s)
            if not m:
                break
            close = _match_parens(s, m.end() - 1)
            if close is None:
                break
            s = s[: m.start()] + template % s[m.end() : close - 1] + s[close:]
    s = re.sub(r"\^\s*\(([^()]*)\)", r"^{\1}", s)
    s = re.sub(r"\bpi\b", r"\\pi ", s)
    s = re.sub(r"\b(arcsin|arccos|arctan|sin|cos|tan|log|ln)\b", r"\\\1", s)
    return s.replace("*", "\\cdot ")


def _match_parens(s: str, open_index: int) -> int | None:
    """Index past the `)` closing the `(` at `open_index`, or None."""
    depth = 0
    for i in range(open_index, len(s)):
        depth += 1 if s[i] == "(" else -1 if s[i] == ")" else 0
        if depth == 0:
            return i + 1
    return None


def _to_sympy(answer: str):
    """Parse a LaTeX answer with math-verify's LaTeX extractor (no Python eval); the first result or None.

    The symbol `i` becomes the imaginary unit (MATH writes complex answers as `1+2i`).
    """
    import sympy
    from math_verify import LatexExtractionConfig, parse

    answer = re.sub(r"(?<=[\d)])\s*\((?=[\d.]+\))", r"\\cdot(", answer)  # `39(101)`: math-verify reads 39 + 101
    parsed = parse(f"${_plain_to_latex(answer)}$", extraction_config=[LatexExtractionConfig()], parsing_timeout=None)
    if not parsed or isinstance(parsed[0], str):
        return None
    expr = parsed[0]
    if isinstance(expr, sympy.Basic):
        imaginary = [symbol for symbol in expr.free_symbols if getattr(symbol, "name", None) == "i"]
        if imaginary:
            expr = expr.subs(imaginary[0], sympy.I)
    return expr


def _numbers_close(a, b) -> bool | None:
    """Equal numbers; None when either is not a number.

    Two exact values (no decimal point on either side: `2\\sqrt{3}`, `\\pi + 10^{-10}`) must be
    equal: exactly for rationals, else their difference is 0 to 50 significant digits (sympy's
    adaptive evaluation, so `2\\sqrt{3} + 10^{-10}` is not `2\\sqrt{3}`). A decimal against
    anything matches within a relative 1e-9 (about ten significant digits: `3.464101615` for
    `2\\sqrt{3}`, not `3.14159` for `\\pi`). Relative, not math-verify's absolute 6-decimal
    rounding, so 1/2004! != 1/2006!.
    """
    import sympy

    if not (isinstance(a, sympy.Expr) and isinstance(b, sympy.Expr)):
        return None
    if a.free_symbols or b.free_symbols or not (a.is_number and b.is_number):
        return None
    if a.has(sympy.zoo, sympy.nan) or b.has(sympy.zoo, sympy.nan):
        return False  # undefined (`\\frac{1}{0}`) is equal to nothing, itself included
    if a.has(sympy.oo, -sympy.oo) or b.has(sympy.oo, -sympy.oo):
        return bool(a == b)  # a relative tolerance would call oo close to -oo
    if a.is_rational and b.is_rational:  # exact: 2^{100}+1 != 2^{100}
        difference = (a - b).doit()
        if isinstance(difference, sympy.Rational):
            return bool(difference == 0)
    va, vb = sympy.N(a, 40), sympy.N(b, 40)
    if not (va.is_number and vb.is_number) or va.has(sympy.zoo, sympy.nan) or vb.has(sympy.zoo, sympy.nan):
        return None
    scale = max(abs(va), abs(vb))
    if scale == 0:
        return True
    if not (a.has(sympy.Float) or b.has(sympy.Float)):  # both exact: equal, not merely close
        difference = sympy.N(a - b, 50)
        return bool(difference.is_number and abs(difference) <= sympy.Float("1e-45", 50) * scale)
    return bool(abs(va - vb) <= sympy.Float("1e-9", 40) * scale)


def _undefined_expr(expr) -> bool:
    """True for a sympy result that holds `zoo` (a division by zero) or `nan`."""
    import sympy

    return isinstance(expr, sympy.Basic) and expr.has(sympy.zoo, sympy.nan)


def _equations_equivalent(pred: str, gold: str) -> bool:
    """`L1 = R1` and `L2 = R2` describe the same set: `L1 - R1` is a nonzero constant times `L2 - R2`.

    `2x+4y-3=0` and `y=-\\frac{1}{2}x+\\frac{3}{4}` (factor -4) are the same line; `y=x+4` and
    `x+y=4` are not.
    """
    import sympy

    sides = [_to_sympy(side) for side in split_top_level(pred, "=") + split_top_level(gold, "=")]
    if any(side is None or not isinstance(side, sympy.Expr) or _undefined_expr(side) for side in sides):
        return False
    pred_zero, gold_zero = sides[0] - sides[1], sides[2] - sides[3]
    if gold_zero == 0 or pred_zero == 0 or not (pred_zero.free_symbols and gold_zero.free_symbols):
        return False
    ratio = sympy.simplify(pred_zero / gold_zero)
    return bool(ratio.is_number and ratio != 0 and ratio.is_finite)


def _slow_atom(pred: str, gold: str) -> bool:
    """Symbolic equivalence of two normalised leaves via math-verify (run under a timeout)."""
    from math_verify import verify

    fast = fast_atom(pred, gold)
    if fast is not None:
        return fast
    if len(split_top_level(pred, "=")) == 2 and len(split_top_level(gold, "=")) == 2:
        return _equations_equivalent(pred, gold)
    gold_expr, pred_expr = _to_sympy(gold), _to_sympy(pred)
    if gold_expr is None or pred_expr is None or _undefined_expr(gold_expr) or _undefined_expr(pred_expr):
        return False
    numeric = _numbers_close(gold_expr, pred_expr)
    if numeric is not None:
        return numeric
    return bool(verify(gold_expr, pred_expr, timeout_seconds=None))


def slow_equivalent(pred: str, gold: str) -> bool:
    """Full equivalence of two extracted answers with sympy leaves (may be slow: run under a timeout)."""
    return bool(compare_structured(pred, gold, _slow_atom))


# --- single pair and batch API ---

def grade(response: str, gold: str) -> bool:
    """True when the final answer of `response` is equivalent to the MATH gold answer `gold`.

    `gold` is an `answer` field (no `\\boxed`); `response` is a full response or a bare
    answer. Pairs the fast path cannot decide go through the shared worker pool under a 2 s
    timeout (a timeout grades False).

    >>> grade("The final answer is $\\\\boxed{(2, 4)}$.", "(2,4)")
    True
    """
    return grade_many([response], [gold])[0]


@dataclass
class GradingReport:
    """Counts accumulated by `grade_many` across calls, for logging next to rewards."""

    graded: int = 0
    correct: int = 0
    timeouts: int = 0
    errors: int = 0
    no_answer: int = 0


def grade_many(responses: Sequence[str], golds: Sequence[str], *, timeout: float = 2.0, num_workers: int = 2,
               report: GradingReport | None = None) -> list[bool]:
    """Grade each (response, gold) pair; the same verdicts as `grade`, in order.

    Fast-path pairs are decided in this process; the rest run in a lazily started pool of
    `num_workers` worker processes (reused across calls, killed at exit), each pair under a
    `timeout`-second wall-clock limit. A pair that times out (its worker is killed and
    replaced) or raises is graded False and counted in `report`. Raises ValueError when the
    lengths differ.
    """
    if len(responses) != len(golds):
        raise ValueError(f"grade_many: {len(responses)} responses but {len(golds)} golds; pass one gold per response")
    if timeout <= 0 or num_workers < 1:
        raise ValueError(f"grade_many: timeout={timeout} must be > 0 and num_workers={num_workers} >= 1")
    report = report if report is not None else GradingReport()
    verdicts: list[bool] = [False] * len(responses)
    slow: list[tuple[int, str, str]] = []
    for index, (response, gold) in enumerate(zip(responses, golds)):
        if not isinstance(response, str) or not isinstance(gold, str):
            raise TypeError(f"grade_many: pair {index} is ({type(response).__name__}, {type(gold).__name__}); "
                            f"responses and golds must be str (decode token ids before grading)")
        report.graded += 1
        answer = extract_answer(response)
        if answer is None:
            report.no_answer += 1
            continue
        gold_clean = sanitize_text(gold)
        try:
            verdict = _fast_verdict(answer, gold_clean)
        except Exception:  # a rule that fails on this pair fails in the worker too: counted there as an error
            verdict = None
        if verdict is None:
            slow.append((index, answer, gold_clean))
        else:
            verdicts[index] = verdict
    if slow:
        outcomes = grading_pool.shared_pool(num_workers).run([(a, g) for _, a, g in slow], timeout)
        for (index, _, _), outcome in zip(slow, outcomes):
            if outcome == "timeout":
                report.timeouts += 1
            elif outcome == "error":
                report.errors += 1
            else:
                verdicts[index] = outcome
        failed = outcomes.count("timeout") + outcomes.count("error")
        if failed:
            logger.warning("grade_many: %d of %d pairs graded False after a %.1f s timeout or a worker error "
                           "(%d timeouts, %d errors)", failed, len(responses), timeout,
                           outcomes.count("timeout"), outcomes.count("error"))
    report.correct += sum(verdicts)
    return verdicts


# --- worker entry point (runs in apo.grading_pool's subprocesses) ---

_WARM_UP_PAIRS = [("2\\sqrt{3}", "\\sqrt{12}"), ("(x+1)^2", "x^2+2x+1"), ("\\log_2 8", "3"),
                  ("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
                   "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}"),
                  ("y=2x+1", "y = 1+2x"), ("\\sin(\\frac{\\pi}{6})", "0.5")]


def _worker_main() -> None:
    """Worker loop: one JSON request per stdin line -> one JSON verdict per stdout line."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    # warm-up: the first parse/verify pays ~1.5 s of lazy imports, which must not count
    # against the first real pair's timeout
    for pred, gold in _WARM_UP_PAIRS:
        slow_equivalent(pred, gold)
    sys.stdout.write('{"ready": true}\n')
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        limit_cpu_seconds(60)
        try:
            reply = {"verdict": slow_equivalent(request["pred"], request["gold"])}
        except Exception as error:  # reported to the caller and counted as an error there
            reply = {"error": f"{type(error).__name__}: {error}"[:300]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
