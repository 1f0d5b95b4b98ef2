"""Stage 3: evaluate self-correction on held-out MATH problems, with numbers a reviewer can recompute.

Each problem (x each sample) runs one self-correction episode (apo.episodes.run_episodes,
PAG protocol: attempt, verify, revise after "The answer is wrong", up to max_correction_turns
attempts); every attempt is graded with apo.grading. Output folder:

  generations.jsonl   one record per problem x sample x turn (apo.metrics' schema), appended
                      per finished chunk: a re-run with --resume true (default) continues
  metrics.json        apo.metrics.compute_metrics(generations.jsonl) + a "provenance" block; beside
                      the project grader's accuracies, acc_t1_boxed_exact / acc_final_boxed_exact
                      under the official A*-PO rule (apo/strict_grading.py), to set against
                      published numbers
  results.md          first vs final attempt (both rules), then per type and per level tables
  accuracy_by_level.png, accuracy_by_type.png, transitions.png
  run_settings.json   the settings a resumed run must share with the interrupted one

    python evaluate_apo.py --model Qwen/Qwen2.5-1.5B-Instruct                  # greedy, MATH-500
    python evaluate_apo.py --model outputs/apo/final --num_samples 32 \\
        --eval_temperature 0.6 --eval_top_p 0.95 --pass_k 1 8 32             # PAG's Avg@32 setting
    python evaluate_apo.py --model embedded --limit 20 --eval_max_new_tokens 256  # CPU smoke test
    python evaluate_apo.py --model Qwen/Qwen2.5-1.5B-Instruct --models outputs/apo/final \\
        --output_dir outputs/eval_base_vs_trained    # several models: one subfolder each + comparison.md
    python evaluate_apo.py --correction_mode oracle  # writes under <output_dir>/oracle_upper_bound/
    python evaluate_apo.py --compare outputs/eval_a/metrics.json outputs/eval_b/metrics.json
    python evaluate_apo.py --model outputs/apo_paper_qwen2.5-1.5b/final --prompt_format raw --correction_mode none \\
        --eval_max_new_tokens 1024                 # the A*-PO recipe: raw prompts, first attempt only
                                                   # (a folder trained raw sets both itself)
    python evaluate_apo.py --model outputs/apo/final --generation_backend vllm \\
        --vllm_gpu_memory_utilization 0.9          # on a GPU, after pip install -r requirements-vllm.txt

The benchmark suite (apo/benchmarks.py): each benchmark runs the single-file evaluation above into
<output_dir>/<benchmark>/ (resumable per benchmark, --limit per benchmark), then summary.json and
summary.md hold one row per model and one column group per benchmark, with the protocol used:

    python evaluate_apo.py --model M --benchmarks math500 minerva_math olympiadbench amc23 aime24 gsm8k \
        --output_dir outputs/suite                                      # the decoding flags everywhere
    python evaluate_apo.py --model Qwen/Qwen2.5-1.5B --models outputs/apo_paper_qwen2.5-1.5b/final \
        --protocol apo --output_dir outputs/suite_apo    # the A*-PO paper's table (raw prompts)
    python evaluate_apo.py --model outputs/pag/final --protocol pag --output_dir outputs/suite_pag  # PAG's
    python evaluate_apo.py --compare outputs/suite_a/summary.json outputs/suite_b/summary.json

Several models: `--model` is the first, `--models` adds more; each run goes to
<output_dir>/<model name with / -> __>/ and <output_dir>/comparison.md compares them against
the first. An oracle run (retry only when the gold answer says wrong) is an upper bound, not
self-correction: its folder is named oracle_upper_bound and every title says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from importlib import metadata
from typing import Literal

import torch
from tqdm.auto import tqdm

from apo.benchmarks import (BENCHMARKS, PROTOCOLS, Decoding, Protocol, check_benchmark_names, custom_protocol,
                            default_benchmark_dir, default_math500_file, load_benchmark)
from apo.cli import run_main
from apo.config import A_PO_Config, check_backend_sampling, parse_script_config, script_fields
from apo.errors import InputError
from apo.folder_lock import hold_output_folder
from apo.metrics import episode_records, metrics_from_generations, mode_label
from apo.records import (
    append_jsonl, check_output_folder, data_difference, data_fingerprint, ensure_output_folder, read_generations,
    read_json_lines, read_problem_rows, write_json_atomic, write_jsonl_atomic, write_text_atomic,
)
from apo.stop_signal import Terminated, raise_on_sigterm
from apo.report import (build_summary, compare_runs, comparison_markdown, results_markdown, summary_line,
                        summary_markdown, write_plots)

logger = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "accelerate", "peft", "tokenizers", "math-verify", "sympy", "numpy", "vllm")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# settings a resumed run must share with the run it continues
RESUME_KEYS = ("model", "eval_file_sha256", "num_samples", "correction_mode", "max_correction_turns", "temperature",
               "top_p", "max_new_tokens", "system_prompt", "verify_prompt", "revise_prompt", "oracle_revise_prompt",
               "unparsed_verdict_revises", "seed", "grader_version", "dtype", "prompt_format", "verify_final_attempt",
               "verdict_parse")
# EvalConfig fields a --protocol sets per benchmark (giving one of them as well is an error)
PROTOCOL_FIELDS = ("num_samples", "eval_temperature", "eval_top_p", "eval_max_new_tokens", "pass_k")


@dataclass
class EvalConfig:
    """What to evaluate on, how to decode, and where the report goes."""

    _argument_group_name = "evaluate_apo.py"  # the --help section

    eval_file: str = field(default="math_eval_500.jsonl", metadata={"help": (
        "JSONL of eval rows from prepare_data.py: id, problem, answer, type, level (int or null).")})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Folder for generations, metrics, report and plots."})
    models: list[str] = field(default_factory=list, metadata={"help": (
        "Further models evaluated after --model, each into <output_dir>/<name>/, then compared in comparison.md.")})
    limit: int = field(default=0, metadata={"help": "Evaluate only the first N problems (0 = all)."})
    num_samples: int = field(default=1, metadata={"help": (
        "Episodes per problem: 1 with greedy decoding; n > 1 (needs --eval_temperature > 0) gives mean@n, maj@n, pass@k.")})
    eval_temperature: float = field(default=0.0, metadata={"help": (
        "0 = greedy decoding; the sampled convention (PAG, Avg@32) is 0.6 with --eval_top_p 0.95; at most 2."),
        "bounds": "[0, 2]"})
    eval_top_p: float = field(default=0.95, metadata={
        "help": "Nucleus top_p when eval_temperature > 0 (ignored by greedy).", "bounds": "(0, 1]"})
    eval_max_new_tokens: int = field(default=2048, metadata={"help": (
        "Generation limit per turn (2048 suits Qwen2.5 on MATH); the truncation rate is reported.")})
    eval_batch_size: int = field(default=64, metadata={"help": (
        "Episodes per run_episodes call; also the resume granularity (generations.jsonl is appended per chunk).")})
    pass_k: list[int] = field(default_factory=lambda: [1], metadata={"help": "k values of pass@k, each <= num_samples."})
    bootstrap_resamples: int = field(default=2000, metadata={"help": "Bootstrap resamples for the 95 percent intervals."})
    unparsed_verdict_revises: bool = field(default=True, metadata={"help": (
        "Revise after an unparseable verdict (PAG's evaluation convention).")})
    compare: list[str] = field(default_factory=list, metadata={"help": (
        "metrics.json files to compare side by side (no evaluation is run); writes <output_dir>/comparison.md.")})
    resume: bool = field(default=True, metadata={"help": (
        "Continue an interrupted run in output_dir (same settings required); false refuses a non-empty folder.")})
    skip_long_prompts: bool = field(default=False, metadata={"help": (
        "A problem whose first prompt (chat template included) plus eval_max_new_tokens exceeds the model's "
        "context window is refused before the model loads, naming its id; true skips such problems instead "
        "(counted, and listed in metrics.json's provenance and in results.md).")})
    # --- benchmark suite (apo/benchmarks.py); replaces --eval_file when given ---
    benchmarks: list[str] = field(default_factory=list, metadata={"help": (
        f"Run these benchmarks ({', '.join(BENCHMARKS)}) into <output_dir>/<benchmark>/ and write "
        "<output_dir>/summary.json and summary.md; --limit applies per benchmark. Default with --protocol: "
        "the paper's benchmarks.")})
    protocol: Literal["custom", "apo", "pag"] = field(default="custom", metadata={"help": (
        "Decoding per benchmark: 'apo' = the A*-PO paper's (greedy, AMC23 Avg@32), 'pag' = PAG's (Avg@32 at 0.6/0.95, "
        "self-verify), 'custom' = the decoding flags for every benchmark. Written into summary.json.")})
    benchmark_dir: str = field(default_factory=default_benchmark_dir, metadata={"help": (
        "Folder of <benchmark>.jsonl files (benchmark_data/README.md's schema); default: the repository's "
        "benchmark_data (shipped with it).")})
    math500_file: str = field(default_factory=default_math500_file, metadata={"help": (
        "MATH-500 for the suite (MATH's schema); default: the repository's benchmark_data/math500.jsonl.")})
    benchmark_source: Literal["local", "hub"] = field(default="local", metadata={"help": (
        "'local' = the files above; 'hub' = datasets.load_dataset with the ids in apo/benchmarks.py (where its "
        "rows differ from the shipped copy is logged).")})

    def __post_init__(self) -> None:
        checks = [
            ("limit", self.limit >= 0, "use 0 for all problems or a positive count"),
            ("num_samples", self.num_samples >= 1, "use 1 (greedy) or more samples per problem"),
            ("eval_temperature", self.eval_temperature >= 0, "use 0 for greedy or a positive temperature such as 0.6"),
            ("eval_top_p", 0 < self.eval_top_p <= 1, "use a value in (0, 1] such as 0.95"),
            ("eval_max_new_tokens", self.eval_max_new_tokens >= 1, "use a positive token count such as 2048"),
            ("eval_batch_size", self.eval_batch_size >= 1, "use a positive number of episodes"),
            ("bootstrap_resamples", self.bootstrap_resamples >= 100, "use 100 or more (default 2000)"),
            ("num_samples", not (self.num_samples > 1 and self.eval_temperature == 0),
             "greedy decoding gives identical samples; set --eval_temperature 0.6 --eval_top_p 0.95 for n > 1"),
            ("pass_k", bool(self.pass_k) and all(1 <= k <= self.num_samples for k in self.pass_k),
             f"give k values in 1..num_samples={self.num_samples}"),
        ]
        for name, ok, fix in checks:
            if not ok:
                raise InputError(f"EvalConfig.{name}={getattr(self, name)!r} is invalid: {fix}.")
        check_benchmark_names(self.benchmarks)
        if self.protocol != "custom":
            changed = [f"--{f.name}" for f in dataclasses.fields(self)
                       if f.name in PROTOCOL_FIELDS and getattr(self, f.name) != _field_default(f)]
            if changed:
                raise InputError(f"EvalConfig.protocol={self.protocol!r} sets the decoding per benchmark; drop "
                                 f"{' '.join(changed)} or use --protocol custom.")


def _field_default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def main(cfg: A_PO_Config, eval_cfg: EvalConfig) -> dict:
    """Evaluate cfg.model (and eval_cfg.models); returns cfg.model's metrics (with provenance).

    With eval_cfg.compare, only compares those metrics.json (or summary.json) files and returns
    {"runs": [paths], "markdown": table}. With eval_cfg.benchmarks or a protocol, runs the benchmark
    suite instead of eval_file and returns the summary (run_suite).
    """
    check_output_folder(eval_cfg.output_dir)

    with hold_output_folder(eval_cfg.output_dir):  # one run per folder, held to the end
        # --- comparison of finished runs ---
        if eval_cfg.compare:
            comparison = compare_runs(eval_cfg.compare, eval_cfg.output_dir)
            print(comparison["markdown"])
            return comparison

        check_backend_sampling(eval_cfg, cfg.generation_backend, "eval_temperature")  # samples are separate requests
        if cfg.generation_backend == "vllm":
            from apo.vllm_engine import require_vllm

            require_vllm()  # before anything is loaded
        models = [cfg.model] + list(eval_cfg.models)
        if len(set(models)) != len(models):
            raise InputError(f"--model and --models name a model twice: {models}")

        # --- benchmark suite ---
        if eval_cfg.benchmarks or eval_cfg.protocol != "custom":
            return run_suite(cfg, eval_cfg, models)

        # --- eval problems ---
        rows = read_problem_rows(eval_cfg.eval_file, require_answer=False, limit=eval_cfg.limit)

        # --- one run per model ---
        runs = {}
        for model in models:
            model_cfg = with_trained_prompt_format(dataclasses.replace(cfg, model=model))
            run_dir = run_folder(eval_cfg.output_dir, model, several=len(models) > 1, mode=model_cfg.correction_mode)
            runs[model] = evaluate_model(model_cfg, eval_cfg, rows, run_dir)

        # --- comparison across models ---
        if len(models) > 1:
            table = comparison_markdown([(model, metrics) for model, metrics in runs.items()])
            write_text_atomic(os.path.join(eval_cfg.output_dir, "comparison.md"), table)
            print(table)
        return runs[cfg.model]


def run_suite(cfg: A_PO_Config, eval_cfg: EvalConfig, models: list[str]) -> dict:
    """Evaluate every model on every benchmark with the protocol's decoding, each run through
    evaluate_model into <output_dir>[/<model slug>]/<benchmark>/ (resumable per benchmark), then write
    <output_dir>/summary.json and summary.md. Returns the summary (apo.report.build_summary)."""
    # --- protocol and benchmarks (every file is found before any generation) ---
    protocol = suite_protocol(cfg, eval_cfg)
    names = list(eval_cfg.benchmarks) or list(protocol.benchmarks)
    loaded = {name: load_benchmark(name, source=eval_cfg.benchmark_source, benchmark_dir=eval_cfg.benchmark_dir,
                                   math500_file=eval_cfg.math500_file, limit=eval_cfg.limit) for name in names}
    eval_files = {name: suite_eval_file(eval_cfg.output_dir, name, rows, origin)
                  for name, (rows, origin) in loaded.items()}

    # --- one run per model x benchmark ---
    runs: dict[str, dict[str, dict]] = {}
    run_dirs: dict[str, dict[str, str]] = {}
    for model in models:
        model_cfg = with_trained_prompt_format(dataclasses.replace(
            cfg, model=model, correction_mode=protocol.correction_mode or cfg.correction_mode,
            max_correction_turns=protocol.max_correction_turns or cfg.max_correction_turns,
            prompt_format=protocol.prompt_format or cfg.prompt_format))
        base = run_folder(eval_cfg.output_dir, model, several=len(models) > 1, mode=model_cfg.correction_mode)
        runs[model], run_dirs[model] = {}, {}
        for name in names:
            run_dirs[model][name] = os.path.join(base, name)
            bench_cfg = benchmark_eval_config(eval_cfg, protocol.decoding(name), eval_files[name])
            runs[model][name] = evaluate_model(model_cfg, bench_cfg, loaded[name][0], run_dirs[model][name])

    # --- summary.json and summary.md ---
    described = protocol.describe(names, model_cfg.correction_mode, model_cfg.max_correction_turns)
    summary = build_summary(runs, described, {n: origin for n, (_, origin) in loaded.items()}, run_dirs,
                            limit=eval_cfg.limit)
    write_json_atomic(os.path.join(eval_cfg.output_dir, "summary.json"), summary)
    table = summary_markdown(summary)
    write_text_atomic(os.path.join(eval_cfg.output_dir, "summary.md"), table)
    print(table)
    return summary


def suite_protocol(cfg: A_PO_Config, eval_cfg: EvalConfig) -> Protocol:
    """The protocol of eval_cfg (custom: the decoding flags). Raises InputError when a paper's
    protocol fixes the correction setting or the prompt format and the command line changed it too."""
    if eval_cfg.protocol == "custom":
        return custom_protocol(Decoding(num_samples=eval_cfg.num_samples, temperature=eval_cfg.eval_temperature,
                                        top_p=eval_cfg.eval_top_p, max_new_tokens=eval_cfg.eval_max_new_tokens,
                                        pass_k=tuple(eval_cfg.pass_k)))
    protocol = PROTOCOLS[eval_cfg.protocol]
    defaults = A_PO_Config()
    for name in ("correction_mode", "max_correction_turns", "prompt_format"):
        if getattr(protocol, name) is not None and getattr(cfg, name) not in (getattr(defaults, name),
                                                                               getattr(protocol, name)):
            raise InputError(f"--protocol {protocol.name} sets {name}={getattr(protocol, name)!r}; drop --{name} "
                             f"{getattr(cfg, name)!r} or use --protocol custom")
    return protocol


def benchmark_eval_config(eval_cfg: EvalConfig, decoding: Decoding, eval_file: str) -> EvalConfig:
    """eval_cfg with one benchmark's file and decoding (the rest, e.g. batch size and resume, unchanged)."""
    return dataclasses.replace(eval_cfg, eval_file=eval_file, num_samples=decoding.num_samples,
                               eval_temperature=decoding.temperature, eval_top_p=decoding.top_p,
                               eval_max_new_tokens=decoding.max_new_tokens, pass_k=list(decoding.pass_k),
                               protocol="custom", benchmarks=[], models=[])


def suite_eval_file(output_dir: str, name: str, rows: list[dict], origin: str) -> str:
    """The file a benchmark run names (and fingerprints) in its settings: the local benchmark file, or
    for hub rows their copy written to <output_dir>/hub_benchmarks/<name>.jsonl."""
    if not origin.startswith("hub:"):
        return origin
    path = os.path.join(output_dir, "hub_benchmarks", f"{name}.jsonl")
    write_jsonl_atomic(path, rows)
    return path


def evaluate_model(cfg: A_PO_Config, eval_cfg: EvalConfig, rows: list[dict], run_dir: str) -> dict:
    """Generate (resuming), grade, then compute metrics from generations.jsonl alone and write the report."""
    from apo.grading import GRADER_VERSION, GradingReport

    identity = model_identity(cfg.model, cfg.model_cache_dir)  # an unknown model fails here, before any file
    cfg = with_trained_prompt_format(cfg)  # main and run_suite did it already; a direct caller gets it too
    rows, skipped = drop_long_prompts(cfg, eval_cfg, rows)  # before the model loads
    ensure_output_folder(run_dir)
    generations_path = os.path.join(run_dir, "generations.jsonl")
    settings = run_settings(cfg, eval_cfg, GRADER_VERSION)

    # --- resume: keep finished episodes, drop a partial chunk ---
    settings["eval_rows"] = data_fingerprint(eval_cfg.eval_file, rows)
    finished = prepare_run_folder(run_dir, settings, eval_cfg.resume, rows)
    work = [(row, sample) for row in rows for sample in range(eval_cfg.num_samples)]
    todo = [(position, row, sample) for position, (row, sample) in enumerate(work) if (row["id"], sample) not in finished]
    write_json_atomic(os.path.join(run_dir, "eval_config.json"), used_config(cfg, eval_cfg))

    # --- generate and grade, appending per chunk ---
    grading_report = GradingReport()
    if todo:
        try:
            with raise_on_sigterm():
                generate_and_grade(cfg, eval_cfg, todo, generations_path, grading_report, total=len(work),
                                   done=len(work) - len(todo), running=finished)
        except Terminated:
            kept = {(r["id"], r["sample"]) for r in _finished_records(generations_path)[0]}
            sys.stderr.write(f"evaluate_apo.py: stopped by SIGTERM; {generations_path} keeps {len(kept)} of "
                             f"{len(work)} episodes of {cfg.model} (every finished chunk of --eval_batch_size). "
                             "Run the same command again to continue from there (--resume true, the default).\n")
            raise SystemExit(128 + signal.SIGTERM) from None

    # --- metrics from generations.jsonl alone ---
    metrics = metrics_from_generations(generations_path, pass_k=tuple(eval_cfg.pass_k),
                                       bootstrap_resamples=eval_cfg.bootstrap_resamples, bootstrap_seed=cfg.seed)
    metrics["provenance"] = provenance(cfg, eval_cfg, settings, identity, grading_report)
    metrics["provenance"]["skipped_long_prompts"] = skipped
    write_json_atomic(os.path.join(run_dir, "metrics.json"), metrics)

    # --- report: results.md and plots ---
    write_text_atomic(os.path.join(run_dir, "results.md"), results_markdown(metrics))
    write_plots(metrics, run_dir)
    print(summary_line(metrics))
    return metrics


# --- input ---


def drop_long_prompts(cfg: A_PO_Config, eval_cfg: EvalConfig, rows: list[dict]) -> tuple[list[dict], dict]:
    """(rows that fit, {"count", "ids", "context_window"} of those skipped).

    A problem does not fit when its first prompt (apo.prompts.encode_problem in cfg.prompt_format) plus
    eval_max_new_tokens exceeds the model's context window (max_position_embeddings). Only the
    tokenizer and the model's config are loaded. Raises InputError naming the ids and the flag
    unless eval_cfg.skip_long_prompts; a model config without a context window is logged and
    nothing is checked.
    """
    from transformers import AutoConfig

    from apo.models import load_tokenizer, resolve_model_path
    from apo.prompts import encode_problem

    context = getattr(AutoConfig.from_pretrained(resolve_model_path(cfg.model, cfg.model_cache_dir)),
                      "max_position_embeddings", None)
    if context is None:
        logger.warning("%s: its config has no max_position_embeddings; prompt lengths are not checked", cfg.model)
        return rows, {"count": 0, "ids": [], "context_window": None}
    budget = context - eval_cfg.eval_max_new_tokens
    template = len(cfg.system_prompt.encode("utf-8")) + 256  # chat-template tokens, generously
    # A byte-level BPE token covers at least one byte, so a problem of fewer bytes than the budget fits.
    suspects = [row for row in rows if len(row["problem"].encode("utf-8")) + template > budget]
    tokenizer = load_tokenizer(cfg.model, cfg.model_cache_dir) if suspects else None
    long_ids = {row["id"]: len(encode_problem(tokenizer, row["problem"], cfg.prompt_format, cfg.system_prompt))
                for row in suspects}
    long_ids = {problem_id: tokens for problem_id, tokens in long_ids.items() if tokens > budget}
    if not long_ids:
        return rows, {"count": 0, "ids": [], "context_window": context}
    listed = ", ".join(f"{problem_id} ({tokens} tokens)" for problem_id, tokens in list(long_ids.items())[:10])
    what = (f"{len(long_ids)} problems of {eval_cfg.eval_file} have a first prompt longer than {budget} tokens "
            f"(context window {context} - eval_max_new_tokens {eval_cfg.eval_max_new_tokens}): {listed}")
    if not eval_cfg.skip_long_prompts:
        raise InputError(f"{what}; remove them, or pass --skip_long_prompts true to skip them (listed in results.md)")
    logger.warning("skipping %s", what)
    return ([row for row in rows if row["id"] not in long_ids],
            {"count": len(long_ids), "ids": list(long_ids), "context_window": context})


def gold_is_gradable(gold: str | None) -> bool:
    """A gold answer that is missing or blank cannot be graded; such problems are reported, not scored."""
    return gold is not None and gold.strip() != ""


# --- output folder and resume ---


def run_folder(output_dir: str, model: str, *, several: bool, mode: str) -> str:
    """output_dir, or output_dir/<model slug> when several models run; oracle runs go one level
    deeper, into oracle_upper_bound/, so no file of an upper bound passes for self-correction."""
    folder = os.path.join(output_dir, model_slug(model)) if several else output_dir
    return os.path.join(folder, "oracle_upper_bound") if mode == "oracle" else folder


def model_slug(model: str) -> str:
    """File-system name of a model: `Qwen/Qwen2.5-1.5B-Instruct` -> `Qwen__Qwen2.5-1.5B-Instruct`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model.strip("/").replace("/", "__")) or "model"


def run_settings(cfg: A_PO_Config, eval_cfg: EvalConfig, grader_version: str) -> dict:
    """The settings that decide the generations (compared on resume)."""
    return {
        "model": cfg.model, "eval_file": eval_cfg.eval_file, "eval_file_sha256": file_sha256(eval_cfg.eval_file),
        "num_samples": eval_cfg.num_samples, "correction_mode": cfg.correction_mode,
        "max_correction_turns": cfg.max_correction_turns, "temperature": eval_cfg.eval_temperature,
        "top_p": eval_cfg.eval_top_p, "max_new_tokens": eval_cfg.eval_max_new_tokens,
        "system_prompt": cfg.system_prompt, "verify_prompt": cfg.verify_prompt, "revise_prompt": cfg.revise_prompt,
        "oracle_revise_prompt": cfg.oracle_revise_prompt,
        "unparsed_verdict_revises": eval_cfg.unparsed_verdict_revises, "seed": cfg.seed,
        "grader_version": grader_version, "dtype": cfg.dtype, "eval_batch_size": eval_cfg.eval_batch_size,
        "prompt_format": cfg.prompt_format, "verify_final_attempt": cfg.verify_final_attempt,
        "verdict_parse": cfg.verdict_parse, "generation_backend": cfg.generation_backend,
    }


def prepare_run_folder(run_dir: str, settings: dict, resume: bool, rows: list[dict]) -> set[tuple[str, int]]:
    """Finished (id, sample) pairs already in run_dir/generations.jsonl.

    A resumed run must match the saved run_settings.json on RESUME_KEYS (InputError naming the
    differing keys) and evaluate the same rows as far as the saved run went (settings["eval_rows"],
    apo.records.data_fingerprint; InputError naming the file and the first differing id).
    Records of unfinished episodes (an interrupted chunk, a half-written last line) are dropped
    and the file is rewritten atomically. Raises InputError when resume is False and the folder
    already holds generations, or when they name ids not in the eval file.
    """
    generations_path = os.path.join(run_dir, "generations.jsonl")
    settings_path = os.path.join(run_dir, "run_settings.json")
    has_generations = os.path.isfile(generations_path) and os.path.getsize(generations_path) > 0
    if has_generations and not resume:
        raise InputError(f"{generations_path} exists; pass --resume true to continue it or choose another --output_dir")
    if not has_generations:
        write_json_atomic(settings_path, settings)
        write_text_atomic(generations_path, "")
        return set()
    if not os.path.isfile(settings_path):
        raise InputError(f"{generations_path} exists without {settings_path}; choose another --output_dir")
    with open(settings_path, encoding="utf-8") as handle:
        saved = json.load(handle)
    if "eval_rows" in saved:  # the rows decide, not the file's bytes: a larger --limit may continue
        difference = data_difference(saved["eval_rows"], settings["eval_file"], rows, rows_may_follow=True)
        if difference:
            raise InputError(f"{difference}; cannot resume {run_dir}, whose generations answer other problems; "
                             "use another --output_dir")
    row_ids = {row["id"] for row in rows}
    differing = [key for key in RESUME_KEYS if saved.get(key) != settings[key]
                 and not (key == "eval_file_sha256" and "eval_rows" in saved)]
    if differing:
        details = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {settings[k]!r}" for k in differing)
        raise InputError(f"cannot resume {run_dir}: settings differ ({details}); use another --output_dir")
    kept, dropped = _finished_records(generations_path)
    unknown = sorted({r["id"] for r in kept} - row_ids)
    if unknown:
        raise InputError(f"{generations_path} holds ids that are not among the {len(row_ids)} problems evaluated now "
                         f"(e.g. {unknown[:3]}; a smaller --limit?); raise --limit or use another --output_dir")
    if dropped:
        logger.warning("resume: dropped %d records of unfinished episodes from %s", dropped, generations_path)
        write_jsonl_atomic(generations_path, kept)
    finished = {(r["id"], r["sample"]) for r in kept}
    logger.info("resume: %d finished episodes in %s", len(finished), generations_path)
    return finished


def _finished_records(path: str) -> tuple[list[dict], int]:
    """Records of complete episodes, and how many records were dropped: a torn last line (an
    interrupted write) and the records of episodes it left unfinished. Any other bad line raises
    InputError naming it (apo.records.read_generations)."""
    lines = sum(1 for line in read_json_lines(path))
    records = read_generations(path, allow_empty=True)
    counts: dict[tuple[str, int], int] = {}
    for record in records:
        counts[(record["id"], record["sample"])] = counts.get((record["id"], record["sample"]), 0) + 1
    kept = [r for r in records if counts[(r["id"], r["sample"])] == r["episode_turns"]]
    return kept, lines - len(kept)


# --- generation and grading ---


def generate_and_grade(cfg: A_PO_Config, eval_cfg: EvalConfig, todo: list[tuple[int, dict, int]],
                       generations_path: str, grading_report, *, total: int, done: int,
                       running: set[tuple[str, int]]) -> None:
    """Run the episodes of `todo` (position, row, sample) in chunks of eval_batch_size, grade every
    attempt and append each finished chunk to generations.jsonl. Chunk k is seeded with
    cfg.seed + the position of its first episode, so a resumed sampled run draws the same samples."""
    from apo.decoding import resolve_rollout_dtype
    from apo.episodes import run_episodes
    from apo.models import load_model, load_tokenizer, resolve_model_path

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(cfg.model, cfg.model_cache_dir)
    if cfg.generation_backend == "vllm":  # every turn of every episode goes through the engine
        from apo.vllm_engine import create_engine

        model = create_engine(resolve_model_path(cfg.model, cfg.model_cache_dir), cfg)
    else:
        model = load_model(cfg.model, cfg.model_cache_dir, cfg.dtype, device)
        decode_dtype = resolve_rollout_dtype(cfg.rollout_dtype, model.dtype, device)
        if decode_dtype is not None:  # evaluation only decodes: the model itself is cast (--rollout_dtype)
            logger.info("decoding in %s (--rollout_dtype %s)", decode_dtype, cfg.rollout_dtype)
            model = model.to(decode_dtype)
    tally = _RunningAccuracy.from_file(generations_path) if running else _RunningAccuracy()
    bar = tqdm(total=total, initial=done, desc=f"eval {cfg.model}", unit="episode")
    for start in range(0, len(todo), eval_cfg.eval_batch_size):
        chunk = todo[start:start + eval_cfg.eval_batch_size]
        golds = [row["answer"] for _, row, _ in chunk]
        torch.manual_seed(cfg.seed + chunk[0][0])
        judge = make_oracle_judge(golds, cfg) if cfg.correction_mode == "oracle" else None
        episodes = run_episodes(model, tokenizer, [row["problem"] for _, row, _ in chunk], cfg,
                                mode=cfg.correction_mode, oracle_judge=judge, temperature=eval_cfg.eval_temperature,
                                top_p=eval_cfg.eval_top_p, max_new_tokens=eval_cfg.eval_max_new_tokens,
                                unparsed_verdict_revises=eval_cfg.unparsed_verdict_revises)
        records = grade_episodes(episodes, chunk, cfg, grading_report)
        append_jsonl(generations_path, records)
        tally.add(records)
        bar.update(len(chunk))
        bar.set_postfix_str(tally.describe())
    bar.close()
    if cfg.generation_backend == "vllm":
        model.close()  # the next model of --models starts its own engine


def make_oracle_judge(golds: list[str | None], cfg: A_PO_Config):
    """oracle_judge(problem_indices, attempt_texts) -> [is correct] for run_episodes' oracle mode (an
    UPPER BOUND). The only place a gold answer is read before grading; an ungradable gold counts as
    correct (no retry), and such problems are excluded from every rate anyway."""
    from apo.grading import grade_many

    def judge(problem_indices: list[int], attempt_texts: list[str]) -> list[bool]:
        verdicts = [True] * len(problem_indices)
        gradable = [i for i, p in enumerate(problem_indices) if gold_is_gradable(golds[p])]
        graded = grade_many([attempt_texts[i] for i in gradable], [golds[problem_indices[i]] for i in gradable],
                            timeout=cfg.grading_timeout, num_workers=cfg.grading_workers)
        for i, ok in zip(gradable, graded):
            verdicts[i] = ok
        return verdicts

    return judge


def grade_episodes(episodes: list, chunk: list[tuple[int, dict, int]], cfg: A_PO_Config, grading_report) -> list[dict]:
    """Grade every attempt/revise turn against its gold (None where the gold is ungradable), by the
    project's grader ("correct") and by the official A*-PO rule ("correct_boxed_exact"), and turn
    the episodes into per-turn records."""
    from apo.grading import extract_answer, grade_many
    from apo.strict_grading import boxed_exact

    texts, golds, owners = [], [], []
    for index, (episode, (_, row, _)) in enumerate(zip(episodes, chunk)):
        for turn in episode.attempts:
            if gold_is_gradable(row["answer"]):
                texts.append(turn.text)
                golds.append(row["answer"])
                owners.append(index)
    verdicts = iter(grade_many(texts, golds, timeout=cfg.grading_timeout, num_workers=cfg.grading_workers,
                               report=grading_report))
    records = []
    for episode, (_, row, sample) in zip(episodes, chunk):
        gradable = gold_is_gradable(row["answer"])
        correctness = [next(verdicts) if gradable else None for _ in episode.attempts]
        strict = [boxed_exact(t.text, row["answer"], truncated=t.truncated) if gradable else None
                  for t in episode.attempts]
        records += episode_records(episode, problem_row=row, sample=sample, correctness=correctness,
                                   mode=cfg.correction_mode,
                                   extracted_answers=[extract_answer(t.text) for t in episode.attempts],
                                   strict_correctness=strict)
    return records


@dataclass
class _RunningAccuracy:
    """Acc@t1 / Acc@final over the episodes written so far, for the progress bar."""

    episodes: int = 0
    right_t1: int = 0
    right_final: int = 0

    def add(self, records: list[dict]) -> None:
        firsts, finals = {}, {}
        for r in records:
            if r["role"] != "verify" and r["correct"] is not None:
                key = (r["id"], r["sample"])
                firsts.setdefault(key, r["correct"])
                finals[key] = r["correct"]
        self.episodes += len(firsts)
        self.right_t1 += sum(firsts.values())
        self.right_final += sum(finals.values())

    @classmethod
    def from_file(cls, path: str) -> "_RunningAccuracy":
        tally = cls()
        tally.add(sorted(read_generations(path), key=lambda r: r["turn"]))
        return tally

    def describe(self) -> str:
        if not self.episodes:
            return "acc@t1 n/a acc@final n/a"
        return f"acc@t1 {self.right_t1 / self.episodes:.3f} acc@final {self.right_final / self.episodes:.3f}"


# --- provenance ---


def used_config(cfg: A_PO_Config, eval_cfg: EvalConfig) -> dict:
    """The settings evaluation reads: its algorithm groups (model, episode, grading and seed) and EvalConfig."""
    return {**script_fields(cfg, "evaluate_apo.py"), **dataclasses.asdict(eval_cfg)}


def provenance(cfg: A_PO_Config, eval_cfg: EvalConfig, settings: dict, identity: dict, grading_report) -> dict:
    """Where the numbers come from: model identity, packages, prompts, sampling, seed, grader, eval file."""
    return {
        "model": identity,
        "mode_label": mode_label(cfg.correction_mode),
        "packages": {name: _package_version(name) for name in PACKAGES},
        "prompts": {"format": cfg.prompt_format, "system": cfg.system_prompt, "verify": cfg.verify_prompt,
                    "revise": cfg.revise_prompt, "oracle_revise": cfg.oracle_revise_prompt},
        "episode": {"verify_final_attempt": cfg.verify_final_attempt, "verdict_parse": cfg.verdict_parse},
        "rules": {"correct": "apo.grading.grade (the project's grader)",
                  "correct_boxed_exact": "apo.strict_grading.boxed_exact (official A*-PO: last \\boxed{} exact "
                                         "after MATH strip_string, EOS required)"},
        "sampling": {"temperature": eval_cfg.eval_temperature, "top_p": eval_cfg.eval_top_p,
                     "max_new_tokens": eval_cfg.eval_max_new_tokens, "num_samples": eval_cfg.num_samples,
                     "max_correction_turns": cfg.max_correction_turns,
                     "unparsed_verdict_revises": eval_cfg.unparsed_verdict_revises},
        "seed": cfg.seed,
        "grader_version": settings["grader_version"],
        # timeouts/errors of the grader in this invocation only (a resumed run's earlier part is not counted)
        "grading_report_this_invocation": dataclasses.asdict(grading_report),
        "eval_file": {"path": eval_cfg.eval_file, "sha256": settings["eval_file_sha256"], "limit": eval_cfg.limit},
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "config": used_config(cfg, eval_cfg),
    }


def with_trained_prompt_format(cfg: A_PO_Config) -> A_PO_Config:
    """cfg in the prompt format cfg.model was trained in, when it is a folder train_math_apo.py
    wrote (its run_config.json): a policy trained on raw prompts is evaluated on raw prompts,
    first attempts only (correction_mode none), one trained in chat format in chat format.

    cfg's defaults give way (prompt_format chat, correction_mode self_verify: the folder sets
    raw and none itself, logged); a prompt format or correction mode set otherwise that the
    folder's format cannot take raises InputError naming the flags. Folders without that file
    (hub models, other checkpoints) keep cfg.
    """
    path = os.path.join(cfg.model, "run_config.json")
    if not os.path.isfile(path):
        return cfg
    with open(path, encoding="utf-8") as handle:
        trained = json.load(handle).get("prompt_format", "chat")  # written before the field: chat
    if trained == cfg.prompt_format:
        return cfg
    defaults = A_PO_Config()
    if (trained == "raw" and cfg.prompt_format == defaults.prompt_format
            and cfg.correction_mode in (defaults.correction_mode, "none")):
        logger.info("%s was trained with prompt_format raw (%s): evaluating raw prompts, correction_mode none",
                    cfg.model, path)
        return dataclasses.replace(cfg, prompt_format="raw", correction_mode="none")
    raise InputError(f"{cfg.model} was trained with prompt_format={trained!r} ({path}); evaluate it with "
                     + ("--prompt_format raw --correction_mode none" if trained == "raw" else
                        "--prompt_format chat (--protocol apo sets raw: use --protocol custom for this model)"))


def model_identity(model: str, cache_dir: str) -> dict:
    """The model's name, resolved folder, config name, hub commit (when cached from the hub) and a
    sha256 fingerprint of its weight files' names and sizes."""
    from apo.models import resolve_model_path

    resolved = resolve_model_path(model, cache_dir)
    folder = resolved if os.path.isdir(resolved) else _hub_snapshot_folder(resolved)
    identity = {"name": model, "resolved": resolved, "hub_commit": None, "config_name_or_path": None,
                "weights_fingerprint": None}
    if folder is None:
        return identity
    parts = os.path.normpath(folder).split(os.sep)
    if len(parts) >= 2 and parts[-2] == "snapshots":
        identity["hub_commit"] = parts[-1]
    config_path = os.path.join(folder, "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            identity["config_name_or_path"] = json.load(handle).get("_name_or_path")
    weights = sorted((name, os.path.getsize(os.path.join(folder, name))) for name in os.listdir(folder)
                     if name.endswith(WEIGHT_SUFFIXES))
    identity["weights_fingerprint"] = hashlib.sha256(json.dumps(weights).encode()).hexdigest()
    identity["weight_files"] = [f"{name} ({size} bytes)" for name, size in weights]
    return identity


def _hub_snapshot_folder(repo_id: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return os.path.dirname(cached) if isinstance(cached, str) else None


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run_main(lambda argv: main(*parse_script_config("evaluate_apo.py", (EvalConfig,), argv)))
