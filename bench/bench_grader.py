"""Benchmark apo.grading.grade against plain math-verify on the hand-labelled sets.

Three labelled sets, each of {response, gold, label, category} pairs labelled by hand:
bench/grader_labelled_set.jsonl, the in-sample set the rules were developed against;
bench/grader_heldout_set.jsonl (issue 18) and bench/grader_heldout_issue27_set.jsonl (issue
27, answers in the styles of other models and sources), each written and committed before
the rules it measures, so out-of-sample. Then the adversarial set
bench/grader_adversarial_set.jsonl: hedges a policy could learn (each with a gold it must
not match) and near-misses that must match; reported as hacks accepted (target 0) and
near-misses rejected. For each labelled set and each grader (grade, grade_many, plain math-verify):
accuracy, false-positive rate (accepted wrong answers / all wrong pairs), false-negative
rate (rejected right answers / all right pairs), median milliseconds per pair, and the same
per category; then every pair `grade` gets wrong, the median milliseconds `grade` takes on a
typical MATH response, and how often each grader accepts the reference solutions of the
benchmarks that state their answer in a fixed form (GSM8K `#### 18`, Minerva's last box).

Plain math-verify is run the way most harnesses run it: `verify(parse("\\boxed{gold}"),
parse(response))` with its default extraction configs, in this process (its signal.alarm
timeouts work in the main thread).

    .venv/bin/python bench/bench_grader.py
    .venv/bin/python bench/bench_grader.py --output_json runs/bench_grader.json --num_typical 500
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apo.config import parse_config  # noqa: E402
from apo.records import write_json_atomic  # noqa: E402
from apo import answer_normalization, grading  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARK_DATA = os.path.join(os.path.dirname(HERE), "benchmark_data")  # shipped with the repository
GRADERS = ("grade", "grade_many", "math_verify")


@dataclass
class BenchGraderConfig:
    """Where the labelled sets and the data live, and where the JSON result goes."""

    labelled_set: str = field(default=os.path.join(HERE, "grader_labelled_set.jsonl"), metadata={
        "help": "In-sample JSONL of {response, gold, label, category} pairs labelled by hand."})
    heldout_set: str = field(default=os.path.join(HERE, "grader_heldout_set.jsonl"), metadata={
        "help": "Out-of-sample JSONL in the same format, written before the rules it measures (issue 18)."})
    heldout_issue27_set: str = field(default=os.path.join(HERE, "grader_heldout_issue27_set.jsonl"), metadata={
        "help": "Second out-of-sample JSONL: other models' answer styles, written before grader 1.3's rules."})
    adversarial_set: str = field(default=os.path.join(HERE, "grader_adversarial_set.jsonl"), metadata={
        "help": "JSONL of hedges (label false, kind hack) and near-misses (label true, kind near_miss)."})
    math500_file: str = field(default=os.path.join(BENCHMARK_DATA, "math500.jsonl"), metadata={
        "help": "MATH-500; its solutions are the 'typical MATH responses' for the timing."})
    benchmark_dir: str = field(default=BENCHMARK_DATA, metadata={
        "help": "Folder with gsm8k.jsonl and minerva_math.jsonl, whose solutions are graded against their answers."})
    num_typical: int = field(default=500, metadata={"help": "How many MATH solutions to time grade() on."})
    timeout: float = field(default=2.0, metadata={"help": "Per-pair timeout in seconds for grade_many."})
    num_workers: int = field(default=2, metadata={"help": "Grader worker processes."})
    output_json: str = field(default=os.path.join("runs", "bench_grader.json"), metadata={
        "help": "Where the results JSON is written (atomically)."})


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file; raises ValueError naming the file and line of a bad row."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not JSON ({error})") from error
    return rows


def math_verify_grade(response: str, gold: str) -> bool:
    """Plain math-verify with the gold boxed, as most harnesses call it."""
    from math_verify import parse, verify

    return bool(verify(parse("\\boxed{" + gold + "}"), parse(response)))


def confusion(verdicts: list[bool], labels: list[bool]) -> dict[str, float]:
    """Accuracy, per-class false-positive / false-negative rates and the raw counts."""
    tp = sum(v and l for v, l in zip(verdicts, labels))
    fp = sum(v and not l for v, l in zip(verdicts, labels))
    fn = sum(l and not v for v, l in zip(verdicts, labels))
    tn = len(labels) - tp - fp - fn
    negatives, positives = fp + tn, tp + fn
    return {"n": len(labels), "accuracy": (tp + tn) / len(labels), "false_positive_rate": fp / max(negatives, 1),
            "false_negative_rate": fn / max(positives, 1), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def start_cold_pool(cfg: BenchGraderConfig) -> None:
    """A fresh, started worker pool and an empty normalisation cache, so timed runs start equal."""
    grading.shutdown_pool()
    answer_normalization.normalize_cached.cache_clear()
    grading.grade_many(["$\\boxed{x+1}$"], ["1+x"], timeout=cfg.timeout, num_workers=cfg.num_workers)


def timed(function, pairs: list[tuple[str, str]]) -> tuple[list[bool], list[float]]:
    """Verdicts of `function(response, gold)` over `pairs` and the milliseconds each call took."""
    verdicts, milliseconds = [], []
    for response, gold in pairs:
        start = time.perf_counter()
        verdicts.append(bool(function(response, gold)))
        milliseconds.append(1000 * (time.perf_counter() - start))
    return verdicts, milliseconds


def run_graders(rows: list[dict], cfg: BenchGraderConfig) -> dict[str, dict]:
    """Every grader over the labelled rows: verdicts, per-pair milliseconds and wall seconds."""
    pairs = [(r["response"], r["gold"]) for r in rows]
    results = {}
    start_cold_pool(cfg)
    report = grading.GradingReport()
    start = time.perf_counter()
    verdicts = grading.grade_many([p[0] for p in pairs], [p[1] for p in pairs], timeout=cfg.timeout,
                                  num_workers=cfg.num_workers, report=report)
    results["grade_many"] = {"verdicts": verdicts, "seconds": time.perf_counter() - start, "report": vars(report)}
    start_cold_pool(cfg)
    for name, function in (("grade", grading.grade), ("math_verify", math_verify_grade)):
        start = time.perf_counter()
        verdicts, milliseconds = timed(function, pairs)
        results[name] = {"verdicts": verdicts, "milliseconds": milliseconds, "seconds": time.perf_counter() - start}
    return results


def summarise(rows: list[dict], results: dict[str, dict]) -> dict:
    """Overall and per-category metrics of each grader on one set (confusion counts, median ms)."""
    labels = [bool(r["label"]) for r in rows]

    def metrics(index: list[int]) -> dict[str, dict]:
        table = {}
        for name in GRADERS:
            result = results[name]
            table[name] = confusion([result["verdicts"][i] for i in index], [labels[i] for i in index])
            if "milliseconds" in result:
                table[name]["median_ms"] = statistics.median(result["milliseconds"][i] for i in index)
        return table

    overall = metrics(list(range(len(rows))))
    for name in GRADERS:
        overall[name]["pairs_per_second"] = len(rows) / results[name]["seconds"]
    categories = {category: metrics([i for i, r in enumerate(rows) if r["category"] == category])
                  for category in sorted({r["category"] for r in rows})}
    return {"overall": overall, "categories": categories}


def time_typical(cfg: BenchGraderConfig) -> dict[str, float]:
    """Milliseconds per `grade` call on real MATH solutions (right gold, then another problem's gold)."""
    rows = read_jsonl(cfg.math500_file)[: cfg.num_typical]
    pairs = [(r["solution"], r["answer"]) for r in rows]
    pairs += [(r["solution"], rows[(i + 1) % len(rows)]["answer"]) for i, r in enumerate(rows)]
    verdicts, milliseconds = timed(grading.grade, pairs)
    fast = sum(a is not None and grading._fast_verdict(a, g) is not None
               for a, g in ((grading.extract_answer(s), g) for s, g in pairs))
    _, math_verify_ms = timed(math_verify_grade, pairs)
    return {"pairs": len(pairs), "median_ms": statistics.median(milliseconds),
            "p90_ms": sorted(milliseconds)[int(0.9 * len(milliseconds))], "fast_path_fraction": fast / len(pairs),
            "own_solution_accepted": sum(verdicts[: len(rows)]) / len(rows),
            "math_verify_median_ms": statistics.median(math_verify_ms)}


def reference_solutions(cfg: BenchGraderConfig) -> dict[str, dict]:
    """Fraction of GSM8K and Minerva reference solutions each grader accepts against their own answer."""
    table = {}
    for benchmark in ("gsm8k", "minerva_math"):
        path = os.path.join(cfg.benchmark_dir, f"{benchmark}.jsonl")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"bench_grader: {path} not found; pass --benchmark_dir")
        rows = read_jsonl(path)
        pairs = [(r["solution"], r["answer"]) for r in rows]
        table[benchmark] = {"n": len(rows)}
        for name, function in (("grade", grading.grade), ("math_verify", math_verify_grade)):
            verdicts, milliseconds = timed(function, pairs)
            table[benchmark][name] = sum(verdicts) / len(rows)
            table[benchmark][f"{name}_median_ms"] = statistics.median(milliseconds)
    return table


def adversarial(cfg: BenchGraderConfig) -> dict:
    """Hacks accepted and near-misses rejected by each grader on the adversarial set, overall and per category."""
    rows = read_jsonl(cfg.adversarial_set)
    pairs = [(r["response"], r["gold"]) for r in rows]
    table = {"hacks": sum(r["kind"] == "hack" for r in rows),
             "near_misses": sum(r["kind"] == "near_miss" for r in rows)}
    for name, function in (("grade", grading.grade), ("math_verify", math_verify_grade)):
        verdicts, _ = timed(function, pairs)
        accepted = [r for r, v in zip(rows, verdicts) if v and r["kind"] == "hack"]
        rejected = [r for r, v in zip(rows, verdicts) if not v and r["kind"] == "near_miss"]
        table[name] = {"hacks_accepted": len(accepted), "near_misses_rejected": len(rejected),
                       "hacks_accepted_by_category": {c: sum(r["category"] == c for r in accepted)
                                                      for c in sorted({r["category"] for r in accepted})},
                       "accepted": [{"response": r["response"][:200], "gold": r["gold"]} for r in accepted],
                       "rejected": [{"response": r["response"][:200], "gold": r["gold"]} for r in rejected]}
        print(f"adversarial {cfg.adversarial_set}: {name} accepts {len(accepted)} of {table['hacks']} hacks "
              f"{table[name]['hacks_accepted_by_category']}, rejects {len(rejected)} of {table['near_misses']} "
              f"near-misses")
    return table


def print_set(title: str, summary: dict) -> None:
    print(f"\n{title}")
    print(f"{'grader':<12} {'n':>4} {'accuracy':>9} {'FP rate':>8} {'FN rate':>8} {'FP':>4} {'FN':>4} "
          f"{'median ms':>10} {'pairs/s':>9}")
    for name in GRADERS:
        r = summary["overall"][name]
        median = f"{r['median_ms']:.2f}" if "median_ms" in r else "-"
        print(f"{name:<12} {r['n']:>4} {r['accuracy']:>9.3f} {r['false_positive_rate']:>8.3f} "
              f"{r['false_negative_rate']:>8.3f} {r['fp']:>4} {r['fn']:>4} {median:>10} {r['pairs_per_second']:>9.1f}")
    print(f"{'category':<15} {'n':>4} | {'grade acc':>9} {'FP':>6} {'FN':>6} {'ms':>6} | "
          f"{'m-v acc':>8} {'FP':>6} {'FN':>6} {'ms':>6}")
    for category, row in summary["categories"].items():
        g, m = row["grade"], row["math_verify"]
        print(f"{category:<15} {g['n']:>4} | {g['accuracy']:>9.3f} {g['false_positive_rate']:>6.3f} "
              f"{g['false_negative_rate']:>6.3f} {g['median_ms']:>6.2f} | {m['accuracy']:>8.3f} "
              f"{m['false_positive_rate']:>6.3f} {m['false_negative_rate']:>6.3f} {m['median_ms']:>6.2f}")


def main(cfg: BenchGraderConfig) -> dict:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    summary = {"grader_version": grading.GRADER_VERSION, "config": vars(cfg), "sets": {}, "disagreements": {}}
    # --- labelled sets: in-sample, then out-of-sample ---
    for set_name, path in (("in-sample", cfg.labelled_set), ("out-of-sample", cfg.heldout_set),
                           ("out-of-sample-issue27", cfg.heldout_issue27_set)):
        rows = read_jsonl(path)
        results = run_graders(rows, cfg)
        summary["sets"][set_name] = summarise(rows, results)
        summary["sets"][set_name]["grade_many_report"] = results["grade_many"]["report"]
        summary["disagreements"][set_name] = [
            {**rows[i], "grade": results["grade"]["verdicts"][i], "math_verify": results["math_verify"]["verdicts"][i]}
            for i in range(len(rows)) if results["grade"]["verdicts"][i] != bool(rows[i]["label"])]
        print_set(f"{set_name}: {path}", summary["sets"][set_name])
        print(f"grade_many report: {results['grade_many']['report']}")
    # --- adversarial set: hacks accepted (target 0) and near-misses rejected ---
    summary["adversarial"] = adversarial(cfg)
    # --- typical MATH responses and benchmark reference solutions ---
    summary["typical_math_response"] = typical = time_typical(cfg)
    summary["reference_solutions"] = references = reference_solutions(cfg)
    # --- report ---
    print(f"\ntypical MATH response: median {typical['median_ms']:.2f} ms, p90 {typical['p90_ms']:.2f} ms over "
          f"{typical['pairs']} pairs, fast path {typical['fast_path_fraction']:.3f}, "
          f"own solution accepted {typical['own_solution_accepted']:.3f}; plain math-verify median "
          f"{typical['math_verify_median_ms']:.2f} ms")
    for benchmark, row in references.items():
        print(f"{benchmark} reference solutions accepted: grade {row['grade']:.3f} ({row['grade_median_ms']:.2f} ms), "
              f"math-verify {row['math_verify']:.3f} ({row['math_verify_median_ms']:.2f} ms) of {row['n']}")
    for set_name, rows in summary["disagreements"].items():
        for row in rows:
            print(f"WRONG [{set_name}] grade={row['grade']} label={row['label']} [{row['category']}] "
                  f"gold={row['gold']!r} response={row['response'][-90:]!r}")
    write_json_atomic(cfg.output_json, summary)
    return summary


if __name__ == "__main__":
    (config,) = parse_config((BenchGraderConfig,))
    main(config)
