"""Stage 0: read MATH, check it, and write the JSONL files the pipeline trains and evaluates on.

    python prepare_data.py                                        # hub: MATH train (7,500) + MATH-500
    python prepare_data.py --training_set math_12k                # MATH train + test minus MATH-500 (12,000)
    python prepare_data.py --source local --train_path MATH/train.jsonl \\
        --math500_path benchmark_data/math500.jsonl --tokenizer embedded
    python prepare_data.py --source local --train_path MATH/ --splits train,test --math500_path test500.jsonl
    python prepare_data.py --source synthetic --synthetic_levels 1,2 --synthetic_train_size 1400 \\
        --synthetic_eval_size 500 --output_dir data/synthetic --tokenizer embedded
    python prepare_data.py --source synthetic --synthetic_levels 1 --synthetic_types arithmetic \\
        --synthetic_wordings all --synthetic_heldout_wordings value_of_symbols,story_two_people \\
        --synthetic_train_size 160 --synthetic_eval_size 40 --output_dir data/wordings --tokenizer none
    python prepare_data.py --inspect_only                         # print the inspection, write nothing

Writes into --output_dir (default: the current folder, so `python train_math_apo.py --data_file
math_subset.jsonl` works next):
    math_prompts_responses.jsonl   every usable training problem
    math_subset.jsonl              --subset_size problems stratified by type x level
    math_eval_500.jsonl            MATH-500 (with --source synthetic: held-out synthetic problems)
    data_provenance.json           which training set this is (training_set, source, dataset, splits, counts)

Each row is {"id", "problem", "solution", "answer", "type", "level", "source"} (docs/ARCHITECTURE.md):
`id` is MATH's unique_id where the source has one, else a hash of the problem text; `answer` is
the content of the solution's last \\boxed{} (apo.grading.last_boxed_content); `level` is 1-5
or null for MATH's two "Level ?" rows. Synthetic level-1 arithmetic rows drawn with
--synthetic_wordings also carry `wording`, the name of their phrasing (apo/synthetic.py); the
--synthetic_heldout_wordings are kept out of the training files and make up every other such
row of the eval file.

The default hub training set is MATH's train split, 7,500 problems, as in the A*-PO and PAG
papers; the 12,000-problem set (train plus test minus MATH-500, the PRM800K split) is used only
when asked for by name (--training_set math_12k). Rules applied on the way: MATH-500 problems
are removed from the training files by unique_id and by whitespace-normalised problem text
(qwedsacf/competition_math holds all 12,500 problems in one split), and so are the problems of
--exclude_benchmarks (Minerva Math, OlympiadBench, AMC 23, AIME 24, GSM8K by default), matched
on their letters and digits only so that LaTeX spacing and brace differences do not hide a copy
(counts per benchmark are printed); problems repeated after whitespace normalisation are dropped (first kept); rows
whose answer cannot be extracted (no box, or an empty one) are reported and kept out. A
malformed line or field stops the run with its file, line and field; --skip_invalid skips such
rows and counts them. Files are written to a temporary name and renamed. The readers live in
apo/problem_files.py, the row checks and cleaning rules in apo/problem_rows.py.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from apo.benchmarks import (BENCHMARKS, check_benchmark_names, decontamination_key, default_benchmark_dir,
                            default_math500_file, load_benchmark)
from apo.cli import run_main
from apo.config import DEFAULT_MODEL, SYSTEM_PROMPT, parse_config
from apo.errors import InputError
from apo.problem_files import LOCAL_FORMATS, RawRow, read_hub, read_local
from apo.problem_rows import CleaningReport, clean_rows, exclude_benchmark_problems, exclude_eval_problems
from apo.prompts import PromptFormat, encode_problem
from apo.records import ensure_output_folder, write_json_atomic, write_jsonl_atomic
from apo.synthetic import (ARITHMETIC_WORDINGS, ORIGINAL_WORDING, SYNTHETIC_TYPES, SyntheticCapacityError,
                           generate_train_eval)

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")
# Hub datasets that are split into one configuration per subject.
HUB_SUBJECT_CONFIGS = {"EleutherAI/hendrycks_math": MATH_SUBJECTS}
# Named hub training sets: (hub splits, what the set is).
TRAINING_SETS = {
    "math_train": ("train", "MATH train split, 7,500 problems (the A*-PO and PAG papers' training set)"),
    "math_12k": ("train,test", "MATH train + test minus MATH-500, 12,000 problems (the PRM800K split)"),
}
PROVENANCE_FILE = "data_provenance.json"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class DataConfig:
    """Where MATH comes from, what is written, and how the subset is drawn."""

    source: Literal["hub", "local", "synthetic"] = field(default="hub", metadata=_help(
        "'hub' = datasets.load_dataset(--hub_dataset) plus --math500_dataset; 'local' = --train_path and "
        "--math500_path; 'synthetic' = the project's offline generator (apo/synthetic.py), never MATH."))
    training_set: Literal["math_train", "math_12k"] = field(default="math_train", metadata=_help(
        "--source hub: 'math_train' = MATH's train split, 7,500 problems (the A*-PO and PAG papers); 'math_12k' = "
        "MATH train + test minus MATH-500, 12,000 problems. Sets the default --splits; recorded in "
        "data_provenance.json."))
    hub_dataset: str = field(default="EleutherAI/hendrycks_math", metadata=_help(
        "Hub dataset with MATH problems (fields problem, level, type, solution): EleutherAI/hendrycks_math "
        "(train/test, one config per subject) or qwedsacf/competition_math (all 12,500 problems in its train split: "
        "pass --splits train, which is the 12k set once MATH-500 is removed)."))
    math500_dataset: str = field(default="HuggingFaceH4/MATH-500", metadata=_help(
        "Hub dataset with MATH-500 (split 'test'); written as the eval file and removed from training."))
    splits: str = field(default="", metadata=_help(
        "Comma-separated splits read from the hub dataset or a local MATH folder, e.g. 'train,test' "
        "(MATH-500 is removed from them either way); '' = the training_set's ('train' for math_train, "
        "'train,test' for math_12k). Not used for single local files."))
    train_path: str = field(default="", metadata=_help(
        f"--source local: training problems as {', '.join(LOCAL_FORMATS)}."))
    math500_path: str = field(default="", metadata=_help(
        "MATH-500 as a .jsonl/.json/.parquet file (overrides --math500_dataset for any source); "
        "'none' writes no eval file and excludes nothing. Required with --source local."))
    output_dir: str = field(default=".", metadata=_help("Folder the three JSONL files are written to."))
    train_file: str = field(default="math_prompts_responses.jsonl", metadata=_help(
        "File name (in output_dir) of every usable training problem."))
    subset_file: str = field(default="math_subset.jsonl", metadata=_help(
        "File name (in output_dir) of the stratified subset."))
    eval_file: str = field(default="math_eval_500.jsonl", metadata=_help("File name (in output_dir) of the eval set."))
    subset_size: int = field(default=1000, metadata=_help(
        "Problems in the subset, drawn per type x level cell in proportion to its size (all if fewer)."))
    seed: int = field(default=42, metadata=_help("Seed of the subset draw and of the synthetic generator."))
    tokenizer: str = field(default=DEFAULT_MODEL, metadata=_help(
        "Tokenizer for the prompt-length report (chat template with the system prompt): a hub id, a local "
        "folder, 'embedded' (SmolLM2-135M-Instruct), or 'none' to skip the report."))
    model_cache_dir: str = field(default=os.path.join("~", ".cache", "apo_math", "models"), metadata=_help(
        "Where the embedded model is converted once (see apo/models.py)."))
    prompt_format: PromptFormat = field(default="chat", metadata=_help(
        "Prompt format of the prompt-length report, as in training (apo/prompts.py): 'chat' or 'raw'."))
    max_prompt_length: int = field(default=512, metadata=_help(
        "Only reported: how many prompts exceed this many tokens (training drops them, see A_PO_Config)."))
    inspect_only: bool = field(default=False, metadata=_help("Print the inspection and write nothing."))
    skip_invalid: bool = field(default=False, metadata=_help(
        "Skip malformed lines and rows with missing or wrongly typed fields (counted and reported) "
        "instead of stopping at the first one."))
    synthetic_train_size: int = field(default=2000, metadata=_help("--source synthetic: training problems."))
    synthetic_eval_size: int = field(default=500, metadata=_help("--source synthetic: held-out eval problems."))
    synthetic_levels: str = field(default="1,2,3,4,5", metadata=_help(
        "--source synthetic: comma-separated levels (1 = single-digit arithmetic a 135M model can reach)."))
    synthetic_types: str = field(default="all", metadata=_help(
        f"--source synthetic: comma-separated types or 'all' ({', '.join(SYNTHETIC_TYPES)})."))
    synthetic_wordings: str = field(default="original", metadata=_help(
        "--source synthetic: wordings of level-1 arithmetic. 'original' = the one template 'What is $7 + 5$?'; "
        "'all' = every wording of apo/synthetic.py; or comma-separated names "
        f"({', '.join(ARITHMETIC_WORDINGS)}). Rows then carry a 'wording' field and no fact repeats."))
    synthetic_heldout_wordings: str = field(default="none", metadata=_help(
        "--source synthetic: comma-separated wordings kept out of training: every other level-1 arithmetic "
        "problem of the eval file is in one of them, the others in a training wording (--synthetic_wordings "
        "minus these); 'none' = no held-out wording."))
    # --- decontamination against the held-out benchmarks (apo/benchmarks.py) ---
    exclude_benchmarks: str = field(default="minerva_math,olympiadbench,amc23,aime24,gsm8k", metadata=_help(
        "Comma-separated benchmarks whose problems are removed from the training files by normalised text, as "
        f"MATH-500 is (any of {', '.join(BENCHMARKS)}); 'none' removes none. Not applied to --source synthetic."))
    benchmark_dir: str = field(default_factory=default_benchmark_dir, metadata=_help(
        "Folder of <benchmark>.jsonl files; default: the repository's benchmark_data (shipped with it)."))
    benchmark_source: Literal["auto", "local", "hub"] = field(default="auto", metadata=_help(
        "Where --exclude_benchmarks are read: 'local' = --benchmark_dir, 'hub' = the hub ids in apo/benchmarks.py "
        "(differences from the shipped copy are logged), 'auto' = local when --benchmark_dir is set (it is by "
        "default) or --source is local, else hub."))

    def __post_init__(self) -> None:
        if self.source == "local" and not self.train_path:
            raise InputError("DataConfig.train_path is empty: --source local needs --train_path "
                             f"({', '.join(LOCAL_FORMATS)}).")
        if self.source == "local" and not self.math500_path:
            raise InputError("DataConfig.math500_path is empty: --source local needs --math500_path (a MATH-500 "
                             ".jsonl/.json/.parquet file) or --math500_path none to write no eval file.")
        if self.subset_size < 0:
            raise InputError(f"DataConfig.subset_size={self.subset_size} is invalid: use 0 or more.")
        check_benchmark_names(self.exclude_benchmark_names, "--exclude_benchmarks")
        if self.synthetic_train_size < 1 or self.synthetic_eval_size < 0:
            raise InputError("DataConfig.synthetic_train_size must be >= 1 and synthetic_eval_size >= 0, got "
                             f"{self.synthetic_train_size} and {self.synthetic_eval_size}.")
        self._check_wordings()

    def _check_wordings(self) -> None:
        """One-line InputErrors for unknown wording names and for held-out wordings that cannot apply."""
        for flag, names, words in (("--synthetic_wordings", _names(self.synthetic_wordings), "'original', 'all' or "),
                                   ("--synthetic_heldout_wordings", self.heldout_wording_names, "'none' or ")):
            unknown = [name for name in names if name not in ARITHMETIC_WORDINGS and name not in words]
            if unknown:
                raise InputError(f"{flag}: unknown wordings {unknown}; use {words}names from "
                                 f"{', '.join(ARITHMETIC_WORDINGS)}")
        chosen = _names(self.synthetic_wordings)
        if len(chosen) != 1 and ("original" in chosen or "all" in chosen):
            raise InputError(f"--synthetic_wordings {self.synthetic_wordings!r}: 'original' and 'all' stand alone, "
                             "not in a list of names")
        if self.heldout_wording_names and self.training_wording_names is None:
            raise InputError("--synthetic_heldout_wordings needs --synthetic_wordings 'all' or a list of names "
                             f"(the original template is {ORIGINAL_WORDING})")
        if self.training_wording_names == ():
            raise InputError(f"--synthetic_heldout_wordings {self.synthetic_heldout_wordings!r} holds out every "
                             f"wording of --synthetic_wordings {self.synthetic_wordings!r}: leave at least one "
                             "to train on")
        level_one = "1" in _names(self.synthetic_levels)
        arithmetic = self.synthetic_types.strip() == "all" or "arithmetic" in _names(self.synthetic_types)
        if self.source == "synthetic" and self.training_wording_names is not None and not (level_one and arithmetic):
            raise InputError(f"--synthetic_wordings {self.synthetic_wordings!r} words level-1 arithmetic, which "
                             f"--synthetic_levels {self.synthetic_levels!r} / --synthetic_types "
                             f"{self.synthetic_types!r} leave out: add it, or pass --synthetic_wordings original "
                             "--synthetic_heldout_wordings none")

    @property
    def training_wording_names(self) -> tuple[str, ...] | None:
        """The wordings of level-1 arithmetic in training, or None for the original template."""
        chosen = _names(self.synthetic_wordings)
        if chosen == ["original"]:
            return None
        pool = ARITHMETIC_WORDINGS if chosen == ["all"] else chosen
        return tuple(name for name in pool if name not in self.heldout_wording_names)

    @property
    def heldout_wording_names(self) -> tuple[str, ...]:
        return () if self.synthetic_heldout_wordings.strip().lower() == "none" else \
            tuple(_names(self.synthetic_heldout_wordings))

    @property
    def effective_splits(self) -> str:
        """--splits, or the training_set's splits when it is empty."""
        return self.splits or TRAINING_SETS[self.training_set][0]

    @property
    def split_names(self) -> list[str]:
        return [s.strip() for s in self.effective_splits.split(",") if s.strip()]

    @property
    def exclude_benchmark_names(self) -> list[str]:
        if self.exclude_benchmarks.strip().lower() == "none":
            return []
        return [s.strip() for s in self.exclude_benchmarks.split(",") if s.strip()]


def _names(text: str) -> list[str]:
    """'a, b,c' -> ['a', 'b', 'c']."""
    return [name.strip() for name in text.split(",") if name.strip()]


@dataclass
class PreparedData:
    """Summary `main` returns: the written paths (None with --inspect_only), counts and both reports."""

    train_file: str | None
    subset_file: str | None
    eval_file: str | None
    num_train: int
    num_subset: int
    num_eval: int
    train_report: CleaningReport
    eval_report: CleaningReport
    provenance: dict = field(default_factory=dict)


def data_provenance(cfg: DataConfig, num_train: int, num_eval: int, math500_removed: int) -> dict:
    """What data_provenance.json records: which training set the files hold and where it came from.

    training_set is the named set for --source hub with the set's own splits, "custom" for hub
    splits given by hand, and "local" / "synthetic" for the other sources.
    """
    if cfg.source == "hub":
        named = not cfg.splits or cfg.splits == TRAINING_SETS[cfg.training_set][0]
        training_set = cfg.training_set if named else "custom"
        description = TRAINING_SETS[cfg.training_set][1] if named else f"hub splits {cfg.splits} of {cfg.hub_dataset}"
        where = {"hub_dataset": cfg.hub_dataset, "splits": cfg.effective_splits}
    elif cfg.source == "local":
        training_set, description = "local", f"local file or folder {cfg.train_path}"
        where = {"train_path": cfg.train_path, "splits": cfg.effective_splits}
    else:
        training_set, description = "synthetic", "apo/synthetic.py problems, not MATH"
        training_wordings = cfg.training_wording_names
        where = {"synthetic_levels": cfg.synthetic_levels, "synthetic_types": cfg.synthetic_types,
                 "synthetic_training_wordings": "original" if training_wordings is None else list(training_wordings),
                 "synthetic_heldout_wordings": list(cfg.heldout_wording_names)}
    return {"training_set": training_set, "description": description, "source": cfg.source, **where,
            "eval": "none" if cfg.math500_path.lower() == "none" else (cfg.math500_path or cfg.math500_dataset),
            "num_train": num_train, "num_eval": num_eval, "eval_problems_removed_from_training": math500_removed,
            "seed": cfg.seed}


# --- benchmark decontamination ---

def load_benchmark_problems(cfg: DataConfig) -> dict[str, set[str]]:
    """apo.benchmarks.decontamination_key of every problem of each of cfg.exclude_benchmarks; raises
    FileNotFoundError naming the file looked for when a local benchmark is missing."""
    source = cfg.benchmark_source
    if source == "auto":
        source = "local" if cfg.benchmark_dir or cfg.source == "local" else "hub"
    math500_file = cfg.math500_path if os.path.isfile(cfg.math500_path) else default_math500_file()
    problems = {}
    for name in cfg.exclude_benchmark_names:
        try:
            rows, _ = load_benchmark(name, source=source, benchmark_dir=cfg.benchmark_dir, math500_file=math500_file)
        except (FileNotFoundError, ConnectionError) as err:
            raise type(err)(f"--exclude_benchmarks: {err} (or --exclude_benchmarks none to skip decontamination)") \
                from None
        problems[name] = {decontamination_key(row["problem"]) for row in rows}
    return problems


# --- the stratified subset ---

def _cell(row: dict[str, Any]) -> tuple[str, int]:
    return row["type"], row["level"] if row["level"] is not None else 0


def stratified_subset(rows: list[dict[str, Any]], size: int, seed: int) -> list[dict[str, Any]]:
    """`size` rows drawn per (type, level) cell in proportion to the cell's share, in file order.

    Quotas are floor(size * cell / total) plus one for the cells with the largest remainders
    (Hamilton's method, ties in cell order), so they sum to exactly `size` and each differs from
    the exact proportion by less than one. Returns all rows when size >= len(rows).
    """
    if size >= len(rows):
        return list(rows)
    cells: dict[tuple[str, int], list[int]] = {}
    for index, row in enumerate(rows):
        cells.setdefault(_cell(row), []).append(index)
    keys = sorted(cells)
    exact = {key: size * len(cells[key]) / len(rows) for key in keys}
    quotas = {key: int(exact[key]) for key in keys}
    by_remainder = sorted(keys, key=lambda key: (-(exact[key] - quotas[key]), key))
    for key in by_remainder[: size - sum(quotas.values())]:
        quotas[key] += 1
    rng = random.Random(seed)
    chosen = [index for key in keys for index in rng.sample(cells[key], quotas[key])]
    return [rows[index] for index in sorted(chosen)]


# --- inspection ---

def count_table(rows: list[dict[str, Any]]) -> str:
    """Counts per type x level as a fixed-width text table with totals."""
    counts = Counter(_cell(row) for row in rows)
    types = sorted({row["type"] for row in rows})
    levels = [1, 2, 3, 4, 5] + ([0] if any(key[1] == 0 for key in counts) else [])
    width = max([len("type"), len("total")] + [len(t) for t in types])
    header = f"{'type':<{width}}" + "".join(f"{'L' + (str(lv) if lv else '?'):>7}" for lv in levels) + f"{'total':>8}"
    lines = [header]
    for problem_type in types + ["total"]:
        values = [sum(c for (t, lv), c in counts.items() if lv == level and problem_type in (t, "total"))
                  for level in levels]
        lines.append(f"{problem_type:<{width}}" + "".join(f"{v:>7}" for v in values) + f"{sum(values):>8}")
    return "\n".join(lines)


def prompt_token_lengths(tokenizer, problems: list[str], system_prompt: str = SYSTEM_PROMPT,
                         prompt_format: str = "chat") -> list[int]:
    """Tokens of each first-turn prompt as training builds it (apo.prompts.encode_problem): in
    `chat`, the chat template with the system prompt and the generation prompt."""
    return [len(encode_problem(tokenizer, problem, prompt_format, system_prompt)) for problem in problems]


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in [0, 100]) of an ascending, non-empty list."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def example_line(row: dict[str, Any], max_chars: int = 240) -> str:
    """One row as JSON with the problem and solution shortened for printing."""
    short = {k: (v[:max_chars] + " ..." if isinstance(v, str) and len(v) > max_chars else v) for k, v in row.items()}
    return json.dumps(short, ensure_ascii=False)


# --- the stage ---

def load_sources(cfg: DataConfig, train_report: CleaningReport,
                 eval_report: CleaningReport) -> tuple[list[RawRow], list[RawRow] | None]:
    """Raw training rows and raw eval rows (None when --math500_path none); invalid rows skipped
    with --skip_invalid are recorded in the reports."""
    train_skipped = train_report.invalid if cfg.skip_invalid else None
    eval_skipped = eval_report.invalid if cfg.skip_invalid else None
    if cfg.source == "hub":
        train_raw = read_hub(cfg.hub_dataset, cfg.split_names, HUB_SUBJECT_CONFIGS.get(cfg.hub_dataset))
    else:
        if not os.path.isdir(cfg.train_path) and cfg.splits not in ("", "train"):
            raise InputError(f"--splits {cfg.splits!r} applies to the hub and to MATH folders, not to the file "
                             f"{cfg.train_path}; leave it at 'train'")
        train_raw = read_local(cfg.train_path, cfg.split_names, train_skipped)
    if cfg.math500_path.lower() == "none":
        return train_raw, None
    if cfg.math500_path:
        return train_raw, read_local(cfg.math500_path, ["test"], eval_skipped)
    return train_raw, read_hub(cfg.math500_dataset, ["test"])


def synthetic_sets(cfg: DataConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training and held-out synthetic rows from one generator pass (so they never share a problem,
    nor with wordings a fact); held-out wordings appear in the held-out rows only."""
    levels = tuple(int(level) for level in cfg.synthetic_levels.split(","))
    types = (SYNTHETIC_TYPES if cfg.synthetic_types == "all"
             else tuple(t.strip() for t in cfg.synthetic_types.split(",")))
    try:
        return generate_train_eval(cfg.synthetic_train_size, cfg.synthetic_eval_size, cfg.seed, levels=levels,
                                   types=types, wordings=cfg.training_wording_names,
                                   heldout_wordings=cfg.heldout_wording_names)
    except SyntheticCapacityError as err:
        fits, wanted = err.fits, cfg.synthetic_train_size + cfg.synthetic_eval_size
        eval_size = cfg.synthetic_eval_size if cfg.synthetic_eval_size < fits else fits // 5
        raise InputError(
            f"--synthetic_train_size {cfg.synthetic_train_size} + --synthetic_eval_size {cfg.synthetic_eval_size} = "
            f"{wanted} problems do not fit --synthetic_levels {cfg.synthetic_levels} --synthetic_types "
            f"{cfg.synthetic_types} (seed {cfg.seed}): type {err.problem_type!r} level {err.level} ran out of "
            f"distinct problems after {err.per_cell}, so at most {fits} fit (e.g. --synthetic_train_size "
            f"{fits - eval_size} --synthetic_eval_size {eval_size}); or add levels or types") from None


def wording_counts(rows: list[dict[str, Any]]) -> str:
    """'compute_symbols 5, story_shelf 3' over the rows that carry a wording ('none' when none do)."""
    counts = Counter(row["wording"] for row in rows if "wording" in row)
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "none"


def main(cfg: DataConfig) -> PreparedData:
    train_report, eval_report = CleaningReport(), CleaningReport()
    if not cfg.inspect_only:
        ensure_output_folder(cfg.output_dir)
    tokenizer = None if cfg.tokenizer.lower() == "none" else load_report_tokenizer(cfg)

    # --- load and validate ---
    if cfg.source == "synthetic":
        train_rows, eval_rows = synthetic_sets(cfg)
        train_report.rows_read, eval_report.rows_read = len(train_rows), len(eval_rows)
        print(f"source: apo/synthetic.py (seed {cfg.seed}, levels {cfg.synthetic_levels}, types "
              f"{cfg.synthetic_types}); these are NOT MATH problems and are labelled source='synthetic'")
        if cfg.training_wording_names is not None:
            print(f"level-1 arithmetic wordings: train {wording_counts(train_rows)}; eval {wording_counts(eval_rows)}"
                  f" (held out of training: {', '.join(cfg.heldout_wording_names) or 'none'})")
    else:
        train_raw, eval_raw = load_sources(cfg, train_report, eval_report)
        train_rows = clean_rows(train_raw, "math", train_report, cfg.skip_invalid)
        eval_rows = [] if eval_raw is None else clean_rows(eval_raw, "math500", eval_report, cfg.skip_invalid)
        where = cfg.hub_dataset if cfg.source == "hub" else cfg.train_path
        print(f"source: {where} (splits {cfg.effective_splits}) -> {train_report.rows_read} rows read; eval: "
              f"{'none (--math500_path none)' if eval_raw is None else cfg.math500_path or cfg.math500_dataset}"
              f" -> {eval_report.rows_read} rows read")

    # --- keep the eval and benchmark problems out of training ---
    train_rows = exclude_eval_problems(train_rows, eval_rows, train_report)
    if cfg.source != "synthetic":
        train_rows = exclude_benchmark_problems(train_rows, load_benchmark_problems(cfg), train_report)
    if not train_rows:
        raise InputError(
            f"{cfg.train_path or cfg.hub_dataset}: no usable training problem ({train_report.rows_read} rows read: "
            f"{len(train_report.invalid)} invalid, {len(train_report.no_answer)} without a \\boxed{{}} answer, "
            f"{len(train_report.duplicates)} duplicates, {len(train_report.math500_removed)} eval problems, "
            f"{sum(map(len, train_report.benchmark_removed.values()))} benchmark problems); nothing written")

    # --- stratified subset ---
    subset_rows = stratified_subset(train_rows, cfg.subset_size, cfg.seed)

    # --- inspection ---
    for name, report in (("train", train_report), ("eval", eval_report)):
        if report.invalid:
            print(f"{name}: skipped {len(report.invalid)} invalid rows (--skip_invalid); first: {report.invalid[0]}")
        print(f"{name}: answer extraction failed (no usable \\boxed{{}}) for {len(report.no_answer)} rows"
              + (f": {', '.join(report.no_answer[:10])}" if report.no_answer else "")
              + f"; duplicates removed: {len(report.duplicates)}"
              + (f" ({', '.join(report.duplicates[:10])})" if report.duplicates else "")
              + f"; source 'answer' field differs from the extraction for {len(report.answer_field_mismatches)} rows")
    eval_name = "synthetic held-out set" if cfg.source == "synthetic" else "MATH-500"
    print(f"{eval_name} exclusion: removed {len(train_report.math500_removed)} training rows "
          f"(matched by unique_id: {train_report.math500_by_id}, by normalised problem text: "
          f"{train_report.math500_by_text})")
    if cfg.source == "synthetic":
        print("benchmark decontamination: not applied to synthetic problems")
    elif train_report.benchmark_removed:
        print("benchmark decontamination (problem text, letters and digits only): removed "
              + ", ".join(f"{name} {len(ids)}" for name, ids in train_report.benchmark_removed.items())
              + " training rows" + "".join(f"; {name}: {', '.join(ids[:5])}" for name, ids
                                            in train_report.benchmark_removed.items() if ids))
    for title, rows in ((cfg.train_file, train_rows), (cfg.subset_file, subset_rows), (cfg.eval_file, eval_rows)):
        print(f"\n{title}: {len(rows)} rows\n{count_table(rows)}")
    provenance = data_provenance(cfg, len(train_rows), len(eval_rows), len(train_report.math500_removed))
    print(f"training set: {provenance['training_set']} ({provenance['description']}), {len(train_rows)} problems")
    if tokenizer is not None:
        print(prompt_length_report(tokenizer, cfg, train_rows + eval_rows))
    print("\nexample rows:")
    for row in subset_rows[:2]:
        print(example_line(row))

    # --- write ---
    paths = {name: os.path.join(cfg.output_dir, name) for name in (cfg.train_file, cfg.subset_file, cfg.eval_file)}
    if cfg.inspect_only:
        print("\n--inspect_only: nothing written")
    else:
        write_jsonl_atomic(paths[cfg.train_file], train_rows)
        write_jsonl_atomic(paths[cfg.subset_file], subset_rows)
        if eval_rows:
            write_jsonl_atomic(paths[cfg.eval_file], eval_rows)
        write_json_atomic(os.path.join(cfg.output_dir, PROVENANCE_FILE), provenance)
        written = [paths[cfg.train_file], paths[cfg.subset_file]] + ([paths[cfg.eval_file]] if eval_rows else [])
        written.append(os.path.join(cfg.output_dir, PROVENANCE_FILE))
        print(f"\nwrote {', '.join(written)}")
    return PreparedData(
        train_file=None if cfg.inspect_only else paths[cfg.train_file],
        subset_file=None if cfg.inspect_only else paths[cfg.subset_file],
        eval_file=None if cfg.inspect_only or not eval_rows else paths[cfg.eval_file],
        num_train=len(train_rows), num_subset=len(subset_rows), num_eval=len(eval_rows),
        train_report=train_report, eval_report=eval_report, provenance=provenance)


def load_report_tokenizer(cfg: DataConfig):
    """The --tokenizer for the prompt-length report, loaded before any data so a bad id fails at once."""
    from apo.models import ModelNotAvailableError, load_tokenizer

    try:
        return load_tokenizer(cfg.tokenizer, cfg.model_cache_dir)
    except ModelNotAvailableError as err:
        raise ModelNotAvailableError(f"--tokenizer {cfg.tokenizer!r}: {err} For this report you may also pass "
                                     "--tokenizer embedded or --tokenizer none.") from None


def prompt_length_report(tokenizer, cfg: DataConfig, rows: list[dict[str, Any]]) -> str:
    """One line of prompt-length percentiles in tokens and the count over cfg.max_prompt_length."""
    lengths = sorted(prompt_token_lengths(tokenizer, [row["problem"] for row in rows], prompt_format=cfg.prompt_format))
    if not lengths:
        return "prompt tokens: no rows"
    over = sum(length > cfg.max_prompt_length for length in lengths)
    layout = "chat template + system prompt" if cfg.prompt_format == "chat" else "raw text, no chat template"
    return (f"\nprompt tokens ({cfg.tokenizer}, {layout}, {len(lengths)} prompts): "
            f"p50 {percentile(lengths, 50)} | p90 {percentile(lengths, 90)} | p99 {percentile(lengths, 99)} | "
            f"max {lengths[-1]} | over {cfg.max_prompt_length}: {over}")


if __name__ == "__main__":
    run_main(lambda argv: main(*parse_config((DataConfig,), argv)))
