"""Property-based tests of apo.answer_extraction: every answer format the README says the grader
reads (a box, GSM8K's `#### 18`, Minerva's "The final answer is X. I hope it is correct.",
PRM800K's `# Answer`, "The answer is X", "Answer: X", "**Final Answer**" over a display, a
concluding sentence, several boxes forming a list, a bare answer) is read in every spelling
hypothesis generates: inline or on its own line, `$...$`, `\\(...\\)` or plain, thousands
separators, trailing spaces and punctuation, "I hope it is correct.", a chat token after it.
Each generated response must grade right against its gold and wrong against another value."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from apo.grading import extract_answer, grade

SETTINGS = settings(max_examples=40, deadline=None, database=None)

REASONING = st.sampled_from(["", "We add the parts: 3 + 4 = 7, then scale.", "Let me compute this step by step.",
                             "First, $x^2 = 49$, so we take the positive root."])
BREAK = st.sampled_from([" ", "\n", "\n\n"])  # inline after the reasoning, or on its own line
TRAILING = st.sampled_from(["", " ", "  \n", "\n\n"])
CHAT_TOKEN = st.sampled_from(["", "<|im_end|>", "<|eot_id|>", "</s>", "<|endoftext|>",
                              "<|im_end|>\n<|im_start|>user\nNext?"])


def _thousands(n: int, separator: str) -> str:
    digits = f"{abs(n):,}".replace(",", separator)
    return ("-" if n < 0 else "") + digits


@st.composite
def integers(draw, *, latex: bool = True) -> tuple[str, str, str]:
    """(as written, gold, a wrong gold): an integer, with a thousands separator from 1,000 on."""
    n = draw(st.integers(-10**7, 10**7))
    separators = [""] + ([",", "{,}", "\\,"] if latex else [","]) if abs(n) >= 1000 else [""]
    return _thousands(n, draw(st.sampled_from(separators))), str(n), str(n + 1)


@st.composite
def numbers(draw) -> tuple[str, str, str]:
    """(as written, gold, a wrong gold): an integer, a fraction `\\frac{a}{b}` or a decimal."""
    kind = draw(st.sampled_from(["integer", "fraction", "decimal"]))
    if kind == "integer":
        return draw(integers())
    if kind == "fraction":
        a, b = draw(st.integers(-200, 200)), draw(st.integers(2, 200))
        value = Fraction(a, b)
        written = draw(st.sampled_from([f"\\frac{{{a}}}{{{b}}}", f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}"]))
        gold = f"\\frac{{{value.numerator}}}{{{value.denominator}}}"
        return written, gold, f"\\frac{{{value.numerator + 1}}}{{{value.denominator}}}"
    whole, fraction = draw(st.integers(0, 9999)), draw(st.integers(1, 999))
    written = f"{whole}.{fraction:03d}"
    return written, written, f"{whole + 1}.{fraction:03d}"


def math(value: str, delimiters: str) -> str:
    return {"dollar": f"${value}$", "paren": f"\\({value}\\)", "plain": value}[delimiters]


DELIMITERS = st.sampled_from(["dollar", "paren", "plain"])


def check(response: str, gold: str, wrong: str) -> None:
    assert grade(response, gold), (response, gold, extract_answer(response))
    assert not grade(response, wrong), (response, wrong, extract_answer(response))


@SETTINGS
@given(numbers(), REASONING, BREAK, st.sampled_from(["dollar", "paren", "display", "none"]),
       st.sampled_from(["", ".", " .", "!"]), TRAILING, CHAT_TOKEN, st.sampled_from(["boxed", "fbox"]))
def test_a_box_is_read_in_every_spelling(value, reasoning, gap, delimiters, punctuation, trailing, token, command):
    written, gold, wrong = value
    box = f"\\{command}{{{written}}}"
    box = {"dollar": f"${box}$", "paren": f"\\({box}\\)", "display": f"\\[\n{box}\n\\]", "none": box}[delimiters]
    lead = "So the answer is " if delimiters != "display" else "**Final Answer**\n"
    check(f"{reasoning}{gap}{lead}{box}{punctuation}{trailing}{token}", gold, wrong)


@SETTINGS
@given(integers(latex=False), REASONING, st.sampled_from(["\n", " ", "\n\n"]), st.sampled_from(["", "$"]),
       st.sampled_from(["", ".", " "]), CHAT_TOKEN)
def test_gsm8k_hashes_are_read_in_every_spelling(value, reasoning, gap, dollar, punctuation, token):
    written, gold, wrong = value
    check(f"{reasoning or 'She has 9 - 1 = 8 left.'}{gap}#### {dollar}{written}{punctuation}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, BREAK, st.sampled_from(["dollar", "plain"]),
       st.sampled_from([" I hope it is correct.", " I hope it is correct", "  I hope it is correct. "]), CHAT_TOKEN)
def test_minerva_final_answer_is_read_in_every_spelling(value, reasoning, gap, delimiters, hope, token):
    written, gold, wrong = value
    if delimiters == "plain" and "\\" in written:
        written = written.replace("\\,", ",").replace("{,}", ",")
    check(f"{reasoning}{gap}Final Answer: The final answer is {math(written, delimiters)}.{hope}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, DELIMITERS, TRAILING, CHAT_TOKEN)
def test_prm800k_answer_heading_is_read_in_every_spelling(value, reasoning, delimiters, trailing, token):
    written, gold, wrong = value
    check(f"{reasoning}\n\n# Answer\n\n{math(written, delimiters)}{trailing}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, BREAK, DELIMITERS,
       st.sampled_from(["The answer is", "the answer is", "The final answer is", "So the answer is",
                        "Thus, the final answer is:"]),
       st.sampled_from(["", ".", " .", "!"]), TRAILING, CHAT_TOKEN)
def test_the_answer_is_phrase_is_read_in_every_spelling(value, reasoning, gap, delimiters, phrase, punctuation,
                                                          trailing, token):
    written, gold, wrong = value
    if delimiters == "plain" and punctuation == "!":
        punctuation = "."  # `5!` is a factorial
    check(f"{reasoning}{gap}{phrase} {math(written, delimiters)}{punctuation}{trailing}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, DELIMITERS, st.sampled_from(["Answer:", "**Answer:**", "**Final Answer:**",
                                                          "Final answer:"]), TRAILING, CHAT_TOKEN)
def test_answer_line_is_read_in_every_spelling(value, reasoning, delimiters, label, trailing, token):
    written, gold, wrong = value
    check(f"{reasoning}\n\n{label} {math(written, delimiters)}{trailing}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, st.sampled_from(["Answer:", "**Final Answer**", "**Final Answer:**", "The answer is"]),
       st.sampled_from(["\\[ {} \\]", "\\[\n{}\n\\]", "$$\n{}\n$$", "\\[\n\\boxed{{{}}}\n\\]"]), TRAILING, CHAT_TOKEN)
def test_a_display_under_an_answer_label_is_read(value, reasoning, label, display, trailing, token):
    written, gold, wrong = value
    check(f"{reasoning}\n\n{label}\n{display.format(written)}{trailing}{token}", gold, wrong)


@SETTINGS
@given(numbers(), REASONING, st.sampled_from(["Therefore", "Thus", "Hence", "So", "In total"]),
       st.sampled_from(["the total is", "the probability is", "the value of $x$ is", "we get"]),
       st.sampled_from(["dollar", "paren"]), st.sampled_from(["", ".", " ."]), CHAT_TOKEN)
def test_a_concluding_sentence_is_read_in_every_spelling(value, reasoning, word, subject, delimiters, punctuation,
                                                         token):
    written, gold, wrong = value
    check(f"{reasoning}\n{word}, {subject} {math(written, delimiters)}{punctuation}{token}", gold, wrong)


@SETTINGS
@given(integers(latex=False), REASONING, st.sampled_from(["Therefore", "Thus", "So"]),
       st.sampled_from(["the total number of marbles is", "she has", "the answer equals"]),
       st.sampled_from(["", " marbles", " dollars"]), st.sampled_from(["", "."]), CHAT_TOKEN)
def test_a_concluding_sentence_with_a_plain_number_and_unit_is_read(value, reasoning, word, subject, unit,
                                                                     punctuation, token):
    written, gold, wrong = value
    check(f"{reasoning}\n{word}, {subject} {written}{unit}{punctuation}{token}", gold, wrong)


@SETTINGS
@given(st.lists(st.integers(-50, 50), min_size=2, max_size=4, unique=True),
       st.sampled_from([", ", ",", " and ", ", and ", " \\quad ", "$, $", "$ and $"]), st.booleans(), CHAT_TOKEN)
def test_several_boxes_are_read_as_the_list_or_set(values, joiner, as_set, token):
    boxes = joiner.join(f"\\boxed{{{v}}}" for v in values)
    gold = ("\\{" if as_set else "") + ", ".join(str(v) for v in reversed(values)) + ("\\}" if as_set else "")
    wrong = ", ".join(str(v) for v in values[:-1])
    check(f"The solutions are ${boxes}$.{token}", gold, wrong)


@SETTINGS
@given(numbers(), DELIMITERS, st.sampled_from(["", " ", "\n"]))
def test_a_bare_answer_is_read(value, delimiters, trailing):
    written, gold, wrong = value
    check(f"{math(written, delimiters)}{trailing}", gold, wrong)


@SETTINGS
@given(st.integers(0, 999), st.sampled_from(["{:d}", "{:03d}"]), REASONING, CHAT_TOKEN)
def test_aime_integers_are_read_with_or_without_leading_zeros(n, spelling, reasoning, token):
    check(f"{reasoning}\n\n**Final Answer**\n\\[\n\\boxed{{{spelling.format(n)}}}\n\\]{token}", str(n), str(n + 1))
