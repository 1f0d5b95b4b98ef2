"""bench/gpu_check.py, the check for a lent GPU machine: its argument parsing and JSON shape on CPU
(--dry_run), so that it cannot rot between the rare runs on a GPU, and its checks' records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))
try:
    import gpu_check
finally:
    sys.path.remove(str(REPO_ROOT / "bench"))


def test_dry_run_parses_the_arguments_and_writes_the_json_shape_without_a_gpu(tmp_path):
    output = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry_run", "--speed_batches", "64", "256",
                           "--tokenizer_dir", str(tmp_path / "absent"), "--output", str(output)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(output.read_text())
    names = ["decode_greedy_equal", "decode_speed_b64", "decode_speed_b256", "stage2_step_gc_on",
             "stage2_step_gc_off", "fsdp_launch", "ddp_launch", "vllm"]
    assert [c["check"] for c in result["checks"]] == names
    assert all(c["status"] == "dry_run" for c in result["checks"]) and result["dry_run"] is True
    assert set(result["checks"][1]) >= {"loop_tokens_per_s", "generate_tokens_per_s", "batch", "new_tokens"}
    assert set(result["checks"][3]) >= {"step1_s", "step2_s", "peak_gib", "gradient_checkpointing", "parameters"}
    assert result["settings"]["speed_new_tokens"] == 512 and result["settings"]["shape"] == "qwen2.5-1.5b"
    assert {"torch", "transformers", "accelerate", "peft", "vllm"} <= set(result["packages"])
    lines = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == names  # one line per check, then where the JSON went


def test_the_big_shape_is_qwen2_5_1_5b():
    from transformers import AutoConfig

    config = gpu_check.model_config(gpu_check.QWEN25_15B)
    assert isinstance(config, type(AutoConfig.for_model("qwen2")))
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size, config.tie_word_embeddings) == (
        1536, 28, 12, 2, 8960, 151936, True)


def test_a_vllm_check_without_vllm_is_one_skipped_line(monkeypatch):
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    record = gpu_check.vllm_checks(gpu_check.GpuCheckConfig(), work="unused")
    assert record["status"] == "skipped" and "vLLM is not on this image" in record["reason"]
    line = gpu_check.summary_line({"check": "vllm", **record})
    assert "\n" not in line and line.startswith("vllm: skipped (vLLM is not on this image")


@pytest.mark.slow
def test_the_checks_run_on_cpu_with_a_tiny_shape_and_fill_their_records(tmp_path, embedded_tokenizer):
    tokenizer_dir = tmp_path / "tokenizer"
    embedded_tokenizer.save_pretrained(tokenizer_dir)
    cfg = gpu_check.GpuCheckConfig(tokenizer_dir=str(tokenizer_dir), device="cpu", shape="tiny", speed_batches=[2],
                                   speed_new_tokens=4, speed_prompt_tokens=6, step_prompts=2, step_prompt_tokens=8,
                                   step_response_tokens=8, step_micro_batch=2, only=["decode", "stage2_step_gc_on"],
                                   output=str(tmp_path / "cpu.json"))
    result = gpu_check.main(cfg)
    records = {c["check"]: c for c in result["checks"]}
    assert [records[name]["status"] for name in ("decode_greedy_equal", "decode_speed_b2", "stage2_step_gc_on")] == [
        "ok", "ok", "ok"], result
    for name, record in records.items():
        assert set(gpu_check.result_fields(name)) <= set(record)
    assert records["decode_greedy_equal"]["equal_rows"] == records["decode_greedy_equal"]["rows"]
