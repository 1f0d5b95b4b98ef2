"""Shared instruments of the bench/ scripts: machine and package facts, peak resident memory,
generation token counting, child processes with their own rusage, and markdown tables.

Nothing here changes what a trainer or generator computes: the generation counter wraps
`transformers.GenerationMixin.generate` and calls it unchanged, so every trainer measured
in a child process (this project's and TRL's alike) is counted by the same instrument.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "math-verify", "numpy", "psutil")


# --- machine and packages ---

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """name -> installed version, or 'not installed'."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def machine_info() -> dict:
    """nproc, RAM, CPU model, load averages, torch threads, Python, package versions, UTC date, git commit."""
    import torch

    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "nproc": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model(), "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "packages": package_versions(), "git_commit": git_commit(),
    }


def set_torch_threads(threads: int) -> None:
    """torch.set_num_threads(threads) when threads > 0 (0 keeps torch's default: one per core).

    On a CPU shared with other busy processes, torch's OpenMP threads spin-wait for each other
    at every parallel region, and a descheduled thread stalls the rest: measured here on
    2 cores at load 16, one decoding step of a tiny model took 492 ms with 2 threads and
    57 ms with 1. Benchmarks taken under such load use 1 thread and say so."""
    import torch

    if threads < 0:
        raise ValueError(f"torch_threads={threads} must be 0 (torch's default) or a positive thread count")
    if threads:
        torch.set_num_threads(threads)


# --- peak resident memory ---

class PeakRSS:
    """Peak resident set size of this process, overall and per named phase.

    A daemon thread samples psutil RSS every `interval_s`; `phase(name)` labels the samples
    taken inside it. `ru_maxrss` (the kernel's exact peak, all phases) is reported beside the
    sampled peaks, which can miss a spike shorter than the interval. Units: MiB.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.process = psutil.Process()
        self.current = "outside phases"
        self.peaks: dict[str, float] = {}
        self.started = time.perf_counter()
        self.timeline: list[tuple[float, float]] = []  # (seconds since start, MiB), one sample per second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._record()
            self._stop.wait(self.interval_s)

    def _record(self) -> None:
        rss_mib = self.process.memory_info().rss / 2**20
        self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), rss_mib)
        elapsed = time.perf_counter() - self.started
        if not self.timeline or elapsed - self.timeline[-1][0] >= 1.0:
            self.timeline.append((round(elapsed, 1), round(rss_mib)))

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous, self.current = self.current, name
        self._record()
        try:
            yield
        finally:
            self._record()
            self.current = previous

    def report(self) -> dict:
        """{"ru_maxrss_mib": exact peak of this process, "sampled_peak_mib": {phase: MiB},
        "timeline": [(s, MiB)] once a second}."""
        self._stop.set()
        self._thread.join()
        return {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "sampled_peak_mib": {k: round(v, 1) for k, v in self.peaks.items()}, "timeline": self.timeline}


# --- generation counter ---

@dataclass
class GenerationStats:
    """What `model.generate` did: calls, sequences, tokens generated up to and including the
    first EOS (`generated_tokens`), decoded positions (rows x new columns, i.e. including the
    padding after an early EOS in a batch: `decoded_positions`), decoding steps (new columns
    summed over calls: forward passes after the prefill, plus one), and seconds inside generate."""

    calls: int = 0
    sequences: int = 0
    generated_tokens: int = 0
    decoded_positions: int = 0
    seconds: float = 0.0
    steps: int = 0

    def since(self, earlier: GenerationStats) -> GenerationStats:
        return GenerationStats(*(getattr(self, f) - getattr(earlier, f) for f in
                                 ("calls", "sequences", "generated_tokens", "decoded_positions", "seconds", "steps")))

    def snapshot(self) -> GenerationStats:
        return GenerationStats(self.calls, self.sequences, self.generated_tokens, self.decoded_positions, self.seconds,
                               self.steps)

    def as_dict(self) -> dict:
        padding = 1 - self.generated_tokens / self.decoded_positions if self.decoded_positions else 0.0
        return {"calls": self.calls, "sequences": self.sequences, "generated_tokens": self.generated_tokens,
                "decoded_positions": self.decoded_positions, "padding_waste": round(padding, 4),
                "decoding_steps": self.steps, "generate_s": round(self.seconds, 3)}


def _eos_ids(model, kwargs: dict) -> set[int]:
    ids: set[int] = set()
    sources = [kwargs.get("eos_token_id"), getattr(kwargs.get("generation_config"), "eos_token_id", None),
               getattr(getattr(model, "generation_config", None), "eos_token_id", None)]
    for value in sources:
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return ids


def _prompt_width(args: tuple, kwargs: dict) -> int:
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    if input_ids is None:
        raise ValueError("generation counter: generate() was called without input_ids; cannot count new tokens")
    return int(input_ids.shape[1])


def _samples(model, kwargs: dict) -> bool:
    """Whether this generate call samples (do_sample from the kwargs, the passed generation
    config, or the model's own generation config, in that order)."""
    if kwargs.get("do_sample") is not None:
        return bool(kwargs["do_sample"])
    passed = kwargs.get("generation_config")
    if passed is not None and passed.do_sample is not None:
        return bool(passed.do_sample)
    return bool(getattr(getattr(model, "generation_config", None), "do_sample", False))


@contextlib.contextmanager
def count_generation() -> Iterator[dict[str, GenerationStats]]:
    """Count every `GenerationMixin.generate` call and every call of the project's decoding loop
    (`apo.decoding.sample_continuations`, as `apo.generation.generate` reaches it) made inside the
    block, split into {"sampled": GenerationStats, "greedy": GenerationStats} (training rollouts
    sample; held-out evaluation is greedy). For the project's loop, decoded positions are the
    rows it computed (finished rows leave the batch), steps its tokens per row.

    Wraps the class method and calls the original unchanged; restored on exit. Models whose
    generate is reached through peft's PeftModel.generate are counted once (peft forwards to
    the base model's GenerationMixin.generate).
    """
    from transformers.generation.utils import GenerationMixin

    from apo import generation

    modes = {"sampled": GenerationStats(), "greedy": GenerationStats()}
    original = GenerationMixin.generate
    original_loop = generation.sample_continuations

    def counted(self, *args, **kwargs):
        width = _prompt_width(args, kwargs)
        stats = modes["sampled" if _samples(self, kwargs) else "greedy"]
        started = time.perf_counter()
        output = original(self, *args, **kwargs)
        stats.seconds += time.perf_counter() - started
        sequences = output if not hasattr(output, "sequences") else output.sequences
        new = sequences[:, width:]
        eos = _eos_ids(self, kwargs)
        stats.calls += 1
        stats.sequences += int(new.shape[0])
        stats.decoded_positions += int(new.numel())
        stats.steps += int(new.shape[1])
        for row in new.tolist():
            stats.generated_tokens += next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        return output

    def counted_loop(model, prompts, repeats, **kwargs):
        stats = modes["sampled" if kwargs["temperature"] > 0 else "greedy"]
        counters: dict[str, int] = {}
        started = time.perf_counter()
        responses = original_loop(model, prompts, repeats, counters=counters, **kwargs)
        stats.seconds += time.perf_counter() - started
        stats.calls += 1
        stats.sequences += len(responses)
        stats.decoded_positions += counters.get("decoded_positions", 0)
        stats.steps += counters.get("steps", 0)
        stats.generated_tokens += sum(len(response) for response in responses)
        return responses

    GenerationMixin.generate = counted
    generation.sample_continuations = counted_loop
    try:
        yield modes
    finally:
        GenerationMixin.generate = original
        generation.sample_continuations = original_loop


# --- child processes ---

@dataclass
class ChildResult:
    """A finished child: its exit code, wall seconds, the rusage peak RSS the kernel reports
    for it (MiB, the child itself and the descendants it waited for), the JSON it wrote, and
    the tail of its output."""

    returncode: int
    wall_s: float
    peak_rss_mib: float
    result: dict | None
    log_tail: str = ""
    extra: dict = field(default_factory=dict)


def run_child(argv: list[str], result_path: str, log_path: str, timeout_s: float) -> ChildResult:
    """Run `argv` (a python command that writes JSON to `result_path`) with stdout/stderr to
    `log_path`; collect its own peak RSS with os.wait4. A child still running after
    `timeout_s` is killed and reported with returncode -9 and no result."""
    if os.path.exists(result_path):
        os.remove(result_path)
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.2)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    result = None
    if process.returncode == 0 and os.path.isfile(result_path):
        with open(result_path, encoding="utf-8") as handle:
            result = json.load(handle)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    return ChildResult(process.returncode, wall, usage.ru_maxrss / 1024, result, tail)


def python_argv(script: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(REPO_ROOT, "bench", script), *args]


# --- tables ---

def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of `rows` with (key, header) `columns`; floats get 3 significant
    decimals, None prints as '-'."""
    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
