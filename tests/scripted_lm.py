"""A causal LM whose rollouts are scripted, for the tests of what happens around generation
(episodes, self-correction training, the prompt builder).

`ScriptedLM` answers the forward calls `apo.decoding.sample_continuations` makes -- those that
pass a KV cache -- with logits that give the scripted next token all the probability mass, so
greedy and sampled decoding both return the script: `reply(prompt_ids)` is a prompt's whole
response (its tokens, usually ending in an EOS id); after it the model emits `eos_id`. Each
row's identity travels in the cache itself (the key tensor holds the row number), so the
engine's sharing of prefills and dropping of finished rows are exercised as with a real model.
Forward calls without a cache (log-probs for the loss) go to `score_model`, a real tiny LM.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LlamaConfig
from transformers.modeling_outputs import CausalLMOutputWithPast

_NO_MASS = -1.0e4  # a logit whose probability is exactly 0 in float32 at any temperature <= 1


class ScriptedLM(torch.nn.Module):
    def __init__(self, reply: Callable[[list[int]], list[int]], *, vocab_size: int, eos_id: int, generation_config,
                 score_model: torch.nn.Module | None = None):
        super().__init__()
        self.reply, self.vocab_size, self.eos_id = reply, vocab_size, eos_id
        self.generation_config = generation_config
        self.score_model = score_model
        self.config = score_model.config if score_model is not None else LlamaConfig(
            vocab_size=vocab_size, hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1,
            num_key_value_heads=1)
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # parameters() gives the device
        self.calls: list[dict] = []  # one per prefill: the prompts of the batch, unpadded
        self._replies: list[list[int]] = []
        self._prompt_width = 0

    def forward(self, input_ids=None, attention_mask=None, cache=None, **kwargs):
        past_key_values = cache
        if past_key_values is None:
            if self.score_model is None:
                raise AssertionError("ScriptedLM was asked for log-probs but has no score_model")
            return self.score_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        batch, width = input_ids.shape
        if past_key_values.get_seq_length() == 0:  # the prefill of a batch of distinct prompts
            assert (attention_mask[:, -1] == 1).all(), "prompts must be left-padded"
            prompts = [ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask)]
            self.calls.append({"batch_size": batch, "prompts": prompts})
            self._replies = [list(self.reply(prompt)) for prompt in prompts]
            self._prompt_width = width
            rows = torch.arange(batch, dtype=torch.float32).view(batch, 1, 1, 1).expand(batch, 1, width, 1)
        else:
            rows = past_key_values.layers[0].keys[:, :, -1:, :]
        past_key_values.update(rows.clone(), rows.clone(), 0)
        produced = attention_mask.shape[1] - self._prompt_width
        logits = torch.full((batch, 1, self.vocab_size), _NO_MASS)
        for position, row in enumerate(past_key_values.layers[0].keys[:, 0, -1, 0].long().tolist()):
            reply = self._replies[row]
            logits[position, 0, reply[produced] if produced < len(reply) else self.eos_id] = 0.0
        return CausalLMOutputWithPast(logits=logits)
