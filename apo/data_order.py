"""The seeded order in which stage 2 visits its training prompts, and the sampling seeds of each step and prompt.

A pure function of (seed, step): a resumed run sees exactly the prompts, in the same order,
that an uninterrupted run would have seen.
"""

from __future__ import annotations

import math

import numpy as np

from apo.errors import InputError


def prompt_indices_for_step(num_prompts: int, prompts_per_step: int, step: int, seed: int) -> list[int]:
    """Indices (into the training prompts) of the prompts of iteration `step`.

    The prompt stream is one seeded permutation per epoch, concatenated: epoch e is
    numpy.random.default_rng([seed, e]).permutation(num_prompts). A step whose window crosses
    an epoch boundary takes the end of one permutation and the start of the next. Pure
    function of its arguments, so a resumed run sees exactly the order of an uninterrupted one.
    """
    if num_prompts < 1 or prompts_per_step < 1 or step < 0:
        raise ValueError(f"num_prompts={num_prompts} and prompts_per_step={prompts_per_step} must be >= 1, "
                         f"step={step} >= 0")
    start, stop = step * prompts_per_step, (step + 1) * prompts_per_step
    indices: list[int] = []
    for epoch in range(start // num_prompts, (stop - 1) // num_prompts + 1):
        order = np.random.default_rng([seed, epoch]).permutation(num_prompts)
        lo = max(start - epoch * num_prompts, 0)
        hi = min(stop - epoch * num_prompts, num_prompts)
        indices.extend(int(i) for i in order[lo:hi])
    return indices


def total_steps_for(num_prompts: int, prompts_per_step: int, epochs: float, max_steps: int,
                    rule: str = "stream") -> int:
    """Iterations of a run: max_steps when > 0, else by `rule`:

    'stream': ceil(epochs * num_prompts / prompts_per_step), prompts streaming across epochs.
    'official': A*-PO's official loop (github ZhaolinGao/A-PO, verl/trainer/apo/ray_trainer.py):
    its dataloader drops each epoch's last partial batch (`drop_last=True`, lines 316-319), so
    it computes total = epochs * floor(num_prompts / prompts_per_step) (line 346); its step
    counter starts at 1 (line 583), grows after each update (line 681) and the loop returns at
    `global_steps >= total` (line 683): total - 1 updates (724 for 25 epochs of 7,424-7,679
    prompts at 256). Raises InputError when that is below 1 or epochs is not whole, ValueError
    for another rule.
    """
    if max_steps > 0:
        return max_steps
    if rule == "stream":
        return max(1, math.ceil(epochs * num_prompts / prompts_per_step))
    if rule != "official":
        raise ValueError(f"step count rule {rule!r} is not 'stream' or 'official'")
    if epochs != int(epochs):
        raise InputError(f"step_count 'official' counts whole epochs, got epochs={epochs}")
    updates = int(epochs) * (num_prompts // prompts_per_step) - 1
    if updates < 1:
        raise InputError(f"step_count 'official' gives {updates} iterations: {int(epochs)} epochs x "
                         f"floor({num_prompts} prompts / {prompts_per_step} per step) - 1; use fewer "
                         "prompts_per_step, more epochs, or set max_steps")
    return updates


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the global torch RNG for one iteration on one process (distinct across both): what
    the per-prompt streams of `sample_seed` do not cover (LoRA dropout, the vLLM engine's seeds)."""
    return int(np.random.default_rng([seed, step, rank]).integers(2**31 - 1))


def sample_seed(seed: int, step: int, index: int) -> int:
    """Seed of the sampling stream of one prompt: the run's `seed`, the iteration `step` and the
    prompt's `index` among all the step's prompts (over all processes). Independent of the rank
    and of the number of processes, so a run samples the same responses on 1, 2 or 8 processes
    (apo.generation). All three must be >= 0."""
    return int(np.random.default_rng([seed, step, index]).integers(2**63 - 1))
