"""Tests of the vLLM generation backend (apo/vllm_engine.py) against tests/fake_vllm.py.

The machine has no GPU and no vllm, so the fake stands in for the package (see its docstring
for what it reproduces). These tests check the plumbing: what the engine is asked (prompt ids,
n, seeds, stop ids, length, neutral sampling settings), how its outputs map back to prompts
and samples, EOS and truncation, the one-line refusal without vllm or a GPU, and that stage 2
loads the policy's current weights into the engine after every optimizer step. Nothing here
runs real vLLM: bench/gpu_check_vllm.py does that on a GPU with vllm.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, GenerationMixin

import apo.generation as generation
import apo.synthetic as synthetic_math
import apo.vllm_engine as vllm_engine
import evaluate_apo
import fake_vllm
import train_math_apo as T
from apo.config import A_PO_Config
from apo.episodes import encode_chat, eos_token_ids, generate, run_episodes
from apo.policy_weights import policy_tensors
from apo.vllm_engine import VLLMEngine, VLLMUnavailableError, create_engine
from conftest import REPO_ROOT, build_tiny_policy

EOS, END_OF_TEXT = 2, 0  # the embedded tokenizer's <|im_end|> and <|endoftext|>


# --- fixtures ---

@pytest.fixture
def fake_vllm_installed(monkeypatch):
    """`import vllm` gives tests/fake_vllm.py and a GPU is reported."""
    monkeypatch.setitem(sys.modules, "vllm", fake_vllm)
    monkeypatch.setattr(vllm_engine, "_cuda_available", lambda: True)
    return fake_vllm


@pytest.fixture
def no_hf_generate(monkeypatch):
    """Any generation on the hf path (the project's decoding loop, or transformers' generate)
    fails: everything must go through the engine."""
    def refuse(*args, **kwargs):
        raise AssertionError("the hf generation path was used with generation_backend=vllm")

    monkeypatch.setattr(GenerationMixin, "generate", refuse)
    monkeypatch.setattr(generation, "sample_continuations", refuse)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, embedded_tokenizer):
    """The tiny Llama of conftest as a model folder; its generation_config stops on both EOS ids."""
    folder = tmp_path_factory.mktemp("tiny_vllm")
    model = build_tiny_policy(embedded_tokenizer, seed=0)
    model.generation_config.eos_token_id = [EOS, END_OF_TEXT]
    model.save_pretrained(folder)
    embedded_tokenizer.save_pretrained(folder)
    return folder


def make_engine(tiny_dir, **cfg_fields) -> VLLMEngine:
    cfg = A_PO_Config(model=str(tiny_dir), dtype="float32", generation_backend="vllm", **cfg_fields)
    return create_engine(str(tiny_dir), cfg)


def chat_prompts(tokenizer, texts):
    return [encode_chat(tokenizer, [{"role": "user", "content": text}]) for text in texts]


# --- refusing to start ---

def test_require_vllm_names_the_install_command_without_the_package(monkeypatch):
    monkeypatch.setattr(vllm_engine.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VLLMUnavailableError) as raised:
        vllm_engine.require_vllm()
    message = str(raised.value)
    assert "pip install -r requirements-vllm.txt" in message and "\n" not in message


def test_require_vllm_without_a_gpu(fake_vllm_installed, monkeypatch):
    monkeypatch.setattr(vllm_engine, "_cuda_available", lambda: False)
    with pytest.raises(VLLMUnavailableError, match="needs a CUDA GPU") as raised:
        vllm_engine.require_vllm()
    assert "\n" not in str(raised.value)


@pytest.mark.skipif(vllm_engine.importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_scripts_stop_at_once_with_one_line_on_a_machine_without_vllm(tmp_path):
    result = subprocess.run([sys.executable, "train_math_apo.py", "--generation_backend", "vllm",
                             "--data_file", str(tmp_path / "missing.jsonl")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install -r requirements-vllm.txt" in lines[0], result.stderr
    # evaluate_apo refuses before it reads the eval file or loads a model
    with pytest.raises(VLLMUnavailableError):
        evaluate_apo.main(A_PO_Config(generation_backend="vllm"),
                          evaluate_apo.EvalConfig(eval_file=str(tmp_path / "missing.jsonl")))


def test_the_documented_vllm_commands_parse():
    from apo.config import parse_script_config
    from apo.correction import CorrectionTrainingConfig

    config = str(REPO_ROOT / "configs" / "pag_qwen2.5-1.5b-instruct.yaml")
    apo, *_ = parse_script_config("train_math_apo.py", (T.TrainConfig, CorrectionTrainingConfig), [
        "--config", config, "--generation_backend", "vllm"])
    assert (apo.generation_backend, apo.train_correction, apo.vllm_gpu_memory_utilization) == ("vllm", True, 0.3)
    apo, *_ = parse_script_config("train_math_apo.py", (T.TrainConfig, CorrectionTrainingConfig), [
        "--config", str(REPO_ROOT / "configs" / "apo_paper_qwen2.5-1.5b.yaml"), "--generation_backend", "vllm"])
    assert (apo.generation_backend, apo.prompt_format) == ("vllm", "raw")
    apo, eval_cfg = parse_script_config("evaluate_apo.py", (evaluate_apo.EvalConfig,), [
        "--model", "outputs/apo/final", "--generation_backend", "vllm", "--vllm_gpu_memory_utilization", "0.9",
        "--num_samples", "32", "--eval_temperature", "0.6", "--eval_top_p", "0.95", "--pass_k", "1", "8", "32"])
    assert (apo.generation_backend, apo.vllm_gpu_memory_utilization, eval_cfg.num_samples) == ("vllm", 0.9, 32)


def test_config_validates_the_vllm_fields():
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization"):
        A_PO_Config(vllm_gpu_memory_utilization=0.0)
    with pytest.raises(ValueError, match="vllm_max_model_len"):
        A_PO_Config(vllm_max_model_len=-1)
    assert A_PO_Config().generation_backend == "hf"


# --- what the engine is asked, and how its answers come back ---

def test_engine_gets_the_prompt_ids_n_seeds_stop_ids_and_neutral_settings(tiny_dir, embedded_tokenizer,
                                                                          fake_vllm_installed):
    engine = make_engine(tiny_dir, vllm_gpu_memory_utilization=0.4, vllm_max_model_len=512)
    llm = engine.llm
    assert llm.options["generation_config"] == "vllm" and llm.options["dtype"] == "float32"
    assert llm.options["gpu_memory_utilization"] == 0.4 and llm.options["max_model_len"] == 512
    assert llm.options["logprobs_mode"] == "processed_logprobs"
    assert "distributed_executor_backend" not in llm.options  # evaluation: vLLM's own executor

    prompts = chat_prompts(embedded_tokenizer, ["What is 1+1?", "Name a prime.", "Hi"])
    results = generate(engine, embedded_tokenizer, prompts, num_samples=3, max_new_tokens=5, temperature=0.7,
                       top_p=0.9, batch_size=2)
    assert [ids for ids, _ in llm.requests] == prompts  # one request per prompt, the ids themselves
    eos = eos_token_ids(engine, embedded_tokenizer)
    assert eos == [EOS, END_OF_TEXT]
    for _, params in llm.requests:
        assert params.n == 3 and params.max_tokens == 5 and params.stop_token_ids == eos
        assert (params.temperature, params.top_p, params.top_k, params.min_p) == (0.7, 0.9, 0, 0.0)
        assert (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) == (1.0, 0.0, 0.0)
        assert params.ignore_eos is False and params.min_tokens == 0 and params.logprobs is None
        assert params.detokenize is False
    seeds = [params.seed for _, params in llm.requests]
    assert len(set(seeds)) == 3 and all(isinstance(s, int) for s in seeds)
    assert len(results) == 9
    assert [r.prompt_ids for r in results] == [p for p in prompts for _ in range(3)]  # prompt-major
    assert all(1 <= len(r.response_ids) <= 5 for r in results)


def test_outputs_map_back_to_their_prompt_and_sample_index(tiny_dir, embedded_tokenizer, fake_vllm_installed):
    engine = make_engine(tiny_dir)
    engine.llm.reverse_sample_order = True  # CompletionOutputs arrive last index first
    engine.llm.script = lambda prompt, params, index: [100 + index, 200 + len(prompt), EOS]
    prompts = chat_prompts(embedded_tokenizer, ["a", "a much longer question", "mid length"])
    results = generate(engine, embedded_tokenizer, prompts, num_samples=4, max_new_tokens=8, temperature=1.0,
                       top_p=1.0, batch_size=64)
    for i, prompt in enumerate(prompts):
        for j in range(4):
            assert results[i * 4 + j].response_ids == [100 + j, 200 + len(prompt), EOS]
            assert results[i * 4 + j].prompt_ids == prompt


def test_eos_and_truncation_follow_the_hf_rule(tiny_dir, embedded_tokenizer, fake_vllm_installed):
    engine = make_engine(tiny_dir)
    replies = {"stops": [5000, 6000, EOS, 7000], "second eos": [5000, END_OF_TEXT, 9], "runs on": [5000] * 20}
    prompts = chat_prompts(embedded_tokenizer, list(replies))
    by_prompt = {tuple(p): replies[name] for p, name in zip(prompts, replies)}
    engine.llm.script = lambda prompt, params, index: by_prompt[tuple(prompt)]
    stops, second, runs_on = generate(engine, embedded_tokenizer, prompts, max_new_tokens=4, temperature=1.0,
                                      top_p=1.0, batch_size=8)
    assert stops.response_ids == [5000, 6000, EOS] and not stops.truncated
    assert stops.text == embedded_tokenizer.decode([5000, 6000, EOS], skip_special_tokens=True)
    assert second.response_ids == [5000, END_OF_TEXT] and not second.truncated
    assert runs_on.response_ids == [5000] * 4 and runs_on.truncated


def test_outputs_that_do_not_line_up_are_refused(tiny_dir, embedded_tokenizer, fake_vllm_installed, monkeypatch):
    engine = make_engine(tiny_dir)
    prompts = chat_prompts(embedded_tokenizer, ["a", "b"])
    settings = dict(max_new_tokens=4, temperature=1.0, top_p=1.0, batch_size=8)

    def answer(completion, prompt_ids=None):
        return lambda requests, **kwargs: [fake_vllm.RequestOutput(str(i), None, prompt_ids or r["prompt_token_ids"],
                                                                   [completion]) for i, r in enumerate(requests)]

    monkeypatch.setattr(engine.llm, "generate", answer(fake_vllm.CompletionOutput(0, "", [5, 6], None, None, "stop")))
    with pytest.raises(RuntimeError, match="without returning one of the EOS ids"):
        generate(engine, embedded_tokenizer, prompts, **settings)
    monkeypatch.setattr(engine.llm, "generate", answer(fake_vllm.CompletionOutput(0, "", [5, EOS], None, None, "stop"),
                                                       prompt_ids=[1, 2, 3]))
    with pytest.raises(RuntimeError, match="another prompt"):
        generate(engine, embedded_tokenizer, prompts, **settings)
    monkeypatch.setattr(engine.llm, "generate", answer(fake_vllm.CompletionOutput(1, "", [5, EOS], None, None, "stop")))
    with pytest.raises(RuntimeError, match="expected 0..0"):
        generate(engine, embedded_tokenizer, prompts, **settings)


def test_seeds_come_from_torch_and_each_sample_has_its_own(tiny_dir, embedded_tokenizer, fake_vllm_installed):
    engine = make_engine(tiny_dir)
    prompts = chat_prompts(embedded_tokenizer, ["What is 2+2?", "And 3+3?"])

    def sample(seed):
        torch.manual_seed(seed)
        return [r.response_ids for r in generate(engine, embedded_tokenizer, prompts, num_samples=2,
                                                 max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=8)]

    first, again, other = sample(7), sample(7), sample(8)
    assert first == again and first != other
    assert first[0] != first[1]  # two samples of one prompt: seeds s and s + 1
    seeds = [params.seed for _, params in engine.llm.requests]
    assert seeds[:2] == seeds[2:4] and seeds[:2] != seeds[4:6]


def test_the_callers_per_prompt_seeds_reach_the_engine(tiny_dir, embedded_tokenizer, fake_vllm_installed):
    """The trainer's per-prompt seeds (apo.data_order.sample_seed) are vLLM's request seeds, so a
    prompt's samples do not depend on the process count on this backend either."""
    engine = make_engine(tiny_dir)
    prompts = chat_prompts(embedded_tokenizer, ["What is 2+2?", "And 3+3?", "Name a prime."])

    def sample(seeds):
        return [r.response_ids for r in generate(engine, embedded_tokenizer, prompts, num_samples=2,
                                                 max_new_tokens=6, temperature=1.0, top_p=1.0, batch_size=8,
                                                 seeds=seeds)]

    torch.manual_seed(0)
    first = sample([11, 2222, 333333])
    torch.manual_seed(1)  # the global RNG plays no part
    assert sample([11, 2222, 333333]) == first
    assert [params.seed for _, params in engine.llm.requests] == [11, 2222, 333333] * 2
    assert sample([12, 2222, 333333])[:2] != first[:2]


def test_greedy_responses_equal_the_hf_path_on_the_same_weights(tiny_dir, embedded_tokenizer,
                                                                fake_vllm_installed):
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompts = chat_prompts(embedded_tokenizer, ["What is 1+1?", "Solve x+2=5.", "Name a prime."])
    settings = dict(max_new_tokens=6, temperature=0.0, top_p=1.0, batch_size=1)
    hf = generate(model, embedded_tokenizer, prompts, **settings)
    engine_results = generate(engine, embedded_tokenizer, prompts, **settings)
    assert [g.response_ids for g in engine_results] == [g.response_ids for g in hf]
    assert [(g.text, g.truncated) for g in engine_results] == [(g.text, g.truncated) for g in hf]


def test_engine_logprobs_are_the_policy_logprobs_when_asked(tiny_dir, embedded_tokenizer, fake_vllm_installed):
    from apo_algorithm import response_token_logps
    from apo.decoding import left_pad
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    prompts = chat_prompts(embedded_tokenizer, ["What is 1+1?"])
    [g] = engine.generate(embedded_tokenizer, prompts, eos_ids=[EOS, END_OF_TEXT], max_new_tokens=5,
                          temperature=1.0, top_p=1.0, with_logprobs=True)
    prompt_ids, prompt_mask = left_pad(prompts, EOS)
    with torch.no_grad():
        out = response_token_logps(model, prompt_ids, prompt_mask, torch.tensor([g.response_ids]),
                                   torch.ones(1, len(g.response_ids), dtype=torch.long))
    assert g.sampled_logprobs == pytest.approx(out.token_logps[0, :len(g.response_ids)].tolist(), abs=1e-5)


def test_verify_and_revise_turns_go_through_the_engine(tiny_dir, embedded_tokenizer, fake_vllm_installed,
                                                       no_hf_generate):
    engine = make_engine(tiny_dir)
    cfg = A_PO_Config(max_correction_turns=2, max_new_tokens=40)

    def script(prompt, params, index):
        text = embedded_tokenizer.decode(prompt)
        reply = "The answer is wrong." if text.rstrip().endswith(
            cfg.verify_prompt + "<|im_end|>\n<|im_start|>assistant") else "It is \\boxed{3}."
        return embedded_tokenizer.encode(reply, add_special_tokens=False) + [EOS]

    engine.llm.script = script
    [episode] = run_episodes(engine, embedded_tokenizer, ["What is 1+1?"], cfg)
    assert [t.role for t in episode.turns] == ["attempt", "verify", "revise"]  # PAG: the revision is not verified
    assert [t.verdict for t in episode.turns if t.role == "verify"] == ["wrong"]
    assert [ids for ids, _ in engine.llm.requests] == [t.prompt_ids for t in episode.turns]


# --- weights ---

def test_sync_weights_sends_the_merged_lora_weights_and_leaves_the_adapters(tiny_dir, embedded_tokenizer,
                                                                            fake_vllm_installed):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                             init_lora_weights=False)).eval()
    ids = torch.tensor([[1, 200, 300, 400]])
    with torch.no_grad():
        before = policy(ids).logits
        sent = engine.sync_weights(policy)
        after = policy(ids).logits
        engine_logits = engine.llm.hf_model(ids).logits
    assert torch.equal(before, after)  # nothing was merged into the policy itself
    assert torch.allclose(engine_logits, before, atol=1e-5)  # the engine now computes the adapted policy
    names = [name for _, name, _ in engine.llm.load_history]
    assert sent == len(names) and not [n for n in names if "lora" in n or "base_layer" in n]
    merged = copy.deepcopy(policy).merge_and_unload()
    assert set(names) == {n for n, _ in merged.named_parameters()}
    assert engine.llm.prefix_cache_resets == 1 and engine.weight_updates == 1
    plain = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    assert [n for n, _ in policy_tensors(plain)] == [n for n, _ in merged.named_parameters()]


def test_sleep_mode_discards_at_level_2_and_restores_the_right_weights(tiny_dir, embedded_tokenizer,
                                                                      fake_vllm_installed, monkeypatch):
    events = []
    monkeypatch.setattr(vllm_engine.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(vllm_engine.torch.cuda, "empty_cache", lambda: events.append("empty_cache"))
    cfg = A_PO_Config(model=str(tiny_dir), dtype="float32", generation_backend="vllm", vllm_enable_sleep_mode=True)
    engine = create_engine(str(tiny_dir), cfg, trainable=True)
    llm = engine.llm
    assert llm.options["enable_sleep_mode"] and llm.options["distributed_executor_backend"] == "external_launcher"
    original_wake = llm.wake_up
    monkeypatch.setattr(llm, "wake_up", lambda tags=None: (events.append(tuple(tags)), original_wake(tags)))
    prompts = chat_prompts(embedded_tokenizer, ["What is 1+1?", "Name a prime."])
    greedy = dict(max_new_tokens=4, temperature=0.0, top_p=1.0, batch_size=4)
    first = [g.response_ids for g in generate(engine, embedded_tokenizer, prompts, **greedy)]
    assert llm.sleep_calls == [2] and engine.asleep == {"weights", "kv_cache"}
    # before any update the discarded weights are reloaded from the model folder
    again = [g.response_ids for g in generate(engine, embedded_tokenizer, prompts, **greedy)]
    assert again == first and llm.rpc_calls == ["reload_weights"]
    assert events == ["empty_cache", ("weights",), "empty_cache", ("kv_cache",)]
    # after an update: the sync maps the weights back, and a later generation re-sends the synced policy
    policy = build_tiny_policy(embedded_tokenizer, seed=1)
    engine.sync_weights(policy)
    expected = [g.response_ids for g in generate(policy, embedded_tokenizer, prompts, **greedy)]
    for _ in range(2):  # right after the sync, then again after a level-2 sleep with no sync in between
        assert [g.response_ids for g in generate(engine, embedded_tokenizer, prompts, **greedy)] == expected
    assert llm.sleep_calls == [2, 2, 2, 2] and llm.rpc_calls == ["reload_weights"] and engine.weight_updates == 1
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert len({step for step, _, _ in llm.load_history}) == 2  # sent by the sync, then once more after a sleep


def test_prompts_at_the_length_limit_are_counted_truncated_not_sent(tiny_dir, embedded_tokenizer,
                                                                    fake_vllm_installed):
    engine = make_engine(tiny_dir, vllm_max_model_len=40)
    short = [1, 200, 300, 400]
    at_limit, past = list(range(3, 43)), list(range(3, 60))
    generations = engine.generate(embedded_tokenizer, [short, at_limit, past], eos_ids=[EOS], max_new_tokens=20,
                                  temperature=1.0, top_p=1.0, num_samples=2)
    assert [len(g.response_ids) > 0 for g in generations] == [True, True, False, False, False, False]
    assert all(g.truncated and g.text == "" for g in generations[2:])
    assert [g.prompt_ids for g in generations[2:]] == [at_limit, at_limit, past, past]
    assert [ids for ids, _ in engine.llm.requests] == [short]  # vLLM would refuse the whole call for the others
    # the engine's own limit: prompt + response stop at max_model_len, counted as truncated
    near = list(range(3, 38))
    (capped,) = engine.generate(embedded_tokenizer, [near], eos_ids=[EOS], max_new_tokens=20, temperature=1.0,
                                top_p=1.0)
    assert len(near) + len(capped.response_ids) <= 40 and (capped.truncated or capped.response_ids[-1] == EOS)


# --- the fake behaves like vLLM 0.31 where the project relies on it ---

def test_fake_refuses_unknown_constructor_options(tiny_dir):
    with pytest.raises(TypeError, match="gpu_memory_utilisation"):
        fake_vllm.LLM(str(tiny_dir), gpu_memory_utilisation=0.3)
    assert fake_vllm.LLM(str(tiny_dir), gpu_memory_utilization=0.3).options["gpu_memory_utilization"] == 0.3


@pytest.mark.parametrize("fields, message", [
    ({"n": 2, "temperature": 0.0}, "n must be 1 when using greedy sampling"),
    ({"temperature": 2.5}, r"temperature must be in \[0, 2\]"),
    ({"temperature": -0.1}, "temperature must be non-negative"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
])
def test_fake_sampling_params_raise_vllms_own_validation_error(fields, message):
    with pytest.raises(fake_vllm.VLLMValidationError, match=message) as raised:
        fake_vllm.SamplingParams(**fields)
    assert not isinstance(raised.value, ValueError)  # vllm.exceptions: VLLMError -> VLLMClientError -> ...
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(best_of=2)
    assert fake_vllm.SamplingParams(temperature=0.001).temperature == 0.01  # vLLM raises it with a warning


def test_fake_stop_reason_is_none_for_the_engines_eos(tiny_dir):
    llm = fake_vllm.LLM(str(tiny_dir))
    llm.script = lambda prompt, sp, index: [[7, EOS], [7, END_OF_TEXT], [7, 9, 9, 9]][prompt[0] - 1]
    params = fake_vllm.SamplingParams(temperature=0.0, max_tokens=3, stop_token_ids=[EOS, END_OF_TEXT])
    outputs = llm.generate([{"prompt_token_ids": [i, 5]} for i in (1, 2, 3)], params, use_tqdm=False)
    completions = [o.outputs[0] for o in outputs]
    assert [(c.finish_reason, c.stop_reason) for c in completions] == [("stop", None), ("stop", END_OF_TEXT),
                                                                       ("length", None)]
    assert [c.token_ids for c in completions] == [[7, EOS], [7, END_OF_TEXT], [7, 9, 9]]


def test_fake_wake_up_with_a_tag_not_asleep_is_ignored_and_sleeping_engines_serve_nothing(tiny_dir):
    llm = fake_vllm.LLM(str(tiny_dir), enable_sleep_mode=True)
    request = [{"prompt_token_ids": [1, 5]}]
    llm.sleep(level=2)
    with pytest.raises(RuntimeError, match="sleeping"):
        llm.generate(request, fake_vllm.SamplingParams(max_tokens=2), use_tqdm=False)
    llm.wake_up(tags=["weights"])
    llm.wake_up(tags=["weights", "kv_cache"])  # "weights" is awake: vLLM ignores the call as a whole
    assert llm.is_sleeping()
    with pytest.raises(RuntimeError, match="sleeping"):  # vLLM's scheduler stays paused: a hang, not an answer
        llm.generate(request, fake_vllm.SamplingParams(max_tokens=2), use_tqdm=False)
    llm.wake_up(tags=["kv_cache"])
    assert not llm.is_sleeping()
    outputs = llm.generate(request, fake_vllm.SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)
    assert len(outputs[0].outputs[0].token_ids) >= 1  # served, from discarded (NaN) weights until reloaded


def test_fake_enforces_the_length_limit(tiny_dir):
    llm = fake_vllm.LLM(str(tiny_dir), max_model_len=12)
    assert llm.model_config.max_model_len == 12
    for length in (12, 13):
        with pytest.raises(fake_vllm.VLLMValidationError, match="maximum model length"):
            llm.generate([{"prompt_token_ids": [1] * length}], fake_vllm.SamplingParams(), use_tqdm=False)
    llm.script = lambda prompt, sp, index: [9] * 50
    (output,) = llm.generate([{"prompt_token_ids": [1] * 9}], fake_vllm.SamplingParams(max_tokens=20),
                             use_tqdm=False)
    assert (len(output.outputs[0].token_ids), output.outputs[0].finish_reason) == (3, "length")
    default_window = fake_vllm.LLM(str(tiny_dir)).model_config.max_model_len
    assert default_window == AutoConfig.from_pretrained(tiny_dir).max_position_embeddings


# --- the stages ---

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = synthetic_math.generate_problems(12, seed=0, levels=[1])
    folder = tmp_path_factory.mktemp("vllm_data")
    paths = {"train": folder / "train.jsonl", "eval": folder / "eval.jsonl"}
    for name, part in (("train", rows[:8]), ("eval", rows[8:])):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in part))
    return {"train_file": str(paths["train"]), "eval_file": str(paths["eval"])}


@pytest.mark.parametrize("use_lora", [False, True])
def test_stage2_loads_the_policy_into_the_engine_after_every_optimizer_step(
        tiny_dir, data, tmp_path, embedded_tokenizer, fake_vllm_installed, no_hf_generate, monkeypatch, use_lora):
    step_counts, syncs, engines = {}, [], []  # optimizer -> steps taken (the value head has its own AdamW)
    adamw_step = torch.optim.AdamW.step

    def counted_step(self, *args, **kwargs):
        step_counts[self] = step_counts.get(self, 0) + 1
        return adamw_step(self, *args, **kwargs)

    def policy_steps(model):
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        return sum(count for optimizer, count in step_counts.items()
                   if trainable & {id(p) for group in optimizer.param_groups for p in group["params"]})

    original_sync = VLLMEngine.sync_weights
    probe = torch.tensor([[1, 200, 300, 400, 500]])

    def checked_sync(self, model, accelerator=None):
        before = [p.detach().clone() for p in model.parameters()]
        sent = original_sync(self, model, accelerator)
        assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # the policy is untouched
        with torch.no_grad():  # the engine computes what the policy computes now
            follows = torch.allclose(self.llm.hf_model(probe).logits, model(probe).logits, atol=1e-5)
        syncs.append((policy_steps(model), follows))
        engines.append(self)
        return sent

    monkeypatch.setattr(torch.optim.AdamW, "step", counted_step)
    monkeypatch.setattr(VLLMEngine, "sync_weights", checked_sync)
    apo = A_PO_Config(model=str(tiny_dir), dtype="float32", generation_backend="vllm", num_value_samples=2,
                      max_new_tokens=4, use_lora=use_lora, lora_r=4, lora_alpha=8, value_epochs=1,
                      policy_learning_rate=1e-2, beta2=0.1, entropy_coef=0.0)
    train = T.TrainConfig(data_file=data["train_file"], eval_file=data["eval_file"], output_dir=str(tmp_path),
                          stage="all", prompts_per_step=4, optimizer_steps_per_iteration=2, micro_batch_size=2,
                          max_steps=2, eval_every=0, eval_size=2, save_every=0, eval_at_start=True,
                          stage1_batch_size=4, mixed_precision="no")  # the fake engine computes in float32
    summary = T.main((apo, train))
    assert summary["optimizer_steps"] == 4
    # once before the first rollout (stage 1 sampled pi_ref), then after each of the 4 optimizer steps
    assert [step for step, _ in syncs] == [0, 1, 2, 3, 4]
    assert all(follows for _, follows in syncs)
    llm = engines[0].llm
    stage1_requests = [p for _, p in llm.requests if p.n == 2]
    assert len(stage1_requests) == 8  # stage 1: the 8 training prompts, N=2 through the engine's n
    greedy = [p for _, p in llm.requests if p.temperature == 0.0]
    assert len(greedy) == 2 * 2  # held-out checks at step 0 and at the end
    records = [json.loads(line) for line in open(os.path.join(tmp_path, "stage1_values.jsonl"))]
    assert len(records) == 8 and all(len(r["rewards"]) == 2 for r in records)


def test_stage2_with_sleep_mode_never_generates_from_discarded_weights(tiny_dir, data, tmp_path, fake_vllm_installed,
                                                                     no_hf_generate, monkeypatch):
    """Stage 1's batches, the verify and revise turns and the held-out checks all generate between
    two weight syncs: after each level-2 sleep the engine must restore the weights it should hold."""
    engines = []
    original_create = vllm_engine.create_engine

    def recorded_create(*args, **kwargs):
        engines.append(original_create(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr(vllm_engine, "create_engine", recorded_create)
    apo = A_PO_Config(model=str(tiny_dir), dtype="float32", generation_backend="vllm", vllm_enable_sleep_mode=True,
                      num_value_samples=2, max_new_tokens=4, use_lora=False, value_epochs=1, train_correction=True,
                      max_correction_turns=2, policy_learning_rate=1e-2, beta2=0.1, entropy_coef=0.0)
    train = T.TrainConfig(data_file=data["train_file"], eval_file=data["eval_file"], output_dir=str(tmp_path),
                          stage="all", prompts_per_step=4, optimizer_steps_per_iteration=1, micro_batch_size=4,
                          max_steps=2, eval_every=1, eval_size=2, save_every=0, eval_at_start=True,
                          stage1_batch_size=4, mixed_precision="no")
    summary = T.main((apo, train))
    llm = engines[0].llm
    assert summary["optimizer_steps"] == 2 and llm.generate_calls > 2 * 3
    assert set(llm.sleep_calls) == {2} and len(llm.sleep_calls) == llm.generate_calls
    assert llm.nan_weight_generations == 0
    assert "reload_weights" in llm.rpc_calls  # stage 1's second batch, before any update


def test_evaluate_runs_its_episodes_on_the_engine(tiny_dir, data, tmp_path, fake_vllm_installed, no_hf_generate):
    cfg = A_PO_Config(model=str(tiny_dir), dtype="float32", generation_backend="vllm", max_correction_turns=2)
    eval_cfg = evaluate_apo.EvalConfig(eval_file=data["eval_file"], output_dir=str(tmp_path), limit=2,
                                       eval_max_new_tokens=4, bootstrap_resamples=100)
    metrics = evaluate_apo.main(cfg, eval_cfg)
    records = [json.loads(line) for line in open(tmp_path / "generations.jsonl")]
    assert {r["id"] for r in records} and all(r["response_tokens"] <= 4 for r in records)
    assert metrics["provenance"]["config"]["generation_backend"] == "vllm"


def test_gpu_check_parts_run_against_the_fake(tiny_dir, tmp_path, fake_vllm_installed):
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    try:
        import gpu_check_vllm
    finally:
        sys.path.remove(str(REPO_ROOT / "bench"))
    cfg = gpu_check_vllm.VllmCheckConfig(models=[str(tiny_dir)], parts=["throughput", "agreement", "updates"],
                                         num_prompts=4, max_new_tokens=4, hf_batch_size=2, check_prompts=3,
                                         update_steps=2, update_learning_rate=0.05, dtype="float32", isolate=False,
                                         output=str(tmp_path / "gpu_check.json"))
    result = gpu_check_vllm.main(cfg)
    rows = {(r["part"], r.get("engine"), r.get("step")): r for r in result["rows"]}
    assert rows[("throughput", "hf", None)]["tokens"] > 0 and rows[("throughput", "vllm", None)]["tokens"] > 0
    assert rows[("agreement", "vllm vs hf", None)]["mean_abs_diff"] < 1e-4  # same float32 weights
    for step in (1, 2):
        update = rows[("updates", "vllm vs policy", step)]
        assert update["ok"] and update["mean_abs_diff"] < 1e-4 < update["mean_abs_diff_initial"]
    assert json.load(open(tmp_path / "gpu_check.json"))["rows"] == result["rows"]


def test_the_fake_engine_is_only_used_by_tests():
    importing = re.compile(r"^\s*(import|from)\s+(tests\.)?fake_vllm\b|sys\.modules\[.vllm.\]", re.MULTILINE)
    users = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in (".venv", ".git", "tests", "outputs", "runs")]
        users += [os.path.join(root, f) for f in files
                  if f.endswith(".py") and importing.search(open(os.path.join(root, f), encoding="utf-8").read())]
    assert users == []
