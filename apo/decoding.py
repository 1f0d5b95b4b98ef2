"""Sampling with a transformers causal LM's own forward pass and KV cache: the `hf` rollout
engine behind apo.generation.generate (stage 1, stage 2, the self-correction turns, evaluation).

`model.generate` keeps decoding every row of a batch until the last row stops, and prefills each
of the N stage-1 samples of one prompt separately. This loop samples from the same next-token
distribution -- the model's logits in float32, divided by the temperature, cut to transformers'
top-p nucleus; argmax at temperature 0 -- and saves three kinds of work:

* shared prefill: each distinct prompt of a batch is run through the model once, and its KV cache
  is copied to each of its samples (`Cache.batch_select_indices` with repeated indices);
* compaction: rows that emitted an EOS token leave the batch (their cache rows are dropped) as
  soon as they make up `compact_fraction` of the rows still decoded, so a batch costs what its
  live rows cost, not what its longest row costs;
* sampling: the nucleus is found with `topk` instead of a sort of the whole vocabulary, and the
  token is drawn by inverting the cumulative distribution instead of `torch.multinomial` (which
  on CPU draws one exponential number per vocabulary entry: a fifth of a decoding step at batch 64).

Each row's next-token distribution is exactly the one `model.generate` samples from (same
logits up to batching numerics, same warpers); the random stream is consumed in another order,
so a fixed seed gives other samples than `model.generate` does (tests/test_decoding.py compares
the two engines' token frequencies with the model's own probabilities on a tiny model).

Random streams: given `row_seeds`, the uniform number that picks token t of a row is a hash of (the
row's seed, t) (`stream_uniforms`, splitmix64), not a draw from a shared generator, so a row's
sample does not depend on which rows share its batch, in which order, or on how many processes
split the prompts: a run's samples are the same on 1, 2 or 8 processes.
Measured speed: bench/RESULTS.md, section "Rollouts".
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
from transformers import DynamicCache

from apo.models import cpu_has_native_bfloat16, load_model
from apo.policy_weights import full_parameters, policy_tensors

__all__ = ["COMPACT_FRACTION", "ROLLOUT_DTYPES", "DecodingCopy", "RolloutDtype", "draw", "left_pad",
           "left_padded_position_ids", "next_token_distribution", "pick_next_tokens", "resolve_rollout_dtype",
           "sample_continuations", "stream_seed", "stream_uniforms"]

# Finished rows are dropped once they are this share of the rows still decoded: dropping copies the
# live rows' cache, so doing it after every EOS would cost more than the dead rows' compute it saves.
COMPACT_FRACTION = 0.2


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, both (B, max_len) int64."""
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def left_padded_position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, as `generate` computes them: 0 at the first real token."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


# The nucleus is looked for among this many most probable tokens first; rows whose nucleus is larger
# fall back to a sort of the whole vocabulary. The result is the same either way.
NUCLEUS_CANDIDATES = 256


def next_token_distribution(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Probabilities (B, V) that `model.generate(do_sample=True, temperature, top_p, top_k=0)`
    samples the next token from, given float32 logits (B, V): softmax(logits / temperature), cut
    to the nucleus and renormalised.

    The nucleus is transformers' `TopPLogitsWarper`'s: a token is kept when the probability of
    the tokens ranked above it is below `top_p` (the most probable token is always kept). It is
    found among the `NUCLEUS_CANDIDATES` most probable tokens (`topk`), not by sorting the whole
    vocabulary, for every row whose candidates hold at least `top_p` of the mass.
    """
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    top_probs, top_ids = probs.topk(min(NUCLEUS_CANDIDATES, probs.shape[-1]), dim=-1)
    inside = top_probs.sum(dim=-1) >= top_p
    if not bool(inside.all()):
        top_probs, top_ids = probs.sort(dim=-1, descending=True)
    mass_above = top_probs.cumsum(dim=-1) - top_probs
    kept = torch.where(mass_above < top_p, top_probs, torch.zeros_like(top_probs))
    kept[:, 0] = top_probs[:, 0]
    nucleus = torch.zeros_like(probs).scatter_(-1, top_ids, kept)
    return nucleus / nucleus.sum(dim=-1, keepdim=True)


def draw(probs: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One token id per row of `probs` (B, V), drawn with probability proportional to its entry:
    the inverse of the cumulative distribution at one uniform number per row (`uniform`, (B,) in
    [0, 1); drawn from the global torch RNG when None), which costs a cumulative sum where
    `torch.multinomial` on CPU draws an exponential number per entry."""
    cumulative = probs.cumsum(dim=-1)
    if uniform is None:
        uniform = torch.rand((probs.shape[0], 1), dtype=cumulative.dtype, device=probs.device)
    else:
        uniform = uniform.to(device=probs.device, dtype=cumulative.dtype).view(-1, 1)
    ids = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True).squeeze(1)
    return ids.clamp_(max=probs.shape[-1] - 1)


def pick_next_tokens(logits: torch.Tensor, temperature: float, top_p: float,
                     uniform: torch.Tensor | None = None) -> torch.Tensor:
    """The next token of each row: argmax at temperature 0, else a draw from `next_token_distribution`
    (at `uniform`, see `draw`)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    return draw(next_token_distribution(logits, temperature, top_p), uniform)


# --- per-row random streams (splitmix64: Steele, Lea and Flood, 2014) ---

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = np.asarray(values, dtype=np.uint64).copy()
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def stream_seed(seed: int, sample_index: int) -> int:
    """The seed of sample `sample_index` of a prompt whose seed is `seed` (both >= 0): one random
    stream per (prompt, sample)."""
    mixed = _mix64(np.array([seed % 2**64], dtype=np.uint64) ^ _mix64(np.array([sample_index + 1], dtype=np.uint64)))
    return int(mixed[0])


def stream_uniforms(row_seeds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Uniform numbers in [0, 1) (float64), one per row: position `positions[r]` of the stream of
    `row_seeds[r]` (uint64). A pure function of (seed, position): no state, no shared generator."""
    steps = (np.asarray(positions, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
    bits = _mix64(np.asarray(row_seeds, dtype=np.uint64) ^ _mix64(steps))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


@torch.no_grad()
def sample_continuations(
    model,
    prompts: Sequence[Sequence[int]],
    repeats: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_ids: Sequence[int],
    pad_token_id: int,
    compact_fraction: float = COMPACT_FRACTION,
    counters: dict[str, int] | None = None,
    row_seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """New tokens for `repeats[i]` samples of each prompt `prompts[i]`, prompt-major (all samples
    of prompt 0 first), each up to and including its first EOS id, or `max_new_tokens` long
    without one. Sampling draws token t of output row r at `stream_uniforms(row_seeds[r], t)`
    when `row_seeds` (one per output row, e.g. from `stream_seed`) is given, else from the
    global torch RNG.

    Contract: `prompts` are non-empty token-id lists; `repeats` are >= 1; the model is a
    transformers causal LM (or a peft wrapper of one) that accepts `position_ids`, a KV cache
    (`cache`, or `past_key_values` in older transformers) and `logits_to_keep`. Position ids
    count real tokens only, as `model.generate` computes them for left-padded prompts
    (`left_padded_position_ids`). `counters`, when given, gets
    "steps" (tokens picked per row, at most max_new_tokens) and "decoded_positions" (rows
    computed, summed over steps) added to it: bench/ reads them to measure padding and dropping.
    """
    if len(prompts) != len(repeats) or any(count < 1 for count in repeats):
        raise ValueError(f"sample_continuations needs one repeat count >= 1 per prompt, got {list(repeats)}")
    if not 0 <= compact_fraction <= 1:
        raise ValueError(f"compact_fraction={compact_fraction} must be in [0, 1]")
    if row_seeds is not None and len(row_seeds) != sum(repeats):
        raise ValueError(f"sample_continuations got {len(row_seeds)} row seeds for {sum(repeats)} rows")
    seeds = None if row_seeds is None else np.array([int(s) % 2**64 for s in row_seeds], dtype=np.uint64)
    device = next(model.parameters()).device
    eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long, device=device)

    input_ids, attention_mask = (tensor.to(device) for tensor in left_pad(prompts, pad_token_id))
    cache = DynamicCache(config=model.config)
    cache_keyword = _cache_keyword(model)
    output = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=left_padded_position_ids(attention_mask),
                   use_cache=True, logits_to_keep=1, **{cache_keyword: cache})
    if cache.get_seq_length() != input_ids.shape[1]:
        raise RuntimeError("the model did not fill its KV cache (gradient checkpointing in training mode turns "
                           "caching off): call model.eval() before generating")
    # Row r of the batch continues prompt source[r]; the prefill's cache and logits are shared by its samples.
    source = torch.repeat_interleave(torch.arange(len(prompts), device=device),
                                     torch.tensor(list(repeats), device=device))
    if len(source) != len(prompts):
        cache.batch_select_indices(source)
    logits = output.logits[source, -1, :].float()
    attention_mask = attention_mask[source]
    next_position = attention_mask.sum(dim=-1)

    total_rows = len(source)
    row_ids = torch.arange(total_rows, device=device)   # the output row each live batch row writes to
    finished = torch.zeros(total_rows, dtype=torch.bool, device=device)
    responses: list[list[int]] = [[] for _ in range(total_rows)]
    for step in range(max_new_tokens):
        uniform = None
        if seeds is not None and temperature > 0:
            live_rows = row_ids.cpu().numpy()
            uniform = torch.from_numpy(stream_uniforms(seeds[live_rows], np.full(len(live_rows), step)))
        tokens = pick_next_tokens(logits, temperature, top_p, uniform)
        if counters is not None:
            counters["steps"] = counters.get("steps", 0) + 1
            counters["decoded_positions"] = counters.get("decoded_positions", 0) + len(tokens)
        for row, token in zip(row_ids[~finished].tolist(), tokens[~finished].tolist()):
            responses[row].append(token)
        finished |= torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or bool(finished.all()):
            break
        if bool(finished.any()) and int(finished.sum()) >= compact_fraction * len(finished):
            live = (~finished).nonzero().squeeze(1)
            cache.batch_select_indices(live)
            row_ids, tokens, attention_mask, next_position, finished = (
                row_ids[live], tokens[live], attention_mask[live], next_position[live], finished[live])
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(tokens), 1))], dim=1)
        output = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=next_position[:, None],
                       use_cache=True, logits_to_keep=1, **{cache_keyword: cache})
        next_position = next_position + 1
        logits = output.logits[:, -1, :].float()
    return responses


def _cache_keyword(model) -> str:
    """The forward argument that takes the KV cache: `cache` since transformers deprecated
    `past_key_values` (5.x), `past_key_values` before; read from the (peft-unwrapped) model's signature."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


# --- the decoding copy ---

# The one list of rollout dtypes: the config field's type and resolve_rollout_dtype use it.
RolloutDtype = Literal["auto", "policy", "bfloat16", "float32"]
ROLLOUT_DTYPES: tuple[str, ...] = get_args(RolloutDtype)


def resolve_rollout_dtype(rollout_dtype: str, policy_dtype: torch.dtype, device: torch.device | str) -> torch.dtype | None:
    """The dtype the hf engine decodes in, or None to decode with the policy itself.

    "policy": None. "bfloat16" / "float32": that dtype (None when the policy already has it).
    "auto": bfloat16 for a float32 policy on a CPU with native bfloat16 matrix instructions
    (`cpu_has_native_bfloat16`), where it decodes 1.6-2x faster (bench/RESULTS.md); None
    everywhere else (GPUs, other CPUs, a policy already in 16 bits).
    """
    if rollout_dtype not in ROLLOUT_DTYPES:
        raise ValueError(f"rollout_dtype={rollout_dtype!r} is not one of {', '.join(ROLLOUT_DTYPES)}")
    if rollout_dtype == "policy":
        return None
    if rollout_dtype == "auto":
        native = torch.device(device).type == "cpu" and cpu_has_native_bfloat16()
        wanted = torch.bfloat16 if native and policy_dtype == torch.float32 else None
    else:
        wanted = getattr(torch, rollout_dtype)
    return None if wanted == policy_dtype else wanted


class DecodingCopy:
    """A copy of the policy's weights in another dtype for the hf engine to decode with
    (`--rollout_dtype`): bfloat16 halves the bytes each decoding step reads and, on CPUs with
    bfloat16 instructions, doubles the matrix throughput. The policy itself stays as it is and
    computes every log-prob of the loss.

    Like `apo.vllm_engine.VLLMEngine`, the copy is loaded from the model folder (the reference
    policy) and `sync_weights` brings it in step with the policy (LoRA merged, shards gathered:
    `apo.policy_weights.policy_tensors`); the trainer calls it at the start of stage 2 and after
    every optimizer step, and `apo.generation.generate` decodes with `self.model` when handed the
    copy. Rollouts are then drawn from the policy rounded to `dtype`, as a bfloat16 vLLM engine
    draws them on a GPU.

    Under FSDP or ZeRO-3 the copy is also what makes decoding safe (`apo.generation`): each rank
    decodes from its own whole copy, in the policy's dtype when no other is asked, without a
    collective in the decoding loop, so ranks whose rows finish at different steps never wait
    for each other. `sync_weights` gathers the sharded policy one parameter at a time.
    """

    def __init__(self, model_path: str, dtype: torch.dtype, device: torch.device | str = "cpu"):
        self.model = load_model(model_path, dtype=str(dtype).removeprefix("torch."), device=device)
        self.model.requires_grad_(False)
        self.weight_updates = 0

    @torch.no_grad()
    def sync_weights(self, model: torch.nn.Module, accelerator=None) -> int:
        """Copy `model`'s current weights (cast to the copy's dtype); returns the number of tensors.
        Raises KeyError naming a weight the copy does not have (another architecture)."""
        own = dict(self.model.named_parameters())
        copied = 0
        with full_parameters(model, accelerator):
            for name, tensor in policy_tensors(model):
                if name not in own:
                    raise KeyError(f"the decoding copy has no weight {name!r}: it was loaded from another model")
                own[name].copy_(tensor)
                copied += 1
        self.weight_updates += 1
        return copied

    def close(self) -> None:
        """Nothing to release beyond the copy itself (here for the engine interface)."""
        self.model = None
