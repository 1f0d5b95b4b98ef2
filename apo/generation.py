"""Generation: the one `generate` that every stage samples through (stage 1's N samples per prompt,
the stage-2 rollouts, the held-out checks, every turn of the self-correction episodes in
apo.episodes, evaluate_apo.py), and the rule for sharded policies.

Beneath it, each knowing nothing of episodes or stages:
  * the hf decoding loop, `apo.decoding.sample_continuations`, on a transformers causal LM;
  * the decoding copy, `apo.decoding.DecodingCopy`: a whole copy of the policy that the loop
    decodes with, synced after every optimizer step;
  * the vLLM engine, `apo.vllm_engine.VLLMEngine` (`--generation_backend vllm`), or any object with
    its `generate(tokenizer, prompts, *, eos_ids, max_new_tokens, temperature, top_p, num_samples)`.

The rule for sharded policies. Every forward of a model sharded by FSDP2 (DTensor parameters) or
DeepSpeed ZeRO-3 (partitioned parameters) is a collective: each rank gathers the weights with the
others. The decoding loop stops when this rank's rows are done, so ranks whose rows finish at
different steps would wait on each other forever (transformers' own `generate` needs
`synced_gpus=True` for that reason). `generate` therefore refuses a sharded model, and the trainer
decodes from a `DecodingCopy` under FSDP and ZeRO-3 (`needs_whole_copy`): each rank holds the whole
policy, gathered parameter by parameter once per optimizer step, and decoding has no collective
at all. The copy costs one unsharded model per GPU (in `--rollout_dtype`, bfloat16 on a GPU run
in bf16), the memory a vLLM engine colocated with the trainer needs anyway; it buys rows that
leave the batch as soon as they end, on every rank independently, and rollouts that need no
network.

Random streams: `seeds` gives one seed per prompt; sample j of prompt i is drawn from the stream
`apo.decoding.stream_seed(seeds[i], j)`, a pure function of (seed, token position), so the
samples do not depend on batching, on the order of the prompts, or on how many processes share
them. The trainer seeds each prompt from (run seed, step, the prompt's global index)
(`apo.data_order.sample_seed`): a run's samples are the same on 1, 2 or 8 processes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from apo.decoding import DecodingCopy, sample_continuations, stream_seed

logger = logging.getLogger(__name__)

__all__ = ["Generation", "cut_after_eos", "eos_token_ids", "generate", "is_sharded", "needs_whole_copy",
           "sampling_kwargs"]

# Seeds drawn from the global torch RNG when the caller gives none.
_SEED_BOUND = 2**62


@dataclass
class Generation:
    """One sampled response.

    `response_ids` end after the first EOS token, inclusive; `truncated` is True when the
    response reached `max_new_tokens` without an EOS (A*-PO gives such a response reward 0).
    `text` is decoded without special tokens. `sampled_logprobs` is filled only by the vLLM
    engine when asked (`VLLMEngine.generate(with_logprobs=True)`, for bench/gpu_check.py):
    the engine's log-prob of each response token; training recomputes its own.
    """

    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    truncated: bool
    sampled_logprobs: list[float] | None = None


def eos_token_ids(model, tokenizer) -> list[int]:
    """EOS ids: the tokenizer's `eos_token_id` and every id in the model's generation config
    (chat models often stop on an end-of-turn token as well as the end-of-text token)."""
    candidates = [tokenizer.eos_token_id]
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        configured = generation_config.eos_token_id
        candidates += list(configured) if isinstance(configured, (list, tuple)) else [configured]
    ids = list(dict.fromkeys(int(token_id) for token_id in candidates if token_id is not None))  # ordered, once each
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation_config defines an EOS token id")
    return ids


def cut_after_eos(token_ids: Sequence[int], eos_ids: Sequence[int]) -> tuple[list[int], bool]:
    """`token_ids` up to and including the first EOS, and whether an EOS was found."""
    eos = set(eos_ids)
    for position, token_id in enumerate(token_ids):
        if token_id in eos:
            return list(token_ids[: position + 1]), True
    return list(token_ids), False


def sampling_kwargs(temperature: float, top_p: float) -> dict:
    """`model.generate` settings that sample from the policy itself.

    temperature 0 is greedy decoding. Otherwise plain temperature / nucleus sampling, with
    the sampling modifiers a model's own generation_config may carry (Qwen2.5-Instruct ships
    top_k=20 and repetition_penalty=1.05) and transformers' default top_k=50 switched off:
    A*-PO's regression and V* estimate assume the samples come from pi itself.
    """
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature} must be >= 0 and top_p={top_p} in (0, 1]")
    neutral = {"min_p": None, "typical_p": 1.0, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
    if temperature == 0:  # transformers' neutral values, which greedy decoding ignores anyway
        return {"do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50, **neutral}
    return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p), "top_k": 0, **neutral}


# --- the rule for sharded policies ---

def is_sharded(model: torch.nn.Module) -> bool:
    """Whether a forward of `model` is a collective: FSDP2 DTensor parameters or ZeRO-3 partitions."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(param, DTensor) or hasattr(param, "ds_id") for param in model.parameters())


def needs_whole_copy(accelerator) -> bool:
    """Whether the policy the Accelerator prepares is sharded, so that the hf engine must decode
    from a `DecodingCopy`: FSDP, or DeepSpeed ZeRO stage 3."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3


# --- generate ---

@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int,
    num_samples: int = 1,
    progress: bool = False,
    seeds: Sequence[int] | None = None,
) -> list[Generation]:
    """Generate `num_samples` responses per prompt (token ids, e.g. from `encode_chat`), in the
    input order, prompt-major: result[i * num_samples + j] is sample j of prompt i.

    `model` is a transformers causal LM (not sharded: see the module docstring), an
    `apo.decoding.DecodingCopy` (its model decodes), or a rollout engine such as
    `apo.vllm_engine.VLLMEngine` (`--generation_backend vllm`), which receives the same prompt
    ids, EOS ids, length limit and sampling settings and returns the same kind of Generation.
    With transformers, the prompts are sorted by length and sampled in chunks of at most
    `batch_size` rows by `apo.decoding.sample_continuations` (each prompt prefilled once for all
    its samples, finished rows dropped), then restored to the input order.

    seeds: one per prompt (>= 0); sample j of prompt i is drawn from the random stream
    `stream_seed(seeds[i], j)` whatever else is batched with it. None: the seeds are drawn from
    the global torch RNG (call `torch.manual_seed` for reproducible samples). A rollout engine
    gets the same seeds, one per prompt (vLLM's per-request seed).
    Raises ValueError for an empty prompt, an invalid setting, seeds that do not match the
    prompts, or a sharded model.
    """
    if batch_size < 1 or max_new_tokens < 1 or num_samples < 1:
        raise ValueError(f"batch_size={batch_size}, max_new_tokens={max_new_tokens} and num_samples={num_samples} "
                         "must be >= 1")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("generate() got an empty prompt; encode prompts with apo.prompts.encode_problem()")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"generate() got {len(seeds)} seeds for {len(prompts)} prompts")
    sampling_kwargs(temperature, top_p)  # validates the settings

    if isinstance(model, DecodingCopy):
        model = model.model
    elif not isinstance(model, torch.nn.Module):  # a rollout engine (vLLM) behind the same contract
        return model.generate(tokenizer, prompts, eos_ids=eos_token_ids(model, tokenizer),
                              max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              num_samples=num_samples, seeds=seeds)
    if is_sharded(model):
        raise ValueError("generate() got a sharded model (FSDP2 or ZeRO-3): its forwards are collectives and "
                         "ranks would wait on each other while decoding; decode from an apo.decoding.DecodingCopy")
    if seeds is None:
        seeds = torch.randint(0, _SEED_BOUND, (len(prompts),)).tolist()
    eos_ids = eos_token_ids(model, tokenizer)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    _warn_beyond_context_window(model, prompts, max_new_tokens)
    by_prompt: list[list[Generation]] = [[] for _ in prompts]
    for chunk in tqdm(_row_chunks(prompts, num_samples, batch_size), desc="generate", unit="batch",
                      disable=not progress):
        row_seeds = [stream_seed(int(seeds[index]), first + j) for index, first, count in chunk for j in range(count)]
        responses = sample_continuations(
            model, [prompts[index] for index, _, _ in chunk], [count for _, _, count in chunk],
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, eos_ids=eos_ids,
            pad_token_id=pad_token_id, row_seeds=row_seeds)
        rows = iter(responses)
        for index, _, count in chunk:
            for _ in range(count):
                response_ids, found_eos = cut_after_eos(next(rows), eos_ids)
                by_prompt[index].append(Generation(
                    prompt_ids=list(prompts[index]), response_ids=response_ids,
                    text=tokenizer.decode(response_ids, skip_special_tokens=True), truncated=not found_eos))
    return [generation for generations in by_prompt for generation in generations]


def _row_chunks(prompts: list[list[int]], num_samples: int, batch_size: int) -> list[list[tuple[int, int, int]]]:
    """(prompt index, first sample index, sample count) groups of at most `batch_size` rows in all,
    prompts taken in length order (less padding per chunk); a prompt's samples may be split across
    two chunks."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    chunks: list[list[tuple[int, int, int]]] = [[]]
    room = batch_size
    for index in order:
        left = num_samples
        while left:
            if room == 0:
                chunks.append([])
                room = batch_size
            take = min(left, room)
            chunks[-1].append((index, num_samples - left, take))
            left -= take
            room -= take
    return chunks


def _warn_beyond_context_window(model, prompts: list[list[int]], max_new_tokens: int) -> None:
    """Log how many prompts could run past the model's `max_position_embeddings`; nothing is cut."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int):
        return
    too_long = sum(len(prompt) + max_new_tokens > limit for prompt in prompts)
    if too_long:
        logger.warning("%d of %d prompts plus max_new_tokens=%d exceed the model's context window of %d tokens; "
                       "they are generated untruncated (shorten the prompts or lower max_new_tokens)",
                       too_long, len(prompts), max_new_tokens, limit)
