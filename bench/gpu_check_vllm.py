"""GPU check of the vLLM backend (issue 17) on a machine with vllm; prints one markdown table.

bench/gpu_check.py runs it as its `vllm` check when vllm is installed (the lent GPU image has none).

  (a) throughput   generated tokens per second of `apo.episodes.generate` on transformers
                   (`hf`, batches of --hf_batch_size) and on the vLLM engine (`vllm`), same 256
                   chat-templated synthetic prompts, temperature 1.0, top_p 1.0, --max_new_tokens;
                   on the embedded model and on every Qwen2.5 instruct model (<= 3B) in the local
                   hub cache (or the --models given)
  (b) agreement    vLLM's log-prob of each token it sampled against the same token's log-prob
                   recomputed by the transformers policy on the same weights (mean and max
                   absolute difference per token; bf16 on both sides under dtype auto)
  (c) updates      five optimizer steps on a LoRA policy (AdamW, NLL of fixed responses, so the
                   policy moves visibly), `VLLMEngine.sync_weights` after each; then vLLM samples
                   again and its log-probs are compared with the updated policy's and with the
                   initial policy's: they must follow the update (closer to the current policy)
  (d) trainer      train_math_apo.py --generation_backend vllm on the embedded model for five
                   iterations (stage 1 with N=8 through the engine's n, stage 2, held-out checks),
                   as a child process: exit status and wall time

    pip install -r requirements-vllm.txt                 # after requirements-dev.txt, on the GPU machine
    python bench/gpu_check_vllm.py                            # all four parts, ~5-8 min on one H100/H200
    python bench/gpu_check_vllm.py --models embedded Qwen/Qwen2.5-1.5B-Instruct --parts throughput
    python bench/gpu_check_vllm.py --num_prompts 64 --max_new_tokens 128   # a quicker pass

Each part runs in its own child process (--isolate true), so one engine's GPU memory is gone
before the next starts. The table and every number go to runs/gpu_check_vllm.json. This script
has not run yet: no GPU was lent while it was written; the vLLM path has only been checked
against the fake engine of tests/fake_vllm.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import REPO_ROOT, markdown_table, package_versions  # noqa: E402
from apo.config import A_PO_Config, parse_config, write_json_atomic  # noqa: E402

logger = logging.getLogger("gpu_check_vllm")
PARTS = ("throughput", "agreement", "updates", "trainer")
MAX_AUTO_QWEN_BILLIONS = 3.0


@dataclass
class VllmCheckConfig:
    """What to measure, on which models, and where the JSON goes."""

    models: list[str] = field(default_factory=list, metadata={"help": (
        "Models of the throughput part; empty = 'embedded' plus every Qwen2.5 instruct model (<= 3B) in the "
        "local hub cache.")})
    parts: list[str] = field(default_factory=lambda: list(PARTS), metadata={"help": f"Any of {', '.join(PARTS)}."})
    num_prompts: int = field(default=256, metadata={"help": "Prompts of the throughput part, one response each."})
    max_new_tokens: int = field(default=256, metadata={"help": "Generation limit per response."})
    hf_batch_size: int = field(default=64, metadata={"help": "Sequences per transformers generate call."})
    check_prompts: int = field(default=32, metadata={"help": "Prompts of the agreement and update parts."})
    update_steps: int = field(default=5, metadata={"help": "Optimizer steps of the update part."})
    update_learning_rate: float = field(default=2e-3, metadata={"help": "LoRA AdamW learning rate of the update part."})
    gpu_memory_utilization: float = field(default=0.3, metadata={"help": "vLLM's share of the GPU memory."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype of both engines (auto = bf16 on a GPU)."})
    isolate: bool = field(default=True, metadata={"help": "Run each part in its own child process."})
    trainer_timeout_s: int = field(default=300, metadata={"help": "Time limit of the trainer part."})
    output: str = field(default=os.path.join(REPO_ROOT, "runs", "gpu_check_vllm.json"), metadata={"help": "JSON output."})
    seed: int = field(default=0, metadata={"help": "Seed of the prompts and the sampling."})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"VllmCheckConfig.parts={self.parts!r} is invalid: {unknown} are not among {PARTS}.")


def main(cfg: VllmCheckConfig) -> dict:
    """Run the chosen parts; returns {"settings", "packages", "device", "rows"} and writes it to cfg.output."""
    from apo.vllm_engine import require_vllm

    require_vllm()
    models = cfg.models or ["embedded"] + local_qwen_models()
    jobs = [("throughput", model) for model in models if "throughput" in cfg.parts]
    jobs += [(part, "embedded" if not cfg.models else cfg.models[0]) for part in PARTS[1:] if part in cfg.parts]
    rows = []
    for part, model in jobs:
        started = time.perf_counter()
        logger.info("%s on %s", part, model)
        found = run_isolated(cfg, part, model) if cfg.isolate else run_part(cfg, part, model)
        for row in found:
            rows.append({"part": part, "model": model, **row})
        logger.info("%s on %s took %.0f s", part, model, time.perf_counter() - started)
    result = {"settings": asdict(cfg), "packages": package_versions(("torch", "transformers", "vllm", "peft")),
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu", "rows": rows}
    os.makedirs(os.path.dirname(cfg.output), exist_ok=True)
    write_json_atomic(cfg.output, result)
    print(markdown_table(rows, [("part", "part"), ("model", "model"), ("engine", "engine"), ("step", "step"),
                                ("tokens", "tokens"), ("seconds", "s"), ("tokens_per_s", "tokens/s"),
                                ("mean_abs_diff", "mean abs dlogp"), ("max_abs_diff", "max abs dlogp"),
                                ("mean_abs_diff_initial", "vs initial policy"), ("ok", "ok")]))
    return result


def run_isolated(cfg: VllmCheckConfig, part: str, model: str) -> list[dict]:
    """run_part in a child process (its GPU memory is returned when it exits)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "rows.json")
        spec = json.dumps({"cfg": asdict(cfg), "part": part, "model": model, "out": out})
        result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec], cwd=REPO_ROOT)
        if result.returncode != 0:
            return [{"ok": f"failed (exit {result.returncode}; see the log above)"}]
        with open(out, encoding="utf-8") as handle:
            return json.load(handle)


def run_part(cfg: VllmCheckConfig, part: str, model: str) -> list[dict]:
    if part == "throughput":
        return throughput(cfg, model)
    if part == "agreement":
        return agreement(cfg, model)
    if part == "updates":
        return updates(cfg, model)
    return trainer(cfg, model)


# --- inputs ---

def local_qwen_models() -> list[str]:
    """Hub ids of the Qwen2.5 instruct models of at most 3B parameters in the local hub cache."""
    from huggingface_hub import scan_cache_dir

    found = []
    for repo in scan_cache_dir().repos:
        name = repo.repo_id
        if repo.repo_type != "model" or not name.startswith("Qwen/Qwen2.5-") or not name.endswith("-Instruct"):
            continue
        size = name.removeprefix("Qwen/Qwen2.5-").removesuffix("-Instruct").removeprefix("Math-")
        if size.endswith("B") and size[:-1].replace(".", "", 1).isdigit() and float(size[:-1]) <= MAX_AUTO_QWEN_BILLIONS:
            found.append(name)
    return sorted(found)


def check_prompts(tokenizer, count: int, seed: int) -> list[list[int]]:
    """Chat-templated synthetic Level 1-3 problems with the project's system prompt."""
    from apo.prompts import encode_problem
    from apo.synthetic import generate_problems

    rows = generate_problems(count, seed=seed, levels=[1, 2, 3])
    return [encode_problem(tokenizer, row["problem"], "chat", A_PO_Config().system_prompt) for row in rows]


def engine_config(cfg: VllmCheckConfig, model: str) -> A_PO_Config:
    return A_PO_Config(model=model, dtype=cfg.dtype, generation_backend="vllm", seed=cfg.seed,
                       vllm_gpu_memory_utilization=cfg.gpu_memory_utilization)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- (a) throughput ---

def throughput(cfg: VllmCheckConfig, model: str) -> list[dict]:
    """Tokens per second of the hf and vllm engines on the same prompts and settings."""
    from apo.episodes import generate
    from apo.models import load_model, load_tokenizer, resolve_model_path
    from apo.vllm_engine import create_engine

    tokenizer = load_tokenizer(model)
    prompts = check_prompts(tokenizer, cfg.num_prompts, cfg.seed)
    settings = dict(max_new_tokens=cfg.max_new_tokens, temperature=1.0, top_p=1.0, batch_size=cfg.hf_batch_size)
    rows = []
    policy = load_model(model, dtype=cfg.dtype, device=device())
    generate(policy, tokenizer, prompts[:2], **{**settings, "max_new_tokens": 4})  # warm-up
    rows.append(timed("hf", lambda: generate(policy, tokenizer, prompts, **settings), cfg.seed))
    del policy
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    engine = create_engine(resolve_model_path(model), engine_config(cfg, model))
    generate(engine, tokenizer, prompts[:2], **{**settings, "max_new_tokens": 4})  # warm-up
    rows.append(timed("vllm", lambda: generate(engine, tokenizer, prompts, **settings), cfg.seed))
    engine.close()
    return rows


def timed(engine: str, run, seed: int) -> dict:
    torch.manual_seed(seed)
    synchronize()
    started = time.perf_counter()
    generations = run()
    synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(g.response_ids) for g in generations)
    return {"engine": engine, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "truncated": sum(g.truncated for g in generations)}


# --- (b) agreement and (c) updates ---

def policy_logps(policy, generations) -> list[list[float]]:
    """Per-token log-probs of each generation's response under `policy` (temperature 1)."""
    results = []
    with torch.no_grad():
        for start in range(0, len(generations), 8):
            part = generations[start:start + 8]
            out = _response_logps(policy, part)
            results += [out.token_logps[row, :len(g.response_ids)].float().cpu().tolist()
                        for row, g in enumerate(part)]
    return results


def abs_diffs(engine_logps: list[list[float]], recomputed: list[list[float]]) -> list[float]:
    return [abs(a - b) for row_a, row_b in zip(engine_logps, recomputed) for a, b in zip(row_a, row_b)]


def sample_with_logprobs(engine, tokenizer, prompts, cfg: VllmCheckConfig, seed: int):
    from apo.episodes import eos_token_ids

    torch.manual_seed(seed)
    return engine.generate(tokenizer, prompts, eos_ids=eos_token_ids(engine, tokenizer),
                           max_new_tokens=cfg.max_new_tokens, temperature=1.0, top_p=1.0, with_logprobs=True)


def agreement(cfg: VllmCheckConfig, model: str) -> list[dict]:
    """(b): vLLM's sampled-token log-probs against the transformers policy's on the same weights."""
    from apo.models import load_model, load_tokenizer, resolve_model_path
    from apo.vllm_engine import create_engine

    tokenizer = load_tokenizer(model)
    prompts = check_prompts(tokenizer, cfg.check_prompts, cfg.seed + 1)
    engine = create_engine(resolve_model_path(model), engine_config(cfg, model), trainable=True)
    generations = sample_with_logprobs(engine, tokenizer, prompts, cfg, cfg.seed)
    policy = load_model(model, dtype=cfg.dtype, device=device())
    diffs = abs_diffs([g.sampled_logprobs for g in generations], policy_logps(policy, generations))
    return [{"engine": "vllm vs hf", "tokens": len(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
             "max_abs_diff": max(diffs)}]


def updates(cfg: VllmCheckConfig, model: str) -> list[dict]:
    """(c): after each optimizer step and sync, vLLM's log-probs follow the updated LoRA policy."""
    from peft import LoraConfig, get_peft_model

    from apo.models import load_model, load_tokenizer, resolve_model_path
    from apo.vllm_engine import create_engine

    tokenizer = load_tokenizer(model)
    prompts = check_prompts(tokenizer, cfg.check_prompts, cfg.seed + 2)
    engine = create_engine(resolve_model_path(model), engine_config(cfg, model), trainable=True)
    torch.manual_seed(cfg.seed)
    policy = get_peft_model(load_model(model, dtype=cfg.dtype, device=device()),
                            LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.update_learning_rate)
    targets = sample_with_logprobs(engine, tokenizer, prompts, cfg, cfg.seed)  # fixed responses to raise
    rows = []
    for step in range(1, cfg.update_steps + 1):
        # 1. one optimizer step: the policy moves toward the fixed responses
        policy.train()
        loss = -torch.stack(_logps_with_grad(policy, targets)).sum() / sum(len(g.response_ids) for g in targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        policy.eval()
        # 2. the engine takes the new weights, then samples
        engine.sync_weights(policy)
        generations = sample_with_logprobs(engine, tokenizer, prompts, cfg, cfg.seed + step)
        engine_logps = [g.sampled_logprobs for g in generations]
        # 3. compare with the updated policy and with the initial one (adapters off)
        current = abs_diffs(engine_logps, policy_logps(policy, generations))
        with policy.disable_adapter():
            initial = abs_diffs(engine_logps, policy_logps(policy, generations))
        mean_current, mean_initial = sum(current) / len(current), sum(initial) / len(initial)
        rows.append({"engine": "vllm vs policy", "step": step, "tokens": len(current), "loss": float(loss.detach()),
                     "mean_abs_diff": mean_current, "max_abs_diff": max(current),
                     "mean_abs_diff_initial": mean_initial, "ok": mean_current < 0.5 * mean_initial})
    return rows


def _response_logps(policy, generations):
    """Token log-probs of the generations' responses under `policy` (one batch, the trainer's collation)."""
    from apo_algorithm import PolicySample, collate_samples, response_token_logps

    batch = collate_samples([PolicySample(g.prompt_ids, g.response_ids, 0.0, 0.0) for g in generations], 0)
    dev = next(policy.parameters()).device
    return response_token_logps(policy, batch["prompt_ids"].to(dev), batch["prompt_mask"].to(dev),
                                batch["response_ids"].to(dev), batch["response_mask"].to(dev))


def _logps_with_grad(policy, generations) -> list[torch.Tensor]:
    out = _response_logps(policy, generations)
    return [(out.token_logps[row] * out.response_mask[row]).sum() for row in range(len(generations))]


# --- (d) the trainer ---

def trainer(cfg: VllmCheckConfig, model: str) -> list[dict]:
    """train_math_apo.py --generation_backend vllm for five iterations, as a child process."""
    from apo.synthetic import generate_problems

    with tempfile.TemporaryDirectory() as folder:
        rows = generate_problems(48, seed=cfg.seed, levels=[1, 2])
        for name, part in (("train.jsonl", rows[:32]), ("eval.jsonl", rows[32:])):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in part)
        command = [sys.executable, "train_math_apo.py", "--model", model, "--generation_backend", "vllm",
                   "--vllm_gpu_memory_utilization", str(cfg.gpu_memory_utilization),
                   "--data_file", os.path.join(folder, "train.jsonl"), "--eval_file", os.path.join(folder, "eval.jsonl"),
                   "--output_dir", os.path.join(folder, "run"), "--max_steps", "5", "--prompts_per_step", "16",
                   "--optimizer_steps_per_iteration", "2", "--micro_batch_size", "8", "--eval_every", "0",
                   "--eval_size", "16", "--save_every", "0", "--max_new_tokens", str(cfg.max_new_tokens),
                   "--use_lora", "true", "--policy_learning_rate", "1e-4"]
        started = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=REPO_ROOT, timeout=cfg.trainer_timeout_s)
            status = result.returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
        seconds = time.perf_counter() - started
        metrics_path = os.path.join(folder, "run", "metrics.jsonl")
        steps = []
        if os.path.isfile(metrics_path):
            with open(metrics_path, encoding="utf-8") as handle:
                steps = [json.loads(line) for line in handle if '"loss"' in line]
    tokens = sum(s["response_length"] * s["num_samples"] for s in steps)
    generation_s = sum(s["generation_s"] for s in steps)
    return [{"engine": "vllm", "step": len(steps), "seconds": seconds, "tokens": int(tokens),
             "tokens_per_s": tokens / generation_s if generation_s else None, "ok": status == 0 and len(steps) == 5}]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        found = run_part(VllmCheckConfig(**job["cfg"]), job["part"], job["model"])
        with open(job["out"], "w", encoding="utf-8") as handle:
            json.dump(found, handle)
    else:
        main(*parse_config((VllmCheckConfig,)))
