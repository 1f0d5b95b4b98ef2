"""apo.models: the embedded SmolLM2 loads and generates, and an unknown model fails at once
with a message that names the offline alternatives."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from apo.config import A_PO_Config
from apo.models import (ModelNotAvailableError, build_models, load_model, load_tokenizer, resolve_dtype,
                        resolve_model_path)
from conftest import build_tiny_policy


@pytest.fixture
def offline(monkeypatch):
    """No network: HF_HUB_OFFLINE=1 for child code, and the already-imported hub constant too."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_embedded_tokenizer_is_set_up_for_batched_generation(embedded_tokenizer):
    assert embedded_tokenizer.padding_side == "left"
    assert embedded_tokenizer.pad_token_id == embedded_tokenizer.eos_token_id == 2  # <|im_end|>
    prompt = embedded_tokenizer.apply_chat_template([{"role": "user", "content": "What is 7 + 5?"}],
                                                    tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_embedded_model_loads_and_generates_a_few_tokens(embedded_tokenizer):
    model = load_model("embedded", dtype="float32")
    assert not model.training and model.generation_config.pad_token_id is not None
    prompts = [[{"role": "user", "content": "What is 7 + 5?"}], [{"role": "user", "content": "Say hi."}]]
    texts = [embedded_tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = embedded_tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**batch, max_new_tokens=4, do_sample=False)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    assert new_tokens.shape == (2, 4)
    assert all(embedded_tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens[:, :1])
    # Left padding: the shorter prompt's greedy continuation equals its unpadded one.
    single = embedded_tokenizer(texts[1:], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        alone = model.generate(**single, max_new_tokens=4, do_sample=False)
    assert torch.equal(alone[0, single["input_ids"].shape[1]:], new_tokens[1])


def test_unknown_hub_id_fails_fast_naming_the_embedded_model(offline):
    with pytest.raises(ModelNotAvailableError, match="--model embedded"):
        resolve_model_path("no-such-org/no-such-model-123")
    with pytest.raises(ModelNotAvailableError, match="local folder"):
        load_tokenizer("no-such-org/no-such-model-123")


def test_folder_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="without config.json"):
        resolve_model_path(str(tmp_path))


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="float64"):
        resolve_dtype("float64", "cpu")


def test_converted_embedded_model_is_a_plain_model_that_saves(tmp_path):
    """The GGUF conversion must leave no quantizer behind: checkpoints save the policy."""
    model = load_model("embedded", dtype="float32")
    assert getattr(model.config, "quantization_config", None) is None
    assert getattr(model, "hf_quantizer", None) is None
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert "quantization_config" not in (tmp_path / "config.json").read_text()


def test_build_models_loads_a_reference_copy_only_where_one_is_read(tmp_path, embedded_tokenizer):
    """Full fine-tuning: a frozen copy for stage 2 (and "all"), none for stage 1 alone, whose
    policy is never updated and is pi_ref itself; LoRA: never a copy (adapters disabled)."""
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(tmp_path)
    full = A_PO_Config(model=str(tmp_path), use_lora=False, dtype="float32")
    for stage, has_copy in (("1", False), ("2", True), ("all", True)):
        policy, ref_model = build_models(full, SimpleNamespace(stage=stage), "cpu", None)
        assert (ref_model is not None) == has_copy, stage
        if has_copy:
            assert not any(p.requires_grad for p in ref_model.parameters())
            assert all(torch.equal(a, b) for a, b in zip(policy.state_dict().values(), ref_model.state_dict().values()))
    lora = A_PO_Config(model=str(tmp_path), use_lora=True, dtype="float32", lora_target_modules="q_proj,v_proj")
    assert build_models(lora, SimpleNamespace(stage="all"), "cpu", None)[1] is None


@pytest.mark.parametrize("use_lora, setting, expected", [
    (False, None, True), (True, None, False), (False, False, False), (True, True, True)])
def test_gradient_checkpointing_unset_means_on_for_full_fine_tuning_only(tmp_path, embedded_tokenizer, use_lora,
                                                                         setting, expected):
    build_tiny_policy(embedded_tokenizer, seed=0).save_pretrained(tmp_path)
    apo = A_PO_Config(model=str(tmp_path), use_lora=use_lora, dtype="float32", lora_target_modules="q_proj,v_proj",
                      gradient_checkpointing=setting)
    assert apo.uses_gradient_checkpointing == expected
    with warnings.catch_warnings():
        # no call of the deprecated name where this transformers has the new one
        warnings.filterwarnings("error", message=".*gradient_checkpointing_enable", category=FutureWarning)
        policy, _ = build_models(apo, SimpleNamespace(stage="2"), "cpu", None)
    base = policy.get_base_model() if use_lora else policy
    assert any(getattr(module, "gradient_checkpointing", False) for module in base.modules()) == expected
