"""The problem generators behind apo.synthetic: one per problem type, each drawing one problem of
a given level from a seeded random number generator.

Contract of a generator, `draw_<type>(rng: random.Random, level: int) -> Drawn`:

- It returns a `Drawn`, `(problem, steps, answer)`: the problem text as MATH states it; a short
  worked derivation without the final box (apo.synthetic appends `The answer is $\\boxed{answer}$.`);
  and the answer as MATH writes it (`12`, `-\\frac{5}{2}`, `37.5`, `49\\pi`), computed with exact
  integer or `fractions.Fraction` arithmetic, never typed in.
- It covers levels 1-5 (apo.synthetic.SYNTHETIC_LEVELS): level 1 is one step on small numbers,
  level 5 takes a few steps. The caller checks the level. One exception: level-1 arithmetic is a
  single-digit fact in one of apo.synthetic's wordings, so draw_arithmetic covers levels 2-5 and
  apo.synthetic (its GENERATORS["arithmetic"]) draws level 1 itself.
- It is deterministic given the rng: it draws from `rng` alone (no other randomness, no module
  state), so a seed gives the same problems on every run and machine. The order of the draws is
  part of the output: adding or reordering a draw changes every later problem of a seed.
- It may repeat an earlier problem; apo.synthetic redraws until the problem text is new.

| type | level 1 | level 3 | level 5 |
| --- | --- | --- | --- |
| arithmetic | a op b, single digits | a + b x c | powers, products and sums |
| fractions | same denominator sum | product or quotient | (x - y) / (z + w) |
| linear_equations | x + a = b, x - a = b | ax + b = c | two equations, x + y |
| gcd_lcm | gcd of two numbers <= 36 | gcd of two numbers <= 390 | gcd + lcm |
| remainders | a mod b, a <= 50 | a sum mod m | ax = b (mod m) |
| counting | count a..b, outfits | committees, handshakes, diagonals | multiset words, inclusion-exclusion |
| polynomial_roots | positive root of x^2 (+ c) = n | sum of roots of x^2 + bx + c | sum of squares of a cubic's roots |
| areas | rectangle area/perimeter | circle from radius/diameter/circumference | right triangle, leg and hypotenuse |
| percentages | 10/20/25/50/100% of a number | price increase | what percent of a is b |
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from fractions import Fraction

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


# --- generators ---

def draw_arithmetic(rng: random.Random, level: int) -> Drawn:
    """Arithmetic at levels 2-5; raises ValueError for level 1, which apo.synthetic draws in its wordings."""
    if level == 1:
        raise ValueError("level-1 arithmetic is a single-digit fact in a wording: apo.synthetic.arithmetic_problem")
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


def draw_fractions(rng: random.Random, level: int) -> Drawn:
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
            steps = (f"Dividing by ${_fraction_text(y)}$ is multiplying by "
                     f"$\\frac{{{y.denominator}}}{{{y.numerator}}}$: ${_fraction_text(x)} \\cdot "
                     f"\\frac{{{y.denominator}}}{{{y.numerator}}} = {latex_number(value)}$.")
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
    return (f"Compute $\\dfrac{{{_fraction_text(x)} - {_fraction_text(y)}}}"
            f"{{{_fraction_text(z)} + {_fraction_text(w)}}}$. {ask}",
            f"The numerator is ${_fraction_text(x)} - {_fraction_text(y)} = {latex_number(top)}$ and the "
            f"denominator is ${_fraction_text(z)} + {_fraction_text(w)} = {latex_number(bottom)}$, so the value is "
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


def draw_linear_equations(rng: random.Random, level: int) -> Drawn:
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
        return (f"Solve for $x$: ${a}x{_signed_term(b)} = {_leading_term(c, 'x')}{_signed_term(d)}$. Express your "
                f"answer as a common fraction in lowest terms if it is not an integer.",
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
            f"By Cramer's rule the determinant is ${a1} \\cdot {_paren(b2)} - {_paren(a2)} \\cdot {_paren(b1)} = "
            f"{det}$, "
            f"so $x = {latex_number(x_sol)}$ and $y = {latex_number(y_sol)}$. Hence $x + y = {latex_number(value)}$.",
            latex_number(value))


def draw_gcd_lcm(rng: random.Random, level: int) -> Drawn:
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
    names = (" and ".join(f"${n}$" for n in numbers) if level == 2
             else f"${numbers[0]}$, ${numbers[1]}$ and ${numbers[2]}$")
    return (f"What is the least common multiple of {names}?",
            f"Factor: {listed}. Taking the highest power of each prime gives ${_factorisation(lcm)} = {lcm}$.",
            str(lcm))


def _multiplicative_order(a: int, m: int) -> int:
    order, power = 1, a % m
    while power != 1:
        power, order = power * a % m, order + 1
    return order


def draw_remainders(rng: random.Random, level: int) -> Drawn:
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


def draw_counting(rng: random.Random, level: int) -> Drawn:
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


def draw_polynomial_roots(rng: random.Random, level: int) -> Drawn:
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


def draw_areas(rng: random.Random, level: int) -> Drawn:
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
                f"Area is $\\frac{{1}}{{2}} \\cdot {base} \\cdot {height} = {latex_number(value)}$.",
                latex_number(value))
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


def draw_percentages(rng: random.Random, level: int) -> Drawn:
    if level in (1, 2):
        percent = rng.choice([10, 20, 25, 50, 100]) if level == 1 else rng.choice(range(5, 100, 5))
        whole = rng.randint(1, 25) * 20
        value = Fraction(percent * whole, 100)
        return (f"What is ${percent}\\%$ of ${whole}$?",
                f"${percent}\\%$ of ${whole}$ is $\\frac{{{percent}}}{{100}} \\cdot {whole} = "
                f"{decimal_number(value)}$.",
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
        return (f"A price of ${price}$ dollars is raised by ${up}\\%$, and the new price is then lowered by "
                f"${down}\\%$. What is the final price, in dollars?",
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
