"""Multi-process runs on CPU with the real libraries: two processes through torch.distributed.run
(gloo), each test a few tens of seconds (marked slow).

* sharded decoding: a tiny Llama sharded with torch's FSDP2 `fully_shard` decodes, through the
  project's path for sharded policies, the tokens an unsharded model decodes, with rank 0's row
  ending at the first step; the old path (the loop on the sharded model) dies on the process
  group's timeout (tests/distributed_worker.py, scenario `decode`);
* models real on every rank: the reference, the stage-1 policy and the decoding copy, loaded as the
  trainer loads them under FSDP's cpu_ram_efficient_loading and under ZeRO-3's zero.Init, hold the
  model file's weights on both ranks;
* DDP with sampling: stage 1 and stage 2 at temperature 1.0 on two processes equal the one-process
  run (samples, V*, loss, grad norm, weights), the responses ending at different lengths;
* ZeRO-3 with LoRA, the whole trainer (accelerate's DeepSpeed path on CPU): sampled rollouts from the
  decoding copy, and a checkpoint whose adapter holds the trained tensors and whose merged model is
  base + B A alpha / r of exactly those tensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

import apo.synthetic as synthetic_math
import train_math_apo as T
from apo import stage1
from apo.config import A_PO_Config
from apo.records import read_metrics_lines
from conftest import REPO_ROOT, build_tiny_policy

pytestmark = pytest.mark.slow
APO_FIELDS = {f.name for f in dataclasses.fields(A_PO_Config)}
# Token ids that end a response besides the tokenizer's EOS: a fifth of the vocabulary, so that the random tiny
# model's samples end at different lengths (each step ends a row with probability about 0.2).
EXTRA_EOS = list(range(1000, 11000))


def torchrun(args: list[str], env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_tokenizer):
    folder = tmp_path_factory.mktemp("tiny_policy")
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def ending_dir(tmp_path_factory, embedded_tokenizer):
    """The tiny Llama with many EOS ids in its generation config: sampled rows end at different steps."""
    folder = tmp_path_factory.mktemp("ending_policy")
    model = build_tiny_policy(embedded_tokenizer, seed=0)
    model.generation_config.eos_token_id = [embedded_tokenizer.eos_token_id] + EXTRA_EOS
    model.save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = synthetic_math.generate_problems(24, seed=0, levels=[1])
    folder = tmp_path_factory.mktemp("data")
    for name, part in (("train", rows[:16]), ("eval", rows[16:])):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return {"train_file": str(folder / "train.jsonl"), "eval_file": str(folder / "eval.jsonl"), "rows": rows[:16]}


def make_cfg(model_dir, data, output_dir, **overrides):
    apo = {"model": model_dir, "num_value_samples": 2, "max_new_tokens": 6, "generation_batch_size": 3,
           "use_lora": False, "value_epochs": 2, "policy_learning_rate": 1e-3, "beta2": 0.1, "entropy_coef": 0.01,
           "temperature": 1.0, "dtype": "float32"}
    train = {"data_file": data["train_file"], "eval_file": data["eval_file"], "output_dir": str(output_dir),
             "stage": "all", "prompts_per_step": 4, "optimizer_steps_per_iteration": 2, "micro_batch_size": 2,
             "max_steps": 2, "eval_every": 0, "eval_size": 4, "save_every": 0, "eval_at_start": False,
             "stage1_batch_size": 2, "max_train_prompts": 8, "save_stage1_responses": True, "mixed_precision": "no"}
    for key, value in overrides.items():
        (apo if key in APO_FIELDS else train)[key] = value
    return A_PO_Config(**apo), T.TrainConfig(**train)


def write_yaml(cfg, path) -> str:
    path.write_text(yaml.safe_dump({**dataclasses.asdict(cfg[0]), **dataclasses.asdict(cfg[1])}))
    return str(path)


def rank_results(folder, prefix="rank") -> list:
    return [json.loads((folder / f"{prefix}{rank}.json").read_text()) for rank in range(2)]


# --- finding 1: decoding a sharded policy ---

def test_sharded_policy_decodes_from_its_whole_copy_and_the_loop_on_the_shards_dies(tiny_dir, tmp_path):
    result = torchrun(["tests/distributed_worker.py", "decode", tiny_dir, str(tmp_path)], timeout=240)
    ranks = rank_results(tmp_path)
    assert len(ranks[0]["greedy"]) == 1 and len(ranks[1]["greedy"]) == 8  # rank 0's row ended at the first step
    for rank in ranks:
        assert rank["greedy"] == rank["greedy_unsharded"]
        assert rank["sampled"] == rank["sampled_unsharded"] and len(rank["sampled"]) >= 1
        assert "sharded model" in rank["refused"]
    # The loop on the sharded model itself: rank 0 returned one token, rank 1 never finished.
    assert json.loads((tmp_path / "direct0.json").read_text()) == ranks[0]["greedy"]
    assert not (tmp_path / "direct1.json").exists()
    assert result.returncode != 0


# --- findings 2 and 3: every model the trainer does not prepare holds its weights on every rank ---

@pytest.mark.parametrize("scenario", ["load_fsdp", "load_zero3"])
def test_models_are_loaded_whole_on_every_rank(tiny_dir, tmp_path, scenario):
    if scenario == "load_zero3":
        pytest.importorskip("deepspeed")
    result = torchrun(["tests/distributed_worker.py", scenario, tiny_dir, str(tmp_path)])
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = rank_results(tmp_path)
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) == 6
    for rank in ranks:
        for name, value in rank.items():
            assert value == pytest.approx(rank["file"], rel=1e-9), name


# --- per-prompt sampling streams: DDP with sampling equals one process ---

def test_two_processes_sample_and_train_as_one_process(ending_dir, data, tmp_path):
    # V* from the value head (not 0 as the sampled rewards are): non-zero advantages from the first step.
    # One row per forward (as in test_train_math_apo's greedy two-process test): no padding, so every number
    # agrees to float32 rounding; that samples do not depend on batching is tests/test_generation.py's.
    settings = dict(value_source="head", generation_batch_size=1, micro_batch_size=1)
    single = T.main(make_cfg(ending_dir, data, tmp_path / "single", **settings))
    ddp_cfg = make_cfg(ending_dir, data, tmp_path / "ddp", **settings)
    result = torchrun(["train_math_apo.py", "--config", write_yaml(ddp_cfg, tmp_path / "ddp.yaml")])
    assert result.returncode == 0, result.stderr[-3000:]

    def stage1_records(folder):
        lines = (folder / stage1.STAGE1_FILE).read_text().splitlines()
        return {record["id"]: record for record in map(json.loads, lines)}

    one, two = stage1_records(tmp_path / "single"), stage1_records(tmp_path / "ddp")
    assert one == two and len(one) == 8  # the same responses, rewards and lengths for every prompt
    lengths = {length for record in one.values() for length in record["response_lengths"]}
    assert len(lengths) >= 3, lengths  # responses end at different lengths
    steps = [[r for r in read_metrics_lines(str(folder / "metrics.jsonl")) if "loss" in r]
             for folder in (tmp_path / "single", tmp_path / "ddp")]
    assert len(steps[0]) == len(steps[1]) == 2
    for a, b in zip(*steps):
        assert a["response_length"] == b["response_length"] and a["truncation_rate"] == b["truncation_rate"]
        assert a["v_star_mean"] == pytest.approx(b["v_star_mean"], rel=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["loss"] > 0
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5) and a["grad_norm"] > 0
    final_one, final_two = (load_file(os.path.join(folder, "model.safetensors"))
                            for folder in (single["final_dir"], tmp_path / "ddp" / "final"))
    assert final_one.keys() == final_two.keys()
    for name in final_one:
        assert torch.allclose(final_one[name], final_two[name], atol=1e-5, rtol=0), name


# --- findings 1, 3, 4 and 5 in the trainer: ZeRO-3 with LoRA on two processes ---

ZERO3_ENV = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
             "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true", "ACCELERATE_MIXED_PRECISION": "no"}


def test_zero3_lora_run_samples_and_saves_the_real_adapter(ending_dir, data, tmp_path):
    pytest.importorskip("deepspeed")
    cfg = make_cfg(ending_dir, data, tmp_path / "run", stage="2", use_lora=True, max_steps=1, save_every=1,
                   optimizer_steps_per_iteration=1, micro_batch_size=2)
    os.makedirs(tmp_path / "run")
    for row in data["rows"]:  # stage-1 values with non-zero V*, so that the update has a gradient
        with open(tmp_path / "run" / stage1.STAGE1_FILE, "a") as handle:
            handle.write(json.dumps({"id": row["id"], "rewards": [0.0, 1.0], "v_star": 0.29,
                                     "response_lengths": [1, 1]}) + "\n")
    (tmp_path / "run" / stage1.STAGE1_META_FILE).write_text(json.dumps(stage1.stage1_meta(cfg[0])))
    result = torchrun(["train_math_apo.py", "--config", write_yaml(cfg, tmp_path / "zero3.yaml")], env=ZERO3_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DeepSpeed" in result.stderr  # accelerate's DeepSpeed engine ran, not DDP

    checkpoint = tmp_path / "run" / "checkpoint-1"
    adapter = load_file(str(checkpoint / "adapter" / "adapter_model.safetensors"))
    config = json.loads((checkpoint / "adapter" / "adapter_config.json").read_text())
    base = load_file(os.path.join(ending_dir, "model.safetensors"))
    merged = load_file(str(checkpoint / "policy" / "model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    a_names = sorted(name for name in adapter if ".lora_A." in name)
    assert a_names and all(adapter[name].shape[0] == config["r"] for name in a_names)
    for a_name in a_names:
        b_name = a_name.replace(".lora_A.", ".lora_B.")
        assert adapter[b_name].abs().sum() > 0, b_name  # B starts at zero: the step trained it
        weight = a_name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        expected = base[weight] + scale * adapter[b_name] @ adapter[a_name]
        assert torch.allclose(merged[weight], expected, atol=1e-6), weight
    record = [r for r in read_metrics_lines(str(tmp_path / "run" / "metrics.jsonl")) if "loss" in r][0]
    assert 0 < record["truncation_rate"] < 1 or record["response_length"] < cfg[0].max_new_tokens
