"""A CPU stand-in for the `vllm` package, for tests only: `LLM` and `SamplingParams` with vLLM's interface.

Installed by the `fake_vllm` fixture as `sys.modules["vllm"]`; no module outside tests/ may
import it. It reproduces the behaviour the project relies on, as vLLM 0.31 documents it:

* `SamplingParams`: vLLM's field names and defaults (n=1, temperature 1.0, top_p 1.0, top_k 0,
  max_tokens 16, ...); an unknown field is a TypeError and an invalid value a ValueError.
* `LLM(model=folder, ...)` loads the transformers model in the folder (float32, CPU) and
  records its constructor options. `generate(prompts, sampling_params, use_tqdm=...)` takes
  `{"prompt_token_ids": [...]}` prompts and one SamplingParams or one per prompt; every
  request fans out into n samples, sample i seeded with `seed + i` (vLLM's ParentRequest);
  decoding is token by token: logits / temperature (argmax below 1e-5), top-k, top-p, then a
  draw from a torch.Generator seeded per sample; it stops after a token in stop_token_ids or
  the model's EOS (the token is kept in `token_ids`, finish_reason "stop") or at max_tokens
  ("length"). `logprobs=0` returns, per token, {token_id: Logprob} of the sampled token after
  temperature scaling (logprobs_mode processed_logprobs). Outputs come back in prompt order,
  each RequestOutput's CompletionOutputs by `index`.
* `llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights([(name, tensor)])`
  copies checkpoint-named tensors into the model (an unknown name is a KeyError, as in vLLM),
  and records every call in `load_history`.
* `sleep(level)` / `wake_up(tags)`: level 1 keeps the weights (offloaded), level 2 discards
  them (set to NaN here, so a generation before they are reloaded is visibly wrong);
  generating while the KV cache sleeps raises RuntimeError. `reset_prefix_cache()` is counted.

Every request is appended to `LLM.requests` as (prompt_token_ids, SamplingParams), so tests
can check what the engine was asked.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

_SAMPLING_EPS = 1e-5


@dataclass
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}.")
        if self.temperature < 0.0:
            raise ValueError(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.top_k < -1:
            raise ValueError(f"top_k must be 0 (disable), or at least 1, got {self.top_k}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.stop and not self.detokenize:
            raise ValueError("stop strings are only supported when detokenize is True.")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


class _ModelRunnerModel:
    """What `driver_worker.model_runner.model` is in vLLM: here, its `load_weights`."""

    def __init__(self, llm: "LLM"):
        self._llm = llm

    def load_weights(self, weights) -> set[str]:
        params = dict(self._llm.hf_model.named_parameters())
        params.update(dict(self._llm.hf_model.named_buffers()))
        loaded = set()
        for name, tensor in weights:
            if name not in params:
                raise KeyError(name)
            if tuple(params[name].shape) != tuple(tensor.shape):
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not fit {tuple(params[name].shape)}")
            with torch.no_grad():
                params[name].copy_(tensor.to(params[name].dtype))
            self._llm.load_history.append((self._llm.generate_calls, name, tensor.detach().clone()))
            loaded.add(name)
        return loaded


def _chain(leaf):
    """llm_engine.model_executor.driver_worker.model_runner.model -> leaf."""
    runner = type("ModelRunner", (), {"model": leaf})()
    worker = type("Worker", (), {"model_runner": runner})()
    executor = type("Executor", (), {"driver_worker": worker})()
    return type("LLMEngine", (), {"model_executor": executor})()


class LLM:
    """Offline engine over a transformers model folder (see the module docstring)."""

    def __init__(self, model: str, **options):
        self.model = model
        self.options = dict(model=model, **options)
        self.hf_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        self.llm_engine = _chain(_ModelRunnerModel(self))
        self.requests: list[tuple[list[int], SamplingParams]] = []
        self.load_history: list[tuple[int, str, torch.Tensor]] = []
        self.sleep_calls: list[int] = []
        self.wake_calls: list[list[str] | None] = []
        self.prefix_cache_resets = 0
        self.generate_calls = 0
        self.reverse_sample_order = False  # a test switch: return CompletionOutputs last index first
        # a test switch: script(prompt_ids, sampling_params, index) -> the tokens the model "proposes";
        # the stop rule and max_tokens still apply to them, as to sampled tokens
        self.script = None
        self._sleeping: set[str] = set()
        self._counter = itertools.count()
        eos = self.hf_model.generation_config.eos_token_id
        self.eos_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos

    # --- sleep mode ---

    def sleep(self, level: int = 1) -> None:
        if not self.options.get("enable_sleep_mode"):
            raise RuntimeError("sleep mode is not enabled: LLM(..., enable_sleep_mode=True)")
        self.sleep_calls.append(level)
        self._sleeping = {"weights", "kv_cache"}
        if level == 2:
            with torch.no_grad():
                for param in self.hf_model.parameters():
                    param.fill_(float("nan"))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.wake_calls.append(None if tags is None else list(tags))
        self._sleeping -= set(tags) if tags is not None else {"weights", "kv_cache"}

    def reset_prefix_cache(self) -> bool:
        self.prefix_cache_resets += 1
        return True

    # --- generation ---

    def generate(self, prompts, sampling_params=None, *, use_tqdm: bool = True, **unused) -> list[RequestOutput]:
        if unused:
            raise TypeError(f"generate() got unexpected arguments {sorted(unused)}")
        if self._sleeping:
            raise RuntimeError(f"the engine is sleeping ({sorted(self._sleeping)}); call wake_up() first")
        self.generate_calls += 1
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        outputs = []
        for prompt, sp in zip(prompts, params):
            if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
                raise TypeError("this fake takes token prompts only: {'prompt_token_ids': [...]}")
            ids = list(prompt["prompt_token_ids"])
            if not ids:
                raise ValueError("The decoder prompt cannot be empty")
            self.requests.append((ids, dataclasses.replace(sp)))
            completions = [self._sample(ids, sp, index) for index in range(sp.n)]
            if self.reverse_sample_order:
                completions.reverse()
            outputs.append(RequestOutput(str(next(self._counter)), None, ids, completions))
        return outputs

    @torch.no_grad()
    def _sample(self, prompt_ids: list[int], sp: SamplingParams, index: int) -> CompletionOutput:
        generator = torch.Generator()
        if sp.seed is not None:
            generator.manual_seed(sp.seed + index)  # vLLM's child request i
        else:
            generator.seed()
        stops = set(sp.stop_token_ids or [])
        if not sp.ignore_eos and self.eos_token_id is not None:
            stops.add(int(self.eos_token_id))
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        finish = "length"
        sequence = list(prompt_ids)
        proposals = iter(self.script(prompt_ids, sp, index)) if self.script is not None else None
        while sp.max_tokens is None or len(tokens) < sp.max_tokens:
            if proposals is not None:
                token = next(proposals)
                if sp.logprobs is not None:
                    logprobs.append({token: Logprob(0.0, rank=None)})
            else:
                # the whole sequence each step: slow but free of cache APIs, and exact for a tiny model
                logits = self.hf_model(input_ids=torch.tensor([sequence])).logits[0, -1].float()
                greedy = sp.temperature < _SAMPLING_EPS
                scaled = logits if greedy else logits / sp.temperature
                if greedy:
                    token = int(torch.argmax(scaled))
                else:
                    token = int(torch.multinomial(torch.softmax(_filter(scaled, sp.top_k, sp.top_p), -1), 1,
                                                  generator=generator))
                if sp.logprobs is not None:
                    logprobs.append({token: Logprob(float(torch.log_softmax(scaled, -1)[token]), rank=None)})
            tokens.append(token)
            if token in stops and len(tokens) > sp.min_tokens:
                finish = "stop"
                break
            sequence.append(token)
        return CompletionOutput(index=index, text="", token_ids=tokens,
                                cumulative_logprob=None, logprobs=logprobs if sp.logprobs is not None else None,
                                finish_reason=finish, stop_reason=tokens[-1] if finish == "stop" else None)


def _filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of one (V,) row of logits (masked to -inf)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.softmax(ordered, -1).cumsum(-1)
        drop = cumulative - torch.softmax(ordered, -1) >= top_p  # keep the smallest set reaching top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits
