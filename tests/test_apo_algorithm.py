"""apo_algorithm: V*, the two policy losses, response log-probs, the value head, the reference
policy and a training step, on hand-computed values and a tiny in-process Llama."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from apo_algorithm import (
    A_PO_Config,
    PolicySample,
    ValueHead,
    advantage_weighted_loss,
    advantage_weights,
    apo_loss,
    collate_samples,
    estimate_optimal_value,
    evaluate_value_head,
    fit_value_head,
    masked_mean,
    prompt_hidden_states,
    reference_logps,
    reference_model,
    response_mask_from_ids,
    response_token_logps,
    run_episodes,
    sequence_logps,
)
from conftest import build_tiny_policy

EOS = 2  # the embedded tokenizer's <|im_end|>, also its pad token


def test_reexports_config_and_episode_api():
    cfg = A_PO_Config(value_learning_rate=1e-4, policy_learning_rate=5e-5, max_correction_turns=3,
                      advantage_clip=10.0)
    assert cfg.max_correction_turns == 3
    from apo import episodes
    assert run_episodes is episodes.run_episodes


# --- V* ---

@pytest.mark.parametrize("k, expected", list(enumerate(
    [0.0, 0.2935, 0.4772, 0.6113, 0.7169, 0.8040, 0.8782, 0.9428, 1.0])))
def test_optimal_value_k_of_8_correct_at_beta1_half(k, expected):
    rewards = torch.tensor([1.0] * k + [0.0] * (8 - k))
    assert float(estimate_optimal_value(rewards, beta1=0.5)) == pytest.approx(expected, abs=5e-5)


def test_optimal_value_hand_formula_and_batch_shape():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    v_star = estimate_optimal_value(rewards, beta1=0.5)
    assert v_star.shape == (2,)
    # 0.5 * log((2 e^2 + 2) / 4)
    assert float(v_star[0]) == pytest.approx(0.5 * math.log((2 * math.e ** 2 + 2) / 4), rel=1e-6)
    assert float(v_star[1]) == 0.0
    assert estimate_optimal_value(torch.zeros(3, 5, 8), beta1=0.5).shape == (3, 5)


def test_optimal_value_beta1_zero_is_mean_and_tiny_beta1_is_max():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert estimate_optimal_value(rewards, beta1=0.0).tolist() == [0.25, 0.0, 1.0]
    for beta1 in (1e-3, 1e-8, 1e-30):
        v_star = estimate_optimal_value(rewards, beta1=beta1)
        assert torch.isfinite(v_star).all()
        assert v_star.tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-2 if beta1 == 1e-3 else 1e-6)
    # V* grows with beta1 -> 0 from the mean towards the max
    values = [float(estimate_optimal_value(rewards[0], b)) for b in (10.0, 1.0, 0.5, 0.1)]
    assert values == sorted(values) and 0.25 < values[0] < values[-1] < 1.0


def test_optimal_value_rejects_bad_input():
    with pytest.raises(ValueError, match="beta1"):
        estimate_optimal_value([1.0, 0.0], beta1=-0.1)
    with pytest.raises(ValueError, match="non-empty"):
        estimate_optimal_value(torch.zeros(3, 0), beta1=0.5)


# --- losses ---

def test_apo_loss_hand_computed():
    policy = torch.tensor([-10.0, -20.0])
    ref = torch.tensor([-11.0, -18.0])
    rewards = torch.tensor([1.0, 0.0])
    v_star = torch.tensor([0.5, 0.25])
    # (0.1 * 1 - 0.5)^2 = 0.16 ; (0.1 * -2 - (-0.25))^2 = 0.0025 ; mean 0.08125
    assert float(apo_loss(policy, ref, rewards, v_star, beta2=0.1)) == pytest.approx(0.08125, rel=1e-6)


def test_apo_loss_gradient_direction():
    """d loss / d log pi_b = (2 / B) * beta2 * (beta2 * l_b - (r_b - V*_b)): descent raises log pi
    where r - V* > beta2 * l and lowers it otherwise."""
    beta2 = 0.1
    policy = torch.tensor([-10.0, -20.0, -5.0], requires_grad=True)
    ref = torch.tensor([-10.0, -19.0, -7.0])
    rewards = torch.tensor([1.0, 0.0, 1.0])
    v_star = torch.tensor([0.5, 0.5, 0.9])  # r - V* = 0.5, -0.5, 0.1 ; beta2 * l = 0, -0.1, 0.2
    apo_loss(policy, ref, rewards, v_star, beta2).backward()
    expected = [(2 / 3) * beta2 * (b * beta2 - a) for b, a in ((0.0, 0.5), (-1.0, -0.5), (2.0, 0.1))]
    assert policy.grad.tolist() == pytest.approx(expected, rel=1e-5)
    assert policy.grad[0] < 0 and policy.grad[1] > 0 and policy.grad[2] > 0


def test_apo_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        apo_loss(torch.zeros(2), torch.zeros(2), torch.zeros(3), torch.zeros(2), beta2=1e-3)


def test_advantage_weights_average_one_and_respect_clip():
    advantages = torch.tensor([100.0, -100.0, 0.0, 0.5])
    weights = advantage_weights(advantages, temperature=0.5, clip=1.0)
    expected = torch.softmax(torch.tensor([1.0, -1.0, 0.0, 0.5]) / 0.5, dim=0) * 4
    assert torch.allclose(weights, expected)
    assert float(weights.mean()) == pytest.approx(1.0)
    assert not weights.requires_grad
    # beyond the clip, larger advantages change nothing
    assert torch.allclose(advantage_weights(torch.tensor([5.0, -7.0, 0.0, 0.5]), 0.5, 1.0), weights)
    with pytest.raises(ValueError):
        advantage_weights(advantages, temperature=0.0, clip=1.0)


def test_advantage_weighted_loss_hand_computed():
    token_logps = torch.tensor([[-1.0, -3.0, -9.0], [-2.0, -2.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    advantages = torch.tensor([1.0, -1.0])
    loss = advantage_weighted_loss(token_logps, mask, advantage_weights(advantages, temperature=1.0, clip=10.0))
    weights = torch.softmax(torch.tensor([1.0, -1.0]), 0) * 2
    expected = (weights[0] * 2.0 + weights[1] * 2.0) / 2  # NLLs: (1 + 3) / 2 = 2, 6 / 3 = 2
    assert loss.item() == pytest.approx(float(expected), rel=1e-6)
    loss.backward()
    assert token_logps.grad[0, 2] == 0  # masked token gets no gradient
    assert token_logps.grad[0, 0] < token_logps.grad[1, 0] < 0  # the higher advantage pulls harder


def test_advantage_weighted_loss_of_a_slice_uses_the_whole_batch_weights():
    """Micro-batches of one optimizer step: each gets its slice of weights taken over the whole
    step, so the micro-batch losses, weighted by size, add up to the loss over the step."""
    torch.manual_seed(0)
    token_logps = -torch.rand(5, 7)
    mask = (torch.arange(7) < torch.tensor([[7], [3], [5], [1], [6]])).long()
    weights = advantage_weights(torch.tensor([0.5, -1.0, 2.0, 0.0, 12.0]), 0.7, 10.0)
    whole = advantage_weighted_loss(token_logps, mask, weights)
    parts = [advantage_weighted_loss(token_logps[s], mask[s], weights[s]) * len(range(5)[s]) / 5
             for s in (slice(0, 2), slice(2, 5))]
    assert float(sum(parts)) == pytest.approx(float(whole), rel=1e-6)
    assert float(advantage_weighted_loss(token_logps[:1], torch.zeros(1, 7), weights[:1])) == 0.0


def test_masked_mean():
    assert float(masked_mean(torch.tensor([[1.0, 2.0, 100.0]]), torch.tensor([[1, 1, 0]]))) == 1.5


# --- masks and batches ---

def test_response_mask_from_ids_stops_after_first_eos():
    ids = torch.tensor([[5, 6, EOS, 7, EOS], [5, 6, 7, 8, 9], [EOS, 5, 5, 5, 5]])
    assert response_mask_from_ids(ids, EOS).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert response_mask_from_ids(ids, [7, EOS]).tolist()[0] == [1, 1, 1, 0, 0]
    assert response_mask_from_ids(ids, [7])[1].tolist() == [1, 1, 1, 0, 0]


def test_collate_samples_pads_and_masks_by_length():
    samples = [PolicySample([5, 6, 7], [8, EOS], 1.0, 0.25),
               PolicySample([9], [10, 11, 12], 0.0, 0.5, role="verify", truncated=True)]
    batch = collate_samples(samples, pad_token_id=EOS)
    assert batch["prompt_ids"].tolist() == [[5, 6, 7], [EOS, EOS, 9]]
    assert batch["prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["response_ids"].tolist() == [[8, EOS, EOS], [10, 11, 12]]
    assert batch["response_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch["rewards"].tolist() == [1.0, 0.0] and batch["baselines"].tolist() == [0.25, 0.5]
    assert batch["truncated"].tolist() == [False, True]
    with pytest.raises(ValueError, match="empty"):
        collate_samples([PolicySample([1], [], 0.0, 0.0)], pad_token_id=EOS)


# --- log-probs against a token-by-token loop ---

def loop_token_logps(model, prompt: list[int], response: list[int], temperature: float = 1.0) -> list[float]:
    """log softmax(logits / T)[y_t] by one unpadded forward per token: the definition."""
    values = []
    with torch.no_grad():
        for t, token in enumerate(response):
            ids = torch.tensor([prompt + response[:t]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float() / temperature, dim=-1)
            values.append(float(log_probs[token]))
    return values


def loop_token_entropies(model, prompt: list[int], response: list[int], temperature: float) -> list[float]:
    """Entropy of softmax(logits / T) before each response token, one unpadded forward per token."""
    values = []
    with torch.no_grad():
        for t in range(len(response)):
            ids = torch.tensor([prompt + response[:t]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float() / temperature, dim=-1)
            values.append(float(-(log_probs.exp() * log_probs).sum()))
    return values


@pytest.mark.parametrize("temperature", [0.6, 1.7])
def test_logps_and_entropy_at_the_sampling_temperature_equal_a_token_loop(embedded_tokenizer, temperature):
    model = build_tiny_policy(embedded_tokenizer, seed=11)
    cases = [([11, 12, 13, 14], [20, 21, EOS]), ([30], [31, 32, 33, 34])]
    batch = collate_samples([PolicySample(p, r, 0.0, 0.0) for p, r in cases], pad_token_id=EOS)
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    with torch.no_grad():
        result = response_token_logps(model, *inputs, with_entropy=True, temperature=temperature)
        sums = sequence_logps(model, *inputs, temperature=temperature)
        plain = sequence_logps(model, *inputs)
    ref = reference_logps(model, model, batch, temperature=temperature)
    for row, (prompt, response) in enumerate(cases):
        expected = loop_token_logps(model, prompt, response, temperature)
        assert result.token_logps[row, :len(response)].tolist() == pytest.approx(expected, abs=1e-4)
        assert result.entropy[row, :len(response)].tolist() == pytest.approx(
            loop_token_entropies(model, prompt, response, temperature), abs=1e-4)
        assert float(sums[row]) == pytest.approx(sum(expected), abs=1e-3)
        assert float(ref[row]) == pytest.approx(sum(expected), abs=1e-3)
        assert abs(float(plain[row]) - sum(expected)) > 1e-3  # the temperature matters
    with pytest.raises(ValueError, match="temperature"):
        sequence_logps(model, *inputs, temperature=0.0)


def test_temperature_one_changes_nothing(embedded_tokenizer):
    model = build_tiny_policy(embedded_tokenizer, seed=12)
    batch = collate_samples([PolicySample([5, 6, 7], [8, 9, EOS], 0.0, 0.0)], pad_token_id=EOS)
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    default = response_token_logps(model, *inputs, with_entropy=True)
    at_one = response_token_logps(model, *inputs, with_entropy=True, temperature=1.0)
    assert torch.equal(default.token_logps, at_one.token_logps) and torch.equal(default.entropy, at_one.entropy)


def test_sequence_logps_equals_token_loop_with_padding_eos_and_truncation(embedded_tokenizer):
    model = build_tiny_policy(embedded_tokenizer, seed=1)
    cases = [  # (prompt, response as sampled, tokens that count)
        ([11, 12, 13, 14, 15, 16], [20, 21, EOS], 3),         # EOS at the end, longest prompt
        ([30], [31, 32, 33, 34, 35, 36], 6),                  # one-token prompt, no EOS (truncated)
        ([40, 41, 42], [EOS], 1),                              # EOS only
        ([50, 51], [52, EOS, 53, 54, EOS], 2),                 # EOS mid-response: nothing after counts
    ]
    prompts = [PolicySample(p, r, 0.0, 0.0) for p, r, _ in cases]
    batch = collate_samples(prompts, pad_token_id=EOS)
    by_eos = sequence_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                            eos_token_id=EOS)
    # explicit masks of the counted length (the case 2 row is padded with EOS == pad; its mask
    # must come from lengths, which is what collate_samples does for responses already cut at EOS)
    mask = torch.zeros_like(batch["response_mask"])
    for row, (_, _, counted) in enumerate(cases):
        mask[row, :counted] = 1
    explicit = response_token_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], mask)
    for row, (prompt, response, counted) in enumerate(cases):
        expected = loop_token_logps(model, prompt, response[:counted])
        assert explicit.token_logps[row, :counted].tolist() == pytest.approx(expected, abs=1e-4)
        assert explicit.token_logps[row, counted:].abs().sum() == 0
        if row != 1:  # row 1 has no EOS; its EOS padding would count under the EOS rule (documented)
            assert float(by_eos[row]) == pytest.approx(sum(expected), abs=1e-3)
    assert explicit.response_mask.tolist() == mask.tolist()


def build_tiny_gpt2(tokenizer, seed: int = 0):
    """A tiny GPT-2: learned absolute positions, so a left-padded batch needs position ids that
    skip the padding (RoPE models like Llama are shift-invariant and would not notice)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=2, n_head=4,
                        eos_token_id=EOS, bos_token_id=EOS, pad_token_id=EOS)
    return GPT2LMHeadModel(config).eval()


@pytest.mark.parametrize("architecture", ["llama", "gpt2"])
def test_token_logps_are_independent_of_batch_padding(embedded_tokenizer, architecture):
    if architecture == "llama":
        model = build_tiny_policy(embedded_tokenizer, seed=2)
    else:
        model = build_tiny_gpt2(embedded_tokenizer, seed=2)
    alone = PolicySample([7, 8, 9], [10, 11, EOS], 0.0, 0.0)
    longer = PolicySample(list(range(100, 130)), list(range(200, 240)), 0.0, 0.0)
    single = collate_samples([alone], EOS)
    padded = collate_samples([longer, alone], EOS)
    a = response_token_logps(model, single["prompt_ids"], single["prompt_mask"], single["response_ids"],
                             single["response_mask"], with_entropy=True)
    b = response_token_logps(model, padded["prompt_ids"], padded["prompt_mask"], padded["response_ids"],
                             padded["response_mask"], with_entropy=True)
    assert torch.allclose(a.token_logps[0], b.token_logps[1, :3], atol=1e-5)
    assert torch.allclose(a.entropy[0], b.entropy[1, :3], atol=1e-5)
    assert b.entropy[1, 3:].abs().sum() == 0


def test_entropy_matches_the_distribution(embedded_tokenizer):
    model = build_tiny_policy(embedded_tokenizer, seed=3)
    batch = collate_samples([PolicySample([5, 6], [7, 8], 0.0, 0.0)], EOS)
    result = response_token_logps(model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                  batch["response_mask"], with_entropy=True)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1], dim=-1)
    assert float(result.entropy[0, 1]) == pytest.approx(float(-(log_probs.exp() * log_probs).sum()), rel=1e-4)


def test_bfloat16_policy_gives_float32_logps_with_gradients(embedded_tokenizer):
    model32 = build_tiny_policy(embedded_tokenizer, seed=10)
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    batch = fixed_batch()
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    result = response_token_logps(model16, *inputs, with_entropy=True)
    assert result.token_logps.dtype == torch.float32 and result.entropy.dtype == torch.float32
    with torch.no_grad():
        reference = sequence_logps(model32, *inputs)
    assert torch.allclose(result.token_logps.sum(-1).detach(), reference, rtol=2e-2)
    (result.token_logps.sum() - result.entropy.sum()).backward()
    assert model16.lm_head.weight.grad is not None and torch.isfinite(model16.lm_head.weight.grad.float()).all()


def test_logps_reject_right_padded_prompts_and_missing_mask(embedded_tokenizer):
    model = build_tiny_policy(embedded_tokenizer)
    ids = torch.tensor([[5, 6, EOS]])
    with pytest.raises(ValueError, match="left-padded"):
        sequence_logps(model, ids, torch.tensor([[1, 1, 0]]), torch.tensor([[7]]), eos_token_id=EOS)
    with pytest.raises(ValueError, match="response_mask or eos_token_id"):
        sequence_logps(model, ids, torch.ones_like(ids), torch.tensor([[7]]))


def test_prompt_hidden_states_ignore_left_padding(embedded_tokenizer):
    model = build_tiny_policy(embedded_tokenizer, seed=4)
    batch = collate_samples([PolicySample([5, 6, 7, 8, 9], [EOS], 0.0, 0.0),
                             PolicySample([10, 11], [EOS], 0.0, 0.0)], EOS)
    hidden = prompt_hidden_states(model, batch["prompt_ids"], batch["prompt_mask"])
    assert hidden.shape == (2, model.config.hidden_size) and not hidden.requires_grad
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([[10, 11]]), output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(hidden[1], alone, atol=1e-5)


# --- value head ---

def test_value_head_fits_a_learnable_target_and_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(512, 16, generator=generator)
    direction = torch.randn(16, generator=generator)
    targets = torch.sigmoid(features @ direction / 2)
    torch.manual_seed(0)
    head = ValueHead(16, hidden_size=32)
    before = evaluate_value_head(head, features, targets)
    assert before["corr"] is None  # an untrained head predicts the constant 0.5
    losses = fit_value_head(head, features[:448], targets[:448], lr=1e-2, epochs=30, batch_size=128, seed=0)
    assert len(losses) == 30 and losses[-1] < 0.05 * losses[0]
    held_out = evaluate_value_head(head, features[448:], targets[448:])
    assert held_out["mse"] < 0.1 * before["mse"] and held_out["corr"] > 0.95 and held_out["n"] == 64
    head.save(str(tmp_path))
    loaded = ValueHead.load(str(tmp_path))
    assert loaded.hidden_size == 32 and loaded.input_size == 16
    assert torch.equal(loaded(features), head(features))
    predictions = loaded(features)
    assert ((predictions >= 0) & (predictions <= 1)).all()


def test_linear_value_head_and_missing_files(tmp_path):
    head = ValueHead(8, hidden_size=0)
    assert torch.allclose(head(torch.randn(3, 8)), torch.full((3,), 0.5))
    head.save(str(tmp_path))
    assert ValueHead.load(str(tmp_path)).hidden_size == 0
    with pytest.raises(FileNotFoundError, match="value_head"):
        ValueHead.load(str(tmp_path / "missing"))


# --- reference policy and a training step ---

def fixed_batch():
    samples = [PolicySample([5, 6, 7], [20, 21, 22, EOS], reward=1.0, baseline=0.3),
               PolicySample([8, 9], [30, 31, EOS], reward=0.0, baseline=0.6),
               PolicySample([10, 11, 12, 13], [40, 41, 42, 43, 44], reward=0.0, baseline=0.2, truncated=True),
               PolicySample([14], [50, EOS], reward=1.0, baseline=0.9)]
    return collate_samples(samples, pad_token_id=EOS)


def lora_policy(model, init_lora_weights=True):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"],
                        init_lora_weights=init_lora_weights)
    return get_peft_model(model, config)


def test_reference_logps_with_lora_equal_the_base_model(embedded_tokenizer):
    batch = fixed_batch()
    base = build_tiny_policy(embedded_tokenizer, seed=5)
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    with torch.no_grad():
        base_logps = sequence_logps(base, *inputs)
    torch.manual_seed(0)
    policy = lora_policy(base, init_lora_weights=False)  # random B: the policy differs from the base
    with torch.no_grad():
        policy_logps = sequence_logps(policy, *inputs)
    assert (policy_logps - base_logps).abs().max() > 1e-3
    ref = reference_logps(policy, None, batch)
    assert torch.allclose(ref, base_logps, atol=1e-5) and not ref.requires_grad
    # adapters are enabled again afterwards
    with torch.no_grad():
        assert torch.allclose(sequence_logps(policy, *inputs), policy_logps, atol=1e-6)


def test_reference_model_is_the_frozen_copy_or_the_policy_without_adapters(embedded_tokenizer):
    batch = fixed_batch()
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    policy, ref_model = build_tiny_policy(embedded_tokenizer, seed=8), build_tiny_policy(embedded_tokenizer, seed=9)
    with reference_model(policy, ref_model) as model:
        assert model is ref_model
    with pytest.raises(ValueError, match="ref_model"), reference_model(policy, None):
        pass
    torch.manual_seed(0)
    lora = lora_policy(policy, init_lora_weights=False)
    with torch.no_grad():
        adapted = sequence_logps(lora, *inputs)
        with reference_model(lora, None) as model:
            assert model is lora
            disabled = sequence_logps(model, *inputs)
        assert (adapted - disabled).abs().max() > 1e-3
        assert torch.equal(sequence_logps(lora, *inputs), adapted)  # adapters back on after the block


def test_reference_logps_from_a_frozen_copy_and_errors(embedded_tokenizer):
    batch = fixed_batch()
    policy = build_tiny_policy(embedded_tokenizer, seed=6)
    ref_model = build_tiny_policy(embedded_tokenizer, seed=7)
    with torch.no_grad():
        expected = sequence_logps(ref_model, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                                  batch["response_mask"])
    assert torch.allclose(reference_logps(policy, ref_model, batch), expected)
    with pytest.raises(ValueError, match="ref_model"):
        reference_logps(policy, None, batch)


def apo_training_run(policy, ref_model, batch, steps: int, lr: float, beta2: float = 0.1):
    parameters = [p for p in policy.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=0.0)
    ref = reference_logps(policy, ref_model, batch)
    losses = []
    policy.train()
    for _ in range(steps):
        logps = sequence_logps(policy, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                               batch["response_mask"])
        loss = apo_loss(logps, ref, batch["rewards"], batch["baselines"], beta2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        logps = sequence_logps(policy, batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"],
                               batch["response_mask"])
        losses.append(apo_loss(logps, ref, batch["rewards"], batch["baselines"], beta2).item())
    changed = any(not torch.equal(b, p.detach()) for b, p in zip(before, parameters))
    return losses, changed, logps - ref


def test_apo_training_step_full_fine_tuning(embedded_tokenizer):
    batch = fixed_batch()
    policy = build_tiny_policy(embedded_tokenizer, seed=8)
    ref_model = copy.deepcopy(policy).requires_grad_(False)
    losses, changed, log_ratio = apo_training_run(policy, ref_model, batch, steps=8, lr=1e-3)
    assert changed
    # at pi = pi_ref the loss is mean (r - V*)^2
    assert losses[0] == pytest.approx(float(((batch["rewards"] - batch["baselines"]) ** 2).mean()), rel=1e-4)
    assert losses[-1] < 0.5 * losses[0]
    # the log-ratio moves towards (r - V*) / beta2: up for positive advantages, down otherwise
    advantage = batch["rewards"] - batch["baselines"]
    assert (torch.sign(log_ratio) == torch.sign(advantage)).all()


def test_apo_training_step_lora(embedded_tokenizer):
    batch = fixed_batch()
    policy = lora_policy(build_tiny_policy(embedded_tokenizer, seed=9))
    base_before = {n: p.detach().clone() for n, p in policy.named_parameters() if not p.requires_grad}
    losses, changed, log_ratio = apo_training_run(policy, None, batch, steps=8, lr=1e-2)
    assert changed and losses[-1] < 0.5 * losses[0]
    assert (torch.sign(log_ratio) == torch.sign(batch["rewards"] - batch["baselines"])).all()
    assert all(torch.equal(p, base_before[n]) for n, p in policy.named_parameters() if not p.requires_grad)
