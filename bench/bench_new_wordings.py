"""A trained demo model against the untrained one on level-1 arithmetic in wordings that neither
the demo's training nor its held-out set contains: does what it learned carry over?

The four wordings below are written here and nowhere in apo/synthetic.py (which holds the twelve
the demo trains and evaluates on). Each problem is a level-1 fact (a op b, single digits, a >= b
for subtraction) drawn from `--seed`; facts may also occur in the demo's sets in other wordings,
so this measures wording, not new facts. Both models answer greedily, one attempt, with the
demo's length limit and system prompt; the comparison is paired per problem (gained / lost, exact
sign test).

    .venv/bin/python bench/bench_new_wordings.py --trained /tmp/demo_seed_42/train/final
    .venv/bin/python bench/bench_new_wordings.py --trained DIR --untrained embedded --problems_per_wording 24
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import evaluate_apo  # noqa: E402
from apo.config import A_PO_Config, parse_config  # noqa: E402
from apo.records import read_generations, write_json_atomic, write_jsonl_atomic  # noqa: E402
from apo.synthetic import NUMBER_WORDS  # noqa: E402
from demo_apo_pipeline import DEMO_SYSTEM_PROMPT, first_attempts, paired_changes  # noqa: E402

logger = logging.getLogger("bench_new_wordings")

# name -> {op: template}; fields {a} {b} (digits), {a_word} {b_word} (spelled out).
NEW_WORDINGS: dict[str, dict[str, str]] = {
    "calculate_words": {"+": "Calculate {a} plus {b}.", "-": "Calculate {a} minus {b}.",
                        "*": "Calculate {a} times {b}."},
    "how_much": {"+": "How much is {a_word} added to {b_word}?", "-": "How much is {b_word} taken from {a_word}?",
                 "*": "How much is {a_word} multiplied by {b_word}?"},
    "plain_expression": {"+": "What's {a} + {b}?", "-": "What's {a} - {b}?", "*": "What's {a} x {b}?"},
    "scene": {"+": "There are {a} ducks in a pond and {b} more ducks land in it. How many ducks are in the pond?",
              "-": "There were {a} birds on a wire and {b} flew off. How many birds are still on the wire?",
              "*": "Each of {a} tables has {b} chairs around it. How many chairs are there around the tables?"},
}


@dataclass
class NewWordingsConfig:
    """Which two models, how many problems, where the results go."""

    trained: str = field(metadata={"help": "The trained model folder (the demo's train/final)."})
    untrained: str = field(default="embedded", metadata={"help": "The model before training."})
    problems_per_wording: int = field(default=16, metadata={"help": "Problems in each of the four wordings."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation limit (the demo's default)."})
    system_prompt: str = field(default=DEMO_SYSTEM_PROMPT, metadata={"help": (
        "System prompt of both models' episodes (the demo's default; give the one the trained model was trained "
        "with).")})
    seed: int = field(default=7, metadata={"help": "Seed of the facts (another than the demo's sets use)."})
    output_dir: str = field(default=os.path.join("runs", "new_wordings"), metadata={"help": "Folder for everything."})


def new_wording_rows(per_wording: int, seed: int) -> list[dict]:
    """Problem rows (the data-file schema) in NEW_WORDINGS, ops in turn, no fact twice."""
    rng, rows, seen = random.Random(seed), [], set()
    for name, templates in NEW_WORDINGS.items():
        for index in range(per_wording):
            op = "+-*"[index % 3]
            while True:
                a, b = rng.randint(1, 9), rng.randint(1, 9)
                a, b = (max(a, b), min(a, b)) if op == "-" else (a, b)
                if (op, a, b) not in seen:
                    seen.add((op, a, b))
                    break
            value = {"+": a + b, "-": a - b, "*": a * b}[op]
            text = templates[op].format(a=a, b=b, a_word=NUMBER_WORDS[a], b_word=NUMBER_WORDS[b])
            rows.append({"id": f"new_wording/{name}/{index}", "problem": text, "answer": str(value),
                         "solution": f"${a} {op} {b} = {value}$. The answer is $\\boxed{{{value}}}$.",
                         "type": "arithmetic", "level": 1, "source": "synthetic", "wording": name})
    return rows


def evaluate(model: str, eval_file: str, folder: str, cfg: NewWordingsConfig) -> dict[str, dict]:
    """id -> first-attempt record of `model` on the rows (greedy, one attempt)."""
    apo = A_PO_Config(model=model, correction_mode="none", max_correction_turns=1, system_prompt=cfg.system_prompt,
                      seed=cfg.seed)
    eval_cfg = evaluate_apo.EvalConfig(eval_file=eval_file, output_dir=folder, eval_max_new_tokens=cfg.max_new_tokens,
                                       eval_batch_size=64, bootstrap_resamples=200, resume=False)
    evaluate_apo.main(apo, eval_cfg)
    return first_attempts(read_generations(os.path.join(folder, "generations.jsonl")))


def main(cfg: NewWordingsConfig) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = new_wording_rows(cfg.problems_per_wording, cfg.seed)
    os.makedirs(cfg.output_dir, exist_ok=True)
    eval_file = os.path.join(cfg.output_dir, "new_wordings.jsonl")
    write_jsonl_atomic(eval_file, rows)
    before = evaluate(cfg.untrained, eval_file, os.path.join(cfg.output_dir, "untrained"), cfg)
    after = evaluate(cfg.trained, eval_file, os.path.join(cfg.output_dir, "trained"), cfg)
    report = {"config": asdict(cfg), "by_wording": {}}
    lines = ["| wording | problems | untrained | trained | gained / lost | sign test p |", "|---|---|---|---|---|---|"]
    for name in [*NEW_WORDINGS, "all"]:
        ids = [r["id"] for r in rows if name in ("all", r["wording"])]
        changes = paired_changes({i: before[i] for i in ids}, {i: after[i] for i in ids})
        right = [changes["before_correct"], changes["after_correct"]]
        report["by_wording"][name] = {**changes, "untrained_correct": right[0], "trained_correct": right[1]}
        lines.append(f"| {name} | {len(ids)} | {right[0]}/{len(ids)} | {right[1]}/{len(ids)} | "
                     f"{changes['gained']} / {changes['lost']} | {changes['p_value']:.3f} |")
    report["table_markdown"] = "\n".join(lines)
    print(report["table_markdown"])
    write_json_atomic(os.path.join(cfg.output_dir, "new_wordings.json"), report)
    return report


if __name__ == "__main__":
    main(parse_config((NewWordingsConfig,))[0])
