"""The standard math benchmarks (registry, loading) and the papers' evaluation protocols; used by
evaluate_apo's benchmark suite and by prepare_data's decontamination.

Benchmarks: math500, minerva_math, olympiadbench, amc23, aime24, gsm8k. Each loads from a local
JSONL file (`<benchmark_dir>/<name>.jsonl` in the schema of benchmark_data/README.md; MATH-500 from
its own file in MATH's schema) or from the hub (`datasets.load_dataset` with the ids in BENCHMARKS),
into evaluate_apo's eval rows:

    {"id", "problem", "answer", "type", "level", "source"} + "unit", "answer_type",
    "is_multiple_answer" where the benchmark has them

`type` is the benchmark's own subject where it has one (MATH type, OlympiadBench subfield,
Minerva course), else the benchmark name; `level` is MATH's level or null.

Protocols fix the decoding per benchmark as a paper did (PROTOCOLS; sources and the settings
this project chose where a paper does not publish one are in each Protocol's `sources`/`notes`).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from apo.errors import InputError, InputFileNotFoundError
from apo.records import read_json_lines

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
# The six files of the suite ship with the repository (benchmark_data/README.md: sources, revisions, licenses).
SHIPPED_BENCHMARK_DIR = REPO_ROOT / "benchmark_data"
SHIPPED_MATH500_FILE = SHIPPED_BENCHMARK_DIR / "math500.jsonl"
EXTRA_FIELDS = ("unit", "answer_type", "is_multiple_answer")


# --- hub rows -> the shared schema ---


def _math500_hub_row(record: dict, index: int) -> dict:
    return {"id": record["unique_id"], "problem": record["problem"], "answer": record["answer"],
            "type": record["subject"], "level": record["level"]}


def _aime24_hub_row(record: dict, index: int) -> dict:
    return {"id": f"aime24/{record['id']}", "problem": record["problem"], "answer": str(record["answer"])}


def _amc23_hub_row(record: dict, index: int) -> dict:
    # the hub stores answers as floats (27.0); the shipped file writes integers without ".0"
    answer = record["answer"]
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    return {"id": f"amc23/{record.get('id', index)}", "problem": record["question"], "answer": str(answer)}


def _minerva_hub_row(record: dict, index: int) -> dict:
    return {"id": f"minerva_math/{index}", "problem": record["question"], "answer": str(record["answer"])}


def _olympiadbench_hub_row(record: dict, index: int) -> dict:
    # same rule as the shipped file: final_answer items joined by ", ", $ removed
    answers = record["final_answer"] if isinstance(record["final_answer"], list) else [record["final_answer"]]
    return {"id": f"olympiadbench/{record['id']}", "problem": record["question"],
            "answer": ", ".join(str(a).replace("$", "").strip() for a in answers),
            "type": record.get("subfield") or "olympiadbench", "unit": record.get("unit"),
            "answer_type": record.get("answer_type"), "is_multiple_answer": record.get("is_multiple_answer")}


def _gsm8k_hub_row(record: dict, index: int) -> dict:
    # same rule as the shipped file: the text after "####", commas removed
    answer = record["answer"].split("####")[-1].strip().replace(",", "")
    return {"id": f"gsm8k/{index}", "problem": record["question"], "answer": answer, "solution": record["answer"]}


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its local file name and where it lives on the hub."""

    name: str
    title: str
    file_name: str
    hub_dataset: str
    hub_config: str | None
    hub_split: str
    from_hub: Callable[[dict, int], dict]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("math500", "MATH-500", "math500.jsonl", "HuggingFaceH4/MATH-500", None, "test", _math500_hub_row),
    Benchmark("minerva_math", "Minerva Math", "minerva_math.jsonl", "math-ai/minervamath", None, "test",
              _minerva_hub_row),
    Benchmark("olympiadbench", "OlympiadBench", "olympiadbench.jsonl", "Hothan/OlympiadBench", "OE_TO_maths_en_COMP",
              "train", _olympiadbench_hub_row),
    Benchmark("amc23", "AMC 23", "amc23.jsonl", "math-ai/amc23", None, "test", _amc23_hub_row),
    Benchmark("aime24", "AIME 24", "aime24.jsonl", "HuggingFaceH4/aime_2024", None, "train", _aime24_hub_row),
    Benchmark("gsm8k", "GSM8K", "gsm8k.jsonl", "openai/gsm8k", "main", "test", _gsm8k_hub_row),
)}


def check_benchmark_names(names: list[str], flag: str = "--benchmarks") -> None:
    """Raise ValueError naming the flag and the valid names when one of `names` is unknown."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"{flag}: unknown benchmark(s) {unknown}; valid names are {list(BENCHMARKS)}")


def default_benchmark_dir() -> str:
    """The repository's benchmark_data folder (shipped with it; the default of --benchmark_dir)."""
    return str(SHIPPED_BENCHMARK_DIR)


def default_math500_file() -> str:
    """The repository's benchmark_data/math500.jsonl (shipped with it; the default of --math500_file)."""
    return str(SHIPPED_MATH500_FILE)


def benchmark_file(name: str, benchmark_dir: str, math500_file: str) -> str:
    """Local path of a benchmark: math500 -> `math500_file`, others -> <benchmark_dir>/<name>.jsonl.

    Raises FileNotFoundError naming the path looked for and the flags that change it.
    """
    check_benchmark_names([name])
    if name == "math500":
        path, flag = math500_file, "--math500_file"
    else:
        flag = "--benchmark_dir"
        path = os.path.join(benchmark_dir, BENCHMARKS[name].file_name) if benchmark_dir else ""
    if not path or not os.path.isfile(path):
        looked = repr(path) if path else f"{BENCHMARKS[name].file_name} (no folder given)"
        raise InputFileNotFoundError(f"benchmark {name!r}: file {looked} not found; pass {flag}, or "
                                f"--benchmark_source hub to load {BENCHMARKS[name].hub_dataset} from the hub")
    return path


# --- loading ---


def load_benchmark(name: str, *, source: str = "local", benchmark_dir: str = "", math500_file: str = "",
                   limit: int = 0) -> tuple[list[dict], str]:
    """Eval rows of benchmark `name` (the first `limit` when > 0) and where they came from (a path,
    or `hub:<dataset>[<config>, <split>]`).

    Raises FileNotFoundError naming the file looked for (local), ConnectionError naming the
    dataset (hub), ValueError naming the file, line and field of a bad row or a duplicated id.
    """
    check_benchmark_names([name])
    if source == "local":
        path = benchmark_file(name, benchmark_dir, math500_file)
        records = [(record, f"{path} line {number}") for number, record in _read_objects(path)]
        origin = path
    elif source == "hub":
        records, origin = _hub_records(BENCHMARKS[name])
        difference = hub_difference(name, [record for record, _ in records])
        logger.log(logging.WARNING if difference["differs"] else logging.INFO, "%s", difference["message"])
    else:
        raise InputError(f"benchmark source {source!r} is invalid: use 'local' or 'hub'")
    rows, seen = [], set()
    for record, where in records:
        row = to_eval_row(record, where, name)
        if row["id"] in seen:
            raise InputError(f"{where}: id {row['id']!r} is used twice")
        seen.add(row["id"])
        rows.append(row)
        if limit and len(rows) == limit:
            break
    if not rows:
        raise InputError(f"{origin}: no rows (empty benchmark)")
    return rows, origin


def shipped_file(name: str) -> Path:
    """The copy of benchmark `name` shipped in benchmark_data/."""
    return SHIPPED_MATH500_FILE if name == "math500" else SHIPPED_BENCHMARK_DIR / BENCHMARKS[name].file_name


def hub_difference(name: str, hub_records: list[dict]) -> dict:
    """Where the hub's rows of `name` differ from the shipped copy, matched on decontamination_key of the
    problem: {"differs", "only_hub", "only_shipped", "answer_differs" (counts), "message" (one line)}."""
    path = shipped_file(name)
    hub = {decontamination_key(str(r.get("problem", ""))): str(r.get("answer", "")).strip() for r in hub_records}
    shipped = {decontamination_key(str(r.get("problem", ""))): str(r.get("answer", "")).strip()
               for _, r in _read_objects(str(path))}
    only_hub, only_shipped = len(hub.keys() - shipped.keys()), len(shipped.keys() - hub.keys())
    answers = [key for key in hub.keys() & shipped.keys() if hub[key] != shipped[key]]
    differs = bool(only_hub or only_shipped or answers)
    relative = os.path.relpath(path, REPO_ROOT)
    message = (f"benchmark {name!r}: the hub's {len(hub)} problems "
               + (f"differ from the shipped {relative} ({len(shipped)} problems): {only_hub} only on the hub, "
                  f"{only_shipped} only in the shipped file, {len(answers)} with another answer"
                  if differs else f"match the shipped {relative}, answers included"))
    return {"differs": differs, "only_hub": only_hub, "only_shipped": only_shipped, "answer_differs": len(answers),
            "message": message}


def _read_objects(path: str):
    for line in read_json_lines(path):
        if line.error:
            raise InputError(f"{path} line {line.number}: not valid JSON ({line.error})")
        if not isinstance(line.value, dict):
            raise InputError(f"{path} line {line.number}: expected a JSON object, got {type(line.value).__name__}")
        yield line.number, line.value


def _hub_records(benchmark: Benchmark) -> tuple[list[tuple[dict, str]], str]:
    from datasets import load_dataset

    origin = f"hub:{benchmark.hub_dataset}[{benchmark.hub_config + ', ' if benchmark.hub_config else ''}" \
             f"{benchmark.hub_split}]"
    try:
        dataset = load_dataset(benchmark.hub_dataset, benchmark.hub_config, split=benchmark.hub_split)
    except (ConnectionError, OSError) as err:
        raise ConnectionError(f"benchmark {benchmark.name!r}: could not load {origin[4:]} from the hub ({err}); "
                              "use --benchmark_source local with --benchmark_dir") from None
    records = []
    for index, record in enumerate(dataset):
        where = f"{origin} row {index}"
        try:
            records.append((benchmark.from_hub(dict(record), index), where))
        except (KeyError, AttributeError) as err:
            raise InputError(f"{where}: missing or malformed field {err} for {benchmark.name}") from None
    return records, origin


def to_eval_row(record: dict, where: str, benchmark: str) -> dict:
    """A benchmark record -> an eval row (module docstring). Raises ValueError naming `where` and the field."""
    for name in ("problem", "answer"):
        if not isinstance(record.get(name), str) or not record[name].strip():
            raise InputError(f"{where}: field {name!r} must be a non-empty string, got {record.get(name)!r}")
    row_id = record.get("id", record.get("unique_id"))
    if not isinstance(row_id, str) or not row_id:
        raise InputError(f"{where}: field 'id' (or 'unique_id') must be a non-empty string, got {row_id!r}")
    problem_type = record.get("type", record.get("subject")) or benchmark
    row = {"id": row_id, "problem": record["problem"], "answer": record["answer"], "type": str(problem_type),
           "level": _level(record.get("level"), where), "source": record.get("source") or benchmark}
    row.update({name: record[name] for name in EXTRA_FIELDS if record.get(name) is not None})
    return row


def _level(value: Any, where: str) -> int | None:
    """MATH's "Level 3" or 3 -> 3; null or "Level ?" -> None."""
    if value is None or value == "Level ?":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"Level (\d)", value) if isinstance(value, str) else None
    if not match:
        raise InputError(f"{where}: field 'level' is {value!r}, expected 'Level 1'..'Level 5', an int or null")
    return int(match.group(1))


def decontamination_key(text: str) -> str:
    """The text a training problem is matched on against a benchmark: lower-case letters and digits only.

    Stricter than whitespace normalisation on purpose: OlympiadBench writes `x^{4}+j x^{2}` and
    `$j$.` where MATH writes `x^4 + jx^2` and `$j.$` for the same problem (3 such pairs between
    MATH and OlympiadBench).
    """
    return re.sub(r"[^a-z0-9]", "", text.lower())


# --- protocols ---


@dataclass(frozen=True)
class Decoding:
    """How one benchmark is decoded and scored: samples per problem, sampling, the length limit per
    turn, and the k of pass@k (Avg@n is Acc@t1 over n samples)."""

    num_samples: int
    temperature: float
    top_p: float
    max_new_tokens: int
    pass_k: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class Protocol:
    """A paper's evaluation: its benchmarks, the decoding of each (default for the others), the
    correction setting, and where each setting comes from."""

    name: str
    title: str
    benchmarks: tuple[str, ...]
    default: Decoding
    per_benchmark: dict[str, Decoding] = field(default_factory=dict)
    correction_mode: str | None = None  # None = the command line's --correction_mode
    max_correction_turns: int | None = None
    prompt_format: str | None = None  # None = the command line's --prompt_format
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def decoding(self, benchmark: str) -> Decoding:
        return self.per_benchmark.get(benchmark, self.default)

    def describe(self, benchmarks: list[str], correction_mode: str, max_correction_turns: int) -> dict:
        """The protocol as written into summary.json: the correction setting and the decoding per
        benchmark actually run (`in_paper` null for the custom protocol)."""
        return {"name": self.name, "title": self.title, "paper_benchmarks": list(self.benchmarks),
                "correction_mode": correction_mode, "max_correction_turns": max_correction_turns,
                "prompt_format": self.prompt_format,
                "decoding": {b: {**asdict(self.decoding(b)), "pass_k": list(self.decoding(b).pass_k),
                                 "in_paper": None if self.name == "custom" else b in self.benchmarks}
                             for b in benchmarks},
                "sources": list(self.sources), "notes": list(self.notes)}


GREEDY_1024 = Decoding(num_samples=1, temperature=0.0, top_p=1.0, max_new_tokens=1024)
PROTOCOLS: dict[str, Protocol] = {
    "apo": Protocol(
        name="apo", title="A*-PO (Brantley et al., 2025, arXiv 2505.20686), single-turn",
        benchmarks=("math500", "minerva_math", "olympiadbench", "amc23"),
        default=GREEDY_1024,
        per_benchmark={"amc23": Decoding(num_samples=32, temperature=1.0, top_p=1.0, max_new_tokens=1024,
                                         pass_k=(1, 32))},
        correction_mode="none", max_correction_turns=1, prompt_format="raw",
        sources=(
            "github ZhaolinGao/A-PO README, evaluation table (assets/evaluations.png): MATH500, Minerva Math, "
            "OlympiadBench, 'AMC 23 Avg@32'",
            "verl/trainer/apo/ray_trainer.py _validate: do_sample False (greedy) on the validation set",
            "preprocess/data_preprocess/math_dataset.py: the problem + \" Let's think step by step and output the "
            "final answer within \\boxed{}.\"; apo_trainer.yaml add_prompt_template False: raw text, no chat template",
            "scripts/apo_math.sh: MAX_RESPONSE_LENGTH=1024; verl/trainer/config/apo_trainer.yaml rollout "
            "temperature 1.0, top_p 1",
        ),
        notes=(
            "AMC 23 sampling is not published in the code or README read: chosen temperature 1.0, top_p 1.0, the "
            "only sampled decoding in the official config (its rollout setting).",
            "Prompts are the paper's raw text (prompt_format raw, apo/prompts.py), no chat template, as the paper "
            "prompts base Qwen2.5.",
            "Benchmarks outside the paper's four run greedy with 1024 tokens and are marked in_paper false.",
        )),
    "pag": Protocol(
        name="pag", title="PAG (Jiang et al., 2025, arXiv 2506.10406), self-verify, first and final attempt",
        benchmarks=("math500", "minerva_math", "aime24"),
        default=Decoding(num_samples=32, temperature=0.6, top_p=0.95, max_new_tokens=2028, pass_k=(1, 32)),
        correction_mode="self_verify", max_correction_turns=2, prompt_format="chat",
        sources=(
            "PAG paper, MATH-500 table: Avg@32 at temperature 0.6, top_p 0.95, Acc@t1 and Acc@final "
            "(as quoted in the project's ALGORITHM.md)",
            "PAG evaluation convention: an unparsed verdict counts as 'wrong' (revise): --unparsed_verdict_revises",
            "github Jackory/Policy-As-GenVerifier quick_start/evaluation.sh: data.max_response_length=2028 (the "
            "rollout's max_tokens per turn, vllm_pag_rollout_spmd.py), val_kwargs n=32, temperature 0.6, top_p "
            "0.95, num_turns=2",
        ),
        notes=(
            "Minerva Math and AIME24 use the MATH-500 setting (Avg@32, 0.6, 0.95): the per-benchmark sampling of "
            "these two was not found in a source read here.",
            "2028 new tokens per turn and two attempts (one verify-and-revise round), as PAG's evaluation script.",
        )),
}


def custom_protocol(decoding: Decoding) -> Protocol:
    """The command line's own decoding for every benchmark (no paper's preset)."""
    return Protocol(name="custom", title="command-line settings", benchmarks=(), default=decoding,
                    notes=("Every benchmark ran with the command line's decoding flags.",))
