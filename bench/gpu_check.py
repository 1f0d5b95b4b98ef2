"""GPU check for a lent machine without vLLM or the hub: one call of at most 10 minutes, one line per check, one JSON.

What travels to such a machine is the repository, the embedded model's tokenizer files (a few
MB: `--save_tokenizer` writes them to a small folder to carry) and nothing else: every model
here is built from a config with random weights (they cost the same compute as trained ones).
The checks, each in its own child process (its GPU memory is returned when it exits):

  decode_greedy_equal   the project's decoding loop (apo.decoding.sample_continuations) on the
                        device: greedy rows equal `model.generate`'s, float32, a small model,
                        rows ending at different steps (an EOS id the model does emit)
  decode_speed_b<B>     tokens/s of the loop against one `model.generate` call at Qwen2.5-1.5B's
                        shape (bf16), batch B (--speed_batches: 64 and 256), --speed_new_tokens
                        (512) new tokens, temperature 1.0, no EOS reached
  stage2_step_gc_on/off one A*-PO stage-2 optimizer step through the trainer's own code
                        (train_math_apo.build_run + update_policy) at Qwen2.5-1.5B's shape, full
                        fine-tuning (float32 master weights, bf16 autocast, AdamW, a frozen bf16
                        reference), --step_prompts prompts: seconds of each of two steps and peak
                        GPU memory, with gradient checkpointing on and off
  fsdp_launch           `accelerate launch --config_file configs/accelerate_fsdp.yaml --num_processes 1
                        train_math_apo.py` for two steps on a tiny random model folder (full
                        fine-tuning; synthetic data from prepare_data.py): exit status, steps logged
  ddp_launch            the same through configs/accelerate_ddp.yaml
  vllm                  skipped with one line when vllm is not installed (the lent image has none);
                        with vllm, the vLLM checks of issue 17 (throughput, log-prob agreement,
                        weight updates, the trainer on the engine) on --vllm_model

Qwen2.5-1.5B's shape (its config.json: hidden 1536, 28 layers, 12 heads, 2 KV heads,
intermediate 8960, vocab 151936, tied embeddings, rope_theta 1e6, rms_norm_eps 1e-6) is
QWEN25_15B below. The launch checks need math-verify (the trainer grades its samples), which
the lent image lacks: carry its wheels (device README) or they are skipped with one line.

Here, once (the wheels are pure Python; .whl/ and runs/ are git-ignored or excluded):
    python bench/gpu_check.py --save_tokenizer runs/gpu_tokenizer      # 3.5 MB: tokenizer.json and its config
    python bench/gpu_check.py --dry_run                                 # the JSON's shape, no GPU
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
        math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
On the lent machine, carrying runs/gpu_tokenizer and .whl:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    python3 bench/gpu_check.py --tokenizer_dir runs/gpu_tokenizer --output $OUT/gpu_check.json

Nothing here has run on a GPU yet (no machine was lent while it was written); `--dry_run` runs
in the test suite, and the checks themselves ran on CPU with --shape tiny --device cpu.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from _common import REPO_ROOT, package_versions  # noqa: E402
from apo.config import parse_config, write_json_atomic  # noqa: E402

logger = logging.getLogger("gpu_check")

# Qwen/Qwen2.5-1.5B-Instruct's config.json (random weights are built from it)
QWEN25_15B = dict(model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2, intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
                  max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6, hidden_act="silu")
# a stand-in of the same family for CPU runs of this script (--shape tiny)
TINY = dict(model_type="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=4096,
            rope_theta=1e6, rms_norm_eps=1e-6, hidden_act="silu")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


# what each check's record holds besides check, status, reason and wall_s (a dry run writes these as null)
RESULT_FIELDS = {
    "decode_greedy_equal": ("rows", "equal_rows", "distinct_lengths", "dtype"),
    "decode_speed_b": ("batch", "new_tokens", "dtype", "loop_tokens_per_s", "generate_tokens_per_s", "loop_s",
                       "generate_s", "tokens"),
    "stage2_step_gc_": ("gradient_checkpointing", "parameters", "prompts", "tokens_per_sample", "step1_s", "step2_s",
                        "loss", "peak_gib"),
    "fsdp_launch": ("distributed_type", "exit", "steps", "seconds"),
    "ddp_launch": ("distributed_type", "exit", "steps", "seconds"),
    "vllm": ("rows", "failed_rows"),
}


def result_fields(name: str) -> tuple[str, ...]:
    return next(fields for prefix, fields in RESULT_FIELDS.items() if name.startswith(prefix))


def checks_for(cfg: "GpuCheckConfig") -> list[str]:
    """The checks of a run, in order (one line and one JSON record each)."""
    names = ["decode_greedy_equal"] + [f"decode_speed_b{b}" for b in cfg.speed_batches]
    names += ["stage2_step_gc_on", "stage2_step_gc_off", "fsdp_launch", "ddp_launch", "vllm"]
    return [name for name in names if not cfg.only or any(name.startswith(prefix) for prefix in cfg.only)]


@dataclass
class GpuCheckConfig:
    """What to run, at which sizes, and where the JSON goes."""

    tokenizer_dir: str = field(default="", metadata={"help": (
        "Folder with the embedded model's tokenizer files (--save_tokenizer writes one); empty = the embedded "
        "model's cached folder (apo.models.embedded_model_dir), which exists only where the model was converted.")})
    device: str = field(default="cuda", metadata={"help": "Device of the checks ('cpu' only to try the script)."})
    shape: Literal["qwen2.5-1.5b", "tiny"] = field(default="qwen2.5-1.5b", metadata={"help": (
        "Model shape of the speed and stage-2 checks: Qwen2.5-1.5B's, or a tiny one for a CPU try.")})
    speed_batches: list[int] = field(default_factory=lambda: [64, 256], metadata={"help": "Batch sizes."})
    speed_new_tokens: int = field(default=512, metadata={"help": "New tokens per row in the speed checks."})
    speed_prompt_tokens: int = field(default=128, metadata={"help": "Prompt tokens per row in the speed checks."})
    step_prompts: int = field(default=16, metadata={"help": "Prompts of the stage-2 step (8-64)."})
    step_prompt_tokens: int = field(default=128, metadata={"help": "Prompt tokens per stage-2 sample."})
    step_response_tokens: int = field(default=512, metadata={"help": "Response tokens per stage-2 sample."})
    step_micro_batch: int = field(default=8, metadata={"help": "Micro-batch of the stage-2 step."})
    launch_steps: int = field(default=2, metadata={"help": "Stage-2 iterations of each accelerate launch."})
    check_timeout_s: int = field(default=240, metadata={"help": "Time limit of each child process."})
    total_budget_s: int = field(default=540, metadata={"help": (
        "Time for all checks: one that would start later is skipped, and each child gets at most what is left.")})
    vllm_model: str = field(default="embedded", metadata={"help": "Model of the vLLM checks (only with vllm)."})
    only: list[str] = field(default_factory=list, metadata={"help": "Run only checks whose name starts so."})
    output: str = field(default=os.path.join(REPO_ROOT, "runs", "gpu_check.json"), metadata={"help": "JSON."})
    dry_run: bool = field(default=False, metadata={"help": (
        "Parse the arguments and write the JSON's shape (every check 'dry_run'), without a GPU or any model.")})
    save_tokenizer: str = field(default="", metadata={"help": (
        "Write the embedded tokenizer's files to this folder (to carry to the GPU machine), then exit.")})
    seed: int = field(default=0, metadata={"help": "Seed of the random weights, prompts and sampling."})

    def __post_init__(self) -> None:
        if not 1 <= self.step_prompts <= 64 or not self.speed_batches or min(self.speed_batches) < 1:
            raise ValueError("GpuCheckConfig: step_prompts must be in [1, 64] and speed_batches positive")


# --- the run ---

def main(cfg: GpuCheckConfig) -> dict:
    """Run the checks (each in a child process), print one line each, write and return the JSON."""
    if cfg.save_tokenizer:
        folder = save_tokenizer(cfg.save_tokenizer)
        print(f"tokenizer files written to {folder}")
        return {"tokenizer_dir": folder}
    result = {"dry_run": cfg.dry_run, "settings": asdict(cfg),
              "packages": package_versions(("torch", "transformers", "accelerate", "peft", "vllm", "math-verify")),
              "device": device_name(cfg), "checks": []}
    tokenizer_dir = "" if cfg.dry_run else resolve_tokenizer_dir(cfg)
    deadline = time.perf_counter() + cfg.total_budget_s
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        for name in checks_for(cfg):
            started = time.perf_counter()
            left = int(deadline - started)
            if cfg.dry_run:
                record = {"status": "dry_run", **dict.fromkeys(result_fields(name))}
            elif left < 20:
                record = {"status": "skipped", "reason": f"out of time (--total_budget_s {cfg.total_budget_s})"}
            else:
                record = run_child(cfg, name, tokenizer_dir, work, min(cfg.check_timeout_s, left))
            record = {"check": name, **record, "wall_s": round(time.perf_counter() - started, 2)}
            result["checks"].append(record)
            print(summary_line(record), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
    write_json_atomic(cfg.output, result)
    print(f"wrote {cfg.output}")
    return result


def device_name(cfg: GpuCheckConfig) -> str:
    if cfg.dry_run or not cfg.device.startswith("cuda") or not torch.cuda.is_available():
        return "none (dry run)" if cfg.dry_run else cfg.device
    return torch.cuda.get_device_name(0)


def summary_line(record: dict) -> str:
    """'<check>: <status>: key=value ...' from a record."""
    shown = {k: v for k, v in record.items() if k not in ("check", "status", "reason", "log_tail") and v is not None}
    text = " ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in shown.items())
    reason = f" ({record['reason']})" if record.get("reason") else ""
    return f"{record['check']}: {record['status']}{reason}: {text}"


def run_child(cfg: GpuCheckConfig, name: str, tokenizer_dir: str, work: str, timeout_s: int) -> dict:
    """One check in its own process; its record, or status 'error' with the end of its log."""
    out = os.path.join(work, f"{name}.json")
    spec = json.dumps({"cfg": asdict(cfg), "check": name, "tokenizer_dir": tokenizer_dir, "work": work, "out": out,
                       "timeout_s": timeout_s})
    try:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        tail = (err.stderr or b"")[-1500:]
        return {"status": "error", "reason": f"timed out after {timeout_s} s",
                "log_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail}
    if done.returncode != 0 or not os.path.isfile(out):
        return {"status": "error", "reason": f"exit {done.returncode}", "log_tail": done.stderr[-1500:]}
    with open(out, encoding="utf-8") as handle:
        return json.load(handle)


def run_check(cfg: GpuCheckConfig, name: str, tokenizer_dir: str, work: str, timeout_s: int) -> dict:
    torch.manual_seed(cfg.seed)
    if name == "decode_greedy_equal":
        return decode_greedy_equal(cfg, tokenizer_dir)
    if name.startswith("decode_speed_b"):
        return decode_speed(cfg, int(name.removeprefix("decode_speed_b")))
    if name.startswith("stage2_step_gc_"):
        return stage2_step(cfg, tokenizer_dir, work, checkpointing=name.endswith("_on"))
    if name in ("fsdp_launch", "ddp_launch"):
        return launch(cfg, tokenizer_dir, work, name.removesuffix("_launch"), timeout_s)
    return vllm_checks(cfg, work)


# --- inputs ---

def save_tokenizer(folder: str) -> str:
    """Copy the embedded model's tokenizer files (not its weights) into `folder`."""
    from apo.models import embedded_model_dir

    source = embedded_model_dir()
    os.makedirs(folder, exist_ok=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(source, name)):
            shutil.copy(os.path.join(source, name), os.path.join(folder, name))
    return os.path.abspath(folder)


def resolve_tokenizer_dir(cfg: GpuCheckConfig) -> str:
    if cfg.tokenizer_dir:
        if not os.path.isfile(os.path.join(cfg.tokenizer_dir, "tokenizer.json")):
            raise SystemExit(f"--tokenizer_dir {cfg.tokenizer_dir}: no tokenizer.json there "
                             "(write one with --save_tokenizer where the embedded model is cached)")
        return os.path.abspath(cfg.tokenizer_dir)
    from apo.models import DEFAULT_CACHE_DIR, EMBEDDED_FOLDER_NAME

    cached = os.path.join(os.path.expanduser(DEFAULT_CACHE_DIR), EMBEDDED_FOLDER_NAME)
    if not os.path.isfile(os.path.join(cached, "tokenizer.json")):
        raise SystemExit("no --tokenizer_dir and no converted embedded model here: run "
                         "`python bench/gpu_check.py --save_tokenizer runs/gpu_tokenizer` where it is, and carry it")
    return cached


def model_config(shape: dict, **overrides):
    from transformers import AutoConfig

    values = {**shape, **overrides}
    return AutoConfig.for_model(values.pop("model_type"), **values)


def random_model(config, dtype: torch.dtype, device: str):
    """A causal LM with random weights, built on `device`."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_prompts(count: int, length: int, vocab: int, seed: int, varied: bool = True) -> list[list[int]]:
    """Token-id prompts; with `varied`, lengths from length/2 to length (left padding is exercised)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [length] * count
    if varied:
        lengths = torch.randint(max(1, length // 2), length + 1, (count,), generator=generator).tolist()
    return [torch.randint(3, vocab, (int(n),), generator=generator).tolist() for n in lengths]


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# --- decoding ---

def cut_at(row: list[int], eos: int) -> list[int]:
    return row[:row.index(eos) + 1] if eos in row else row


def decode_greedy_equal(cfg: GpuCheckConfig, tokenizer_dir: str) -> dict:
    """Greedy rows of the decoding loop against `model.generate`'s, float32, on the device."""
    from apo.decoding import sample_continuations

    # a wide initialisation spreads the logits, so that the argmax is not decided by rounding
    config = model_config(TINY, hidden_size=128, num_hidden_layers=2, initializer_range=0.2)
    model = random_model(config, torch.float32, cfg.device)
    prompts = random_prompts(16, 24, config.vocab_size, cfg.seed)
    pad, new_tokens = 0, 48
    plain = _generate(model, prompts, new_tokens, pad, eos=None, sample=False)
    # the EOS: a token row 0 emits early, so rows end at different steps (or run to the limit)
    eos = plain[0][min(5, len(plain[0]) - 1)]
    loop = sample_continuations(model, prompts, [1] * len(prompts), max_new_tokens=new_tokens, temperature=0.0,
                                top_p=1.0, eos_ids=[eos], pad_token_id=pad)
    reference = [cut_at(row, eos) for row in _generate(model, prompts, new_tokens, pad, eos=eos, sample=False)]
    lengths = sorted({len(row) for row in reference})
    equal = sum(a == b for a, b in zip(loop, reference))
    return {"status": "ok" if equal == len(prompts) and len(lengths) > 1 else "failed", "rows": len(prompts),
            "equal_rows": equal, "distinct_lengths": len(lengths), "dtype": "float32"}


def _generate(model, prompts, new_tokens: int, pad: int, *, eos: int | None, sample: bool) -> list[list[int]]:
    """`model.generate` on left-padded prompts: the new tokens of each row (pad after an EOS kept out by the caller)."""
    from apo.decoding import left_pad

    input_ids, mask = (t.to(model.device) for t in left_pad(prompts, pad))
    settings = dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0) if sample else dict(do_sample=False)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=0,
                             eos_token_id=eos, pad_token_id=pad, **settings)
    return out[:, input_ids.shape[1]:].tolist()


def decode_speed(cfg: GpuCheckConfig, batch: int) -> dict:
    """Generated tokens per second: the decoding loop against one `model.generate` call, same batch and length."""
    from apo.decoding import sample_continuations

    shape = QWEN25_15B if cfg.shape == "qwen2.5-1.5b" else TINY
    dtype = torch.bfloat16 if cfg.device.startswith("cuda") else torch.float32
    model = random_model(model_config(shape), dtype, cfg.device)
    prompts = random_prompts(batch, cfg.speed_prompt_tokens, shape["vocab_size"], cfg.seed + batch)
    no_eos = [shape["vocab_size"] + 1]  # no token reaches it: every row runs to the limit
    sample_continuations(model, prompts[:2], [1, 1], max_new_tokens=4, temperature=1.0, top_p=1.0, eos_ids=no_eos,
                         pad_token_id=0)  # warm-up
    _generate(model, prompts[:2], 4, 0, eos=None, sample=True)
    times, tokens = {}, {}
    for name, run in (("loop", lambda: sample_continuations(
            model, prompts, [1] * batch, max_new_tokens=cfg.speed_new_tokens, temperature=1.0, top_p=1.0,
            eos_ids=no_eos, pad_token_id=0)),
                      ("generate", lambda: _generate(model, prompts, cfg.speed_new_tokens, 0, eos=None, sample=True))):
        synchronize(cfg.device)
        started = time.perf_counter()
        rows = run()
        synchronize(cfg.device)
        times[name], tokens[name] = time.perf_counter() - started, sum(len(row) for row in rows)
    return {"status": "ok", "batch": batch, "new_tokens": cfg.speed_new_tokens,
            "dtype": str(dtype).removeprefix("torch."),
            "loop_tokens_per_s": tokens["loop"] / times["loop"],
            "generate_tokens_per_s": tokens["generate"] / times["generate"],
            "loop_s": times["loop"], "generate_s": times["generate"], "tokens": tokens["loop"]}


# --- one stage-2 step through the trainer ---

def write_model_folder(shape: dict, tokenizer_dir: str, folder: str, dtype: torch.dtype, **overrides) -> str:
    """A model folder (random weights, the embedded tokenizer) that the project's loaders read."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = model_config(shape, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, **overrides)
    model = random_model(config, dtype, "cpu")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def stage2_step(cfg: GpuCheckConfig, tokenizer_dir: str, work: str, *, checkpointing: bool) -> dict:
    """Two stage-2 optimizer steps of train_math_apo (full fine-tuning): seconds and peak memory."""
    import train_math_apo as T
    from apo.checkpoints import TrainerState
    from apo.config import A_PO_Config
    from apo.correction import CorrectionTrainingConfig
    from apo.models import load_tokenizer
    from apo_algorithm import PolicySample

    shape = QWEN25_15B if cfg.shape == "qwen2.5-1.5b" else TINY
    folder = os.path.join(work, f"model_{cfg.shape}")
    if not os.path.isdir(folder):
        write_model_folder(shape, tokenizer_dir, folder, torch.bfloat16)
    on_gpu = cfg.device.startswith("cuda")
    apo = A_PO_Config(model=folder, dtype="auto", use_lora=False, gradient_checkpointing=checkpointing,
                      rollout_dtype="policy", policy_learning_rate=1e-6, seed=cfg.seed)
    train = T.TrainConfig(output_dir=os.path.join(work, "stage2"), prompts_per_step=cfg.step_prompts,
                          optimizer_steps_per_iteration=1, micro_batch_size=cfg.step_micro_batch,
                          mixed_precision="bf16" if on_gpu else "no", max_steps=2)
    accelerator = T.start_accelerator(train)
    tokenizer = load_tokenizer(folder)
    run = T.build_run(apo, train, CorrectionTrainingConfig(), accelerator, tokenizer, None)
    optimizer = torch.optim.AdamW([p for p in run.policy.parameters() if p.requires_grad],
                                  lr=apo.policy_learning_rate, weight_decay=apo.weight_decay)
    scheduler = T.lr_scheduler_for(optimizer, apo, 2)
    run.policy, optimizer = accelerator.prepare(run.policy, optimizer)
    prompts = random_prompts(cfg.step_prompts, cfg.step_prompt_tokens, len(tokenizer), cfg.seed, varied=False)
    responses = random_prompts(cfg.step_prompts, cfg.step_response_tokens, len(tokenizer), cfg.seed + 1, varied=False)
    samples = [PolicySample(p, r, float(i % 2), 0.5) for i, (p, r) in enumerate(zip(prompts, responses))]
    advantages = [s.reward - s.baseline for s in samples]
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    seconds, losses = [], []
    state = TrainerState()
    for _ in range(2):
        synchronize(cfg.device)
        started = time.perf_counter()
        totals = T.update_policy(run, optimizer, scheduler, samples, advantages, state)
        synchronize(cfg.device)
        seconds.append(time.perf_counter() - started)
        losses.append(totals["loss_sum"] / len(samples))
    parameters = sum(p.numel() for p in run.unwrapped.parameters())
    return {"status": "ok" if state.optimizer_step == 2 else "failed", "gradient_checkpointing": checkpointing,
            "parameters": parameters, "prompts": cfg.step_prompts,
            "tokens_per_sample": cfg.step_prompt_tokens + cfg.step_response_tokens,
            "step1_s": seconds[0], "step2_s": seconds[1], "loss": losses[-1],
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None}


# --- the distributed configs through accelerate launch ---

def launch(cfg: GpuCheckConfig, tokenizer_dir: str, work: str, kind: str, timeout_s: int) -> dict:
    """train_math_apo.py under configs/accelerate_<kind>.yaml on one process for `launch_steps` steps."""
    if importlib.util.find_spec("math_verify") is None:
        return {"status": "skipped", "reason": "math-verify is not installed here: the trainer grades with it; "
                                               "carry its wheels (bench/gpu_check.py docstring)"}
    folder = os.path.join(work, "tiny_model")
    if not os.path.isdir(folder):
        write_model_folder(TINY, tokenizer_dir, folder, torch.float32)
    data = os.path.join(work, "data")
    if not os.path.isdir(data):
        subprocess.run([sys.executable, "prepare_data.py", "--source", "synthetic", "--synthetic_levels", "1",
                        "--synthetic_train_size", "32", "--synthetic_eval_size", "8", "--output_dir", data,
                        "--tokenizer", "none"], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    output = os.path.join(work, f"run_{kind}")
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", os.path.join("configs", f"accelerate_{kind}.yaml"),
               "--num_processes", "1", "train_math_apo.py", "--model", folder,
               "--data_file", os.path.join(data, "math_prompts_responses.jsonl"),
               "--eval_file", os.path.join(data, "math_eval_500.jsonl"), "--output_dir", output,
               "--max_steps", str(cfg.launch_steps), "--prompts_per_step", "4", "--optimizer_steps_per_iteration", "1",
               "--micro_batch_size", "4", "--num_value_samples", "2", "--max_new_tokens", "16", "--value_epochs", "1",
               "--eval_every", "0", "--eval_size", "4", "--save_every", "0", "--use_lora", "false",
               "--stage1_batch_size", "8", "--grading_workers", "1"]
    if not cfg.device.startswith("cuda"):
        command[3:3] = ["--cpu"]
    # what the launcher sets up on this one device: the same launch of a probe that prints the Accelerator's type
    probe = os.path.join(work, "probe_accelerator.py")
    with open(probe, "w", encoding="utf-8") as handle:
        handle.write("from accelerate import Accelerator\nstate = Accelerator()\n"
                     "print('PROBE', state.distributed_type.value, state.num_processes)\n")
    probe_command = command[:command.index("train_math_apo.py")] + [probe]
    probe_started = time.perf_counter()
    probed = subprocess.run(probe_command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    probe_s = int(time.perf_counter() - probe_started)
    found = [line.split()[1:] for line in probed.stdout.splitlines() if line.startswith("PROBE")]
    distributed_type = found[0][0] if found else f"probe failed (exit {probed.returncode})"
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=max(10, timeout_s - 20 - probe_s))
    seconds = time.perf_counter() - started
    metrics = os.path.join(output, "metrics.jsonl")
    steps = 0
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as handle:
            steps = sum('"loss"' in line for line in handle)
    ok = done.returncode == 0 and steps == cfg.launch_steps and os.path.isdir(os.path.join(output, "final"))
    record = {"status": "ok" if ok else "failed", "distributed_type": distributed_type, "exit": done.returncode,
              "steps": steps, "seconds": seconds}
    if not ok:
        record["log_tail"] = done.stderr[-1500:]
    return record


# --- vLLM ---

def vllm_checks(cfg: GpuCheckConfig, work: str) -> dict:
    """The vLLM checks when vllm is installed; skipped with one line otherwise."""
    if importlib.util.find_spec("vllm") is None:
        return {"status": "skipped", "reason": "vLLM is not on this image (pip install -r requirements-vllm.txt "
                                               "on a GPU machine that has it)"}
    import gpu_check_vllm

    rows = gpu_check_vllm.main(gpu_check_vllm.VllmCheckConfig(models=[cfg.vllm_model], isolate=False,
                                                              output=os.path.join(work, "vllm.json")))["rows"]
    failed = [row for row in rows if row.get("ok") is False or str(row.get("ok", "")).startswith("failed")]
    return {"status": "failed" if failed else "ok", "rows": len(rows), "failed_rows": len(failed)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        job = json.loads(sys.argv[2])
        record = run_check(GpuCheckConfig(**job["cfg"]), job["check"], job["tokenizer_dir"], job["work"],
                           job["timeout_s"])
        with open(job["out"], "w", encoding="utf-8") as handle:
            json.dump(record, handle)
    else:
        main(*parse_config((GpuCheckConfig,)))
