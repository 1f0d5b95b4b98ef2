"""Final answers from model responses: where a response states its answer, and what it is.

Used by `apo.grading` (which re-exports `extract_answer` and `last_boxed_content`) and by
anything that shows or records extracted answers.

Extraction (`extract_answer`): the response is first cut where the model went on past its
answer (a stray `<|im_end|>` / `<|im_start|>user` / `<|endoftext|>`, or a base model's next
few-shot "Problem:" / "Question:" / "Q:" after an answer), then the first rule that applies:
  1. the last top-level `\\boxed{...}` / `\\fbox{...}` / `\\boxed 2` (braces matched; a box cut
     off by truncation and an empty box are ignored; `\\boxed{185\\}` is read as 185); boxes
     separated only by spacing, `,`, `and`, `\\quad \\text{and} \\quad` or a label are one
     list (`$\\boxed{2}$ and $\\boxed{-3}$` -> `2, -3`; `a = \\boxed{5}` and `b = \\boxed{7}` ->
     `a = 5, b = 7`), unlabelled boxes joined by `or` are candidates (`4 \\text{ or } 5`, each
     of which must be the answer), otherwise the last box wins;
  2. the last explicit answer phrase: GSM8K's "#### 18" (on its own line or after the last
     sentence), Minerva's "The final answer is X. I hope it is correct.", PRM800K's
     "# Answer\\n\\nX", "the answer is X", "Answer: X", "Answer:" or "the answer is" followed
     by a display block `\\[ 9 \\]`; `$5$ or $6$` after the phrase is both candidates;
  3. a last sentence that concludes: "Therefore, the total is 34.", "So the probability is
     $\\frac{1}{6}$.", "Hence, $x = 6$.", "Therefore $x \\geq 5$ is the solution." (a
     concluding word starts it);
  4. a one-line response of at most 80 characters and two words is a bare answer;
  5. otherwise None: never "the last number in the text", which invents answers.
  Only the last `MAX_RESPONSE_CHARS` of a response are read; NUL bytes and lone surrogates
  are dropped.

The final answer is the response's last statement of one (grader 1.3, issue 27):
  - a phrase (rule 2) counts only when nothing follows it but delimiters, punctuation, "I hope
    it is correct.", a courtesy ("Hope this helps!", "The answer is correct.") or a labelled
    explanation ("Explanation: ...", "Note: ...") that states no other answer and takes
    nothing back; "the answer is 5" in a restated question, a "show that" or before more work
    is no answer;
  - a box is replaced by an answer phrase that ends the text after it ("... $\\boxed{5}$. The
    answer is 6." -> 6), and is no answer when its sentence negates it right before it ("It is
    not", "definitely not", "cannot be") or right after it ("$\\boxed{5}$ is wrong"), when the
    text after it takes it back ("Wait,", "Actually,", "I made a mistake", "this is not
    correct"), or when more than `MAX_TAIL_CHARS` (2,000) characters follow it (MATH's own
    solutions: 99.9% of the 12,500 have under 1,411 after their last box); anything shorter
    that does neither (a unit, a closing sentence, a note) is allowed.

>>> extract_answer("Final Answer: The final answer is 10. I hope it is correct.")
'10'
>>> extract_answer("She earns 9 * 2 = 18.\\n#### 18")
'18'
"""

from __future__ import annotations

import re

MAX_RESPONSE_CHARS = 12_000

_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)\b")


def sanitize_text(text: str) -> str:
    """Return `text` without NUL bytes or lone surrogates, cut to its last MAX_RESPONSE_CHARS."""
    text = text[-MAX_RESPONSE_CHARS:]
    text = text.replace("\x00", "")
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _closing_braces(text: str) -> dict[int, int]:
    """Map each `{` index to the index just past its matching `}`, in one pass (unclosed ones absent).

    Escaped characters (`\\{`, `\\}`, `\\\\`) are skipped, so `\\boxed{\\{1,2\\}}` works.
    """
    closing: dict[int, int] = {}
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closing[stack.pop()] = i + 1
        i += 1
    return closing


def _boxed_at(text: str, end: int, closing: dict[int, int]) -> tuple[str, int] | None:
    """Parse the box whose command ends at `end`: (content, index past it) or None."""
    j = end
    while j < len(text) and text[j] in " \t":
        j += 1
    if j < len(text) and text[j] == "{":
        close = closing.get(j)
        if close is None:
            return None
        return text[j + 1 : close - 1], close
    if j > end:  # `\boxed 2`: one token, ending at `$` or whitespace (MATH's README form)
        token = re.match(r"[^\s$]+", text[j:])
        if token:
            return token.group(0), j + token.end()
    return None


def last_boxed_content(text: str) -> str | None:
    """Content of the last top-level `\\boxed{...}`, `\\fbox{...}` or `\\boxed 2` in `text`.

    Braces are matched (nested boxes inside a box do not count as the last box); an unclosed
    box is ignored. Returns None when there is no complete box.

    >>> last_boxed_content("first $\\\\boxed{1}$, then $\\\\boxed{\\\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    >>> last_boxed_content("so $\\\\boxed 2$.")
    '2'
    """
    boxes = top_level_boxes(text)
    return boxes[-1][0] if boxes else None


def top_level_boxes(text: str) -> list[tuple[str, int, int]]:
    """Every complete top-level box in `text` as (content, start, end), in order.

    A box that only closes when an escaped `\\}` is read as `}` (`\\boxed{185\\}`, a common
    slip) counts, with that brace dropped; a box cut off by truncation does not.
    """
    boxes = []
    position = 0
    closing = _closing_braces(text) if "{" in text else {}
    loose_text, loose_closing = None, None  # `\}` read as `}`, built on first need
    while True:
        match = _BOX_RE.search(text, position)
        if match is None:
            return boxes
        parsed = _boxed_at(text, match.end(), closing)
        if parsed is None and "\\}" in text[match.end() :]:
            if loose_text is None:
                loose_text = text.replace("\\}", " }")  # same length: indices stay valid
                loose_closing = _closing_braces(loose_text)
            parsed = _boxed_at(loose_text, match.end(), loose_closing)
            parsed = (parsed[0].strip(), parsed[1]) if parsed else None
        if parsed is None:
            position = match.end()
            continue
        boxes.append((parsed[0], match.start(), parsed[1]))
        position = parsed[1]


_LABEL = r"(?:\\angle\s*)?[A-Za-z](?:_\{?\w+\}?)?"
# what may stand between boxes that together are one answer: spacing, delimiters, `and`,
# `\text{ and }`, and the next box's label (`x_1 = \boxed{1}, \quad x_2 = \boxed{4}`)
_BOX_JOIN_RE = re.compile(r"(?:[\s$,;]|\\[,;:! ]|\\q?quad\b|\\[\[\]()]|\\text\s*\{\s*(?:and|or)\s*\}|\b(?:and|or)\b|"
                          + _LABEL + r"\s*=)*")
_BOX_LABEL_RE = re.compile(r"(" + _LABEL + r")\s*=\s*(?:\$|\\\(|\\\[)?\s*$")


def _final_boxed_answer(text: str) -> tuple[str, int, int] | None:
    """(answer, start, end) of the last box, joined with the boxes before it that together form the answer.

    Boxes are joined when only spacing, math delimiters, `,`, `and` / `\\text{ and }` and
    labels stand between them: `$\\boxed{2}$ and $\\boxed{-3}$` -> `2, -3`,
    `\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}` -> `(2, 2), (6, 2)`. `or` between
    labelled boxes joins roots (`x = \\boxed{2}$ or $x = \\boxed{-5}`); between unlabelled boxes
    it gives candidates, joined by `ALTERNATIVES_SEPARATOR`, each of which must be the answer
    (MATH's one answer in two forms, `\\boxed{15\\frac{39}{40}},$ or $\\boxed{\\frac{639}{40}}`,
    passes; `\\boxed{4}` or `\\boxed{5}` does not). Empty boxes are ignored. Boxes in different
    sentences are not joined (a corrected answer replaces the earlier one). Labels of distinct
    names are kept (`a = 5, b = 7`, which matches the pair `(5, 7)`); repeated identical boxes
    count once.
    """
    boxes = [box for box in top_level_boxes(text) if box[0].strip()]  # `\boxed{}` states nothing
    if not boxes:
        return None

    def label(box):
        match = _BOX_LABEL_RE.search(text[max(0, box[1] - 40) : box[1]])
        return match.group(1).replace(" ", "") if match else None

    chosen = [boxes[-1]]
    alternatives = False
    for box in reversed(boxes[:-1]):
        between = text[box[2] : chosen[0][1]]
        if not _BOX_JOIN_RE.fullmatch(between):
            break
        alternatives |= bool(re.search(r"\bor\b", between)) and not (label(box) and label(chosen[0]))
        chosen.insert(0, box)
    contents = [_strip_delimiters(content) for content, _, _ in chosen]
    span = chosen[0][1], chosen[-1][2]
    if len(set(contents)) == 1:
        return contents[0], *span
    if alternatives:  # `\boxed{4}` or `\boxed{5}`: candidates, each of which must be the answer
        return ALTERNATIVES_SEPARATOR.join(contents), *span
    labels = [label(box) for box in chosen]
    if all(labels) and len(set(labels)) == len({re.sub(r"_.*", "", name) for name in labels}) == len(labels):
        return ", ".join(f"{name} = {content}" for name, content in zip(labels, contents)), *span
    return ", ".join(contents), *span


_PHRASE_WINDOW_CHARS = 3000  # answer phrases are searched in the tail only (bounded regex work)
_ANSWER_PATTERNS = [
    # GSM8K: "#### 18", on its own line or after the last sentence ("... 9 * 2 = 18. #### 18")
    re.compile(r"####[ \t]*(?P<ans>\$?-?[ \t]*\.?\d[^\n]{0,200}?)[ \t]*$", re.MULTILINE),
    # Minerva: "Final Answer: The final answer is X. I hope it is correct."
    re.compile(r"final answer is[:\s]*(?P<ans>.{1,500}?)\.?\s*I hope it is correct", re.IGNORECASE | re.DOTALL),
    # PRM800K: "# Answer\n\nX"
    re.compile(r"^#+\s*Answer\s*\n+(?P<ans>.{1,500}?)\s*$", re.IGNORECASE | re.MULTILINE),
    # "the answer is" followed by a display block on the next lines: "Thus the answer is\n\\[ M \\]"
    re.compile(r"(?:final answer|the answer)\s*(?:is|=)?\s*:?[ \t]*\n\s*(?P<ans>\\\[.{1,1000}?\\\]|\$\$.{1,1000}?\$\$)",
               re.IGNORECASE | re.DOTALL),
    re.compile(r"(?:final answer|the answer)\s*(?:is|=)\s*:?\s*(?P<ans>.{1,500}?)(?:\.\s|\.?\s*$|\n)", re.IGNORECASE),
    # "Answer:" / "**Final Answer:**" on its own line, then a display block: "\\[ 9 \\]" or "$$9$$"
    re.compile(r"^[ \t]*\**[ \t]*(?:final answer|answer)[ \t]*\**[ \t]*:?[ \t]*\**[ \t]*\n\s*"
               r"(?P<ans>\\\[.{1,500}?\\\]|\$\$.{1,500}?\$\$)", re.IGNORECASE | re.MULTILINE | re.DOTALL),
    re.compile(r"^\**[ \t]*(?:final answer|answer)[ \t]*\**[ \t]*:[ \t]*\**(?P<ans>[^\n]{1,500}?)\**[ \t]*$", re.IGNORECASE | re.MULTILINE),
]
# A last sentence that concludes ("Therefore, the total number of marbles is 34.", "So the
# probability is $\\frac{1}{6}$.", "Hence, $x = 6$."): a concluding word starts the sentence,
# and the value ends it. Without the concluding word ("Step 2: the area is 25.") it is not an
# answer: the last number in a text is never taken as one.
_CONCLUDING = r"(?:^|(?<=[.!?:]\s))\s*(?:therefore|thus|hence|so|in total|altogether|finally|in conclusion|overall)\b"
_CONCLUSION_PATTERNS = [
    re.compile(_CONCLUDING + r"[^\n]{0,200}?(?:\b(?:is|are|equals?|was|has|have|gets?)\b|=)\s*"
               r"(?P<ans>\$[^$\n]{1,200}\$|\\\(.{1,200}?\\\)|\\?\$?-?\d[\d,]*(?:\.\d+)?(?:[ \t]+[A-Za-z]+){0,2})\s*\.?\s*$",
               re.IGNORECASE),
    re.compile(_CONCLUDING + r"\s*,?\s*(?P<ans>\$[^$\n]{1,200}=[^$\n]{1,200}\$)\s*\.?\s*$", re.IGNORECASE),
    # the value first: "Therefore $x \geq 5$ is the solution.", "So $\{1, 2\}$ is the solution set."
    re.compile(_CONCLUDING + r"\s*,?\s*(?P<ans>\$[^$\n]{1,200}\$|\\\(.{1,200}?\\\))\s*(?:is|are)\s+the\s+"
               r"(?:final\s+|only\s+)?(?:answer|solution|solution set|result|value)s?\s*\.?\s*$", re.IGNORECASE),
]
# Where a response stops being the model's answer: a chat template's end or turn token, or a
# base model starting the next few-shot example ("\n\nProblem:", "\n\nQuestion:", "\n\nQ:")
# after it has stated an answer.
_STOP_TOKEN_RE = re.compile(r"<\|(?:im_end|im_start|endoftext|end_of_text|eot_id|end|user|assistant|eos)\|>|</s>")
_NEXT_EXAMPLE_RE = re.compile(r"\n[ \t]*\n[ \t]*(?:Problem|Question|Q)[ \t]*:", re.IGNORECASE)


def cut_continuation(text: str) -> str:
    """`text` up to where the model went on past its answer (stray turn tokens, a next example).

    Cut at the first chat stop token that follows some content (`<|im_end|>`, `<|im_start|>`,
    `<|endoftext|>`, `<|eot_id|>`, `</s>`, ...), then at the first blank-line `Problem:` /
    `Question:` / `Q:` (of the first three) before which an answer is already stated.

    >>> cut_continuation("so $\\\\boxed{4}$.<|im_end|>\\n<|im_start|>user\\nWhat is 1+1?")
    'so $\\\\boxed{4}$.'
    """
    for match in _STOP_TOKEN_RE.finditer(text):
        if text[: match.start()].strip():
            text = text[: match.start()]
            break
    for count, match in enumerate(_NEXT_EXAMPLE_RE.finditer(text)):
        if count == 3:
            break
        if _extract_from(sanitize_text(text[: match.start()])) is not None:
            return text[: match.start()]
    return text


def _strip_delimiters(answer: str) -> str:
    """Remove math delimiters, markdown bold and a final period around an extracted answer."""
    answer = answer.strip().strip("*").strip()
    answer = answer.rstrip(".").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
            answer = answer[len(left) : len(answer) - len(right)].strip()
    return answer.rstrip(".").strip()


def extract_answer(text: str) -> str | None:
    """The final answer of a model response, or None when it states none.

    Rules, first that applies: the last top-level box (`last_boxed_content`); the last
    explicit answer phrase ("The final answer is X", "# Answer\\n\\nX", "the answer is X",
    "Answer: X"); the whole response when it is one short line (a bare answer such as
    `(2, 4)` or `$\\frac{1}{2}$`). Math delimiters and a trailing period are stripped.

    >>> extract_answer("# Answer\\n\\n(2, 4)")
    '(2, 4)'
    >>> extract_answer("The answer is: (-1,6).")
    '(-1,6)'
    >>> extract_answer("I think it is 5 or maybe 7 and so on, we have many options here.") is None
    True
    """
    return _extract_from(sanitize_text(cut_continuation(text)))


ALTERNATIVES_SEPARATOR = " \\text{ or } "  # between candidate answers (`\boxed{4}` or `\boxed{5}`)
MAX_TAIL_CHARS = 2000  # text after the final answer beyond this is not a closing remark: no answer
# after the final answer: the response takes it back ("Wait, ...", "that is wrong", "I made a mistake")
_RETRACTION_RE = re.compile(r"(?:^|[.!?:;,]\s*|\n\s*)(?:hmm,?\s*)?"
                            r"(?:wait|actually|oops|scratch that|on second thought)\b|"
                            r"\b(?:I|we)\s+(?:have\s+)?made\s+(?:a\s+|an\s+)?(?:\w+\s+)?(?:mistake|error)|"
                            r"\b(?:this|that|it|which|the answer|my answer)\s+(?:is|was)\s+(?:\w+\s+)?"
                            r"(?:wrong|incorrect|not (?:correct|right|the answer))\b", re.IGNORECASE)
# right before the box: the sentence says it is not the answer ("It is not", "definitely not", "cannot be")
_NEGATED_RE = re.compile(r"(?:\b(?:not|never|cannot|no longer)|n't)\s+(?:[A-Za-z]+\s+){0,2}$", re.IGNORECASE)
_NEGATED_AFTER_RE = re.compile(r"[\s$)\]\\]*(?:(?:is|was|would be|seems|must be)\s+(?:\w+\s+)?"
                               r"(?:not|never|false|wrong|incorrect)\b|(?:isn't|wasn't)\b)", re.IGNORECASE)
_COURTESY_RE = re.compile(r"(?i)\b(?:I\s+)?hope\s+(?:it|this|that)\s+(?:is\s+correct|helps)\b[.!]*|"
                          r"[^.\n]{0,40}\b(?:the|my|this) answer is (?:correct|right)\b[.!]*|"
                          r"\bgood luck\b[.!]*|\bthanks?(?: you)?(?: for reading)?\b[.!]*|\blet me know if [^\n]{0,80}")
_EXPLANATION_RE = re.compile(r"[\[(*#\s]*(?:explanation|note|reason|reasoning|check|verification|justification)s?"
                             r"\s*\**\s*:", re.IGNORECASE)
_CLOSING_RE = re.compile(r"[\s$*.!)\]}]*(?:\\\]|\\\))?[\s$*.!)\]}]*")


def _extract_from(text: str) -> str | None:
    """`extract_answer` on a sanitised text that has already been cut at its continuation.

    The final answer is the response's last statement of one: a later answer phrase replaces
    a box, and a box (or phrase) that the text after it takes back, negates or buries under
    more than MAX_TAIL_CHARS of further text is no answer at all.
    """
    boxed = _final_boxed_answer(text)
    if boxed is not None:
        answer, start, end = boxed
        after = text[end:]
        if len(after) > 8 or re.search(r"[A-Za-z]", after):  # more than closing delimiters follows the box
            later = _final_phrase(after[-_PHRASE_WINDOW_CHARS:])
            if later is not None:
                return later
            if len(after) > MAX_TAIL_CHARS or _retracted(after):
                return None
        if _negated(text[max(0, start - 80) : start], after):
            return None
        return _strip_delimiters(answer) or None
    tail = text[-_PHRASE_WINDOW_CHARS:]
    for pattern in _ANSWER_PATTERNS:
        matches = [m for m in pattern.finditer(tail) if not _is_verdict(m.group("ans"))]
        if matches:
            return _phrase_answer(matches[-1].group("ans")) if _is_closing(tail[matches[-1].end():]) else None
    last_line = tail.strip().rsplit("\n", 1)[-1]
    for pattern in _CONCLUSION_PATTERNS:
        match = pattern.search(last_line[-400:])
        if match:
            return _phrase_answer(match.group("ans"))
    stripped = text.strip()
    if _looks_like_bare_answer(stripped):
        return _strip_delimiters(stripped) or None
    return None


def _final_phrase(after: str) -> str | None:
    """The answer of an explicit answer phrase that ends the text `after` a box, else None."""
    if "####" not in after and "answer" not in after.lower():
        return None
    for pattern in _ANSWER_PATTERNS:
        matches = [m for m in pattern.finditer(after) if not _is_verdict(m.group("ans"))]
        if matches and _is_closing(after[matches[-1].end():]):
            return _phrase_answer(matches[-1].group("ans"))
    return None


def _is_closing(rest: str) -> bool:
    """True when `rest`, the text after an answer phrase, says nothing more: delimiters,
    punctuation, "I hope it is correct.", a courtesy ("Hope this helps!"), or a labelled
    explanation ("Explanation:", "Note:", "Check:") that neither takes the answer back nor
    states another."""
    rest = _COURTESY_RE.sub("", rest)
    rest = rest[_CLOSING_RE.match(rest).end():].strip()
    if _EXPLANATION_RE.match(rest):  # "Answer: 9\n\nExplanation: ...": an explanation that states nothing new
        return (len(rest) <= MAX_TAIL_CHARS and not _retracted(rest)
                and not re.search(r"answer|####|\\boxed", rest, re.IGNORECASE))
    return not rest


_RETRACTION_HINT_RE = re.compile(r"wait|actual|oops|scratch|second thought|mistake|error|wrong|incorrect|not correct|"
                                 r"not right|not the answer", re.IGNORECASE)


def _retracted(after: str) -> bool:
    """The text after an answer takes it back (`_RETRACTION_RE`; a plain-word scan first, for speed)."""
    return _RETRACTION_HINT_RE.search(after) is not None and _RETRACTION_RE.search(after) is not None


def _negated(before: str, after: str) -> bool:
    """The sentence around a box says it is not the answer: `It is not $\\boxed{5}$`, `$\\boxed{5}$ is wrong`."""
    if _NEGATED_RE.search(before[-80:].rstrip(" \t\n$([\\") + " "):
        return True
    return _NEGATED_AFTER_RE.match(after[:80]) is not None


def _phrase_answer(phrase: str) -> str | None:
    """The answer inside a matched phrase: its first math span, or its box, delimiters stripped."""
    phrase = phrase.strip()
    math_span = re.match(r"\$\$?((?:\\\$|[^$])+)\$|\\\((.+?)\\\)", phrase)
    if math_span and re.match(r"\$?\s*,?\s*(?:or|and)\s+(?:[A-Za-z]+\s+)?(?:\$|\\\(|-?\d)", phrase[math_span.end():]):
        phrase = re.sub(r"\$\$?|\\[()]", "", phrase)  # `$5$ or $6$`: all the candidates, `$2$ and $-3$`: the list
    elif math_span:  # `the answer is $\frac{5}{12}$, which is about 0.42.`
        phrase = math_span.group(1) or math_span.group(2)
    answer = _strip_delimiters(phrase)
    boxed = last_boxed_content(answer)
    if boxed is None and _BOX_RE.search(answer):
        return None  # `the answer is $\boxed{\frac{1}{` cut off by truncation: no answer
    return (boxed if boxed is not None else answer) or None


_VERDICT_WORDS = {"correct", "wrong", "incorrect"}


def _is_verdict(phrase: str) -> bool:
    """'The answer is correct.' is a self-verification verdict (PAG protocol), not an answer."""
    return _strip_delimiters(phrase).strip("*'\" ").lower() in _VERDICT_WORDS


def _looks_like_bare_answer(text: str) -> bool:
    """One line of at most 80 characters with at most two words outside LaTeX commands."""
    if not text or "\n" in text or len(text) > 80:
        return False
    words = re.findall(r"[A-Za-z]{3,}", re.sub(r"\\[A-Za-z]+", " ", unwrap_text(text)))
    return len(words) <= 2


def unwrap_text(s: str) -> str:
    """Replace `\\text{x}`, `\\textbf{x}`, `\\mbox{x}`, `\\mathrm{x}` by `x` (innermost first)."""
    pattern = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|textnormal|operatorname)\s*\{([^{}]*)\}")
    for _ in range(20):
        new = pattern.sub(r"\1", s)
        if new == s:
            return s
        s = new
    return s
