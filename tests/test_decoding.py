"""apo.decoding: the hf rollout engine samples what `model.generate` samples, keeps each row's
tokens when it shares prefills and drops finished rows, and its bfloat16 copy follows the policy."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from apo.decoding import (
    NUCLEUS_CANDIDATES, DecodingCopy, draw, next_token_distribution, resolve_rollout_dtype, sample_continuations,
)
from apo.models import cpu_has_native_bfloat16

VOCAB = 24
PAD = 0


def tiny_lm(seed: int = 0, vocab: int = VOCAB, tie: bool = True, logit_scale: float = 20.0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=tie, pad_token_id=PAD, eos_token_id=1)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger logits than the default init: a peaked, model-like next-token distribution
        model.lm_head.weight.mul_(logit_scale)
    return model


def hf_distribution(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, dim=-1)


# --- the next-token distribution ---

@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.6, 0.95), (1.3, 0.5), (0.7, 0.999)])
def test_next_token_distribution_is_transformers_warpers(temperature, top_p):
    torch.manual_seed(1)
    peaked = torch.randn(6, 5000) * 4          # nucleus well inside the top-k candidates
    flat = torch.randn(3, 5000) * 0.01         # nucleus far larger than NUCLEUS_CANDIDATES: the sort fallback
    for logits in (peaked, flat, torch.cat([peaked, flat])):
        ours = next_token_distribution(logits, temperature, top_p)
        assert torch.allclose(ours, hf_distribution(logits, temperature, top_p), atol=1e-6)
    assert (next_token_distribution(flat, 1.0, 0.9) > 0).sum(dim=-1).min() > NUCLEUS_CANDIDATES


def test_draw_follows_the_probabilities_and_never_picks_a_zero():
    torch.manual_seed(0)
    probs = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3, 0.0])
    draws = draw(probs.expand(200_000, -1).contiguous())
    frequencies = torch.bincount(draws, minlength=len(probs)).float() / len(draws)
    assert frequencies[probs == 0].sum() == 0
    assert torch.allclose(frequencies, probs, atol=0.005)


# --- the decoding loop ---

def prompts_of_several_lengths() -> list[list[int]]:
    return [[5, 6, 7], [8, 9, 10, 11, 12, 13], [3], [14, 15, 16, 17]]


def plain_greedy(model, prompt: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    output = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=PAD)
    tokens = output[0, len(prompt):].tolist()
    for position, token in enumerate(tokens):
        if token in eos:
            return tokens[: position + 1]
    return tokens


@pytest.mark.parametrize("compact_fraction", [0.0, 0.5, 1.0])
def test_greedy_rows_equal_model_generate_alone_whatever_the_padding_sharing_and_dropping(compact_fraction):
    model = tiny_lm()
    prompts = prompts_of_several_lengths()
    unbounded = [plain_greedy(model, prompt, 12, [VOCAB + 5]) for prompt in prompts]  # never stops
    # EOS ids that end the rows at different steps, so rows leave the batch one after another
    eos = sorted({unbounded[0][2], unbounded[1][6]})
    expected = [plain_greedy(model, prompt, 12, eos) for prompt in prompts]
    assert len({len(row) for row in expected}) > 1
    got = sample_continuations(model, prompts, [2, 1, 3, 1], max_new_tokens=12, temperature=0.0, top_p=1.0,
                               eos_ids=eos, pad_token_id=PAD, compact_fraction=compact_fraction)
    assert got == [expected[0]] * 2 + [expected[1]] + [expected[2]] * 3 + [expected[3]]


def test_sampled_tokens_follow_the_model_as_model_generate_does():
    """3,000 two-token samples of one prompt from each engine at temperature 0.8, top_p 0.9: the
    first token's frequencies match the model's own probabilities, and the (first, second) pair
    frequencies of the two engines agree (total variation distance, at fixed seeds)."""
    model, prompt, n = tiny_lm(seed=3, vocab=12, logit_scale=4.0), [4, 5, 6], 3000
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    exact_first = hf_distribution(logits[None], 0.8, 0.9)[0]
    torch.manual_seed(0)
    ours = torch.tensor(sample_continuations(model, [prompt], [n], max_new_tokens=2, temperature=0.8, top_p=0.9,
                                             eos_ids=[99], pad_token_id=PAD))
    torch.manual_seed(0)
    theirs = model.generate(input_ids=torch.tensor([prompt] * n), attention_mask=torch.ones(n, 3, dtype=torch.long),
                            max_new_tokens=2, do_sample=True, temperature=0.8, top_p=0.9, top_k=0, eos_token_id=99,
                            pad_token_id=PAD)[:, 3:]

    def pair_frequencies(tokens: torch.Tensor) -> torch.Tensor:
        return torch.bincount(tokens[:, 0] * 12 + tokens[:, 1], minlength=144).float() / len(tokens)

    first = torch.bincount(ours[:, 0], minlength=12).float() / n
    assert 0.5 * (first - exact_first).abs().sum() < 0.04
    assert (first[exact_first == 0] == 0).all()  # nothing outside the nucleus
    assert 0.5 * (pair_frequencies(ours) - pair_frequencies(theirs)).abs().sum() < 0.08
    assert exact_first.max() < 0.9  # the test would be empty on a near-deterministic model


def test_sample_continuations_checks_its_arguments():
    model = tiny_lm()
    with pytest.raises(ValueError, match="repeat count"):
        sample_continuations(model, [[3]], [0], max_new_tokens=2, temperature=0.0, top_p=1.0, eos_ids=[1],
                             pad_token_id=PAD)
    with pytest.raises(ValueError, match="compact_fraction"):
        sample_continuations(model, [[3]], [1], max_new_tokens=2, temperature=0.0, top_p=1.0, eos_ids=[1],
                             pad_token_id=PAD, compact_fraction=2.0)


# --- the decoding copy ---

def test_rollout_dtype_rules(tmp_path):
    with_bf16, without = tmp_path / "bf16", tmp_path / "plain"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bfloat16(str(with_bf16)) and not cpu_has_native_bfloat16(str(without))
    assert not cpu_has_native_bfloat16(str(tmp_path / "missing"))
    assert resolve_rollout_dtype("policy", torch.float32, "cpu") is None
    assert resolve_rollout_dtype("bfloat16", torch.float32, "cpu") == torch.bfloat16
    assert resolve_rollout_dtype("bfloat16", torch.bfloat16, "cpu") is None
    assert resolve_rollout_dtype("float32", torch.bfloat16, "cpu") == torch.float32
    assert resolve_rollout_dtype("auto", torch.bfloat16, "cpu") is None
    assert resolve_rollout_dtype("auto", torch.float32, "cpu") == (torch.bfloat16 if cpu_has_native_bfloat16() else None)
    with pytest.raises(ValueError, match="rollout_dtype"):
        resolve_rollout_dtype("int8", torch.float32, "cpu")


@pytest.mark.parametrize("lora", [False, True])
def test_decoding_copy_starts_as_the_folder_and_follows_the_policy(tmp_path, lora):
    base = tiny_lm(seed=5, tie=False)
    base.save_pretrained(tmp_path / "model")
    policy = tiny_lm(seed=5, tie=False)
    if lora:
        from peft import LoraConfig, get_peft_model

        policy = get_peft_model(policy, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    copy = DecodingCopy(str(tmp_path / "model"), torch.bfloat16)
    assert copy.model.dtype == torch.bfloat16 and copy.weight_updates == 0
    assert not any(p.requires_grad for p in copy.model.parameters())
    with torch.no_grad():  # an optimizer step's worth of change
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    sent = copy.sync_weights(policy)
    assert copy.weight_updates == 1 and sent == len(dict(base.named_parameters()))
    merged = policy.merge_and_unload() if lora else policy
    for name, parameter in merged.named_parameters():
        assert torch.equal(dict(copy.model.named_parameters())[name], parameter.detach().to(torch.bfloat16)), name
    greedy = sample_continuations(copy.model, [[3, 4, 5]], [1], max_new_tokens=4, temperature=0.0, top_p=1.0,
                                  eos_ids=[99], pad_token_id=PAD)
    assert len(greedy[0]) == 4


def test_decoding_copy_names_a_weight_it_does_not_have(tmp_path):
    tiny_lm(seed=5, tie=False).save_pretrained(tmp_path / "model")
    copy = DecodingCopy(str(tmp_path / "model"), torch.bfloat16)
    other = torch.nn.Linear(2, 2)
    with pytest.raises(KeyError, match="no weight 'weight'"):
        copy.sync_weights(other)
