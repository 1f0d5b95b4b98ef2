"""A CPU stand-in for the `vllm` package, for tests only: `LLM` and `SamplingParams` with vLLM's interface.

Installed by the `fake_vllm` fixture as `sys.modules["vllm"]`; no module outside tests/ may
import it. It reproduces the behaviour the project relies on, read in vllm 0.31.0's source (the
wheel vllm-0.31.0-cp38-abi3-manylinux_2_28_x86_64, `vllm/_version.py` commit gdb9527a46):

* `SamplingParams` (vllm/sampling_params.py, `SamplingParams`): vLLM's field names and defaults
  (n=1, temperature 1.0, top_p 1.0, top_k 0, max_tokens 16, ...); an unknown field is a
  TypeError; an invalid value is a `VLLMValidationError` (vllm/exceptions.py: VLLMError ->
  VLLMClientError -> VLLMValidationError, not a ValueError) with the checks of
  `_verify_args` (n >= 1, temperature finite and in [0, 2], top_p in (0, 1], top_k >= -1,
  min_p in [0, 1], max_tokens >= 1, 0 <= min_tokens <= max_tokens, penalties, logprobs,
  stop strings only with detokenize) and `_verify_greedy_sampling` (n must be 1 when the
  temperature is below _SAMPLING_EPS = 1e-5, which `__post_init__` treats as greedy, resetting
  top_p, top_k and min_p); `__post_init__` raises a temperature in (0, 0.01) to 0.01.
* `LLM(model=folder, **options)` (vllm/entrypoints/llm.py, `LLM.__init__`): an option that is
  neither one of LLM's keyword parameters nor an `EngineArgs` field (vllm/engine/arg_utils.py)
  is a TypeError, as `EngineArgs(**kwargs)` raises; the accepted names are listed in
  `_LLM_OPTIONS` (those of vLLM the project or tests use, plus LLM's own parameters). It loads
  the transformers model in the folder (float32, CPU), records its options, and exposes
  `model_config.max_model_len` (the option, else the config's max_position_embeddings).
* `generate(prompts, sampling_params, use_tqdm=...)` takes `{"prompt_token_ids": [...]}` prompts
  and one SamplingParams or one per prompt. A prompt of max_model_len tokens or more fails the
  whole call with VLLMValidationError (vllm/v1/engine/input_processor.py, `_validate_prompt_len`).
  Every request fans out into n samples, sample i seeded with `seed + i` (vLLM's ParentRequest);
  decoding is token by token: logits / temperature (argmax below 1e-5), top-k, top-p, then a
  draw from a torch.Generator seeded per sample. The stop rule is `check_stop`
  (vllm/v1/core/sched/utils.py): the engine's EOS (the tokenizer's eos_token_id, unless
  ignore_eos) ends a response with finish_reason "stop" and stop_reason None; a token of
  stop_token_ids (to which the model's generation_config eos ids are added,
  `SamplingParams.update_from_generation_config`) with stop_reason = that token; both are kept in
  `token_ids`; max_tokens, or prompt + response reaching max_model_len, ends it with "length".
  `logprobs=0` returns, per token, {token_id: Logprob} of the sampled token after temperature
  scaling (logprobs_mode processed_logprobs). Outputs come back in prompt order, each
  RequestOutput's CompletionOutputs by `index`.
* `llm.llm_engine.model_executor.driver_worker.model_runner.model.load_weights([(name, tensor)])`
  copies checkpoint-named tensors into the model (an unknown name is a KeyError, as in vLLM),
  and records every call in `load_history`; with the weights asleep it raises (vLLM writes into
  unmapped memory: TRL issue 5142). `collective_rpc("reload_weights")` reloads the folder's
  weights (vllm/v1/worker/gpu_model_runner.py, `reload_weights` without a path).
* `sleep(level)` / `wake_up(tags)` (vllm/v1/executor/abstract.py, `Executor.sleep` / `wake_up`;
  vllm/v1/worker/gpu_worker.py, `Worker.sleep`): sleeping while the weights sleep is ignored;
  level 1 keeps the weights (offloaded), level 2 discards them (set to NaN here, buffers kept,
  so a generation before they are reloaded is visibly wrong, and counted in `nan_weight_generations`);
  `wake_up` on an engine not asleep,
  or with a tag that is not asleep, is ignored as a whole (vLLM logs a warning and returns).
  Generating while any tag sleeps raises RuntimeError: vLLM does not serve it but hangs, since
  the scheduler stays paused until every tag is awake (vllm/v1/engine/core.py,
  `EngineCore.sleep` / `wake_up`). `reset_prefix_cache()` is counted.

Every request is appended to `LLM.requests` as (prompt_token_ids, SamplingParams), so tests
can check what the engine was asked.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

logger = logging.getLogger(__name__)

_SAMPLING_EPS = 1e-5
_MAX_TEMP = 1e-2
_SLEEP_TAGS = frozenset({"weights", "kv_cache"})
# LLM.__init__'s keyword parameters and the EngineArgs fields accepted here (vllm 0.31.0)
_LLM_OPTIONS = frozenset({
    "runner", "convert", "tokenizer", "tokenizer_mode", "skip_tokenizer_init", "trust_remote_code",
    "tensor_parallel_size", "dtype", "quantization", "revision", "tokenizer_revision", "chat_template", "seed",
    "gpu_memory_utilization", "cpu_offload_gb", "enforce_eager", "hf_token", "hf_overrides", "kv_cache_memory_bytes",
    "compilation_config", "logits_processors",
    # EngineArgs fields
    "max_model_len", "enable_sleep_mode", "generation_config", "logprobs_mode", "distributed_executor_backend",
    "max_num_batched_tokens", "max_num_seqs", "disable_log_stats", "enable_prefix_caching", "model_impl",
    "load_format", "download_dir", "swap_space", "worker_extension_cls", "data_parallel_size",
})


class VLLMError(Exception):
    """vllm.exceptions.VLLMError: the base of vLLM's own errors."""


class VLLMClientError(VLLMError):
    """vllm.exceptions.VLLMClientError."""


class VLLMValidationError(VLLMClientError):
    """vllm.exceptions.VLLMValidationError: a request vLLM refuses (not a ValueError)."""


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
        if 0 < self.temperature < _MAX_TEMP:
            logger.warning("temperature %s is less than %s; raised to %s", self.temperature, _MAX_TEMP, _MAX_TEMP)
            self.temperature = _MAX_TEMP
        if self.seed == -1:
            self.seed = None
        self.stop = [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)
        self.stop_token_ids = [] if self.stop_token_ids is None else list(dict.fromkeys(self.stop_token_ids))
        self._verify_args()
        if self.temperature < _SAMPLING_EPS:  # greedy
            self.top_p, self.top_k, self.min_p = 1.0, 0, 0.0
            if self.n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {self.n}.")

    def _verify_args(self) -> None:
        checks = [
            (isinstance(self.n, int) and self.n >= 1, f"n must be at least 1, got {self.n}."),
            (-2.0 <= self.presence_penalty <= 2.0,
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty}."),
            (-2.0 <= self.frequency_penalty <= 2.0,
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}."),
            (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0.0,
             f"repetition_penalty must be greater than zero, got {self.repetition_penalty}."),
            (math.isfinite(self.temperature), f"temperature must be a finite number, got {self.temperature}."),
            (self.temperature >= 0.0, f"temperature must be non-negative, got {self.temperature}."),
            (self.temperature <= 2.0, f"temperature must be in [0, 2], got {self.temperature}."),
            (0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}."),
            (self.top_k >= -1, f"top_k must be 0 (disable), or at least 1, got {self.top_k}."),
            (0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}."),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be at least 1, got {self.max_tokens}."),
            (self.min_tokens >= 0, f"min_tokens must be greater than or equal to 0, got {self.min_tokens}."),
            (self.max_tokens is None or self.min_tokens <= self.max_tokens,
             f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, got {self.min_tokens}."),
            (self.logprobs is None or self.logprobs == -1 or self.logprobs >= 0,
             f"logprobs must be non-negative or -1, got {self.logprobs}."),
            (not (self.stop and not self.detokenize), "stop strings are only supported when detokenize is True."),
        ]
        for ok, message in checks:
            if not ok:
                raise VLLMValidationError(message)


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
        if "weights" in self._llm._sleeping:
            raise RuntimeError("load_weights while the weights sleep: vLLM would write into unmapped memory; "
                               "wake_up(tags=['weights']) first")
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
        unknown = sorted(set(options) - _LLM_OPTIONS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {unknown[0]!r}")
        self.model = model
        self.options = dict(model=model, **options)
        self.hf_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        window = options.get("max_model_len") or self.hf_model.config.max_position_embeddings
        self.model_config = type("ModelConfig", (), {"max_model_len": int(window)})()
        self.llm_engine = _chain(_ModelRunnerModel(self))
        self.requests: list[tuple[list[int], SamplingParams]] = []
        self.load_history: list[tuple[int, str, torch.Tensor]] = []
        self.sleep_calls: list[int] = []
        self.wake_calls: list[list[str] | None] = []
        self.rpc_calls: list[str] = []
        self.prefix_cache_resets = 0
        self.generate_calls = 0
        self.nan_weight_generations = 0  # calls served from discarded (level-2) weights: garbage in vLLM
        self.reverse_sample_order = False  # a test switch: return CompletionOutputs last index first
        # a test switch: script(prompt_ids, sampling_params, index) -> the tokens the model "proposes";
        # the stop rule and max_tokens still apply to them, as to sampled tokens
        self.script = None
        self._sleeping: set[str] = set()
        self._counter = itertools.count()
        # the engine's EOS is the tokenizer's (renderer.get_eos_token_id()); the generation_config's eos ids
        # join stop_token_ids (SamplingParams.update_from_generation_config)
        try:
            self.eos_token_id = AutoTokenizer.from_pretrained(model).eos_token_id
        except (OSError, ValueError):  # a folder without tokenizer files: the config's first EOS
            eos = self.hf_model.generation_config.eos_token_id
            self.eos_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        eos = self.hf_model.generation_config.eos_token_id
        self.config_eos_ids = [int(i) for i in (eos if isinstance(eos, (list, tuple)) else [eos]) if i is not None]

    # --- sleep mode ---

    def sleep(self, level: int = 1) -> None:
        if not self.options.get("enable_sleep_mode"):
            raise RuntimeError("sleep mode is not enabled: LLM(..., enable_sleep_mode=True)")
        self.sleep_calls.append(level)
        if "weights" in self._sleeping:
            logger.warning("Executor is already sleeping.")
            return
        self._sleeping = set(_SLEEP_TAGS)
        if level == 2:  # Worker.sleep(level=2) backs up the buffers only
            with torch.no_grad():
                for param in self.hf_model.parameters():
                    param.fill_(float("nan"))

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.wake_calls.append(None if tags is None else list(tags))
        if not self._sleeping:
            logger.warning("Executor is not sleeping.")
            return
        for tag in tags or []:
            if tag not in self._sleeping:
                logger.warning("Tag %s is not in sleeping tags %s", tag, self._sleeping)
                return  # the whole call is ignored, the other tags included
        self._sleeping -= set(tags) if tags else set(_SLEEP_TAGS)

    def is_sleeping(self) -> bool:
        return bool(self._sleeping)

    def collective_rpc(self, method: str, *args, **kwargs):
        self.rpc_calls.append(method)
        if method != "reload_weights":
            raise NotImplementedError(f"the fake engine has no worker method {method!r}")
        if "weights" in self._sleeping:
            raise RuntimeError("reload_weights while the weights sleep: wake_up(tags=['weights']) first")
        fresh = AutoModelForCausalLM.from_pretrained(self.model, dtype=torch.float32)
        self.hf_model.load_state_dict(fresh.state_dict())
        return [None]

    def reset_prefix_cache(self) -> bool:
        self.prefix_cache_resets += 1
        return True

    # --- generation ---

    def generate(self, prompts, sampling_params=None, *, use_tqdm: bool = True, **unused) -> list[RequestOutput]:
        if unused:
            raise TypeError(f"generate() got unexpected arguments {sorted(unused)}")
        if self._sleeping:
            raise RuntimeError(f"the engine is sleeping ({sorted(self._sleeping)}): vLLM would queue the requests "
                               "and never run them (a hang); wake_up() every tag first")
        self.generate_calls += 1
        self.nan_weight_generations += any(bool(torch.isnan(p).any()) for p in self.hf_model.parameters())
        prompts = prompts if isinstance(prompts, list) else [prompts]
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        limit = self.model_config.max_model_len
        for prompt in prompts:  # the input processor validates every request before any runs
            if not isinstance(prompt, dict) or "prompt_token_ids" not in prompt:
                raise TypeError("this fake takes token prompts only: {'prompt_token_ids': [...]}")
            length = len(prompt["prompt_token_ids"])
            if length == 0:
                raise VLLMValidationError("The decoder prompt cannot be empty")
            if length >= limit:
                raise VLLMValidationError(f"The decoder prompt (length {length}) is longer than the maximum model "
                                          f"length of {limit} (or leaves no room for one output token).")
        outputs = []
        for prompt, sp in zip(prompts, params):
            ids = list(prompt["prompt_token_ids"])
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
        eos = None if sp.ignore_eos else self.eos_token_id
        stops = set(sp.stop_token_ids or []) | (set() if sp.ignore_eos else set(self.config_eos_ids))
        max_tokens = sp.max_tokens if sp.max_tokens is not None else self.model_config.max_model_len - len(prompt_ids)
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        finish, stop_reason = "length", None
        sequence = list(prompt_ids)
        proposals = iter(self.script(prompt_ids, sp, index)) if self.script is not None else None
        while True:
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
            sequence.append(token)
            # check_stop's order: the engine's EOS, then stop_token_ids, then the two length limits
            if len(tokens) > sp.min_tokens and token == eos:
                finish = "stop"
                break
            if len(tokens) > sp.min_tokens and token in stops:
                finish, stop_reason = "stop", token
                break
            if len(sequence) >= self.model_config.max_model_len or len(tokens) >= max_tokens:
                break
        return CompletionOutput(index=index, text="", token_ids=tokens,
                                cumulative_logprob=None, logprobs=logprobs if sp.logprobs is not None else None,
                                finish_reason=finish, stop_reason=stop_reason)


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
