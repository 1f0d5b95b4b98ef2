"""The A*-PO algorithm: V* estimation, the two policy losses, response log-probs, the value
head, the reference policy, and (re-exported) the self-correction episode.

A*-PO (Brantley, Chen, Gao, Lee, Sun, Zhan, Zhang, 2025, "Accelerating RL for LLM Reasoning
with Optimal Advantage Regression", arXiv 2505.20686) in two stages:

1. offline: N samples per prompt from pi_ref give V*(x) = beta1 * log mean_i exp(r_i / beta1)
   (`estimate_optimal_value`); a small head on the policy's hidden state learns to predict
   it (`ValueHead`, `fit_value_head`).
2. online: one sample per prompt, and the least-squares regression of
   beta2 * log(pi / pi_ref) onto the optimal advantage r - V* (`apo_loss`), with the
   sequence log-probs from one batched forward pass (`sequence_logps`, `reference_logps` under
   `reference_model`).
   `advantage_weighted_loss` is the alternative objective of this project's seed design.

This is the one import the pipeline needs:

>>> from apo_algorithm import A_PO_Config, estimate_optimal_value, apo_loss, run_episodes
>>> cfg = A_PO_Config(max_correction_turns=3)
>>> round(float(estimate_optimal_value([1.0, 0, 0, 0, 0, 0, 0, 0], beta1=0.5)), 4)
0.2935
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from apo.config import A_PO_Config
from apo.decoding import left_padded_position_ids
from apo.records import write_json_atomic
from apo.episodes import (
    CORRECTION_MODES,
    Episode,
    Generation,
    Turn,
    encode_chat,
    eos_token_ids,
    generate,
    parse_verdict,
    run_episodes,
)

__all__ = [
    "A_PO_Config", "CORRECTION_MODES", "Episode", "Generation", "Turn", "encode_chat", "eos_token_ids",
    "generate", "parse_verdict", "run_episodes",
    "estimate_optimal_value", "apo_loss", "advantage_weights", "advantage_weighted_loss", "masked_mean",
    "TokenLogps", "response_token_logps", "sequence_logps", "response_mask_from_ids", "prompt_hidden_states",
    "ValueHead", "fit_value_head", "evaluate_value_head", "PolicySample", "collate_samples", "reference_model",
    "reference_logps",
]


VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head_config.json"


# --- stage 1: the optimal value ---

def estimate_optimal_value(rewards: Tensor | Sequence, beta1: float) -> Tensor:
    """V*(x) from N rewards of samples of pi_ref (A*-PO, arXiv 2505.20686, stage 1):

        V*(x) = beta1 * log( (1/N) * sum_i exp(r_i / beta1) )
              = m + beta1 * ( logsumexp_i((r_i - m) / beta1) - log N ),   m = max_i r_i

    rewards: (..., N) -> V*: (...), in the rewards' float dtype (float32 for ints or lists).
    beta1 = 0 gives the plain mean (the official code's convention). The max-shifted form
    stays finite for any beta1 > 0 and tends to max_i r_i as beta1 -> 0.
    Raises ValueError for beta1 < 0 or an empty last dimension.
    """
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if beta1 < 0:
        raise ValueError(f"beta1={beta1} must be >= 0 (0 = mean reward)")
    if rewards.dim() == 0 or rewards.shape[-1] == 0:
        raise ValueError(f"rewards of shape {tuple(rewards.shape)} need a non-empty last dimension of N samples")
    if beta1 == 0:
        return rewards.mean(dim=-1)
    top = rewards.max(dim=-1, keepdim=True).values
    shifted = torch.logsumexp((rewards - top) / beta1, dim=-1) - math.log(rewards.shape[-1])
    return top.squeeze(-1) + beta1 * shifted


# --- stage 2: the policy losses ---

def apo_loss(policy_logps: Tensor, ref_logps: Tensor, rewards: Tensor, v_star: Tensor, beta2: float) -> Tensor:
    """A*-PO least-squares regression (Brantley et al., 2025, arXiv 2505.20686, eq. for stage 2):

        loss = mean_b ( beta2 * (log pi(y_b|x_b) - log pi_ref(y_b|x_b)) - (r_b - V*(x_b)) )^2

    All inputs are (B,); the log-probs are sums over response tokens up to and including the
    first EOS (`sequence_logps`), with no length normalisation. Gradients flow through
    `policy_logps` only. Returns a scalar. Near pi = pi_ref its gradient is REINFORCE with
    baseline V* and step size 2 * beta2.
    """
    _same_1d_shape(policy_logps=policy_logps, ref_logps=ref_logps, rewards=rewards, v_star=v_star)
    log_ratio = policy_logps - ref_logps.detach()
    optimal_advantage = (rewards - v_star).to(log_ratio.dtype).detach()
    return ((beta2 * log_ratio - optimal_advantage) ** 2).mean()


def advantage_weights(advantages: Tensor, temperature: float, clip: float) -> Tensor:
    """Batch weights of the advantage-weighted loss: B * softmax_b(clip(A_b, -c, c) / T).

    advantages: (B,) -> (B,) float32, non-negative, mean exactly 1, detached (no gradient).
    Raises ValueError for temperature <= 0 or clip <= 0.
    """
    if temperature <= 0 or clip <= 0:
        raise ValueError(f"temperature={temperature} and clip={clip} must be > 0")
    if advantages.dim() != 1 or advantages.numel() == 0:
        raise ValueError(f"advantages must be a non-empty (B,) tensor, got shape {tuple(advantages.shape)}")
    clipped = advantages.detach().float().clamp(-clip, clip)
    return torch.softmax(clipped / temperature, dim=0) * advantages.numel()


def advantage_weighted_loss(token_logps: Tensor, response_mask: Tensor, weights: Tensor) -> Tensor:
    """The seed design's advantage-weighted LM loss (AWR-style; Peng et al., 2019, arXiv 1910.00177):

        loss = mean_b  w_b * NLL_b,   NLL_b = -(1/|y_b|) sum_t log pi(y_bt | x_b, y_b<t),
        w = B * softmax_b( clip(A_b, -c, c) / T ),   A_b = r_b - V(x_b)

    token_logps, response_mask: (B, R); weights: (B,), from `advantage_weights` over the whole
    optimizer-step batch (the trainer takes the softmax over every micro-batch and process of
    the step, then passes each micro-batch its slice). The weights are constants. A response
    with an empty mask contributes NLL 0 (the trainer's zero-weight padding pass). Returns a scalar.
    """
    mask = response_mask.to(token_logps.dtype)
    token_nll = -(token_logps * mask).sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)
    return (weights.detach().to(token_nll.device, token_nll.dtype) * token_nll).mean()


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over the positions where `mask` is 1 (token-mean), any shape; scalar."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _same_1d_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 1 or any(shape != first for shape in shapes.values()):
        raise ValueError(f"expected (B,) tensors of one shape, got {shapes}")


# --- log-probs of responses ---

@dataclass
class TokenLogps:
    """Per-token results of one forward pass over prompt + response.

    token_logps: (B, R) float32 log pi(y_t | x, y_<t), 0 where response_mask is 0.
    response_mask: (B, R) int64, 1 on the response tokens that count.
    entropy: (B, R) float32 entropy of pi(. | x, y_<t) (0 outside the mask), or None.
    """

    token_logps: Tensor
    response_mask: Tensor
    entropy: Tensor | None = None


def response_mask_from_ids(response_ids: Tensor, eos_token_id: int | Sequence[int]) -> Tensor:
    """(B, R) int64 mask: 1 up to and including the first EOS of each row, 0 after; all ones in a
    row without EOS.

    Caveat: when the pad token is the EOS token (SmolLM2, Qwen), a truncated response (no EOS)
    that was right-padded would get its first pad counted as EOS. `collate_samples` therefore
    builds the mask from the true lengths; use this only on unpadded or EOS-terminated rows.
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not eos_ids:
        raise ValueError("response_mask_from_ids needs at least one EOS token id")
    is_eos = torch.isin(response_ids, torch.tensor(eos_ids, device=response_ids.device))
    eos_before = torch.cumsum(is_eos.long(), dim=-1) - is_eos.long()  # EOS strictly before t
    return (eos_before == 0).long()


def _check_left_padded(prompt_mask: Tensor) -> None:
    if prompt_mask.dim() != 2 or not bool((prompt_mask[:, -1] == 1).all()):
        raise ValueError("prompt_ids/prompt_mask must be (B, P) and left-padded (every row's last token real); "
                         "build them with collate_samples")


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def response_token_logps(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    with_entropy: bool = False,
    *,
    temperature: float = 1.0,
) -> TokenLogps:
    """Token log-probs of the responses under `model` at sampling temperature `temperature`, in
    one batched forward pass: log softmax(logits / T)[y_t], and the entropy of softmax(logits / T).

    prompt_ids/prompt_mask: (B, P), left-padded; response_ids: (B, R), right-padded.
    The mask is `response_mask` if given, else `response_mask_from_ids(response_ids,
    eos_token_id)` (one of the two is required). Position ids skip the left padding, so the
    result equals an unpadded per-sequence forward. Only the R logit rows that predict the
    response are computed (`logits_to_keep`, which matters at vocabularies of 150k), and the
    log-softmax is taken in float32 one sequence at a time. Gradients flow when enabled.

    `temperature` must be the temperature the responses were sampled at, so the log-probs and
    the entropy describe the distribution that produced them (the official A*-PO code, a verl
    fork, and TRL divide the logits by the rollout temperature the same way). T = 1 leaves the
    logits unchanged. Raises ValueError for T <= 0 (greedy rollouts have no sampling
    distribution to score; score them at 1.0).
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0: pass the rollout temperature (1.0 for greedy)")
    _check_left_padded(prompt_mask)
    if response_mask is None:
        if eos_token_id is None:
            raise ValueError("response_token_logps needs response_mask or eos_token_id")
        response_mask = response_mask_from_ids(response_ids, eos_token_id)
    if response_ids.shape != response_mask.shape or response_ids.shape[0] != prompt_ids.shape[0]:
        raise ValueError(f"shapes do not match: prompt {tuple(prompt_ids.shape)}, response "
                         f"{tuple(response_ids.shape)}, response_mask {tuple(response_mask.shape)}")
    device = _model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    response_ids, response_mask = response_ids.to(device), response_mask.to(device).long()
    # Right padding comes after every real response token, so attending to it changes nothing.
    input_ids = torch.cat([prompt_ids, response_ids], dim=1)  # (B, P+R)
    attention_mask = torch.cat([prompt_mask.long(), torch.ones_like(response_ids)], dim=1)
    response_length = response_ids.shape[1]
    output = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=left_padded_position_ids(attention_mask), use_cache=False,
                   logits_to_keep=response_length + 1)
    logits = output.logits[:, :-1]  # (B, R, V): position P-1+t predicts response token t
    if temperature != 1.0:
        logits = logits / temperature
    recompute = torch.is_grad_enabled() and logits.requires_grad
    token_logps, entropies = [], []
    for row in range(logits.shape[0]):
        if recompute:  # keep no float32 (R, V) copy for backward: recompute it row by row there
            row_logps, row_entropy = checkpoint(_selective_log_softmax, logits[row], response_ids[row], with_entropy,
                                                use_reentrant=False)
        else:
            row_logps, row_entropy = _selective_log_softmax(logits[row], response_ids[row], with_entropy)
        token_logps.append(row_logps)
        entropies.append(row_entropy)
    mask = response_mask.to(torch.float32)
    return TokenLogps(
        token_logps=torch.stack(token_logps) * mask,
        response_mask=response_mask,
        entropy=torch.stack(entropies) * mask if with_entropy else None,
    )


def _selective_log_softmax(logits: Tensor, token_ids: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """logits (R, V), token_ids (R,) -> float32 log-probs of the tokens (R,) and entropies (R,) or None."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    token_logps = log_probs.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(dim=-1) if with_entropy else None
    return token_logps, entropy


def sequence_logps(
    model: nn.Module,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    *,
    temperature: float = 1.0,
) -> Tensor:
    """(B,) float32 log pi_T(y|x): the sum of token log-probs over each response, up to and
    including the first EOS, with the logits divided by the sampling `temperature` (see
    `response_token_logps` for the inputs)."""
    result = response_token_logps(model, prompt_ids, prompt_mask, response_ids, response_mask, eos_token_id,
                                  temperature=temperature)
    return result.token_logps.sum(dim=-1)


# --- the reference policy ---

@contextlib.contextmanager
def reference_model(policy: nn.Module, ref_model: nn.Module | None) -> Iterator[nn.Module]:
    """pi_ref as a model, for the duration of the block: `ref_model` (the frozen copy of the
    initial policy) when given, else `policy` with its LoRA adapters disabled, which is the
    initial policy without keeping a second copy in memory. Raises ValueError when there is no
    `ref_model` and `policy` is not a peft model."""
    if ref_model is not None:
        yield ref_model
        return
    if not _is_peft_model(policy):
        raise ValueError("the reference policy needs ref_model (a frozen copy of the initial policy) unless the "
                         "policy is a peft (LoRA) model, whose adapters are disabled to give the reference")
    with policy.disable_adapter():
        yield policy


def reference_logps(policy: nn.Module, ref_model: nn.Module | None, batch: dict[str, Tensor], *,
                    temperature: float = 1.0) -> Tensor:
    """(B,) log pi_ref(y|x) of a `collate_samples` batch at sampling `temperature`, without
    gradient; pi_ref is `reference_model(policy, ref_model)` (raises ValueError as it does)."""
    inputs = (batch["prompt_ids"], batch["prompt_mask"], batch["response_ids"], batch["response_mask"])
    with torch.no_grad(), reference_model(policy, ref_model) as model:
        return sequence_logps(model, *inputs, temperature=temperature)


def _is_peft_model(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


# --- the value head ---

def prompt_hidden_states(model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
    """(B, H) float32 last-layer hidden state at each prompt's final token, without gradient.

    prompt_ids/prompt_mask: (B, P), left-padded (the final token is the last column).
    """
    _check_left_padded(prompt_mask)
    device = _model_device(model)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    with torch.no_grad():
        output = model(input_ids=prompt_ids, attention_mask=prompt_mask,
                       position_ids=left_padded_position_ids(prompt_mask), output_hidden_states=True,
                       use_cache=False, logits_to_keep=1)
    return output.hidden_states[-1][:, -1].float()


class ValueHead(nn.Module):
    """V(x) in [0, 1] from the policy's last hidden state at the final prompt token.

    LayerNorm (LM hidden states carry a few very large coordinates) -> Linear(H, hidden_size)
    -> GELU -> Linear(hidden_size, 1) -> sigmoid; hidden_size = 0 makes it LayerNorm -> Linear.
    The last layer starts at zero, so an untrained head predicts 0.5.
    """

    def __init__(self, input_size: int, hidden_size: int = 256):
        super().__init__()
        if input_size < 1 or hidden_size < 0:
            raise ValueError(f"ValueHead(input_size={input_size}, hidden_size={hidden_size}): "
                             "input_size must be >= 1 and hidden_size >= 0 (0 = linear)")
        self.input_size, self.hidden_size = input_size, hidden_size
        if hidden_size == 0:
            self.net = nn.Sequential(nn.LayerNorm(input_size), nn.Linear(input_size, 1))
        else:
            self.net = nn.Sequential(nn.LayerNorm(input_size), nn.Linear(input_size, hidden_size), nn.GELU(),
                                     nn.Linear(hidden_size, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (B, H) -> (B,) values in [0, 1]."""
        weight = self.net[-1].weight
        return torch.sigmoid(self.net(hidden.to(weight.device, weight.dtype))).squeeze(-1)

    def save(self, folder: str) -> None:
        """Write value_head.safetensors and value_head_config.json into `folder` (created if needed)."""
        os.makedirs(folder, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, os.path.join(folder, VALUE_HEAD_WEIGHTS))
        write_json_atomic(os.path.join(folder, VALUE_HEAD_CONFIG),
                          {"input_size": self.input_size, "hidden_size": self.hidden_size})

    @classmethod
    def load(cls, folder: str, device: torch.device | str = "cpu") -> ValueHead:
        """The head saved by `save` in `folder`, in eval mode. Raises FileNotFoundError naming the file."""
        for name in (VALUE_HEAD_WEIGHTS, VALUE_HEAD_CONFIG):
            if not os.path.isfile(os.path.join(folder, name)):
                raise FileNotFoundError(f"{os.path.join(folder, name)} not found: not a folder written by ValueHead.save")
        with open(os.path.join(folder, VALUE_HEAD_CONFIG), encoding="utf-8") as handle:
            config = json.load(handle)
        head = cls(input_size=int(config["input_size"]), hidden_size=int(config["hidden_size"]))
        head.load_state_dict(load_file(os.path.join(folder, VALUE_HEAD_WEIGHTS)))
        return head.to(device).eval()


def fit_value_head(head: ValueHead, features: Tensor, targets: Tensor, lr: float, epochs: int, batch_size: int,
                   seed: int) -> list[float]:
    """Fit `head` by MSE to `targets` (N,) in [0, 1] from `features` (N, H), with AdamW.

    Mini-batches are shuffled by a generator seeded with `seed`. Returns the mean training
    loss of each epoch; the head is left in eval mode.
    """
    if features.dim() != 2 or targets.shape != (features.shape[0],) or features.shape[0] == 0:
        raise ValueError(f"features must be (N, H) and targets (N,) with N >= 1, got {tuple(features.shape)} "
                         f"and {tuple(targets.shape)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs={epochs}, batch_size={batch_size} must be >= 1 and lr={lr} > 0")
    device = next(head.parameters()).device
    features, targets = features.to(device, torch.float32), targets.to(device, torch.float32)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    epoch_losses = []
    for _ in range(epochs):
        order = torch.randperm(features.shape[0], generator=generator).to(device)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = F.mse_loss(head(features[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        epoch_losses.append(total / features.shape[0])
    head.eval()
    return epoch_losses


def evaluate_value_head(head: ValueHead, features: Tensor, targets: Tensor) -> dict:
    """{"n", "mse", "mae", "corr"} of the head's predictions against `targets` (N,).

    corr is Pearson's correlation, None when either side is constant or N < 2 (undefined).
    """
    with torch.no_grad():
        predictions = head(features).float().cpu()
    targets = targets.float().cpu()
    errors = predictions - targets
    corr = None
    if len(targets) >= 2 and float(predictions.std()) > 0 and float(targets.std()) > 0:
        corr = float(torch.corrcoef(torch.stack([predictions, targets]))[0, 1])
    return {"n": len(targets), "mse": float((errors ** 2).mean()), "mae": float(errors.abs().mean()), "corr": corr}


# --- training samples ---

@dataclass
class PolicySample:
    """One sampled response to train on.

    response_ids end after the first EOS, inclusive (or at max_new_tokens when truncated);
    reward: r(x, y); baseline: V*(x) for A*-PO (or the value for the advantage r - V);
    role: "attempt", "verify" or "revise" (which turn of an episode it came from);
    context_correct: for a verify or revise turn, whether the attempt it checked or revised
    was right (None for first attempts).
    """

    prompt_ids: list[int]
    response_ids: list[int]
    reward: float
    baseline: float
    role: str = "attempt"
    truncated: bool = False
    context_correct: bool | None = None


def collate_samples(samples: Sequence[PolicySample], pad_token_id: int) -> dict[str, Tensor]:
    """Batch tensors of `samples`:

    prompt_ids, prompt_mask: (B, P) int64, left-padded; response_ids, response_mask: (B, R)
    int64, right-padded, the mask covering each response's own tokens (its length, not a
    search for EOS, so pad == EOS is safe); rewards, baselines: (B,) float32; truncated: (B,) bool.
    Raises ValueError for an empty batch, prompt or response.
    """
    if not samples:
        raise ValueError("collate_samples got no samples")
    for index, sample in enumerate(samples):
        if not sample.prompt_ids or not sample.response_ids:
            raise ValueError(f"sample {index} has an empty prompt or response")
    prompt_width = max(len(s.prompt_ids) for s in samples)
    response_width = max(len(s.response_ids) for s in samples)
    batch_size = len(samples)
    batch = {
        "prompt_ids": torch.full((batch_size, prompt_width), pad_token_id, dtype=torch.long),
        "prompt_mask": torch.zeros((batch_size, prompt_width), dtype=torch.long),
        "response_ids": torch.full((batch_size, response_width), pad_token_id, dtype=torch.long),
        "response_mask": torch.zeros((batch_size, response_width), dtype=torch.long),
    }
    for row, sample in enumerate(samples):
        prompt_length, response_length = len(sample.prompt_ids), len(sample.response_ids)
        batch["prompt_ids"][row, prompt_width - prompt_length:] = torch.tensor(sample.prompt_ids)
        batch["prompt_mask"][row, prompt_width - prompt_length:] = 1
        batch["response_ids"][row, :response_length] = torch.tensor(sample.response_ids)
        batch["response_mask"][row, :response_length] = 1
    batch["rewards"] = torch.tensor([s.reward for s in samples], dtype=torch.float32)
    batch["baselines"] = torch.tensor([s.baseline for s in samples], dtype=torch.float32)
    batch["truncated"] = torch.tensor([s.truncated for s in samples], dtype=torch.bool)
    return batch
