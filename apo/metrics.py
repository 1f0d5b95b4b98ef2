"""Per-turn self-correction records -> every reported metric, computed from the records alone.

A record is one problem x sample x turn of a self-correction episode (docs/FORMATS.md; read and
validated by apo.records.read_generations):

    {"id", "sample", "turn", "role", "attempt_index", "type", "level", "gold", "mode", "text",
     "extracted_answer", "correct", "verdict", "verdict_parsed", "checked_attempt_correct",
     "prompt_tokens", "response_tokens", "truncated", "episode_turns"}

An attempt/revise record may also carry "correct_boxed_exact" (bool or null): the official
A*-PO rule (apo/strict_grading.py: last \boxed{} exact after MATH's strip_string, EOS
required); where every graded attempt has it, summaries add acc_t1_boxed_exact and
acc_final_boxed_exact beside the grader's numbers, so a result can be set against a published
one. `episode_turns` (the episode's number of turns, an addition to the architecture's list) lets a
reader tell a complete episode from one cut off by an interrupted write. Every field is present on every record; fields that do not apply to a role are null
(`correct` and `extracted_answer` on verify turns, `verdict` and `checked_attempt_correct`
on attempt/revise turns). `correct` is null when the gold answer cannot be graded (empty or
missing): such problems are counted and listed under "ungradable", never folded into an
accuracy. An attempt with no extractable answer has `correct` false and is also counted as
"no_answer".

Definitions (one episode = one (id, sample) pair; "first"/"final" = its first and last
attempt or revise turn; Kumar et al. 2024 (SCoRe) and Jiang et al. 2025 (PAG, arXiv 2506.10406)):
  acc_t1, acc_final     share of graded episodes whose first / final answer is right
  improvement           acc_final - acc_t1 = delta_i_to_c - delta_c_to_i
  delta_i_to_c          share of episodes wrong first and right at the end ("fixed")
  delta_c_to_i          share of episodes right first and wrong at the end ("broken")
  verifier              as PAG computes it (its official reward manager): over the FIRST
                        verification of each episode (the check of the first attempt), an
                        unparsed verdict scoring as a miss in every rate;
                        "verifier_all_turns" holds the same rates over every verify turn
  verifier accuracy     share of those verify turns whose verdict matches the truth of the
                        attempt they checked (PAG's verify_1_accuracy)
  recall_on_correct     P(verdict == "correct" | checked attempt right)  (PAG's verify_recall)
  recall_on_wrong       P(verdict == "wrong"   | checked attempt wrong)  (PAG's verify_recall_negative)
  parse_failure_rate    share of those verify turns whose verdict could not be parsed
  revision_rate         share of episodes with at least one revise turn
  mean@n                mean over problems of the per-problem share of right samples
  maj@n                 per problem, the most frequent extracted answer (whitespace removed)
                        among the n samples; ties go to the answer that occurs first (lowest
                        sample index); samples without an answer do not vote
  pass@k                unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, eq. 1),
                        averaged over problems
A rate with an empty denominator is null, not 0.

>>> metrics = compute_metrics(read_generations("outputs/eval/generations.jsonl"), pass_k=(1, 4))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from apo.correction_modes import CORRECTION_MODES
from apo.records import GENERATION_ROLES as ROLES, read_generations

ATTEMPT_ROLES = ("attempt", "revise")
VERIFY_ROLE = "verify"
MODE_LABELS = {"self_verify": "self-verify", "none": "first attempt only", "oracle": "oracle (upper bound)"}
WILSON_Z95 = 1.959963984540054  # standard normal quantile at 0.975
TRANSITIONS = ("stayed_right", "fixed", "broken", "stayed_wrong")


def mode_label(mode: str) -> str:
    """Human label of a correction mode; oracle is always called an upper bound."""
    if mode not in MODE_LABELS:
        raise ValueError(f"unknown correction mode {mode!r}; valid modes are {list(CORRECTION_MODES)}")
    return MODE_LABELS[mode]


# --- building records ---


def episode_records(
    episode: Any,
    *,
    problem_row: dict,
    sample: int,
    correctness: Sequence[bool | None],
    mode: str,
    extracted_answers: Sequence[str | None] | None = None,
    strict_correctness: Sequence[bool | None] | None = None,
) -> list[dict]:
    """Per-turn records of one apo.episodes.Episode.

    `correctness[i]` grades the i-th attempt/revise turn of `episode.turns` (None when the gold
    answer cannot be graded); `extracted_answers[i]` is its extracted answer (computed with
    apo.grading.extract_answer when not given). A verify turn's `checked_attempt_correct`
    is the correctness of the latest attempt before it. `strict_correctness[i]`, when given,
    becomes the attempt's "correct_boxed_exact" (the official A*-PO rule). Raises ValueError
    when the counts do not match the episode.
    """
    attempt_turns = [t for t in episode.turns if t.role in ATTEMPT_ROLES]
    if len(correctness) != len(attempt_turns):
        raise ValueError(f"problem {problem_row.get('id')!r}: {len(correctness)} correctness values "
                         f"for {len(attempt_turns)} attempt/revise turns")
    if extracted_answers is None:
        from apo.grading import extract_answer

        extracted_answers = [extract_answer(t.text) for t in attempt_turns]
    if len(extracted_answers) != len(attempt_turns):
        raise ValueError(f"problem {problem_row.get('id')!r}: {len(extracted_answers)} extracted answers "
                         f"for {len(attempt_turns)} attempt/revise turns")
    if strict_correctness is not None and len(strict_correctness) != len(attempt_turns):
        raise ValueError(f"problem {problem_row.get('id')!r}: {len(strict_correctness)} strict correctness values "
                         f"for {len(attempt_turns)} attempt/revise turns")
    records, attempts_seen = [], -1
    for turn_number, turn in enumerate(episode.turns):
        is_attempt = turn.role in ATTEMPT_ROLES
        if is_attempt:
            attempts_seen += 1
        elif attempts_seen < 0:
            raise ValueError(f"problem {problem_row.get('id')!r}: a {turn.role} turn comes before any attempt")
        records.append({
            "id": problem_row["id"], "sample": sample, "turn": turn_number, "role": turn.role,
            "attempt_index": turn.attempt_index, "type": problem_row["type"], "level": problem_row["level"],
            "gold": problem_row["answer"], "mode": mode, "text": turn.text,
            "extracted_answer": extracted_answers[attempts_seen] if is_attempt else None,
            "correct": correctness[attempts_seen] if is_attempt else None,
            "verdict": None if is_attempt else turn.verdict,
            "verdict_parsed": False if is_attempt else bool(turn.verdict_parsed),
            "checked_attempt_correct": None if is_attempt else correctness[attempts_seen],
            "prompt_tokens": len(turn.prompt_ids), "response_tokens": len(turn.response_ids),
            "truncated": bool(turn.truncated), "episode_turns": len(episode.turns),
        })
        if strict_correctness is not None and is_attempt:
            records[-1]["correct_boxed_exact"] = strict_correctness[attempts_seen]
    return records


# --- episodes ---


@dataclass
class EpisodeOutcome:
    """One (id, sample) episode reduced to what the metrics need."""

    id: str
    sample: int
    type: str
    level: int | None
    first: dict
    final: dict
    verifications: list[dict]
    num_turns: int
    revised: bool

    @property
    def graded(self) -> bool:
        return self.first["correct"] is not None and self.final["correct"] is not None


def group_episodes(records: Iterable[dict]) -> list[EpisodeOutcome]:
    """Group records by (id, sample), ordered by turn; raises ValueError on gaps, duplicates or a
    verify turn before any attempt. Episodes are returned sorted by (id, sample)."""
    by_key: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for record in records:
        by_key[(record["id"], record["sample"])].append(record)
    if not by_key:
        raise ValueError("no records to summarise")
    episodes = []
    for (problem_id, sample), turns in sorted(by_key.items()):
        turns.sort(key=lambda r: r["turn"])
        numbers = [r["turn"] for r in turns]
        if numbers != list(range(len(turns))):
            raise ValueError(f"problem {problem_id!r} sample {sample}: turns {numbers}, expected 0..{len(turns) - 1} "
                             "once each (a truncated or duplicated generations file?)")
        if len(turns) != turns[0]["episode_turns"]:
            raise ValueError(f"problem {problem_id!r} sample {sample}: {len(turns)} of {turns[0]['episode_turns']} "
                             "turns present (an interrupted write?)")
        attempts = [r for r in turns if r["role"] in ATTEMPT_ROLES]
        if not attempts or turns[0]["role"] != "attempt":
            raise ValueError(f"problem {problem_id!r} sample {sample}: the first turn must be an 'attempt'")
        episodes.append(EpisodeOutcome(
            id=problem_id, sample=sample, type=turns[0]["type"], level=turns[0]["level"],
            first=attempts[0], final=attempts[-1], verifications=[r for r in turns if r["role"] == VERIFY_ROLE],
            num_turns=len(turns), revised=any(r["role"] == "revise" for r in turns)))
    return episodes


# --- small statistics ---


def _rate(numerator: float, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def wilson_interval(successes: int, n: int, z: float = WILSON_Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); (0, 1) when n == 0.

    centre = (p + z^2/2n) / (1 + z^2/n), half-width = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n).
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def fisher_exact_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher exact test of the 2x2 table [[a, b], [c, d]] (Fisher 1922): with the
    margins fixed and rows independent of columns, the chance of a top-left count of at least
    `a` (the hypergeometric upper tail). Small when the first row falls in the first column
    more often than the second row does. Raises ValueError for a negative count."""
    if min(a, b, c, d) < 0:
        raise ValueError(f"fisher_exact_greater needs counts >= 0, got {(a, b, c, d)}")
    row1, row2, col1 = a + b, c + d, a + c
    tail = sum(math.comb(row1, x) * math.comb(row2, col1 - x) for x in range(a, min(row1, col1) + 1))
    return tail / math.comb(row1 + row2, col1)


# --- paired before/after counts: the sign test and the verify-and-revise loop ---

def sign_test_p(gained: int, lost: int) -> float:
    """Two-sided exact sign test (McNemar) of `gained` vs `lost` paired changes: the chance of a
    split at least this uneven when each changed problem is a fair coin. 1.0 when nothing changed."""
    changed = gained + lost
    if changed == 0:
        return 1.0
    tail = sum(math.comb(changed, k) for k in range(0, min(gained, lost) + 1)) / 2 ** changed
    return min(1.0, 2 * tail)


def loop_report(records: list[dict], ids: set[str]) -> dict[str, Any]:
    """What the verify-and-revise loop did on the episodes of `ids` (evaluate_apo generation records).

    Transitions compare each episode's first and final attempt: fixed (wrong -> right) and broken
    (right -> wrong), with the exact sign test of one against the other. The verifier is read
    from each episode's first verdict as the loop acts on it: "approves" = a parsed 'correct' (no
    revision), anything else revises (an unparsed verdict does at evaluation).
    recall_on_correct = approved right attempts / right attempts, recall_on_wrong = revised wrong
    attempts / wrong attempts, balanced_accuracy their mean (0.5 for any constant verdict), and
    verifier_p_value the one-sided Fisher exact test that right attempts are approved more often
    than wrong ones. A rate over an empty class is None.
    """
    chosen = [r for r in records if r["id"] in ids]
    transitions = summarize(chosen)["transitions"]
    fixed, broken = transitions["fixed"], transitions["broken"]
    first_verdicts = [r for r in chosen if r["role"] == "verify" and r["attempt_index"] == 0
                      and r["checked_attempt_correct"] is not None]
    approves = {True: 0, False: 0}
    checked = {True: 0, False: 0}
    for record in first_verdicts:
        truth = bool(record["checked_attempt_correct"])
        checked[truth] += 1
        approves[truth] += bool(record["verdict_parsed"]) and record["verdict"] == "correct"
    on_correct = approves[True] / checked[True] if checked[True] else None
    on_wrong = (checked[False] - approves[False]) / checked[False] if checked[False] else None
    return {
        "problems": sum(transitions.values()),
        "t1_correct": transitions["stayed_right"] + broken, "final_correct": transitions["stayed_right"] + fixed,
        "fixed": fixed, "broken": broken, "p_value": sign_test_p(fixed, broken),
        "approved_right": approves[True], "right_checked": checked[True],
        "revised_wrong": checked[False] - approves[False], "wrong_checked": checked[False],
        "unparsed_verdicts": sum(not r["verdict_parsed"] for r in first_verdicts),
        "recall_on_correct": on_correct, "recall_on_wrong": on_wrong,
        "balanced_accuracy": None if on_correct is None or on_wrong is None else (on_correct + on_wrong) / 2,
        "verifier_p_value": fisher_exact_greater(approves[True], checked[True] - approves[True], approves[False],
                                                 checked[False] - approves[False]),
    }


def loop_helps(report: dict[str, Any]) -> bool:
    """More problems fixed than broken by the loop, sign-test p < 0.05."""
    return report["fixed"] > report["broken"] and report["p_value"] < 0.05


def verifier_discriminates(report: dict[str, Any]) -> bool:
    """Balanced accuracy above 0.5 with the one-sided Fisher test at p < 0.05."""
    return (report["balanced_accuracy"] or 0.0) > 0.5 and report["verifier_p_value"] < 0.05


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) to avoid huge binomials. Raises ValueError
    unless 0 <= c <= n and 1 <= k <= n.
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> bool:
    """Whether the majority answer is right. Votes are answers with whitespace removed; ties go to
    the answer seen first; None answers do not vote; no votes at all is wrong."""
    keys = [None if a is None else "".join(a.split()) for a in answers]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return False
    best = max(votes.values())
    winner = next(k for k in keys if k is not None and votes[k] == best)
    return bool(correct[keys.index(winner)])


def bootstrap_interval(values: np.ndarray, resamples: int, seed: int, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (P,), resampling problems with replacement."""
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(values), size=(resamples, len(values)))
    means = values[indices].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# --- summaries ---


def summarize(records: Iterable[dict]) -> dict:
    """Self-correction summary of any set of records (one group: all, one type, one level).

    Returns counts and rates as defined in the module docstring: num_episodes, num_graded,
    num_ungradable, acc_t1, acc_final, improvement, transitions (counts), delta_i_to_c,
    delta_c_to_i, verifier {num_verifications, accuracy, recall_on_correct, recall_on_wrong,
    parse_failure_rate, said_wrong_rate} over first verifications (PAG's definition) and
    verifier_all_turns (the same over every verify turn), revision_rate, mean_turns, truncation_rate (all
    turns), attempt_truncation_rate, no_answer_t1, no_answer_final, mean_response_tokens per role.
    """
    records = list(records)
    episodes = group_episodes(records)
    return _summarize_episodes(episodes, records)


def _summarize_episodes(episodes: list[EpisodeOutcome], records: list[dict]) -> dict:
    graded = [e for e in episodes if e.graded]
    n = len(graded)
    transitions = Counter({name: 0 for name in TRANSITIONS})
    for e in graded:
        transitions[_transition(e.first["correct"], e.final["correct"])] += 1
    right_t1 = transitions["stayed_right"] + transitions["broken"]
    right_final = transitions["stayed_right"] + transitions["fixed"]
    acc_t1, acc_final = _rate(right_t1, n), _rate(right_final, n)
    attempts = [r for r in records if r["role"] in ATTEMPT_ROLES]
    strict = _strict_accuracies(graded)
    return {
        "num_episodes": len(episodes),
        "num_graded": n,
        "num_ungradable": len(episodes) - n,
        "acc_t1": acc_t1,
        "acc_final": acc_final,
        "improvement": None if n == 0 else (right_final - right_t1) / n,
        **strict,
        "transitions": dict(transitions),
        "delta_i_to_c": _rate(transitions["fixed"], n),
        "delta_c_to_i": _rate(transitions["broken"], n),
        "verifier": _verifier_summary([v for e in episodes for v in e.verifications if v["attempt_index"] == 0]),
        "verifier_all_turns": _verifier_summary([v for e in episodes for v in e.verifications]),
        "revision_rate": _rate(sum(e.revised for e in graded), n),
        "mean_turns": _rate(sum(e.num_turns for e in episodes), len(episodes)),
        "truncation_rate": _rate(sum(r["truncated"] for r in records), len(records)),
        "attempt_truncation_rate": _rate(sum(r["truncated"] for r in attempts), len(attempts)),
        "no_answer_t1": sum(e.first["extracted_answer"] is None for e in graded),
        "no_answer_final": sum(e.final["extracted_answer"] is None for e in graded),
        "mean_response_tokens": {
            role: _rate(sum(r["response_tokens"] for r in records if r["role"] == role),
                        sum(r["role"] == role for r in records))
            for role in ROLES if any(r["role"] == role for r in records)},
    }


def _strict_accuracies(graded: list[EpisodeOutcome]) -> dict:
    """acc_t1_boxed_exact / acc_final_boxed_exact over graded episodes, when every first and final
    attempt record carries "correct_boxed_exact"; {} otherwise (files written before the field)."""
    if not graded or any(not isinstance(e.first.get("correct_boxed_exact"), bool)
                         or not isinstance(e.final.get("correct_boxed_exact"), bool) for e in graded):
        return {}
    return {"acc_t1_boxed_exact": sum(e.first["correct_boxed_exact"] for e in graded) / len(graded),
            "acc_final_boxed_exact": sum(e.final["correct_boxed_exact"] for e in graded) / len(graded)}


def _transition(first_correct: bool, final_correct: bool) -> str:
    if first_correct:
        return "stayed_right" if final_correct else "broken"
    return "fixed" if final_correct else "stayed_wrong"


def _verifier_summary(verifications: list[dict]) -> dict:
    """Verifier quality over verify turns whose checked attempt was graded."""
    graded = [v for v in verifications if v["checked_attempt_correct"] is not None]
    on_correct = [v for v in graded if v["checked_attempt_correct"]]
    on_wrong = [v for v in graded if not v["checked_attempt_correct"]]
    hits_correct = sum(v["verdict_parsed"] and v["verdict"] == "correct" for v in on_correct)
    hits_wrong = sum(v["verdict_parsed"] and v["verdict"] == "wrong" for v in on_wrong)
    return {
        "num_verifications": len(graded),
        "num_on_correct": len(on_correct),
        "num_on_wrong": len(on_wrong),
        "accuracy": _rate(hits_correct + hits_wrong, len(graded)),
        "recall_on_correct": _rate(hits_correct, len(on_correct)),
        "recall_on_wrong": _rate(hits_wrong, len(on_wrong)),
        "parse_failure_rate": _rate(sum(not v["verdict_parsed"] for v in graded), len(graded)),
        "said_wrong_rate": _rate(sum(v["verdict_parsed"] and v["verdict"] == "wrong" for v in graded), len(graded)),
    }


def _sampled_summary(episodes: list[EpisodeOutcome], pass_k: Sequence[int]) -> dict:
    """mean@n, maj@n and pass@k for the first and the final attempt over graded problems."""
    by_problem: dict[str, list[EpisodeOutcome]] = defaultdict(list)
    for e in episodes:
        if e.graded:
            by_problem[e.id].append(e)
    result: dict[str, Any] = {"num_problems": len(by_problem)}
    for which in ("t1", "final"):
        rows = [[(e.first if which == "t1" else e.final) for e in sorted(group, key=lambda e: e.sample)]
                for group in by_problem.values()]
        means = [sum(r["correct"] for r in row) / len(row) for row in rows]
        majority = [majority_vote([r["extracted_answer"] for r in row], [r["correct"] for r in row]) for row in rows]
        result[f"mean_at_n_{which}"] = _rate(sum(means), len(rows))
        result[f"maj_at_n_{which}"] = _rate(sum(majority), len(rows))
        result[f"pass_at_k_{which}"] = {
            str(k): _rate(sum(pass_at_k(len(row), sum(r["correct"] for r in row), k) for row in rows), len(rows))
            for k in pass_k}
    return result


def _group_metrics(episodes: list[EpisodeOutcome], records: list[dict], pass_k: Sequence[int]) -> dict:
    metrics = _summarize_episodes(episodes, records)
    metrics["sampled"] = _sampled_summary(episodes, pass_k)
    return metrics


def _headline_intervals(episodes: list[EpisodeOutcome], samples_per_problem: int, resamples: int, seed: int) -> dict:
    """95% intervals: Wilson for Acc@t1/Acc@final with one sample per problem, otherwise a
    percentile bootstrap over problems; the improvement always by a paired bootstrap over problems."""
    by_problem: dict[str, list[EpisodeOutcome]] = defaultdict(list)
    for e in episodes:
        if e.graded:
            by_problem[e.id].append(e)
    if not by_problem:
        return {}
    t1 = np.array([np.mean([e.first["correct"] for e in g]) for g in by_problem.values()], dtype=float)
    final = np.array([np.mean([e.final["correct"] for e in g]) for g in by_problem.values()], dtype=float)
    intervals = {}
    for name, values in (("acc_t1", t1), ("acc_final", final)):
        if samples_per_problem == 1:
            low, high = wilson_interval(int(values.sum()), len(values))
            intervals[name] = {"low": low, "high": high, "method": "wilson"}
        else:
            low, high = bootstrap_interval(values, resamples, seed)
            intervals[name] = {"low": low, "high": high, "method": f"bootstrap over problems ({resamples}, seed {seed})"}
    low, high = bootstrap_interval(final - t1, resamples, seed)
    intervals["improvement"] = {"low": low, "high": high, "method": f"paired bootstrap over problems ({resamples}, seed {seed})"}
    return intervals


def compute_metrics(
    records: Iterable[dict],
    *,
    pass_k: Sequence[int] = (1,),
    bootstrap_resamples: int = 2000,
    bootstrap_seed: int = 0,
) -> dict:
    """Every reported number from per-turn records: overall, per MATH type and per level.

    Returns {"mode", "mode_label", "samples_per_problem", "num_problems", "metric_settings",
    "overall" (summary + "sampled" + "ci95"), "by_type", "by_level" (summary + "sampled"),
    "ungradable" {"count", "ids"}}. Levels are keyed "1".."5" or "unknown". Raises ValueError
    on an empty input, mixed modes, unequal sample counts per problem (an unfinished run) or a
    k in `pass_k` larger than the samples per problem.
    """
    records = list(records)
    if not records:
        raise ValueError("no records to compute metrics from")
    modes = sorted({r["mode"] for r in records})
    if len(modes) != 1:
        raise ValueError(f"records mix correction modes {modes}; evaluate each mode into its own output folder")
    episodes = group_episodes(records)
    samples_per_problem = _samples_per_problem(episodes)
    bad_k = [k for k in pass_k if not 1 <= k <= samples_per_problem]
    if bad_k:
        raise ValueError(f"pass_k {bad_k} must lie in 1..{samples_per_problem} (the samples per problem)")

    overall = _group_metrics(episodes, records, pass_k)
    overall["ci95"] = _headline_intervals(episodes, samples_per_problem, bootstrap_resamples, bootstrap_seed)
    ungradable_ids = sorted({e.id for e in episodes if not e.graded})
    return {
        "mode": modes[0],
        "mode_label": mode_label(modes[0]),
        "samples_per_problem": samples_per_problem,
        "num_problems": len({e.id for e in episodes}),
        "metric_settings": {"pass_k": list(pass_k), "bootstrap_resamples": bootstrap_resamples,
                            "bootstrap_seed": bootstrap_seed},
        "overall": overall,
        "by_type": _metrics_by(episodes, records, pass_k, key=lambda item: item["type"]),
        "by_level": _metrics_by(episodes, records, pass_k, key=_level_key),
        "ungradable": {"count": len(ungradable_ids), "ids": ungradable_ids},
    }


def _level_key(item: dict) -> str:
    return "unknown" if item["level"] is None else str(item["level"])


def _metrics_by(episodes: list[EpisodeOutcome], records: list[dict], pass_k: Sequence[int], key) -> dict:
    groups: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
    for e in episodes:
        groups[key({"type": e.type, "level": e.level})][0].append(e)
    for r in records:
        groups[key(r)][1].append(r)
    ordered = sorted(groups, key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))
    return {g: _group_metrics(groups[g][0], groups[g][1], pass_k) for g in ordered}


def _samples_per_problem(episodes: list[EpisodeOutcome]) -> int:
    counts = Counter(e.id for e in episodes)
    distinct = sorted(set(counts.values()))
    if len(distinct) != 1:
        short = sorted(pid for pid, c in counts.items() if c != max(distinct))[:5]
        raise ValueError(f"problems have unequal sample counts {distinct} (e.g. {short}); the run is unfinished: "
                         "re-run with --resume true to complete it")
    return distinct[0]


def metrics_from_generations(path: str, **settings: Any) -> dict:
    """compute_metrics on a generations.jsonl file; `settings` are metrics.json's "metric_settings"."""
    return compute_metrics(read_generations(path), **settings)
