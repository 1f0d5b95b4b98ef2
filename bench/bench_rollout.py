"""Generated tokens per second of this project's rollout path against plain `model.generate`,
read against this machine's memory-bandwidth and compute limits for the model.

Three ways to produce one response per prompt, same model, same prompts (chat-templated
synthetic Level 1-2 problems, or MATH rows), same settings (greedy by default, so every
method decodes the same tokens up to batching numerics; the tokens actually generated are
reported per method):

  project     apo.generation.generate(batch_size=B): prompts sorted by length, chunks of B rows
              decoded by apo.decoding.sample_continuations (finished rows dropped), in the
              --rollout_dtype the stage scripts use (bfloat16 on CPUs with bfloat16
              instructions); what stage 1, stage 2 and evaluation call
  per_prompt  a loop of model.generate on one prompt at a time (no padding at all)
  one_call    one model.generate call on all prompts, left-padded, in input order

Limits: each decoding step reads every weight once (tied input/output embeddings counted
once: the output projection reads the whole matrix) plus the KV cache of every row, so a
step takes at least bytes / read_bandwidth; it also does 2 x params FLOPs per row, so at
least rows x 2 x params / matmul_flops. The read bandwidth is a torch sum over a 512 MiB
tensor and a copy; the FLOP rate a matmul in the method's dtype, both measured here and now. Each
method's decoding steps per second are reported as a fraction of the larger of the two
lower bounds (the roofline). A 1024 x 1024 product runs faster than the (rows x 576) x
(576 x 1536) products of a decoding step, so each method also gets the linear layers' share:
the seconds its linear layers take for one step, each shape timed here at that step's row
count, times its steps per second. `--profile_new_tokens K` adds torch.profiler's operator
table of the project path on its first batch.

    .venv/bin/python bench/bench_rollout.py                     # embedded model, 16 prompts, ~3 min
    .venv/bin/python bench/bench_rollout.py --quick true         # tiny random model, seconds
    .venv/bin/python bench/bench_rollout.py --num_prompts 32 --batch_size 16 --max_new_tokens 128
    .venv/bin/python bench/bench_rollout.py --methods project --num_prompts 8 --batch_size 8 --profile_new_tokens 16
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import count_generation, machine_info, markdown_table, set_torch_threads  # noqa: E402
from apo.config import SYSTEM_PROMPT, parse_config  # noqa: E402
from apo.decoding import resolve_rollout_dtype  # noqa: E402
from apo.records import write_json_atomic  # noqa: E402

logger = logging.getLogger("bench_rollout")
METHODS = ("project", "per_prompt", "one_call")


@dataclass
class BenchRolloutConfig:
    """Which model and prompts, how they are generated, where the JSON goes."""

    model: str = field(default="embedded", metadata={"help": "'embedded' or a local save_pretrained folder."})
    quick: bool = field(default=False, metadata={"help": "A tiny random 2-layer Llama over the embedded vocabulary."})
    data: Literal["synthetic", "math"] = field(default="synthetic", metadata={"help": (
        "'synthetic' = apo.synthetic Level 1-2 problems; 'math' = the first MATH-500 rows.")})
    math_file: str = field(default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                "benchmark_data", "math500.jsonl"),
                           metadata={"help": "MATH JSONL used with --data math."})
    num_prompts: int = field(default=16, metadata={"help": "Prompts, one response each."})
    batch_size: int = field(default=8, metadata={"help": "The project path's sequences per generate call."})
    max_new_tokens: int = field(default=96, metadata={"help": "Generation limit per response."})
    temperature: float = field(default=0.0, metadata={"help": (
        "0 = greedy (comparable token counts); > 0 samples with torch.manual_seed(seed) before each method.")})
    methods: str = field(default=",".join(METHODS), metadata={"help": f"Comma-separated subset of {METHODS}."})
    repeats: int = field(default=1, metadata={"help": "Timed passes per method, interleaved; the best is reported."})
    bandwidth_mib: int = field(default=512, metadata={"help": "Size of the bandwidth-test tensor."})
    seed: int = field(default=42, metadata={"help": "Seed of the problems and of sampling."})
    rollout_dtype: str = field(default="auto", metadata={"help": (
        "The project path's decoding dtype, as --rollout_dtype of the stage scripts: 'auto' = bfloat16 on a CPU "
        "with bfloat16 instructions, 'policy' = the float32 model itself, or 'bfloat16' / 'float32'. The two "
        "model.generate paths always decode the float32 model.")})
    torch_threads: int = field(default=0, metadata={"help": (
        "torch threads (0 = torch's default, one per core); 1 while other processes load the CPU.")})
    profile_new_tokens: int = field(default=0, metadata={"help": (
        "> 0: after the timed passes, run the project path once more on its first batch for this many new "
        "tokens under torch.profiler and print the operators by self CPU time (also in the JSON).")})
    output_json: str = field(default=os.path.join("runs", "bench_rollout.json"), metadata={"help": "Result file."})

    def __post_init__(self) -> None:
        unknown = [m for m in self.method_list if m not in METHODS]
        if unknown:
            raise ValueError(f"BenchRolloutConfig.methods has unknown names {unknown}; choose from {list(METHODS)}")
        if self.num_prompts < 1 or self.batch_size < 1 or self.repeats < 1:
            raise ValueError("BenchRolloutConfig: num_prompts, batch_size and repeats must be >= 1")

    @property
    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


# --- inputs ---

def load_inputs(cfg: BenchRolloutConfig):
    """(model, tokenizer, prompt id lists)."""
    import json

    import apo.synthetic as synthetic_math
    from apo.models import load_model, load_tokenizer
    from apo.prompts import encode_problem

    tokenizer = load_tokenizer("embedded" if cfg.quick else cfg.model)
    if cfg.quick:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from conftest import build_tiny_policy

        model = build_tiny_policy(tokenizer, seed=cfg.seed)
    else:
        model = load_model(cfg.model, dtype="float32")
    if cfg.data == "synthetic":
        problems = [r["problem"] for r in synthetic_math.generate_problems(cfg.num_prompts, seed=cfg.seed,
                                                                           levels=(1, 2))]
    else:
        with open(cfg.math_file, encoding="utf-8") as handle:
            problems = [json.loads(line)["problem"] for line in handle if line.strip()][:cfg.num_prompts]
    prompts = [encode_problem(tokenizer, p, "chat", SYSTEM_PROMPT) for p in problems]
    return model.eval(), tokenizer, prompts


# --- the three generation paths ---

def run_project(model, tokenizer, prompts, cfg: BenchRolloutConfig) -> None:
    from apo.episodes import generate

    generate(model, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=1.0,
             batch_size=cfg.batch_size)


def plain_generate(model, tokenizer, batch: list[list[int]], cfg: BenchRolloutConfig) -> None:
    """model.generate on a left-padded batch with the project's sampling settings (no top-k,
    no repetition penalty) and the same EOS ids, so only the batching differs."""
    from apo.decoding import left_pad
    from apo.generation import eos_token_ids, sampling_kwargs

    ids, mask = left_pad(batch, tokenizer.pad_token_id)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=eos_token_ids(model, tokenizer),
                       **sampling_kwargs(cfg.temperature, 1.0))


def run_per_prompt(model, tokenizer, prompts, cfg: BenchRolloutConfig) -> None:
    for prompt in prompts:
        plain_generate(model, tokenizer, [prompt], cfg)


def run_one_call(model, tokenizer, prompts, cfg: BenchRolloutConfig) -> None:
    plain_generate(model, tokenizer, prompts, cfg)


RUNNERS = {"project": run_project, "per_prompt": run_per_prompt, "one_call": run_one_call}


def time_method(name: str, model, tokenizer, prompts, cfg: BenchRolloutConfig) -> dict:
    """One timed pass of method `name`: wall seconds and the counted generation."""
    torch.manual_seed(cfg.seed)
    with count_generation() as counted:
        started = time.perf_counter()
        RUNNERS[name](model, tokenizer, prompts, cfg)
        seconds = time.perf_counter() - started
    stats = counted["sampled" if cfg.temperature > 0 else "greedy"].as_dict()
    return {"method": name, "wall_s": seconds, **stats, "tokens_per_s": stats["generated_tokens"] / seconds,
            "steps_per_s": stats["decoding_steps"] / seconds}


# --- machine limits ---

def read_bandwidth_gbs(size_mib: int, repeats: int = 5) -> dict:
    """Best-of-`repeats` GB/s (1e9 bytes/s) of a torch float32 sum (bytes read) and copy (bytes
    read + written) over a `size_mib` tensor, with torch's threads."""
    source = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32)
    target = torch.empty_like(source)
    nbytes = source.numel() * 4
    best_sum = best_seconds(source.sum, repeats)
    best_copy = best_seconds(lambda: target.copy_(source), repeats)
    return {"read_gbs": nbytes / best_sum / 1e9, "copy_gbs": 2 * nbytes / best_copy / 1e9}


def best_seconds(work, repeats: int) -> float:
    """The shortest wall time of `repeats` calls of `work()`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def matmul_gflops(size: int = 1024, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-`repeats` GFLOP/s of a (size x size) @ (size x size) matmul in `dtype`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    return 2 * size**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def linear_seconds_per_step(model, rows: int, repeats: int = 5) -> float:
    """Seconds the model's linear layers (the output projection included) take for one decoding step
    of `rows` rows at this machine's measured speed for exactly those shapes and the model's dtype:
    each distinct (in, out) shape is timed once (best of `repeats`) and counted as often as it occurs.
    Optimistic: a layer's weights stay in cache between the timed repeats."""
    shapes: dict[tuple[int, int], int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            key = (module.in_features, module.out_features)
            shapes[key] = shapes.get(key, 0) + 1
    dtype = next(model.parameters()).dtype
    total = 0.0
    for (inputs, outputs), count in shapes.items():
        x, weight = torch.randn(rows, inputs, dtype=dtype), torch.randn(outputs, inputs, dtype=dtype)
        torch.nn.functional.linear(x, weight)
        total += count * best_seconds(lambda: torch.nn.functional.linear(x, weight), repeats)
    return total


def profile_project(model, tokenizer, prompts, cfg: BenchRolloutConfig, rows: int = 20) -> str:
    """torch.profiler's operator table (self CPU time) of the project path on the first batch."""
    from torch.profiler import profile

    short = BenchRolloutConfig(**{**asdict(cfg), "max_new_tokens": cfg.profile_new_tokens})
    torch.manual_seed(cfg.seed)
    with profile() as profiler:
        run_project(model, tokenizer, prompts[:cfg.batch_size], short)
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)


def model_costs(model) -> dict:
    """Bytes of weights read per decoding step (each distinct tensor once), FLOPs per token
    (2 x weights of the matmuls, the output projection included; the embedding lookup is
    free), and KV-cache bytes per cached token."""
    seen, weight_bytes, params = set(), 0, 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        weight_bytes += tensor.numel() * tensor.element_size()
        params += tensor.numel()
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", config.num_attention_heads)
    kv_bytes = 2 * config.num_hidden_layers * kv_heads * head_dim * next(model.parameters()).element_size()
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    matmul_params = params if tied else params - embedding
    return {"params": params, "weight_bytes": weight_bytes, "flops_per_token": 2 * matmul_params,
            "kv_bytes_per_token": kv_bytes}


def roofline(result: dict, costs: dict, limits: dict, mean_prompt_len: float, matmul_gflops_rate: float) -> dict:
    """Lower bounds on one decoding step of this method and the measured fraction of them.

    rows per step = decoded positions / steps; the KV read per step is rows x (prompt +
    half the new tokens) x kv bytes. Returns the bandwidth-bound and compute-bound steps/s
    and `roofline_fraction` = measured steps/s / min(bounds). `costs` and `matmul_gflops_rate`
    are those of the weights the method decodes with (bfloat16 reads half the bytes and multiplies
    at the bfloat16 rate)."""
    steps = max(result["decoding_steps"], 1)
    rows = result["decoded_positions"] / steps
    context = mean_prompt_len + 0.5 * result["decoded_positions"] / max(result["sequences"], 1)
    step_bytes = costs["weight_bytes"] + rows * context * costs["kv_bytes_per_token"]
    bandwidth_steps = limits["read_gbs"] * 1e9 / step_bytes
    compute_steps = matmul_gflops_rate * 1e9 / (rows * costs["flops_per_token"])
    bound = min(bandwidth_steps, compute_steps)
    return {"rows_per_step": rows, "bandwidth_bound_steps_per_s": bandwidth_steps,
            "compute_bound_steps_per_s": compute_steps, "bound": "bandwidth" if bandwidth_steps < compute_steps else "compute",
            "roofline_fraction": result["steps_per_s"] / bound,
            "bound_tokens_per_s": bound * rows}


def main(cfg: BenchRolloutConfig) -> dict:
    """Measure the machine, then each method (interleaved repeats, best kept); print and write JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    set_torch_threads(cfg.torch_threads)
    report = {"config": asdict(cfg), "machine_before": machine_info()}

    # --- the machine's limits ---
    limits = read_bandwidth_gbs(cfg.bandwidth_mib)
    limits["matmul_gflops"] = matmul_gflops()
    report["limits"] = limits

    # --- model, prompts and a warm-up ---
    model, tokenizer, prompts = load_inputs(cfg)
    costs = model_costs(model)
    report["model_costs"] = costs
    decode_dtype = resolve_rollout_dtype(cfg.rollout_dtype, model.dtype, "cpu")
    project_model = copy.deepcopy(model).to(decode_dtype) if decode_dtype is not None else model
    report["project_dtype"] = str(project_model.dtype).removeprefix("torch.")
    project_costs = model_costs(project_model)
    limits["matmul_gflops_project_dtype"] = (matmul_gflops(dtype=project_model.dtype)
                                             if project_model.dtype != torch.float32 else limits["matmul_gflops"])
    mean_prompt_len = sum(map(len, prompts)) / len(prompts)
    plain_generate(model, tokenizer, prompts[:2], BenchRolloutConfig(**{**asdict(cfg), "max_new_tokens": 4}))

    # --- the methods, interleaved ---
    best: dict[str, dict] = {}
    for repeat in range(cfg.repeats):
        for name in cfg.method_list:
            result = time_method(name, project_model if name == "project" else model, tokenizer, prompts, cfg)
            logger.info("repeat %d %s: %.1f s, %d tokens, %.1f tok/s", repeat, name, result["wall_s"],
                        result["generated_tokens"], result["tokens_per_s"])
            if name not in best or result["wall_s"] < best[name]["wall_s"]:
                best[name] = result
    rows = []
    for name, result in best.items():
        project = name == "project"
        result["dtype"] = report["project_dtype"] if project else "float32"
        result.update(roofline(result, project_costs if project else costs, limits, mean_prompt_len,
                               limits["matmul_gflops_project_dtype" if project else "matmul_gflops"]))
        if "per_prompt" in best:
            result["speedup_vs_per_prompt"] = result["tokens_per_s"] / best["per_prompt"]["tokens_per_s"]
        # What the step's matmuls cost at the rate the kernels reach at these shapes, not at 1024 x 1024.
        result["linear_s_per_step"] = linear_seconds_per_step(project_model if project else model,
                                                              max(1, round(result["rows_per_step"])))
        result["linear_fraction_of_step"] = result["linear_s_per_step"] * result["steps_per_s"]
        rows.append(result)

    # --- table and JSON ---
    report["methods"] = rows
    report["machine_after"] = machine_info()
    columns = [("method", "method"), ("dtype", "dtype"), ("wall_s", "wall s"), ("generated_tokens", "gen. tokens"),
               ("decoded_positions", "decoded pos."), ("padding_waste", "padding waste"),
               ("tokens_per_s", "tok/s"), ("speedup_vs_per_prompt", "x per-prompt"), ("rows_per_step", "rows/step"),
               ("steps_per_s", "steps/s"), ("bound", "bound"), ("bound_tokens_per_s", "bound tok/s"),
               ("roofline_fraction", "fraction of bound"), ("linear_fraction_of_step", "linear layers' share")]
    report["table_markdown"] = markdown_table(rows, columns)
    if cfg.profile_new_tokens > 0 and "project" in best:
        report["project_profile"] = profile_project(project_model, tokenizer, prompts, cfg)
    print(f"weights {costs['weight_bytes'] / 2**20:.0f} MiB per step, read {limits['read_gbs']:.1f} GB/s, "
          f"copy {limits['copy_gbs']:.1f} GB/s, matmul {limits['matmul_gflops']:.1f} GFLOP/s float32, "
          f"{limits['matmul_gflops_project_dtype']:.1f} GFLOP/s {report['project_dtype']} (the project path)")
    print(report["table_markdown"])
    if "project_profile" in report:
        print(f"the project path on its first {cfg.batch_size} prompts, {cfg.profile_new_tokens} new tokens:")
        print(report["project_profile"])
    write_json_atomic(cfg.output_json, report)
    print(f"wrote {cfg.output_json}")
    return report


if __name__ == "__main__":
    main(parse_config((BenchRolloutConfig,))[0])
