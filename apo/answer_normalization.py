"""Normal forms of final answers and the exact rules that decide most pairs: the grader's fast path.

`apo.grading` compares two extracted answers by the gold's structure (tuples, intervals,
unions, solution lists) and decides each leaf with this module's rules first, in the
calling process, without sympy and without `eval`:

  - `normalize_answer(answer) -> str`: the canonical string form for exact comparison
    (Hendrycks/PRM800K style): `\\text{}` unwrapped; `\\left`/`\\right`, spacing commands,
    whitespace, `^\\circ`, `\\$`, `\\%`, trailing unit words and unit groups
    (`\\mathrm{~km}`), a leading label (`x =`, `f(x) =`, `x \\in`) and thousands separators
    dropped; `dfrac`/`tfrac` -> `frac`, `\\frac12` -> `\\frac{1}{2}`; a column vector becomes
    a tuple, an inequality in one variable an interval (`x \\le 3` -> `(-\\infty,3]`) and
    `or` of them a union; a choice letter `(C)` -> `C`; text answers lower-cased. Two answers
    with the same normal form are equal.
  - `fast_atom(pred, gold) -> bool | None` on two normalised leaves: True/False when the
    string and exact-rational rules decide the pair (the same normal form; two plain
    rationals, equal exactly or "close as written": a gold in scientific notation matches
    any number that rounds to it, a decimal of at least 8 significant digits the fraction
    it is cut or rounded from; a number word against a number; a text answer; a clock
    time), None when the slow path (sympy via math-verify, in `apo.grading`'s worker
    processes) must decide. `apo.grading._fast_verdict` applies it to every leaf of a pair
    and returns the same three-way verdict for the whole pair.
  - the helpers `apo.grading`'s structure rules share: `split_top_level`, `as_rational`,
    `drop_spaces`, `trailing_unit`, `LABEL_NAME`, and `MAX_ANSWER_CHARS` (longer answers
    are compared as stripped strings, with no regex work on them).

Nothing here imports sympy, math-verify or `apo.grading`.

>>> normalize_answer("x = \\\\left( 3, \\\\dfrac{1}{2} \\\\right)")
'(3,\\\\frac{1}{2})'
>>> fast_atom("0.5", "\\\\frac{1}{2}"), fast_atom("\\\\frac{1}{3}", "\\\\frac{1}{2}")
(True, False)
>>> fast_atom("2\\\\sqrt{3}", "\\\\sqrt{12}") is None  # for the slow path
True
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

from apo.answer_extraction import unwrap_text

MAX_ANSWER_CHARS = 400  # longer answers are not cached, and apo.grading compares them as stripped strings

# --- normal form: normalize_answer ---

_UNIT_WORDS = (  # bare words; inside \text{} the short `m`, `in` are units too
    "degrees?|cm|centimeters?|meters?|km|kilometers?|inches|inch|feet|foot|ft|yards?|miles?|units?|"
    "square units|sq units|square feet|square inches|square meters|cents?|dollars?|hours?|minutes?|seconds?|"
    "days?|weeks?|years?|mph|pounds?|ounces?|grams?|kg|liters?|gallons?|students?|people|ways|points?|"
    "marbles?|balls?"
)
_TRAILING_UNITS_RE = re.compile(  # after a number, any `\text{ words}` label counts: `18 \text{ integers}`
    rf"(?<=[0-9}}\s])\s*(?:\\(?:text|mbox|mathrm)\{{\s*"
    rf"(?:{_UNIT_WORDS}|m|in|(?!and\b|or\b)[a-zA-Z]+(?: [a-zA-Z]+){{0,2}})"
    rf"(?:\^\d)?\s*\}}|(?:{_UNIT_WORDS})|(?<=\d )(?!and\b|or\b)[a-zA-Z]{{3,}}(?: [a-zA-Z]+){{0,2}})"
    r"(?:\^\{?\d\}?)?\s*$")


def trailing_unit(answer: str) -> str | None:
    """The unit word an answer ends in (`7\\text{ hours}` -> `hour`), singular, or None."""
    match = _TRAILING_UNITS_RE.search(answer.strip().rstrip("."))
    if not match:
        return None
    word = re.sub(r"\\(?:text|mbox|mathrm)|[{}\s^\d]", "", match.group(0)).lower()
    return "inch" if word == "inches" else word.removesuffix("s")


def _fix_fracs(s: str) -> str:
    r"""`\frac12` -> `\frac{1}{2}`, `\frac1{x}` -> `\frac{1}{x}` (Hendrycks' _fix_fracs)."""
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    return re.sub(r"\\sqrt\s*(\d+|[a-zA-Z])", r"\\sqrt{\1}", s)


def normalize_answer(answer: str) -> str:
    """Canonical string form of an answer for exact comparison (no sympy).

    Unwraps `\\text{}`, drops `\\left`/`\\right`, `\\!`-style spacing and all whitespace,
    `^\\circ`, `\\$`, `\\%`, trailing unit words, a leading `x =` / `x \\in`; `dfrac`/`tfrac` ->
    `frac`; thousands separators in plain integers; a single choice letter `(C)` -> `C`.
    Text-only answers are lower-cased.

    >>> normalize_answer("\\\\left( 3, \\\\dfrac{1}{2} \\\\right)")
    '(3,\\\\frac{1}{2})'
    >>> normalize_answer("\\\\text{(C)}")
    'C'
    """
    if len(answer) > MAX_ANSWER_CHARS:
        return _normalize(answer)
    return normalize_cached(answer)


@functools.lru_cache(maxsize=16_384)  # golds repeat across a batch's samples; answers are short
def normalize_cached(answer: str) -> str:
    """`normalize_answer` memoised, for answers up to MAX_ANSWER_CHARS (`.cache_clear()` for cold timings)."""
    return _normalize(answer)


def _normalize(answer: str) -> str:
    s = _line_breaks(answer).strip().rstrip(".").strip()
    s = re.sub(r"^(?:\\approx|\\sim(?![a-zA-Z])|\u2248)\s*", "", s)  # `\approx 10`: the value it states
    s = s.replace("~", " ").replace("\u2264", "\\le ").replace("\u2265", "\\ge ").replace("\u2260", "\\ne ")
    s = s.replace("<=", "\\le ").replace(">=", "\\ge ")
    s = re.sub(r"(?<=[a-zA-Z\s])!=", "\\\\ne ", s)  # not `5!=120`
    s = re.sub(r"\b(?:np|numpy|math|sympy)\.(?=[a-z])", "", s)  # Minerva golds: `np.arcsin(10/13)`
    s = split_top_level(s, "\\approx")[0].strip() or s  # `\frac{1}{3} \approx 0.333` -> the exact value
    s = s.replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\:", "")
    s = s.replace("\\quad", "").replace("\\qquad", "")
    s = re.sub(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])", "", s)
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(sin|cos|tan|cot|sec|csc)\s*\(?\s*(\d+(?:\.\d+)?)\s*(?:\^\s*\{?\s*\\circ\s*\}?|°)\s*\)?",
               r"\\\1(\\frac{\2\\pi}{180})", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("°", "").replace("\\degree", "")
    s = _REALS_RE.sub(r"(-\\infty,\\infty)", s.strip())
    s = re.sub(r"^\\mathbb\s*\{?R\}?\s*(?:\\setminus|\\backslash|-)\s*\\\{([^{}]+?)\\\}$",
               r"(-\\infty,\1)\\cup(\1,\\infty)", s)
    # a leading "the answer is": \boxed{\text{The answer is } 7}
    s = re.sub(r"(?i)^(?:\\text\{\s*)?(?:the )?(?:final )?answer(?: is)?\s*:?\s*\}?\s*", "", s)
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = _TRAILING_UNITS_RE.sub("", s)
    s = _strip_unit_groups(s)
    s = unwrap_text(s)
    s = _fix_fracs(s)
    s = _column_vector_to_tuple(s)
    s = _LEADING_LABEL_RE.sub("", s)
    s = _inequalities_or_to_union(s)
    s = re.sub(r"(?<=[\w}\)\]])\s*,?\s*\b(?:and|or)\b\s*(?=[-\w\\(\[])", ",", s)
    s = drop_spaces(s)
    s = re.sub(r"(?i)(?<=\d)([ap])\.?m\.?$", lambda m: m.group(1).lower() + "m", s)  # 1:03PM -> 1:03pm
    s = _inequality_to_interval(s)
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    choice = re.fullmatch(r"\(?([A-Ea-e])\)", s) or re.fullmatch(r"\(([A-Ea-e])\)?", s)
    if choice:
        s = choice.group(1).upper()
    s = s.rstrip(".")
    if re.fullmatch(r"[A-Za-z][A-Za-z' ]+", s):
        s = s.lower()
    return s


# the whole real line: `\mathbb{R}`, `x \in \mathbb{R}`, "all real numbers", "any real number", "all reals"
_REALS_RE = re.compile(r"^(?:[a-z]\s*\\in\s*)?\\mathbb\s*\{?R\}?$|"
                       r"^(?:\\text\{\s*)?(?:all|any|every)\s+real\s*(?:numbers?|values?|s)?(?:\s+[a-z])?\s*\}?$",
                       re.IGNORECASE)


def _line_breaks(s: str) -> str:
    """A line break between two values at the top level separates them like a comma (a gold `5\\n6` is
    `5, 6`, not `56`); anywhere else (inside braces or an environment, after an operator) it is a space."""
    if "\n" not in s.strip():
        return s.replace("\n", " ")
    out, depth, environments = [], 0, 0
    for index, ch in enumerate(s):
        depth += 1 if ch in "{([" else -1 if ch in "})]" else 0
        if s.startswith("\\begin", index):
            environments += 1
        elif s.startswith("\\end", index):
            environments -= 1
        if ch == "\n":
            before, after = "".join(out).rstrip(), s[index + 1:].lstrip()
            separates = (depth == 0 and environments == 0 and before and after
                         and re.search(r"[\w)\]}]$", before) and re.match(r"[-\w(\[\\]", after)
                         and not before.endswith("\\\\"))
            out.append(", " if separates else " ")
        else:
            out.append(ch)
    return "".join(out)


# words that qualify, hedge or negate an answer: never a unit, never dropped (`10 \text{ or more}`)
_QUALIFIER_WORDS = frozenset(
    "not no nor never maybe perhaps probably possibly likely unlikely approximately approx about around roughly "
    "nearly almost least most more less fewer greater larger smaller bigger higher lower than over under above "
    "below is are was were isn't wrong incorrect false guess ish so give take either unless if else otherwise "
    "except plus minus up until or".split())
_NUMBER_WORD_RE = re.compile(r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
                             r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|"
                             r"hundred|thousand|million)\b", re.IGNORECASE)


_QUALIFIER_RE = re.compile(r"(?<![A-Za-z])(?:" + "|".join(sorted(_QUALIFIER_WORDS, key=len, reverse=True))
                           + r")(?![A-Za-z])|" + _NUMBER_WORD_RE.pattern, re.IGNORECASE)


def qualifier_words(answer: str) -> frozenset[str]:
    """The qualifying words of an answer (`10 \\text{ or more}` -> {`or`, `more`}), lower case.

    Words of LaTeX commands do not count (`\\approx`, `\\le`); `or` counts only next to a word
    that is not an answer value (`10 or more`, not `x < 0 or x > 4`, `2 or 3`); a number word
    counts when the answer also has a digit (`10 \\text{ or eleven}`, not `eleven`).
    """
    if _QUALIFIER_RE.search(answer) is None:  # no candidate word at all: most answers, decided in one scan
        return frozenset()
    return _qualifier_words(answer) if len(answer) > MAX_ANSWER_CHARS else _qualifier_words_cached(answer)


@functools.lru_cache(maxsize=16_384)
def _qualifier_words_cached(answer: str) -> frozenset[str]:
    return _qualifier_words(answer)


def _qualifier_words(answer: str) -> frozenset[str]:
    text = re.sub(r"\\[A-Za-z]+", " ", unwrap_text(answer)).lower()
    text = re.sub(r"^\s*(?:the )?(?:final )?answer(?: is)?\b", "", text)  # `\\text{The answer is } 7`
    words = set(re.findall(r"[a-z]+(?:'[a-z]+)?", text)) & _QUALIFIER_WORDS
    if "or" in words and not re.search(r"\bor\s+(?:[a-z]+\s+)?(?:" + "|".join(sorted(_QUALIFIER_WORDS - {"or"}))
                                       + r")\b|\b(?:give|either)\s+or\b|\bor\s*$", text):
        words.discard("or")
    if re.search(r"\d", answer) and _NUMBER_WORD_RE.search(text):
        words.add("number word")
    return frozenset(words)


LABEL_NAME = r"(?:\\angle\s*)?(?:[a-zA-Z](?:_\{?\w+\}?)?\s*){1,4}"  # x, x_1, AB, \angle BEA_{1}
# a label in front of the value: `x =`, `V_1:V_2 =`, `(a, b) =`, `f(x) =`, `x \in`
_LEADING_LABEL_RE = re.compile(rf"^\s*(?:{LABEL_NAME}(?::\s*{LABEL_NAME})*|\([a-zA-Z,\s]+\)|[a-zA-Z]\s*\([^()=]*\))"
                               r"\s*(?:=|\\in)\s*(?=\S)")
# a unit after a number: `\mathrm{~km} \mathrm{~s}^{-1}`, `\text{ cm}^2`, `\text{ erg/s}`
# (not `\text{ and }`, `\mathrm{i}`)
_UNIT_GROUP_RE = re.compile(r"(?<=[\d}).\s])\s*\\(?:mathrm|text|mbox|rm|textrm)\s*"
                            r"\{(?!\s*(?:and|or|[eid]|[aApP]\.?[mM]\.?)\s*\})"
                            r"[\sA-Za-z/.\-\\]*\}\s*(?:\^\s*\{?\s*-?\d+\s*\}?)?\s*$")


def _strip_unit_groups(s: str) -> str:
    """Drop up to four trailing unit groups after a number (`4.5 \\mathrm{~erg} \\mathrm{~s}^{-1}` -> `4.5`)."""
    for _ in range(4):
        new = _UNIT_GROUP_RE.sub("", s)
        if new == s or not new.strip():
            return s
        s = new
    return s


def _inequalities_or_to_union(s: str) -> str:
    """`x < 0 or x > 4` -> `(-\\infty,0)\\cup(4,\\infty)` when every piece is an inequality in one variable."""
    pieces = re.split(r"\s*,?\s*\bor\b\s*", s)
    if len(pieces) < 2:
        return s
    intervals = [_inequality_to_interval(drop_spaces(piece)) for piece in pieces]
    if all(interval != drop_spaces(piece) and interval[:1] in "([" for interval, piece in zip(intervals, pieces)):
        return "\\cup".join(intervals)
    return s


_LESS = {"<": ")", "\\lt": ")", "\\le": "]", "\\leq": "]", "\\leqslant": "]"}
_GREATER = {">": "(", "\\gt": "(", "\\ge": "[", "\\geq": "[", "\\geqslant": "["}
_FLIPPED = {"<": ">", ">": "<", "\\lt": "\\gt", "\\gt": "\\lt", "\\le": "\\ge", "\\ge": "\\le", "\\leq": "\\geq",
            "\\geq": "\\leq", "\\leqslant": "\\geqslant", "\\geqslant": "\\leqslant"}


def _inequality_to_interval(s: str) -> str:
    """`-2\\lex\\le7` -> `[-2,7]`, `x>3` -> `(3,\\infty)`, `x\\le3` -> `(-\\infty,3]` (spaces removed).

    Sides may be swapped (`5\\le x` is `x\\ge5`, `3>x>1` is `(1,3)`); `x\\ne a` is the line
    without `a`.
    """
    op = r"(<|>|(?:\\lt|\\leqslant|\\leq|\\le|\\gt|\\geqslant|\\geq|\\ge)(?![a-zA-Z]))"
    m = re.fullmatch(rf"([^<>=]+?){op}\s*[a-zA-Z]\s*{op}([^<>=]+)", s)
    if m and m.group(2) in _LESS and m.group(3) in _LESS:
        return f"{'[' if _LESS[m.group(2)] == ']' else '('}{m.group(1)},{m.group(4)}{_LESS[m.group(3)]}"
    if m and m.group(2) in _GREATER and m.group(3) in _GREATER:  # b > x > a  ->  (a, b)
        return f"{_GREATER[m.group(3)]}{m.group(4)},{m.group(1)}{')' if _GREATER[m.group(2)] == '(' else ']'}"
    m = re.fullmatch(rf"[a-zA-Z]\s*{op}([^<>=]+)", s)
    if m and m.group(1) in _LESS:
        return f"(-\\infty,{m.group(2)}{_LESS[m.group(1)]}"
    if m and m.group(1) in _GREATER:
        return f"{_GREATER[m.group(1)]}{m.group(2)},\\infty)"
    m = re.fullmatch(rf"([^<>=]+?){op}\s*([a-zA-Z])", s)
    if m and not re.fullmatch(r"[a-zA-Z]", m.group(1)):  # `5\le x` -> `x\ge5` (not `x<y`)
        return _inequality_to_interval(f"{m.group(3)}{_FLIPPED[m.group(2)]}{m.group(1)}")
    m = re.fullmatch(r"[a-zA-Z](?:\\neq|\\ne)([^<>=]+)", s)
    if m:
        return f"(-\\infty,{m.group(1)})\\cup({m.group(1)},\\infty)"
    return s


def _column_vector_to_tuple(s: str) -> str:
    """`\\begin{pmatrix} 3 \\\\ -1 \\end{pmatrix}` -> `(3,-1)` (a column vector is an ordered tuple)."""
    m = re.fullmatch(r"\s*\\begin\{[pbBv]?matrix\}(.*)\\end\{[pbBv]?matrix\}\s*", s, re.DOTALL)
    if m and "&" not in m.group(1) and "\\begin" not in m.group(1):
        return "(" + ",".join(part.strip() for part in m.group(1).split("\\\\")) + ")"
    return s


def drop_spaces(s: str) -> str:
    """Remove whitespace, keeping one space where it ends a command (`\\cos x` stays `\\cos x`)."""
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x01", s)
    return re.sub(r"\s+", "", s).replace("\x01", " ")


def split_top_level(s: str, separator: str = ",") -> list[str]:
    """Split `s` at `separator` outside (), [], {} (`\\{`/`\\}` count as brackets)."""
    parts, depth, current = [], 0, []
    i = 0
    while i < len(s):
        if s.startswith(separator, i) and depth == 0:
            parts.append("".join(current))
            current = []
            i += len(separator)
            continue
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


# --- exact leaf comparison: fast_atom ---

def as_rational(s: str) -> Fraction | None:
    """A normalised answer that is a plain integer, decimal or fraction of integers, else None."""
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        numerator, denominator = int(m.group(2)), int(m.group(3))
        if denominator == 0:
            return None
        value = Fraction(numerator, denominator)
        return -value if m.group(1) else value
    m = re.fullmatch(r"(-?)(\d+)\\frac\{(\d+)\}\{(\d+)\}", s)
    if m and int(m.group(3)) < int(m.group(4)):  # a mixed number, as MATH writes them: `15\frac{39}{40}`
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -value if m.group(1) else value
    m = re.fullmatch(r"(-?\d+\.?\d*)/(-?\d+\.?\d*)", s)  # `3/4`, Minerva's `-1./3`
    if m and len(s) < 60 and Fraction(m.group(2)) != 0:
        return Fraction(m.group(1)) / Fraction(m.group(2))
    scientific = _scientific(s)
    if scientific is not None:
        return scientific[0]
    if re.fullmatch(r"-?(?:\d+\.?\d*|\.\d+)", s) and len(s) < 60:
        return Fraction(s)
    m = re.fullmatch(r"(-?)(\d*)\.(\d*)\\overline\{(\d{1,30})\}", s)
    if m and len(s) < 80:  # repeating decimal 0.1\overline{6} = 1/6
        whole, fixed, repeat = m.group(2) or "0", m.group(3), m.group(4)
        value = int(whole) + Fraction(int(fixed or "0"), 10 ** len(fixed))
        value += Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
        return -value if m.group(1) else value
    return None


_NUMBER_WORDS = {word: value for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}


# `4.5e33`, `4.5\times10^{33}`, `10^{-5}`; a mantissa needs its `e` or `\times` (`210^{3}` is 210 cubed)
_SCIENTIFIC_RE = re.compile(r"(-?)(?:(\d+(?:\.\d*)?|\.\d+)(?:[eE]|(?:\\times|\\cdot|\*)10\^\{?)|10\^\{?)"
                            r"([+-]?\d{1,3})\}?")


def _scientific(s: str) -> tuple[Fraction, Fraction] | None:
    """(value, half a unit in the last written digit) of `4.5e33`, `4.5\\times10^{33}`, `10^{-5}`; else None."""
    m = _SCIENTIFIC_RE.fullmatch(s)
    if not m:
        return None
    mantissa = m.group(2) or "1"
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    exponent = int(m.group(3))
    value = Fraction(mantissa) * Fraction(10) ** exponent
    return (-value if m.group(1) else value), Fraction(10) ** (exponent - decimals) / 2


_LONG_DECIMAL_RE = re.compile(r"-?(?:0?\.0*|[1-9]\d*\.)(\d*)")
_LONG_DECIMAL_DIGITS = 8  # significant digits from which a decimal is a printed fraction, not a rounding


def _close_as_written(pred: str, r_pred: Fraction, gold: str, r_gold: Fraction) -> bool:
    """Unequal rationals that still match as written.

    A gold in scientific notation (Minerva's `4.5e33`) is a rounded value: it matches any
    number that rounds to it (`4.48\\times10^{33}`). A decimal of eight or more significant
    digits against a fraction (`0.0833333333333333` for `\\frac{1}{12}`) matches when it is the
    fraction cut or rounded at its last place (differs by less than one unit there); shorter
    decimals (`0.142857` for `\\frac{1}{7}`) are roundings and must be exact.
    """
    scientific = _scientific(gold)
    if scientific is not None and abs(r_pred - r_gold) <= scientific[1]:
        return True
    for decimal, value, other, other_value in ((pred, r_pred, gold, r_gold), (gold, r_gold, pred, r_pred)):
        m = _LONG_DECIMAL_RE.fullmatch(decimal)
        if not m or not re.search(r"\\frac|/", other):
            continue
        places = len(decimal.split(".")[1])
        significant = len(decimal.lstrip("-").replace(".", "").lstrip("0"))
        scaled = abs(other_value) * 10**places  # the fraction cut, or rounded half up, at the decimal's last place
        cut_or_rounded = {math.floor(scaled), math.floor(scaled + Fraction(1, 2))}
        same_sign = (value < 0) == (other_value < 0)
        if significant >= _LONG_DECIMAL_DIGITS and same_sign and abs(value) * 10**places in cut_or_rounded:
            return True
    return False


def fast_atom(pred: str, gold: str) -> bool | None:
    """Decide one normalised atom pair without sympy when certain, else None.

    True/False when the string and exact-rational rules decide it; None when the slow path must.
    """
    if pred == gold:
        return True
    r_pred, r_gold = as_rational(pred), as_rational(gold)
    if r_pred is not None and r_gold is not None:
        return r_pred == r_gold or _close_as_written(pred, r_pred, gold, r_gold)
    for word_side, number_side in ((pred, gold), (gold, pred)):  # `four` for `4`
        if word_side.casefold() in _NUMBER_WORDS and as_rational(number_side) is not None:
            return as_rational(number_side) == _NUMBER_WORDS[word_side.casefold()]
    if _is_word(gold) or _is_word(pred):
        return pred.casefold() == gold.casefold()
    clock = r"\d{1,2}:\d{2}(?:[ap]m)?"
    if re.fullmatch(clock, pred) or re.fullmatch(clock, gold):  # sympy would misread `1:03am`
        return pred == gold
    return None


def _is_word(s: str) -> bool:
    """A text answer such as `east`, `Navin`, `odd` (letters only, at least two)."""
    return re.fullmatch(r"[A-Za-z][A-Za-z']{2,}", s) is not None and s not in ("pi", "infty")
