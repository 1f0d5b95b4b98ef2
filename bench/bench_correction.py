"""Benchmark: a small end-to-end self-correction training run, with the verifier metrics per iteration.

It writes synthetic MATH-style problems (apo.synthetic, labelled synthetic), runs
train_math_apo.main with --train_correction (stage 1 V*, then stage 2 on whole PAG episodes:
attempt, verify, revise after "wrong"), and prints and saves, per iteration, the metrics that
apo.correction logs: Acc@t1, Acc@final, the transitions, the verifier's accuracy and
recalls, the verdict parse-failure and revision rates, the per-role rewards and the collapse
guard. What it proves on a CPU is the mechanics (every turn rewarded, baselined and trained,
the metrics moving with the policy), not that a 135M model learns to verify: that takes a
GPU, a 1.5B instruct model and hundreds of iterations (PAG: 30.3% -> 81.7% verifier accuracy).

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_correction.py                 # embedded model, CPU
    .venv/bin/python bench/bench_correction.py --max_steps 8 --policy_loss apo
    .venv/bin/python bench/bench_correction.py --model Qwen/Qwen2.5-1.5B-Instruct --num_problems 512 \\
        --prompts_per_step 64 --max_steps 50 --max_new_tokens 1024 --temperature 1.0 --top_p 1.0   # one GPU

On a CPU shared by several jobs, OMP_NUM_THREADS=1 avoids thread oversubscription (measured
here: stage 1 of 8 prompts x 2 samples took 44 s with it, and had not finished after 19 min
without it at load average 15).

Outputs under --output_dir: data/{train,eval}.jsonl, the trainer's outputs (metrics.jsonl,
stage1_values.jsonl, checkpoints) and bench_correction.json (per-iteration metrics, settings).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apo.config import A_PO_Config, config_to_dict, parse_config  # noqa: E402
from apo.records import write_json_atomic  # noqa: E402
from apo.correction import CorrectionTrainingConfig  # noqa: E402
from apo.synthetic import generate_problems  # noqa: E402

# Bench defaults, overridable by flags: the embedded model, short turns, mild sampling (a 135M
# model at temperature 1.0 mostly produces noise), a large LoRA step so that a few iterations move it.
BENCH_DEFAULTS = [
    "--model", "embedded", "--train_correction", "true", "--max_correction_turns", "2",
    "--max_new_tokens", "48", "--temperature", "0.7", "--top_p", "0.95", "--num_value_samples", "2",
    "--policy_loss", "awr", "--policy_learning_rate", "1e-3", "--generation_batch_size", "8",
    "--grading_workers", "1", "--value_epochs", "2",
    # a run of a few dozen verifications: heads and the collapse guard start early enough to be seen
    "--turn_baseline_warmup", "8", "--collapse_window", "32", "--collapse_min_verdicts", "8",
]
REPORTED = [
    "acc_t1", "acc_final", "delta_i_to_c", "delta_c_to_i", "verifier_accuracy", "verifier_recall_on_correct",
    "verifier_recall_on_wrong", "verdict_parse_failure_rate", "said_wrong_rate", "revision_rate",
    "reward/attempt", "reward/verify", "reward/revise", "collapse_flag", "loss", "seconds_per_step",
]


@dataclass
class BenchConfig:
    """Size of the benchmark run."""

    output_dir: str = field(default=os.path.join("outputs", "bench_correction"), metadata={"help": "Where to write."})
    num_problems: int = field(default=16, metadata={"help": "Synthetic training problems."})
    num_eval_problems: int = field(default=4, metadata={"help": "Synthetic held-out problems (greedy check at the end)."})
    levels: str = field(default="1", metadata={"help": "Comma-separated synthetic levels (1-5)."})
    types: str = field(default="arithmetic,linear_equations,percentages,gcd_lcm", metadata={"help": (
        "Comma-separated synthetic problem types.")})
    prompts_per_step: int = field(default=4, metadata={"help": "Episodes per iteration."})
    max_steps: int = field(default=4, metadata={"help": "Stage-2 iterations."})
    micro_batch_size: int = field(default=4, metadata={"help": "Sequences per forward/backward pass."})


def write_problems(bench: BenchConfig, seed: int) -> tuple[str, str]:
    """Disjoint synthetic train/eval JSONL files under output_dir/data; returns their paths."""
    levels = [int(level) for level in bench.levels.split(",")]
    types = [name.strip() for name in bench.types.split(",")]
    rows = generate_problems(bench.num_problems + bench.num_eval_problems, seed, levels, types)
    folder = os.path.join(bench.output_dir, "data")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, part in (("train", rows[:bench.num_problems]), ("eval", rows[bench.num_problems:])):
        path = os.path.join(folder, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in part)
        paths.append(path)
    return paths[0], paths[1]


def format_row(record: dict) -> str:
    cells = []
    for key in REPORTED:
        value = record.get(key)
        cells.append(f"{key} {'-' if value is None else f'{value:.3f}'}")
    return f"step {record['step']} | " + " | ".join(cells)


def main(cfg: tuple[A_PO_Config, BenchConfig, CorrectionTrainingConfig]) -> dict:
    apo, bench, correction = cfg
    import train_math_apo
    from apo.records import read_metrics_lines

    # --- data ---
    train_file, eval_file = write_problems(bench, apo.seed)

    # --- stage 1 and stage 2 with --train_correction, through the trainer's main ---
    train = train_math_apo.TrainConfig(
        data_file=train_file, eval_file=eval_file, output_dir=bench.output_dir, stage="all",
        max_steps=bench.max_steps, prompts_per_step=bench.prompts_per_step, optimizer_steps_per_iteration=1,
        micro_batch_size=bench.micro_batch_size, eval_every=0, eval_size=bench.num_eval_problems,
        eval_at_start=False, save_every=0, keep_checkpoints=1, overwrite_output_dir=True)  # a re-run replaces it
    started = time.perf_counter()
    summary, error = None, None
    try:
        summary = train_math_apo.main((apo, train, correction))
    except Exception as err:  # recorded with the iterations already logged, then re-raised
        error = f"{type(err).__name__}: {err}"
        raise
    finally:
        # --- per-iteration verifier metrics ---
        seconds = time.perf_counter() - started
        steps = [r for r in read_metrics_lines(os.path.join(bench.output_dir, "metrics.jsonl")) if "acc_t1" in r]
        for record in steps:
            print(format_row(record))
        result = {"settings": config_to_dict(apo, bench, correction), "seconds": seconds, "steps": steps,
                  "trainer_summary": summary, "trainer_error": error}
        path = os.path.join(bench.output_dir, "bench_correction.json")
        write_json_atomic(path, result)
        print(f"{len(steps)} iterations in {seconds:.0f} s; written {path}" + (f"; the trainer failed: {error}" if error else ""))
    return result


if __name__ == "__main__":
    main(parse_config((A_PO_Config, BenchConfig, CorrectionTrainingConfig), BENCH_DEFAULTS + sys.argv[1:]))
