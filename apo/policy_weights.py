"""The policy's full weights by checkpoint name, as a rollout engine loads them: LoRA adapters
merged (out of place), ZeRO-3 partitions gathered, FSDP2 shards made whole.

Used by `apo.vllm_engine.VLLMEngine.sync_weights` and `apo.decoding.DecodingCopy.sync_weights`,
the two engines that sample from a copy of the policy kept in step with it after every
optimizer step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["full_parameters", "policy_tensors"]


def policy_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(checkpoint name, full tensor) of every weight vLLM holds, from a plain or peft model.

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
        tensor = param.full_tensor() if hasattr(param, "full_tensor") else param.data  # FSDP2 shards are DTensors
        if name in deltas:
            tensor = tensor.float() + deltas[name]
        if lora_prefix is not None:
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if lora_prefix in name or "original_module" in name:
                continue
            name = name.replace("modules_to_save.default.", "")
        name = name.replace("_checkpoint_wrapped_module.", "").replace("_fsdp_wrapped_module.", "")
        yield name, tensor.detach()


def _lora_deltas(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name of each adapted base weight -> the float32 sum of its active adapters' deltas."""
    deltas: dict[str, torch.Tensor] = {}
    for module_name, module in model.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")) or module.merged:
            continue
        active = [a for a in module.active_adapters if a in module.lora_A or a in getattr(module, "lora_embedding_A", {})]
        if active:
            deltas[f"{module_name}.base_layer.weight"] = sum(module.get_delta_weight(a).float() for a in active)
    return deltas


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


@contextlib.contextmanager
def full_parameters(model: torch.nn.Module, accelerator):
    """Gather ZeRO-3 partitions for the block (read-only); elsewhere nothing to do."""
    plugin = getattr(getattr(accelerator, "state", None), "deepspeed_plugin", None)
    if plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            yield
    else:
        yield
