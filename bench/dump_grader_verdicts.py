"""Dump the grader's verdicts on real data, to count and explain what a rule change moves.

Pairs: every MATH-500 solution against its own gold and against the next problem's gold,
every MATH-500 gold boxed (`$\\boxed{gold}$`) against itself, every gold of MATH's 12,500
problems (train and test) boxed against itself, and every benchmark reference solution
(GSM8K, Minerva Math, OlympiadBench, AIME 24) against its own answer. One JSON line per
pair: {set, id, gold, answer (what `extract_answer` read), verdict}. Compare two dumps
(before and after a change) with `--compare OLD.jsonl NEW.jsonl`: it prints every pair
whose verdict moved.

    .venv/bin/python bench/dump_grader_verdicts.py --output runs/verdicts_new.jsonl
    .venv/bin/python bench/dump_grader_verdicts.py --compare runs/verdicts_old.jsonl,runs/verdicts_new.jsonl
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apo import grading  # noqa: E402
from apo.config import parse_config  # noqa: E402

BENCHMARK_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark_data")
# MATH's train and test splits are not shipped: their folder comes from --math_dir or APO_SHARED_DATA.
MATH_DIR = os.path.join(os.environ["APO_SHARED_DATA"], "math") if os.environ.get("APO_SHARED_DATA") else ""


@dataclass
class DumpConfig:
    """Where the data are and where the dump goes, or two dumps to compare."""

    benchmark_dir: str = field(default=BENCHMARK_DATA, metadata={
        "help": "Folder with math500.jsonl and the benchmark files (the shipped benchmark_data/)."})
    math_dir: str = field(default=MATH_DIR, metadata={
        "help": "Folder with MATH's train.jsonl and test.jsonl; default: $APO_SHARED_DATA/math."})
    output: str = field(default=os.path.join("runs", "grader_verdicts.jsonl"), metadata={
        "help": "Where the dump (one JSON line per pair) is written."})
    compare: str = field(default="", metadata={
        "help": "OLD.jsonl,NEW.jsonl: print the pairs whose verdict differs between two dumps instead."})


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def pairs(benchmark_dir: str, math_dir: str) -> list[tuple[str, str, str, str]]:
    """(set, id, response, gold) for every pair the dump grades."""
    if not math_dir:
        raise SystemExit("error: MATH's train/test splits are not shipped: pass --math_dir or set APO_SHARED_DATA")
    out = []
    math500 = read_jsonl(os.path.join(benchmark_dir, "math500.jsonl"))
    for i, row in enumerate(math500):
        key = row.get("unique_id", str(i))
        out.append(("math500_solution_own", key, row["solution"], row["answer"]))
        out.append(("math500_solution_next", key, row["solution"], math500[(i + 1) % len(math500)]["answer"]))
        out.append(("math500_gold_boxed", key, f"$\\boxed{{{row['answer']}}}$", row["answer"]))
    for split in ("train", "test"):
        for i, row in enumerate(read_jsonl(os.path.join(math_dir, f"{split}.jsonl"))):
            if row.get("answer"):
                out.append((f"math_{split}_gold_boxed", row.get("unique_id", str(i)),
                            f"$\\boxed{{{row['answer']}}}$", row["answer"]))
    for name in ("gsm8k", "minerva_math", "olympiadbench", "aime24"):
        for row in read_jsonl(os.path.join(benchmark_dir, f"{name}.jsonl")):
            if row.get("solution"):
                out.append((f"{name}_reference", row["id"], row["solution"], row["answer"]))
    return out


def dump(benchmark_dir: str, math_dir: str, output: str) -> None:
    todo = pairs(benchmark_dir, math_dir)
    verdicts = grading.grade_many([p[2] for p in todo], [p[3] for p in todo], timeout=5.0)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as handle:
        for (set_name, key, response, gold), verdict in zip(todo, verdicts):
            handle.write(json.dumps({"set": set_name, "id": key, "gold": gold,
                                     "answer": grading.extract_answer(response), "verdict": verdict}) + "\n")
    print(f"{len(todo)} pairs, {sum(verdicts)} accepted -> {output} ({grading.GRADER_VERSION})")


def compare(old_path: str, new_path: str) -> None:
    old, new = read_jsonl(old_path), read_jsonl(new_path)
    if [(r["set"], r["id"]) for r in old] != [(r["set"], r["id"]) for r in new]:
        raise SystemExit("error: the two dumps hold different pairs")
    moved = [(a, b) for a, b in zip(old, new) if a["verdict"] != b["verdict"]]
    for a, b in moved:
        print(f"[{a['set']} {a['id']}] {a['verdict']} -> {b['verdict']}  gold={a['gold']!r}  "
              f"answer={a['answer']!r} -> {b['answer']!r}")
    by_set: dict[str, int] = {}
    for a, _ in moved:
        by_set[a["set"]] = by_set.get(a["set"], 0) + 1
    print(f"{len(moved)} of {len(old)} verdicts changed: {by_set}")


if __name__ == "__main__":
    (config,) = parse_config((DumpConfig,))
    if config.compare:
        compare(*config.compare.split(","))
    else:
        dump(config.benchmark_dir, config.math_dir, config.output)
