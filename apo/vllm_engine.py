"""vLLM as the optional generation engine (`--generation_backend vllm`), imported only when chosen.

Used through `apo.generation.generate`, which hands a `VLLMEngine` its calls, so stage 1, the
stage-2 rollouts, the held-out checks, the self-correction episodes (verify and revise turns
included) and evaluate_apo.py switch engines without code of their own. Importing this module
does not import vllm; `create_engine` does, after `require_vllm` has checked for the package
and a GPU.

What the engine is asked, so that it samples what `generate` samples with transformers:
  * the prompt token ids themselves (`{"prompt_token_ids": ids}`), never text to re-tokenise;
  * N responses per prompt through vLLM's own `n`, returned prompt-major (prompt 0's samples,
    then prompt 1's, ...), each mapped back by its `index`;
  * one seed per prompt, drawn from torch's global RNG, so a caller's `torch.manual_seed`
    makes the run reproducible as it does for transformers (vLLM gives sample i of a prompt
    the seed `seed + i`);
  * the same stop rule (`stop_token_ids` = `apo.episodes.eos_token_ids`) and length limit
    (`max_tokens` = max_new_tokens); the response is cut after its first EOS, inclusive, and
    one without an EOS is truncated, exactly as on the transformers path;
  * temperature and top_p only: top_k 0, min_p 0, no repetition/presence/frequency penalty,
    and `generation_config="vllm"` so no model default slips in (Qwen2.5-Instruct ships
    top_k 20 and repetition_penalty 1.05).
The trainer keeps the returned token ids and recomputes every log-prob with the policy; the
engine's own log-probs are only returned on request, for bench/gpu_check_vllm.py.

Stage 2 keeps the engine on the trainer's GPU (`vllm_gpu_memory_utilization`) and pushes the
policy's current tensors into it after every optimizer step (`sync_weights`: LoRA adapters
merged first, ZeRO-3 / FSDP2 shards gathered), through the in-process model's `load_weights`,
the call TRL's GRPO colocate mode makes (trl/generation/vllm_generation.py, `sync_weights`).

With `vllm_enable_sleep_mode` the engine sleeps at level 2 after every generation, as TRL's
colocate mode does: its KV cache and weights are discarded (level 1 would copy the weights to
CPU and back at every call), so the policy update has the GPU; the cached allocator blocks are
freed (`torch.cuda.empty_cache`) before each `wake_up`. Discarded weights come back before the
next generation: from the next `sync_weights`; else, before any update, from the model folder
(`collective_rpc("reload_weights")`, vLLM's level-2 wake-up path); else from the policy last
synced, sent again (under ZeRO-3 / FSDP2 a collective: every process makes the same engine
calls, with or without prompts of its own). Not copied from TRL (main, f2cd577, `generate`):
its `reload_weights` after every wake-up, which in vllm 0.31 reloads the model folder
(gpu_model_runner.py, `reload_weights` without a path) and so would undo a sync.

A prompt of `max_model_len` tokens or more (`vllm_max_model_len`, or the model's window) is
not sent: vLLM 0.31 refuses the whole call for it (vllm/v1/engine/input_processor.py,
`_validate_prompt_len`). It gets empty responses counted as truncated, and a warning.

Pinned version: requirements-vllm.txt (vllm 0.31.0, built for torch 2.13.0).
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import socket
from collections.abc import Sequence

import torch

from apo.generation import Generation, cut_after_eos
from apo.policy_weights import full_parameters, policy_tensors

logger = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install -r requirements-vllm.txt"
# vLLM seeds sample i of a request with seed + i: keep seed + n below 2**31.
_SEED_BOUND = 2**30


class VLLMUnavailableError(SystemExit):
    """`--generation_backend vllm` on a machine without the vllm package or a CUDA GPU.

    A SystemExit, as argparse's errors are: the script stops at once with the one-line
    message on stderr and exit status 1, without a traceback.
    """


def _cuda_available() -> bool:
    return torch.cuda.is_available()


def require_vllm() -> None:
    """Raise VLLMUnavailableError naming the install command when vllm or a CUDA GPU is missing."""
    if importlib.util.find_spec("vllm") is None:
        raise VLLMUnavailableError(
            f"--generation_backend vllm needs the vllm package, which is not installed: run `{INSTALL_COMMAND}` "
            "on a machine with an NVIDIA GPU, or use --generation_backend hf")
    if not _cuda_available():
        raise VLLMUnavailableError(
            "--generation_backend vllm needs a CUDA GPU and torch sees none on this machine: use "
            f"--generation_backend hf, or run on a GPU machine after `{INSTALL_COMMAND}`")


def create_engine(model_path: str, cfg, *, accelerator=None, trainable: bool = False) -> "VLLMEngine":
    """A VLLMEngine on this process's GPU holding the weights in `model_path` (a folder or hub id).

    cfg: an A_PO_Config (dtype, seed and the vllm_* fields). trainable: the engine will receive
    weight updates (`sync_weights`); vLLM then runs in this process (the `external_launcher`
    executor, one engine per training process, as in TRL's colocate mode) so its model is
    reachable. Raises VLLMUnavailableError without vllm or a GPU.
    """
    require_vllm()
    from transformers import AutoConfig, GenerationConfig
    from vllm import LLM, SamplingParams

    from apo.models import resolve_dtype

    rank = accelerator.process_index if accelerator is not None else 0
    options = dict(
        model=model_path, dtype=str(resolve_dtype(cfg.dtype, "cuda")).removeprefix("torch."), seed=cfg.seed + rank,
        gpu_memory_utilization=cfg.vllm_gpu_memory_utilization, max_model_len=cfg.vllm_max_model_len or None,
        enable_sleep_mode=cfg.vllm_enable_sleep_mode and trainable,
        # sampling settings come from apo only, never from the model's generation_config.json
        generation_config="vllm",
        # log-probs after temperature scaling, as the trainer computes them (returned only on request)
        logprobs_mode="processed_logprobs",
    )
    if trainable:
        _set_launcher_environment(accelerator)
        # TRL's colocate settings: one in-process engine per rank; a smaller prefill budget keeps vLLM's
        # memory profiler from misjudging what is left beside the trainer.
        options.update(distributed_executor_backend="external_launcher", max_num_batched_tokens=4096)
    logger.info("starting vLLM on %s (gpu_memory_utilization %.2f, sleep mode %s)", model_path,
                cfg.vllm_gpu_memory_utilization, options["enable_sleep_mode"])
    llm = LLM(**options)
    try:
        generation_config = GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json: what transformers derives from config.json, as load_model gets
        generation_config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(model_path))
    return VLLMEngine(llm, SamplingParams, generation_config, sleep_mode=options["enable_sleep_mode"])


def _set_launcher_environment(accelerator) -> None:
    """The torch.distributed variables vLLM's external_launcher reads (TRL sets the same)."""
    os.environ["RANK"] = str(accelerator.process_index if accelerator is not None else 0)
    os.environ["LOCAL_RANK"] = str(accelerator.local_process_index if accelerator is not None else 0)
    os.environ["WORLD_SIZE"] = str(accelerator.num_processes if accelerator is not None else 1)
    os.environ.setdefault("MASTER_ADDR", "localhost")
    if not os.environ.get("MASTER_PORT"):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


class VLLMEngine:
    """A vLLM `LLM` behind the project's generation contract (see the module docstring).

    `generation_config` (transformers' GenerationConfig of the model folder, or None) is read
    by `apo.episodes.eos_token_ids`, as a model's is. `weight_updates` counts `sync_weights`
    calls: 0 means the engine still holds the weights it was loaded with.
    """

    def __init__(self, llm, sampling_params_cls, generation_config=None, *, sleep_mode: bool = False):
        self.llm = llm
        self.sampling_params_cls = sampling_params_cls
        self.generation_config = generation_config
        self.sleep_mode = sleep_mode
        self.asleep: set[str] = set()  # the sleep-mode tags ("weights", "kv_cache") released now
        self.weights_discarded = False  # level-2 sleep dropped the weights and nothing has reloaded them yet
        self.weight_updates = 0
        self._synced_from: tuple | None = None  # (model, accelerator) of the last sync_weights
        self.max_model_len = int(llm.model_config.max_model_len)  # what vLLM resolved: the option or the window

    # --- generation ---

    def generate(self, tokenizer, prompts: Sequence[Sequence[int]], *, eos_ids: Sequence[int], max_new_tokens: int,
                 temperature: float, top_p: float, num_samples: int = 1, seeds: Sequence[int] | None = None,
                 with_logprobs: bool = False) -> list[Generation]:
        """`num_samples` responses per prompt, prompt-major: result[i * num_samples + j] is sample j of prompt i.

        temperature 0 is greedy. seeds: one per prompt, vLLM's per-request seed (the trainer's
        `apo.data_order.sample_seed`, so a prompt's samples do not depend on what else is batched or
        on the number of processes); None: drawn from the global torch RNG. vLLM's stream differs
        from the hf loop's, so the two backends draw different samples from the same seed.
        with_logprobs: each Generation also carries vLLM's log-prob of every response token (after
        temperature scaling) in `sampled_logprobs`. Raises RuntimeError when vLLM's outputs do not
        line up with the prompts and samples asked for.
        """
        if seeds is None:
            seeds = torch.randint(0, _SEED_BOUND, (len(prompts),)).tolist()  # the caller's torch seed decides them
        sampling = [self.sampling_params(seed=seed, num_samples=num_samples, eos_ids=eos_ids,
                                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                         with_logprobs=with_logprobs) for seed in seeds]
        fits = [len(prompt) < self.max_model_len for prompt in prompts]
        if not all(fits):
            logger.warning("%d of %d prompts have max_model_len=%d tokens or more; vLLM cannot continue them: "
                           "their responses are empty and counted as truncated (raise vllm_max_model_len or shorten "
                           "the prompts)", fits.count(False), len(prompts), self.max_model_len)
        sent = [(list(prompt), params) for prompt, params, fit in zip(prompts, sampling, fits) if fit]
        # the same calls with or without prompts, so that processes re-sending shards stay in step
        self._wake_up()
        outputs = self.llm.generate([{"prompt_token_ids": prompt} for prompt, _ in sent],
                                    sampling_params=[params for _, params in sent], use_tqdm=False) if sent else []
        self._sleep()
        if len(outputs) != len(sent):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(sent)} prompts")
        outputs = iter(outputs)
        generations = []
        for prompt, fit in zip(prompts, fits):
            if not fit:
                generations += [Generation(prompt_ids=list(prompt), response_ids=[], text="", truncated=True,
                                           sampled_logprobs=[] if with_logprobs else None)
                                for _ in range(num_samples)]
                continue
            output = next(outputs)
            if list(output.prompt_token_ids) != list(prompt):
                raise RuntimeError("vLLM returned an output for another prompt than the one at its position")
            completions = sorted(output.outputs, key=lambda completion: completion.index)
            if [c.index for c in completions] != list(range(num_samples)):
                raise RuntimeError(f"vLLM returned samples {[c.index for c in completions]} for a prompt, "
                                   f"expected 0..{num_samples - 1}")
            for completion in completions:
                response_ids, found_eos = cut_after_eos(list(completion.token_ids), eos_ids)
                if completion.finish_reason == "stop" and not found_eos:  # the EOS must be in the ids, as in hf
                    raise RuntimeError(f"vLLM stopped a response (stop_reason {completion.stop_reason!r}) without "
                                       f"returning one of the EOS ids {list(eos_ids)} in its token ids")
                logprobs = None
                if with_logprobs:
                    logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs, response_ids)]
                generations.append(Generation(
                    prompt_ids=list(prompt), response_ids=response_ids,
                    text=tokenizer.decode(response_ids, skip_special_tokens=True), truncated=not found_eos,
                    sampled_logprobs=logprobs))
        return generations

    def sampling_params(self, *, seed: int, num_samples: int, eos_ids: Sequence[int], max_new_tokens: int,
                        temperature: float, top_p: float, with_logprobs: bool = False):
        """vLLM SamplingParams that sample from the policy itself: every modifier set to its neutral value."""
        return self.sampling_params_cls(
            n=num_samples, seed=int(seed), temperature=float(temperature),
            top_p=float(top_p) if temperature > 0 else 1.0, top_k=0, min_p=0.0, repetition_penalty=1.0,
            presence_penalty=0.0, frequency_penalty=0.0, stop_token_ids=[int(i) for i in eos_ids], ignore_eos=False,
            max_tokens=int(max_new_tokens), min_tokens=0, logprobs=0 if with_logprobs else None,
            detokenize=False)  # the text is decoded from the cut ids with the project's tokenizer

    # --- weights ---

    def sync_weights(self, model: torch.nn.Module, accelerator=None) -> int:
        """Load `model`'s current weights into the engine; returns the number of tensors sent.

        A peft model's adapters are merged into the copies sent (`policy_tensors`), never into
        the model itself; under DeepSpeed ZeRO-3 the parameters are gathered, under FSDP2 each
        DTensor with `full_tensor()` (collectives: every process calls this together). Names are
        the transformers checkpoint names, which vLLM's `load_weights` maps onto its own layers.
        """
        self._wake("weights")
        sent = self._send(model, accelerator)
        self._synced_from = (model, accelerator)
        self.weight_updates += 1
        return sent

    def _send(self, model: torch.nn.Module, accelerator) -> int:
        vllm_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        sent = 0
        with full_parameters(model, accelerator), torch.no_grad():
            for name, tensor in policy_tensors(model):
                vllm_model.load_weights([(name, tensor)])
                sent += 1
        self.weights_discarded = False
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        return sent

    # --- memory ---

    def _wake(self, *tags: str) -> None:
        """Map back those of `tags` that sleep released, after freeing torch's cached blocks (vLLM
        ignores a wake_up call as a whole when one of its tags is not asleep, so only those are named)."""
        tags = sorted(set(tags) & self.asleep)
        if tags:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # as TRL does before every wake_up: room for what comes back
            self.llm.wake_up(tags=tags)
            self.asleep -= set(tags)

    def _wake_up(self) -> None:
        """Before a generation: the weights and the KV cache mapped back, discarded weights restored
        (see the module docstring)."""
        self._wake("weights")
        if self.weights_discarded:
            if self._synced_from is None:  # still the model folder's weights: vLLM reloads them from disk
                self.llm.collective_rpc("reload_weights")
                self.weights_discarded = False
                self.llm.reset_prefix_cache()
            else:
                self._send(*self._synced_from)
        self._wake("kv_cache")

    def _sleep(self) -> None:
        """Sleep level 2 after each generation (sleep mode only): the KV cache and the weights are
        discarded, so the policy update has the GPU."""
        if self.sleep_mode:
            self.llm.sleep(level=2)
            self.asleep = {"weights", "kv_cache"}
            self.weights_discarded = True

    def close(self) -> None:
        """Drop the engine and return its GPU memory (before another model's engine starts)."""
        self.llm = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
