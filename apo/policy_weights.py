"""The policy's full weights by checkpoint name, as a rollout engine loads them: LoRA adapters
merged (out of place), ZeRO-3 partitions gathered, FSDP2 shards made whole, one parameter at a
time (never a whole gathered model per GPU) except where a LoRA merge needs the adapters beside
their base weight.

Used by `apo.vllm_engine.VLLMEngine.sync_weights` and `apo.decoding.DecodingCopy.sync_weights`,
the two engines that sample from a copy of the policy kept in step with it after every
optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_parameters", "is_zero3_model", "policy_tensors", "whole_parameters"]


def policy_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, full tensor) of every weight vLLM holds, from a plain or peft model.

    Sharded parameters are made whole one at a time: an FSDP2 DTensor with `full_tensor()`, a
    ZeRO-3 partition inside `deepspeed.zero.GatheredParameters([param])` (TRL's order for a model
    without LoRA); a yielded tensor is only valid until the next one is asked for, so copy it
    there. Both are collectives: every process iterates together. A LoRA model under ZeRO-3 is
    gathered whole by `full_parameters` first (the merge needs every adapter factor).

    A LoRA-adapted weight is sent merged, W + delta (peft's `get_delta_weight`, i.e. B A
    alpha/r, of the active adapters), computed in float32 on a copy: merging into the model
    and unmerging after every optimizer step would leave rounding in the frozen base weights,
    which are also the reference policy. peft names lose `base_model.model.` and
    `.base_layer`; LoRA factors are skipped; `modules_to_save` copies replace their
    originals. Tied weights come once (named_parameters de-duplicates them; vLLM skips a tied
    lm_head).
    """
    peft = _is_peft_model(model)
    deltas = _lora_deltas(model) if peft else {}
    lora_prefix = getattr(model, "prefix", "lora_") if peft else None
    for name, param in model.named_parameters():
        checkpoint_name = name
        if lora_prefix is not None:
            checkpoint_name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if lora_prefix in checkpoint_name or "original_module" in checkpoint_name:
                continue
            checkpoint_name = checkpoint_name.replace("modules_to_save.default.", "")
        for wrapper in ("_checkpoint_wrapped_module.", "_fsdp_wrapped_module."):
            checkpoint_name = checkpoint_name.replace(wrapper, "")
        with _gathered(param):
            tensor = param.full_tensor() if hasattr(param, "full_tensor") else param.data  # FSDP2 shards are DTensors
            if name in deltas:
                tensor = tensor.float() + deltas[name]
            yield checkpoint_name, tensor.detach()


def whole_parameters(model: torch.nn.Module, keep=lambda name: True) -> Iterator[tuple[str, torch.Tensor]]:
    """(parameter name, whole tensor) of every parameter whose name `keep` accepts, gathered one at a
    time like `policy_tensors` (a collective under FSDP2 / ZeRO-3: every process iterates together;
    a tensor is valid until the next is asked for)."""
    for name, param in model.named_parameters():
        if not keep(name):
            continue
        with _gathered(param):
            tensor = param.full_tensor() if hasattr(param, "full_tensor") else param.data
            yield name, tensor.detach()


@contextlib.contextmanager
def _gathered(param: torch.nn.Parameter):
    """A ZeRO-3 partition gathered for the block (a no-op for any other parameter, and for one
    already gathered by an enclosing `full_parameters`)."""
    if hasattr(param, "ds_id"):
        import deepspeed
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        if param.ds_status == ZeroParamStatus.AVAILABLE:  # gathered by full_parameters (deepspeed refuses a nest)
            yield
            return
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            yield
    else:
        yield


def _lora_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name of each adapted base weight -> the float32 sum of its active adapters' deltas."""
    deltas: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")) or module.merged:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A or a in getattr(module, "lora_embedding_A", {})]
        if active:
            delta = sum(module.get_delta_weight(a).float() for a in active)
            # FSDP2: factors sharded as DTensors give a DTensor delta (a collective, in the same order everywhere)
            deltas[f"{module_name}.base_layer.weight"] = delta.full_tensor() if hasattr(delta, "full_tensor") else delta
    return deltas


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def is_zero3_model(model: torch.nn.Module) -> bool:
    """Whether `model`'s parameters are ZeRO-3 partitions (built under `deepspeed.zero.Init` or
    by a ZeRO-3 `deepspeed.initialize`)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())


@contextlib.contextmanager
def full_parameters(model: torch.nn.Module, accelerator=None):
    """Gather a LoRA model's ZeRO-3 partitions for the block (read-only): merging an adapter into
    the tensor sent needs its factors and base weight at once. Elsewhere nothing to do here:
    `policy_tensors` gathers one parameter at a time. `accelerator` is unused (kept for callers)."""
    if _is_peft_model(model) and is_zero3_model(model):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield
