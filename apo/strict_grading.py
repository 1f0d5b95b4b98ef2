"""The official A*-PO reward, `boxed_exact`, and the one place a reward rule is applied.

A*-PO's official code (a verl fork, verl/utils/reward_score/math.py, adapted from the
EleutherAI lm-evaluation-harness Hendrycks MATH task) scores a response 1 when

  1. it ended with the EOS token (the decoded text ends with "<|endoftext|>"; here: the
     generation found an EOS, `truncated` is False; the EOS text is then appended, see below),
  2. its last box, found as that code finds it, holds a string, and
  3. strip_string(that string) == strip_string(gold), with MATH's `strip_string`
     normalisation (Hendrycks et al., 2021, math_equivalence.py): line breaks, `\\!`, `\\\\`,
     tfrac/dfrac -> frac, `\\left`/`\\right`, degrees, `\\$`, a trailing "\\text{ unit}", `\\%`,
     leading zeros of decimals, a short "k = " prefix, sqrt3 -> sqrt{3}, spaces, \\frac12 ->
     \\frac{1}{2}, "0.5" -> \\frac{1}{2}, a/b -> \\frac{a}{b}. When the normalisation raises on
     either side, the raw strings are compared.

The box is located as the official code does: when the text contains "\\boxed " (with a
space) the answer is what follows the last "\\boxed " up to the next "$"; otherwise the last
"\\boxed{...}" (brace-matched); a last "\\fbox{...}" is found but scores 0, since the
official `remove_boxed` accepts only "\\boxed".

The official reward scores `tokenizer.decode(prompt_ids + response_ids)` (verl/trainer/main_apo.py,
`RewardManager.__call__`, lines 72-73: special tokens kept), so its text ends in "<|endoftext|>"
(verl/utils/reward_score/math.py, `last_boxed_only_string`, line 108). A "\\boxed 5" read up to
the next "$" carries it when no "$" follows: "\\boxed 5<|endoftext|>" scores 0 there, and here
too, since `boxed_exact` appends `OFFICIAL_EOS_TEXT` to a finished response (the project decodes
without special tokens). The prompt in front changes no score: the recipe's prompt has no
"\\boxed " and its "\\boxed{}" (empty) stands in only for a response without a box, which
scores 0 either way against a gold answer, never empty (tests/test_strict_grading.py). The project's grader (apo/grading.py) is more
forgiving (equivalence up to notation); `evaluate_apo` reports both.

`rewards_by_rule` is what stage 1, stage 2, correction training and the trainer's held-out
checks call, so `A_PO_Config.reward_rule` means the same in each.

>>> boxed_exact("so the answer is $\\\\boxed{\\\\dfrac{1}{2}}$.", "\\\\frac12", truncated=False)
True
>>> boxed_exact("so the answer is $\\\\boxed{0.5}$", "\\\\frac{1}{2}", truncated=True)
False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apo.config import A_PO_Config
    from apo.grading import GradingReport

REWARD_RULES = ("grade", "boxed_exact")
OFFICIAL_EOS_TEXT = "<|endoftext|>"  # what the official reward's text ends with (Qwen2.5 base's EOS)


# --- the official box extraction ---

def official_last_boxed(text: str) -> str | None:
    """The last box of `text` as the official code finds it ("\\boxed 5", "\\boxed{...}" or
    "\\fbox{...}", the whole box string), or None when there is none or its braces never close."""
    if "\\boxed " in text:
        return "\\boxed " + text.split("\\boxed ")[-1].split("$")[0]
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for position in range(start, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return text[start:position + 1]
    return None


def official_box_content(box: str | None) -> str | None:
    """The content of a box string from `official_last_boxed`; None for no box and for an
    "\\fbox{...}" (which the official code fails to unwrap and scores 0)."""
    if box is None:
        return None
    if box.startswith("\\boxed "):
        return box[len("\\boxed "):]
    if box.startswith("\\boxed{") and box.endswith("}"):
        return box[len("\\boxed{"):-1]
    return None


# --- MATH's strip_string ---

def _fix_fracs(string: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}; a \\frac with fewer than two
    characters after it leaves the string unchanged; nothing after it raises IndexError."""
    pieces = string.split("\\frac")
    rebuilt = pieces[0]
    for piece in pieces[1:]:
        rebuilt += "\\frac"
        if piece[0] == "{":  # an empty piece (a \\frac at the end) raises IndexError, as in the original
            rebuilt += piece
            continue
        if len(piece) < 2:
            return string
        numerator, denominator, rest = piece[0], piece[1], piece[2:]
        if denominator != "{":
            rebuilt += "{" + numerator + "}{" + denominator + "}" + rest
        else:
            rebuilt += "{" + numerator + "}" + denominator + rest
    return rebuilt


def _fix_a_slash_b(string: str) -> str:
    """"3/4" -> \\frac{3}{4} when both sides are plain integers written canonically. A side that
    is not an integer ("x/2") raises ValueError, as in the original, where only the
    canonical-form assertion is caught: the comparison then falls back to the raw strings."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    numerator, denominator = int(parts[0]), int(parts[1])
    if string != f"{numerator}/{denominator}":
        return string
    return "\\frac{" + str(numerator) + "}{" + str(denominator) + "}"


def _remove_right_units(string: str) -> str:
    """Drop a trailing "\\text{ unit}"; more than one such span raises ValueError (as the
    original's assertion does, which sends the comparison to the raw strings)."""
    if "\\text{ " not in string:
        return string
    parts = string.split("\\text{ ")
    if len(parts) != 2:
        raise ValueError("more than one '\\text{ ' span")
    return parts[0]


def _fix_sqrt(string: str) -> str:
    """\\sqrt3 -> \\sqrt{3}; a \\sqrt at the very end raises IndexError, as in the original."""
    if "\\sqrt" not in string:
        return string
    pieces = string.split("\\sqrt")
    rebuilt = pieces[0]
    for piece in pieces[1:]:
        if piece[0] != "{":
            rebuilt += "\\sqrt{" + piece[0] + "}" + piece[1:]
        else:
            rebuilt += "\\sqrt" + piece
    return rebuilt


def strip_string(string: str) -> str:
    """MATH's answer normalisation (Hendrycks et al., 2021), step by step as the original.

    May raise (ValueError, IndexError) on odd inputs, as the original does; `is_equiv`
    then compares the raw strings.
    """
    # 1. formatting that never changes the value
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    # 2. units on the right, percent signs
    string = _remove_right_units(string)
    string = string.replace("\\%", "")  # the original's second replace ("\%") is the same string
    # 3. leading zeros of decimals: " .5" -> " 0.5", "{.5" -> "{0.5", ".5" -> "0.5"
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    # 4. a short "k = " prefix
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    # 5. sqrt3 -> sqrt{3}, no spaces, \frac12 -> \frac{1}{2}, 0.5 -> \frac{1}{2}, a/b -> \frac{a}{b}
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv(answer: str | None, gold: str | None) -> bool:
    """strip_string(answer) == strip_string(gold); the raw strings when normalising raises;
    False when either is None."""
    if answer is None or gold is None:
        return False
    try:
        return strip_string(answer) == strip_string(gold)
    except (ValueError, IndexError):
        return answer == gold


# --- the rule ---

def boxed_exact(text: str, gold: str, *, truncated: bool) -> bool:
    """The official A*-PO reward of one response: it ended with EOS (`truncated` False) and the
    last box of `text` + OFFICIAL_EOS_TEXT, the text the official code scores, holds `gold`
    after strip_string (module docstring)."""
    if truncated:
        return False
    return is_equiv(official_box_content(official_last_boxed(text + OFFICIAL_EOS_TEXT)), gold)


def rewards_by_rule(texts: Sequence[str], golds: Sequence[str], truncated: Sequence[bool], cfg: A_PO_Config,
                    report: GradingReport | None = None, *, grade_truncated: bool = False) -> list[bool]:
    """Correctness of each response under `cfg.reward_rule`.

    'grade': apo.grading.grade_many (per-pair timeout cfg.grading_timeout, cfg.grading_workers
    processes, counted in `report`), and a truncated response is wrong (A*-PO's reward 0)
    unless `grade_truncated` (accuracy checks that grade whatever was written, as
    evaluate_apo does); 'boxed_exact': `boxed_exact`, in process (string operations only,
    nothing can hang), which always requires the EOS. Raises ValueError for unaligned inputs
    or another rule.
    """
    if not len(texts) == len(golds) == len(truncated):
        raise ValueError(f"rewards_by_rule needs one gold and one truncated flag per text, got {len(texts)} texts, "
                         f"{len(golds)} golds, {len(truncated)} flags")
    if cfg.reward_rule == "boxed_exact":
        return [boxed_exact(text, gold, truncated=cut) for text, gold, cut in zip(texts, golds, truncated)]
    if cfg.reward_rule != "grade":
        raise ValueError(f"reward_rule={cfg.reward_rule!r} is not one of {', '.join(REWARD_RULES)}")
    from apo.grading import grade_many

    correct = grade_many(list(texts), list(golds), timeout=cfg.grading_timeout, num_workers=cfg.grading_workers,
                         report=report)
    return [bool(ok) and (grade_truncated or not cut) for ok, cut in zip(correct, truncated)]
