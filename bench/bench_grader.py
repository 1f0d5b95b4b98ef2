"""Benchmark apo.grading.grade against plain math-verify on the hand-labelled set.

Reports, for each grader in one run: accuracy, false-positive rate (accepted wrong answers /
all wrong pairs), false-negative rate (rejected right answers / all right pairs) and pairs per
second on bench/grader_labelled_set.jsonl, a per-category breakdown, every disagreement with
the labels, and the median milliseconds `grade` takes on a typical MATH response (real MATH
solutions graded against their own gold and against another problem's gold).

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
from apo import grading  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class BenchGraderConfig:
    """Where the labelled set and MATH data live, and where the JSON result goes."""

    labelled_set: str = field(default=os.path.join(HERE, "grader_labelled_set.jsonl"), metadata={
        "help": "JSONL of {response, gold, label, category} pairs labelled by hand."})
    math_dir: str = field(default=os.path.join(HERE, "..", "..", "shared", "data", "math"), metadata={
        "help": "Folder with test500.jsonl; its solutions are the 'typical MATH responses' for the timing."})
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
    return {"accuracy": (tp + tn) / len(labels), "false_positive_rate": fp / max(negatives, 1),
            "false_negative_rate": fn / max(positives, 1), "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def start_cold_pool(cfg: BenchGraderConfig) -> None:
    """A fresh, started worker pool and an empty normalisation cache, so timed runs start equal."""
    grading.shutdown_pool()
    grading._normalize_cached.cache_clear()
    grading.grade_many(["$\\boxed{x+1}$"], ["1+x"], timeout=cfg.timeout, num_workers=cfg.num_workers)


def time_labelled(rows: list[dict], cfg: BenchGraderConfig) -> dict[str, dict]:
    """Run every grader over the labelled rows; verdicts, metrics and throughput per grader."""
    responses, golds = [r["response"] for r in rows], [r["gold"] for r in rows]
    labels = [bool(r["label"]) for r in rows]
    results = {}
    start_cold_pool(cfg)
    report = grading.GradingReport()
    start = time.perf_counter()
    verdicts = grading.grade_many(responses, golds, timeout=cfg.timeout, num_workers=cfg.num_workers, report=report)
    seconds = time.perf_counter() - start
    results["grade_many"] = {"verdicts": verdicts, "seconds": seconds, "report": vars(report)}
    start_cold_pool(cfg)
    start = time.perf_counter()
    verdicts = [grading.grade(r, g) for r, g in zip(responses, golds)]
    results["grade"] = {"verdicts": verdicts, "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    verdicts = [math_verify_grade(r, g) for r, g in zip(responses, golds)]
    results["math_verify"] = {"verdicts": verdicts, "seconds": time.perf_counter() - start}
    for name, result in results.items():
        result.update(confusion(result["verdicts"], labels))
        result["pairs_per_second"] = len(rows) / result["seconds"]
    return results


def per_category(rows: list[dict], results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Accuracy of each grader within each labelled category."""
    table: dict[str, dict[str, float]] = {}
    for category in sorted({r["category"] for r in rows}):
        index = [i for i, r in enumerate(rows) if r["category"] == category]
        table[category] = {"n": len(index)}
        for name in ("grade", "math_verify"):
            right = sum(results[name]["verdicts"][i] == bool(rows[i]["label"]) for i in index)
            table[category][name] = right / len(index)
    return table


def time_typical(cfg: BenchGraderConfig) -> dict[str, float]:
    """Milliseconds per `grade` call on real MATH solutions (right gold, then another problem's gold)."""
    rows = read_jsonl(os.path.join(cfg.math_dir, "test500.jsonl"))[: cfg.num_typical]
    pairs = [(r["solution"], r["answer"]) for r in rows]
    pairs += [(r["solution"], rows[(i + 1) % len(rows)]["answer"]) for i, r in enumerate(rows)]
    milliseconds, fast = [], 0
    for solution, gold in pairs:
        start = time.perf_counter()
        grading.grade(solution, gold)
        milliseconds.append(1000 * (time.perf_counter() - start))
        answer = grading.extract_answer(solution)
        fast += answer is not None and grading._fast_verdict(answer, gold) is not None
    right = sum(grading.grade(s, g) for s, g in pairs[: len(rows)])
    math_verify_ms = []
    for solution, gold in pairs:
        start = time.perf_counter()
        math_verify_grade(solution, gold)
        math_verify_ms.append(1000 * (time.perf_counter() - start))
    return {"pairs": len(pairs), "median_ms": statistics.median(milliseconds),
            "p90_ms": sorted(milliseconds)[int(0.9 * len(milliseconds))], "fast_path_fraction": fast / len(pairs),
            "own_solution_accepted": right / len(rows), "math_verify_median_ms": statistics.median(math_verify_ms)}


def print_table(results: dict[str, dict], categories: dict[str, dict], typical: dict[str, float], n: int) -> None:
    print(f"labelled pairs: {n}")
    print(f"{'grader':<12} {'accuracy':>9} {'FP rate':>8} {'FN rate':>8} {'FP':>4} {'FN':>4} {'pairs/s':>9}")
    for name in ("grade", "grade_many", "math_verify"):
        r = results[name]
        print(f"{name:<12} {r['accuracy']:>9.3f} {r['false_positive_rate']:>8.3f} {r['false_negative_rate']:>8.3f} "
              f"{r['fp']:>4} {r['fn']:>4} {r['pairs_per_second']:>9.1f}")
    print(f"grade_many report: {results['grade_many']['report']}")
    print(f"{'category':<15} {'n':>4} {'grade':>7} {'math_verify':>12}")
    for category, row in categories.items():
        print(f"{category:<15} {row['n']:>4} {row['grade']:>7.3f} {row['math_verify']:>12.3f}")
    print(f"typical MATH response: median {typical['median_ms']:.2f} ms, p90 {typical['p90_ms']:.2f} ms over "
          f"{typical['pairs']} pairs, fast path {typical['fast_path_fraction']:.3f}, "
          f"own solution accepted {typical['own_solution_accepted']:.3f}; plain math-verify median "
          f"{typical['math_verify_median_ms']:.2f} ms")


def main(cfg: BenchGraderConfig) -> dict:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    # --- labelled set ---
    rows = read_jsonl(cfg.labelled_set)
    results = time_labelled(rows, cfg)
    categories = per_category(rows, results)
    disagreements = [{**rows[i], "grade": results["grade"]["verdicts"][i], "math_verify": results["math_verify"]["verdicts"][i]}
                     for i in range(len(rows)) if results["grade"]["verdicts"][i] != bool(rows[i]["label"])]
    # --- typical MATH responses ---
    typical = time_typical(cfg)
    # --- report ---
    print_table(results, categories, typical, len(rows))
    for row in disagreements:
        print(f"WRONG grade={row['grade']} label={row['label']} [{row['category']}] gold={row['gold']!r} "
              f"response={row['response'][-90:]!r}")
    summary = {"grader_version": grading.GRADER_VERSION, "labelled_pairs": len(rows),
               "graders": {name: {k: v for k, v in r.items() if k != "verdicts"} for name, r in results.items()},
               "categories": categories, "typical_math_response": typical, "disagreements": disagreements,
               "config": vars(cfg)}
    write_json_atomic(cfg.output_json, summary)
    return summary


if __name__ == "__main__":
    (config,) = parse_config((BenchGraderConfig,))
    main(config)
