"""One process of a multi-process test in tests/test_distributed.py, started by
`python -m torch.distributed.run --nproc_per_node 2 tests/distributed_worker.py SCENARIO TINY_DIR OUT_DIR`
on CPU (gloo). Each rank writes OUT_DIR/rank<r>.json; the test compares them.

Scenarios:
  decode         a tiny Llama sharded with torch's FSDP2 `fully_shard` on a CPU mesh; rank 0's only
                 row ends at the first step, rank 1's runs on. Decodes through the project's path for
                 a sharded policy (a DecodingCopy synced from the shards, apo.generation.generate),
                 greedy and sampled, and with an unsharded model; records that generate() refuses the
                 sharded model; writes the results. Then, last, runs the decoding loop on the sharded
                 model itself (what the trainer did before generation had its rule for sharded
                 policies): rank 0 leaves the loop after one step while rank 1 waits in an all-gather
                 it never joins; the process group's timeout (PG_TIMEOUT_S) ends the run with an error.
  load_fsdp      the models loaded as the trainer loads them (apo.models.build_models, the decoding
                 copy) under accelerate's FSDP settings with fsdp_cpu_ram_efficient_loading.
  load_zero3     the same under DeepSpeed ZeRO-3 with zero3_init (accelerate's DeepSpeed path, gloo).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

MAX_NEW_TOKENS = 8
PG_TIMEOUT_S = 20
PROMPTS = ["What is 1+1?", "Name a prime number.", "What is 3 times 7?", "Count to three.", "Say hello."]


def checksum(tensors) -> float:
    return float(sum(float(t.detach().double().abs().sum()) + float(t.detach().double().sum()) for t in tensors))


def decode(tiny_dir: str, out_dir: str, rank: int, world: int) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from apo.decoding import DecodingCopy, sample_continuations
    from apo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_dir)
    prompts = [tokenizer.encode(text, add_special_tokens=False) for text in PROMPTS]
    reference = load_model(tiny_dir, dtype="float32")
    # Greedy continuations without a stop: choose as EOS the first token of one prompt's continuation that
    # another prompt's continuation never emits, so that rank 0's row ends at once and rank 1's runs on.
    never = [reference.config.vocab_size + 1]
    runs = sample_continuations(reference, prompts, [1] * len(prompts), max_new_tokens=MAX_NEW_TOKENS, temperature=0.0,
                                top_p=1.0, eos_ids=never, pad_token_id=tokenizer.pad_token_id)
    first, second, eos = next((a, b, runs[a][0]) for a in range(len(prompts)) for b in range(len(prompts))
                              if a != b and runs[a][0] not in runs[b])
    mine = prompts[first] if rank == 0 else prompts[second]
    reference.generation_config.eos_token_id = eos

    sharded = load_model(tiny_dir, dtype="float32")
    sharded.generation_config.eos_token_id = eos
    mesh = init_device_mesh("cpu", (world,))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    from apo.generation import generate

    def run(model, temperature, seeds=None):
        (generation,) = generate(model, tokenizer, [mine], max_new_tokens=MAX_NEW_TOKENS, temperature=temperature,
                                 top_p=1.0, batch_size=4, seeds=seeds)
        return generation.response_ids

    try:
        generate(sharded, tokenizer, [mine], max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0, batch_size=4)
        refused = ""
    except ValueError as err:
        refused = str(err)
    copy = DecodingCopy(tiny_dir, torch.float32)
    copy.sync_weights(sharded)  # every rank together: one all-gather per parameter
    copy.model.generation_config.eos_token_id = eos
    seeds = [1234 + rank]
    result = {"eos": eos, "refused": refused, "greedy": run(copy, 0.0), "greedy_unsharded": run(reference, 0.0),
              "sampled": run(copy, 1.0, seeds), "sampled_unsharded": run(reference, 1.0, seeds)}
    dist.barrier()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
    # The old path, last: the loop on the sharded model. Rank 0 stops after one step; rank 1 does not.
    tokens = sample_continuations(sharded, [mine], [1], max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0,
                                  eos_ids=[eos], pad_token_id=tokenizer.pad_token_id)[0]
    Path(out_dir, f"direct{rank}.json").write_text(json.dumps(tokens))
    dist.barrier()


def load(scenario: str, tiny_dir: str, rank: int, world: int) -> dict:
    import torch
    from safetensors.torch import load_file

    if scenario == "load_fsdp":  # what `accelerate launch --config_file configs/accelerate_fsdp.yaml` exports
        os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_CPU_RAM_EFFICIENT_LOADING="true")
        import torch.distributed as dist

        dist.init_process_group("gloo")
    else:  # configs/accelerate_zero3.yaml, as the trainer starts it on CPU processes
        os.environ.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_ZERO_STAGE="3",
                          ACCELERATE_DEEPSPEED_ZERO3_INIT="true", ACCELERATE_MIXED_PRECISION="no")
        import train_math_apo

        accelerator = train_math_apo.start_accelerator(train_math_apo.TrainConfig(mixed_precision="no"))
        assert accelerator.num_processes == world and accelerator.distributed_type == "DEEPSPEED"
    from apo.config import A_PO_Config
    from apo.decoding import DecodingCopy
    from apo.models import build_models

    expected = checksum(load_file(os.path.join(tiny_dir, "model.safetensors")).values())
    result = {"file": expected}
    for use_lora, stage in ((False, "all"), (False, "1"), (True, "all")):
        apo = A_PO_Config(model=tiny_dir, use_lora=use_lora, dtype="float32")
        policy, ref_model = build_models(apo, SimpleNamespace(stage=stage), torch.device("cpu"), None)
        key = f"{'lora' if use_lora else 'full'}_stage{stage}"
        result[f"{key}_policy"] = checksum(p for n, p in policy.named_parameters() if "lora_" not in n)
        if ref_model is not None:
            result[f"{key}_reference"] = checksum(ref_model.parameters())
    result["decoding_copy"] = checksum(DecodingCopy(tiny_dir, torch.float32).model.parameters())
    return result


def main() -> None:
    scenario, tiny_dir, out_dir = sys.argv[1:4]
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if scenario == "decode":
        from datetime import timedelta

        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=timedelta(seconds=PG_TIMEOUT_S))
        decode(tiny_dir, out_dir, rank, world)
    else:
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(load(scenario, tiny_dir, rank, world)))


if __name__ == "__main__":
    main()
